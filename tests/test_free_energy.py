"""Free-energy estimators against 1-D quadrature (exact Delta F) and closed forms.

Work samples for Jarzynski / BAR come from a nonequilibrium switching protocol written here,
independently of ``free_energy.switching_work``: theta moves linearly in n_switch updates, each
update adds E_new(x) - E_old(x) to the work with the chains frozen, then one MALA move at the new
theta (Crooks split, theory.md section 2). MALA leaves p_theta invariant, so Jarzynski and Crooks
hold exactly. Coverage checks use independent replicas; where several replicas share one call,
they are disjoint groups of independent chains (equivalent to separate seeds). Ensembles stay
at <= 2000 chains per call: above ~4000 elements torch parallelises each op, which on a loaded
2-core machine costs ~20x.
"""
import math

import numpy as np
import pytest
import torch

from mindiss.errors import InputError
from mindiss.energies.expfamily import ExpFamily
from mindiss.estimators.free_energy import (
    FreeEnergyEstimate,
    ais,
    bar,
    jarzynski,
    sample_grad_theta_path,
    switching_work,
    thermodynamic_integration,
    thermodynamic_integration_sampled,
)
from mindiss.backends.samplers import MALA


def _t(*values):
    return torch.tensor(values, dtype=torch.float64)


# Two non-Gaussian cases: the tilt of a double well changes sign while the barrier doubles; a
# single quartic well turns into a double well. Both dissipate ~0.1-0.2 kT per chain with 30
# switching updates (genuinely out of equilibrium, ESS/N ~ 0.75-0.85: Jarzynski's valid regime).
CASES = {
    "tilted_double_well": (ExpFamily.tilted_double_well, _t(1.0, 0.3), _t(2.0, -0.4)),
    "quartic": (ExpFamily.quartic, _t(1.0, 0.5), _t(-1.5, 1.0)),
}


@pytest.fixture(params=sorted(CASES), scope="module")
def case(request):
    make, theta0, theta1 = CASES[request.param]
    energy = make()
    exact = energy.free_energy(theta1) - energy.free_energy(theta0)
    return energy, theta0, theta1, exact


def protocol_work(energy, theta0, theta1, n_chains, *, n_switch=30, dt=0.05, seed=0):
    """Work per chain of a linear switch theta0 -> theta1, chains from exact draws at theta0."""
    gen = torch.Generator().manual_seed(seed)
    x = energy.sample_equilibrium(theta0, n_chains, gen=gen, dtype=torch.float64)
    mala = MALA()
    work = torch.zeros(n_chains, dtype=torch.float64)
    old = theta0
    for k in range(1, n_switch + 1):
        new = theta0 + (k / n_switch) * (theta1 - theta0)
        work += energy.energy(x, new) - energy.energy(x, old)  # parameter update, chains frozen
        x = mala.step(energy, new, x, dt=dt, mobility=1.0, gen=gen)  # chain move at fixed theta
        old = new
    return work


def coverage(estimates, errors, exact, z=1.96):
    est, err = np.asarray(estimates), np.asarray(errors)
    assert np.all(err > 0)
    return float(np.mean(np.abs(est - exact) <= z * err)), float(np.std((est - exact) / err))


# -- recovery of the quadrature Delta F -----------------------------------------------------
def test_jarzynski_recovers_quadrature(case):
    energy, theta0, theta1, exact = case
    work = protocol_work(energy, theta0, theta1, 1000, seed=1)
    est = jarzynski(work)
    assert isinstance(est, FreeEnergyEstimate) and est.method == "jarzynski" and est.n_samples == 1000
    assert est.standard_error > 0
    assert abs(est.delta_free_energy - exact) < 3 * est.standard_error
    # Genuinely out of equilibrium: mean work exceeds Delta F by several standard errors (second law).
    assert float(work.mean()) - exact > 4 * float(work.std()) / math.sqrt(1000)
    assert 0.5 * 1000 < est.diagnostics["ess"] < 1000
    assert est.diagnostics["bias"] == pytest.approx(0.5 * est.diagnostics["se_statistical"] ** 2)


def test_bar_recovers_quadrature_and_beats_one_sided(case):
    energy, theta0, theta1, exact = case
    wf = protocol_work(energy, theta0, theta1, 1000, seed=2)
    wr = protocol_work(energy, theta1, theta0, 600, seed=3)  # reverse: from equilibrium at theta1
    est = bar(wf, wr)
    assert est.method == "bar" and est.n_samples == 1600 and est.standard_error > 0
    assert abs(est.delta_free_energy - exact) < 3 * est.standard_error
    assert est.standard_error < jarzynski(wf).standard_error
    assert est.diagnostics["mean_dissipated_work_forward"] > 0 < est.diagnostics["mean_dissipated_work_reverse"]
    swapped = bar(wr, wf)  # reversing the roles of the end points flips the sign, not the error
    assert swapped.delta_free_energy == pytest.approx(-est.delta_free_energy, abs=1e-10)
    assert swapped.standard_error == pytest.approx(est.standard_error, rel=1e-9)


