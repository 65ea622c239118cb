"""The deterministic moments backend (N -> infinity, exact OU moves) against exact references.

References: ``md.moments.harmonic_discrete_path`` (an independent numpy recursion of the same
discretisation), ``md.moments.solve_harmonic_continuous`` (adaptive DOP853 integration of the
continuous dynamics) and the closed-form bound ``md.bounds.harmonic`` (theory.md sections 3, 5).

Tolerances: 1e-12 absolute where the two computations are the same arithmetic in float64
(backend vs recursion, Identities 1 and 2); O(dt) where a discretisation is compared with the
continuous limit (the constants are measured and stated at each assertion).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import mindiss as md

S = md.schedules
EXACT = 1e-12

# The theory.md 5.1 example: W* = 1.225.
S0, MU0, T0, TH0, XB0 = 0.5, 1.3, 2.0, -0.4, 1.7

_CACHE: dict = {}


def run(schedule, n, *, s, mu, theta0, target, key=None, chains=None):
    """md.train on the harmonic trap, moments backend; memoised when ``key`` is given."""
    th = np.atleast_1d(np.asarray(theta0, float))
    xb = np.broadcast_to(np.asarray(target, float), th.shape)
    if key is not None:
        full = (key, n, s, mu, tuple(th), tuple(xb), None if chains is None else tuple(np.ravel(chains[0])))
        if full in _CACHE:
            return _CACHE[full]
    r = md.train(md.HarmonicTrap(variance=s, dim=th.size), md.data.Gaussian(xb, 1.0),
                 schedule=schedule, theta0=th, n_steps=n, mobility=mu, backend="moments",
                 chains=chains)
    if key is not None:
        _CACHE[full] = r
    return r


def bound(s, mu, T, theta0, target):
    return md.bounds.harmonic(s, mu, T, theta0, target).excess_work


def check_identities(r):
    """Identity 1 (bias of L_approx = W_ex) and Identity 2 (W_ex = dKL + EP), theory.md 2."""
    assert r.identity1_residual < EXACT
    assert abs(r.loss_true_change - r.loss_approx_change - r.excess_work) < EXACT
    assert abs(r.excess_work - (r.work - r.delta_free_energy)) < EXACT
    assert r.entropy_production >= 0.0
    assert r.kl_final >= 0.0 and r.kl_initial >= 0.0
    assert abs(r.kl_final - r.kl_initial + r.entropy_production - r.excess_work) < EXACT
    assert r.first_law_residual < EXACT


# ----------------------------------------------------------------- backend vs independent recursion

@pytest.mark.parametrize("which", ["optimal", "constant", "optimal-2d"])
def test_backend_matches_discrete_recursion(which):
    n = 200
    theta0, target = (TH0, XB0) if which != "optimal-2d" else ([0.3, -1.0], [-0.5, 2.0])
    sched = S.constant(0.7, T0) if which == "constant" else S.optimal_harmonic(S0, MU0, T0)
    r = run(sched, n, s=S0, mu=MU0, theta0=theta0, target=target)
    path = md.moments.harmonic_discrete_path(sched.discretise(n), S0, MU0, theta0, target)
    assert path["theta"].shape[0] == n + 3 == r.thetas.shape[0]
    np.testing.assert_allclose(r.thetas, path["theta"], rtol=0, atol=EXACT)
    np.testing.assert_allclose(r.history.block("theta"), path["theta"], rtol=0, atol=EXACT)
    np.testing.assert_allclose(r.history.block("chain_mean"), path["chain_mean"], rtol=0, atol=EXACT)
    np.testing.assert_allclose(r.history["work"], path["work"], rtol=0, atol=EXACT)
    assert abs(r.work - path["work"][-1]) < EXACT
    assert abs(r.excess_work - path["work"][-1]) < EXACT   # Delta F = 0 on the trap
    assert r.delta_free_energy == 0.0
    np.testing.assert_allclose(r.theta_final, path["theta"][-1], rtol=0, atol=EXACT)


# ---------------------------------------------------------------------------- optimal schedule

def test_optimal_converges_first_order():
    """W_ex(n) - W* and theta_T - xbar are O(dt): log-log slope -1 within 0.05."""
    s, mu, T = S0, MU0, T0
    sched = S.optimal_harmonic(s, mu, T)
    w_star = bound(s, mu, T, TH0, XB0)
    ns = np.array([100, 200, 400, 800, 1600])
    werr, terr = [], []
    for n in ns:
        r = run(sched, int(n), s=s, mu=mu, theta0=TH0, target=XB0, key="optimal")
        werr.append(abs(r.excess_work - w_star))
        terr.append(abs(r.theta_final[0] - XB0))
    slope_w = np.polyfit(np.log(ns), np.log(werr), 1)[0]
    slope_t = np.polyfit(np.log(ns), np.log(terr), 1)[0]
    assert abs(slope_w + 1.0) < 0.05, (slope_w, werr)
    assert abs(slope_t + 1.0) < 0.05, (slope_t, terr)
    assert werr[-1] / w_star < 1e-3
    assert terr[-1] / abs(XB0 - TH0) < 1e-3


def test_optimal_n1000_relative_error():
    """theory.md 3: relative error about 4e-5 at n = 1000 for s = mu = T = 1.

    Measured: (W_ex - W*)/W* = -4.39e-5 (the discrete run stops 2.2e-5 short of xbar, so it does
    slightly less work than W*); asserted: 2e-5 < |rel| < 1e-4 (and so well within 1e-3).
    """
    r = run(S.optimal_harmonic(1.0, 1.0, 1.0), 1000, s=1.0, mu=1.0, theta0=0.0, target=1.0,
            key="optimal")
    w_star = 1.0 / 3.0
    rel = (r.excess_work - w_star) / w_star
    assert 2e-5 < abs(rel) < 1e-4, rel
    assert abs(r.theta_final[0] - 1.0) < 1e-4
    # the run obeys the bound for the endpoint it actually reached
    assert r.excess_work >= r.bound - EXACT


def test_target_independence():
    """One schedule object, many (theta0, xbar), each at its own bound with the same relative gap."""
    s = mu = T = 1.0
    n = 1000
    sched = S.optimal_harmonic(s, mu, T)
    pairs = [(0.0, 1.0), (2.5, -3.0), (-0.4, 1.7), ([0.3, -1.0], [-0.5, 2.0])]
    gaps = []
    for theta0, target in pairs:
        r = run(sched, n, s=s, mu=mu, theta0=theta0, target=target, key="optimal")
        w_star = bound(s, mu, T, theta0, target)
        gaps.append((r.excess_work - w_star) / w_star)
        miss = np.linalg.norm(np.asarray(r.theta_final) - target)
        assert miss / np.linalg.norm(np.subtract(target, theta0)) < 1e-4
        check_identities(r)
    gaps = np.array(gaps)
    assert np.all(np.abs(gaps - gaps[0]) < 1e-9), gaps
    assert np.all(np.abs(gaps) < 2e-3), gaps


# --------------------------------------------------------------- perturbations that still land

@pytest.mark.parametrize("scale", [0.8, 1.2])
def test_perturbed_landing_schedule_dissipates_more(scale):
    s, mu, T, n = S0, MU0, T0, 200
    k = 1.0 / s
    sched = S.optimal_harmonic(s, mu, T)
    optimal = run(sched, n, s=s, mu=mu, theta0=TH0, target=XB0, key="optimal")
    probe = run(sched.scaled(scale, impulse_end=0.0), n, s=s, mu=mu, theta0=TH0, target=XB0)
    theta_before = probe.history.block("theta")[-1][0]
    m_end = probe.history.block("chain_mean")[-1][0]
    c = (XB0 - theta_before) / (k * (XB0 - m_end))
    assert c > 0
    r = run(sched.scaled(scale, impulse_end=c), n, s=s, mu=mu, theta0=TH0, target=XB0)
    assert abs(r.theta_final[0] - XB0) < 1e-10
    assert r.bound == pytest.approx(bound(s, mu, T, TH0, XB0), rel=1e-9)
    # measured: +3.7 % (0.8) and +3.1 % (1.2) above the optimal schedule at n = 200
    assert r.excess_work > optimal.excess_work * (1.0 + 1e-3)
    assert r.excess_work > r.bound * (1.0 + 1e-3)
    check_identities(r)


# ------------------------------------------------------- bound and identities for every schedule

def _schedules(T):
    out = []
    for fam, make in S.BASELINES.items():
        for scale in (0.3, 3.0, 30.0):   # 30: lr k = 1.2 per step, overshoots and oscillates
            out.append(pytest.param(lambda fam=fam, scale=scale: S.BASELINES[fam](scale, T),
                                    id=f"{fam}-{scale:g}"))
    for w in (0.0, 0.2, 0.05):
        out.append(pytest.param(lambda w=w: S.optimal_harmonic_continuous(S0, MU0, T, smoothing=w),
                                id=f"continuous-w{w:g}"))
    out.append(pytest.param(lambda: S.optimal_harmonic(S0, MU0, T), id="optimal"))
    out.append(pytest.param(lambda: S.optimal_harmonic(S0, MU0, T).scaled(3.0, impulse_start=2.0),
                            id="optimal-overdriven"))
    return out


@pytest.mark.parametrize("make", _schedules(T0))
def test_every_schedule_obeys_bound_and_identities(make):
    n = 100
    r = run(make(), n, s=S0, mu=MU0, theta0=TH0, target=XB0)
    # result.bound is exactly the Schmiedl-Seifert bound theta0 -> theta_T actually reached
    assert r.bound == pytest.approx(bound(S0, MU0, T0, TH0, r.theta_final), rel=1e-12)
    assert r.excess_work >= r.bound - EXACT
    assert r.kl_initial == 0.0
    check_identities(r)


def test_gaussian_learnable_variance_identities():
    energy = md.Gaussian(1)
    theta0 = md.Gaussian.natural(0.0, 1.0)
    data = md.data.Gaussian(1.0, 2.0)
    r = md.train(energy, data, schedule=S.constant(0.3, 1.0), theta0=theta0, n_steps=200,
                 mobility=1.0, backend="moments")
    l1, l2 = r.theta_final                    # natural parameters (a / s, 1 / s)
    a_T, s_T = l1 / l2, 1.0 / l2
    assert s_T > 1.0 + 0.1                    # the variance was really learned
    # Delta F = F(theta_T) - F(theta_0) = -ln(s_T / s_0) / 2 for a 1-D Gaussian
    assert r.delta_free_energy == pytest.approx(-0.5 * math.log(s_T / 1.0), rel=1e-12)
    assert abs(r.delta_free_energy) > 0.05
    # exact loss change L = E_data[E] - F for N(a, s) against N(xbar, v_d)
    loss = lambda a, s: ((1.0 - a) ** 2 + 2.0) / (2.0 * s) + 0.5 * math.log(2 * math.pi * s)  # noqa: E731
    assert r.loss_true_change == pytest.approx(loss(a_T, s_T) - loss(0.0, 1.0), rel=1e-12)
    assert r.bound is None
    check_identities(r)
    assert r.excess_work > 0.0


# --------------------------------------------------------------------------- continuous variants

def test_continuous_unsmoothed_misses_target():
    s = mu = T = 1.0
    n = 400
    sched = S.optimal_harmonic_continuous(s, mu, T, smoothing=0.0)
    r = run(sched, n, s=s, mu=mu, theta0=0.0, target=1.0)
    assert abs(r.theta_final[0] - 1.0) > 1e-2        # measured 0.616
    assert r.excess_work >= r.bound - EXACT
    ref = md.moments.solve_harmonic_continuous(sched, s, mu, 0.0, 1.0)
    assert r.excess_work == pytest.approx(ref["work"], rel=1e-3)
    assert r.theta_final[0] == pytest.approx(ref["theta_final"][0], rel=1e-4)
    assert ref["work"] >= bound(s, mu, T, 0.0, ref["theta_final"]) - EXACT
    check_identities(r)


def test_smoothed_impulses_approach_bound():
    """w in (0.2, 0.1, 0.05, 0.025) on the grid of n = 400, T = 1 (w a multiple of dt = 2.5e-3).

    Measured gaps W_ex - W* = 0.029, 0.0145, 0.0073, 0.0036 and theta_T - xbar = 0.021, 0.0105,
    0.0053, 0.0027: O(w), halving with w. Discrete vs ODE of the same schedule: <= 5e-5 relative.
    """
    s = mu = T = 1.0
    n = 400
    w_star = bound(s, mu, T, 0.0, 1.0)
    gaps_w, gaps_t = [], []
    for w in (0.2, 0.1, 0.05, 0.025):
        sched = S.optimal_harmonic_continuous(s, mu, T, smoothing=w)
        r = run(sched, n, s=s, mu=mu, theta0=0.0, target=1.0)
        ref = md.moments.solve_harmonic_continuous(sched, s, mu, 0.0, 1.0)
        assert r.excess_work == pytest.approx(ref["work"], rel=5e-4)            # O(dt)
        assert abs(r.theta_final[0] - ref["theta_final"][0]) < 1e-4
        assert r.excess_work >= r.bound - EXACT
        gaps_w.append(r.excess_work - w_star)
        gaps_t.append(abs(r.theta_final[0] - 1.0))
        check_identities(r)
    gaps_w, gaps_t = np.array(gaps_w), np.array(gaps_t)
    assert np.all(gaps_w > 0) and np.all(np.diff(gaps_w) < 0), gaps_w
    assert np.all(np.diff(gaps_t) < 0), gaps_t
    np.testing.assert_allclose(gaps_w[:-1] / gaps_w[1:], 2.0, rtol=0.1)
    np.testing.assert_allclose(gaps_t[:-1] / gaps_t[1:], 2.0, rtol=0.1)
    assert gaps_w[-1] / w_star < 0.02


# ------------------------------------------------------------------------------ prepared chains

def test_prepared_protocol_lands_with_slow_limit_work():
    """Prepared chains (m_0 lagging by tau Delta / T, variance s) + continuous optimum:
    theta_T = xbar and W_ex = Delta^2 / (mu T), both up to O(dt)."""
    s, mu, T, theta0, target = 1.0, 1.0, 1.0, TH0, XB0
    sched = S.optimal_harmonic_prepared(s, mu, T)
    m0 = S.prepared_chain_mean(theta0, target, s, mu, T)
    assert float(m0) == pytest.approx(theta0 - (s / mu) * (target - theta0) / T, rel=1e-14)
    slow = (target - theta0) ** 2 / (mu * T)
    ref = md.moments.solve_harmonic_continuous(sched, s, mu, theta0, target, chain_mean0=m0)
    assert ref["work"] == pytest.approx(slow, rel=1e-9)
    assert ref["theta_final"][0] == pytest.approx(target, rel=1e-9)
    gaps_w, gaps_t = [], []
    for n in (100, 200, 400):
        r = run(sched, n, s=s, mu=mu, theta0=theta0, target=target, chains=(m0, s))
        assert r.bound is None                       # not an equilibrium start
        assert r.kl_initial == pytest.approx((m0 - theta0) ** 2 / (2 * s), rel=1e-12)
        check_identities(r)
        gaps_w.append(abs(r.excess_work - slow) / slow)
        gaps_t.append(abs(r.theta_final[0] - target) / abs(target - theta0))
    np.testing.assert_allclose(np.array(gaps_w[:-1]) / gaps_w[1:], 2.0, rtol=0.15)
    np.testing.assert_allclose(np.array(gaps_t[:-1]) / gaps_t[1:], 2.0, rtol=0.15)
    assert gaps_w[-1] < 5e-3 and gaps_t[-1] < 1e-3, (gaps_w, gaps_t)
    # More dissipation than the equilibrium-start bound, which needs impulses.
    assert slow > bound(s, mu, T, theta0, target)

    # Prepared for the wrong target: misses the true one (ODE and discrete agree on the miss).
    m_wrong = S.prepared_chain_mean(theta0, target + 1.0, s, mu, T)
    wrong = run(sched, 400, s=s, mu=mu, theta0=theta0, target=target, chains=(m_wrong, s))
    ref_wrong = md.moments.solve_harmonic_continuous(sched, s, mu, theta0, target, chain_mean0=m_wrong)
    miss = abs(wrong.theta_final[0] - target)
    assert miss > 0.1 * abs(target - theta0), miss         # measured 0.37 for s = mu = T = 1
    assert miss > 100 * gaps_t[-1] * abs(target - theta0)
    assert wrong.theta_final[0] == pytest.approx(ref_wrong["theta_final"][0], rel=1e-3)


# ------------------------------------------------------------------- baselines at equal error

@pytest.mark.parametrize("family", list(S.BASELINES))
def test_tune_scale_and_optimal_beats_baselines(family):
    """Baselines tuned to final error 0.05 (s = mu = 1, T = 5, n = 100).

    The optimal schedule run towards the baseline's endpoint reaches W*(endpoint) to O(dt)
    (measured -3.1e-3 relative at n = 100, dt = tau / 20); every baseline lies well above it
    (measured W_ex / W*(endpoint) = 1.29 - 1.91).
    """
    s, mu, T, n, err = 1.0, 1.0, 5.0, 100, 0.05
    theta0, target = 0.3, -1.2
    sched = S.tune_scale(family, err, variance=s, mobility=mu, duration=T, n_steps=n)
    r = run(sched, n, s=s, mu=mu, theta0=theta0, target=target)
    final_error = abs(r.theta_final[0] - target) / abs(theta0 - target)
    assert final_error == pytest.approx(err, abs=1e-8)
    check_identities(r)
    end = r.theta_final[0]
    w_end = bound(s, mu, T, theta0, end)
    assert r.bound == pytest.approx(w_end, rel=1e-12)
    assert r.excess_work > 1.2 * w_end
    opt = run(S.optimal_harmonic(s, mu, T), n, s=s, mu=mu, theta0=theta0, target=end)
    assert opt.excess_work == pytest.approx(w_end, rel=5e-3)
    assert abs(opt.theta_final[0] - end) < 5e-3 * abs(end - theta0)
    assert opt.excess_work < r.excess_work / 1.2
