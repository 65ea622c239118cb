"""Draws from a trained model: MALA at fixed theta, from the run's kept chains or from scratch.

``draw(model, n, gen=..., steps=..., from_scratch=...)``:

* kept chains (default where the run kept them): n of replica 0's final chain states (without
  replacement when n <= their number, else with replacement), then ``steps`` MALA moves of the
  training dt at the final theta. The kept chains were moving at theta for the whole run, so they
  are near p_theta already; the moves decorrelate repeated starts and finish the relaxation.
* from scratch: n draws of the confinement Gaussian N(0, 1/k) (mlp) or N(b, sigma^2) (rbm), then
  ``steps`` MALA moves (the burn-in; default BURN_IN). MALA leaves p_theta exactly invariant, so
  the only error is the incomplete burn-in.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import InputError, require_positive_int

F64 = torch.float64
#: MALA moves after starting from the kept chains
STEPS_FROM_CHAINS = 100
#: MALA moves after a start from scratch (the burn-in)
BURN_IN = 2000


@dataclass(frozen=True)
class Draws:
    """Samples (float64, (n, d)) and how they were made."""

    samples: torch.Tensor
    start: str
    steps: int
    dt: float
    acceptance_rate: float


def _scratch_start(energy, theta, n, gen):
    from ..energies.rbm import GaussianBernoulliRBM

    if isinstance(energy, GaussianBernoulliRBM):
        b = energy.unpack(theta)[1]
        return b + energy.sigma * torch.randn(n, energy.dim, dtype=F64, generator=gen)
    k = getattr(energy, "confinement", 0.0)
    sd = 1.0 / math.sqrt(k) if k > 0 else 1.0
    return sd * torch.randn(n, energy.dim, dtype=F64, generator=gen)


def draw(model, n: int, *, gen: torch.Generator, steps: int | None = None, from_scratch: bool = False,
         dt: float | None = None) -> Draws:
    """n samples of p_theta for a ``model_io.Model`` by MALA (see the module docstring)."""
    from ..backends.samplers import MALA

    n = require_positive_int("n", n)
    if not isinstance(gen, torch.Generator):
        raise InputError(f"gen must be a torch.Generator, got {gen!r}")
    energy, theta = model.energy, model.theta
    use_chains = model.chains is not None and not from_scratch
    if steps is None:
        steps = STEPS_FROM_CHAINS if use_chains else BURN_IN
    if int(steps) != steps or steps < 0:
        raise InputError(f"steps must be an integer >= 0, got {steps!r}")
    dt = float(model.meta.get("dt", 0.01) if dt is None else dt)
    if not (dt > 0 and math.isfinite(dt)):
        raise InputError(f"dt must be a positive number, got {dt!r}")
    mobility = float(model.meta.get("mobility", 1.0))
    if use_chains:
        kept = model.chains.to(torch.float32)
        m = kept.shape[0]
        idx = (torch.randperm(m, generator=gen)[:n] if n <= m
               else torch.randint(0, m, (n,), generator=gen))
        x = kept[idx].clone()
        start = f"{n} of the run's {m} kept chains" + (" (with replacement)" if n > m else "")
    else:
        x = _scratch_start(energy, theta, n, gen).to(torch.float32)
        start = "the confinement Gaussian (from scratch)"
    sampler = MALA()
    for _ in range(int(steps)):
        x = sampler.step(energy, theta, x, dt=dt, mobility=mobility, gen=gen)
    if not bool(torch.isfinite(x).all()):
        raise InputError("the chains left the finite range: lower --dt")
    return Draws(x.to(F64), start, int(steps), dt, sampler.acceptance_rate)
