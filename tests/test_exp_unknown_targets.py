"""Experiment unknown_targets (quick mode): checks pass and the physics is re-derived."""
import math

import numpy as np
import pytest

import mindiss as md
from mindiss.app.experiments import unknown_targets as exp


@pytest.fixture(scope="module")
def result():
    return exp.run(quick=True)


def _rows(result, name):
    return result.table(name)


def test_every_check_passes(result):
    assert len(result.checks) == 7
    failed = result.failed_checks()
    assert not failed, failed
    assert {c.mode for c in result.checks} == {"abs", "rel"}


def test_every_pair_sits_at_its_own_bound(result):
    rows = _rows(result, "unknown_targets_pairs")
    assert len(rows) == int(result.numbers["n_pairs"]) >= 8
    assert {r["dim"] for r in rows} == {1, 2}
    n = result.parameters["n_steps"]
    dt = exp.T / n
    ratio = result.numbers["ratio_W_ex_over_W_star"]
    for r, (th0, xbar) in zip(rows, exp._pairs(quick=True)):
        assert r["theta0"] == str(th0) and r["target"] == str(xbar)
        w_star = md.bounds.harmonic(exp.S, exp.MU, exp.T, th0, xbar).excess_work
        d2 = float(np.sum((np.subtract(xbar, th0)) ** 2))
        assert w_star == pytest.approx(d2 / (2 * exp.S + exp.MU * exp.T), rel=1e-14)   # Delta^2 / (2s + mu T)
        assert r["W_star"] == pytest.approx(w_star, rel=1e-14)
        assert r["W_ex"] / w_star == pytest.approx(ratio, rel=1e-10)              # one ratio for all pairs
        assert r["landing_error"] <= 0.1 * dt * math.sqrt(d2)
    assert abs(ratio - 1.0) <= 0.15 * dt


def test_common_ratio_is_the_discretisation_factor(result):
    n = result.parameters["n_steps"]
    sched = md.schedules.optimal_harmonic(exp.S, exp.MU, exp.T)
    # an independent target: the discrete linear recursion, from a start and target not in the grid
    path = md.moments.harmonic_discrete_path(sched.discretise(n), exp.S, exp.MU, [0.7], [-2.9])
    w_star = md.bounds.harmonic(exp.S, exp.MU, exp.T, 0.7, -2.9).excess_work
    assert path["work"][-1] / w_star == pytest.approx(result.numbers["ratio_W_ex_over_W_star"], rel=1e-10)


def test_prepared_scheme_misses_linearly_impulsive_scheme_lands(result):
    rows = _rows(result, "unknown_targets_misspecified")
    n = result.parameters["n_steps"]
    dt = exp.T / n
    m0 = md.schedules.prepared_chain_mean(exp.GUESS_THETA0, exp.GUESS_TARGET, exp.S, exp.MU, exp.T)
    tau = exp.S / exp.MU
    assert float(m0) == pytest.approx(exp.GUESS_THETA0 - tau * (exp.GUESS_TARGET - exp.GUESS_THETA0) / exp.T)
    slope = result.numbers["miss_slope_ode"]
    # the ODE miss is exactly linear in the misspecification, slope e^{-T/tau} here (tau = 1, T = 2)
    assert slope == pytest.approx(result.numbers["miss_slope_closed_form"], rel=1e-9)
    assert slope == pytest.approx(math.exp(-exp.T * exp.MU / exp.S), rel=1e-9)
    for r in rows:
        assert r["miss_prepared_ode"] == pytest.approx(slope * r["misspecification"], abs=1e-9)
        assert abs(r["miss_prepared"] - r["miss_prepared_ode"]) <= 0.15 * dt          # O(dt)
        assert abs(r["miss_impulsive"]) <= 0.1 * dt * abs(r["true_target"] - exp.GUESS_THETA0) + 1e-12
        if r["misspecification"] == 0:
            # correctly prepared: the continuum reaches |Delta|^2 / (mu T)
            assert r["W_ex_prepared_ode"] == pytest.approx(
                (exp.GUESS_TARGET - exp.GUESS_THETA0) ** 2 / (exp.MU * exp.T), rel=1e-9)
    assert max(abs(r["miss_prepared"]) for r in rows) > 100 * 0.15 * dt         # a wrong guess really misses


def test_plot_returns_a_figure(result, plot_axes):
    assert plot_axes(exp, result) == 3
