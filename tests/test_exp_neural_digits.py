"""Experiment neural_digits: a tiny configuration for its structure and its numbers recomputed apart (fast),
and quick mode (slow): every check passes and at least half of them are independent references or laws."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mindiss.app.experiments import neural_digits as exp
from mindiss.app.experiments.base import external_share

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(rbm_hidden=8, mlp_updates=12, rbm_updates=12, n_chains=64, extra_moves=4, ais_runs=2, ais_chains=32,
            mlp_intermediate=(5, 15), rbm_intermediate=40, n_quality=40)


@pytest.fixture(scope="module")
def tiny():
    return exp.run(settings=TINY)


def _log_mean_exp(a):
    a = np.asarray(a, float)
    return a.max() + math.log(np.mean(np.exp(a - a.max())))


def test_tiny_run_tables_and_recomputed_numbers(tiny):
    rows = tiny.table("neural_digits_nll")
    assert [(r["model"], r["recipe"]) for r in rows] == [("rbm", n) for n in exp.RBM_RECIPES] + [("mlp", "adam-cosine")]
    dd = tiny.data["digits"]
    for name, r in tiny.data["rbms"].items():
        row = next(x for x in rows if x["recipe"] == name and x["model"] == "rbm")
        # ln Z and the pooled AIS value recomputed here in NumPy from the stored energies and works
        assert row["log_z_exact"] == pytest.approx(r["energy"].log_partition(r["theta"]), abs=1e-12)
        e = r["energy"].energy(dd.test, r["theta"]).numpy()
        assert row["heldout_nll_exact"] == pytest.approx(e.mean() + row["log_z_exact"], abs=1e-9)
        w = np.concatenate([run.work_forward.numpy() for run in r["runs"]])
        assert row["log_z_ais"] == pytest.approx(r["runs"][0].log_partition_base + _log_mean_exp(-w), abs=1e-9)
        assert row["log_z_lower"] == pytest.approx(r["runs"][0].log_partition_base - w.mean(), abs=1e-9)
        assert row["heldout_nll_pixel_space"] == pytest.approx(row["heldout_nll_exact"] + dd.log_jacobian, abs=1e-9)
    runs = tiny.table("neural_digits_ais_runs")
    assert len(runs) == TINY["ais_runs"] * (len(exp.RBM_RECIPES) + len(TINY["mlp_intermediate"]))
    assert all(math.isnan(r["log_z_exact"]) for r in runs if r["model"] == "mlp")     # no exact value for a network
    best = tiny.data["best_rbm"]
    by_model = {(r["model"], r["recipe"]): r for r in rows}
    assert tiny.numbers["mlp_minus_rbm_nll"] == pytest.approx(
        by_model[("mlp", "adam-cosine")]["heldout_nll_ais"] - by_model[("rbm", best)]["heldout_nll_exact"], abs=1e-9)
    assert best == min(exp.RBM_RECIPES, key=lambda n: by_model[("rbm", n)]["heldout_nll_exact"])
    q = tiny.table("neural_digits_quality")
    assert q[0]["samples"] == "test digits" and q[0]["ratio_to_test"] == 1.0


def test_tiny_run_rbm_ais_agrees_with_enumeration_and_brackets_it(tiny):
    """The independent checks of a barely trained RBM (near W = 0: AIS is easy) pass; the kinds add up."""
    for c in tiny.checks:
        if c.name.startswith("digits: RBM") and c.kind in ("independent", "law"):
            assert c.passed, c
    assert external_share(tiny.kind_counts()) >= 0.5


def test_tiny_run_plots(tiny):
    import matplotlib

    matplotlib.use("Agg")
    fig = exp.plot(tiny)
    assert len(fig.axes) == 7
    matplotlib.pyplot.close(fig)


def test_mosaic_places_images_in_order():
    imgs = np.stack([np.full((8, 8), i / 4.0) for i in range(4)])
    m = exp._mosaic(imgs, k=2)
    assert m.shape == (17, 17) and m[0, 0] == 0.0 and m[0, 9] == 0.25 and m[9, 0] == 0.5 and m[9, 9] == 0.75
    assert m[8, 8] == 0.0                                     # the gap


@pytest.mark.slow
def test_quick_mode_checks_pass():
    # quick mode: ~60 s on one core of the shared machine; `reproduce --quick` runs it too
    res = exp.run(quick=True)
    assert res.passed, res.failed_checks()
    assert external_share(res.kind_counts()) >= 0.5
    mlp = res.table("neural_digits_nll", key="model")["mlp"]
    assert math.isfinite(mlp["heldout_nll_ais"]) and mlp["heldout_nll_ais_se"] > 0
    assert torch.isfinite(res.data["mlp"]["samples"]).all()


def test_pooled_ais_error_is_the_larger_of_delta_method_and_run_spread(tiny):
    for r in tiny.data["rbms"].values():
        p = r["pooled"]
        spread = np.std([run.log_partition for run in r["runs"]], ddof=1) / math.sqrt(len(r["runs"]))
        assert p["spread_se"] == pytest.approx(spread, rel=1e-12)
        assert p["log_partition_se"] == max(p["delta_method_se"], p["spread_se"])
