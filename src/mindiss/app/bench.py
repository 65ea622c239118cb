"""Throughput of the full update (``train`` itself) against bare hand-written torch loops, one process.

Each library run is ``train`` with its defaults (history recorded every update, divergence checks,
float64 theta and ledger); each bare loop does the same arithmetic per update with in-place ops and
normal draws into a buffer: g_hat, theta update, float64 per-chain work, chain move, float64 per-chain
heat. Cases (``run_all``; ``mindiss bench``): the harmonic trap with exact OU moves (``bare_trap``),
the tilted double well with Euler-Maruyama (``bare_double_well``) and a 2-64-64-1 MLP energy with
Euler-Maruyama (``bare_mlp``), in float32 and float64. Timings are medians of interleaved repeats
after one warm-up; throughput is chains x updates / time (M chain-steps/s); ratio = bare time /
library time (targets: >= 0.8 trap and double well, >= 1.2 M chain-steps/s MLP). Peak memory per
chain: see ``MEMORY_METHOD``. ``run`` / ``bare_loop`` are the original 1-D trap benchmark.
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


# ----------------------------------------------------------------- the three cases of `mindiss bench`

CASE_TARGETS = {"trap": ("ratio", 0.8), "double_well": ("ratio", 0.8), "mlp": ("library_msteps_per_s", 1.2)}
MEMORY_METHOD = ("cpu: in a fresh subprocess, after imports and data set-up, the peak RSS is reset "
                 "(/proc/self/clear_refs = 5; else ru_maxrss, which then only counts growth above the import "
                 "peak); (VmHWM after one run of <= 50 updates - VmRSS before) / N. cuda: "
                 "(torch.cuda.max_memory_allocated over one run - memory_allocated before) / N")


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


def make_trap(n_chains, dim, n_steps, dtype, device="cpu", seed=0, variance=1.0, mobility=1.0, duration=1.0):
    """(library, bare) callables for the harmonic trap with exact OU moves (optimal schedule)."""
    disc = optimal_harmonic(variance, mobility, duration).discretise(n_steps)
    energy = HarmonicTrap(variance, dim)
    data = GaussianData([5.0] * dim, [variance] * dim)

    def lib():
        return train(energy, data, schedule=disc, theta0=[0.0] * dim, mobility=mobility, n_chains=n_chains,
                     n_replicas=1, seed=seed, dtype=dtype, device=device).work

    def bare():
        return bare_trap(disc.lr, disc.dt, n_chains=n_chains, dim=dim, variance=variance, mobility=mobility,
                         theta0=0.0, target=5.0, seed=seed, dtype=dtype, device=device)

    return lib, bare


def bare_trap(lrs, dts, *, n_chains, dim, variance, mobility, theta0, target, seed, dtype, device="cpu") -> float:
    """``bare_loop`` for d >= 1 (theta a d-vector, x of shape (N, d)). Returns the mean work."""
    gen = torch.Generator(device=device).manual_seed(_seeds(seed, 1)[0][0])
    s, f64 = variance, torch.float64
    theta = torch.full((dim,), float(theta0), dtype=f64, device=device)
    xbar = torch.full((dim,), float(target), dtype=f64, device=device)
    x = (theta + math.sqrt(s) * torch.empty(n_chains, dim, dtype=f64, device=device).normal_(generator=gen)).to(dtype)
    half_k = torch.full((dim,), 0.5 / s, dtype=f64, device=device)   # sum over d as a mat-vec (fast)
    e_now = torch.mv((x.double() - theta).square_(), half_k)
    work, heat, noise = torch.zeros_like(e_now), torch.zeros_like(e_now), torch.empty_like(x)
    for lr, dt in zip(lrs, dts):
        g = (theta - xbar) / s - (theta - x.mean(0, dtype=f64)) / s
        new = theta - lr * g
        w = (x.double() * 2.0 - (theta + new)) @ ((theta - new) / (2.0 * s))
        work += w
        e_now += w
        theta = new
        if dt > 0:
            a = math.exp(-mobility * dt / s)
            x.mul_(a).add_((theta * (1 - a)).to(dtype)).add_(noise.normal_(generator=gen),
                                                              alpha=math.sqrt(s * (1 - a * a)))
            e_new = torch.mv((x.double() - theta).square_(), half_k)
            heat += e_new - e_now
            e_now = e_new
    return float(work.mean())


def make_double_well(n_chains, n_steps, dtype, device="cpu", seed=0, mobility=1.0, duration=None, scale=1.0):
    """(library, bare) for E = a (x^2-1)^2 + b x, Euler-Maruyama, data = samples, chains a given tensor."""
    from ..energies.expfamily import ExpFamily
    from ..rates.schedules import constant

    energy = ExpFamily.tilted_double_well()
    gen = torch.Generator().manual_seed(seed + 17)
    data = energy.sample_equilibrium(torch.tensor([1.5, 0.5], dtype=torch.float64), n_chains, gen=gen,
                                     dtype=torch.float64).to(device)
    x0 = energy.sample_equilibrium(torch.tensor([1.0, 0.0], dtype=torch.float64), n_chains, gen=gen,
                                   dtype=dtype).to(device)
    disc = constant(scale, duration or n_steps * 1e-3).discretise(n_steps)   # dt = 1e-3, lr = 1e-3

    def lib():
        return train(energy, data, schedule=disc, theta0=[1.0, 0.0], mobility=mobility, n_chains=n_chains,
                     n_replicas=1, seed=seed, dtype=dtype, device=device, sampler="euler",
                     chains=x0.clone()).work

    def bare():
        return bare_double_well(disc.lr, disc.dt, x0.clone(), data, theta0=(1.0, 0.0), mobility=mobility,
                                seed=seed)

    return lib, bare


def bare_double_well(lrs, dts, x, data, *, theta0, mobility, seed) -> float:
    """The same update for the tilted double well, hand-written (float64 statistics and ledger)."""
    dev, f64 = x.device, torch.float64
    gen = torch.Generator(device=dev).manual_seed(_seeds(seed, 1)[0][0])
    d64 = data.to(f64).reshape(-1)
    phi_data = torch.stack([((d64 * d64 - 1.0) ** 2).mean(), d64.mean()])
    theta = torch.tensor(theta0, dtype=f64, device=dev)
    xf = x.reshape(-1)
    x64 = xf.to(f64)
    q = (x64 * x64 - 1.0).square_()
    e_now = q * theta0[0] + x64 * theta0[1]
    work, heat, noise, grad = torch.zeros_like(e_now), torch.zeros_like(e_now), torch.empty_like(xf), \
        torch.empty_like(xf)
    for lr, dt in zip(lrs, dts):
        g = phi_data - torch.stack([q.mean(), x64.mean()])
        new = theta - lr * g
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
            e_new = q * a
            e_new.add_(x64, alpha=b)
            heat += e_new - e_now
            e_now = e_new
    return float(work.mean())


def make_mlp(n_chains, n_steps, dtype, device="cpu", seed=0, mobility=1.0, duration=None, scale=0.1,
             free_energy="exact"):
    """(library, bare) for the 2-64-64-1 SiLU MLP energy (confinement 0.1), Euler-Maruyama, data = samples.

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

    def lib():
        return train(energy, data, schedule=disc, theta0=theta0, mobility=mobility, n_chains=n_chains,
                     n_replicas=1, seed=seed, dtype=dtype, device=device, sampler="euler",
                     chains=x0.clone(), free_energy=free_energy).work

    def bare():
        return bare_mlp(disc.lr, disc.dt, x0.clone(), data.to(dtype), theta0, [p.shape for p in
                        energy.module.parameters()], confinement=0.1, mobility=mobility, seed=seed)

    return lib, bare


