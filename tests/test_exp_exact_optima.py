"""Experiment exact_optima (quick mode): checks pass and its numbers are re-derived from closed forms."""
import math

import numpy as np
import pytest

import mindiss as md
from mindiss.rates import optimal
from mindiss.app.experiments import exact_optima as exp


@pytest.fixture(scope="module")
def result():
    return exp.run(quick=True)


def test_every_check_passes(result):
    failed = result.failed_checks()
    assert not failed, failed
    names = " | ".join(c.name for c in result.checks)
    for key in ("reaches W_ex*", "lands on the data", "order of W_ex", "discrete optimum through train",
                "front at its own final loss", "never below the front"):
        assert key in names


def test_learnable_variance_table(result):
    rows = result.table("learnable_variance")
    n = result.numbers["n_gaussian"]
    assert len(rows) == len(exp.PROBLEMS)
    for r, p in zip(rows, exp.PROBLEMS):
        w = md.bounds.gaussian(*p).excess_work
        assert r["W_ex_star"] == pytest.approx(w, rel=1e-14)
        assert 0 <= r["optimal_rel_error"] <= 0.7 / n**2          # O(1/n^2), constants <= 0.65
        if r["NG_status"] == "ran":
            assert r["NG_ratio_to_front"] >= 1.0 and r["NG_final_loss_above_min"] > 0
        else:
            assert "diverged" in r["NG_status"] and math.isnan(r["W_ex_natural_gradient"])
    statuses = [r["NG_status"] == "ran" for r in rows]
    assert statuses == [False, True, True, False]              # problems 1 and 4: s < 0 at the start impulse
    assert result.numbers["order_gaussian"] == pytest.approx(2.0, abs=0.05)


def test_discrete_table(result):
    rows = result.table("discrete_vs_continuous")
    assert [r["n"] for r in rows] == list(exp.DISCRETE_N)
    for r in rows:
        n = r["n"]
        w = optimal.discrete_harmonic_excess_work(n, variance=exp.S, mobility=exp.MU, duration=exp.T,
                                                  distance=exp.TARGET - exp.THETA0)
        assert r["W_star_n_closed_form"] == pytest.approx(w, rel=1e-14)
        x = exp.MU * exp.T / exp.S
        assert w == pytest.approx((exp.TARGET - exp.THETA0) ** 2 / exp.S / (2 + 2 * n * math.tanh(x / (2 * n))))
        assert r["W_ex_continuous_landed"] >= w and r["continuous_ratio_to_front_n"] >= 1.0
    ratios = [r["landed_over_discrete_optimal"] for r in rows]
    assert all(a > b for a, b in zip(ratios, ratios[1:])) and ratios[-1] - 1 < 2e-4


def test_pareto_table(result):
    rows = result.table("pareto_points")
    n = result.numbers["pareto_n"]
    problem = optimal.HarmonicProblem(exp.S, exp.MU, exp.T, exp.THETA0, exp.TARGET)
    assert len(rows) == 2 + len(exp.FAMILIES) * len(exp.FINAL_ERRORS)
    for r in rows:
        front = problem.excess_work(r["final_loss"], n)
        assert r["front_n_at_loss"] == pytest.approx(front, rel=1e-12)
        assert r["ratio_to_front_n"] >= 1 - 1e-9 and r["ratio_to_front_continuous"] >= r["ratio_to_front_n"]
    tuned = [r for r in rows if "error" in r["schedule"]]
    np.testing.assert_allclose([r["final_error"] for r in tuned], list(exp.FINAL_ERRORS) * len(exp.FAMILIES),
                               rtol=1e-8)
    assert min(r["ratio_to_front_n"] for r in tuned) > 1.1         # every baseline dissipates >10 % above the front


def test_figure(result, plot_axes):
    assert plot_axes(exp, result) == 4
