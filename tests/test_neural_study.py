"""The neural recipe study runner (benchmarks/neural_study.py over mindiss.app.neural_study): one JSON per
finished run, resume skips finished runs, the fronts are sorted and Pareto-filtered, bad arguments exit 2."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from mindiss.app import neural_study as ns
from mindiss.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
TINY = ns.with_settings(ns.QUICK, n_updates=8, n_chains=32, n_test=400, n_records=2, pilot_rows=8, pilot_steps=8)


def _cli():
    spec = importlib.util.spec_from_file_location("neural_study_cli", ROOT / "benchmarks" / "neural_study.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_resume_skips_finished_runs(tmp_path):
    specs = [ns.RunSpec("moons", "sgd-constant", 0.05, 0)]
    first = ns.run_study(tmp_path, specs, TINY, log=lambda s: None)
    path = ns.run_path(tmp_path, specs[0])
    assert first == {"done": 1, "skipped": 0} and path.exists()
    before = path.stat().st_mtime_ns
    again = ns.run_study(tmp_path, specs, TINY, log=lambda s: None)
    assert again == {"done": 0, "skipped": 1}
    assert path.stat().st_mtime_ns == before                 # not rewritten
    r = json.loads(path.read_text())
    # the run's own numbers: the gap is test NLL minus the true density's NLL on the same draws
    assert r["gap"] == pytest.approx(r["test_nll"] - r["true_density_nll"], abs=1e-9)
    assert r["curves"]["update"][0] == 0 and r["curves"]["update"][-1] == TINY.n_updates + 2
    assert r["excess_work_fixed_path_se"] > 0
    with pytest.raises(InputError, match="other settings"):     # a folder is one study
        ns.run_study(tmp_path, specs, ns.with_settings(TINY, n_chains=16), log=lambda s: None)


def test_tiny_study_of_two_runs_by_the_command_line(tmp_path, capsys):
    cli = _cli()
    out = tmp_path / "study"
    rc = cli.main(["--out", str(out), "--datasets", "moons", "--families", "adam,md-lr", "--seeds", "1",
                   "--scales", "0.002", "--quick", "--updates", "6", "--chains", "32", "--no-figures"])
    assert rc == 0
    runs = ns.load_runs(out)
    assert sorted(r["family"] for r in runs) == ["adam", "md-lr"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_runs"] == 2 and summary["missing"] == []
    md = next(r for r in runs if r["family"] == "md-lr")
    assert md["tau"] > 0 and md["pilot_seconds"] > 0            # the scheduler's tau from the pilot
    assert (out / "table.csv").read_text().count("\n") == 3      # header + one row per (family, scale)


def test_md_lr_rates_are_the_schedulers_and_average_to_the_base_lr():
    r = ns.md_lr_rates(50, 7.0, 0.1)
    assert r.mean() == pytest.approx(0.1, rel=1e-12)             # practitioner mode: mean lr = base lr
    k = np.arange(50)
    shape = 1.0 / (50 - (k + 0.5) + 2 * 7.0)                     # alpha(t) at unit steps, apart from the library
    assert np.allclose(r / r.mean(), shape / shape.mean(), rtol=1e-12)


def _run(family, scale, seed, gap, wex, secs=1.0, diverged=None):
    curves = {"update": [0, 6, 12], "seconds": [0.0, secs / 2, secs], "gap": [1.0, (1.0 + gap) / 2, gap],
              "excess_work": [0.0, wex / 2, wex]}
    return {"dataset": "moons", "family": family, "scale": scale, "seed": seed, "updates": 10, "pilot_seconds": 0.0,
            "wall_seconds": secs, "gap": gap, "excess_work": wex, "excess_work_fixed_path_se": 0.1,
            "true_density_nll": 2.4, "diverged": diverged, "curves": None if diverged else curves}


def test_aggregation_sorts_fronts_and_keeps_the_error_kinds_apart():
    runs = []
    for scale, (g, w) in {0.3: (0.2, 9.0), 0.1: (0.5, 1.0), 0.2: (0.3, 4.0), 0.05: (0.6, 3.0)}.items():
        runs += [_run("sgd-constant", scale, s, g + 0.01 * s, w + 0.1 * s) for s in range(3)]
    runs.append(_run("adam", 0.01, 0, math.nan, math.nan, diverged="boom"))
    agg = ns.aggregate(runs, [ns.RunSpec("moons", "adam", 0.01, 1)])
    res = agg["datasets"]["moons"]
    pts = res["equal_updates"]["sgd-constant"]["points"]
    assert [p["scale"] for p in pts] == [0.1, 0.05, 0.2, 0.3]               # sorted by W_ex
    assert [p["scale"] for p in res["equal_updates"]["sgd-constant"]["front"]] == [0.1, 0.2, 0.3]  # 0.05 dominated
    p = pts[0]
    assert p["gap"] == pytest.approx(0.51) and p["gap_seed_se"] == pytest.approx(0.01 / math.sqrt(3))
    assert p["excess_work_seed_se"] == pytest.approx(0.1 / math.sqrt(3))    # across seeds
    assert p["excess_work_fixed_path_se"] == pytest.approx(0.1 * math.sqrt(3) / 3)   # fixed path, apart
    adam = res["equal_updates"]["adam"]["points"][0]
    assert adam["n_diverged"] == 1 and adam["n_seeds"] == 0 and math.isnan(adam["gap"])
    assert agg["missing"] == ["moons/adam/scale0.01_seed1"]
    # equal wall time: the budget is the median sgd-constant time; curves read there (all end at 1 s)
    assert res["budget_seconds"] == 1.0
    wt = res["equal_wall_time"]["sgd-constant"]["points"]
    assert {q["scale"] for q in wt} == {0.05, 0.1, 0.2, 0.3}
    assert ns.read_at([0, 1, 2], [0, 10, 20], 0.5) == 5.0 and ns.read_at([0, 1], [3, 4], 9) == 4.0
    best = ns.least_work_at(pts, 0.35)
    assert best["scale"] == 0.2
    assert ns.best_gap_within(pts, 3.5)["scale"] == 0.1 and ns.best_gap_within(pts, 0.5) is None


@pytest.mark.parametrize("argv, message", [
    (["--families", "sgd-constant,nope"], "unknown family 'nope'"),
    (["--datasets", "spirals"], "unknown dataset 'spirals'"),
    (["--seeds", "0"], "--seeds must be a positive integer"),
    (["--scales", "0.1,abc"], "--scales must be comma-separated numbers"),
    (["--scales", "-1"], "--scales must be positive"),
])
def test_bad_arguments_exit_2_without_output(tmp_path, capsys, argv, message):
    out = tmp_path / "never"
    assert _cli().main(["--out", str(out), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_missing_out_is_an_argparse_error(capsys):
    assert _cli().main([]) == 2


def test_calibrated_clock_replaces_the_runs_own():
    runs = [_run("sgd-constant", 0.1, 0, 0.5, 1.0, secs=9.0), _run("md-lr", 0.05, 0, 0.6, 0.4, secs=30.0),
            _run("adam", 0.01, 0, 0.6, 0.4)]
    cal = {"seconds_per_update": {"moons": {"sgd-constant": 0.01, "md-lr": 0.02}}, "pilot_seconds": {"moons": 1.5}}
    out = {r["family"]: r for r in ns.calibrated_times(runs, cal)}
    assert set(out) == {"sgd-constant", "md-lr"}                      # adam has no calibration: left out
    assert out["sgd-constant"]["wall_seconds"] == pytest.approx(12 * 0.01)
    assert out["md-lr"]["curves"]["seconds"] == pytest.approx([1.5, 1.5 + 6 * 0.02, 1.5 + 12 * 0.02])
    assert out["md-lr"]["measured_wall_seconds"] == 30.0
    agg = ns.aggregate(runs, calibration=cal)
    assert agg["time_axis"] == "calibrated"
    assert agg["datasets"]["moons"]["budget_seconds"] == pytest.approx(0.12)   # the sgd-constant run's time


@pytest.mark.parametrize("folder", ["neural_study", "neural_study_long"])
def test_committed_summary_is_the_aggregate_of_the_committed_runs(folder):
    """benchmarks/results/<folder>: summary.json (what the report and the README quote) is recomputed from
    the run files and the calibration; the table keeps seed SE and fixed-path SE apart."""
    out = ROOT / "benchmarks" / "results" / folder
    if not (out / "summary.json").exists():
        pytest.skip("no committed study results")
    committed = ns.revive(json.loads((out / "summary.json").read_text()))
    runs = ns.load_runs(out)
    cal = json.loads((out / "calibration.json").read_text()) if (out / "calibration.json").exists() else None
    agg = ns.aggregate(runs, None, cal)
    assert committed["n_runs"] == len(runs)
    for ds, res in agg["datasets"].items():
        assert committed["datasets"][ds]["budget_seconds"] == pytest.approx(res["budget_seconds"], rel=1e-12)
        for mode in ("equal_updates", "equal_wall_time"):
            for f in ns.FAMILIES:
                if f not in res[mode]:
                    continue
                mine = [(p["scale"], p["gap"], p["excess_work"]) for p in res[mode][f]["points"]]
                theirs = [(p["scale"], p["gap"], p["excess_work"])
                          for p in committed["datasets"][ds][mode][f]["points"]]
                assert np.allclose(np.array(mine, float), np.array(theirs, float), rtol=1e-12, equal_nan=True)


def _pt(family, scale, gap, n_seeds=3, n_diverged=0):
    return {"family": family, "scale": scale, "gap": gap, "n_seeds": n_seeds, "n_diverged": n_diverged}


def _source(tmp_path, settings):
    """A small synthetic finished study: its summary.json only."""
    pts = {"adam": [_pt("adam", 1e-3, 0.5), _pt("adam", 2e-3, 0.3), _pt("adam", 3e-3, 0.1, 2, 1)],
           "md-lr": [_pt("md-lr", 0.01, 0.9), _pt("md-lr", 0.02, 0.8), _pt("md-lr", 0.05, None, 0, 3)],
           "natural-diag": [_pt("natural-diag", 0.1, None, 0, 3)]}
    summary = {"settings": settings.fingerprint(),
               "datasets": {"moons": {"equal_updates": {f: {"points": p} for f, p in pts.items()}}}}
    src = tmp_path / "short"
    src.mkdir()
    (src / "summary.json").write_text(json.dumps(summary))
    return src


def test_best_from_picks_the_lowest_gap_among_scales_without_divergence(tmp_path):
    summary = json.loads((_source(tmp_path, TINY) / "summary.json").read_text())
    # adam 3e-3 has the lowest gap but one seed diverged; natural-diag has no finished scale; sgd none at all
    assert ns.best_scales(summary, "moons", ["adam", "md-lr", "natural-diag", "sgd-constant"]) == {
        "adam": (2e-3,), "md-lr": (0.02,)}
    assert ns.best_scales(summary, "moons", ["adam", "md-lr"], n=3) == {"adam": (2e-3, 1e-3), "md-lr": (0.02, 0.01)}
    with pytest.raises(InputError, match="no 'checkerboard' runs"):
        ns.best_scales(summary, "checkerboard", ["adam"])


def test_best_from_refuses_to_mix_folders(tmp_path, capsys):
    cli = _cli()
    src = _source(tmp_path, ns.with_settings(ns.QUICK, n_updates=6, n_chains=16))
    base = ["--best-from", str(src), "--datasets", "moons", "--families", "adam,md-lr", "--seeds", "1", "--quick",
            "--chains", "16", "--aggregate-only", "--no-figures"]
    assert cli.main(["--out", str(src), *base, "--updates", "9"]) == 2             # the source folder itself
    assert "their own folder" in capsys.readouterr().err
    assert cli.main(["--out", str(tmp_path / "a"), *base, "--updates", "6"]) == 2  # the source's settings
    assert "source study's settings" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
    assert cli.main(["--out", str(tmp_path / "b"), *base, "--updates", "9"]) == 0
    sel = json.loads((tmp_path / "b" / "selection.json").read_text())
    assert sel["scales"] == ["moons/adam/0.002", "moons/md-lr/0.02"] and sel["updates"] == 9
    capsys.readouterr()
    assert cli.main(["--out", str(tmp_path / "b"), *base, "--updates", "12"]) == 2  # another length, same folder
    assert "another selection" in capsys.readouterr().err
    assert cli.main(["--out", str(tmp_path / "b"), *base, "--updates", "9", "--n-best", "2"]) == 0  # more scales: added
    assert json.loads((tmp_path / "b" / "selection.json").read_text())["scales"] == [
        "moons/adam/0.001", "moons/adam/0.002", "moons/md-lr/0.01", "moons/md-lr/0.02"]
    assert cli.main(["--out", str(tmp_path / "c"), *base, "--updates", "9", "--scales", "0.1"]) == 2
