"""Experiment neural_recipes (quick mode): its checks pass, the equal-wall-time protocol is what it
says, and the table's figures are recomputed from the stored per-run curves."""
from __future__ import annotations

import math

import numpy as np
import pytest

from mindiss.rates import recipes
from mindiss.app.experiments import neural_recipes as exp

# quick mode: ~25 s on 2 idle cores, ~45 s at load 8 on the shared machine; `reproduce --quick` runs it too
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def result():
    return exp.run(quick=True)


def test_checks_pass(result):
    assert result.passed, result.failed_checks()
    names = {c.name for c in result.checks}
    for r in recipes.RECIPES:
        assert any(n.startswith(f"moons: {r}: first law") for n in names)
        assert any(n.startswith(f"moons: {r}: grid quadrature converged") for n in names)
    assert sum(n.startswith("digits:") and "AIS" in n for n in names) == len(exp.RBM_RECIPES)


def test_equal_wall_time_protocol_and_tuning(result):
    moons = result.data["moons"]
    spu, budget = moons["seconds_per_update"], moons["budget"]
    assert budget == pytest.approx(exp.SETTINGS[True]["ref_updates"] * spu["sgd-constant"])
    tuning = result.table("neural_recipes_tuning")
    for name in recipes.RECIPES:
        grid = exp.QUICK_GRIDS[name]
        rows = [r for r in tuning if r["recipe"] == name]
        assert [r["scale"] for r in rows] == list(grid)
        best = min(rows, key=lambda r: r["nll_final"] if r["nll_final"] is not None else math.inf)
        assert moons["tuned"][name] == best["scale"]                   # tuned by final true NLL
        assert all(r["n_updates"] == moons["n_updates"][name] for r in rows)
    n_sgd = moons["n_updates"]["sgd-constant"]
    assert n_sgd == exp.SETTINGS[True]["ref_updates"]
    for name in recipes.RECIPES:                  # each gets the updates that fit; alpha(t) recipes pay the pilot
        setup = moons["tune_pilot_seconds"] if name in recipes.NEEDS_TAU else 0.0
        assert moons["n_updates"][name] == max(8, int((budget - setup) / spu[name]))


def test_table_is_the_mean_over_seeds_of_the_stored_curves(result):
    rows = result.table("neural_recipes_equal_wall_time", key="recipe")
    summary = result.data["summary"]
    assert set(rows) == set(recipes.RECIPES)
    for name, row in rows.items():
        runs = summary[name]["runs"]
        assert row["n_seeds"] + row["n_diverged"] == exp.SETTINGS[True]["n_seeds"]
        if not runs:
            continue
        finals = np.array([r["nll"][-1] for r in runs])
        assert row["nll"] == pytest.approx(finals.mean(), rel=1e-12)
        if len(runs) > 1:
            assert row["nll_se"] == pytest.approx(finals.std(ddof=1) / math.sqrt(len(runs)), rel=1e-9)
        resid = np.array([r["bias"][-1] - r["excess_work"][-1] for r in runs])
        assert row["identity1_residual"] == pytest.approx(resid.mean(), rel=1e-9, abs=1e-15)
        for r in runs:
            assert r["update"][0] == 0 and r["update"][-1] == r["n_updates"]
            assert abs(r["residual"][0]) < 1e-12                        # nothing accumulated at update 0
            assert np.all(np.diff(r["seconds"]) >= 0)                    # training time only grows
            assert r["nll"][0] == pytest.approx(r["nll_initial"])
    winners = result.data["winners"]
    assert winners["nll"] == min(rows, key=lambda n: rows[n]["nll"])
    assert winners["bias"] == min(rows, key=lambda n: abs(rows[n]["bias"]))
    assert all(isinstance(v, float) and math.isfinite(v) for v in result.numbers.values())
    assert any(n.startswith("True NLL at equal wall time") for n in result.notes)
    assert any(n.startswith("Minimal-dissipation design") for n in result.notes)


def test_digits_heldout_nll_by_ais_and_exact(result):
    for row in result.table("neural_recipes_digits"):
        assert abs(row["log_z_ais"] - row["log_z_exact"]) <= 4 * row["log_z_ais_se"]
        assert row["heldout_nll_ais"] == pytest.approx(row["heldout_nll_exact"] + row["log_z_ais"]
                                                       - row["log_z_exact"], rel=1e-12)
        assert row["heldout_nll_ais_se"] > row["log_z_ais_se"] > 0
    for r in result.data["digits"]["runs"].values():
        assert r["chains"].shape == (exp.SETTINGS[True]["rbm_chains"], 64)


def test_plot(result, plot_axes):
    assert plot_axes(exp, result) == 4 + 1 + len(recipes.RECIPES) + 1 + len(exp.RBM_RECIPES)
