"""The exactly optimal discrete schedule on the harmonic trap (theory.md section 3, last bullet).

``md.optimal.discrete_harmonic`` is a closed form (derived through Identity 2: equal lags). It is
checked against an independent reference that builds the mean work of the n + 2 frozen-chain
updates, W = sum_j k [(m_j - theta_{j+1})^2 - (m_j - theta_j)^2] / 2 with exact OU moves of the
chain mean, as a quadratic in the path theta_1..theta_{n+1} and solves its normal equations
(least squares: the start impulse and the first interior update see the same frozen chains, so
the quadratic is singular along theta_1 and only their sum is fixed). Then through ``md.train``.
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

import mindiss as md
from mindiss.rates import optimal

CASES = [(1.0, 1.0, 1.0), (0.5, 1.3, 2.0), (2.7, 0.4, 0.3), (0.2, 3.0, 5.0)]


def reference_optimum(n, s, mu, T, theta0, xbar):
    """Minimise the frozen-chain work over theta_1..theta_{n+1} (theta_{n+2} = xbar) by a linear solve.

    Coordinates of the path (for conditioning: the work is ill-conditioned in theta itself when
    mu dt / s is small): x = (theta_1, e_1..e_n), e_j = m_j - theta_{j+1} the lag set by interior
    update j, so theta_{j+1} = m_j - e_j. The work is the frozen-chain sum above, a quadratic in x
    built from its affine parts; no structure of the optimum is assumed. The form is singular along
    theta_1 (the start impulse and the first interior update see the same frozen chains).
    Returns (work, increments theta_{j+1} - theta_j of all n + 2 updates, chain means m_0..m_{n+1}
    seen by each update, rank of the quadratic form).
    """
    k, a, p = 1.0 / s, math.exp(-mu * (T / n) / s), n + 1
    unit = np.eye(p)
    m = (np.zeros(p), theta0)                       # affine in x: (coefficients, constant)
    thetas, means = [(np.zeros(p), theta0), (unit[0], 0.0)], []
    for j in range(n + 2):
        means.append(m)
        if j == n + 1:
            thetas.append((np.zeros(p), xbar))
        elif j >= 1:                                # interior update j, then the exact OU mean move
            thetas.append((m[0] - unit[j], m[1]))
            new = thetas[-1]
            m = (new[0] + (m[0] - new[0]) * a, new[1] + (m[1] - new[1]) * a)
    rows = [((m[0] - new[0], m[1] - new[1]), (m[0] - old[0], m[1] - old[1]))
            for m, new, old in zip(means, thetas[1:], thetas[:-1])]
    R, r0 = np.array([r[0][0] for r in rows]), np.array([r[0][1] for r in rows])
    Q, q0 = np.array([r[1][0] for r in rows]), np.array([r[1][1] for r in rows])
    H = k * (R.T @ R - Q.T @ Q)
    g = k * (R.T @ r0 - Q.T @ q0)
    x, _, rank, _ = np.linalg.lstsq(H, -g, rcond=1e-12)
    work = 0.5 * k * (np.sum((R @ x + r0) ** 2) - np.sum((Q @ x + q0) ** 2))
    steps = np.array([(c1 - c0) @ x + (d1 - d0) for (c0, d0), (c1, d1) in zip(thetas[:-1], thetas[1:])])
    chain = np.array([c @ x + c0 for c, c0 in means])
    return work, steps, chain, rank


def run(schedule, s, mu, theta0, xbar, dim=1):
    return md.train(md.HarmonicTrap(variance=s, dim=dim), md.data.Gaussian(mean=xbar, variance=s),
                    schedule=schedule, theta0=theta0, mobility=mu, backend="moments", n_steps=len(schedule.lr) - 2)


def landed_continuous(n, s, mu, T):
    """``optimal_harmonic(...).discretise(n)`` with the final impulse re-solved so that theta_T = xbar exactly."""
    disc = md.schedules.optimal_harmonic(s, mu, T).discretise(n)
    path = md.moments.harmonic_discrete_path(disc, s, mu, 0.0, 1.0)
    theta, m = path["theta"][-2, 0], path["chain_mean"][-2, 0]
    lr = disc.lr.copy()
    lr[-1] = (theta - 1.0) / ((m - 1.0) / s)   # theta - lr k (m - xbar) = xbar
    return replace(disc, lr=lr)


@pytest.mark.parametrize("s,mu,T", CASES)
@pytest.mark.parametrize("n", [1, 2, 3, 7, 40])
def test_closed_form_matches_linear_solve_and_is_target_independent(n, s, mu, T):
    disc = optimal.discrete_harmonic(n, variance=s, mobility=mu, duration=T)
    k = 1.0 / s
    rng = np.random.default_rng(n)
    lrs = []
    for theta0, xbar in rng.uniform(-5, 5, size=(4, 2)):
        work, steps, chain, rank = reference_optimum(n, s, mu, T, theta0, xbar)
        assert rank == n  # singular along theta_1 only
        w = optimal.discrete_harmonic_excess_work(n, variance=s, mobility=mu, duration=T, distance=xbar - theta0)
        assert work == pytest.approx(w, rel=1e-10)
        lr = steps / (k * (xbar - chain))
        lrs.append(np.concatenate([[lr[0] + lr[1]], lr[2:]]))
    lrs = np.array(lrs)
    np.testing.assert_allclose(lrs, np.broadcast_to(lrs[0], lrs.shape), rtol=1e-10, atol=0)  # target-free
    ours = np.concatenate([[disc.lr[0] + disc.lr[1]], disc.lr[2:]])
    np.testing.assert_allclose(lrs[0], ours, rtol=1e-10, atol=0)


def test_layout_matches_discretised_continuous():
    disc = optimal.discrete_harmonic(5, variance=0.5, mobility=1.3, duration=2.0)
    ref = md.schedules.optimal_harmonic(0.5, 1.3, 2.0).discretise(5)
    assert disc.n_updates == 7 and disc.duration == ref.duration
    for name in ("dt", "t", "is_impulse"):
        np.testing.assert_array_equal(getattr(disc, name), getattr(ref, name))
    assert np.all(disc.lr > 0)
    # per update the rates approach the continuous optimum's as n grows
    big = optimal.discrete_harmonic(1000, variance=0.5, mobility=1.3, duration=2.0)
    cont = md.schedules.optimal_harmonic(0.5, 1.3, 2.0).discretise(1000)
    assert np.max(np.abs(big.lr / cont.lr - 1)) < 1.3 * 0.002 / 0.5  # O(mu dt / s)


@pytest.mark.parametrize("n", [1, 2, 5, 10, 100, 1000])
def test_train_lands_and_measures_closed_form(n):
    s, mu, T, theta0, xbar = 0.5, 1.3, 2.0, -0.4, 1.7
    disc = optimal.discrete_harmonic(n, variance=s, mobility=mu, duration=T)
    res = run(disc, s, mu, [theta0], [xbar])
    assert abs(res.theta_final[0] - xbar) <= 1e-12 * abs(xbar - theta0)
    w = optimal.discrete_harmonic_excess_work(n, variance=s, mobility=mu, duration=T, distance=xbar - theta0)
    assert res.excess_work == pytest.approx(w, rel=1e-10)
    assert res.excess_work >= res.bound  # the continuous W* is a lower bound of every discrete schedule


def test_train_several_dimensions():
    s, mu, T = 2.7, 0.4, 0.3
    theta0, xbar = np.array([1.0, -2.0, 0.5]), np.array([-1.5, 0.3, 4.0])
    disc = optimal.discrete_harmonic(7, variance=s, mobility=mu, duration=T, dim=3)
    res = run(disc, s, mu, theta0, xbar, dim=3)
    np.testing.assert_allclose(res.theta_final, xbar, rtol=0, atol=1e-12)
    w = optimal.discrete_harmonic_excess_work(7, variance=s, mobility=mu, duration=T, distance=xbar - theta0)
    assert res.excess_work == pytest.approx(w, rel=1e-10)


@pytest.mark.parametrize("s,mu,T", CASES[:2])
def test_beats_discretised_continuous_optimum_at_equal_landing(s, mu, T):
    ratios, gaps = {}, {}
    wstar = md.bounds.harmonic_excess_work(s, mu, T, 1.0)
    for n in (1, 2, 5, 10, 100, 1000):
        scheds = optimal.discrete_harmonic(n, variance=s, mobility=mu, duration=T), landed_continuous(n, s, mu, T)
        if n <= 100:   # through the training loop
            runs = [run(d, s, mu, [0.0], [1.0]) for d in scheds]
            (w_opt, th_opt), (w_cont, th_cont) = [(r.excess_work, r.theta_final[0]) for r in runs]
        else:          # the moments recursion of moments.py (same numbers, 10x faster)
            paths = [md.moments.harmonic_discrete_path(d, s, mu, 0.0, 1.0) for d in scheds]
            (w_opt, th_opt), (w_cont, th_cont) = [(p["work"][-1], p["theta"][-1, 0]) for p in paths]
        assert abs(th_cont - 1.0) < 1e-12 and abs(th_opt - 1.0) < 1e-12
        assert w_opt <= w_cont * (1 + 1e-12)
        ratios[n] = w_cont / w_opt
        gaps[n] = w_opt / wstar - 1.0
    assert all(ratios[a] > ratios[b] for a, b in zip((1, 2, 5, 10, 100), (2, 5, 10, 100, 1000)))
    assert ratios[1000] - 1 < 1e-5
    # W*(n) -> W* from above, gap = x^3 / (12 n^2 (2 + x)) + O(n^-4), x = T / tau
    x = mu * T / s
    assert all(g > 0 for g in gaps.values())
    assert gaps[1000] == pytest.approx(x**3 / (12e6 * (2 + x)), rel=1e-3)


@pytest.mark.parametrize("n", [1, 3, 10])
def test_random_perturbations_never_do_better(n):
    """Perturb the start impulse and interior rates, re-solve the final impulse to land: never below the optimum."""
    s, mu, T, xbar = 0.5, 1.3, 2.0, 1.0
    disc = optimal.discrete_harmonic(n, variance=s, mobility=mu, duration=T)
    best = optimal.discrete_harmonic_excess_work(n, variance=s, mobility=mu, duration=T, distance=xbar)
    rng = np.random.default_rng(7 + n)
    for trial in range(150):
        size = 10.0 ** rng.uniform(-6, -0.5)
        lr = disc.lr.copy()
        lr[:-1] *= 1.0 + size * rng.standard_normal(n + 1)
        path = md.moments.harmonic_discrete_path(replace(disc, lr=lr), s, mu, 0.0, xbar)
        theta, m = path["theta"][-2, 0], path["chain_mean"][-2, 0]
        lr[-1] = (theta - xbar) / ((m - xbar) / s)
        path = md.moments.harmonic_discrete_path(replace(disc, lr=lr), s, mu, 0.0, xbar)
        assert abs(path["theta"][-1, 0] - xbar) < 1e-9
        assert path["work"][-1] >= best * (1 - 1e-12), (trial, size)


@pytest.mark.parametrize("kwargs,word", [
    ({"n": 0}, "^n must"), ({"n": -3}, "^n must"), ({"n": 2.5}, "^n must"), ({"variance": 0.0}, "variance"),
    ({"variance": -1.0}, "variance"), ({"duration": 0.0}, "duration"), ({"duration": -2.0}, "duration"),
    ({"mobility": float("nan")}, "mobility"), ({"dim": 0}, "dim"),
])
def test_bad_input(kwargs, word):
    args = {"n": 5, "variance": 1.0, "mobility": 1.0, "duration": 1.0, "dim": 1, **kwargs}
    with pytest.raises(md.InputError, match=word):
        optimal.discrete_harmonic(args.pop("n"), **args)
    args = {"n": 5, "variance": 1.0, "mobility": 1.0, "duration": 1.0, "distance": 1.0, **kwargs}
    args.pop("dim", None)
    if "dim" not in kwargs:
        with pytest.raises(md.InputError, match=word):
            optimal.discrete_harmonic_excess_work(args.pop("n"), **args)


def test_bad_distance():
    with pytest.raises(md.InputError, match="distance"):
        optimal.discrete_harmonic_excess_work(3, variance=1.0, mobility=1.0, duration=1.0, distance=float("inf"))