def bare_mlp(lrs, dts, x, data, theta0, shapes, *, confinement, mobility, seed) -> float:
    """The same update for an MLP energy, hand-written: one backward for g_hat (data and chains),
    the chain forward reused for the work, one backward for grad_x, one forward for the heat."""
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
    with torch.no_grad():
        e_now = f(theta.to(cdt), x).to(f64) + half_k * x.to(f64).square().sum(-1)
    work, heat, noise = torch.zeros_like(e_now), torch.zeros_like(e_now), torch.empty_like(x)
    for lr, dt in zip(lrs, dts):
        flat = theta.to(cdt).requires_grad_(True)
        f_chain = f(flat, x)
        (g,) = torch.autograd.grad(f(flat, data).mean() - f_chain.mean(), flat)
        new = theta - lr * g.to(f64)
        with torch.no_grad():
            new_c = new.to(cdt)
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
                e_new = f(new_c, x).to(f64) + half_k * x.to(f64).square().sum(-1)
                heat += e_new - e_now
                e_now = e_new
    return float(work.mean())


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
                                                                          free_energy="auto")))
    return rows


MAKERS = {"trap": make_trap, "double_well": make_double_well, "mlp": make_mlp}


def time_pair(lib, bare, repeats: int, device="cpu") -> dict:
    """Median wall times of ``lib`` and ``bare`` after one warm-up each, interleaved repeats."""
    times = {"library": [], "bare": []}
    values = {}
    for name, fn in (("library", lib), ("bare", bare)):
        values[name] = fn()
    for _ in range(repeats):
        for name, fn in (("library", lib), ("bare", bare)):
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    return {"times": times, "values": values}


