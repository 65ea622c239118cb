"""The mutable state of one replica of ``train``: what a checkpoint saves and a resume restores
(theta, chains, generators, the history rows in memory or streamed to a ``.npy`` file), and the
history columns that need F(theta), filled after the updates in one batched evaluation."""
from __future__ import annotations

import contextlib

import numpy as np

from .. import backends as _backends
from ..errors import InputError
from .summary import _columns


class ReplicaState:
    """The mutable state of one replica: what a checkpoint saves and a resume restores."""

    def __init__(self, energy, data, state, theta, gen, n_updates, *, n_rows: int = 0, history_file=None,
                 keep_thetas: bool = False, data_gen=None, batch_size=None, reopen: bool = False):
        self.energy, self.data, self.state, self.theta, self.gen = energy, data, state, theta, gen
        self.theta0 = theta.clone()
        self.k = 0                                   # updates done
        self.fe0 = _backends.free_energy(energy, theta, state)
        self.loss0 = _backends.loss(energy, data, theta, state)
        self.loss_approx = 0.0    # sum_k (theta_{k+1} - theta_k) . g_hat_k
        self.t_now = 0.0
        self.n_rows = 0
        self.pending: list = []   # recorded rows not yet in ``rows``
        self.columns = _columns(energy)
        self.rows = None          # (rows, columns) float64: in memory, or a memmap streamed to history_file
        if n_rows:
            shape = (n_rows, len(self.columns))
            if history_file is None:
                self.rows = np.full(shape, np.nan)
            elif reopen:   # a resumed replica continues the rows streamed before the interruption
                try:
                    self.rows = np.load(partial_path(history_file), mmap_mode="r+")
                except OSError as exc:
                    raise InputError(f"cannot resume the streamed history: {exc}") from None
                if self.rows.shape != shape:
                    raise InputError(f"the streamed history {partial_path(history_file)} has shape {self.rows.shape}, "
                                     f"this run needs {shape}")
            else:
                self.rows = np.lib.format.open_memmap(partial_path(history_file), mode="w+", dtype=np.float64,
                                                      shape=shape)
        self.history_file = history_file
        self.thetas = None        # theta after every update (replica 0, in-memory history only)
        if keep_thetas:
            self.thetas = np.empty((n_updates + 1, energy.n_params))
            self.thetas[0] = theta.cpu().numpy()
        self.replica = 0
        self.lrs = None
        self.pre = None           # the replica's preconditioner (learning-rate matrix)
        self.ctx = None
        self.taus: list = []      # (update, tau, how it was estimated)
        self.x0 = None            # initial chain states for a Delta F estimator
        self.stats_kw: dict = {}  # extra arguments of grad_theta_stats (sharded chains: what to reduce)
        self.once = contextlib.nullcontext()   # pilot runs repeated on every rank count once
        self.data_gen, self.batch_size = data_gen, batch_size   # minibatches of the data term

    def flush_rows(self) -> None:
        """Move the rows buffered as Python lists (cheap to append per update) into the array."""
        if self.pending:
            n = len(self.pending)
            self.rows[self.n_rows:self.n_rows + n] = self.pending
            self.n_rows += n
            self.pending = []

    def state_dict(self) -> dict:
        self.flush_rows()
        if self.history_file is not None and self.rows is not None:
            self.rows.flush()     # rows past n_rows are rewritten after a resume
        rows = None if self.rows is None else (self.n_rows if self.history_file is not None
                                               else self.rows[: self.n_rows].copy())
        return {"replica": self.replica, "k": self.k, "theta": self.theta.clone(), "chains": self.state.state_dict(),
                "gen": self.gen.get_state(), "loss_approx": self.loss_approx, "t_now": self.t_now,
                "n_rows": self.n_rows, "rows": rows, "thetas": None if self.thetas is None else self.thetas.copy(),
                "lrs": None if self.lrs is None else self.lrs.copy(), "taus": list(self.taus),
                "pre": None if self.pre is None else self.pre.state_dict(),
                "pgen": None if self.ctx is None else self.ctx.gen.get_state(), "x0": self.x0,
                "data_gen": None if self.data_gen is None else self.data_gen.get_state()}

    def load_state_dict(self, sd: dict) -> None:
        self.k, self.t_now, self.n_rows, self.loss_approx = sd["k"], sd["t_now"], sd["n_rows"], sd["loss_approx"]
        self.theta = sd["theta"].to(self.theta.device).clone()
        self.state.load_state_dict(sd["chains"])
        self.gen.set_state(sd["gen"])
        if self.rows is not None and self.history_file is None:
            self.rows[: self.n_rows] = sd["rows"]
        self.thetas = None if sd["thetas"] is None else sd["thetas"].copy()
        self.lrs = None if sd["lrs"] is None else sd["lrs"].copy()
        self.taus = list(sd["taus"])
        self.x0 = sd["x0"]
        if self.pre is not None:
            self.pre.load_state_dict(sd["pre"])
        if self.ctx is not None:
            self.ctx.gen.set_state(sd["pgen"])
            self.ctx.theta = self.theta
        if self.data_gen is not None:
            self.data_gen.set_state(sd["data_gen"])

    def fill_losses(self, rows=None) -> None:
        """The columns that need F(theta) (Delta F, W_ex, true loss), evaluated after the updates for
        every recorded theta at once (quadrature is the costly part of a record), in chunks."""
        if self.rows is None:
            return
        cols = self.columns
        j_th = cols.index("theta_0")
        j_w, j_f, j_ex, j_l, j_la, j_lac = (cols.index(c) for c in ("work", "delta_free_energy", "excess_work",
                                                                   "loss_true", "loss_approx",
                                                                   "loss_approx_change"))
        idx = range(self.n_rows) if rows is None else rows
        chunk = 4096
        for lo in range(0, len(idx), chunk):
            sel = np.asarray(idx[lo:lo + chunk])
            block = self.rows[sel]
            thetas = block[:, j_th:j_th + self.energy.n_params]
            dev = self.theta.device
            fe = _backends.free_energy_many(self.energy, thetas, self.state, dev) - self.fe0
            block[:, j_f] = fe
            block[:, j_ex] = block[:, j_w] - fe
            block[:, j_l] = _backends.loss_many(self.energy, self.data, thetas, self.state, fe + self.fe0, dev)
            block[:, j_la] = self.loss0 + block[:, j_lac]
            self.rows[sel] = block


def partial_path(path) -> str:
    return f"{path}.partial.npy"


def n_rows(n_updates: int, record_every: int) -> int:
    """Row 0, every multiple of record_every and the last update."""
    return 1 + n_updates // record_every + (1 if n_updates % record_every else 0)
