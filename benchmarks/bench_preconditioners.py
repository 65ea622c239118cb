"""Cost of one training update with each learning-rate matrix (preconditioner), in one process.

    python benchmarks/bench_preconditioners.py [--quick] [--json] [--sampler mala|euler]
                                               [--repeats R] [--threads T] [--skip-full-mlp]

One update is what ``mindiss.train`` does per step (design.md, "The canonical update"): chain
statistics of d_theta E -> g_hat -> preconditioner observe + apply -> theta update -> frozen-chain
work -> chain move at the new theta -> history record. Two problems:

(a) tilted double well E = a (x^2 - 1)^2 + b x (P = 2), N = 100,000 chains, MALA (or Euler) moves:
    scalar learning rate, Fisher full / diag / low-rank (rank 256);
(b) MLP energy 2-64-64-1 (``NeuralEnergy.mlp``, SiLU, P = 4,417), 4,096 chains, 4,096 data samples,
    float32 chains: scalar, Fisher diag (per-chain gradients), diag-layers (the same column variances
    from the layer statistics, ``kfac.diagonal_fisher``), low-rank (rank 256), K-FAC (``KFACFisher``,
    factors every update and every 10th), BackPACK's ``Variance`` as a diagonal Fisher (only when
    ``backpack-for-pytorch`` is installed; not a dependency), and full (a P x P covariance from
    4,096 x 4,417 per-chain gradients plus a 4,417 x 4,417 solve per update; ``--skip-full-mlp``).
    ``--problems mlp`` runs (b) only. With (b) also the relaxation time of alpha(t): the pilot run
    against the training-chain estimator (``time_tau``). Results of 2026-12-02: benchmarks/README.md.

Two measurements per preconditioner:

* ``update_ms``: ``mindiss.train`` itself (constant schedule, a few interior updates); an observer
  stamps the time after every update, the interval between two stamps is one full update
  (impulses and the first interior update are left out); median over all intervals of all repeats.
  ``ratio`` = update_ms / update_ms of the scalar learning rate, same problem, same process.
* the breakdown, by calling the loop's pieces directly (same classes, same arguments):
  ``stats_ms`` (``grad_theta_stats``: the mean, plus per-chain gradients of all chains for
  full/diag or of a 256-chain subsample for low-rank), ``observe_ms`` + ``apply_ms`` (the
  preconditioner's own share), ``work_ms`` (``apply_update``), ``move_ms`` (``move``: the sampler
  step and the heat). ``precond_extra_ms`` = stats_ms - stats_ms(scalar) + observe_ms + apply_ms:
  what the learning-rate matrix adds to an update.

``ref``: the same result by a cheaper route, timed beside the library and checked against it:
diag: the column variances of the per-chain gradients, O(N P) (``Fisher("diag").observe`` forms
the full P x P covariance and keeps its diagonal, O(N P^2)); low-rank: the Woodbury identity, one
r x r solve (the library runs conjugate gradients, ~150 iterations at P = 4,417).

Measured 2026-11-24 on the development machine: 2 CPU cores shared with other jobs (load average
~3), torch 2.13.0+cpu, Python 3.11.7, ``--threads 1`` (with 2 threads on the loaded cores BLAS
hand-offs dominate small products: a 20,000 x 2 covariance took 47 ms instead of 0.3 ms), MALA,
float32 chains, ``python benchmarks/bench_preconditioners.py --threads 1`` (~4 min). Milliseconds
per update; the two MLP rows with one update (diag, full) are single measurements, the spread of
repeated rows was about +-30 % under that load:

    problem     preconditioner   update ms   ratio    stats  observe    apply   work   move pre extra     ref
    ---------------------------------------------------------------------------------------------------------
    double_well scalar                39.0    1.00      1.2      0.0      0.0    1.3   30.0       0.0
    double_well fisher-full           41.7    1.07      5.4      1.2      0.2    2.5   30.1       5.5
    double_well fisher-diag           43.3    1.11      1.3      1.2      0.0    1.5   31.1       1.3     1.1
    double_well fisher-lowrank        40.5    1.04      7.6      0.1      0.3    1.5   30.7       6.8     0.3
    mlp         scalar                78.8    1.00     48.0      0.0      0.0   10.9   40.9       0.0
    mlp         fisher-diag        10138.3  128.59    367.1  16828.0      0.1    6.4   24.0   17147.2   212.4
    mlp         fisher-lowrank       340.7    4.32     56.0      9.1    225.1    6.8   26.3     242.2    38.1
    mlp         fisher-full        19088.8  242.11    259.1  13810.3   5779.2    5.8   41.7   19800.7
      double_well: tilted double well, P = 2, N = 100,000
      mlp: MLP 2-64-64-1, P = 4,417, N = 4,096

Reading: with P = 2 every Fisher costs a few ms on top of a ~35 ms MALA update (ratio 1.04-1.11).
For the MLP the per-chain gradients (4,096 x 4,417, 145 MB in float64) cost ~0.3 s, the full
Fisher ~14 s for the P x P covariance and ~6 s for the 4,417^2 solve (it fits: 156 MB); the
diagonal Fisher costs as much as the full covariance because of the O(N P^2) route above (the
column variances take ~0.2 s); the low-rank Fisher is 4x the scalar update, almost all of it CG
(a Woodbury solve would take ~40 ms).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time

import torch

import mindiss as md
from mindiss.backends.chains import ParticleChains
from mindiss.data.base import as_dataset
from mindiss.rates.kfac import KFACFisher
from mindiss.rates.preconditioners import Fisher, PreconditionContext, Preconditioner
from mindiss.rates.relaxation import ChainRelaxation, diagonal_relaxation
from mindiss.backends.samplers import make_sampler

#: learning-rate scale per unit time; small so that no preconditioner drives theta out of range
#: (timings do not depend on it)
SCALE = {"double_well": 0.5, "mlp": 1e-4}


def data_mean_grad_theta(energy, data, theta):
    """E_data[d_theta E], as the training loop computes it."""
    try:
        from mindiss.backends.dispatch import data_mean_grad_theta as loop_data_term
    except ImportError:   # older loops: the closed form for quadratic energies, else the sample mean
        if getattr(energy, "gaussian", False):
            return energy.expected_grad_theta(data.mean, data.variance, theta)
        return energy.mean_grad_theta(data.samples, theta)
    return loop_data_term(energy, data, theta)


def _ms(seconds: float) -> float:
    return 1e3 * seconds


class BackpackDiag(Preconditioner):
    """The centred diagonal Fisher from BackPACK (``backpack-for-pytorch``, optional: only this
    benchmark uses it): its first-order ``Variance`` extension on loss = sum_i f(x_i) over the chains
    is the per-parameter variance of the per-chain gradients d_theta E (1/N normalisation), i.e.
    diag Cov_p[d_theta E], without an N x P array. P = (diag I + lambda)^-1, lambda = 1e-3 x mean
    diagonal (as ``Fisher("diag")``); checked against the library's per-chain route in ``main``."""

    name = "backpack-diag"
    needs = "none"

    def start(self, ctx) -> None:
        from backpack import extend

        self.energy = ctx.energy
        self.net = extend(ctx.energy.module_at(ctx.theta).to(torch.float32))
        self.var = None

    def observe(self, stats, ctx) -> None:
        import warnings

        from backpack import backpack
        from backpack.extensions import Variance

        torch.nn.utils.vector_to_parameters(ctx.theta.to(torch.float32), self.net.parameters())
        self.net.zero_grad()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")    # "no inputs require gradients": the chains are data here
            with backpack(Variance()):
                self.net(ctx.state.x.to(torch.float32)).sum().backward()
        self.var = torch.cat([p.variance.reshape(-1) for p in self.net.parameters()]).to(torch.float64)

    def apply(self, g):
        return g / (self.var + 1e-3 * float(self.var.mean()))


