"""The run directory of ``mindiss train --out DIR``.

    DIR/config.toml     the resolved config (every key)
    DIR/checkpoint.pt   the last checkpoint (resume with --resume)
    DIR/result.json     the result (written last, only on success)
    DIR/history.csv     one row per recorded update
    DIR/figures/training.png, .svg   theta(t), lr(t), cumulative work and excess work, the loss pair
    DIR/run.log         what happened, with times

Every file is replaced atomically, so a reader (or a crash) never sees a partial file.
"""
from __future__ import annotations

import datetime as _dt
import io
from pathlib import Path

from .io import atomic_write_bytes, atomic_write_json, atomic_write_text


class RunDir:
    def __init__(self, path):
        self.path = Path(path)
        self.log_lines: list[str] = []
        self.checkpoint = self.path / "checkpoint.pt"

    def prepare(self, config_text: str, resume: bool) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        log = self.path / "run.log"
        if resume and log.exists():
            self.log_lines = log.read_text().splitlines()
        atomic_write_text(self.path / "config.toml", config_text)

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