def test_thermodynamic_integration_sampled_recovers_quadrature(case):
    energy, theta0, theta1, exact = case
    thetas = torch.stack([theta0 + lam * (theta1 - theta0) for lam in torch.linspace(0, 1, 9, dtype=torch.float64)])
    # 50 burn-in moves (time 5) per point: longer than the well-to-well hopping time (~4 at a = 2)
    # that the chains carried over from the previous point need to catch up (lag bias otherwise).
    est = thermodynamic_integration_sampled(energy, thetas, n_chains=200, n_steps=100, n_burn=50, dt=0.1,
                                            gen=torch.Generator().manual_seed(4))
    assert est.standard_error > 0 and est.diagnostics["rule"] == "simpson"
    assert abs(est.delta_free_energy - exact) < 3 * est.standard_error
    # |T_h - T_2h| / 3 also carries sampling noise here; the true Simpson error is ~1e-5 (exact-integrand test).
    assert est.diagnostics["discretisation_error"] < 2 * est.standard_error
    assert est.diagnostics["dof"] == 199 and 0.5 < est.diagnostics["acceptance_rate"] < 1.0


def test_ais_recovers_quadrature(case):
    energy, theta0, theta1, exact = case
    est = ais(energy, theta0, theta1, n_chains=1000, n_intermediate=30, dt=0.1, gen=torch.Generator().manual_seed(5))
    assert est.method == "ais" and est.standard_error > 0
    assert abs(est.delta_free_energy - exact) < 3 * est.standard_error
    assert est.log_partition_ratio == est.diagnostics["log_partition_ratio"] == -est.delta_free_energy
    assert 0 < est.diagnostics["ess"] < 1000


def test_ais_is_jarzynski_on_switching_work_and_exact_on_a_trivial_path():
    energy, theta0, theta1 = ExpFamily.tilted_double_well(), _t(1.0, 0.3), _t(2.0, -0.4)
    kw = dict(n_chains=64, n_intermediate=5, dt=0.1)
    a = ais(energy, theta0, theta1, gen=torch.Generator().manual_seed(6), **kw)
    j = jarzynski(switching_work(energy, theta0, theta1, gen=torch.Generator().manual_seed(6), **kw))
    assert (a.delta_free_energy, a.standard_error) == (j.delta_free_energy, j.standard_error)
    same = ais(energy, theta0, theta0, gen=torch.Generator().manual_seed(7), **kw)  # every weight is 1
    assert same.delta_free_energy == 0.0 and same.standard_error == 0.0 and same.diagnostics["ess"] == 64
    x0 = torch.linspace(-2.0, 2.0, 64, dtype=torch.float64).reshape(64, 1)  # instantaneous switch: W = E_1 - E_0
    w = switching_work(energy, theta0, theta1, n_chains=64, n_intermediate=0, dt=0.1, gen=torch.Generator(), x0=x0)
    assert torch.allclose(w, energy.energy(x0, theta1) - energy.energy(x0, theta0), rtol=0, atol=1e-12)


# -- closed forms ---------------------------------------------------------------------------
def test_jarzynski_bias_matches_gaussian_work_theory():
    """W ~ N(dF + s^2/2, s^2) obeys Jarzynski exactly; E[-ln mean e^-W] - dF = (e^{s^2} - 1)/(2N) to
    first order (second-order terms ~5 % here). 16000 replicas resolve the bias to ~15 %."""
    d_f, sigma, n, reps = 0.7, 1.0, 100, 16000
    work = np.random.default_rng(8).normal(d_f + sigma ** 2 / 2, sigma, size=(reps, n))
    results = [jarzynski(w) for w in work]
    est = np.array([r.delta_free_energy for r in results])
    bias_hat = np.array([r.diagnostics["bias"] for r in results])
    theory = (math.exp(sigma ** 2) - 1) / (2 * n)
    rep_se = est.std() / math.sqrt(reps)
    measured = est.mean() - d_f
    assert measured > 5 * rep_se  # the exponential average really is biased upwards ...
    assert abs(measured - theory) < 4 * rep_se  # ... by the first-order amount
    assert bias_hat.mean() == pytest.approx(theory, rel=0.15)  # the per-sample estimate of it
    r = results[0]  # the reported error includes the bias
    assert r.standard_error == pytest.approx(math.hypot(r.diagnostics["se_statistical"], r.diagnostics["bias"]))
    corrected = np.array([jarzynski(w, bias_correct=True).delta_free_energy for w in work[:4000]])
    assert np.allclose(corrected, est[:4000] - bias_hat[:4000])
    assert abs((est - bias_hat).mean() - d_f) < 4 * rep_se < measured
    flat = jarzynski(np.full(10, 1.25))  # constant work: Delta F = W, no error, ess = N
    assert (flat.delta_free_energy, flat.standard_error, flat.diagnostics["ess"]) == (1.25, 0.0, 10.0)


