"""``md.train(..., backend="fokker_planck")``: the exact 1-D density backend through the one loop.

References (none shares the FP code path):

* harmonic trap (theory.md check 1 example: s = 0.5, mu = 1.3, T = 2, theta_0 = -0.4, xbar = 1.7),
  optimal schedule, n_steps = 100, against the moments backend (exact OU moments). The SQRA grid
  is O(h^2): on (-6, 8) with n = 201 / 401 / 801 points the FP - moments differences of the excess
  work were 1.402e-3 / 3.503e-4 / 8.757e-5 (observed order 2.001, 2.000) and of theta_final
  3.30e-4 / 8.24e-5 / 2.06e-5; the Richardson extrapolation of the two finer grids agrees with the
  moments backend to 2e-8.
* tilted double well E = a (x^2 - 1)^2 + b x, theta_0 = (1, 0), data = 4,000 exact draws at
  (1, 0.6), constant schedule (scale 2, T = 1, mu = 1, 10 learning updates), against MALA particles
  (16 replicas x 10,000 chains, float64) with every chain interval split into m MALA steps
  (updates with lr = 0 in between). FP: W_ex = 0.19381, theta_T = (0.99437, 0.80545). MALA's O(dt)
  bias, measured offline with 16 x 20,000 chains at dt = 0.02 / 0.01 / 0.005 / 0.0025:
  W_ex - W_FP = +4.3e-3 / +2.3e-3 / +1.7e-3 / +1.0e-3 (SE ~2e-3 each), converging to the FP value.
  The test runs dt = 0.02 and 0.01 and checks (a) the Richardson value 2 W(dt) - W(2 dt) within
  4 of its replica SE, (b) W(dt) within 4 replica SE plus the measured bias allowance
  |W(dt) - W(2 dt)|; the same for theta_final per component.
* Identities 1 and 2 and the first law are exact in discrete time on the grid (tolerance 1e-10),
  for equilibrium and displaced starts; mass and positivity are checked at every update by an
  observer; the relaxation time tau used by natural_gradient(tau="auto") on this backend is checked
  against s / mu (trap) and against an eigen-decomposition of the generator (double well).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import mindiss as md
from mindiss.backends.dispatch import default_grid
from mindiss.backends.fokker_planck import FokkerPlanck1D
from mindiss.rates.schedules import DiscreteSchedule

S, MU, T, TH0, XBAR = 0.5, 1.3, 2.0, -0.4, 1.7
TRAP_GRID = (-6.0, 8.0)            # theta_0 - 7.9 sd .. xbar + 8.9 sd: tails below e^-31
IDENTITY = 1e-10

DW_THETA0, DW_TARGET = (1.0, 0.0), (1.0, 0.6)
DW_GRID = (-3.0, 3.0, 601)         # E - min E >= 60 kT at both ends for the thetas visited
DW_SCALE, DW_T, DW_UPDATES = 2.0, 1.0, 10
MALA_REPLICAS, MALA_CHAINS, MALA_SPLITS = 16, 10_000, (5, 10)   # dt = 0.02, 0.01


def t64(*v):
    return torch.tensor(v, dtype=torch.float64)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small tensors on a shared 2-core machine: thread hand-offs cost more than they save."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# ------------------------------------------------------------------------------ helpers

def trap_run(backend, schedule=None, n_steps=100, **kw):
    trap = md.HarmonicTrap(variance=S)
    return md.train(trap, md.data.Gaussian(mean=XBAR, variance=0.5),
                    schedule=schedule or md.schedules.optimal_harmonic(S, MU, T), theta0=[TH0],
                    mobility=MU, n_steps=n_steps, backend=backend, **kw)


def split_schedule(m: int) -> DiscreteSchedule:
    """constant(DW_SCALE, DW_T) with DW_UPDATES learning updates, each chain interval split into
    m moves of dt / m (the extra updates have lr = 0): same protocol, m times finer chain steps."""
    d = md.schedules.constant(DW_SCALE, DW_T).discretise(DW_UPDATES)
    lr, dt, t, imp = [d.lr[0]], [0.0], [0.0], [True]
    for k in range(1, DW_UPDATES + 1):
        for j in range(m):
            lr.append(d.lr[k] if j == 0 else 0.0)
            dt.append(d.dt[k] / m)
            t.append(d.t[k] + j * d.dt[k] / m)
            imp.append(False)
    lr, dt, t, imp = lr + [d.lr[-1]], dt + [0.0], t + [DW_T], imp + [True]
    return DiscreteSchedule(np.asarray(lr), np.asarray(dt), np.asarray(t), np.asarray(imp), DW_T)


def grid_density_observer(log):
    def observe(update, theta, state):
        assert isinstance(state, FokkerPlanck1D)
        log.append((update, float(state.rho.sum()), float(state.rho.min()), bool(np.isfinite(state.rho).all())))
    return observe


@pytest.fixture(scope="module")
def double_well():
    energy = md.ExpFamily.tilted_double_well()
    data = energy.sample_equilibrium(t64(*DW_TARGET), 4000, gen=torch.Generator().manual_seed(5),
                                     dtype=torch.float64)
    log, log_split = [], []
    fp = md.train(energy, data, schedule=split_schedule(1), theta0=list(DW_THETA0), backend="fokker_planck",
                  chains={"grid": DW_GRID}, observers=[grid_density_observer(log)])
    fp_split = md.train(energy, data, schedule=split_schedule(MALA_SPLITS[1]), theta0=list(DW_THETA0),
                        backend="fokker_planck", chains={"grid": DW_GRID},
                        observers=[grid_density_observer(log_split)])
    mala = {m: md.train(energy, data, schedule=split_schedule(m), theta0=list(DW_THETA0), backend="particles",
                        sampler="mala", n_chains=MALA_CHAINS, n_replicas=MALA_REPLICAS, seed=100 + m,
                        dtype=torch.float64)
            for m in MALA_SPLITS}
    return {"energy": energy, "data": data, "fp": fp, "fp_split": fp_split, "mala": mala,
            "log": log, "log_split": log_split}


# ------------------------------------------------------------- harmonic: FP -> moments at O(h^2)

def test_harmonic_fp_converges_to_the_moments_backend_at_second_order():
    ref = trap_run("moments")
    diffs = []
    for n in (201, 401, 801):
        res = trap_run("fokker_planck", chains={"grid": (*TRAP_GRID, n)})
        assert res.backend == "fokker_planck" and res.n_chains == math.inf
        assert abs(res.delta_free_energy) < 1e-12      # Z of the trap does not depend on theta
        diffs.append((res.excess_work - ref.excess_work, res.theta_final[0] - ref.theta_final[0]))
    diffs = np.asarray(diffs)
    order = np.log2(diffs[:-1] / diffs[1:])             # h halves from grid to grid
    assert np.all(np.abs(order - 2.0) < 0.3), (diffs, order)   # measured 2.001, 2.000 (both columns)
    assert abs(diffs[-1, 0]) < 1.5e-4 and abs(diffs[-1, 1]) < 4e-5   # measured 8.8e-5, 2.1e-5
    richardson = (4.0 * diffs[-1] - diffs[-2]) / 3.0
    assert np.all(np.abs(richardson) < 1e-6), richardson       # measured 2e-8


def test_chains_none_dict_and_instance_give_the_same_run():
    trap = md.HarmonicTrap(variance=S)
    theta0 = t64(TH0)
    grid = default_grid(trap, theta0)
    assert grid[0] < TH0 - 10 * math.sqrt(S) and grid[1] > TH0 + 10 * math.sqrt(S)
    assert (grid[1] - grid[0]) / (grid[2] - 1) <= 0.01 + 1e-12
    fp0 = FokkerPlanck1D(trap, theta0, grid=grid)
    rho0 = fp0.rho.copy()
    # one interior update (a single long move): the default grid is fine (h = 0.01, 1713 points)
    runs = [trap_run("fokker_planck", n_steps=1, chains=c) for c in (None, {"grid": grid}, fp0)]
    assert runs[0].n_updates == 3 and runs[0].excess_work > 0
    for r in runs[1:]:
        assert r.excess_work == runs[0].excess_work and r.theta_final == runs[0].theta_final
        np.testing.assert_array_equal(r.history.values, runs[0].history.values)
    np.testing.assert_array_equal(fp0.rho, rho0)           # the caller's instance is not advanced


# ------------------------------------------------------------ double well: FP vs MALA particles

def _mala_vs_fp(fine, coarse, fine_se, coarse_se):
    """(Richardson value, its SE, bias allowance |fine - coarse|) for an O(dt) sampler bias."""
    fine, coarse, fine_se, coarse_se = map(np.asarray, (fine, coarse, fine_se, coarse_se))
    rich = 2.0 * fine - coarse
    rich_se = np.sqrt(4.0 * fine_se**2 + coarse_se**2)
    return rich, rich_se, np.abs(fine - coarse)


def test_double_well_excess_work_matches_mala_particles(double_well):
    fp = double_well["fp"]
    coarse, fine = (double_well["mala"][m] for m in MALA_SPLITS)
    assert fp.excess_work > 0.1          # a run that dissipates: measured 0.1938
    for r in (coarse, fine):
        assert r.n_replicas == MALA_REPLICAS and r.excess_work_se > 0 and r.acceptance_rate > 0.97
    rich, rich_se, allowance = _mala_vs_fp(fine.excess_work, coarse.excess_work, fine.excess_work_se, coarse.excess_work_se)
    assert abs(rich - fp.excess_work) < 4.0 * rich_se, (rich, rich_se, fp.excess_work)
    assert abs(fine.excess_work - fp.excess_work) < 4.0 * fine.excess_work_se + allowance, \
        (fine.excess_work, fine.excess_work_se, allowance, fp.excess_work)
    # the tolerance is tight enough to matter: well below the excess work itself
    assert 4.0 * rich_se < 0.15 * fp.excess_work


def test_double_well_theta_final_matches_mala_particles(double_well):
    fp = double_well["fp"]
    coarse, fine = (double_well["mala"][m] for m in MALA_SPLITS)
    exact = np.asarray(fp.theta_final)
    rich, rich_se, allowance = _mala_vs_fp(fine.theta_final, coarse.theta_final, fine.theta_final_se, coarse.theta_final_se)
    assert np.all(np.abs(rich - exact) < 4.0 * rich_se), (rich, rich_se, exact)
    assert np.all(np.abs(np.asarray(fine.theta_final) - exact) < 4.0 * np.asarray(fine.theta_final_se)
                  + allowance), (fine.theta_final, fine.theta_final_se, allowance, exact)
    assert abs(exact[1] - DW_THETA0[1]) > 0.5      # theta moved (b: 0 -> 0.805)


def test_fp_moves_compose_exactly(double_well):
    """Splitting every chain interval into m exact moves changes nothing (exp(Q dt) semigroup)."""
    a, b = double_well["fp"], double_well["fp_split"]
    assert abs(a.excess_work - b.excess_work) < 1e-10
    assert np.max(np.abs(np.asarray(a.theta_final) - b.theta_final)) < 1e-10
    assert abs(a.entropy_production - b.entropy_production) < 1e-10


def test_mass_conserved_and_non_negative_at_every_update(double_well):
    for key, res in (("log", double_well["fp"]), ("log_split", double_well["fp_split"])):
        log = double_well[key]
        assert [u for u, *_ in log] == list(range(1, res.n_updates + 1))
        for update, mass, low, finite in log:
            assert finite and abs(mass - 1.0) < 1e-12 and low >= 0.0, (update, mass, low)


def test_mass_conserved_from_a_displaced_start():
    log = []
    trap = md.HarmonicTrap(variance=S)
    x = np.linspace(*TRAP_GRID, 401)
    density = np.exp(-0.5 * (x - 2.5) ** 2 / 0.05)   # narrow, far from p_theta0
    res = md.train(trap, md.data.Gaussian(mean=XBAR, variance=0.5), schedule=md.schedules.constant(1.0, T),
                   theta0=[TH0], mobility=MU, n_steps=30, backend="fokker_planck",
                   chains={"grid": (*TRAP_GRID, 401), "density": density}, observers=[grid_density_observer(log)])
    assert len(log) == res.n_updates
    for update, mass, low, finite in log:
        assert finite and abs(mass - 1.0) < 1e-12 and low >= 0.0, (update, mass, low)


# --------------------------------------------------------------------- identities, exact on the grid

def _displaced(x, centre, var):
    return np.exp(-0.5 * (x - centre) ** 2 / var)


@pytest.mark.parametrize("case", ["trap-equilibrium", "trap-displaced", "well-equilibrium", "well-displaced"])
def test_identities_exact_on_the_grid(case, double_well):
    if case.startswith("trap"):
        energy, theta0, grid = md.HarmonicTrap(variance=S), [TH0], (*TRAP_GRID, 401)
        data, kw = md.data.Gaussian(mean=XBAR, variance=0.5), dict(mobility=MU, n_steps=30)
        schedule, centre, var = md.schedules.constant(1.0, T), 0.8, 0.2
    else:
        energy, theta0, grid = double_well["energy"], list(DW_THETA0), DW_GRID
        data, kw = double_well["data"], {}
        schedule, centre, var = split_schedule(1), -1.2, 0.05
    chains = {"grid": grid}
    x = np.linspace(*grid)
    if case.endswith("displaced"):
        chains["density"] = _displaced(x, centre, var)
    res = md.train(energy, data, schedule=schedule, theta0=theta0, backend="fokker_planck", chains=chains, **kw)
    # Identity 2: W_ex = KL_T - KL_0 + entropy production, every term >= 0 except -KL_0
    assert abs(res.excess_work - (res.kl_final - res.kl_initial + res.entropy_production)) < IDENTITY
    assert res.kl_final >= 0 and res.entropy_production > 0
    # Identity 1 (E linear in theta up to x-independent terms) and the first law
    assert res.identity1_residual < IDENTITY and res.first_law_residual < IDENTITY
    assert abs(res.bias - res.excess_work) < IDENTITY
    # KL_0 against an independent evaluation on the grid
    e = energy.energy(torch.as_tensor(x).reshape(-1, 1), t64(*theta0)).numpy()
    log_pi = -e - np.logaddexp.reduce(-e)
    if case.endswith("equilibrium"):
        assert res.kl_initial < 1e-13 and res.excess_work > 0        # second law
    else:
        rho = chains["density"] / chains["density"].sum()
        kl0 = float(np.sum(rho[rho > 0] * (np.log(rho[rho > 0]) - log_pi[rho > 0])))
        assert res.kl_initial > 0.5 and abs(res.kl_initial - kl0) < 1e-10 * max(1.0, kl0)


def test_displaced_trap_start_matches_the_moments_backend():
    """Out of equilibrium, N(0.8, 0.2) on the grid vs chains=(0.8, 0.2) on the moments backend."""
    kw = dict(schedule=md.schedules.constant(1.0, T), n_steps=30)
    grid = (*TRAP_GRID, 801)
    fp = trap_run("fokker_planck", chains={"grid": grid, "density": _displaced(np.linspace(*grid), 0.8, 0.2)}, **kw)
    ref = trap_run("moments", chains=(0.8, 0.2), **kw)
    for name in ("excess_work", "kl_initial", "kl_final", "entropy_production"):
        a, b = getattr(fp, name), getattr(ref, name)
        assert abs(a - b) < 2e-4 * max(abs(b), 1e-2), (name, a, b)   # O(h^2), h = 0.0175
    assert abs(fp.theta_final[0] - ref.theta_final[0]) < 1e-4


# ------------------------------------------------------------------ natural gradient on the grid

def test_natural_gradient_tau_from_the_generator_on_the_trap():
    grid = {"grid": (*TRAP_GRID, 401)}
    ng = trap_run("fokker_planck", schedule=md.schedules.natural_gradient(T, tau="auto", fisher="full"), chains=grid)
    opt = trap_run("fokker_planck", chains=grid)
    ref = trap_run("moments")
    (est,) = ng.tau_estimates
    assert "Fokker-Planck" in est["method"] and est["update"] == 0
    assert abs(est["tau"] - S / MU) < 1e-3 * S / MU, est            # measured 3.1e-4 relative (h = 0.035)
    grid_error = abs(opt.excess_work - ref.excess_work)             # 3.5e-4 on this grid
    assert abs(ng.excess_work - opt.excess_work) < max(grid_error, 1e-6), (ng.excess_work, opt.excess_work)
    assert abs(ng.excess_work - opt.excess_work) < 1e-3 * opt.excess_work
    assert abs(ng.theta_final[0] - opt.theta_final[0]) < 1e-4
    assert ng.preconditioner["name"] == "fisher-full"
    assert abs(ng.excess_work - (ng.kl_final - ng.kl_initial + ng.entropy_production)) < IDENTITY


def _tau_by_eigendecomposition(energy, theta, grid, mobility):
    """tau = tr(I^-1 zeta) / P with zeta = sum_k a_k a_k^T / |lambda_k| from the symmetrised
    generator D^-1/2 Q D^1/2 (dense eigh), a_k = u_k . sqrt(pi) f: independent of the sparse solve."""
    fp = FokkerPlanck1D(energy, theta, grid=grid)
    pi = fp.boltzmann(energy, theta)
    q = fp.generator(energy, theta, mobility).toarray()
    sym = np.sqrt(1.0 / pi)[:, None] * q * np.sqrt(pi)[None, :]
    lam, u = np.linalg.eigh(0.5 * (sym + sym.T))
    f = energy.grad_theta(torch.as_tensor(fp.x).reshape(-1, 1), theta).numpy()
    f = f - pi @ f
    a = u.T @ (np.sqrt(pi)[:, None] * f)          # (modes, P)
    keep = lam < -1e-9 * np.abs(lam).max()
    zeta = (a[keep] / -lam[keep, None]).T @ a[keep]
    fisher = (f * pi[:, None]).T @ f
    return float(np.trace(np.linalg.solve(fisher, zeta)) / f.shape[1])


def test_natural_gradient_runs_on_the_double_well_with_exact_tau(double_well):
    energy, data = double_well["energy"], double_well["data"]
    grid = (-3.0, 3.0, 301)
    res = md.train(energy, data, schedule=md.schedules.natural_gradient(DW_T, tau="auto", fisher="full"),
                   theta0=list(DW_THETA0), n_steps=10, backend="fokker_planck", chains={"grid": grid})
    (est,) = res.tau_estimates
    assert "Fokker-Planck" in est["method"]
    tau = _tau_by_eigendecomposition(energy, t64(*DW_THETA0), grid, 1.0)
    assert abs(est["tau"] - tau) < 1e-8 * tau, (est["tau"], tau)
    assert np.all(np.isfinite(res.theta_final)) and res.excess_work > 0
    assert abs(res.excess_work - (res.kl_final - res.kl_initial + res.entropy_production)) < IDENTITY
    assert res.identity1_residual < IDENTITY and res.first_law_residual < IDENTITY


# ------------------------------------------------------------------------------------- bad input

def test_bad_input_is_refused():
    trap = md.HarmonicTrap(variance=S)
    data = md.data.Gaussian(mean=XBAR, variance=0.5)
    sched = md.schedules.optimal_harmonic(S, MU, T)
    kw = dict(schedule=sched, theta0=[TH0], mobility=MU, n_steps=5, backend="fokker_planck")
    with pytest.raises(md.InputError, match="Euler"):
        md.train(trap, data, sampler="euler", **kw)
    with pytest.raises(md.InputError, match="one-dimensional"):
        md.train(md.HarmonicTrap(variance=S, dim=2), md.data.Gaussian(mean=XBAR, variance=0.5, dim=2),
                 **{**kw, "theta0": [TH0, TH0]})
    with pytest.raises(md.InputError, match="samples"):
        md.train(md.ExpFamily.tilted_double_well(), md.data.Gaussian(mean=0.5, variance=0.5),
                 **{**kw, "theta0": [1.0, 0.0]})
    with pytest.raises(md.InputError, match="keys"):
        md.train(trap, data, chains={"grid": (*TRAP_GRID, 201), "densty": None}, **kw)
    with pytest.raises(md.InputError, match="density"):
        md.train(trap, data, chains={"grid": (*TRAP_GRID, 201), "density": np.ones(7)}, **kw)
    with pytest.raises(md.InputError, match="grid"):
        md.train(trap, data, chains={"grid": (1.0, -1.0, 201)}, **kw)
    with pytest.raises(md.InputError):
        md.train(trap, data, chains=torch.zeros(10, 1), **kw)
    with pytest.raises(md.InputError, match="low-rank"):
        md.train(trap, data, preconditioner="fisher-lowrank", **kw)


def test_sampler_caveats_are_not_reported_for_the_exact_grid_move():
    energy = md.ExpFamily.tilted_double_well()
    data = energy.sample_equilibrium(t64(*DW_TARGET), 500, gen=torch.Generator().manual_seed(0), dtype=torch.float64)
    kw = dict(schedule=md.schedules.constant(1.0, 1.0), theta0=list(DW_THETA0), n_steps=3,
              backend="fokker_planck", chains={"grid": (-3.0, 3.0, 201)})
    exact = md.train(energy, data, sampler="exact", **kw)
    try:
        mala = md.train(energy, data, sampler="mala", **kw)
    except md.InputError:   # refusing a sampler the backend cannot represent is also a fix
        return
    assert mala.excess_work == exact.excess_work     # the grid move does not use the sampler
    assert mala.acceptance_rate is None and not any("MALA" in n for n in mala.notes), \
        (mala.acceptance_rate, mala.notes)
