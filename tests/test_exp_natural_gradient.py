"""The natural-gradient comparison experiment (quick mode): exact identities, equal-loss tuning,
and the trap reduction of alpha(t) I^-1 to the optimal schedule."""
import math

import numpy as np
import pytest

from mindiss.app.experiments import natural_gradient as exp

# about a minute on 2 idle cores; the main suite already runs it once inside `reproduce --quick`
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def result():
    return exp.run(quick=True)


def test_checks_pass_and_every_tuned_run_sits_at_the_common_final_loss(result):
    assert result.passed, result.failed_checks()
    for name, e in result.data.items():
        assert "natural-gradient" in e["tuned"], name
        for fam, (c, r, gap) in e["tuned"].items():
            assert gap == pytest.approx(e["target_gap"], rel=1e-6)
            assert r.excess_work > 0 and r.identity1_residual < 1e-9


def test_table_reports_ratios_to_the_tuned_natural_gradient(result):
    rows = result.table("natural_gradient_comparison")
    for name in exp.PROBLEMS:
        ng = [r for r in rows if r["problem"] == name and r["schedule"] == "natural-gradient"]
        assert len(ng) == 1 and ng[0]["W_ex_over_natural_gradient"] == pytest.approx(1.0)
        others = [r for r in rows if r["problem"] == name and r["schedule"] in exp.FAMILIES + ("adam",)
                  and math.isfinite(r["W_ex"])]
        for r in others:
            assert r["W_ex_over_natural_gradient"] == pytest.approx(r["W_ex"] / ng[0]["W_ex"], rel=1e-12)
    assert any("natural gradient" in n for n in result.notes)


def test_double_well_tau_is_the_exact_generator_value(result):
    e = result.data["double_well"]
    assert "Fokker-Planck" in e["ng"].tau_estimates[0]["method"]
    assert 0.3 < e["tau"] < 2.0
    assert result.data["gaussian"]["tau"] == pytest.approx(0.75, rel=1e-12)   # 3 s / (4 mu) at s = 1


def test_plot(result, plot_axes):
    assert plot_axes(exp, result) == 4
    assert np.isfinite(result.numbers["double_well_natural_design_excess_work"])


def test_double_well_optimum_is_replayed_and_lies_below_every_tuned_schedule(result):
    """The precomputed optimum (optimise_1d on the same grid) replays to its stored W_ex in train, ends at the
    common final loss, and no tuned schedule dissipates less at that loss."""
    o = result.data["double_well"]["optimum"]
    assert o["excess_work"] == pytest.approx(o["stored_excess_work"], rel=1e-9)
    assert o["gap"] == pytest.approx(result.data["double_well"]["target_gap"], rel=1e-6)
    assert o["ratios"] and min(o["ratios"].values()) >= 1.0 - 1e-6


def test_precomputed_double_well_optimum_is_current():
    """Recompute the optimum from scratch (~3 min): the committed file is what optimise_1d gives today."""
    import json

    stored = json.loads(exp.OPTIMUM_FILE.read_text())
    fresh = exp.double_well_optimum(quick=True)
    assert fresh["converged"] and stored["converged"]
    assert fresh["target_loss"] == pytest.approx(stored["target_loss"], rel=1e-12)
    assert fresh["excess_work"] == pytest.approx(stored["excess_work"], rel=1e-7)
    np.testing.assert_allclose(fresh["theta_path"], stored["theta_path"], atol=1e-5)