def test_thermodynamic_integration_rules_against_exact_integrand():
    """With the exact <phi> (quadrature) the only error is discretisation: Simpson is far better
    than the trapezoid, |T_h - T_2h| / 3 estimates the trapezoid's error, which falls as h^2."""
    energy, theta0, theta1 = ExpFamily.tilted_double_well(), _t(1.0, 0.3), _t(2.0, -0.4)
    exact = energy.free_energy(theta1) - energy.free_energy(theta0)
    errs = {}
    for k in (9, 17):
        thetas = torch.stack([theta0 + lam * (theta1 - theta0) for lam in torch.linspace(0, 1, k, dtype=torch.float64)])
        g = torch.stack([energy.expected_phi(t) for t in thetas])
        est = thermodynamic_integration(thetas, g)
        trap_err = abs(est.diagnostics["trapezoid"] - exact)
        assert est.diagnostics["rule"] == "simpson" and math.isnan(est.standard_error)
        assert abs(est.delta_free_energy - exact) < 0.05 * trap_err
        assert 0.7 < est.diagnostics["discretisation_error"] / trap_err < 1.3
        errs[k] = trap_err
        even = thermodynamic_integration(thetas[:-1], g[:-1])  # even number of points: trapezoid
        assert even.diagnostics["rule"] == "trapezoid" and even.delta_free_energy == even.diagnostics["trapezoid"]
    assert 3.5 < errs[9] / errs[17] < 4.5


def test_thermodynamic_integration_error_propagation():
    thetas = np.array([[0.0, 1.0], [0.5, 0.0]])  # one trapezoid segment: dF = (g0 + g1)/2 . dtheta
    g = np.array([[1.0, 2.0], [3.0, -1.0]])
    se = np.array([[0.1, 0.2], [0.3, 0.4]])
    est = thermodynamic_integration(thetas, g, se=se)
    assert est.delta_free_energy == pytest.approx(0.5 * (4.0 * 0.5 + 1.0 * -1.0))
    # weights c_0 = c_1 = dtheta / 2 = (0.25, -0.5): se^2 = sum (c_kp se_kp)^2
    assert est.standard_error == pytest.approx(math.sqrt(0.025 ** 2 + 0.1 ** 2 + 0.075 ** 2 + 0.2 ** 2))
    reps = g + np.array([[[0.1, 0.0], [0.0, 0.0]], [[-0.1, 0.0], [0.0, 0.0]]])  # replicas (B, K, P)
    r = thermodynamic_integration(thetas, reps)
    assert r.delta_free_energy == pytest.approx(est.delta_free_energy)
    assert r.standard_error == pytest.approx(np.std([0.025, -0.025], ddof=1) / math.sqrt(2))
    scalar = thermodynamic_integration([0.0, 1.0, 2.0], [1.0, 1.0, 1.0], se=[0.1, 0.1, 0.1])  # 1-parameter path
    assert scalar.delta_free_energy == pytest.approx(2.0) and scalar.standard_error > 0


# -- coverage over independent replicas -----------------------------------------------------
def test_bar_coverage_gaussian_work():
    """Gaussian work obeying Crooks (W_F ~ N(dF + s^2/2, s^2), W_R ~ N(-dF + s^2/2, s^2)), s = 2 kT:
    poor but sufficient overlap, where the asymptotic BAR variance applies. 400 replicas."""
    d_f, sigma = -1.3, 2.0
    rng = np.random.default_rng(9)
    res = [bar(rng.normal(d_f + sigma ** 2 / 2, sigma, 200), rng.normal(-d_f + sigma ** 2 / 2, sigma, 100))
           for _ in range(400)]
    frac, spread = coverage([r.delta_free_energy for r in res], [r.standard_error for r in res], d_f)
    assert 0.92 <= frac <= 0.985 and 0.85 < spread < 1.15


