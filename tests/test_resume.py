"""Runs that never lose work: kill or interrupt `mindiss train`, resume, get the same bytes."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import mindiss as md
from mindiss.core import checkpoint as ckpt
from mindiss.errors import InputError

EXE = os.path.join(os.path.dirname(sys.executable), "mindiss")
CONFIG = """
[energy]
variance = 0.5
theta0 = -0.4
[data]
mean = 1.7
[dynamics]
mobility = 1.3
duration = 2.0
n_steps = 1000
n_chains = 10000
n_replicas = 3
seed = 11
[output]
checkpoint_every = 50
"""


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of the same config."""
    root = tmp_path_factory.mktemp("ref")
    (root / "run.toml").write_text(CONFIG)
    proc = subprocess.run([EXE, "train", str(root / "run.toml"), "--out", str(root / "run"), "--quiet", "--json"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return root / "run"


def _start(cfg, out):
    return subprocess.Popen([EXE, "train", str(cfg), "--out", str(out), "--quiet", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_checkpoint(out: Path, proc, min_age_updates=True, timeout=300):
    """Wait until a mid-run checkpoint exists (and the run is still going)."""
    start = time.time()
    ck = out / "checkpoint"
    while time.time() - start < timeout:
        if ckpt.exists(ck):
            try:
                state = ckpt.load(ck, None)
            except InputError:   # read while the run was adding a file: look again
                continue
            if state["completed"] or (state["run"] is not None and state["run"]["k"] >= 100):
                return state
        if proc.poll() is not None:
            pytest.fail(f"run ended before a checkpoint: {proc.stderr.read()}")
        time.sleep(0.05)
    pytest.fail("no checkpoint written in time")


def _resume(cfg, out):
    return subprocess.run([EXE, "train", str(cfg), "--out", str(out), "--resume", "--quiet", "--json"],
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("how", ["SIGKILL", "SIGINT"])
def test_kill_and_resume_is_bit_identical(tmp_path, reference, how):
    cfg = tmp_path / "run.toml"
    cfg.write_text(CONFIG)
    out = tmp_path / "run"
    proc = _start(cfg, out)
    _wait_for_checkpoint(out, proc)
    proc.send_signal(getattr(signal, how))
    proc.wait(timeout=120)
    if how == "SIGKILL":
        assert proc.returncode == -signal.SIGKILL
    else:
        assert proc.returncode == 130, proc.stderr.read()
        assert "--resume" in proc.stderr.read()
    assert not (out / "result.json").exists()
    if how == "SIGINT":   # caught: the run ends its writes (after SIGKILL see test_stale_tmp_files_are_cleaned)
        assert not list(out.rglob(".*.tmp"))
    done = _resume(cfg, out)
    assert done.returncode == 0, done.stderr
    assert (out / "result.json").read_bytes() == (reference / "result.json").read_bytes()
    assert (out / "history.csv").read_bytes() == (reference / "history.csv").read_bytes()
    assert json.loads(done.stdout) == json.loads((reference / "result.json").read_text())


def test_resume_refuses_other_config(tmp_path, reference):
    cfg = tmp_path / "other.toml"
    cfg.write_text(CONFIG.replace("seed = 11", "seed = 12"))
    import shutil

    shutil.copytree(reference, tmp_path / "run")
    (tmp_path / "run" / "result.json").unlink()
    done = _resume(cfg, tmp_path / "run")
    assert done.returncode == 2 and "different configuration" in done.stderr
    assert not (tmp_path / "run" / "result.json").exists()


def test_resume_without_checkpoint_is_bad_input(tmp_path, run_cli):
    cfg = tmp_path / "run.toml"
    cfg.write_text(CONFIG)
    code, out, err = run_cli("train", cfg, "--out", tmp_path / "nothing", "--resume")
    assert code == 2 and "no checkpoint" in err


def test_finished_run_dir_is_not_overwritten(tmp_path, reference, run_cli):
    code, _, err = run_cli("train", "--out", reference, "--quiet")
    assert code == 2 and "already holds a finished run" in err


def test_run_dir_contents(reference):
    names = {p.relative_to(reference).as_posix() for p in reference.rglob("*")}
    assert {"config.toml", "checkpoint/run.safetensors", "checkpoint/replica-000000.safetensors", "result.json", "history.csv", "run.log",
            "figures/training.png", "figures/training.svg"} <= names
    assert "finished" in (reference / "run.log").read_text()


def test_divergence_keeps_a_usable_checkpoint(tmp_path):
    """Euler-Maruyama with mu dt / s = 2.5 (far above the relaxation time) blows up."""
    cfg = tmp_path / "blowup.toml"
    cfg.write_text('[schedule]\nkind = "constant"\nscale = 0.1\n[dynamics]\nsampler = "euler"\nn_steps = 100\n'
                   'duration = 250.0\nn_chains = 1000\nn_replicas = 1\n[output]\ncheckpoint_every = 10\n')
    out = tmp_path / "run"
    first = subprocess.run([EXE, "train", str(cfg), "--out", str(out), "--quiet"], capture_output=True, text=True)
    assert first.returncode == 3
    assert "diverged at update" in first.stderr and "Euler-Maruyama step is too large" in first.stderr
    assert "checkpoint" in first.stderr
    update = int(first.stderr.split("diverged at update ")[1].split(":")[0])
    ck = ckpt.load(out / "checkpoint", None)
    assert 0 < ck["run"]["k"] < update and ck["run"]["k"] % 10 == 0
    assert bool(torch.isfinite(ck["run"]["chains"]["x"]).all())
    # the checkpoint is usable: resuming replays the same deterministic blow-up at the same update
    again = _resume(cfg, out)
    assert again.returncode == 3 and f"diverged at update {update}:" in again.stderr
    assert not (out / "result.json").exists()


def test_api_interrupt_and_resume(tmp_path):
    energy = md.HarmonicTrap(1.0)
    kw = dict(schedule=md.schedules.optimal_harmonic(1, 1, 1), theta0=[0.0], n_steps=120, n_chains=2000,
              n_replicas=2, seed=3, sampler="mala")
    ref = md.train(energy, md.data.Gaussian(5, 1), **kw)
    calls = []
    with pytest.raises(md.Interrupted):
        md.train(energy, md.data.Gaussian(5, 1), **kw, checkpoint=tmp_path / "ck.pt", checkpoint_every=25,
                 stop=lambda: calls.append(1) or len(calls) == 170)
    res = md.train(energy, md.data.Gaussian(5, 1), **kw, checkpoint=tmp_path / "ck.pt", resume=True)
    assert json.dumps(res.to_dict(), sort_keys=True) == json.dumps(ref.to_dict(), sort_keys=True)
    assert res.acceptance_rate == ref.acceptance_rate


def test_stale_tmp_files_are_cleaned(tmp_path, reference):
    """Deterministic replacement of "no .tmp after SIGKILL" (SIGKILL cannot be caught, so a kill
    between write and rename may leave one): plant the temporary files such a kill leaves (the
    names ``io.atomic_write_bytes`` uses) in every folder a run writes, then ``--resume`` must
    remove them and still finish byte-identical to the uninterrupted run."""
    import shutil

    cfg = tmp_path / "run.toml"
    cfg.write_text(CONFIG)
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    (out / "result.json").unlink()
    planted = [out / ".result.json.ab12cd34.tmp", out / ".history.csv.x_y9z8w7.tmp",
               out / "figures" / ".training.png.q1w2e3r4.tmp", out / "checkpoint" / ".run.safetensors.a1b2c3d4.tmp"]
    for p in planted:
        p.write_bytes(b"half-written")
    done = _resume(cfg, out)
    assert done.returncode == 0, done.stderr
    assert not [p for p in planted if p.exists()]
    assert not list(out.rglob(".*.tmp"))
    assert (out / "result.json").read_bytes() == (reference / "result.json").read_bytes()


def test_new_run_into_an_interrupted_run_needs_overwrite(tmp_path, reference, run_cli):
    """Class 12: a new run (no --resume) into a directory holding a checkpoint is refused; --overwrite
    discards the earlier run first."""
    import shutil

    cfg = tmp_path / "run.toml"
    cfg.write_text(CONFIG.replace("n_steps = 1000", "n_steps = 20").replace("n_replicas = 3", "n_replicas = 1"))
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    (out / "result.json").unlink()
    code, _, err = run_cli("train", cfg, "--out", out, "--quiet")
    assert code == 2 and "interrupted run" in err and "--overwrite" in err and str(out) in err
    assert (out / "checkpoint" / "run.safetensors").is_file()
    code, _, err = run_cli("train", cfg, "--out", out, "--quiet", "--overwrite", "--json")
    assert code == 0, err
    assert json.loads((out / "result.json").read_text())["n_updates"] == 22
