"""`mindiss bench` and the torchebm peer script: they run and report their keys (no timing assertions)."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASE_KEYS = {"case", "n_chains", "n_steps", "dim", "dtype", "library_s", "bare_s", "library_msteps_per_s",
             "bare_msteps_per_s", "ratio", "target", "meets_target", "library_bytes_per_chain",
             "bare_bytes_per_chain", "work_library", "work_bare"}


def test_bench_quick_json_keys(run_cli, monkeypatch):
    """--quick --json prints one object with every configuration, float32 and float64; the library and
    the bare loop draw the same numbers (same mean work up to float32 rounding)."""
    from mindiss.app import bench

    # the smoke test shrinks the configurations further (the timing code path is unchanged)
    small = [(c, label, dict(kw, n_chains=min(kw["n_chains"], 2000), n_steps=min(kw["n_steps"], 10)))
             for c, label, kw in bench._configs(True)]
    monkeypatch.setattr(bench, "_configs", lambda quick: small)
    code, out, _ = run_cli("bench", "--quick", "--json", "--repeats", "1", "--no-memory")
    assert code == 0
    res = json.loads(out)
    for key in ("device", "torch", "threads", "repeats", "memory_method", "cases", "load_average"):
        assert key in res
    assert res["quick"] is True
    assert {(r["case"], r["dtype"]) for r in res["cases"]} == {
        (c, d) for c in ("trap", "double_well", "mlp") for d in ("float32", "float64")}
    for r in res["cases"]:
        assert CASE_KEYS <= set(r)
        assert r["library_msteps_per_s"] > 0 and r["bare_msteps_per_s"] > 0
        assert r["work_library"] == pytest.approx(r["work_bare"], rel=1e-4, abs=1e-6)
        assert r["library_bytes_per_chain"] is None   # --no-memory


def test_memory_per_chain_subprocess():
    """Peak memory per chain comes back from a fresh subprocess as a finite number of bytes."""
    from mindiss.app import bench

    (got,) = bench.memory_per_chain([("trap", dict(n_chains=2000, dim=1, n_steps=3), "float32", "library")])
    assert got >= 0 and got < 1e6


def test_bench_cli_quick_configs_shrink():
    from mindiss.app import bench

    full, quick = bench._configs(False), bench._configs(True)
    assert [kw["n_chains"] for _, _, kw in full] == [100_000, 10_000, 10_000, 4096, 4096]
    assert [kw["n_steps"] for _, _, kw in full] == [1000, 10_000, 10_000, 200, 200]
    assert all(q[2]["n_steps"] < f[2]["n_steps"] for q, f in zip(quick, full))


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