def test_bar_and_jarzynski_coverage_on_switching_protocol():
    """The tilted-double-well switching protocol (non-Gaussian, bimodal work), 100 replicas of
    200 forward / 100 reverse chains (ESS/N ~ 0.75: first-order regime)."""
    energy, theta0, theta1 = ExpFamily.tilted_double_well(), _t(1.0, 0.3), _t(2.0, -0.4)
    exact = energy.free_energy(theta1) - energy.free_energy(theta0)
    wf = torch.cat([protocol_work(energy, theta0, theta1, 2000, seed=10 + s) for s in range(10)]).reshape(100, 200)
    wr = torch.cat([protocol_work(energy, theta1, theta0, 2000, seed=20 + s) for s in range(5)]).reshape(100, 100)
    b = [bar(f, r) for f, r in zip(wf, wr)]
    frac_b, _ = coverage([r.delta_free_energy for r in b], [r.standard_error for r in b], exact)
    j = [jarzynski(f) for f in wf]
    frac_j, _ = coverage([r.delta_free_energy for r in j], [r.standard_error for r in j], exact)
    assert 0.88 <= frac_b <= 1.0 and 0.88 <= frac_j <= 1.0


def test_jarzynski_bias_aware_error_covers_nominal():
    """Gaussian work, s = 0.5 kT (mean dissipation 0.125 kT), N = 300: e^{s^2}/N ~ 4e-3 and the
    skewness of e^{-W} over sqrt(N) ~ 0.1, where the first-order error theory holds. 1000
    replicas: coverage at 1.96 err must reach 0.95 within two binomial standard deviations."""
    d_f, sigma = 0.4, 0.5
    rng = np.random.default_rng(12)
    res = [jarzynski(rng.normal(d_f + sigma ** 2 / 2, sigma, 300)) for _ in range(1000)]
    frac, _ = coverage([r.delta_free_energy for r in res], [r.standard_error for r in res], d_f)
    assert 0.95 - 2 * math.sqrt(0.95 * 0.05 / 1000) <= frac <= 0.99


def test_thermodynamic_integration_coverage():
    """60 replicas of 32 chains on the quartic path (1, 0.5) -> (-1.5, 1) (5 points, Simpson);
    relaxation is fast compared with the 20 burn-in moves (time 2), so the lag bias is small."""
    energy, theta0, theta1 = ExpFamily.quartic(), _t(1.0, 0.5), _t(-1.5, 1.0)
    exact = energy.free_energy(theta1) - energy.free_energy(theta0)
    thetas = torch.stack([theta0 + lam * (theta1 - theta0) for lam in torch.linspace(0, 1, 5, dtype=torch.float64)])
    g = sample_grad_theta_path(energy, thetas, n_chains=60 * 32, n_steps=50, n_burn=20, dt=0.1,
                               gen=torch.Generator().manual_seed(13))
    res = [thermodynamic_integration(thetas, rep) for rep in g.reshape(60, 32, *g.shape[1:])]
    frac, spread = coverage([r.delta_free_energy for r in res], [r.standard_error for r in res], exact)
    assert 0.88 <= frac <= 1.0 and 0.75 < spread < 1.25


def test_ais_coverage():
    """100 AIS runs of 100 chains, 10 intermediate distributions on the double-well path
    (ESS/N ~ 0.7); each run starts from its own block of exact draws."""
    energy, theta0, theta1 = ExpFamily.tilted_double_well(), _t(1.0, 0.3), _t(2.0, -0.4)
    exact = energy.free_energy(theta1) - energy.free_energy(theta0)
    x0 = energy.sample_equilibrium(theta0, 100 * 100, gen=torch.Generator().manual_seed(14), dtype=torch.float64)
    res = [ais(energy, theta0, theta1, n_chains=100, n_intermediate=10, dt=0.1, x0=x0[100 * s: 100 * (s + 1)],
               gen=torch.Generator().manual_seed(100 + s)) for s in range(100)]
    frac, spread = coverage([r.delta_free_energy for r in res], [r.standard_error for r in res], exact)
    assert 0.88 <= frac <= 1.0 and 0.75 < spread < 1.25


# -- bad input ------------------------------------------------------------------------------
_DW = ExpFamily.tilted_double_well()
_GEN = torch.Generator().manual_seed(0)
_W = np.linspace(0.0, 1.0, 10)
_AIS = dict(n_chains=8, n_intermediate=2, dt=0.1, gen=_GEN)
_TH = np.array([[1.0, 0.0], [1.0, 0.5], [1.0, 1.0]])


