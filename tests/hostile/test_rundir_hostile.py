"""Hostile run directories (issue 16, classes 3, 4, 7 and 12): the lock, OS errors, true divergence
messages, stale temporary files, interrupted runs and empty paths. Every case ends with exit 0 or
exit 2/3 and a one-line message naming the problem; the CLI runs in-process, so a traceback fails
the test."""
import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import mindiss as md
from mindiss import io as mio

TINY = "[dynamics]\nn_steps = 20\nn_chains = 200\nn_replicas = 2\n[output]\ncheckpoint_every = 5\n"
ENV = {**os.environ, "PYTHONPATH": str(Path(md.__file__).resolve().parents[1])}


@pytest.fixture
def cfg(tmp_path):
    p = tmp_path / "run.toml"
    p.write_text(TINY)
    return p


def _one_line(err: str) -> bool:
    return len([line for line in err.splitlines() if line.strip()]) == 1 and "Traceback" not in err


# ---------------------------------------------------------------- class 3: the lock

def _holder(out: Path):
    """Another process holding the run directory's lock (as a running `mindiss train` does)."""
    code = ("import sys, os, time; from filelock import FileLock; l = FileLock(sys.argv[1] + '/.mindiss.lock'); "
            "l.acquire(); open(sys.argv[1] + '/.mindiss.pid', 'w').write(str(os.getpid())); print('held', flush=True); "
            "time.sleep(600)")
    out.mkdir(exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True, env=ENV)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_run_into_a_locked_directory_exits_2_with_the_pid(tmp_path, cfg, run_cli):
    out = tmp_path / "run"
    holder = _holder(out)
    try:
        code, _, err = run_cli("train", cfg, "--out", out, "--quiet")
        assert code == 2 and _one_line(err)
        assert str(out) in err and f"PID {holder.pid}" in err
        assert not (out / "config.toml").exists() and not (out / "result.json").exists()
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_runs_lock_does_not_block_resume(tmp_path, cfg, run_cli):
    """The lock is an OS lock: SIGKILL of its holder releases it; the stale pid file is harmless."""
    out = tmp_path / "run"
    first = subprocess.run([sys.executable, "-m", "mindiss.app.cli", "train", str(cfg), "--out", str(out), "--quiet"],
                           capture_output=True, text=True, env=ENV)
    assert first.returncode == 0, first.stderr
    (out / "result.json").unlink()
    holder = _holder(out)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (out / ".mindiss.pid").exists()
    code, _, err = run_cli("train", cfg, "--out", out, "--quiet", "--resume")
    assert code == 0, err
    assert (out / "result.json").exists()


# ---------------------------------------------------------------- class 4: OS errors

def test_unwritable_parent_exits_2_naming_the_path(tmp_path, cfg, run_cli, monkeypatch):
    """A read-only parent (simulated: this suite may run as root, whom permissions do not stop)."""
    real = Path.mkdir

    def mkdir(self, *a, **k):
        if self.name == "run":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    code, _, err = run_cli("train", cfg, "--out", tmp_path / "ro" / "run", "--quiet")
    assert code == 2 and _one_line(err) and "Permission denied" in err and "ro/run" in err


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_out_for_real(tmp_path, cfg, run_cli):
    out = tmp_path / "run"
    out.mkdir()
    out.chmod(0o500)
    try:
        code, _, err = run_cli("train", cfg, "--out", out, "--quiet")
        assert code == 2 and _one_line(err) and str(out) in err
    finally:
        out.chmod(0o700)


def test_full_disk_exits_2_and_leaves_no_partial_file(tmp_path, cfg, run_cli, monkeypatch):
    """ENOSPC at the n-th atomic write (simulated at fsync): exit 2, the path and the OS reason,
    the checkpoint that exists is named, and no temporary or partial file is left."""
    real = os.fsync
    count = []

    def fsync(fd):
        count.append(1)
        if len(count) == 6:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(mio.os, "fsync", fsync)
    out = tmp_path / "run"
    code, _, err = run_cli("train", cfg, "--out", out, "--quiet")
    assert code == 2 and _one_line(err) and "No space left on device" in err and str(out) in err
    assert "checkpoint" in err
    assert not list(out.rglob(".*.tmp"))
    assert not (out / "result.json").exists()


def test_dangling_symlink_as_out(tmp_path, cfg, run_cli):
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "nowhere")
    code, _, err = run_cli("train", cfg, "--out", link, "--quiet")
    assert code == 2 and _one_line(err) and "dangling symbolic link" in err and str(link) in err
    assert not (tmp_path / "nowhere").exists()


def test_schedule_out_a_directory(tmp_path, run_cli):
    code, out, err = run_cli("schedule", "harmonic", "--variance", 1, "--mobility", 1, "--duration", 1, "--steps", 3,
                             "--out", tmp_path)
    assert code == 2 and _one_line(err) and "is a directory" in err and str(tmp_path) in err
    assert not list(tmp_path.iterdir())


