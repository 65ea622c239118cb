"""Pieces shared by the optimal schedules: the unreachable-loss error and the canonical layout of a
schedule whose learning-rate matrix carries the rates (scalar rate 1 per unit time, unit impulses:
``_unit_schedule``; prescribed per-update learning-rate matrices: ``PerUpdateMatrix``, and its diagonal case
``PerUpdateDiagonal``)."""
from __future__ import annotations

import numpy as np
import torch

from ...errors import InputError
from ..preconditioners import Preconditioner
from ..schedules import Schedule


class UnreachableLossError(InputError):
    """A required final true loss lies below the least loss the model family reaches."""


def _layout(ctx, duration: float, n_expected: int | None = None) -> tuple[int, float]:
    """(n, dt) of the canonical layout, from the loop's interior step; refuses a mismatch."""
    dt = float(ctx.dt)
    n = int(round(duration / dt)) if dt > 0 else 0
    if n < 1 or abs(n * dt - duration) > 1e-9 * duration or (n_expected is not None and n != n_expected):
        want = f" and n_steps = {n_expected}" if n_expected is not None else ""
        raise InputError(f"this learning-rate matrix belongs to its own schedule (duration {duration}{want}); "
                         f"the run has interior step {dt}: run it with that schedule")
    return n, duration / n


def _unit_schedule(name: str, duration: float, preconditioner, params: dict) -> Schedule:
    """Scalar rate 1 per unit time and unit impulses (lr_k = 1, dt, ..., dt, 1): the matrix carries the rates."""
    return Schedule(name=name, duration=duration, rate=lambda t: np.ones_like(np.asarray(t, float)),
                    impulse_start=1.0, impulse_end=1.0, params=params, preconditioner=preconditioner)


# ================================================================ per-update learning-rate matrices

class PerUpdateMatrix(Preconditioner):
    """P_k = R_k / lr_k: a prescribed integrated learning-rate matrix R_k (signed, any shape of matrix) for
    every update of the canonical layout (``matrices`` (n + 2, P, P); lr_k = 1 for the impulses and dt
    inside, as in ``_unit_schedule``)."""

    name = "per-update-matrix"
    needs = "none"

    def __init__(self, matrices, duration: float):
        self.table = np.asarray(matrices, float)
        if self.table.ndim != 3 or self.table.shape[1] != self.table.shape[2]:
            raise InputError(f"matrices must have shape (n + 2, P, P), got {self.table.shape}")
        self.duration = float(duration)
        self.k = 0
        self.dt = None

    def start(self, ctx) -> None:
        _, self.dt = _layout(ctx, self.duration, self.table.shape[0] - 2)
        if getattr(ctx.energy, "n_params", None) != self.table.shape[1]:
            raise InputError(f"the rates are for {self.table.shape[1]} parameters, the energy has "
                             f"{ctx.energy.n_params}")

    def apply(self, g):
        if self.k >= self.table.shape[0]:
            raise InputError(f"the run has more than the {self.table.shape[0]} updates of this matrix's schedule")
        lr = 1.0 if self.k in (0, self.table.shape[0] - 1) else self.dt
        r = torch.as_tensor(self.table[self.k] / lr, dtype=g.dtype, device=g.device)
        self.k += 1
        return r @ g

    def report(self) -> dict:
        diag = np.diagonal(self.table, axis1=1, axis2=2)
        return {"name": self.name, "updates": self.k, "negative_rates": int(np.sum(diag < 0))}


class PerUpdateDiagonal(PerUpdateMatrix):
    """P_k = diag(rates[k]) / lr_k: prescribed per-parameter learning rates for every update of the canonical
    layout (``rates`` (n + 2, P): the integrated rate lr_k P_k of each update), a ``PerUpdateMatrix`` with
    diagonal matrices."""

    name = "per-update-diagonal"

    def __init__(self, rates, duration: float):
        rates = np.asarray(rates, float)
        if rates.ndim != 2:
            raise InputError(f"rates must have shape (n + 2, P), got {rates.shape}")
        super().__init__(np.einsum("kp,pq->kpq", rates, np.eye(rates.shape[1])), duration)
