"""Experiment dissipation_split (quick mode): checks pass and Identity 2 is re-derived independently."""
import numpy as np
import pytest

import mindiss as md
from mindiss.app.experiments import dissipation_split as exp


@pytest.fixture(scope="module")
def result():
    return exp.run(quick=True)


def _rows(result):
    return result.table("dissipation_split_schedules", key="schedule")


def test_every_check_passes(result):
    n_sched = 3 + len(exp.BASELINES)
    assert len(result.data["runs"]) == n_sched
    # per schedule: Identity 2, EP >= 0, EP against the NumPy reference loop, one split reference (the optimum
    # has two: KL_T and EP)
    assert len(result.checks) == 4 * n_sched + 1
    failed = result.failed_checks()
    assert not failed, failed
    assert {c.mode for c in result.checks} == {"abs", "ge", "rel"}
    assert not result.notes                              # every baseline reached the common final error


def test_closed_form_split_of_the_optimum(result):
    b = md.bounds.harmonic(exp.S, exp.MU, exp.T, exp.THETA0, exp.TARGET)
    delta, tau = exp.TARGET - exp.THETA0, exp.S / exp.MU
    m_T = exp.THETA0 + delta * exp.T / (exp.T + 2 * tau)
    assert b.kl_end == pytest.approx((exp.TARGET - m_T) ** 2 / (2 * exp.S), rel=1e-14)
    assert b.entropy_production == pytest.approx(delta ** 2 * exp.T / (exp.MU * (exp.T + 2 * tau) ** 2), rel=1e-14)
    assert b.kl_end + b.entropy_production == pytest.approx(b.excess_work, rel=1e-14)
    assert result.numbers["kl_end_closed_form"] == b.kl_end
    assert result.numbers["entropy_production_closed_form"] == b.entropy_production
    dt = exp.T / result.parameters["n_steps"]
    assert result.numbers["kl_final_optimal"] == pytest.approx(b.kl_end, rel=1.5 * dt)
    assert result.numbers["entropy_production_optimal"] == pytest.approx(b.entropy_production, rel=1.5 * dt)


def test_identity_2_for_every_schedule(result):
    rows = _rows(result)
    for label, r in result.data["runs"].items():
        row = rows[label]
        assert row["KL_0"] == 0.0                                     # equilibrium start
        assert row["W_ex"] == pytest.approx(row["KL_T"] + row["entropy_production"], abs=1e-12)
        assert row["min_EP_per_move"] >= 0.0                          # every chain move produces entropy
        np.testing.assert_allclose(r["excess_work"], r["kl"] + r["ep"], rtol=0, atol=1e-12)
        assert np.all(np.diff(r["ep"]) >= 0.0)
        assert r["ep"][-1] == pytest.approx(row["entropy_production"], rel=1e-15)


def test_split_against_the_discrete_recursion(result):
    """W_ex and KL_T from the independent (theta, m) recursion; EP = W_ex - KL_T then follows."""
    n = result.parameters["n_steps"]
    rows = _rows(result)
    for fam, kw in exp.BASELINES:
        row = rows[fam]
        sched = md.schedules.BASELINES[fam](row["scale"], exp.T, **kw)
        path = md.moments.harmonic_discrete_path(sched.discretise(n), exp.S, exp.MU, exp.THETA0, exp.TARGET)
        theta_T, m_T = path["theta"][-1, 0], path["chain_mean"][-1, 0]
        kl_T = (m_T - theta_T) ** 2 / (2 * exp.S)                     # chains keep variance s
        assert row["W_ex"] == pytest.approx(path["work"][-1], rel=1e-12)
        assert row["KL_T"] == pytest.approx(kl_T, rel=1e-10)
        assert row["final_error"] == pytest.approx(exp.FINAL_ERROR, rel=1e-8)
        assert row["W_ex"] > row["W_star_reached_endpoint"]           # no baseline beats the bound


def test_plot_returns_a_figure(result, plot_axes):
    assert plot_axes(exp, result) == 3
