"""Practitioner study (issue 17): a plain-PyTorch PCD loop on two moons, constant-lr Adam vs Adam +
``MinimalDissipationLR(opt, total_updates)`` with library defaults, at 0.5x, 1x and 2x the base lr.

Setting: MLP 2-64-64-1 (SiLU) + quadratic wall k |x|^2 / 2 (k = 0.5), 2,000 persistent chains,
unadjusted Langevin (10 steps, h = 0.01, mobility 1), minibatches of 500 data points, Adam.
Measured per run by ``WorkTracker`` (work, heat, Delta F by grid quadrature, excess work, measured
bias); test NLL by grid quadrature (``mindiss.evaluate.grid_nll``). Writes JSON and a figure.

Run: ``PYTHONPATH=src python benchmarks/own_loop_study.py --updates 1000 --seeds 3 --out DIR``
(CPU-heavy: about a minute per run of 1,000 updates on one core).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import mindiss as md  # noqa: E402
from mindiss.estimators.evaluate import grid_nll  # noqa: E402
from mindiss.energies.neural import NeuralEnergy  # noqa: E402
from mindiss.adapters.optim import MinimalDissipationLR  # noqa: E402
from mindiss.adapters.tracker import WorkTracker, combine  # noqa: E402

BOX = ((-8.0, 8.0), (-8.0, 8.0))
GRID_N = 401
WALL = 0.5


def make_moons(n: int, *, gen: torch.Generator, noise: float = 0.1) -> torch.Tensor:
    """Two interleaved half circles plus Gaussian noise, centred: (n, 2) float32."""
    t = torch.rand(n, generator=gen) * math.pi
    upper = torch.arange(n) < n // 2
    x = torch.where(upper[:, None], torch.stack([t.cos(), t.sin()], 1),
                    torch.stack([1.0 - t.cos(), 0.5 - t.sin()], 1))
    return x + noise * torch.randn(n, 2, generator=gen) - torch.tensor([0.5, 0.25])


class MoonsEnergy(nn.Module):
    """E_theta(x) = MLP_theta(x) + k |x|^2 / 2 (MLP 2-64-64-1, SiLU), (N, 2) -> (N,)."""

    def __init__(self, *, gen: torch.Generator, wall: float = WALL):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 64), nn.SiLU(), nn.Linear(64, 64), nn.SiLU(), nn.Linear(64, 1))
        self.wall = wall
        with torch.no_grad():
            for m in self.net:
                if isinstance(m, nn.Linear):
                    b = 1.0 / math.sqrt(m.in_features)
                    m.weight.uniform_(-b, b, generator=gen)
                    m.bias.uniform_(-b, b, generator=gen)

    def forward(self, x):
        return self.net(x).squeeze(-1) + 0.5 * self.wall * (x * x).sum(-1)


def langevin(model, x, *, gen, steps: int = 10, h: float = 0.01):
    """Unadjusted Langevin: x <- x - h grad E + sqrt(2 h) xi (mobility 1, kT = 1)."""
    for _ in range(steps):
        x = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(model(x).sum(), x)
        x = (x - h * g + math.sqrt(2 * h) * torch.randn(x.shape, generator=gen)).detach()
    return x


def test_nll(model, test) -> float:
    energy = NeuralEnergy(model, 2)
    theta = torch.nn.utils.parameters_to_vector(model.parameters()).detach().double()
    res, _ = grid_nll(energy, theta, test.double(), box=BOX, n=GRID_N)
    return res.nll


def run(schedule: str, lr: float, seed: int, updates: int) -> dict:
    """One PCD run; ``schedule``: "constant", "mindiss" (MinimalDissipationLR with defaults),
    "mindiss-final" / "mindiss-start" (with the final / start impulse switched on), "mindiss-tau"
    (alpha(t) with tau measured by the tracker), "mindiss-power" (constant excess power, tracker=)."""
    gen = torch.Generator().manual_seed(seed)
    train = make_moons(20_000, gen=gen)
    test = make_moons(5_000, gen=gen)
    model = MoonsEnergy(gen=gen)
    chains = torch.randn(2000, 2, generator=gen) / math.sqrt(WALL)
    chains = langevin(model, chains, gen=gen, steps=200)                  # burn-in at theta_0
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    tracker = WorkTracker(model, chains, data=test, box=BOX, warn_factor=0.0)
    options = {"mindiss": {}, "mindiss-final": {"final_impulse": True}, "mindiss-start": {"start_impulse": True},
               "mindiss-tau": {"tracker": tracker, "adapt": "tau"}, "mindiss-power": {"tracker": tracker}}
    sched = MinimalDissipationLR(opt, total_updates=updates, **options[schedule]) if schedule in options else None
    lrs = []
    start = time.perf_counter()
    for _ in range(updates):
        batch = train[torch.randint(0, train.shape[0], (500,), generator=gen)]
        opt.zero_grad()
        (model(batch).mean() - model(chains).mean()).backward()          # CD loss: gradient g_hat
        lrs.append(opt.param_groups[0]["lr"])
        with tracker.update():
            opt.step()
        chains = langevin(model, chains, gen=gen)
        tracker.after_move(chains)
        if sched is not None:
            sched.step()
    seconds = time.perf_counter() - start
    rep = tracker.report("quadrature", grid_n=GRID_N)
    hist = tracker.history()
    return {"schedule": schedule, "lr": lr, "seed": seed, "updates": updates, "nll": test_nll(model, test),
            "report": rep.to_dict(), "seconds": seconds, "lrs": lrs,
            "dissipation": hist["dissipation"].tolist(), "work_increments": hist["work"].tolist(),
            "lag": hist["lag"].tolist()}


def scalar_schedule_bound(run: dict, window: int = 50) -> float:
    """1 / (mean_k c_k * mean_k 1/c_k): the smallest ratio of sum_k lr_k^2 c_k to its constant-lr value
    over lr schedules with the same sum_k lr_k (the minimiser is lr_k ~ 1/c_k), with the friction
    proxy c_k = Var_i(w_ik) / (2 lr_k^2) of this constant-lr run smoothed over ``window`` updates.
    Linear response, path held fixed: a rough guide to what any scalar reshaping of the lr can gain."""
    d = np.convolve(np.asarray(run["dissipation"]), np.ones(window) / window, mode="valid")
    lr = np.asarray(run["lrs"])[: len(d)]
    c = d / lr ** 2
    return float(1.0 / (c.mean() * (1.0 / c).mean()))


def summarise(runs: list[dict]) -> list[dict]:
    rows = []
    for lr in sorted({r["lr"] for r in runs}):
        by = {s: [r for r in runs if r["lr"] == lr and r["schedule"] == s] for s in ("constant", "mindiss")}
        row = {"lr": lr}
        for s, rs in by.items():
            nll = np.array([r["nll"] for r in rs])
            ex = np.array([r["report"]["excess_work"] for r in rs])
            row[s] = {"nll": float(nll.mean()), "nll_se": float(nll.std(ddof=1) / math.sqrt(len(rs))),
                      "excess_work": float(ex.mean()), "excess_work_se": float(ex.std(ddof=1) / math.sqrt(len(rs))),
                      "excess_work_fixed_path_se": float(np.mean([r["report"]["excess_work_se"] for r in rs])),
                      "bias": float(np.mean([r["report"]["bias"] for r in rs])),
                      "bias_residual": float(np.mean([r["report"]["bias_residual"] for r in rs]))}
        row["scalar_schedule_bound"] = float(np.mean([scalar_schedule_bound(r) for r in by["constant"]]))
        row["nll_difference"] = row["mindiss"]["nll"] - row["constant"]["nll"]
        row["excess_work_ratio"] = row["mindiss"]["excess_work"] / row["constant"]["excess_work"]
        rows.append(row)
    return rows


def figure(runs, rows, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 4, figsize=(18, 4))
    base = sorted({r["lr"] for r in runs})[len({r["lr"] for r in runs}) // 2]
    for r in runs:
        if r["lr"] != base or r["seed"] != runs[0]["seed"]:
            continue
        c = "C0" if r["schedule"] == "constant" else "C1"
        ax[0].plot(r["lrs"], c, label=f"{r['schedule']} (seed {r['seed']})")
        ax[1].plot(np.cumsum(r["dissipation"]), c, label=r["schedule"])
    ax[0].set(xlabel="update", ylabel="lr", title=f"learning rate (base lr {base:g})")
    ax[1].set(xlabel="update", ylabel="sum of Var(w)/2 (kT)", title="jump dissipation, cumulative")
    for s, c in (("constant", "C0"), ("mindiss", "C1")):
        x = [row[s]["nll"] for row in rows]
        y = [row[s]["excess_work"] for row in rows]
        ax[2].errorbar(x, y, xerr=[row[s]["nll_se"] for row in rows], yerr=[row[s]["excess_work_se"] for row in rows],
                       fmt="o-", color=c, label=s)
        for row in rows:
            ax[2].annotate(f"{row['lr']:g}", (row[s]["nll"], row[s]["excess_work"]), fontsize=8)
    ax[2].set(xlabel="test NLL (nats)", ylabel="excess work W_ex (kT)", title="3 seeds: mean +- se across seeds")
    ex = [r["report"]["excess_work"] for r in runs]
    ax[3].errorbar(ex, [r["report"]["bias"] for r in runs], yerr=[r["report"]["bias_se"] for r in runs], fmt="o",
                   ms=3, label="runs (error: fixed path)")
    lim = [0, max(ex) * 1.1]
    ax[3].plot(lim, lim, "k--", lw=0.8, label="bias = W_ex")
    ax[3].set(xlabel="excess work W_ex (kT)", ylabel="measured bias L - L_approx (nats)",
              title="Identity 1 on the moons loop")
    for a in ax:
        a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--updates", type=int, default=1000)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--out", type=Path, default=Path("own_loop_study"))
    ap.add_argument("--replot", action="store_true", help="rebuild summary and figure from OUT/runs.json")
    ap.add_argument("--variants", default="",
                    help="instead: these schedules (comma-separated: mindiss-final, mindiss-start, mindiss-tau, "
                         "mindiss-power) at the base lr, written to OUT/variants.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    runs = []
    if args.replot:
        runs = json.loads((args.out / "runs.json").read_text())
    elif args.variants:
        for seed in range(args.seeds):
            for schedule in args.variants.split(","):
                r = run(schedule, args.lr, seed, args.updates)
                runs.append(r)
                print(f"lr {r['lr']:g} seed {seed} {schedule:13s} NLL {r['nll']:.4f} "
                      f"W_ex {r['report']['excess_work']:.3f} +- {r['report']['excess_work_se']:.3f}", flush=True)
                (args.out / "variants.json").write_text(json.dumps(runs))
        return {"runs": runs}
    for factor in () if args.replot else (0.5, 1.0, 2.0):
        for seed in range(args.seeds):
            for schedule in ("constant", "mindiss"):
                r = run(schedule, args.lr * factor, seed, args.updates)
                runs.append(r)
                print(f"lr {r['lr']:g} seed {seed} {schedule:9s} NLL {r['nll']:.4f} "
                      f"W_ex {r['report']['excess_work']:.3f} +- {r['report']['excess_work_se']:.3f} "
                      f"bias {r['report']['bias']:.3f} ({r['seconds']:.0f} s)", flush=True)
                (args.out / "runs.json").write_text(json.dumps(runs))
    rows = summarise(runs)
    out = {"setting": {"updates": runs[0]["updates"], "seeds": args.seeds, "base_lr": args.lr, "chains": 2000,
                       "langevin": "ULA 10 steps h=0.01", "batch": 500, "wall": WALL, "grid": [BOX, GRID_N]},
           "summary": rows}
    (args.out / "summary.json").write_text(json.dumps(out, indent=1))
    figure(runs, rows, args.out / "own_loop_study.png")
    for row in rows:
        print(f"lr {row['lr']:g}: NLL difference {row['nll_difference']:+.4f}, "
              f"W_ex ratio {row['excess_work_ratio']:.3f}")
    return out


if __name__ == "__main__":
    main()
