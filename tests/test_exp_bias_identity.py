"""Experiment bias_identity (quick mode): checks pass and Identity 1 is re-derived independently."""
import math

import numpy as np
import pytest

import mindiss as md
from mindiss.app.experiments import bias_identity as exp


@pytest.fixture(scope="module")
def result():
    return exp.run(quick=True)


def _rows(result):
    return result.table("bias_identity_runs")


def test_every_check_passes(result):
    # per schedule: Identity 1 on both backends, particles vs moments, the bias against the NumPy reference loop,
    # the own-endpoint bound and the second law; W* for the optimum; L_approx never rises
    assert len(result.checks) == 3 * 6 + 1 + 1
    failed = result.failed_checks()
    assert not failed, failed
    assert {c.mode for c in result.checks} == {"abs", "se", "rel", "le", "ge"}
    for c in result.checks:
        if c.mode == "abs":
            assert c.tolerance <= 1e-10
            assert c.reference == 0.0 or c.kind == "independent"
    kinds = [c.kind for c in result.checks]
    assert kinds.count("independent") + kinds.count("law") >= len(kinds) / 2


def test_identity_1_along_every_run(result):
    """Recompute the gap from the stored losses: L - L_approx = W_ex at every update."""
    for label, c in result.data["curves"].items():
        for backend in ("moments", "particles"):
            x = c[backend]
            assert x["loss_true"][0] == x["loss_approx"][0]                 # row 0: nothing accumulated
            np.testing.assert_allclose(x["loss_true"] - x["loss_approx"], x["excess_work"], rtol=0, atol=1e-12)
            assert np.all(np.diff(x["loss_approx"]) <= 1e-13)             # L_approx never rises
            assert x["excess_work"][-1] > 0.5                              # a genuine bias, not a trivial zero


def test_moments_runs_against_independent_references(result):
    n = result.parameters["n_steps"]
    k = 1.0 / exp.S
    w_star = md.bounds.harmonic(exp.S, exp.MU, exp.T, exp.THETA0, exp.TARGET).excess_work
    assert w_star == pytest.approx((exp.TARGET - exp.THETA0) ** 2 / (2 * exp.S + exp.MU * exp.T), rel=1e-14)
    assert result.numbers["W_star"] == pytest.approx(w_star, rel=1e-14)
    rows = {(r["schedule"], r["backend"]): r for r in _rows(result)}
    for label in ("optimal", *exp.BASELINES):
        if label == "optimal":
            sched = md.schedules.optimal_harmonic(exp.S, exp.MU, exp.T)
        else:
            sched = md.schedules.BASELINES[label](rows[(label, "moments")]["scale"], exp.T)
        # the discrete linear recursion in (theta, m): a code path independent of train()
        path = md.moments.harmonic_discrete_path(sched.discretise(n), exp.S, exp.MU, exp.THETA0, exp.TARGET)
        w, theta_T = path["work"][-1], path["theta"][-1, 0]
        assert result.numbers[f"W_ex_{label}"] == pytest.approx(w, rel=1e-12)
        assert result.numbers[f"bias_{label}"] == pytest.approx(w, rel=1e-12)
        # the true loss change is closed form: k ((xbar - theta_T)^2 - (xbar - theta_0)^2) / 2
        d_loss = k * ((exp.TARGET - theta_T) ** 2 - (exp.TARGET - exp.THETA0) ** 2) / 2
        c = result.data["curves"][label]["moments"]
        assert c["loss_true"][-1] - c["loss_true"][0] == pytest.approx(d_loss, abs=1e-12)
        if label == "optimal":
            assert abs(w / w_star - 1) <= 0.15 * exp.T / n
        else:   # tuned to the common final error
            assert abs(theta_T - exp.TARGET) == pytest.approx(exp.FINAL_ERROR * abs(exp.TARGET - exp.THETA0), rel=1e-8)
            assert w > md.bounds.harmonic(exp.S, exp.MU, exp.T, exp.THETA0, theta_T).excess_work


def test_particles_agree_with_moments(result):
    rows = {(r["schedule"], r["backend"].split(" ")[0]): r for r in _rows(result)}
    n_rep = result.parameters["n_replicas"]
    assert n_rep >= 5
    for label in ("optimal", *exp.BASELINES):
        p, m = rows[(label, "particles")], rows[(label, "moments")]
        assert p["W_ex_se"] > 0
        assert abs(p["W_ex"] - m["W_ex"]) <= 4 * p["W_ex_se"]
        assert abs(p["theta_T"] - m["theta_T"]) <= 4 * p["theta_T_se"] + 1e-12
        assert p["bias_L_minus_L_approx"] == pytest.approx(p["W_ex"], abs=1e-12)
        # the Monte-Carlo error is what N chains x R replicas should give: Var W = 2 W_ex per chain
        expect = math.sqrt(2 * m["W_ex"] / (result.parameters["n_chains"] * n_rep))
        assert 0.3 * expect < p["W_ex_se"] < 5 * expect


def test_plot_returns_a_figure(result, plot_axes):
    assert plot_axes(exp, result) == 4
