"""Experiment neural_recipes: a reduced neural study. Fast tests check its references and its structure on a
tiny configuration; the slow test runs quick mode: its checks pass, at least half are independent references
or physical laws, its models get past the blob stage, and its tables keep seed spread and fixed-path error apart."""
from __future__ import annotations

import math

import numpy as np
import pytest

from mindiss.app import neural_study as ns
from mindiss.app.experiments import neural_recipes as exp
from mindiss.app.experiments import references as ref
from mindiss.app.experiments.base import external_share
from mindiss.data import toy as datasets

TINY = dict(cfg=ns.Settings(n_updates=12, n_chains=48, n_test=300, n_records=3, pilot_rows=8, pilot_steps=8,
                            density_n=9),
            families=("sgd-constant", "adam-cosine"), scales={"sgd-constant": (0.05, 0.1), "adam-cosine": (0.01, 0.02)},
            seeds=(0, 1), replay_chains=128)


def test_independent_moons_density_agrees_with_the_library():
    x = datasets.toy("moons", 300, gen=3)
    lib = datasets.true_log_density("moons", x).log_density.numpy()
    assert np.abs(ref.moons_log_density(x.numpy()) - lib).max() < 1e-5


def test_simpson_log_partition_of_a_gaussian():
    s = 0.7                                          # ln Z of exp(-|x|^2 / (2 s^2)) = ln(2 pi s^2)
    g = np.linspace(-6, 6, 241)
    X, Y = np.meshgrid(g, g)
    assert ref.log_partition_simpson((X ** 2 + Y ** 2) / (2 * s * s), g[1] - g[0]) == pytest.approx(
        math.log(2 * math.pi * s * s), abs=1e-10)


@pytest.fixture(scope="module")
def tiny(monkeypatch_module):
    monkeypatch_module.setitem(exp.SETTINGS, True, TINY)
    monkeypatch_module.setattr(ref, "moons_entropy", lambda: 2.3938792)   # measured by the full quadrature
    return exp.run(quick=True)


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_structure_kinds_and_tables(tiny):
    kinds = tiny.kind_counts()
    assert kinds["tuner"] == 0
    assert external_share(kinds) >= 0.5
    n_runs = sum(len(v) for v in TINY["scales"].values()) * len(TINY["seeds"])
    scored = [r for r in tiny.data["runs"] if not r["diverged"]]
    assert len(tiny.data["runs"]) == n_runs
    assert sum(c.name.endswith("(gap >= -3 SE)") for c in tiny.checks) == len(scored)       # Gibbs per run
    rows = tiny.table("neural_recipes_fronts_equal_updates")
    assert {r["family"] for r in rows} == set(TINY["families"])
    for r in rows:                         # seed spread and fixed-path error in separate columns
        assert "excess_work_seed_se" in r and "excess_work_fixed_path_se" in r
        runs = [q for q in scored if q["family"] == r["family"] and q["scale"] == r["scale"]]
        if len(runs) == 2:
            w = [q["excess_work"] for q in runs]
            assert r["excess_work"] == pytest.approx(np.mean(w), rel=1e-12)
            assert r["excess_work_seed_se"] == pytest.approx(np.std(w, ddof=1) / math.sqrt(2), rel=1e-9)
            f = [q["excess_work_fixed_path_se"] for q in runs]
            assert r["excess_work_fixed_path_se"] == pytest.approx(math.hypot(*f) / 2, rel=1e-9)
    assert all(isinstance(v, float) and math.isfinite(v) for v in tiny.numbers.values())


def test_plot(tiny, plot_axes):
    # 4 top panels, data + one density panel per family, 4 precomputed-study panels
    assert plot_axes(exp, tiny) == 4 + 1 + len(TINY["families"]) + 4


@pytest.mark.slow
def test_quick_mode_learns_and_its_checks_pass():
    result = exp.run(quick=True)
    assert result.passed, result.failed_checks()
    assert external_share(result.kind_counts()) >= 0.5
    assert result.kind_counts()["tuner"] == 0
    # past the blob stage: the best family's held-out gap to the true density (a blob scores ~0.9-1.1 nats)
    best = min(v for k, v in result.numbers.items() if k.endswith("_best_gap"))
    assert best < 0.7
    assert any(c.reference_name == "Jarzynski" for c in result.checks)
