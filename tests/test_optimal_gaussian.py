"""The learnable-variance optimum realised as a schedule (``optimal.gaussian_schedule``), theory.md section 6.

The schedule's learning-rate matrix is built at every update from the chain statistics and the data
moments. Run through ``md.train`` (moments backend) it must land on the data moments and reach
``bounds.gaussian`` with an error that vanishes as 1/n^2 (measured order 2.00). Natural gradient,
alpha(t) I^-1, is compared and may leave the variance's domain: that is a reported DivergenceError.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import mindiss as md
from mindiss.rates import optimal

#: (a0, s0, xbar, v_d, mu, T)
CASES = [(-0.4, 0.5, 1.7, 1.2, 1.3, 2.0), (0.3, 2.0, -1.0, 0.4, 0.8, 0.5), (1.0, 1.0, 1.0, 3.0, 1.0, 1.0),
         (0.0, 0.7, 2.5, 0.7, 2.0, 0.3)]


def run(case, n, schedule=None, **kwargs):
    a0, s0, xbar, vd, mu, T = case
    sched = schedule if schedule is not None else optimal.gaussian_schedule(a0, s0, xbar, vd, mu, T)
    kwargs.setdefault("backend", "moments")
    return md.train(md.Gaussian(1), md.data.Gaussian(mean=xbar, variance=vd), schedule=sched,
                    theta0=md.Gaussian.natural(a0, s0), mobility=mu, n_steps=n, **kwargs)


def moments(theta):
    t = torch.as_tensor(theta, dtype=torch.float64)
    a, s = md.Gaussian(t.numel() // 2).moments(t)
    return a.numpy(), s.numpy()


@pytest.mark.parametrize("case", CASES)
def test_lands_and_reaches_the_bound_at_order_two(case):
    bound = md.bounds.gaussian(*case).excess_work
    errors = {}
    for n in (10, 20, 40):
        res = run(case, n)
        a, s = moments(res.theta_final)
        assert abs(a[0] - case[2]) <= 1e-12 * (1 + abs(case[2])) and abs(s[0] - case[3]) <= 1e-12 * case[3]
        assert res.excess_work >= bound * (1 - 1e-12)               # never below the bound
        assert res.identity1_residual < 1e-12
        errors[n] = res.excess_work / bound - 1.0
    orders = [math.log2(errors[10] / errors[20]), math.log2(errors[20] / errors[40])]
    assert orders == pytest.approx([2.0, 2.0], abs=0.05)
    assert errors[40] < 0.7 / 40**2                                   # measured constants 0.014 .. 0.65


def test_relative_error_at_n100():
    case = CASES[0]
    res = run(case, 100)
    assert res.excess_work / md.bounds.gaussian(*case).excess_work - 1 == pytest.approx(6.4514e-5, rel=1e-3)


def test_chains_sit_on_the_optimal_path():
    """Identity 2 split: the run's final KL and entropy production tend to the bound's, the chain mean to m_T."""
    case = CASES[1]
    b = md.bounds.gaussian(*case)
    res = run(case, 200)
    assert res.history["chain_mean_0"][-1] == pytest.approx(b.chain_mean_end[0], rel=1e-12)
    assert res.kl_final == pytest.approx(b.kl_end, rel=1e-12)     # chain moments hit the path at t = T exactly
    assert res.entropy_production == pytest.approx(b.entropy_production, rel=1e-4)


def test_several_dimensions_add_up():
    a0, s0, xbar, vd = [-0.4, 0.3], [0.5, 2.0], [1.7, -1.0], [1.2, 0.4]
    mu, T, n = 1.1, 0.7, 30
    sched = optimal.gaussian_schedule(a0, s0, xbar, vd, mu, T)
    res = md.train(md.Gaussian(2), md.data.Gaussian(mean=xbar, variance=vd), schedule=sched,
                   theta0=md.Gaussian.natural(a0, s0), mobility=mu, n_steps=n, backend="moments")
    a, s = moments(res.theta_final)
    np.testing.assert_allclose(a, xbar, rtol=0, atol=1e-12)
    np.testing.assert_allclose(s, vd, rtol=1e-12)
    parts = [run((a0[j], s0[j], xbar[j], vd[j], mu, T), n).excess_work for j in range(2)]
    assert res.excess_work == pytest.approx(sum(parts), rel=1e-12)


def test_mean_only_rates_are_the_harmonic_ones():
    """s0 = v_d: the variance rate is zero and the centre rate tends to theory.md's alpha(t) with tau = s/mu
    (start impulse tau/(T + 2 tau), interior 1/(T - t + 2 tau), end impulse 1/2), error O(dt)."""
    s, mu, T, n = 0.5, 1.3, 2.0, 400
    res = run((-0.4, s, 1.7, s, mu, T), n)
    rep = res.preconditioner
    rc, rv = np.asarray(rep["rate_centre"])[:, 0], np.asarray(rep["rate_variance"])[:, 0]
    assert np.all(rv == 0.0) and rep["positive_semidefinite"]
    tau, dt = s / mu, T / n
    mid = (np.arange(n) + 0.5) * dt
    assert rc[0] + rc[1] * dt == pytest.approx(tau / (T + 2 * tau), rel=2 * dt)   # the two frozen-chain updates
    np.testing.assert_allclose(rc[2:-1], 1.0 / (T - mid[1:] + 2 * tau), rtol=2 * dt)
    assert rc[-1] == pytest.approx(0.5, rel=2 * dt)
    assert res.excess_work == pytest.approx(md.bounds.harmonic(s, mu, T, -0.4, 1.7).excess_work, rel=1e-4)


def test_equal_mode_rates_are_natural_gradient():
    """P = J diag(alpha s, alpha 2 s^2) J^T is alpha I^-1 in natural parameters (checked against energy.fisher)."""
    energy = md.Gaussian(1)
    theta = md.Gaussian.natural(0.7, 1.9)
    a, s = 0.7, 1.9
    J = np.array([[1 / s, -a / s**2], [0, -1 / s**2]])
    inv = J @ np.diag([s, 2 * s**2]) @ J.T
    np.testing.assert_allclose(inv @ energy.fisher(theta).numpy(), np.eye(2), atol=1e-12)


def test_negative_mode_rates_are_reported():
    """Problem 2 (v_d < s0, xbar < a0): the optimum moves the variance mode against its PCD gradient once."""
    res = run(CASES[1], 20)
    assert res.preconditioner["negative_rates"] >= 1 and not res.preconditioner["positive_semidefinite"]
    assert run(CASES[0], 20).preconditioner["positive_semidefinite"]


def test_particles_follow_the_optimal_path():
    """The rule reads the chain moments off the gradient statistics, so it runs on simulated chains too."""
    case = CASES[0]
    res = run(case, 20, n_chains=40_000, n_replicas=4, backend="particles", seed=3)
    ref = run(case, 20)
    assert abs(res.excess_work - ref.excess_work) < 4 * res.excess_work_se + 1e-3
    a, s = moments(res.theta_final)
    assert a[0] == pytest.approx(case[2], abs=1e-12) and s[0] == pytest.approx(case[3], rel=1e-12)


@pytest.mark.parametrize("case", CASES)
def test_natural_gradient_never_beats_the_front(case):
    """NG (exact Fisher, tau auto) either leaves the domain (a DivergenceError naming the variance) or ends at a
    final loss where it dissipates at least the front's W_ex*(L_T); the optimum reaches its bound."""
    problem = optimal.GaussianProblem(*case)
    ng = md.schedules.natural_gradient(case[5], tau="auto", fisher="exact")
    try:
        res = run(case, 50, schedule=ng)
    except md.DivergenceError as exc:
        assert "precision" in str(exc) and exc.update >= 1
        return
    front = optimal.pareto_front(problem, [res.final_loss])
    assert optimal.dissipation_ratio(res, front) >= 1.0 - 1e-9
    assert res.final_loss > problem.loss(case[2], case[3]) + 1e-3      # it does not land


