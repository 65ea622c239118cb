"""Chain moves at fixed theta: invariance of p_theta (exact OU, MALA), the Euler-Maruyama O(dt)
bias, sampler/energy pairing checks and reproducibility.

Statistical checks use 4 standard errors of i.i.d. chains at the end of the run:
SE(mean) = sqrt(var / N), SE(sample variance) = sqrt(2 / N) var (Gaussian chains).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate

import mindiss as md

F64 = torch.float64
N = 200_000
N_STEPS = 50


def t64(v):
    return torch.as_tensor(v, dtype=F64).reshape(-1)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


class Quartic(md.Energy):
    """E = theta x^4 / 4 per dimension: not quadratic (no exact OU move, no moments backend)."""

    def __init__(self, dim=1):
        self.dim, self.n_params = dim, 1

    def energy(self, x, theta):
        return (theta[0] * x.to(F64) ** 4 / 4.0).sum(-1)

    def grad_x(self, x, theta):
        return float(theta[0]) * x ** 3

    def grad_theta(self, x, theta):
        return (x.to(F64) ** 4 / 4.0).sum(-1, keepdim=True)


def run_chains(sampler, energy, theta, x, *, dt, mobility=1.0, n_steps=N_STEPS, seed=1):
    g = gen(seed)
    for _ in range(n_steps):
        x = sampler.step(energy, theta, x, dt=dt, mobility=mobility, gen=g)
    return x


def assert_stationary(x, mean, var, n_se=4.0):
    """Per dimension: chain mean and variance equal (mean, var) within n_se standard errors."""
    n = x.shape[0]
    x = x.to(F64)
    m, v = x.mean(0), x.var(0)
    assert torch.all((m - mean).abs() < n_se * torch.sqrt(var / n)), (m, mean)
    assert torch.all((v - var).abs() < n_se * math.sqrt(2.0 / n) * var), (v, var)


# Stationary targets: the harmonic trap of the brief and a Gaussian with non-unit variances.
TRAP = (md.HarmonicTrap(variance=0.7, dim=2), t64([0.4, -1.1]))
GAUSS = (md.Gaussian(2), md.Gaussian.natural([1.5, -0.5], [0.35, 2.4]))
TARGETS = [TRAP, GAUSS]
TARGET_IDS = ["trap", "gauss"]


def big_dt(energy, theta, mobility=1.0, ratio=0.5):
    """dt with mu dt / s = ratio for the stiffest direction (smallest variance s)."""
    _, v = energy.gaussian_params(theta)
    return ratio * float(v.min()) / mobility


# ------------------------------------------------------------------ invariance

@pytest.mark.parametrize("energy,theta", TARGETS, ids=TARGET_IDS)
@pytest.mark.parametrize("dtype,ratio", [(F64, 0.5), (torch.float32, 5.0)], ids=["f64-dt0.5", "f32-dt5"])
def test_exact_ou_leaves_equilibrium_invariant(energy, theta, dtype, ratio):
    """Invariant for any dt, including mu dt / s = 5 (where Euler-Maruyama would diverge)."""
    x0 = energy.sample_equilibrium(theta, N, gen=gen(0), dtype=dtype)
    c, v = energy.gaussian_params(theta)
    sampler = md.ExactOU()
    sampler.check(energy)
    x = run_chains(sampler, energy, theta, x0, dt=big_dt(energy, theta, 1.3, ratio), mobility=1.3)
    assert x.dtype == dtype and x.shape == (N, energy.dim)
    assert_stationary(x, c, v)


@pytest.mark.parametrize("energy,theta", TARGETS, ids=TARGET_IDS)
def test_mala_leaves_equilibrium_invariant(energy, theta):
    x0 = energy.sample_equilibrium(theta, N, gen=gen(0), dtype=F64)
    c, v = energy.gaussian_params(theta)
    sampler = md.MALA()
    assert math.isnan(sampler.acceptance_rate)
    x = run_chains(sampler, energy, theta, x0, dt=big_dt(energy, theta, 1.0, 0.5))
    assert_stationary(x, c, v)
    assert sampler.n_proposed == N * N_STEPS
    assert 0.0 < sampler.acceptance_rate < 1.0


def test_mala_corrects_euler_bias_at_large_dt():
    """At mu dt / s = 0.8 Euler inflates the variance by 1/(1 - 0.4); MALA stays exact."""
    n = 100_000
    energy, theta = md.HarmonicTrap(variance=0.7, dim=1), t64([0.2])
    x0 = energy.sample_equilibrium(theta, n, gen=gen(0), dtype=F64)
    dt = 0.8 * 0.7
    mala = md.MALA()
    x = run_chains(mala, energy, theta, x0.clone(), dt=dt, n_steps=20)
    assert_stationary(x, theta, t64([0.7]))
    assert 0.3 < mala.acceptance_rate < 1.0
    xe = run_chains(md.EulerMaruyama(), energy, theta, x0.clone(), dt=dt, n_steps=20)
    assert_stationary(xe, theta, t64([0.7 / (1 - 0.4)]))


def quartic_equilibrium(n, seed):
    """Exact draws from p(x) ~ exp(-x^4/4): u = x^4/4 ~ Gamma(1/4), random sign."""
    rng = np.random.default_rng(seed)
    x = (4.0 * rng.gamma(0.25, size=n)) ** 0.25 * rng.choice([-1.0, 1.0], size=n)
    return torch.as_tensor(x, dtype=F64)[:, None]


def test_mala_leaves_non_quadratic_equilibrium_invariant():
    """MALA keeps p(x) ~ exp(-x^4/4) invariant: <x^2>, <x^4> against quadrature.

    The chains start from exact draws: MALA is not geometrically ergodic for tails lighter than
    Gaussian (chains started far out in the tail stay stuck), so this is a pure invariance check.
    """
    energy, theta = Quartic(1), t64([1.0])

    def moment(k):
        return integrate.quad(lambda x: x ** k * math.exp(-x ** 4 / 4), -math.inf, math.inf)[0]

    z = moment(0)
    m2, m4, m8 = moment(2) / z, moment(4) / z, moment(8) / z
    assert m4 == pytest.approx(1.0, rel=1e-10)        # <x E'(x)> = 1
    n = 100_000
    x0 = quartic_equilibrium(n, 3)
    assert abs(float((x0 ** 2).mean()) - m2) < 4 * math.sqrt((m4 - m2 ** 2) / n)
    sampler = md.MALA()
    x = run_chains(sampler, energy, theta, x0.clone(), dt=0.3, n_steps=N_STEPS)
    assert float((x != x0).double().mean()) > 0.5      # the chains did move
    x2, x4 = x[:, 0] ** 2, x[:, 0] ** 4
    assert abs(float(x2.mean()) - m2) < 4 * math.sqrt((m4 - m2 ** 2) / n)
    assert abs(float(x4.mean()) - m4) < 4 * math.sqrt((m8 - m4 ** 2) / n)
    assert 0.0 < sampler.acceptance_rate < 1.0


# ------------------------------------------------------------------ Euler-Maruyama bias

@pytest.mark.parametrize("ratio", [0.2, 0.5])
def test_euler_maruyama_stationary_variance_bias(ratio):
    """Stationary EM variance on the trap is s / (1 - mu dt / (2 s)): an O(dt) bias."""
    s, mu = 0.7, 1.3
    energy, theta = md.HarmonicTrap(variance=s, dim=1), t64([0.4])
    dt = ratio * s / mu
    x0 = energy.sample_equilibrium(theta, N, gen=gen(0), dtype=F64)
    # The variance gap relaxes by (1 - mu dt / s)^2 <= 0.64 per step: 40 steps leave < 1e-8 of it.
    x = run_chains(md.EulerMaruyama(), energy, theta, x0, dt=dt, mobility=mu, n_steps=40)
    predicted = s / (1.0 - ratio / 2.0)
    assert_stationary(x, theta, t64([predicted]))
    if ratio == 0.5:  # at the larger dt the bias is resolved: far more than 4 SE from s
        v = x.var(0)
        assert torch.all((v - s).abs() > 4 * math.sqrt(2.0 / N) * s)


def test_euler_bias_in_moments_backend():
    """train(backend='moments', sampler='euler'): the chain variance relaxes to s / (1 - mu dt / (2 s))."""
    s, mu, T, n = 0.7, 1.3, 3.0, 30
    dt = T / n
    energy = md.HarmonicTrap(variance=s, dim=1)
    seen = []
    res = md.train(energy, md.data.Gaussian(0.2, s), schedule=md.schedules.constant(1e-9, T), theta0=[0.2],
                   mobility=mu, n_steps=n, sampler="euler", backend="moments",
                   observers=[lambda k, th, st: seen.append(float(st.var[0]))])
    assert res.sampler == "euler"
    r = 1.0 - mu * dt / s
    # Exact EM moment map from var_0 = s.
    expect = [s]
    for _ in range(n):
        expect.append(r * r * expect[-1] + 2 * mu * dt)
    interior = seen[1:-1]  # observer runs after every update; impulses (first, last) do not move chains
    assert interior == pytest.approx(expect[1:], rel=1e-12)
    assert interior[-1] == pytest.approx(s / (1 - mu * dt / (2 * s)), rel=1e-6)
    # Chains no longer match p_theta: the final lag is a positive KL.
    assert res.kl_final > 1e-3


def test_euler_particles_match_euler_moments():
    s, mu, T, n = 0.7, 1.3, 3.0, 30
    energy = md.HarmonicTrap(variance=s, dim=1)
    res = md.train(energy, md.data.Gaussian(0.2, s), schedule=md.schedules.constant(1e-9, T), theta0=[0.2],
                   mobility=mu, n_steps=n, sampler="euler", n_chains=N, n_replicas=1, dtype=F64,
                   keep_chains=True)
    x = res.final_chains
    dt = T / n
    assert_stationary(x, t64([0.2]), t64([s / (1 - mu * dt / (2 * s))]))


# ------------------------------------------------------------------ pairing and names

def test_exact_ou_refuses_non_quadratic_energy():
    with pytest.raises(md.InputError, match="quadratic"):
        md.ExactOU().check(Quartic())
    # MALA and Euler accept any energy with a gradient.
    md.MALA().check(Quartic())
    md.EulerMaruyama().check(Quartic())


def test_train_refuses_exact_sampler_for_non_quadratic_energy():
    x0 = torch.zeros(10, 1)
    with pytest.raises(md.InputError, match="quadratic"):
        md.train(Quartic(), torch.randn(20, 1), schedule=md.schedules.constant(0.1, 1.0), theta0=[1.0],
                 n_steps=2, n_chains=10, chains=x0, sampler="exact")


@pytest.mark.parametrize("name", ["nope", "Exact", "", "ou"])
def test_unknown_sampler_name_raises(name):
    with pytest.raises(md.InputError, match="unknown sampler"):
        md.train(md.HarmonicTrap(), md.data.Gaussian(0.0, 1.0), schedule=md.schedules.constant(0.1, 1.0),
                 theta0=[0.0], n_steps=2, n_chains=10, sampler=name)


def test_moments_backend_refuses_mala():
    with pytest.raises(md.InputError, match="mala"):
        md.train(md.HarmonicTrap(), md.data.Gaussian(0.0, 1.0), schedule=md.schedules.constant(0.1, 1.0),
                 theta0=[0.0], n_steps=2, sampler="mala", backend="moments")


def test_sampler_objects_accepted_and_named():
    assert md.samplers.make_sampler("exact").name == "exact"
    assert md.samplers.make_sampler("euler").name == "euler"
    assert md.samplers.make_sampler("mala").name == "mala"
    s = md.MALA()
    assert md.samplers.make_sampler(s) is s
    assert md.ExactOU.weak_order == math.inf and md.EulerMaruyama.weak_order == 1.0


# ------------------------------------------------------------------ reproducibility

@pytest.mark.parametrize("make", [md.ExactOU, md.EulerMaruyama, md.MALA], ids=["exact", "euler", "mala"])
def test_same_seed_same_chains_other_seed_other_chains(make):
    energy, theta = GAUSS
    x0 = energy.sample_equilibrium(theta, 5000, gen=gen(0), dtype=torch.float32)
    dt = big_dt(energy, theta)
    a = run_chains(make(), energy, theta, x0.clone(), dt=dt, n_steps=10, seed=7)
    b = run_chains(make(), energy, theta, x0.clone(), dt=dt, n_steps=10, seed=7)
    c = run_chains(make(), energy, theta, x0.clone(), dt=dt, n_steps=10, seed=8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert bool(torch.isfinite(a).all())
