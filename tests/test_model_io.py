"""Keep and use a trained network: mindiss train writes the model (safetensors + JSON), summaries
instead of weight columns, the held-out NLL against the true density; mindiss sample draws from it.
The slow test trains the shipped moons example and compares its samples with held-out data by an
MMD written here (independent of the library)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mindiss.data import toy as D
from mindiss.app import model_io
from mindiss.estimators.evaluate import grid_log_partition

F64 = torch.float64
ROOT = Path(__file__).resolve().parents[1]
TINY = """
[energy]
kind = "mlp"
hidden = [16, 16]
activation = "silu"
confinement = 0.1
init_seed = 0
[data]
kind = "moons"
n = 500
seed = 0
[schedule]
kind = "constant"
scale = 0.01
preconditioner = "adam"
[dynamics]
duration = 4.0
n_steps = 20
sampler = "mala"
n_chains = 256
n_replicas = 2
seed = 0
[output]
record_every = 10
"""


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from typer.testing import CliRunner

    from mindiss.app.cli import app

    d = tmp_path_factory.mktemp("tiny")
    cfg = d / "tiny.toml"
    cfg.write_text(TINY)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    res = CliRunner().invoke(app, ["train", str(cfg), "--out", str(d / "run"), "--quiet"], catch_exceptions=False)
    torch.set_num_threads(n)
    assert res.exit_code == 0, res.stderr
    return d / "run"


def test_train_writes_model_summaries_and_held_out_nll(tiny_run):
    """model files, no weight columns in history.csv / result.json, the toy evaluation fields; the
    saved theta rebuilds an energy whose test NLL (quadrature recomputed here) equals test_nll."""
    for f in ("model.safetensors", "model.json", "figures/density.png", "history.csv", "result.json"):
        assert (tiny_run / f).is_file(), f
    header = (tiny_run / "history.csv").read_text().splitlines()[0].split(",")
    assert not [c for c in header if c.startswith("theta_") and c[6:].isdigit()]
    assert {"theta_norm", "update_norm", "norm_0.weight", "loss_true", "excess_work"} <= set(header)
    r = json.loads((tiny_run / "result.json").read_text())
    assert "theta_final" not in r and "replica_theta_final" not in r
    assert r["theta_summary"]["n_params"] == 337
    for k in ("test_nll", "true_density_nll", "test_nll_gap", "test_nll_quadrature_error", "true_density_error"):
        assert isinstance(r[k], float), k
    assert r["test_nll_quadrature_error"] < 1e-4 and r["true_density_error"] < 1e-4
    assert abs(r["test_nll_gap"] - (r["test_nll"] - r["true_density_nll"])) < 1e-12
    m = model_io.load_model(tiny_run)
    assert m.chains.shape == (256, 2)
    x = D.toy("moons", model_io.N_HELD_OUT, gen=r["held_out_seed"])
    q = grid_log_partition(m.energy, m.theta, box=[(-19, 19), (-19, 19)], n=513)
    nll0 = float(m.energy.energy(x.float(), m.theta).mean()) + q.log_partition
    assert abs(nll0 - r["replica_test_nll"][0]) < 1e-4
    assert abs(r["theta_summary"]["replica_final"][0]["theta_norm"] - float(m.theta.norm())) < 1e-12


def test_sample_is_seeded_and_bad_input_exits_2(tiny_run, run_cli, tmp_path):
    out1, out2, out3 = tmp_path / "a.npy", tmp_path / "b.npy", tmp_path / "c.npy"
    assert run_cli("sample", tiny_run, "--n", 300, "--out", out1, "--seed", 4, "--steps", 5)[0] == 0
    assert run_cli("sample", tiny_run, "--n", 300, "--out", out2, "--seed", 4, "--steps", 5)[0] == 0
    assert run_cli("sample", tiny_run, "--n", 300, "--out", out3, "--seed", 5, "--steps", 5)[0] == 0
    a, b, c = np.load(out1), np.load(out2), np.load(out3)
    assert a.shape == (300, 2) and a.dtype == np.float64 and np.array_equal(a, b) and not np.array_equal(a, c)
    code, _, err = run_cli("sample", tiny_run, "--n", 20, "--out", tmp_path / "d.npy", "--from-scratch",
                           "--steps", 3)
    assert code == 0 and "from scratch" in err
    for args, msg in ((["--n", 0], "--n"), (["--n", 3, "--out", tmp_path / "x.txt"], ".npy"),
                      (["--n", 3, "--steps", -1], "steps")):
        code, _, err = run_cli("sample", tiny_run, *args)
        assert code == 2 and msg in err and "Traceback" not in err
    code, _, err = run_cli("sample", tmp_path, "--n", 3)
    assert code == 2 and "no trained model" in err
    assert not (tmp_path / "x.txt").exists()


def test_load_model_refuses_a_foreign_or_damaged_file(tiny_run, tmp_path):
    import shutil

    from mindiss.errors import InputError

    d = tmp_path / "copy"
    shutil.copytree(tiny_run, d)
    (d / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(InputError, match="cannot read"):
        model_io.load_model(d)
    shutil.copy(tiny_run / "model.safetensors", d / "model.safetensors")
    meta = json.loads((d / "model.json").read_text())
    meta["energy"]["kind"] = "harmonic"
    (d / "model.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="not a network"):
        model_io.load_model(d)


def mmd(x, y, bandwidth):
    """Biased (V-statistic) MMD with a Gaussian kernel exp(-|a - b|^2 / (2 bw^2)), in NumPy: positive,
    with a finite-sample floor ~ 1/sqrt(n) that two halves of the same data show too."""
    def k(a, b):
        d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        return np.exp(-d2 / (2 * bandwidth ** 2))
    return math.sqrt(max(k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean(), 0.0))


@pytest.mark.slow
def test_moons_example_samples_are_as_close_to_held_out_data_as_its_two_halves(run_cli, tmp_path):
    """Train examples/moons_mlp.toml, draw 2,000 samples with mindiss sample; their MMD to 2,000
    held-out draws is within 2x the MMD between two held-out halves of 2,000 (bandwidth 0.2, the
    data's noise scale; the biased MMD, averaged over 3 independent held-out sets)."""
    run = tmp_path / "run"
    code, _, err = run_cli("train", ROOT / "examples" / "moons_mlp.toml", "--out", run, "--quiet")
    assert code == 0, err
    code, _, err = run_cli("sample", run, "--n", 2000, "--out", tmp_path / "s.npy", "--seed", 1)
    assert code == 0, err
    s = np.load(tmp_path / "s.npy")
    model_mmd, halves_mmd = [], []
    for seed in (101, 202, 303):
        held = D.toy("moons", 6000, gen=seed).numpy()
        model_mmd.append(mmd(s, held[:2000], 0.2))
        halves_mmd.append(mmd(held[2000:4000], held[4000:], 0.2))
    assert np.mean(model_mmd) <= 2 * np.mean(halves_mmd), (model_mmd, halves_mmd)
