"""`mindiss bench` and the torchebm peer script: they run and report their keys (no timing assertions)."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASE_KEYS = {"case", "n_chains", "n_steps", "dim", "dtype", "variants", "ratios", "targets", "target",
             "meets_target", "load_average"}
#: the variants each case must time (torchebm where installed, compiled where torch.compile is: optional)
CASE_VARIANTS = {"trap": {"bare_free", "bare", "library", "fused"},
                 "double_well": {"bare_free", "bare", "library", "fused"},
                 "mlp": {"bare_free", "bare", "library"}, "overhead": {"library", "setup"}}
VARIANT_KEYS = {"s", "s_min_max", "msteps_per_s", "us_per_update", "value", "bytes_per_chain"}


def test_bench_quick_json_keys(run_cli, monkeypatch):
    """--quick --json prints one object with every configuration, float32 and float64; every row has its
    variants, ratios and load average; the library (default and fused) and the same-ledger bare loop draw
    the same numbers (same mean work up to float rounding)."""
    from mindiss.app import bench

    # the smoke test shrinks the configurations further (the timing code path is unchanged) and leaves
    # the compiled variant out (compiling takes ~20 s; tests/test_compiled.py covers it)
    small = [(c, label, dict(kw, n_steps=min(kw["n_steps"], 10), **({"n_chains": min(kw["n_chains"], 2000)}
                                                                     if "n_chains" in kw else {}),
                             **({"compiled": False} if c == "mlp" else {})))
             for c, label, kw in bench._configs(True)]
    monkeypatch.setattr(bench, "_configs", lambda quick: small)
    code, out, _ = run_cli("bench", "--quick", "--json", "--repeats", "1", "--no-memory")
    assert code == 0
    res = json.loads(out)
    for key in ("device", "torch", "threads", "repeats", "memory_method", "cases", "load_average", "variants"):
        assert key in res
    assert res["quick"] is True
    assert {(r["case"], r["dtype"]) for r in res["cases"]} == {
        (c, d) for c in ("trap", "double_well", "mlp") for d in ("float32", "float64")} | {("overhead", "float32")}
    backends = {r["kwargs"]["backend"] for r in res["cases"] if r["case"] == "overhead"}
    assert backends == {"particles", "moments", "fokker_planck"}
    for r in res["cases"]:
        assert CASE_KEYS <= set(r), r["case"]
        assert CASE_VARIANTS[r["case"]] <= set(r["variants"]), r["case"]
        assert len(r["load_average"]) == 3
        for name, v in r["variants"].items():
            assert VARIANT_KEYS <= set(v)
            assert v["msteps_per_s"] > 0 and v["bytes_per_chain"] is None   # --no-memory
        if r["case"] == "overhead":
            assert r["targets"] == [] and "us_per_update" in r["variants"]["library"]
            continue
        assert {"library/bare", "library/bare_free"} <= set(r["ratios"])
        assert r["variants"]["bare_free"]["value"] is None   # no ledger, no work
        bare = r["variants"]["bare"]["value"]
        for name in ("library", "fused"):
            if name in r["variants"]:
                assert r["variants"][name]["value"] == pytest.approx(bare, rel=1e-4, abs=1e-6), (r["case"], name)
        if r["case"] == "trap" and r["dtype"] == "float32" and importlib.util.find_spec("torchebm"):
            assert "torchebm" in r["variants"] and "fused/torchebm" in r["ratios"]
        assert [t["ratio"] for t in r["targets"]] == [k for k, _ in bench.CASE_TARGETS[r["case"]]]


def test_bench_format_table_lists_every_row():
    from mindiss.app import bench

    row = bench._row("trap", "trap", dict(n_chains=10, dim=1, n_steps=2), "float32",
                     {"times": {"bare_free": [1.0], "bare": [2.0], "library": [2.0], "fused": [1.5]},
                      "values": {"bare_free": float("nan"), "bare": 1.0, "library": 1.0, "fused": 1.0}})
    assert row["ratios"]["fused/bare_free"] == pytest.approx(1 / 1.5)
    assert row["ratios"]["library/bare"] == pytest.approx(1.0)
    assert [t["met"] for t in row["targets"]] == [True, True, True]
    table = bench.format_table({"cases": [row]})
    assert table.count("\n") == 3 and "fused/bare_free 0.67" in table


def test_memory_per_chain_subprocess():
    """Peak memory per chain comes back from a fresh subprocess as a finite number of bytes."""
    from mindiss.app import bench

    got = bench.memory_per_chain([("trap", dict(n_chains=2000, dim=1, n_steps=3), "float32", which)
                                  for which in ("library", "fused")])
    assert all(0 <= g < 1e6 for g in got)


def test_bench_cli_quick_configs_shrink():
    from mindiss.app import bench

    full, quick = bench._configs(False), bench._configs(True)
    full = [r for r in full if r[0] != "overhead"]
    quick = [r for r in quick if r[0] != "overhead"]
    assert [kw["n_chains"] for _, _, kw in full] == [100_000, 10_000, 10_000, 4096, 4096]
    assert [kw["n_steps"] for _, _, kw in full] == [1000, 10_000, 10_000, 200, 200]
    assert all(q[2]["n_steps"] < f[2]["n_steps"] for q, f in zip(quick, full))
    fixed = [r for r in bench._configs(False) if r[0] == "overhead"]
    assert {kw["backend"] for _, _, kw in fixed} == {"particles", "moments", "fokker_planck"}
    assert all(kw.get("n_chains", 1) <= 2 for _, _, kw in fixed)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_bench_cuda_unavailable_exit_2(run_cli):
    code, out, err = run_cli("bench", "--device", "cuda", "--quick", "--json")
    assert code == 2
    assert "CUDA is not available" in err
    assert out == ""


@pytest.mark.parametrize("args", [("--device", "tpu"), ("--dtype", "float16"), ("--case", "ising")])
def test_bench_bad_option_exit_2(run_cli, args):
    code, _, err = run_cli("bench", *args)
    assert code == 2 and "error" in err


@pytest.mark.skipif(importlib.util.find_spec("torchebm") is None, reason="torchebm not installed")
def test_torchebm_peer_tiny_config():
    """The peer script runs mindiss, the bare loop and torchebm on a tiny problem; all three end at
    the same theta (same problem, same learning rate; the chains differ only in their noise)."""
    script = os.path.join(ROOT, "benchmarks", "peers", "torchebm_pcd.py")
    proc = subprocess.run([sys.executable, script, "--configs", "2000x1x10,1000x2x10", "--repeats", "1",
                           "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["torchebm"]
    for row in res["configs"]:
        assert set(row["msteps_per_s"]) == {"mindiss", "bare", "torchebm"}
        assert set(row["ratios"]) == {"mindiss/bare", "mindiss/torchebm", "torchebm/bare"}
        finals = list(row["final"].values())
        assert max(finals) - min(finals) < 0.01   # theta moves by ~5e-2; chain noise ~ 1e-3
