"""Throughput of the full update against a bare hand-written torch loop, timed in one process.

Both do the same arithmetic per update on the harmonic trap with exact OU moves: g_hat from the
chain mean, theta update, float64 per-chain work (closed-form difference), OU move with fresh
normal draws, float64 per-chain heat. The library also records its history and checks for
divergence; the ratio (library / bare) is the figure of merit (target >= 0.8).
"""
from __future__ import annotations

import math
import statistics
import time

import torch

from .data import Gaussian as GaussianData
from .energies import HarmonicTrap
from .schedules import optimal_harmonic
from .train import _seeds, train


def bare_loop(lrs, dts, *, n_chains, variance, mobility, theta0, target, seed, dtype) -> float:
    """The reference: the same update, hand-written, no library code. Returns the mean work.

    Seeded like replica 0 of ``train`` so that both draw the same numbers.
    """
    gen = torch.Generator().manual_seed(_seeds(seed, 1)[0][0])
    s = variance
    theta = torch.tensor([theta0], dtype=torch.float64)
    xbar = torch.tensor([target], dtype=torch.float64)
    x = (theta + math.sqrt(s) * torch.empty(n_chains, 1, dtype=torch.float64).normal_(generator=gen)).to(dtype)
    e_now = (x.double().squeeze(-1) - theta).square_().mul_(0.5 / s)
    work = torch.zeros_like(e_now)
    heat = torch.zeros_like(e_now)
    noise = torch.empty_like(x)
    for lr, dt in zip(lrs, dts):
        g = (theta - xbar) / s - (theta - x.mean(0, dtype=torch.float64)) / s
        new = theta - lr * g
        w = (x.double().squeeze(-1) * 2.0 - (theta + new)) * ((theta - new) / (2.0 * s))
        work += w
        e_now += w
        theta = new
        if dt > 0:
            a = math.exp(-mobility * dt / s)
            x.mul_(a).add_(float(theta) * (1 - a)).add_(noise.normal_(generator=gen), alpha=math.sqrt(s * (1 - a * a)))
            e_new = (x.double().squeeze(-1) - theta).square_().mul_(0.5 / s)
            heat += e_new - e_now
            e_now = e_new
    return float(work.mean())


def run(n_chains: int = 100_000, n_steps: int = 1000, repeats: int = 5, dtype=torch.float32,
        variance: float = 1.0, mobility: float = 1.0, duration: float = 1.0, seed: int = 0) -> dict:
    """Median wall time of ``train`` and of ``bare_loop`` (after one warm-up each), interleaved."""
    sched = optimal_harmonic(variance, mobility, duration)
    disc = sched.discretise(n_steps)
    energy = HarmonicTrap(variance, 1)
    data = GaussianData(5.0, variance)

    def lib():
        return train(energy, data, schedule=disc, theta0=[0.0], mobility=mobility, n_chains=n_chains,
                     n_replicas=1, seed=seed, dtype=dtype).work

    def bare():
        return bare_loop(disc.lr, disc.dt, n_chains=n_chains, variance=variance, mobility=mobility,
                         theta0=0.0, target=5.0, seed=seed, dtype=dtype)

    times = {"library": [], "bare": []}
    works = {}
    for name, fn in (("library", lib), ("bare", bare)):
        works[name] = fn()  # warm-up
    for _ in range(repeats):
        for name, fn in (("library", lib), ("bare", bare)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    chain_steps = n_chains * n_steps
    return {
        "n_chains": n_chains, "n_steps": n_steps, "dtype": str(dtype).replace("torch.", ""),
        "threads": torch.get_num_threads(), "repeats": repeats,
        "library_s": med["library"], "bare_s": med["bare"],
        "library_s_min_max": [min(times["library"]), max(times["library"])],
        "bare_s_min_max": [min(times["bare"]), max(times["bare"])],
        "library_msteps_per_s": chain_steps / med["library"] / 1e6,
        "bare_msteps_per_s": chain_steps / med["bare"] / 1e6,
        "ratio": med["bare"] / med["library"],
        "work_library": works["library"], "work_bare": works["bare"],
    }