def test_natural_gradient_ratios():
    """The figures the experiment reports (problem 2: 0.2387 of W* but 1.19 x the front; problem 3: 1.78 x W*)."""
    for case, w_ratio, front_ratio in ((CASES[1], 0.2387, 1.1876), (CASES[2], 1.7781, 2.8230)):
        res = run(case, 50, schedule=md.schedules.natural_gradient(case[5], tau="auto", fisher="exact"))
        assert res.excess_work / md.bounds.gaussian(*case).excess_work == pytest.approx(w_ratio, rel=1e-3)
        front = optimal.pareto_front(optimal.GaussianProblem(*case), [res.final_loss])
        assert optimal.dissipation_ratio(res, front) == pytest.approx(front_ratio, rel=1e-3)


@pytest.mark.parametrize("kwargs,word", [
    ({"variance0": 0.0}, "variance0"), ({"variance0": -1.0}, "variance0"), ({"data_variance": 0.0}, "data_variance"),
    ({"duration": 0.0}, "duration"), ({"mobility": -1.0}, "mobility"), ({"mean0": math.nan}, "mean0"),
])
def test_bad_problems(kwargs, word):
    args = {"mean0": 0.0, "variance0": 1.0, "data_mean": 1.0, "data_variance": 0.5, "mobility": 1.0, "duration": 1.0,
            **kwargs}
    with pytest.raises(md.InputError, match=word):
        optimal.gaussian_schedule(**args)


def test_wrong_run_is_refused():
    case = CASES[0]
    sched = optimal.gaussian_schedule(*case)
    with pytest.raises(md.InputError, match="mobility"):
        run(case[:4] + (2.0 * case[4],) + case[5:], 10, schedule=sched)
    with pytest.raises(md.InputError, match="Gaussian"):
        md.train(md.HarmonicTrap(0.5), md.data.Gaussian(1.7, 1.2), schedule=sched, theta0=[0.0], mobility=case[4],
                 n_steps=10, backend="moments")
    from dataclasses import replace
    with pytest.raises(md.InputError, match="its own schedule"):   # the matrix with another layout
        run(case, 10, schedule=replace(md.schedules.constant(1.0, 1.5 * case[5]), preconditioner=sched.preconditioner))
    with pytest.raises(md.InputError, match="its own schedule"):   # same step, more updates
        run(case, 10, schedule=replace(md.schedules.constant(1.0, 2 * case[5]), preconditioner=sched.preconditioner))