def _preconditioner(kind: str | None):
    if kind is None:
        return None
    if kind == "lowrank":
        return Fisher("lowrank", rank=256)
    if kind == "kfac":
        return KFACFisher()
    if kind == "kfac-r10":
        return KFACFisher(refresh=10)
    if kind == "backpack-diag":
        return BackpackDiag()
    if kind == "diag-layers":
        return Fisher("diag", route="layers")
    return Fisher(kind)


def _backpack_available() -> bool:
    try:
        import backpack  # noqa: F401
    except ImportError:
        return False
    return True


# ------------------------------------------------------------------------------ problems

def double_well_problem(n_chains: int, seed: int = 0) -> dict:
    energy = md.ExpFamily.tilted_double_well()
    gen = torch.Generator().manual_seed(seed)
    theta0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    data = energy.sample_equilibrium(torch.tensor([1.0, 0.6], dtype=torch.float64), 10_000, gen=gen,
                                     dtype=torch.float64)
    chains = energy.sample_equilibrium(theta0, n_chains, gen=gen, dtype=torch.float32)
    return {"name": "double_well", "energy": energy, "theta0": theta0, "data": data, "chains": chains,
            "dt": 0.01, "label": f"tilted double well, P = 2, N = {n_chains:,}"}


def mlp_problem(n_chains: int, seed: int = 0) -> dict:
    energy = md.NeuralEnergy.mlp(dim=2, hidden=(64, 64), gen=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    centres = torch.tensor([[-1.5, 0.0], [1.5, 0.5]], dtype=torch.float64)
    pick = torch.randint(0, 2, (n_chains,), generator=gen)
    data = centres[pick] + 0.4 * torch.randn(n_chains, 2, generator=gen, dtype=torch.float64)
    chains = 1.5 * torch.randn(n_chains, 2, generator=gen, dtype=torch.float32)
    return {"name": "mlp", "energy": energy, "theta0": energy.theta0(), "data": data, "chains": chains,
            "dt": 0.01, "label": f"MLP 2-64-64-1, P = {energy.n_params:,}, N = {n_chains:,}"}


# ------------------------------------------------------------------------------ timings

def _heavy(problem: dict, kind) -> bool:
    return problem["name"] == "mlp" and kind in ("full", "diag")   # (n, P) per-chain gradients every update


def time_train(problem: dict, kind: str | None, *, sampler: str, n_steps: int, seed: int) -> list:
    """One ``mindiss.train`` run; the per-update wall times (intervals between observer stamps)."""
    stamps: list = []

    def stamp(update, theta, state):
        stamps.append((update, time.perf_counter()))

    schedule = md.schedules.constant(SCALE[problem["name"]], problem["dt"] * n_steps)
    res = md.train(problem["energy"], problem["data"], schedule=schedule, theta0=problem["theta0"],
                   n_steps=n_steps, n_replicas=1, sampler=sampler, seed=seed, chains=problem["chains"],
                   preconditioner=_preconditioner(kind), observers=[stamp])
    if not math.isfinite(res.work):
        raise RuntimeError(f"{problem['name']}/{kind}: the run diverged")
    # stamps follow updates 1 (start impulse), 2 .. n + 1 (interior), n + 2 (end impulse); the interval
    # ending at update k is update k's body. Keep interior updates, without the first when n >= 2.
    first = 3 if n_steps >= 2 else 2
    return [t1 - t0 for (_, t0), (k1, t1) in zip(stamps[:-1], stamps[1:]) if first <= k1 <= n_steps + 1]


def time_pieces(problem: dict, kind: str | None, *, sampler: str, n_updates: int) -> dict:
    """The loop's pieces called directly: the canonical update written out with timers."""
    energy, dt = problem["energy"], problem["dt"]
    sampler_obj = make_sampler(sampler)
    gen = torch.Generator().manual_seed(0)
    theta = problem["theta0"].clone()
    data = as_dataset(problem["data"], energy.dim)
    state = ParticleChains(problem["chains"].clone(), energy, theta)
    pre = _preconditioner(kind)
    ctx = PreconditionContext(energy, theta, state, sampler_obj, 1.0, dt, torch.Generator().manual_seed(1))
    if pre is not None:
        pre.start(ctx)
    lr = SCALE[problem["name"]] * dt
    times: dict = {"stats": [], "observe": [], "apply": [], "work": [], "move": []}
    refs: dict = {"diag_colvar": [], "woodbury": []}
    for k in range(n_updates + 1):
        t0 = time.perf_counter()
        if pre is None:
            mean = state.mean_grad_theta(energy, theta)
        else:
            ctx.theta = theta
            stats = state.grad_theta_stats(energy, theta, pre.needs, pre.rows, ctx.gen)
            mean = stats.mean
        g = data_mean_grad_theta(energy, data, theta) - mean
        t1 = time.perf_counter()
        if pre is not None:
            pre.observe(stats, ctx)
        t2 = time.perf_counter()
        step = g if pre is None else pre.apply(g)
        t3 = time.perf_counter()
        theta_new = theta - lr * step
        state.apply_update(energy, theta, theta_new)
        theta = theta_new
        t4 = time.perf_counter()
        state.move(energy, theta, dt, 1.0, sampler_obj, gen)
        t5 = time.perf_counter()
        # low-rank below P: the library itself keeps a factor and solves by Woodbury (nothing cheaper to compare)
        if pre is not None and (kind == "diag" or (kind == "lowrank" and not pre.compressed)):
            refs["diag_colvar" if kind == "diag" else "woodbury"].append(_reference(kind, stats, pre, g))
        if k == 0:          # warm-up
            continue
        for name, a, b in (("stats", t0, t1), ("observe", t1, t2), ("apply", t2, t3), ("work", t3, t4),
                           ("move", t4, t5)):
            times[name].append(b - a)
    out = {f"{name}_ms": _ms(statistics.median(v)) for name, v in times.items()}
    out["pieces_ms"] = sum(out[f"{name}_ms"] for name in times)
    if kind == "lowrank":
        out["cg_iterations"] = pre.report().get("cg_iterations_mean", 0.0)
    for name, v in refs.items():
        if len(v) > 1:
            out[f"ref_{name}_ms"] = _ms(statistics.median(v[1:]))
    return out


def _reference(kind: str, stats, pre, g) -> float:
    """Seconds for the same result by a cheaper route (reported next to the library's time):
    diag: the column variances of the per-chain gradients, O(N P) (the library forms the P x P
    covariance and takes its diagonal, O(N P^2)); lowrank with P > r: the Woodbury identity
    (lambda + w C^T C / r)^-1 g = (g - C^T (r lambda / w + C C^T)^-1 C g) / lambda, one r x r solve
    (the library runs conjugate gradients), else the P x P solve. Checked against the library."""
    t0 = time.perf_counter()
    if kind == "diag":
        s = stats.samples
        var = (s - s.mean(0)).square_().sum(0) / max(s.shape[0] - 1, 1)
        elapsed = time.perf_counter() - t0
        assert torch.allclose(var, pre.estimate, rtol=1e-8, atol=1e-300)
        return elapsed
    (w, c), = pre.estimate            # one block (no EMA)
    lam, (n, p) = pre.damping, c.shape
    if p > n:
        small = (n / w) * lam * torch.eye(n, dtype=c.dtype) + c @ c.T
        x = (g - c.T @ torch.linalg.solve(small, c @ g)) / lam
    else:                             # P <= rank: the P x P system directly (Woodbury would cancel)
        x = torch.linalg.solve(lam * torch.eye(p, dtype=c.dtype) + (w / n) * (c.T @ c), g)
    elapsed = time.perf_counter() - t0
    n_cg = len(pre.cg_iterations)
    ref = pre.apply(g)
    del pre.cg_iterations[n_cg:]      # the check's own solve is not part of the run's report
    # CG stops at a relative residual of 1e-8: its answer differs by up to cond(A) 1e-8
    assert float((x - ref).norm() / x.norm()) < 1e-3, (x, ref)
    return elapsed


def run_problem(problem: dict, kinds, *, sampler: str, n_steps: int, repeats: int, piece_updates: int,
                budget_s: float) -> list:
    """Pieces first (they also size the train() runs), then train() runs interleaved over the
    preconditioners (repeat r runs every kind once) so that a change of machine load hits all alike."""
    rows = {}
    for kind in kinds:
        name = "scalar" if kind is None else f"fisher-{kind}"
        rows[kind] = {"problem": problem["name"], "preconditioner": name}
        rows[kind].update(time_pieces(problem, kind, sampler=sampler,
                                      n_updates=1 if _heavy(problem, kind) else piece_updates))
    steps = {kind: max(1, min(n_steps, int(budget_s / (1e-3 * rows[kind]["pieces_ms"])) - 2)) for kind in kinds}
    reps = {kind: 1 if _heavy(problem, kind) else repeats for kind in kinds}
    intervals: dict = {kind: [] for kind in kinds}
    for rep in range(repeats):
        for kind in kinds:
            if rep < reps[kind]:
                intervals[kind] += time_train(problem, kind, sampler=sampler, n_steps=steps[kind], seed=rep)
    for kind in kinds:
        v = intervals[kind]
        rows[kind].update(update_ms=_ms(statistics.median(v)), update_ms_min=_ms(min(v)), n_intervals=len(v),
                          train_steps=steps[kind], train_runs=reps[kind])
    scalar = rows[kinds[0]]
    for row in rows.values():
        row["ratio"] = row["update_ms"] / scalar["update_ms"]
        row["precond_extra_ms"] = row["stats_ms"] - scalar["stats_ms"] + row["observe_ms"] + row["apply_ms"]
    return list(rows.values())


def time_tau(problem: dict, *, sampler: str, n_updates: int, repeats: int, pilot_rows: int = 64,
             pilot_steps: int = 100, tau_refresh: int = 5) -> dict:
    """The relaxation time of alpha(t): a pilot run on a clone (``diagonal_relaxation``, ``pilot_rows``
    chains x ``pilot_steps`` moves at theta_0, the neural_recipes setting; the fastest of ``repeats``)
    against the training-chain estimator (``ChainRelaxation`` defaults: 64 chains, 64 lags, 1,024
    parameters) over ``n_updates`` updates of moving chains: its ``observe`` per update (a) slicing
    the per-chain gradients the update already has (natural-diag) or (b) computing them for its own
    64 chains (natural-kfac, natural-lowrank), (c) friction-diag's setting (every parameter, 32 chains,
    32 lags), plus an ``estimate`` every ``tau_refresh`` updates. Only the estimator's own work is timed (the chain moves are not)."""
    import numpy as np

    from mindiss.rates.preconditioners import GradStats

    energy, dt = problem["energy"], problem["dt"]
    sampler_obj = make_sampler(sampler)
    theta = problem["theta0"].clone()
    pilot = math.inf
    for r in range(repeats):
        t0 = time.perf_counter()
        est = diagonal_relaxation(energy, theta, problem["chains"], sampler_obj, dt=dt, mobility=1.0,
                                  gen=torch.Generator().manual_seed(r), rows=pilot_rows, n_steps=pilot_steps)
        pilot = min(pilot, time.perf_counter() - t0)
    out = {"pilot_s": pilot, "pilot_tau": est["tau_mean"], "pilot_rows": pilot_rows, "pilot_steps": pilot_steps,
           "n_updates": n_updates, "P": energy.n_params}
    for how in ("samples", "own", "friction"):
        state = ParticleChains(problem["chains"].clone(), energy, theta)
        ctx = PreconditionContext(energy, theta, state, sampler_obj, 1.0, dt, torch.Generator().manual_seed(1),
                                  np.full(n_updates + 1, dt))
        # friction-diag's setting: tau_i for every parameter from 32 chains and 32 lags
        tracker = ChainRelaxation(params=None, rows=32, lags=32) if how == "friction" else ChainRelaxation()
        tracker.start(ctx)
        gen, spent = torch.Generator().manual_seed(2), 0.0
        for k in range(n_updates):
            ctx.k = k
            stats = state.grad_theta_stats(energy, theta, "none" if how == "own" else "samples")
            t0 = time.perf_counter()
            tracker.observe(stats, ctx)
            if k % tau_refresh == 0:
                tracker.tau()
            spent += time.perf_counter() - t0
            state.move(energy, theta, dt, 1.0, sampler_obj, gen)
        est = tracker.estimate()
        out[f"chains_{how}_s"] = spent
        out[f"chains_{how}_tau"] = est["tau"]
        out[f"chains_{how}_tau_se"] = est["tau_se"]
    return out


def format_table(out: dict) -> str:
    """The rows as a text table (milliseconds per update; ratio to the scalar update)."""
    m = out["machine"]
    lines = [f"one training update per preconditioner; {out['sampler']} moves; torch {m['torch']}, "
             f"{m['threads']} thread(s), {m['cpu_count']} CPUs, load {m['load_average'][0]:.1f}"]
    head = (f"{'problem':<12}{'preconditioner':<22}{'update ms':>10}{'ratio':>8}{'stats':>9}{'observe':>9}"
            f"{'apply':>9}{'work':>7}{'move':>7}{'pre extra':>10}{'ref':>8}")
    lines += [head, "-" * len(head)]
    for r in out["rows"]:
        ref = r.get("ref_diag_colvar_ms", r.get("ref_woodbury_ms"))
        lines.append(f"{r['problem']:<12}{r['preconditioner']:<22}{r['update_ms']:>10.1f}{r['ratio']:>8.2f}"
                     f"{r['stats_ms']:>9.1f}{r['observe_ms']:>9.1f}{r['apply_ms']:>9.1f}{r['work_ms']:>7.1f}"
                     f"{r['move_ms']:>7.1f}{r['precond_extra_ms']:>10.1f}"
                     f"{'' if ref is None else format(ref, '.1f'):>8}")
    lines += [f"  {name}: {label}" for name, label in out["problems"].items()]
    if "backpack_check" in out:
        lines.append(f"  backpack-diag: max |Variance - diag Cov (1/N)| / max diag = {out['backpack_check']:.1e}")
    if "tau" in out:
        t = out["tau"]
        lines.append(f"tau of alpha(t), MLP: pilot {t['pilot_s']:.2f} s ({t['pilot_rows']} chains x {t['pilot_steps']} "
                     f"moves; tau {t['pilot_tau']:.3g}); training chains over {t['n_updates']} updates: "
                     f"{t['chains_samples_s']:.2f} s with the update's per-chain gradients (tau {t['chains_samples_tau']:.3g}"
                     f" +- {t['chains_samples_tau_se']:.2g}), {t['chains_own_s']:.2f} s computing its own 64 "
                     f"(tau {t['chains_own_tau']:.3g} +- {t['chains_own_tau_se']:.2g}); friction-diag's tau_i for all "
                     f"{t.get('P', '')} parameters (32 chains, 32 lags): {t['chains_friction_s']:.2f} s")
    m = out["machine"]
    lines.append(f"  load average at start {m['load_average'][0]:.1f}, at end {m.get('load_average_end', [math.nan])[0]:.1f}")
    return "\n".join(lines)


def _check_backpack(problem: dict) -> float:
    """BackPACK's Variance against the library's per-chain gradients on the first 512 chains (relative)."""
    energy, theta = problem["energy"], problem["theta0"]
    x = problem["chains"][:512]
    pre = BackpackDiag()
    ctx = PreconditionContext(energy, theta, ParticleChains(x.clone(), energy, theta), None, 1.0, problem["dt"],
                              torch.Generator().manual_seed(0))
    pre.start(ctx)
    pre.observe(None, ctx)
    g = energy.grad_theta(x, theta)
    ref = g.var(0, unbiased=False)
    return float((pre.var - ref).abs().max() / ref.abs().max())


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer chains and updates (a smoke run)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--sampler", default="mala", choices=("mala", "euler"))
    parser.add_argument("--repeats", type=int, default=3, help="train() runs per preconditioner")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--skip-full-mlp", action="store_true", help="leave out the 4,417 x 4,417 full Fisher")
    parser.add_argument("--problems", default="double_well,mlp", help="comma-separated: double_well, mlp")
    parser.add_argument("--tau-updates", type=int, default=300,
                        help="updates of the training-chain tau estimate timed against the pilot (0: skip)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        n_dw, n_mlp, n_steps, repeats, pieces, budget = 20_000, 512, 4, 1, 3, 2.0
    else:
        n_dw, n_mlp, n_steps, repeats, pieces, budget = 100_000, 4096, 12, max(1, args.repeats), 10, 15.0
    wanted = set(args.problems.split(","))
    mlp_kinds = [None, "diag", "diag-layers", "lowrank", "kfac", "kfac-r10"] + (["backpack-diag"] if _backpack_available() else [])
    problems = [(double_well_problem(n_dw), [None, "full", "diag", "lowrank"]) if "double_well" in wanted else None,
                (mlp_problem(n_mlp), mlp_kinds + ([] if args.skip_full_mlp else ["full"])) if "mlp" in wanted else None]
    out = {"machine": {"cpu_count": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                       "python": platform.python_version(), "load_average": list(os.getloadavg())},
           "sampler": args.sampler, "quick": args.quick, "problems": {}, "rows": []}
    for problem, kinds in filter(None, problems):
        out["problems"][problem["name"]] = problem["label"]
        if problem["name"] == "mlp" and "backpack-diag" in kinds:
            out["backpack_check"] = _check_backpack(problem)
        out["rows"] += run_problem(problem, kinds, sampler=args.sampler, n_steps=n_steps, repeats=repeats,
                                   piece_updates=pieces, budget_s=budget)
        if problem["name"] == "mlp" and args.tau_updates:
            out["tau"] = time_tau(problem, sampler=args.sampler, n_updates=args.tau_updates, repeats=2)
    out["machine"]["load_average_end"] = list(os.getloadavg())
    if args.json:
        print(json.dumps(out, indent=None))
        return out
    print(format_table(out))
    return out


if __name__ == "__main__":
    main()
