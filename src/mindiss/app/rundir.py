"""The run directory of ``mindiss train --out DIR``.

    DIR/config.toml     the resolved config (every key)
    DIR/checkpoint/     the last checkpoint (resume with --resume; see ``checkpoint.py``)
    DIR/result.json     the result (written last, only on success)
    DIR/history.csv     one row per recorded update
    DIR/figures/training.png, .svg   theta(t), lr(t), cumulative work and excess work, the loss pair
    DIR/run.log         what happened, with times
    DIR/.mindiss.lock, .mindiss.pid  the lock held for the whole run and the holder's process id

Every file is replaced atomically, so a reader (or a crash) never sees a partial file. The
directory is locked (``filelock``: an OS file lock, released by the kernel when the process ends,
so a killed run's lock never blocks ``--resume``) for the whole run: a second run into it is
refused, naming the holder's PID. A new run into a directory holding an interrupted run's
checkpoint is refused unless ``overwrite`` (then the earlier run's files are removed first).
"""
from __future__ import annotations

import datetime as _dt
import io
import os
import shutil
from pathlib import Path

from ..core import checkpoint as _ck
from ..errors import InputError, OutputError
from ..io import atomic_write_bytes, atomic_write_json, atomic_write_text, os_reason, remove_stale_tmp

LOCK_FILE, PID_FILE = ".mindiss.lock", ".mindiss.pid"
LEGACY_CHECKPOINT = "checkpoint.pt"
#: the files a run writes (removed before a new run with ``overwrite``)
RUN_FILES = ("result.json", "history.csv", "run.log", "config.toml", "figures/training.png",
             "figures/training.svg", LEGACY_CHECKPOINT)


def check_out_path(path, option: str = "--out") -> Path:
    """``path`` as a Path, refusing an empty path and a dangling symbolic link (InputError)."""
    if path is None or str(path).strip() == "":
        raise InputError(f"{option} must name a directory, got an empty path")
    p = Path(path)
    if p.is_symlink() and not p.exists():
        try:
            target = os.readlink(p)
        except OSError:
            target = "?"
        raise InputError(f"{option} {str(p)!r} is a dangling symbolic link (to {target!r})")
    return p


