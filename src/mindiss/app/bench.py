"""Throughput of the full update (``train`` itself) against bare hand-written torch loops, one process.

Per configuration every variant (``VARIANTS``) runs in this process, interleaved, median of repeats
after one warm-up (which also compiles): ``bare_free`` (hand-written loop, same chain arithmetic and
random stream, no ledger), ``bare`` (the same with the float64 per-chain work/heat ledger),
``library`` (``train`` with its defaults: history every update, divergence checks, float64 theta
and ledger), ``fused`` / ``compiled`` (``train(step_mode=...)`` where it applies) and ``torchebm``
(the peer, on the trap in float32). Cases (``run_all``; ``mindiss bench``): the harmonic trap with
exact OU moves (``bare_trap``), the tilted double well with Euler-Maruyama (``bare_double_well``), a
2-64-64-1 MLP energy with Euler-Maruyama (``bare_mlp``), in float32 and float64, and the fixed cost
of an update at N = 1 per backend (``make_overhead``, microseconds per update). Throughput is chains x
updates / time (M chain-steps/s); a ratio "a/b" = speed of a / speed of b; targets in
``CASE_TARGETS``. Each row carries the load average at its end. Peak memory per chain: see
``MEMORY_METHOD``. ``run`` / ``bare_loop`` are the original 1-D trap benchmark.
"""
from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import time

import torch

from ..data.base import Gaussian as GaussianData
from ..energies.base import HarmonicTrap
from ..rates.schedules import optimal_harmonic
from ..core.train import _seeds, train


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


# ----------------------------------------------------------------- the cases of `mindiss bench`

#: per case, the (ratio, minimum) pairs that are its targets (issue 20); a ratio is variant speed / reference speed
CASE_TARGETS = {
    "trap": (("library/bare", 0.8), ("fused/bare", 0.8), ("fused/bare_free", 0.6)),
    "double_well": (("library/bare", 0.8), ("fused/bare", 0.8)),
    "mlp": (("library/bare", 0.8), ("compiled/bare", 1.5)),
    "overhead": (),
}
#: the ratios every row reports (where both variants ran)
RATIOS = (("library", "bare"), ("library", "bare_free"), ("fused", "bare"), ("fused", "bare_free"),
          ("compiled", "bare"), ("compiled", "library"), ("library", "torchebm"), ("fused", "torchebm"))
