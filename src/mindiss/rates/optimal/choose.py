"""``schedule_for``: the best schedule the library can give for an energy and data, and which kind."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from ...errors import InputError, require_positive
from ..schedules import Schedule
from .gaussian import gaussian_schedule
from .numerical import optimise_1d


# ================================================================ the schedule for a user's problem

class ScheduleChoice(NamedTuple):
    """(schedule, kind) from ``schedule_for``; ``reason`` says why this kind."""

    schedule: Schedule
    kind: str

    @property
    def reason(self) -> str:
        return {"exact-harmonic": "closed form: the Schmiedl-Seifert optimum (target-free rates)",
                "exact-gaussian": "closed form: the learnable-variance optimum, built from the data moments",
                "numerical-1d": ("no closed form; numerically optimal over every theta path on the Fokker-Planck grid "
                                 "(optimise_1d)"),
                "natural-gradient": "no closed form and not 1-D: the linear-response design alpha(t) I^-1",
                }[self.kind]


def schedule_for(energy, data, *, theta0, duration: float, mobility: float = 1.0, n_steps: int | None = None,
                 **options) -> ScheduleChoice:
    """The least-dissipation schedule mindiss can give for ``energy`` learnt from ``data`` in time T:
    the exact optimum where a closed form exists (harmonic trap; learnable-variance Gaussian), else the
    optimum over every n-update theta path for a 1-D energy (``optimise_1d``, needs ``n_steps``; ``options``
    go to it), else the natural-gradient design (``options``: ``fisher``, ``tau``). Returns (schedule, kind)."""
    from ...data.base import as_dataset
    from ...energies.base import Gaussian, HarmonicTrap
    from ..schedules import natural_gradient, optimal_harmonic

    T = require_positive("duration", duration)
    mu = require_positive("mobility", mobility)
    if isinstance(energy, HarmonicTrap):
        return ScheduleChoice(optimal_harmonic(energy.variance, mu, T), "exact-harmonic")
    if isinstance(energy, Gaussian):
        ds = as_dataset(data, energy.dim)
        th = torch.as_tensor(np.asarray(theta0, float), dtype=torch.float64).reshape(-1)
        if th.numel() != energy.n_params or energy.check_theta(th):
            raise InputError(f"theta0 must be {energy.n_params} natural parameters with positive precisions "
                             "(md.Gaussian.natural(mean, variance))")
        a0, s0 = energy.moments(th)
        return ScheduleChoice(gaussian_schedule(a0.numpy(), s0.numpy(), ds.mean.numpy(), ds.variance.numpy(), mu, T),
                              "exact-gaussian")
    if getattr(energy, "dim", None) == 1:
        if n_steps is None:
            raise InputError("the optimal 1-D schedule is built for a given number of updates: pass n_steps")
        res = optimise_1d(energy, data, theta0, duration=T, mobility=mu, n_steps=n_steps, **options)
        return ScheduleChoice(res.schedule, "numerical-1d")
    return ScheduleChoice(natural_gradient(T, tau=options.get("tau", "auto"), fisher=options.get("fisher", "full")),
                          "natural-gradient")