class RunDir:
    def __init__(self, path):
        self.path = Path(path)
        self.log_lines: list[str] = []
        self.checkpoint = self.path / "checkpoint"
        self.created = False
        self._lock = None

    @classmethod
    def open(cls, path, *, resume: bool, overwrite: bool = False) -> "RunDir":
        """Create (if needed) and lock the run directory, then check that its contents allow this run."""
        p = check_out_path(path)
        if p.exists() and not p.is_dir():
            raise InputError(f"--out {str(p)!r} exists and is not a directory")
        rd = cls(p)
        if not p.exists():
            try:
                p.mkdir(parents=True)
                rd.created = True
            except FileExistsError:
                pass
            except OSError as exc:
                raise OutputError(f"cannot create the run directory {str(p)!r}: {os_reason(exc)}") from None
        try:
            rd._acquire()
            rd._check(resume, overwrite)
        except BaseException:
            rd.close(remove=rd.created)
            raise
        return rd

    def _acquire(self) -> None:
        from filelock import FileLock, Timeout

        lock = FileLock(str(self.path / LOCK_FILE), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            pid = "unknown"
            try:
                pid = (self.path / PID_FILE).read_text().strip() or pid
            except OSError:
                pass
            raise InputError(f"run directory {str(self.path)!r} is in use by another mindiss run (PID {pid}): "
                             "wait for it to finish or choose another --out") from None
        except OSError as exc:
            raise OutputError(f"cannot lock the run directory {str(self.path)!r}: {os_reason(exc)}") from None
        self._lock = lock
        atomic_write_text(self.path / PID_FILE, f"{os.getpid()}\n")

    def _check(self, resume: bool, overwrite: bool) -> None:
        p = self.path
        has_ck = _ck.exists(self.checkpoint)
        legacy = (p / LEGACY_CHECKPOINT).exists()
        if resume:
            if not has_ck and legacy:
                _ck._refuse_legacy(p / LEGACY_CHECKPOINT)
            if not has_ck:
                raise InputError(f"--resume: no checkpoint in {str(p)!r}")
        elif not overwrite:
            if (p / "result.json").exists():
                raise InputError(f"{str(p)!r} already holds a finished run: choose another --out, continue it with "
                                 "--resume or discard it with --overwrite")
            if has_ck or legacy:
                what = _ck.describe(self.checkpoint) if has_ck else f"an old-format {LEGACY_CHECKPOINT}"
                raise InputError(f"{str(p)!r} holds the checkpoint of an interrupted run ({what}): continue it "
                                 "with --resume or discard it with --overwrite")
        for folder in (p, p / "figures", self.checkpoint):
            remove_stale_tmp(folder)

    def close(self, remove: bool = False) -> None:
        """Release the lock; ``remove``: delete the directory first (only while holding its lock)."""
        if remove and self._lock is not None:
            shutil.rmtree(self.path, ignore_errors=True)
        elif self._lock is not None:
            try:
                (self.path / PID_FILE).unlink(missing_ok=True)
            except OSError:
                pass
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def prepare(self, config_text: str, resume: bool) -> None:
        """Write the resolved config; a new run first removes an earlier run's files."""
        self.path.mkdir(parents=True, exist_ok=True)
        log = self.path / "run.log"
        if resume and log.exists():
            self.log_lines = log.read_text(errors="replace").splitlines()
        if not resume:
            for name in RUN_FILES:
                (self.path / name).unlink(missing_ok=True)
            if self.checkpoint.is_dir() and not self.checkpoint.is_symlink():
                shutil.rmtree(self.checkpoint)
        atomic_write_text(self.path / "config.toml", config_text)

    def describe_checkpoint(self, hint: str = "") -> str:
        """What the checkpoint folder holds now, in words (for messages that must be true)."""
        what = _ck.describe(self.checkpoint)
        if what is None:
            return f"no checkpoint was written in {self.checkpoint} before this point"
        return f"the last checkpoint ({what}) is kept in {self.checkpoint}{hint}"

    def log(self, message: str) -> None:
        now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        self.log_lines.append(f"{now} {message}")
        atomic_write_text(self.path / "run.log", "\n".join(self.log_lines) + "\n")

    def write_result(self, res, model=None) -> dict:
        """``model``: None, or (cfg, energy, data) of a network run: model files, summaries, test NLL.
        Returns the dict written to result.json."""
        history, result = res.history, res.to_dict()
        if model is not None:   # networks: model_io writes the model, summarises weights (issue 17 item 4)
            from .model_io import history_summary, result_dict, write_run_model
            history = history_summary(history, model[1])
            result = result_dict(res, model[1], write_run_model(self.path, model[0], model[1], res, model[2]))
        history.to_csv(self.path / "history.csv")
        self.write_figure(res)
        atomic_write_json(self.path / "result.json", result)
        return result

    def write_figure(self, res) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        h = res.history
        fig, axes = plt.subplots(2, 2, figsize=(11, 7))
        t = h["t"]
        ax = axes[0, 0]
        shown = 4  # more components would drown the panel; history.csv has them all
        for i, col in enumerate(h.block("theta").T[:shown]):
            ax.plot(t, col, drawstyle="steps-pre", label=f"theta_{i}")
        for i, col in enumerate(h.block("chain_mean").T[:shown]):
            ax.plot(t, col, ls="--", label=f"chain mean {i}")
        ax.set_xlabel("t (time units of 1/mobility)")
        ax.set_ylabel("parameter / chain mean")
        ax.set_title("theta(t) and chain mean (replica 0" + (f", first {shown} components)"
                     if h.block("theta").shape[1] > shown else ")"))
        ax.legend(fontsize=8)
        ax = axes[0, 1]
        ax.plot(h["update"][1:], h["lr"][1:], ".", ms=3)
        ax.set_yscale("log")
        ax.set_xlabel("update")
        ax.set_ylabel("learning rate lr_k (impulses: integrated)")
        ax.set_title("learning rate per update")
        ax = axes[1, 0]
        ax.plot(t, h["work"], label="work <W>")
        ax.plot(t, h["excess_work"], ls="--", label="excess work W_ex")
        if res.bound is not None:
            ax.axhline(res.bound, color="k", lw=0.8, ls=":", label=f"bound W* = {res.bound:.4g}")
        ax.set_xlabel("t")
        ax.set_ylabel("cumulative work (kT per chain)")
        ax.set_title("work and excess work")
        ax.legend(fontsize=8)
        ax = axes[1, 1]
        ax.plot(t, h["loss_true"], label="true loss L(theta_t)")
        ax.plot(t, h["loss_approx"], ls="--", label="approximate (PCD) objective")
        ax.set_xlabel("t")
        ax.set_ylabel("negative log-likelihood (kT)")
        ax.set_title(f"the loss pair: gap = W_ex = {res.excess_work:.4g}")
        ax.legend(fontsize=8)
        fig.tight_layout()
        for ext in ("png", "svg"):
            buf = io.BytesIO()
            fig.savefig(buf, format=ext, dpi=100)
            atomic_write_bytes(self.path / "figures" / f"training.{ext}", buf.getvalue())
        plt.close(fig)