def _memory_code(case: str, kw: dict, dtype: str, which: str) -> str:
    return ("import json, torch\n"
            "from mindiss import bench\n"
            f"lib, bare = bench.MAKERS[{case!r}](dtype=torch.{dtype}, **{kw!r})\n"
            "r0 = bench._reset_peak_rss()\n"
            f"({'lib' if which == 'library' else 'bare'})()\n"
            "print(json.dumps(bench._peak_rss() - r0))\n")


def memory_per_chain(jobs, device="cpu") -> list[float]:
    """Peak memory growth per chain, in bytes, of one run (<= 50 updates) for each
    (case, kwargs, dtype, "library" | "bare") in ``jobs`` (MEMORY_METHOD). On the CPU each job is a
    fresh subprocess; they run concurrently (peak RSS is per process, so they do not disturb each other)."""
    kws = [dict(kw, n_steps=min(kw["n_steps"], 50)) for _, kw, _, _ in jobs]
    if str(device).startswith("cuda"):
        out = []
        for (case, _, dtype, which), kw in zip(jobs, kws):
            lib, bare = MAKERS[case](dtype=getattr(torch, dtype), device=device, **kw)
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            (lib if which == "library" else bare)()
            torch.cuda.synchronize()
            out.append((torch.cuda.max_memory_allocated() - base) / kw["n_chains"])
        return out
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", _memory_code(case, kw, dtype, which)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env)
             for (case, _, dtype, which), kw in zip(jobs, kws)]
    out = []
    for proc, kw in zip(procs, kws):
        stdout, stderr = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"memory measurement failed: {stderr.strip()[-500:]}")
        out.append(json.loads(stdout.strip().splitlines()[-1]) / kw["n_chains"])
    return out


def run_all(*, quick: bool = False, device: str = "cpu", repeats: int | None = None,
            dtypes=("float32", "float64"), memory: bool = True, cases=None) -> dict:
    """Every configuration of `mindiss bench` in float32 and float64, library next to the bare loop."""
    repeats = repeats or (2 if quick else 5)
    rows = []
    for case, label, kw in _configs(quick):
        if cases is not None and case not in cases:
            continue
        for dt_name in dtypes:
            lib, bare = MAKERS[case](dtype=getattr(torch, dt_name), device=device, **kw)
            res = time_pair(lib, bare, repeats, device)
            t = res["times"]
            med = {k: statistics.median(v) for k, v in t.items()}
            chain_steps = kw["n_chains"] * kw["n_steps"]
            row = {"case": case, "label": label, "kwargs": kw, **kw, "dim": kw.get("dim", 2 if case == "mlp" else 1),
                   "dtype": dt_name, "library_s": med["library"], "bare_s": med["bare"],
                   "library_s_min_max": [min(t["library"]), max(t["library"])],
                   "bare_s_min_max": [min(t["bare"]), max(t["bare"])],
                   "library_msteps_per_s": chain_steps / med["library"] / 1e6,
                   "bare_msteps_per_s": chain_steps / med["bare"] / 1e6,
                   "ratio": med["bare"] / med["library"],
                   "work_library": res["values"]["library"], "work_bare": res["values"]["bare"]}
            key, target = CASE_TARGETS[case]
            row["target"] = f"{key} >= {target}"
            row["meets_target"] = bool(row[key] >= target)
            row["library_bytes_per_chain"] = row["bare_bytes_per_chain"] = None
            rows.append(row)
    if memory:   # after all timings; float32 (the default chain dtype) only
        picked = [r for r in rows if r["dtype"] == "float32"]
        jobs = [(r["case"], r["kwargs"], "float32", which) for r in picked for which in ("library", "bare")]
        got = memory_per_chain(jobs, device)
        for i, r in enumerate(picked):
            r["library_bytes_per_chain"], r["bare_bytes_per_chain"] = got[2 * i], got[2 * i + 1]
    return {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "load_average": list(os.getloadavg()), "quick": quick,
            "repeats": repeats, "memory_method": MEMORY_METHOD if memory else None, "cases": rows}
