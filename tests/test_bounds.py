"""Closed-form minimal dissipation on the harmonic trap (theory.md sections 2, 3, 5.1).

The closed forms of ``md.bounds.harmonic`` are checked against an independent exact reference:
adaptive DOP853 integration of the continuous learning dynamics under the optimal schedule
(``md.moments.solve_harmonic_continuous``, rtol 1e-12). Tolerances: 1e-8 relative (the ODE is
integrated to ~1e-12), with an absolute floor of 1e-10 |Delta| for quantities that can be ~0.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import mindiss as md

REL = 1e-8


def _random_cases(n=30, seed=20251003):
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(n):
        s, mu, T = np.exp(rng.uniform(math.log(0.1), math.log(10.0), size=3))
        d = int(rng.integers(1, 4))
        theta0 = rng.uniform(-3.0, 3.0, size=d)
        target = rng.uniform(-3.0, 3.0, size=d)
        cases.append(pytest.param(float(s), float(mu), float(T), theta0, target, id=f"case{i}-d{d}"))
    return cases


CASES = _random_cases()


def test_paper_example():
    """theory.md 5.1: s=0.5, mu=1.3, T=2, theta_0=-0.4, xbar=1.7 gives W* = 1.225."""
    b = md.bounds.harmonic(variance=0.5, mobility=1.3, duration=2, theta0=-0.4, target=1.7)
    assert abs(b.excess_work - 1.225) < 1e-12
    # the same figure from the scalar helper and from ``distance``
    assert abs(md.bounds.harmonic_excess_work(0.5, 1.3, 2.0, 2.1) - 1.225) < 1e-12
    assert abs(md.bounds.harmonic(0.5, 1.3, 2.0, distance=2.1).excess_work - 1.225) < 1e-12


@pytest.mark.parametrize("s, mu, T, theta0, target", CASES)
def test_closed_forms_match_ode(s, mu, T, theta0, target):
    b = md.bounds.harmonic(s, mu, T, theta0, target)
    k, tau = 1.0 / s, s / mu
    delta = target - theta0
    dist = float(np.linalg.norm(delta))
    atol = 1e-10 * max(dist, 1.0)

    # Closed forms, written out independently of the library.
    w_star = k * dist**2 / (2.0 + T / tau)
    assert b.excess_work == pytest.approx(w_star, rel=1e-13)
    assert b.relaxation_time == pytest.approx(tau, rel=1e-14)
    assert b.impulse_start == pytest.approx(s * tau / (T + 2 * tau), rel=1e-13)
    assert b.impulse_end == pytest.approx(s / 2, rel=1e-14)

    sched = md.schedules.optimal_harmonic(s, mu, T)
    assert sched.impulse_start == pytest.approx(b.impulse_start, rel=1e-14)
    assert sched.impulse_end == pytest.approx(b.impulse_end, rel=1e-14)

    ref = md.moments.solve_harmonic_continuous(sched, s, mu, theta0, target)
    # excess work, landing, final chain mean, final lag (KL), entropy production
    assert ref["work"] == pytest.approx(b.excess_work, rel=REL)
    np.testing.assert_allclose(ref["theta_final"], target, rtol=REL, atol=atol)
    np.testing.assert_allclose(ref["chain_mean_final"], b.chain_mean_end, rtol=REL, atol=atol)
    assert ref["kl_initial"] == 0.0
    assert ref["kl_final"] == pytest.approx(b.kl_end, rel=REL, abs=1e-20 + 1e-16 * w_star)
    assert ref["entropy_production"] == pytest.approx(b.entropy_production, rel=REL)
    # Identity 2 in the closed forms: W* = KL_T + EP
    assert b.kl_end + b.entropy_production == pytest.approx(b.excess_work, rel=1e-12)

    # First jump: theta_0 + c_0 k (xbar - theta_0) (chains still at theta_0).
    np.testing.assert_allclose(theta0 + b.impulse_start * k * delta, b.theta_after_start,
                               rtol=1e-12, atol=1e-14)
    # theta just before the last impulse: the ODE run without the final jump.
    ref_open = md.moments.solve_harmonic_continuous(sched.scaled(1.0, impulse_end=0.0), s, mu,
                                                    theta0, target)
    np.testing.assert_allclose(ref_open["theta_final"], b.theta_before_end, rtol=REL, atol=atol)
    # Constant lag on (0, T): theta - m = Delta / (2 + T/tau), both just after the start and just
    # before the end.
    np.testing.assert_allclose(np.asarray(b.theta_after_start) - theta0, b.lag, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ref_open["theta_final"] - ref_open["chain_mean_final"], b.lag,
                               rtol=REL, atol=atol)
    # The last impulse closes the gap: theta_T- + (s/2) k (xbar - m_T) = xbar.
    np.testing.assert_allclose(np.asarray(b.theta_before_end)
                               + b.impulse_end * k * (target - np.asarray(b.chain_mean_end)),
                               target, rtol=1e-12, atol=1e-12 * max(dist, 1.0))


@pytest.mark.parametrize("s, mu, T, theta0, target", CASES[:10])
def test_limits(s, mu, T, theta0, target):
    delta = target - theta0
    d2 = float(delta @ delta)
    fast = md.bounds.harmonic(s, mu, 1e-8, theta0, target)
    slow = md.bounds.harmonic(s, mu, 1e8, theta0, target)
    assert fast.quench_limit == pytest.approx(d2 / (2.0 * s), rel=1e-13)
    assert slow.slow_limit == pytest.approx(d2 / (mu * 1e8), rel=1e-13)
    assert fast.excess_work == pytest.approx(fast.quench_limit, rel=1e-6)
    assert slow.excess_work == pytest.approx(slow.slow_limit, rel=1e-6)
    # and the limits bracket every finite duration: slow_limit(T) > W*(T) ... W* < quench
    b = md.bounds.harmonic(s, mu, T, theta0, target)
    assert b.excess_work < b.quench_limit
    assert b.excess_work < b.slow_limit


def test_vectorised_helper_matches():
    T = np.array([0.1, 1.0, 10.0])
    dist = np.array([0.5, 2.0, 3.0])
    got = md.bounds.harmonic_excess_work(0.7, 1.9, T, dist)
    want = [md.bounds.harmonic(0.7, 1.9, t, distance=x).excess_work for t, x in zip(T, dist)]
    np.testing.assert_allclose(got, want, rtol=1e-14)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(variance=0.0, mobility=1.0, duration=1.0, theta0=0.0, target=1.0),
        dict(variance=-1.0, mobility=1.0, duration=1.0, theta0=0.0, target=1.0),
        dict(variance=1.0, mobility=0.0, duration=1.0, theta0=0.0, target=1.0),
        dict(variance=1.0, mobility=-2.0, duration=1.0, theta0=0.0, target=1.0),
        dict(variance=1.0, mobility=1.0, duration=0.0, theta0=0.0, target=1.0),
        dict(variance=1.0, mobility=1.0, duration=-1.0, theta0=0.0, target=1.0),
        dict(variance=math.nan, mobility=1.0, duration=1.0, theta0=0.0, target=1.0),
        dict(variance=1.0, mobility=math.nan, duration=1.0, theta0=0.0, target=1.0),
        dict(variance=1.0, mobility=1.0, duration=math.nan, theta0=0.0, target=1.0),
        dict(variance=math.inf, mobility=1.0, duration=1.0, theta0=0.0, target=1.0),
        dict(variance=1.0, mobility=1.0, duration=1.0, theta0=math.nan, target=1.0),
        dict(variance=1.0, mobility=1.0, duration=1.0, theta0=0.0, target=[1.0, math.nan]),
        dict(variance=1.0, mobility=1.0, duration=1.0, theta0=[0.0, 1.0], target=[1.0, 2.0, 3.0]),
        dict(variance=1.0, mobility=1.0, duration=1.0, theta0=[0.0, 1.0], target=1.0),
        dict(variance=1.0, mobility=1.0, duration=1.0, theta0=0.0, target=None),
        dict(variance=1.0, mobility=1.0, duration=1.0, theta0=0.0, target=1.0, distance=1.0),
    ],
    ids=["s=0", "s<0", "mu=0", "mu<0", "T=0", "T<0", "s=nan", "mu=nan", "T=nan", "s=inf",
         "theta0=nan", "target-nan", "lengths-3v2", "lengths-2v1", "no-target", "distance+both"],
)
def test_bad_input_raises(kwargs):
    with pytest.raises(md.InputError):
        md.bounds.harmonic(**kwargs)
