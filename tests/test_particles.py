"""The particle backend of ``md.train`` against the exact N -> infinity moments backend, the per-chain
first law, Identity 1, open-loop replay (fluctuation theorems) and reproducibility.

Closed-loop training shares theta noise across all chains of a replica, so its errors come from
independent replicas (``excess_work_se``). Open-loop replays have i.i.d. chains: per-chain errors
(std / sqrt(N), delta method for the variance) are valid there. Tolerance: 4 standard errors.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import mindiss as md

F64 = torch.float64

# Section 5 example (theory.md): W* = 1.225.
S, MU, T, THETA0, XBAR = 0.5, 1.3, 2.0, -0.4, 1.7
TRAP = md.HarmonicTrap(variance=S, dim=1)
TRAP_DATA = md.data.Gaussian(XBAR, S)
OPT = md.schedules.optimal_harmonic(S, MU, T)
N_STEPS, N_CHAINS, N_REPLICAS = 100, 100_000, 8

# Learnable-variance Gaussian: data variance 2.0, model variance 1.0 at the start.
GAUSS = md.Gaussian(1)
GAUSS_DATA = md.data.Gaussian(0.5, 2.0)
GAUSS_THETA0 = md.Gaussian.natural(0.0, 1.0)
GAUSS_SCHED = md.schedules.constant(0.3, 1.0)
GAUSS_STEPS = 50


def trap_train(**kw):
    args = dict(schedule=OPT, theta0=[THETA0], mobility=MU, n_steps=N_STEPS, n_chains=N_CHAINS,
                n_replicas=N_REPLICAS, sampler="exact", backend="particles", seed=0)
    args.update(kw)
    return md.train(TRAP, TRAP_DATA, **args)


def gauss_train(**kw):
    args = dict(schedule=GAUSS_SCHED, theta0=GAUSS_THETA0, mobility=1.0, n_steps=GAUSS_STEPS,
                n_chains=N_CHAINS, n_replicas=N_REPLICAS, sampler="exact", backend="particles", seed=0)
    args.update(kw)
    return md.train(GAUSS, GAUSS_DATA, **args)


def replica_thetas(train, n=N_REPLICAS):
    """theta_final of n independent single-replica runs (the result only reports their mean)."""
    return np.array([train(n_replicas=1, seed=100 + i).theta_final for i in range(n)])


@pytest.fixture(scope="module")
def trap_moments():
    return trap_train(backend="moments", n_replicas=None)


@pytest.fixture(scope="module")
def trap_particles():
    return trap_train(keep_chains=True)


@pytest.fixture(scope="module")
def gauss_moments():
    return gauss_train(backend="moments", n_replicas=None)


@pytest.fixture(scope="module")
def gauss_particles():
    return gauss_train(keep_chains=True)


# ------------------------------------------------------------------ particles vs moments

def test_moments_reference_is_deterministic_and_near_bound(trap_moments):
    r = trap_moments
    assert r.backend == "moments" and r.n_replicas == 1 and r.n_chains == math.inf
    assert r.work_se == 0.0 and r.excess_work_se == 0.0
    assert r.delta_free_energy == 0.0
    assert r.n_updates == N_STEPS + 2
    # Discretisation error at n = 100 is O(dt); the continuous figures are W* = 1.225, theta_T = xbar.
    assert md.bounds.harmonic(S, MU, T, THETA0, XBAR).excess_work == pytest.approx(1.225, abs=1e-12)
    assert r.excess_work == pytest.approx(1.225, rel=0.01)
    assert r.theta_final[0] == pytest.approx(XBAR, abs=0.01)


def test_trap_particle_work_matches_moments(trap_particles, trap_moments):
    p, m = trap_particles, trap_moments
    assert p.n_replicas == N_REPLICAS and len(p.replica_excess_work) == N_REPLICAS
    assert p.excess_work_se > 0 and math.isfinite(p.excess_work_se)
    assert p.excess_work_se == pytest.approx(np.std(p.replica_excess_work, ddof=1) / math.sqrt(N_REPLICAS))
    assert p.delta_free_energy == 0.0 and p.excess_work == p.work
    assert abs(p.work - m.work) < 4 * p.excess_work_se
    assert abs(p.excess_work - m.excess_work) < 4 * p.excess_work_se


def test_trap_particle_theta_final_matches_moments(trap_moments):
    th = replica_thetas(trap_train)[:, 0]
    se = th.std(ddof=1) / math.sqrt(len(th))
    assert se > 0
    assert abs(th.mean() - trap_moments.theta_final[0]) < 4 * se


def test_gaussian_particle_work_matches_moments(gauss_particles, gauss_moments):
    p, m = gauss_particles, gauss_moments
    # The variance is learned: Delta F != 0 and the work is not the excess work.
    assert abs(m.delta_free_energy) > 0.05
    assert m.excess_work > 0 and m.kl_final > 0 and m.entropy_production > 0
    assert abs(p.excess_work - m.excess_work) < 4 * p.excess_work_se
    # W = W_ex + Delta F per replica: the work carries the Delta F noise of theta_T as well.
    assert abs(p.work - m.work) < 4 * p.work_se
    assert abs(p.delta_free_energy - m.delta_free_energy) < 4 * p.work_se + 4 * p.excess_work_se


def test_gaussian_particle_theta_final_matches_moments(gauss_moments):
    th = replica_thetas(gauss_train)
    assert th.shape == (N_REPLICAS, 2)
    se = th.std(0, ddof=1) / math.sqrt(len(th))
    assert np.all(se > 0)
    assert np.all(np.abs(th.mean(0) - np.asarray(gauss_moments.theta_final)) < 4 * se), (th.mean(0), se)


def test_moments_identity2(trap_moments, gauss_moments):
    """W_ex = KL(rho_T || p_T) - KL(rho_0 || p_0) + entropy production (moments backend)."""
    for r in (trap_moments, gauss_moments):
        assert r.kl_initial == 0.0
        assert r.excess_work == pytest.approx(r.kl_final - r.kl_initial + r.entropy_production, abs=1e-12)


# ------------------------------------------------------------------ first law and Identity 1

def test_first_law_float32(trap_particles, gauss_particles):
    for r in (trap_particles, gauss_particles):
        assert r.first_law_residual < 1e-9


def test_first_law_float64():
    kw = dict(n_chains=20_000, n_replicas=2, dtype=torch.float64)
    assert trap_train(**kw).first_law_residual < 1e-11
    assert gauss_train(**kw).first_law_residual < 1e-11


def test_first_law_per_chain_from_kept_chains(trap_particles):
    """Recompute the ledger by hand for replica 0: E_T(x_T) - E_0(x_0) = W + Q with Q = that - W."""
    r = trap_particles
    assert r.chain_work.shape == (N_CHAINS,) and r.chain_work.dtype == np.float64
    assert r.final_chains.shape == (N_CHAINS, 1) and r.final_chains.dtype == torch.float32
    # The mean of the kept per-chain work is replica 0's mean work (row -1 of its history).
    assert r.chain_work.mean() == pytest.approx(r.history["work"][-1], abs=1e-12)
    assert r.replica_excess_work[0] == pytest.approx(r.chain_work.mean(), abs=1e-12)


def test_identity1(trap_particles, gauss_particles, trap_moments, gauss_moments):
    """L(theta_T) - L(theta_0) - (L_approx change) = W_ex, exact for natural parameters."""
    for r in (trap_particles, gauss_particles, trap_moments, gauss_moments):
        assert r.identity1_residual < 1e-10
        assert r.bias == pytest.approx(r.excess_work, abs=1e-10)


def test_history_columns_are_consistent(trap_particles):
    h = trap_particles.history
    assert h.values.shape[0] == N_STEPS + 3          # initial row + every update
    assert h["t"][0] == 0.0 and h["t"][-1] == pytest.approx(T)
    np.testing.assert_allclose(h["theta_0"], trap_particles.thetas[:, 0], rtol=0, atol=0)
    np.testing.assert_allclose(h["excess_work"], h["work"] - h["delta_free_energy"], atol=1e-15)
    lr = OPT.discretise(N_STEPS).lr
    np.testing.assert_allclose(h["lr"][1:], lr, rtol=1e-15)


# ------------------------------------------------------------------ open-loop replay

@pytest.fixture(scope="module")
def trap_replay(trap_particles):
    return md.replay(TRAP, TRAP_DATA, trap_particles.protocol(), mobility=MU, n_chains=200_000,
                     n_replicas=1, keep_chains=True, seed=5)


def test_replay_follows_the_protocol(trap_particles, trap_replay):
    proto = trap_particles.protocol()
    assert proto.n_updates == N_STEPS + 2 and proto.duration == pytest.approx(T)
    np.testing.assert_array_equal(trap_replay.thetas, proto.thetas)
    assert trap_replay.n_replicas == 1 and math.isnan(trap_replay.work_se)
    assert trap_replay.chain_work.shape == (200_000,)
    assert trap_replay.first_law_residual < 1e-9 and trap_replay.identity1_residual < 1e-10


def test_replay_work_variance_is_twice_mean_work(trap_replay):
    """Gaussian work distribution on the trap with Delta F = 0: Var W = 2 <W_ex>."""
    w = trap_replay.chain_work
    assert trap_replay.delta_free_energy == 0.0
    # Delta method: D = Var W - 2 <W> has influence function (W - <W>)^2 - 2 W.
    psi = (w - w.mean()) ** 2 - 2.0 * w
    d, se = psi.mean(), psi.std(ddof=1) / math.sqrt(len(w))
    assert abs(d) < 4 * se, (w.var(), 2 * w.mean(), se)
    assert w.var() > 1.0       # the check has teeth: Var W is far from 0


def test_replay_jarzynski(trap_replay):
    w = trap_replay.chain_work
    e = np.exp(-w)
    se = e.std(ddof=1) / math.sqrt(len(e))
    assert abs(e.mean() - math.exp(-trap_replay.delta_free_energy)) < 4 * se
    assert w.mean() > 1.0      # far from reversible: the second law is not trivially met


def test_replay_mean_work_matches_moments_replay(trap_particles, trap_replay):
    m = md.replay(TRAP, TRAP_DATA, trap_particles.protocol(), mobility=MU, backend="moments")
    w = trap_replay.chain_work
    assert abs(w.mean() - m.work) < 4 * w.std(ddof=1) / math.sqrt(len(w))
    assert trap_replay.work == pytest.approx(w.mean(), abs=1e-12)


def test_replay_gaussian_jarzynski_with_free_energy_change(gauss_particles):
    """Learned variance: Delta F != 0 and <exp(-W)> = exp(-Delta F) still holds open-loop."""
    proto = gauss_particles.protocol()
    rep = md.replay(GAUSS, GAUSS_DATA, proto, n_chains=200_000, n_replicas=1, keep_chains=True, seed=5)
    m = md.replay(GAUSS, GAUSS_DATA, proto, backend="moments")
    assert rep.delta_free_energy == pytest.approx(m.delta_free_energy, abs=1e-14)
    assert abs(rep.delta_free_energy) > 0.05
    w = rep.chain_work
    e = np.exp(-w)
    assert abs(e.mean() - math.exp(-rep.delta_free_energy)) < 4 * e.std(ddof=1) / math.sqrt(len(e))
    assert abs(w.mean() - m.work) < 4 * w.std(ddof=1) / math.sqrt(len(w))


# ------------------------------------------------------------------ reproducibility

def small_trap(**kw):
    return trap_train(n_steps=20, n_chains=2000, n_replicas=2, **kw)


def test_same_seed_bit_identical_other_seed_differs():
    a, b, c = small_trap(seed=3), small_trap(seed=3), small_trap(seed=4)
    assert a.to_dict() == b.to_dict()
    np.testing.assert_array_equal(a.history.values, b.history.values)
    np.testing.assert_array_equal(a.thetas, b.thetas)
    assert a.to_dict() != c.to_dict()
    assert a.work != c.work


def test_same_seed_identical_kept_chains():
    a, b = small_trap(seed=3, keep_chains=True), small_trap(seed=3, keep_chains=True)
    assert torch.equal(a.final_chains, b.final_chains)
    np.testing.assert_array_equal(a.chain_work, b.chain_work)


# ------------------------------------------------------------------ other samplers through train

def test_mala_through_train_reports_acceptance():
    r = small_trap(sampler="mala")
    assert r.sampler == "mala"
    assert 0.0 < r.acceptance_rate < 1.0
    assert math.isfinite(r.work) and math.isfinite(r.excess_work_se)
    assert r.first_law_residual < 1e-9 and r.identity1_residual < 1e-10
    assert r.to_dict()["acceptance_rate"] == r.acceptance_rate


def test_euler_through_train_is_finite():
    r = small_trap(sampler="euler")
    assert r.sampler == "euler" and r.acceptance_rate is None
    d = r.to_dict()
    for key in ("work", "excess_work", "excess_work_se", "loss_true_change", "final_loss"):
        assert d[key] is not None and math.isfinite(d[key]), key
    assert np.all(np.isfinite(r.theta_final))
    assert r.first_law_residual < 1e-9 and r.identity1_residual < 1e-10


def test_exact_sampler_has_no_acceptance_rate():
    assert small_trap().acceptance_rate is None


def test_euler_particles_match_euler_moments_backend():
    """Closed-loop Euler-Maruyama training: particles agree with the exact EM moment map."""
    kw = dict(sampler="euler", n_steps=50)
    p = trap_train(n_chains=20_000, **kw)
    m = trap_train(backend="moments", n_replicas=None, **kw)
    exact = trap_train(backend="moments", n_replicas=None, n_steps=50)
    assert abs(p.work - m.work) < 4 * p.excess_work_se
    # The EM moment map is not the exact OU one: its O(dt) bias is visible at n = 50.
    assert abs(m.work - exact.work) > 0.01


def test_mala_replay_keeps_jarzynski_at_large_dt():
    """MALA leaves p_theta invariant, so open-loop Jarzynski is exact even at mu dt / s = 0.1 (n = 50),
    although its mean work carries an O(dt) bias of the dynamics (as Euler's does)."""
    proto = trap_train(n_steps=50, n_chains=20_000, n_replicas=1).protocol()
    rep = md.replay(TRAP, TRAP_DATA, proto, mobility=MU, sampler="mala", n_chains=100_000, n_replicas=1,
                    keep_chains=True, seed=6, dtype=torch.float64)
    assert 0.9 < rep.acceptance_rate < 1.0
    e = np.exp(-rep.chain_work)
    assert abs(e.mean() - 1.0) < 4 * e.std(ddof=1) / math.sqrt(len(e))
    assert rep.chain_work.mean() > 1.0


# ------------------------------------------------------------------ long statistical check

@pytest.mark.slow
def test_slow_particle_work_matches_moments_and_bound():
    n = 1000
    p = trap_train(n_steps=n, n_chains=100_000, n_replicas=16, seed=11)
    m = trap_train(n_steps=n, backend="moments", n_replicas=None)
    w_star = md.bounds.harmonic(S, MU, T, THETA0, XBAR).excess_work
    assert p.n_replicas == 16 and p.excess_work_se > 0
    assert abs(p.excess_work - m.excess_work) < 4 * p.excess_work_se
    assert abs(p.excess_work - w_star) < 4 * p.excess_work_se
    # The moments backend is within its O(dt) discretisation error of the continuous optimum.
    assert m.excess_work == pytest.approx(w_star, rel=2e-3)
    assert p.first_law_residual < 1e-9 and p.identity1_residual < 1e-10