@pytest.mark.parametrize("call, name", [
    (lambda: jarzynski([]), "work"),
    (lambda: jarzynski([0.1, float("nan"), 0.3]), "work"),
    (lambda: jarzynski(np.ones((5, 2))), "work"),
    (lambda: jarzynski(_W, n_blocks=1), "n_blocks"),
    (lambda: jarzynski(_W, n_blocks=11), "n_blocks"),
    (lambda: bar([], _W), "work_forward"),
    (lambda: bar(_W, [0.0, float("inf")]), "work_reverse"),
    (lambda: thermodynamic_integration(_TH[:1], np.ones((1, 2))), "thetas"),
    (lambda: thermodynamic_integration("abc", np.ones((1, 2))), "thetas"),
    (lambda: thermodynamic_integration(_TH, [[1.0, float("nan")]] * 3), "mean_grad_theta"),
    (lambda: thermodynamic_integration(_TH, np.ones((4, 2))), "mean_grad_theta"),
    (lambda: thermodynamic_integration(_TH, np.ones((3, 2)), se=np.ones((3, 3))), "se"),
    (lambda: thermodynamic_integration(_TH, np.ones((3, 2)), se=-np.ones((3, 2))), "se"),
    (lambda: thermodynamic_integration(_TH, np.ones((2, 3, 2)), se=np.ones((3, 2))), "se"),
    (lambda: thermodynamic_integration_sampled(_DW, _TH, n_chains=8, n_steps=2, dt=0.1, gen=_GEN, n_blocks=1),
     "n_blocks"),
    (lambda: thermodynamic_integration_sampled(_DW, _TH, n_chains=1, n_steps=2, dt=0.1, gen=_GEN), "n_chains"),
    (lambda: thermodynamic_integration_sampled(_DW, _TH[:1], n_chains=4, n_steps=2, dt=0.1, gen=_GEN), "thetas"),
    (lambda: thermodynamic_integration_sampled(_DW, [[-1.0, 0.0], [1.0, 0.0]], n_chains=4, n_steps=2, dt=0.1,
                                               gen=_GEN), "thetas[0]"),
    (lambda: ais(_DW, [1.0, 0.0], [-1.0, 0.0], **_AIS), "theta_end"),
    (lambda: ais(_DW, [1.0], [1.0, 0.0], **_AIS), "theta_start"),
    (lambda: ais(_DW, [1.0, 0.0], [1.0, 0.5], **{**_AIS, "n_chains": 0}), "n_chains"),
    (lambda: ais(_DW, [1.0, 0.0], [1.0, 0.5], **{**_AIS, "n_intermediate": -1}), "n_intermediate"),
    (lambda: ais(_DW, [1.0, 0.0], [1.0, 0.5], **{**_AIS, "dt": -0.1}), "dt"),
    (lambda: ais(_DW, [1.0, 0.0], [1.0, 0.5], **{**_AIS, "gen": None}), "gen"),
    (lambda: ais(_DW, [1.0, 0.0], [1.0, 0.5], **_AIS, x0=torch.zeros(3, 1)), "x0"),
    (lambda: ais(_DW, [1.0, 0.0], [1.0, 0.5], **_AIS, sampler="nope"), "sampler"),
])
def test_bad_input_names_the_argument(call, name):
    with pytest.raises(InputError, match=name.replace("[", r"\[").replace("]", r"\]")):
        call()


@pytest.mark.slow
def test_thermodynamic_integration_coverage_double_well():
    """48 replicas of the recovery-test settings on the double well (9 points, 200 chains, 50
    burn-in moves per point). Checks the error bar and that burn-in removes the lag bias of
    chains carried between points (with 25 burn-in moves the mean z was ~0.4 here)."""
    energy, theta0, theta1 = ExpFamily.tilted_double_well(), _t(1.0, 0.3), _t(2.0, -0.4)
    exact = energy.free_energy(theta1) - energy.free_energy(theta0)
    lams = torch.linspace(0, 1, 9, dtype=torch.float64)
    thetas = torch.stack([theta0 + lam * (theta1 - theta0) for lam in lams])
    res = []
    for call in range(6):
        g = sample_grad_theta_path(energy, thetas, n_chains=8 * 200, n_steps=100, n_burn=50, dt=0.1,
                                   gen=torch.Generator().manual_seed(1000 + call))
        res += [thermodynamic_integration(thetas, rep) for rep in g.reshape(8, 200, *g.shape[1:])]
    est, err = np.array([r.delta_free_energy for r in res]), np.array([r.standard_error for r in res])
    frac, spread = coverage(est, err, exact)
    assert 0.85 <= frac <= 1.0 and 0.75 < spread < 1.3
    assert abs(np.mean((est - exact) / err)) < 3 / math.sqrt(len(res))