def test_schedule_out_unwritable(tmp_path, run_cli, monkeypatch):
    def mkstemp(*a, **k):
        raise PermissionError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(mio.tempfile, "mkstemp", mkstemp)
    code, out, err = run_cli("schedule", "harmonic", "--variance", 1, "--mobility", 1, "--duration", 1, "--steps", 3,
                             "--out", tmp_path / "s.csv")
    assert code == 2 and _one_line(err) and "Read-only file system" in err and "s.csv" in err


def test_reproduce_checks_its_output_before_running(tmp_path, run_cli, monkeypatch):
    """An unwritable report folder is refused before any experiment runs (simulated EACCES)."""
    from mindiss.app import report

    ran = []
    monkeypatch.setattr(report, "run_experiment", lambda *a, **k: ran.append(1))

    def mkdtemp(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr("tempfile.mkdtemp", mkdtemp)
    code, _, err = run_cli("reproduce", "--out", tmp_path / "rep", "--quick", "--quiet", "--only", "exact_optima")
    assert code == 2 and _one_line(err) and "Permission denied" in err and "rep" in err
    assert not ran


# ---------------------------------------------------------------- class 7: divergence messages

BLOWUP = ('[schedule]\nkind = "constant"\nscale = 0.1\n[dynamics]\nsampler = "euler"\nn_steps = 100\n'
          'duration = 250.0\nn_chains = 1000\nn_replicas = 1\n[output]\ncheckpoint_every = {}\n')


def test_divergence_before_any_checkpoint_says_none_exists(tmp_path, run_cli):
    cfg = tmp_path / "b.toml"
    cfg.write_text(BLOWUP.format(0))
    out = tmp_path / "run"
    code, _, err = run_cli("train", cfg, "--out", out, "--quiet")
    assert code == 3 and "diverged at update" in err
    assert "No checkpoint was written" in err and not (out / "checkpoint" / "run.safetensors").exists()


def test_divergence_after_checkpoints_names_the_kept_one(tmp_path, run_cli):
    cfg = tmp_path / "b.toml"
    cfg.write_text(BLOWUP.format(10))
    out = tmp_path / "run"
    code, _, err = run_cli("train", cfg, "--out", out, "--quiet")
    assert code == 3
    from mindiss.core import checkpoint as ckpt

    k = ckpt.load(out / "checkpoint", None)["run"]["k"]
    assert f"replica 0 at update {k}" in err and str(out / "checkpoint") in err


# ---------------------------------------------------------------- class 12: small ones

def test_empty_out_is_an_error(cfg, run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli("train", cfg, "--out", "", "--quiet")
    assert code == 2 and _one_line(err) and "empty" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.toml"]
    code, _, err = run_cli("reproduce", "--out", "", "--quiet")
    assert code == 2 and "empty" in err


def test_stale_tmp_files_are_removed_by_the_next_run(tmp_path, cfg, run_cli):
    """A fresh run (--overwrite) removes the temporary files a killed run left (see also
    tests/test_resume.py::test_stale_tmp_files_are_cleaned for --resume)."""
    out = tmp_path / "run"
    code, _, err = run_cli("train", cfg, "--out", out, "--quiet")
    assert code == 0, err
    planted = [out / ".config.toml.k1l2m3n4.tmp", out / "checkpoint" / ".replica-000000.safetensors.zz99yy88.tmp"]
    for p in planted:
        p.write_bytes(b"x")
    keep = out / ".notes.tmp"   # not a name atomic writes use: left alone
    keep.write_bytes(b"mine")
    code, _, err = run_cli("train", cfg, "--out", out, "--quiet", "--overwrite")
    assert code == 0, err
    assert not any(p.exists() for p in planted) and keep.exists()


def test_interrupted_checkpoint_is_not_silently_discarded(tmp_path, cfg, run_cli):
    out = tmp_path / "run"
    code, _, err = run_cli("train", cfg, "--out", out, "--quiet")
    assert code == 0
    (out / "result.json").unlink()
    before = {p.name: p.read_bytes() for p in (out / "checkpoint").iterdir()}
    code, _, err = run_cli("train", cfg, "--out", out, "--quiet")
    assert code == 2 and _one_line(err) and "--resume" in err and "--overwrite" in err
    assert {p.name: p.read_bytes() for p in (out / "checkpoint").iterdir()} == before


def test_resume_and_overwrite_exclude_each_other(tmp_path, cfg, run_cli):
    code, _, err = run_cli("train", cfg, "--out", tmp_path / "r", "--resume", "--overwrite")
    assert code == 2 and "exclude" in err and not (tmp_path / "r").exists()