#: what each variant is (the JSON carries it)
VARIANTS = {
    "bare_free": "hand-written torch loop, same chain arithmetic and random stream, no work/heat ledger",
    "bare": "hand-written torch loop with the same float64 per-chain work/heat ledger",
    "library": "train() with its defaults (step_mode='default')",
    "fused": "train(step_mode='fused'): the per-chain work as one multiply-add, heat from the first law",
    "compiled": "train(step_mode='compiled'): torch.compile'd forward and gradients (NeuralEnergy)",
    "setup": "fixed-cost rows: the same train() call with 1/5 of the updates (its time is subtracted)",
    "torchebm": "torchebm PersistentContrastiveDivergence + LangevinDynamics (Euler) on the same trap, N, d "
                "and number of updates (no ledger; its sampler, not exact OU)",
}
MEMORY_METHOD = ("cpu: in a fresh subprocess, after imports and data set-up (and, for 'compiled', one warm-up "
                 "run that compiles), the peak RSS is reset (/proc/self/clear_refs = 5; else ru_maxrss, which "
                 "then only counts growth above the import peak); (VmHWM after one run of <= 50 updates - VmRSS "
                 "before) / N. cuda: (torch.cuda.max_memory_allocated over one run - memory_allocated before) / N")


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _reset_peak_rss() -> int:
    """Reset the peak resident set size (Linux) and return the current RSS in bytes."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return _status_kb("VmRSS") * 1024
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _peak_rss() -> int:
    try:
        return _status_kb("VmHWM") * 1024
    except (OSError, KeyError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _sync(device) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _torchebm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("torchebm") is not None


def _compile_ok(device) -> bool:
    from ..energies.compiled import compile_available

    return compile_available() is None


def make_trap(n_chains, dim, n_steps, dtype, device="cpu", seed=0, variance=1.0, mobility=1.0, duration=1.0):
    """{variant: callable} for the harmonic trap with exact OU moves (optimal schedule): bare_free, bare,
    library, fused and (float32 on the CPU, torchebm installed) torchebm."""
    disc = optimal_harmonic(variance, mobility, duration).discretise(n_steps)
    energy = HarmonicTrap(variance, dim)
    data = GaussianData([5.0] * dim, [variance] * dim)

    def lib(step_mode="default"):
        return train(energy, data, schedule=disc, theta0=[0.0] * dim, mobility=mobility, n_chains=n_chains,
                     n_replicas=1, seed=seed, dtype=dtype, device=device, step_mode=step_mode).work

    def bare(ledger=True):
        return bare_trap(disc.lr, disc.dt, n_chains=n_chains, dim=dim, variance=variance, mobility=mobility,
                         theta0=0.0, target=5.0, seed=seed, dtype=dtype, device=device, ledger=ledger)

    out = {"bare_free": lambda: bare(False), "bare": bare, "library": lib, "fused": lambda: lib("fused")}
    if dtype == torch.float32 and str(device) == "cpu" and _torchebm_available():
        out["torchebm"] = lambda: torchebm_trap(n_chains, dim, n_steps, seed=seed)
    return out


def bare_trap(lrs, dts, *, n_chains, dim, variance, mobility, theta0, target, seed, dtype, device="cpu",
              ledger: bool = True) -> float:
    """``bare_loop`` for d >= 1 (theta a d-vector, x of shape (N, d)). Returns the mean work (NaN with
    ``ledger=False``: the same chain arithmetic and random stream, no work or heat)."""
    gen = torch.Generator(device=device).manual_seed(_seeds(seed, 1)[0][0])
    s, f64 = variance, torch.float64
    theta = torch.full((dim,), float(theta0), dtype=f64, device=device)
    xbar = torch.full((dim,), float(target), dtype=f64, device=device)
    x = (theta + math.sqrt(s) * torch.empty(n_chains, dim, dtype=f64, device=device).normal_(generator=gen)).to(dtype)
    half_k = torch.full((dim,), 0.5 / s, dtype=f64, device=device)   # sum over d as a mat-vec (fast)
    noise = torch.empty_like(x)
    if ledger:
        e_now = torch.mv((x.double() - theta).square_(), half_k)
        work, heat = torch.zeros_like(e_now), torch.zeros_like(e_now)
    for lr, dt in zip(lrs, dts):
        g = (theta - xbar) / s - (theta - x.mean(0, dtype=f64)) / s
        new = theta - lr * g
        if ledger:
            w = (x.double() * 2.0 - (theta + new)) @ ((theta - new) / (2.0 * s))
            work += w
            e_now += w
        theta = new
        if dt > 0:
            a = math.exp(-mobility * dt / s)
            x.mul_(a).add_((theta * (1 - a)).to(dtype)).add_(noise.normal_(generator=gen),
                                                              alpha=math.sqrt(s * (1 - a * a)))
            if ledger:
                e_new = torch.mv((x.double() - theta).square_(), half_k)
                heat += e_new - e_now
                e_now = e_new
    return float(work.mean()) if ledger else math.nan


def torchebm_trap(n_chains, dim, n_steps, seed=0, variance=1.0, mobility=1.0, dt=1e-3, lr=1e-3) -> float:
    """torchebm's PersistentContrastiveDivergence (k_steps = 1, buffer = the N chains) with its
    LangevinDynamics sampler (Euler-Maruyama, step_size = mu dt, noise_scale = 1) and torch SGD on
    E = |x - theta|^2 / (2 s), data N(5, s I), chains in equilibrium at theta_0 = 0, float32.
    Returns the final theta_0 (``benchmarks/peers/torchebm_pcd.py`` runs the same function)."""
    from torchebm.core import BaseModel
    from torchebm.losses import PersistentContrastiveDivergence
    from torchebm.samplers import LangevinDynamics

    class Trap(BaseModel):
        def __init__(self):
            super().__init__()
            self.theta = torch.nn.Parameter(torch.zeros(dim))

        def forward(self, x):
            return (x - self.theta).square().sum(-1) * (0.5 / variance)

    gen = torch.Generator().manual_seed(seed)
    data = 5.0 + math.sqrt(variance) * torch.randn(n_chains, dim, generator=gen)
    x0 = math.sqrt(variance) * torch.randn(n_chains, dim, generator=gen)
    model = Trap()
    sampler = LangevinDynamics(model, step_size=mobility * dt, noise_scale=1.0)
    loss_fn = PersistentContrastiveDivergence(model, sampler, k_steps=1, buffer_size=n_chains, init_steps=0,
                                              new_sample_ratio=0.0, energy_reg_weight=0.0)
    loss_fn.initialize_buffer((dim,), generator=gen)
    loss_fn.replay_buffer.copy_(x0)   # equilibrium start
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(n_steps):
        opt.zero_grad(set_to_none=True)
        loss, _ = loss_fn(data, generator=gen)
        loss.backward()
        opt.step()
    return float(model.theta.detach()[0])


def make_double_well(n_chains, n_steps, dtype, device="cpu", seed=0, mobility=1.0, duration=None, scale=1.0):
    """{variant: callable} for E = a (x^2-1)^2 + b x, Euler-Maruyama, data = samples, chains a given
    tensor: bare_free, bare, library, fused."""
    from ..energies.expfamily import ExpFamily
    from ..rates.schedules import constant

    energy = ExpFamily.tilted_double_well()
    gen = torch.Generator().manual_seed(seed + 17)
    data = energy.sample_equilibrium(torch.tensor([1.5, 0.5], dtype=torch.float64), n_chains, gen=gen,
                                     dtype=torch.float64).to(device)
    x0 = energy.sample_equilibrium(torch.tensor([1.0, 0.0], dtype=torch.float64), n_chains, gen=gen,
                                   dtype=dtype).to(device)
    disc = constant(scale, duration or n_steps * 1e-3).discretise(n_steps)   # dt = 1e-3, lr = 1e-3

    def lib(step_mode="default"):
        return train(energy, data, schedule=disc, theta0=[1.0, 0.0], mobility=mobility, n_chains=n_chains,
                     n_replicas=1, seed=seed, dtype=dtype, device=device, sampler="euler",
                     chains=x0.clone(), step_mode=step_mode).work

    def bare(ledger=True):
        return bare_double_well(disc.lr, disc.dt, x0.clone(), data, theta0=(1.0, 0.0), mobility=mobility,
                                seed=seed, ledger=ledger)

    return {"bare_free": lambda: bare(False), "bare": bare, "library": lib, "fused": lambda: lib("fused")}


def bare_double_well(lrs, dts, x, data, *, theta0, mobility, seed, ledger: bool = True) -> float:
    """The same update for the tilted double well, hand-written (float64 statistics and ledger; with
    ``ledger=False`` the statistics of g_hat and the move only, and NaN is returned)."""
    dev, f64 = x.device, torch.float64
    gen = torch.Generator(device=dev).manual_seed(_seeds(seed, 1)[0][0])
    d64 = data.to(f64).reshape(-1)
    phi_data = torch.stack([((d64 * d64 - 1.0) ** 2).mean(), d64.mean()])
    theta = torch.tensor(theta0, dtype=f64, device=dev)
    xf = x.reshape(-1)
    x64 = xf.to(f64)
    q = (x64 * x64 - 1.0).square_()
    noise, grad = torch.empty_like(xf), torch.empty_like(xf)
    if ledger:
        e_now = q * theta0[0] + x64 * theta0[1]
        work, heat = torch.zeros_like(e_now), torch.zeros_like(e_now)
    for lr, dt in zip(lrs, dts):
        g = phi_data - torch.stack([q.mean(), x64.mean()])
        new = theta - lr * g
        if ledger:
            step = (new - theta).tolist()
            w = q * step[0]
            w.add_(x64, alpha=step[1])
            work += w
            e_now += w
        theta = new
        if dt > 0:
            a, b = theta.tolist()
            torch.mul(xf, xf, out=grad).sub_(1.0).mul_(xf).mul_(4.0 * a).add_(b)       # dE/dx
            xf.add_(grad, alpha=-mobility * dt).add_(noise.normal_(generator=gen), alpha=math.sqrt(2 * mobility * dt))
            x64 = xf.to(f64)
            torch.mul(x64, x64, out=q).sub_(1.0).square_()
            if ledger:
                e_new = q * a
                e_new.add_(x64, alpha=b)
                heat += e_new - e_now
                e_now = e_new
    return float(work.mean()) if ledger else math.nan


def make_mlp(n_chains, n_steps, dtype, device="cpu", seed=0, mobility=1.0, duration=None, scale=0.1,
             free_energy="exact", compiled: bool = True):
    """{variant: callable} for the 2-64-64-1 SiLU MLP energy (confinement 0.1), Euler-Maruyama, data =
    samples: bare_free, bare, library and (``compiled`` and torch.compile available) compiled.

    ``free_energy``: train()'s Delta F method; "exact" (NaN for a network: no estimator runs) times
    the updates alone, train()'s default "auto" adds an AIS estimate of Delta F after the run."""
    from ..energies.neural import NeuralEnergy
    from ..rates.schedules import constant

    energy = NeuralEnergy.mlp(dim=2, hidden=(64, 64), confinement=0.1, gen=0)
    duration = duration or n_steps * 1e-2
    gen = torch.Generator().manual_seed(seed + 17)
    centres = torch.tensor([[-2.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
    data = (centres[torch.randint(2, (n_chains,), generator=gen)]
            + 0.5 * torch.randn(n_chains, 2, generator=gen, dtype=torch.float64)).to(device)
    x0 = torch.randn(n_chains, 2, generator=gen, dtype=dtype).to(device)
    disc = constant(scale, duration).discretise(n_steps)
    theta0 = energy.theta0().to(device)

    def lib(step_mode="default"):
        return train(energy, data, schedule=disc, theta0=theta0, mobility=mobility, n_chains=n_chains,
                     n_replicas=1, seed=seed, dtype=dtype, device=device, sampler="euler",
                     chains=x0.clone(), free_energy=free_energy, step_mode=step_mode).work

    def bare(ledger=True):
        return bare_mlp(disc.lr, disc.dt, x0.clone(), data.to(dtype), theta0, [p.shape for p in
                        energy.module.parameters()], confinement=0.1, mobility=mobility, seed=seed, ledger=ledger)

    out = {"bare_free": lambda: bare(False), "bare": bare, "library": lib}
    if compiled and _compile_ok(device):
        out["compiled"] = lambda: lib("compiled")
    return out


def bare_mlp(lrs, dts, x, data, theta0, shapes, *, confinement, mobility, seed, ledger: bool = True) -> float:
    """The same update for an MLP energy, hand-written: one backward for g_hat (data and chains),
    the chain forward reused for the work, one backward for grad_x, one forward for the heat.
    ``ledger=False``: g_hat and the move only (no work or heat forwards); returns NaN."""
    dev, f64, cdt = x.device, torch.float64, x.dtype
    gen = torch.Generator(device=dev).manual_seed(_seeds(seed, 1)[0][0])
    sizes = [math.prod(s) for s in shapes]
    silu = torch.nn.functional.silu

    def f(flat, z):
        w1, b1, w2, b2, w3, b3 = (t.view(s) for t, s in zip(torch.split(flat, sizes), shapes))
        h = silu(torch.addmm(b1, z, w1.t()))
        h = silu(torch.addmm(b2, h, w2.t()))
        return torch.addmm(b3, h, w3.t()).reshape(-1)

    theta = theta0.to(device=dev, dtype=f64).clone()
    half_k = 0.5 * confinement
    noise = torch.empty_like(x)
    if ledger:
        with torch.no_grad():
            e_now = f(theta.to(cdt), x).to(f64) + half_k * x.to(f64).square().sum(-1)
        work, heat = torch.zeros_like(e_now), torch.zeros_like(e_now)
    for lr, dt in zip(lrs, dts):
        flat = theta.to(cdt).requires_grad_(True)
        f_chain = f(flat, x)
        (g,) = torch.autograd.grad(f(flat, data).mean() - f_chain.mean(), flat)
        new = theta - lr * g.to(f64)
        new_c = new.to(cdt)
        if ledger:
            with torch.no_grad():
                w = f(new_c, x).to(f64) - f_chain.detach().to(f64)
                work += w
                e_now += w
        theta = new
        if dt > 0:
            xr = x.detach().requires_grad_(True)
            (gx,) = torch.autograd.grad(f(new_c, xr).sum(), xr)
            with torch.no_grad():
                gx.add_(x, alpha=confinement)
                x.add_(gx, alpha=-mobility * dt).add_(noise.normal_(generator=gen), alpha=math.sqrt(2 * mobility * dt))
                if ledger:
                    e_new = f(new_c, x).to(f64) + half_k * x.to(f64).square().sum(-1)
                    heat += e_new - e_now
                    e_now = e_new
    return float(work.mean()) if ledger else math.nan


def make_overhead(backend, n_steps, dtype, device="cpu", seed=0, n_chains=1, shards=None, step_mode="default"):
    """{"library", "setup": callables} for the fixed cost of an update: a 1-D harmonic trap, exact
    moves, N = ``n_chains`` (1; 2 with 2 shards), one replica, history every update."""
    energy = HarmonicTrap(1.0, 1)
    disc = optimal_harmonic(1.0, 1.0, 1.0).discretise(n_steps)
    data = GaussianData(5.0, 1.0)

    short = optimal_harmonic(1.0, 1.0, 1.0).discretise(max(n_steps // 5, 1))

    def lib(schedule=disc):
        kw = dict(shards=shards) if shards else {}
        return train(energy, data, schedule=schedule, theta0=[0.0], n_chains=n_chains, n_replicas=1, seed=seed,
                     dtype=dtype, device=device, backend=backend, sampler="exact", step_mode=step_mode, **kw).work

    # the fixed cost per update is (t(n_steps updates) - t(n_steps / 5 updates)) / the difference in updates
    # (the set-up, and the end-of-run F / loss evaluation, cancel)
    return {"library": lib, "setup": lambda: lib(short)}


def _configs(quick: bool):
    """(case, label, kwargs) of every configuration; --quick shrinks the number of updates."""
    k = 10 if quick else 1
    rows = [
        ("trap", "harmonic trap, exact OU", dict(n_chains=100_000, dim=1, n_steps=1000 // k)),
        ("trap", "harmonic trap, exact OU", dict(n_chains=10_000, dim=2, n_steps=10_000 // k)),
        ("double_well", "tilted double well, Euler-Maruyama", dict(n_chains=10_000, n_steps=10_000 // k)),
        ("mlp", "MLP 2-64-64-1, Euler-Maruyama", dict(n_chains=4096, n_steps=200 // k)),
    ]
    if not quick:   # the post-run AIS estimate costs a fixed ~10 s: full runs only
        rows.append(("mlp", "MLP, train() default (+ AIS Delta F)", dict(n_chains=4096, n_steps=200,
                                                                          free_energy="auto", compiled=False)))
    n = 2000 // k
    rows += [
        ("overhead", "fixed cost, N = 1, particles", dict(backend="particles", n_steps=n)),
        ("overhead", "fixed cost, N = 1, particles, fused", dict(backend="particles", n_steps=n, step_mode="fused")),
        ("overhead", "fixed cost, moments (N = inf)", dict(backend="moments", n_steps=n)),
        ("overhead", "fixed cost, Fokker-Planck grid", dict(backend="fokker_planck", n_steps=n)),
        ("overhead", "fixed cost, N = 2, 2 shards (1 rank)", dict(backend="particles", n_steps=n, n_chains=2,
                                                                   shards=2)),
    ]
    return rows


MAKERS = {"trap": make_trap, "double_well": make_double_well, "mlp": make_mlp, "overhead": make_overhead}


def time_variants(fns: dict, repeats: int, device="cpu") -> dict:
    """Median wall times of every callable in ``fns`` after one warm-up each (which also compiles),
    interleaved repeats. Returns {"times": {name: [s, ...]}, "values": {name: first return value}}."""
    times = {name: [] for name in fns}
    values = {name: fn() for name, fn in fns.items()}
    for _ in range(repeats):
        for name, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    return {"times": times, "values": values}


def time_pair(lib, bare, repeats: int, device="cpu") -> dict:
    """``time_variants`` of {"library": lib, "bare": bare} (kept for scripts)."""
    return time_variants({"library": lib, "bare": bare}, repeats, device)


def _memory_code(case: str, kw: dict, dtype: str, which: str) -> str:
    return ("import json, torch\n"
            "from mindiss import bench\n"
            f"fn = bench.MAKERS[{case!r}](dtype=torch.{dtype}, **{kw!r})[{which!r}]\n"
            + ("fn()\n" if which == "compiled" else "")
            + "r0 = bench._reset_peak_rss()\n"
            "fn()\n"
            "print(json.dumps(bench._peak_rss() - r0))\n")


def memory_per_chain(jobs, device="cpu", parallel: int = 4) -> list[float]:
    """Peak memory growth per chain, in bytes, of one run (<= 50 updates) for each
    (case, kwargs, dtype, variant) in ``jobs`` (MEMORY_METHOD). On the CPU each job is a fresh
    subprocess, ``parallel`` at a time (peak RSS is per process, so they do not disturb each other)."""
    kws = [dict(kw, n_steps=min(kw["n_steps"], 50)) for _, kw, _, _ in jobs]
    if str(device).startswith("cuda"):
        out = []
        for (case, _, dtype, which), kw in zip(jobs, kws):
            fn = MAKERS[case](dtype=getattr(torch, dtype), device=device, **kw)[which]
            if which == "compiled":
                fn()
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            fn()
            torch.cuda.synchronize()
            out.append((torch.cuda.max_memory_allocated() - base) / kw["n_chains"])
        return out
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = []
    for i in range(0, len(jobs), parallel):
        procs = [subprocess.Popen([sys.executable, "-c", _memory_code(case, kw, dtype, which)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                 for (case, _, dtype, which), kw in zip(jobs[i:i + parallel], kws[i:i + parallel])]
        for proc, kw in zip(procs, kws[i:i + parallel]):
            stdout, stderr = proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"memory measurement failed: {stderr.strip()[-500:]}")
            out.append(json.loads(stdout.strip().splitlines()[-1]) / kw["n_chains"])
    return out


def _finite(v):
    """A value for JSON: a finite float, else None (the ledger-free loop returns NaN: it has no work)."""
    return float(v) if v is not None and math.isfinite(float(v)) else None


def _row(case, label, kw, dt_name, res) -> dict:
    """One row of ``run_all``: per variant its time, throughput and value; the ratios; the targets."""
    t = res["times"]
    med = {k: statistics.median(v) for k, v in t.items()}
    n_chains = kw.get("n_chains", 1)
    chain_steps = n_chains * kw["n_steps"]
    variants = {name: {"s": med[name], "s_min_max": [min(t[name]), max(t[name])],
                       "msteps_per_s": chain_steps / med[name] / 1e6,
                       "us_per_update": med[name] / kw["n_steps"] * 1e6,
                       "value": _finite(res["values"][name]), "bytes_per_chain": None} for name in t}
    if "setup" in med:   # fixed-cost rows: the set-up (a one-update run) subtracted
        extra = len(optimal_harmonic(1.0, 1.0, 1.0).discretise(kw["n_steps"]).lr) - len(
            optimal_harmonic(1.0, 1.0, 1.0).discretise(max(kw["n_steps"] // 5, 1)).lr)
        variants["library"]["us_per_update"] = (med["library"] - med["setup"]) / extra * 1e6
    ratios = {f"{a}/{b}": med[b] / med[a] for a, b in RATIOS if a in med and b in med}
    row = {"case": case, "label": label, "kwargs": kw, **kw, "n_chains": n_chains,
           "dim": kw.get("dim", 2 if case == "mlp" else 1), "dtype": dt_name, "variants": variants,
           "ratios": ratios, "load_average": list(os.getloadavg())}
    if "library" in med:
        row.update(library_s=med["library"], library_s_min_max=variants["library"]["s_min_max"],
                   library_msteps_per_s=variants["library"]["msteps_per_s"],
                   us_per_update=variants["library"]["us_per_update"], work_library=_finite(res["values"]["library"]),
                   library_bytes_per_chain=None)
    if "bare" in med:
        row.update(bare_s=med["bare"], bare_s_min_max=variants["bare"]["s_min_max"],
                   bare_msteps_per_s=variants["bare"]["msteps_per_s"], ratio=ratios["library/bare"],
                   work_bare=_finite(res["values"]["bare"]), bare_bytes_per_chain=None)
    # a target whose variant did not run in this row (e.g. no compiled variant) is None: not judged
    targets = [{"ratio": key, "min": lo, "value": ratios.get(key),
                "met": None if key not in ratios else bool(ratios[key] >= lo)} for key, lo in CASE_TARGETS[case]]
    row["targets"] = targets
    row["target"] = ", ".join(f"{d['ratio']} >= {d['min']}" for d in targets) or "none (fixed cost per update)"
    row["meets_target"] = all(d["met"] for d in targets if d["met"] is not None)
    return row


def run_all(*, quick: bool = False, device: str = "cpu", repeats: int | None = None,
            dtypes=("float32", "float64"), memory: bool = True, cases=None, threads: int | None = None) -> dict:
    """Every configuration of `mindiss bench` in float32 and float64: per row every variant (VARIANTS)
    timed interleaved in this process, the ratios (RATIOS), the targets (CASE_TARGETS), the load
    average at the row's end and (float32 rows) the peak memory per chain of each variant. ``threads``:
    torch's intra-op threads for the timings (None: torch's default; on a machine shared with other
    jobs, 1 avoids OpenMP threads waiting on a busy core, which can slow a small kernel 10-70x)."""
    repeats = repeats or (2 if quick else 5)
    if threads is not None:
        torch.set_num_threads(threads)
    rows = []
    for case, label, kw in _configs(quick):
        if cases is not None and case not in cases:
            continue
        for dt_name in dtypes:
            if case == "overhead" and dt_name != dtypes[0]:
                continue   # the fixed cost does not depend on the dtype
            fns = MAKERS[case](dtype=getattr(torch, dt_name), device=device, **kw)
            rows.append(_row(case, label, kw, dt_name, time_variants(fns, repeats, device)))
    if memory:   # after all timings; float32 (the default chain dtype) only, not the fixed-cost rows
        picked = [r for r in rows if r["dtype"] == "float32" and r["case"] != "overhead"]
        jobs = [(r["case"], r["kwargs"], "float32", which) for r in picked for which in r["variants"]]
        got = iter(memory_per_chain(jobs, device))
        for r in picked:
            for which in r["variants"]:
                r["variants"][which]["bytes_per_chain"] = next(got)
            r["library_bytes_per_chain"] = r["variants"]["library"]["bytes_per_chain"]
            r["bare_bytes_per_chain"] = r["variants"]["bare"]["bytes_per_chain"]
    return {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "load_average": list(os.getloadavg()), "quick": quick,
            "repeats": repeats, "variants": VARIANTS, "memory_method": MEMORY_METHOD if memory else None,
            "cases": rows}


def format_table(out: dict) -> str:
    """The rows of ``run_all`` as a Markdown table (``mindiss bench`` prints it; benchmarks/README.md
    quotes it): M chain-steps/s per variant (us per update for the fixed-cost rows), the ratios, the
    load average, bytes per chain (library / fused or compiled) and the targets."""
    names = [v for v in VARIANTS if v != "setup" and any(v in r["variants"] for r in out["cases"])]
    head = ["case", "N", "d", "updates", "dtype", *names, "ratios", "load", "B/chain lib/fast", "targets"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in out["cases"]:
        fixed = r["case"] == "overhead"
        cells = []
        for v in names:
            got = r["variants"].get(v)
            cells.append("-" if got is None else (f"{got['us_per_update']:.0f} us" if fixed
                                                  else f"{got['msteps_per_s']:.3g}"))
        ratios = ", ".join(f"{k} {v:.2f}" for k, v in r["ratios"].items()) or "-"
        fast = r["variants"].get("fused") or r["variants"].get("compiled") or {}
        lib_b = r["variants"].get("library", {}).get("bytes_per_chain")
        mem = "-" if lib_b is None else f"{lib_b:.0f} / " + (f"{fast['bytes_per_chain']:.0f}"
                                                            if fast.get("bytes_per_chain") is not None else "-")
        targets = ", ".join(f"{d['ratio']} {'met' if d['met'] else 'MISSED'}" for d in r["targets"]
                            if d["met"] is not None) or "-"
        lines.append("| " + " | ".join([r["label"], str(r["n_chains"]), str(r["dim"]), str(r["n_steps"]), r["dtype"],
                                        *cells, ratios, f"{r['load_average'][0]:.1f}", mem, targets]) + " |")
    unit = "M chain-steps/s (fixed-cost rows: microseconds per update); ratio a/b = speed of a / speed of b"
    return "\n".join(lines) + "\n" + unit
