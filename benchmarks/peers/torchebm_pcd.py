"""Harmonic PCD: mindiss.train, a bare torch loop and torchebm's PCD + Langevin, timed in one process.

    python benchmarks/peers/torchebm_pcd.py [--quick] [--repeats 5] [--json]
    python benchmarks/peers/torchebm_pcd.py --configs 2000x1x20   # N x d x updates, comma-separated

The problem (identical in all three): E_theta(x) = |x - theta|^2 / (2 s), s = 1, data = N samples of
N(5, s I), theta_0 = 0, chains start in equilibrium at theta_0; per update one theta step with a
constant learning rate lr = 1e-3 on g_hat = mean_data d_theta E - mean_chains d_theta E and one
Euler-Maruyama Langevin step x' = x - mu dt grad_x E + sqrt(2 mu dt) xi (mu = 1, dt = 1e-3), float32
chains. mindiss also keeps its float64 per-chain work/heat ledger and history (torchebm and the bare
loop do not). Throughput is N x updates / median wall time (M chain-steps/s) after one warm-up, the
three interleaved in every repeat.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

import torch

import mindiss as md
from mindiss.rates.schedules import constant

VARIANCE, MOBILITY, DT, LR = 1.0, 1.0, 1e-3, 1e-3
CONFIGS = [(100_000, 1, 1000), (10_000, 2, 10_000)]


def _problem(n_chains, dim, seed):
    gen = torch.Generator().manual_seed(seed)
    data = 5.0 + math.sqrt(VARIANCE) * torch.randn(n_chains, dim, generator=gen)
    x0 = math.sqrt(VARIANCE) * torch.randn(n_chains, dim, generator=gen)
    return data, x0


def run_mindiss(n_chains, dim, n_steps, seed=0):
    data, x0 = _problem(n_chains, dim, seed)
    sched = constant(LR / DT, DT * n_steps).discretise(n_steps)
    return md.train(md.HarmonicTrap(VARIANCE, dim), data, schedule=sched, theta0=[0.0] * dim, mobility=MOBILITY,
                    n_chains=n_chains, n_replicas=1, seed=seed, dtype=torch.float32, sampler="euler",
                    chains=x0, data_term="samples").theta_final[0]


def run_bare(n_chains, dim, n_steps, seed=0):
    """Hand-written: same update, float64 theta, in-place float32 chains, noise drawn into a buffer."""
    data, x = _problem(n_chains, dim, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    data_mean = data.mean(0, dtype=torch.float64)
    theta = torch.zeros(dim, dtype=torch.float64)
    noise = torch.empty_like(x)
    h, sd = MOBILITY * DT / VARIANCE, math.sqrt(2.0 * MOBILITY * DT)
    for _ in range(n_steps):
        g = (x.mean(0, dtype=torch.float64) - data_mean) / VARIANCE   # d_theta E = (theta - x) / s
        theta = theta - LR * g
        x.mul_(1.0 - h).add_((h * theta).to(x.dtype)).add_(noise.normal_(generator=gen), alpha=sd)
    return float(theta[0])


def run_torchebm(n_chains, dim, n_steps, seed=0):
    """torchebm's PersistentContrastiveDivergence (k_steps = 1, buffer = the N chains) with its
    LangevinDynamics sampler (Euler-Maruyama, step_size = mu dt, noise_scale = 1) and torch SGD: the one
    implementation in ``mindiss.app.bench.torchebm_trap`` (also a ``mindiss bench`` row)."""
    from mindiss.app.bench import torchebm_trap

    return torchebm_trap(n_chains, dim, n_steps, seed=seed, variance=VARIANCE, mobility=MOBILITY, dt=DT, lr=LR)


def bench(configs=CONFIGS, repeats=5) -> dict:
    try:
        import torchebm
        version = torchebm.__version__
    except ImportError:
        version = None
    runners = {"mindiss": run_mindiss, "bare": run_bare}
    if version is not None:
        runners["torchebm"] = run_torchebm
    rows = []
    for n, d, k in configs:
        times = {name: [] for name in runners}
        final = {name: fn(n, d, k) for name, fn in runners.items()}   # warm-up
        for _ in range(repeats):
            for name, fn in runners.items():
                t0 = time.perf_counter()
                fn(n, d, k)
                times[name].append(time.perf_counter() - t0)
        med = {name: statistics.median(v) for name, v in times.items()}
        row = {"n_chains": n, "dim": d, "n_steps": k, "final": final,
               "msteps_per_s": {name: n * k / t / 1e6 for name, t in med.items()},
               "seconds_min_max": {name: [min(v), max(v)] for name, v in times.items()}}
        row["ratios"] = {f"{a}/{b}": row["msteps_per_s"][a] / row["msteps_per_s"][b]
                         for a, b in (("mindiss", "bare"), ("mindiss", "torchebm"), ("torchebm", "bare"))
                         if a in row["msteps_per_s"] and b in row["msteps_per_s"]}
        rows.append(row)
    return {"torch": torch.__version__, "torchebm": version, "mindiss": getattr(md, "__version__", None),
            "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "load_average": list(os.getloadavg()),
            "repeats": repeats, "configs": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10x fewer updates, 2 repeats")
    ap.add_argument("--repeats", type=int, default=0)
    ap.add_argument("--configs", default="", help="N x d x updates, comma-separated, e.g. 2000x1x20")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    configs = CONFIGS
    if args.configs:
        configs = [tuple(int(v) for v in c.split("x")) for c in args.configs.split(",")]
    if args.quick:
        configs = [(n, d, max(k // 10, 1)) for n, d, k in configs]
    out = bench(configs, args.repeats or (2 if args.quick else 5))
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"torch {out['torch']}, torchebm {out['torchebm']}, {out['threads']} threads, load average "
          f"{out['load_average'][0]:.2f}, median of {out['repeats']}")
    for r in out["configs"]:
        speeds = "  ".join(f"{k} {v:.2f}" for k, v in r["msteps_per_s"].items())
        ratios = "  ".join(f"{k} {v:.2f}" for k, v in r["ratios"].items())
        print(f"N={r['n_chains']} d={r['dim']} updates={r['n_steps']}: M chain-steps/s  {speeds}   ratios  {ratios}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
