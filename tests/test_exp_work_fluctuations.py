"""Experiment work_fluctuations (quick mode): checks pass and the physics is re-derived."""
import math

import numpy as np
import pytest

import mindiss as md
from mindiss.app.experiments import work_fluctuations as exp


@pytest.fixture(scope="module")
def result():
    return exp.run(quick=True)


def _rows(result):
    return result.table("work_fluctuations_summary", key="protocol")


def test_every_check_passes(result):
    per = result.data["per"]
    assert "optimal" in per and len(per) >= 2                       # the optimum and at least one baseline
    # per protocol: mean work vs moments replay, moments replay vs the NumPy recursion, Var W, Jarzynski, Crooks
    assert len(result.checks) == 5 * len(per)
    assert all(c.mode == "se" and c.tolerance == 4.0 for c in result.checks if c.kind != "independent")
    assert sum(c.name.endswith("forward = reversed protocol") for c in result.checks) == len(per)
    failed = result.failed_checks()
    assert not failed, failed


def _exact_mean_work(thetas, dts, s=exp.S, mu=exp.MU):
    """N -> infinity mean work of a prescribed centre path from equilibrium chains (the chain variance stays s)."""
    th, m, w = float(thetas[0, 0]), float(thetas[0, 0]), 0.0
    for new, dt in zip(thetas[1:, 0], dts):
        w += ((m - new) ** 2 - (m - th) ** 2) / (2 * s)
        th = float(new)
        m = th + (m - th) * math.exp(-mu * dt / s)
    return w


def test_moments_reference_and_bound(result):
    rows = _rows(result)
    n = result.parameters["n_steps"]
    w_opt = None
    for label, d in result.data["per"].items():
        r = rows[label]
        w = _exact_mean_work(d["thetas"], d["dts"])
        assert r["W_ex_moments"] == pytest.approx(w, rel=1e-10)
        assert r["two_W_ex"] == pytest.approx(2 * w, rel=1e-12)
        w_star = md.bounds.harmonic(exp.S, exp.MU, exp.T, exp.THETA0, r["theta_T"]).excess_work
        assert r["W_star_reached"] == pytest.approx(w_star, rel=1e-12)
        assert r["W_ex_moments"] >= w_star * (1 - 1e-12)                  # no protocol beats the bound
        assert abs(r["theta_T"] - exp.TARGET) < 0.05 * abs(exp.TARGET - exp.THETA0)
        if label == "optimal":
            w_opt = r["W_ex_moments"]
            assert w / w_star == pytest.approx(1.0, abs=0.3 * exp.T / n)   # O(dt) (+ the recorded path's noise)
    for label, r in rows.items():
        if label != "optimal":
            assert r["W_ex_moments"] > w_opt                              # baselines dissipate more
    assert result.numbers["W_star_optimal"] == pytest.approx(4.0 / 3.0, rel=1e-14)   # Delta^2 / (2s + mu T)


def test_pooled_work_is_gaussian_with_jarzynski(result):
    for label, d in result.data["per"].items():
        w = d["work"]
        n = len(w)
        assert n == result.parameters["n_chains"] * result.parameters["n_replays"]
        mu_w = d["w_exact"]
        # chains of an open-loop replay are independent: per-chain errors are legitimate here
        assert abs(w.mean() - mu_w) <= 5 * math.sqrt(2 * mu_w / n)
        assert abs(w.var() - 2 * mu_w) <= 5 * 2 * mu_w * math.sqrt(2 / n)
        z = (w - w.mean()) / w.std()
        assert abs(np.mean(z**3)) <= 5 * math.sqrt(6 / n)
        assert abs(np.mean(z**4) - 3) <= 5 * math.sqrt(24 / n)
        jz_se = math.sqrt(math.expm1(2 * mu_w) / n)                     # lognormal prediction
        assert abs(np.exp(-w).mean() - 1.0) <= 5 * jz_se
        counts, est = d["jarzynski_running"]
        assert counts[-1] == n and est[-1] == pytest.approx(np.exp(-w).mean(), rel=1e-9)


def test_plot_returns_a_figure(result, plot_axes):
    assert plot_axes(exp, result) == 3
