"""The neural recipe study (issue 18, item 4): dissipation against quality on 2-D toy sets with known densities.

Every run trains an MLP energy E = MLP(x) + c |x|^2 / 2 with ``core.train.train`` (persistent MALA
chains, one move of mu dt = ``step`` per update, the whole training set in every data term) and
scores it against the data's own density (``data.toy.true_log_density``):

* test NLL on ``n_test`` fresh held-out draws, ln Z by grid quadrature (``GridQuadrature``, its
  error estimate and boundary mass kept); the true density's NLL on the same draws; the gap
  test_nll - true_nll with its paired standard error std_i(E(x_i) + ln Z + ln p(x_i)) / sqrt(n);
* W_ex = <W> - Delta F (Delta F by the grid) with its **fixed-path** standard error
  std_i(W_i) / sqrt(N) over the N chains of the run (the Monte-Carlo error of W_ex given the theta
  path the run took); the **across-seed** spread of W_ex is computed only when runs are aggregated
  and is kept in separate columns;
* the curves (train NLL, test NLL, W_ex, bias L - L_approx) at the recorded updates, with the
  training wall time at each (quadrature excluded; the alpha(t) families start after their tau pilot).

Families: the named recipes of ``rates.recipes`` (SGD constant / cosine / linear, Adam, the alpha(t)
I^-1 design with each curvature estimate, friction), Adam with a cosine decay (the shipped
examples' recipe) and ``md-lr``: the rates of the drop-in scheduler ``adapters.optim.MinimalDissipationLR``
(practitioner mode, tau = the pilot's tau in updates) over plain SGD, taken from the scheduler
itself and run through ``train`` as a ``DiscreteSchedule`` (impulses off, the scheduler's default).

``run_study`` writes one JSON per finished run (atomically) and skips runs whose JSON exists, so a
killed study resumes where it stopped; ``aggregate`` builds the fronts (final gap against final W_ex,
one curve per family sorted by W_ex) at equal updates and at an equal wall-time budget;
``plot_fronts`` / ``plot_densities`` draw them. ``benchmarks/neural_study.py`` is the command line.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..backends.samplers import MALA
from ..core.train import train
from ..data import toy as datasets
from ..energies.neural import NeuralEnergy
from ..errors import DivergenceError, InputError
from ..estimators import evaluate
from ..io import atomic_write_json
from ..rates import recipes
from ..rates import schedules as S
from ..rates.preconditioners import Adam

F32, F64 = torch.float32, torch.float64

#: the alpha(t) families of ``rates.recipes`` (natural-kfac when that branch provides it)
ALPHA_FAMILIES = tuple(recipes.NEEDS_TAU)
#: every family, in the order of tables and legends
FAMILIES = ("sgd-constant", "sgd-cosine", "sgd-linear", "adam", "adam-cosine", *ALPHA_FAMILIES, "md-lr")
#: families whose scale is a per-update learning rate (the others: the factor c on alpha(t))
LR_FAMILIES = ("sgd-constant", "sgd-cosine", "sgd-linear", "adam", "adam-cosine", "md-lr")
NEEDS_PILOT = ALPHA_FAMILIES + ("md-lr",)
DATASETS = ("moons", "checkerboard")

#: scale scans (per-update lr at t = 0 for SGD / Adam, the mean per-update lr for md-lr, the factor
#: on alpha(t) for the alpha(t) families); chosen around the rates that fit on measured pilot runs
SCALES = {
    "sgd-constant": (0.03, 0.06, 0.1, 0.2), "sgd-cosine": (0.06, 0.1, 0.2, 0.4),
    "sgd-linear": (0.06, 0.1, 0.2, 0.4), "adam": (3e-4, 1e-3, 2e-3, 3e-3),
    "adam-cosine": (1.5e-3, 3e-3, 6e-3, 1.2e-2), "natural-diag": (0.01, 0.03, 0.1, 0.3),
    "natural-lowrank": (0.3, 1.0, 3.0, 10.0), "natural-kfac": (0.03, 0.1, 0.2, 0.4),
    "friction-diag": (0.01, 0.03, 0.1, 0.3), "md-lr": (0.01, 0.02, 0.05, 0.1),
}
COLORS = {"sgd-constant": "C0", "sgd-cosine": "C1", "sgd-linear": "C2", "adam": "C3", "adam-cosine": "C9",
          "natural-diag": "k", "natural-lowrank": "C4", "natural-kfac": "C6", "friction-diag": "C5",
          "md-lr": "C8"}
MARKERS = {"sgd-constant": "o", "sgd-cosine": "v", "sgd-linear": "^", "adam": "s", "adam-cosine": "D",
           "natural-diag": "P", "natural-lowrank": "X", "natural-kfac": "*", "friction-diag": "h", "md-lr": "p"}


@dataclass(frozen=True)
class Settings:
    """Everything that a run's numbers depend on besides (dataset, family, scale, seed)."""

    n_updates: int = 1000          # interior updates (each family adds its two impulse slots)
    n_chains: int = 256
    hidden: tuple = (32, 32)
    confinement: float = 0.5
    step: float = 0.2              # mu dt of the one MALA move per update
    n_data: int = 1000
    n_test: int = 5000
    n_records: int = 20            # recorded updates (each integrates ln Z on the grid)
    box: tuple = (-8.0, 8.0)
    grid_n: int = 129
    grid_max_n: int = 257
    grid_tol: float = 1e-4         # refine the grid while |ln Z_h - ln Z_2h| exceeds this
    pilot_rows: int = 32
    pilot_steps: int = 50
    density_n: int = 33            # the stored density image (first seed only) for the figures

    def fingerprint(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


FULL = Settings()
QUICK = Settings(n_updates=300, n_chains=128, n_test=2000, n_records=10, pilot_steps=32, pilot_rows=16)
#: data and held-out seeds (fixed: seeds vary the network init, the chains and the noise)
DATA_SEED, TEST_SEED = 20251003, 20251004
#: the window of the density images
VIEW = {"moons": ((-4.0, 4.0), (-3.0, 3.0)), "checkerboard": ((-3.0, 3.0), (-3.0, 3.0))}


@dataclass(frozen=True)
class RunSpec:
    dataset: str
    family: str
    scale: float
    seed: int

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.family}/scale{self.scale:g}_seed{self.seed}"


def check_choice(what: str, given, allowed) -> list:
    """The names in ``given`` (a list or a comma-separated string), each checked against ``allowed``."""
    items = [s.strip() for s in given.split(",")] if isinstance(given, str) else list(given)
    items = [s for s in items if s]
    if not items:
        raise InputError(f"{what}: give at least one of {', '.join(allowed)}")
    bad = [s for s in items if s not in allowed]
    if bad:
        raise InputError(f"unknown {what} {', '.join(map(repr, bad))}; choose from {', '.join(allowed)}")
    return items


def specs(datasets_=DATASETS, families=FAMILIES, seeds=(0, 1, 2), scales=None) -> list[RunSpec]:
    """The runs of a study: every dataset x family x scale (``scales`` overrides ``SCALES``) x seed, seed
    first (a study stopped early has whole fronts with fewer seeds, not whole families missing)."""
    datasets_ = check_choice("dataset", datasets_, datasets.TOY)
    families = check_choice("family", families, FAMILIES)
    out = []
    for seed in seeds:
        for d in datasets_:
            for f in families:
                for s in (scales or SCALES)[f]:
                    out.append(RunSpec(d, f, float(s), int(seed)))
    return out


# ---------------------------------------------------------------------------- one run

class _Seed:
    """What a (dataset, seed) pair fixes for every family: the energy with its grid, theta_0, the
    initial chains (grid draws of p_theta0) and the tau pilot (its seconds are charged to the runs
    that use it)."""

    def __init__(self, dataset: str, seed: int, cfg: Settings):
        self.energy = evaluate.GridQuadrature(
            NeuralEnergy.mlp(2, cfg.hidden, "silu", cfg.confinement, gen=1000 + seed), box=cfg.box, n=cfg.grid_n,
            dtype=F32, refine_tol=cfg.grid_tol, max_n=cfg.grid_max_n)
        self.theta0 = self.energy.theta0()
        self.chains = self.energy.sample_equilibrium(self.theta0, cfg.n_chains,
                                                     gen=torch.Generator().manual_seed(2000 + seed))
        self.seed, self.cfg = seed, cfg
        self._relaxation, self.pilot_seconds = None, math.nan

    @property
    def relaxation(self) -> dict:
        if self._relaxation is None:
            start = time.perf_counter()
            self._relaxation = recipes.diagonal_relaxation(
                self.energy.inner, self.theta0, self.chains, MALA(), dt=self.cfg.step, mobility=1.0,
                gen=torch.Generator().manual_seed(3000 + self.seed), rows=self.cfg.pilot_rows,
                n_steps=self.cfg.pilot_steps)
            self.pilot_seconds = time.perf_counter() - start
        return self._relaxation


class Context:
    """Data, held-out draws and per-seed objects shared by the runs of one process (built lazily)."""

    def __init__(self, cfg: Settings):
        self.cfg = cfg
        self._data, self._test, self._seeds = {}, {}, {}

    def data(self, name):
        if name not in self._data:
            self._data[name] = datasets.toy(name, self.cfg.n_data, gen=DATA_SEED)
        return self._data[name]

    def test(self, name):
        """(held-out draws, ln p_true at them, the true density's error estimate)."""
        if name not in self._test:
            x = datasets.toy(name, self.cfg.n_test, gen=TEST_SEED)
            t = datasets.true_log_density(name, x)
            self._test[name] = (x, t.log_density, t.error_estimate)
        return self._test[name]

    def warm_up(self, dataset) -> None:
        """One short untimed pilot on a throwaway seed: the first per-chain gradients of a process carry
        one-off costs (torch.func) that would otherwise be charged to the first timed pilot."""
        _Seed(dataset, 999, replace(self.cfg, n_chains=16, pilot_rows=4, pilot_steps=8)).relaxation  # noqa: B018

    def seed(self, dataset, seed) -> _Seed:
        key = (dataset, seed)
        if key not in self._seeds:
            self._seeds = {k: v for k, v in self._seeds.items() if k[0] == dataset}   # keep memory flat
            self._seeds[key] = _Seed(dataset, seed, self.cfg)
        return self._seeds[key]


def md_lr_rates(n_updates: int, tau_updates: float, base_lr: float) -> np.ndarray:
    """The n per-update learning rates ``MinimalDissipationLR(SGD(lr=base_lr), n, tau=tau_updates)`` sets,
    read from the scheduler itself (lr_k = base_lr r_k, r_k = alpha at unit steps normalised to mean 1)."""
    from ..adapters.optim import MinimalDissipationLR

    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=base_lr)
    sched = MinimalDissipationLR(opt, n_updates, tau=tau_updates)
    out = []
    for _ in range(n_updates):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return np.asarray(out, float)


def make_recipe(family: str, scale: float, cfg: Settings, relaxation: dict | None):
    """(schedule, preconditioner) of a family at ``scale`` over n_updates interior updates of dt = step."""
    T = cfg.n_updates * cfg.step
    if family == "adam-cosine":
        return S.cosine(scale / cfg.step, T), Adam()
    if family == "md-lr":
        tau_updates = float(relaxation["tau_mean"]) / cfg.step
        lr = md_lr_rates(cfg.n_updates, tau_updates, scale)
        n = cfg.n_updates
        d = S.DiscreteSchedule(lr=np.concatenate([[0.0], lr, [0.0]]),
                               dt=np.concatenate([[0.0], np.full(n, cfg.step), [0.0]]),
                               t=np.concatenate([[0.0], cfg.step * np.arange(n), [T]]),
                               is_impulse=np.array([True] + [False] * n + [True]), duration=T)
        return d, None
    if family in ALPHA_FAMILIES:
        r = recipes.recipe(family, scale=scale, duration=T, relaxation=relaxation)
    else:
        r = recipes.recipe(family, scale=scale / cfg.step, duration=T)
    return r.schedule, r.preconditioner


def _density(energy, theta, view, n) -> list:
    """p_theta normalised over the ``view`` window on an n x n grid (rows: y), rounded for storage."""
    xs = torch.linspace(*view[0], n, dtype=F64)
    ys = torch.linspace(*view[1], n, dtype=F64)
    pts = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(-1, 2)
    p = torch.softmax(-energy.energy(pts.to(F32), theta).to(F64), 0).reshape(n, n)
    return [[float(f"{v:.4g}") for v in row] for row in p.tolist()]


def _finite(v):
    return float(v) if v is not None and math.isfinite(float(v)) else None


def run_one(spec: RunSpec, ctx: Context, *, keep_density: bool | None = None, keep_thetas: bool = False) -> dict:
    """Train one run and score it; returns a JSON-ready dict (``diverged``: the reason, else None).
    ``keep_density``: store the model density image (default: seed 0 only); ``keep_thetas``: also
    return the theta path and chain-move lengths as ``_thetas`` / ``_dts`` (arrays; not for JSON)."""
    cfg = ctx.cfg
    s = ctx.seed(spec.dataset, spec.seed)
    data = ctx.data(spec.dataset)
    needs_pilot = spec.family in NEEDS_PILOT
    relaxation = s.relaxation if needs_pilot else None
    offset = s.pilot_seconds if needs_pilot else 0.0
    out = {"dataset": spec.dataset, "family": spec.family, "scale": spec.scale, "seed": spec.seed,
           "updates": cfg.n_updates, "n_chains": cfg.n_chains, "settings": cfg.fingerprint(),
           "pilot_seconds": offset, "tau": float(relaxation["tau_mean"]) if relaxation else None,
           "diverged": None}
    e = s.energy
    e.eval_seconds, e.worst_error, e.worst_boundary_mass, e.n_refined = 0.0, 0.0, 0.0, 0
    times = {0: 0.0}
    start = time.perf_counter()

    def clock(update, theta, state):
        times[update] = time.perf_counter() - start - e.eval_seconds

    try:
        schedule, pre = make_recipe(spec.family, spec.scale, cfg, relaxation)
        record_every = max(1, (cfg.n_updates + 2) // cfg.n_records)
        res = train(e, data, schedule=schedule, preconditioner=pre, theta0=s.theta0, chains=s.chains,
                    sampler=MALA(), n_steps=cfg.n_updates, n_chains=cfg.n_chains, n_replicas=1,
                    seed=spec.seed, free_energy="exact", record_every=record_every, observers=[clock],
                    keep_chains=True)
    except DivergenceError as exc:
        out.update(diverged=str(exc), wall_seconds=time.perf_counter() - start - e.eval_seconds + offset)
        return out
    h = res.history
    upd = h["update"].astype(int)
    secs = np.array([times.get(int(k), math.nan) for k in upd]) + offset
    x_test, logp_true, true_err = ctx.test(spec.dataset)
    x_tr = torch.as_tensor(data, dtype=F64)
    test_curve = []
    for k, lt in zip(upd, h["loss_true"]):
        th = torch.as_tensor(res.thetas[int(k)])
        e_tr = float(e.inner.energy(x_tr.to(F32), th).to(F64).mean())
        e_te = float(e.inner.energy(x_test.to(F32), th).to(F64).mean())
        test_curve.append(float(lt) - e_tr + e_te)        # ln Z = L_train - E_train[E]
    th = torch.as_tensor(res.thetas[-1])
    q = e.log_partition(th)
    d = e.inner.energy(x_test.to(F32), th).to(F64) + q.log_partition + logp_true
    true_nll = float(-logp_true.mean())
    w = np.asarray(res.chain_work, float)
    fixed_se = float(w.std(ddof=1) / math.sqrt(w.size))
    out.update(
        wall_seconds=float(secs[-1]), n_updates_total=int(res.n_updates),
        test_nll=float(true_nll + d.mean()),
        true_density_nll=true_nll, true_density_nll_se=float(logp_true.std() / math.sqrt(len(logp_true))),
        true_density_error=float(true_err), gap=float(d.mean()), gap_se=float(d.std() / math.sqrt(d.numel())),
        excess_work=float(res.excess_work), excess_work_fixed_path_se=fixed_se, work=float(res.work),
        delta_free_energy=float(res.delta_free_energy), bias=float(res.bias),
        first_law=float(res.first_law_residual), acceptance=_finite(res.acceptance_rate),
        grid_error=float(e.worst_error), grid_boundary_mass=float(e.worst_boundary_mass),
        grid_final_n=int(q.n), grid_refined=int(e.n_refined),
        curves={"update": upd.tolist(), "seconds": secs.tolist(), "train_nll": h["loss_true"].tolist(),
                "test_nll": test_curve, "gap": [v - true_nll for v in test_curve],
                "excess_work": h["excess_work"].tolist(), "bias": (h["loss_true"] - h["loss_approx"]).tolist()})
    if not (math.isfinite(out["gap"]) and math.isfinite(out["excess_work"])):
        out["diverged"] = "non-finite test NLL or W_ex"
    elif max(e.worst_error, e.worst_boundary_mass) > 1e-3:
        out["diverged"] = (f"grid quadrature not converged (error {e.worst_error:.2g}, boundary mass "
                           f"{e.worst_boundary_mass:.2g}): the density left the box or grew too sharp")
    if keep_density if keep_density is not None else spec.seed == 0:
        out["density"] = _density(e.inner, th, VIEW.get(spec.dataset, ((-4, 4), (-4, 4))), cfg.density_n)
    if keep_thetas:
        out["_thetas"], out["_dts"] = np.asarray(res.thetas), np.asarray(res.dts)
    if out["diverged"]:
        out["curves"] = None
    return out


# ---------------------------------------------------------------------------- the study

def run_path(out_dir, spec: RunSpec) -> Path:
    return Path(out_dir) / "runs" / f"{spec.key}.json"


def run_study(out_dir, run_specs, cfg: Settings = FULL, *, log=print, limit: int | None = None) -> dict:
    """Run every spec whose JSON is missing under ``out_dir/runs`` (one JSON per run, written
    atomically when it finishes); returns {"done": n newly run, "skipped": n already there}."""
    out_dir = Path(out_dir)
    ctx = Context(cfg)
    warmed = set()
    done = skipped = 0
    t0 = time.perf_counter()
    for i, spec in enumerate(run_specs):
        path = run_path(out_dir, spec)
        if path.exists():
            old = json.loads(path.read_text())
            if old.get("settings") != cfg.fingerprint():
                raise InputError(f"{path} was written with other settings; use a fresh --out (or delete it)")
            skipped += 1
            continue
        if limit is not None and done >= limit:
            break
        path.parent.mkdir(parents=True, exist_ok=True)
        if spec.dataset not in warmed and spec.family in NEEDS_PILOT:
            ctx.warm_up(spec.dataset)
            warmed.add(spec.dataset)
        r = run_one(spec, ctx)
        atomic_write_json(path, _json_safe(r))
        done += 1
        log(f"[{i + 1}/{len(run_specs)}] {spec.key}: "
            + (f"diverged ({r['diverged'][:60]})" if r["diverged"] else
               f"gap {r['gap']:.3f} W_ex {r['excess_work']:.3f} +- {r['excess_work_fixed_path_se']:.3f}")
            + f", {r.get('wall_seconds', math.nan):.1f} s (study {time.perf_counter() - t0:.0f} s)")
    return {"done": done, "skipped": skipped}


def _json_safe(v):
    if isinstance(v, dict):
        return {k: _json_safe(a) for k, a in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(a) for a in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (np.floating, np.integer)):
        return _json_safe(v.item())
    return v


def load_runs(out_dir) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((Path(out_dir) / "runs").rglob("*.json"))]


# ---------------------------------------------------------------------------- aggregation

def _mean_se(values) -> tuple[float, float]:
    """Mean and standard error of the mean over the given values (NaN SE for fewer than two)."""
    v = np.asarray([a for a in values if a is not None and math.isfinite(a)], float)
    if v.size == 0:
        return math.nan, math.nan
    return float(v.mean()), (float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else math.nan)


def read_at(curve_x, curve_y, x) -> float:
    """y at x on a recorded curve, linear between records; the last value beyond the curve's end, the
    first before its start (a run that has not started yet is still at theta_0)."""
    cx, cy = np.asarray(curve_x, float), np.asarray(curve_y, float)
    ok = np.isfinite(cx) & np.isfinite(cy)
    return float(np.interp(x, cx[ok], cy[ok])) if ok.any() else math.nan


def calibrate(datasets_, families, cfg: Settings, *, rounds: int = 3, updates: int = 60, log=print) -> dict:
    """Seconds per update of each family (training only) and of the tau pilot, measured in one process on
    short runs at each family's middle scale, the families taking turns for ``rounds`` rounds, each keeping
    its fastest round: a shared machine's load drifts over a long study, so the runs' own clocks are not
    comparable between runs made at different times; these calibrated costs are (``calibrated_times``)."""
    short = replace(cfg, n_updates=updates, n_records=2)
    out = {"seconds_per_update": {}, "pilot_seconds": {}, "rounds": rounds, "updates": updates}
    for ds in datasets_:
        spu, pilot = {f: math.inf for f in families}, math.inf
        for k in range(rounds):
            ctx = Context(short)
            ctx.warm_up(ds)
            s = ctx.seed(ds, 100 + k)
            s.relaxation                                    # noqa: B018 (times the pilot)
            pilot = min(pilot, s.pilot_seconds)
            for f in families:
                sc = SCALES[f][1]
                r = run_one(RunSpec(ds, f, sc, 100 + k), ctx, keep_density=False)
                if r["diverged"]:
                    continue
                spu[f] = min(spu[f], (r["wall_seconds"] - r["pilot_seconds"]) / r["n_updates_total"])
        out["seconds_per_update"][ds] = {f: (v if math.isfinite(v) else None) for f, v in spu.items()}
        out["pilot_seconds"][ds] = pilot
        log(f"calibration {ds}: " + ", ".join(f"{f} {1e3 * v:.2f} ms" for f, v in spu.items())
            + f", pilot {pilot:.2f} s")
    return out


def calibrated_times(runs: list[dict], calibration: dict) -> list[dict]:
    """The runs with their curves' ``seconds`` replaced by calibrated time: pilot (the families that use one)
    + update x the family's calibrated seconds per update; ``wall_seconds`` likewise (the measured ones are
    kept as ``measured_wall_seconds``). Runs of a family without a calibration are left out."""
    out = []
    for r in runs:
        spu = (calibration["seconds_per_update"].get(r["dataset"]) or {}).get(r["family"])
        if spu is None:
            continue
        pilot = calibration["pilot_seconds"][r["dataset"]] if r["family"] in NEEDS_PILOT else 0.0
        q = dict(r, measured_wall_seconds=r.get("wall_seconds"), pilot_seconds=pilot)
        total = r.get("n_updates_total", r["updates"] + 2)
        q["wall_seconds"] = pilot + total * spu
        if r.get("curves"):
            q["curves"] = dict(r["curves"], seconds=[pilot + k * spu for k in r["curves"]["update"]])
        out.append(q)
    return out


def wall_budget(runs: list[dict]) -> float:
    """The equal-wall-time budget of a dataset: the median training time of its finished sgd-constant
    runs (the plain loop), else the median over all finished runs."""
    ok = [r for r in runs if not r.get("diverged")]
    ref = [r["wall_seconds"] for r in ok if r["family"] == "sgd-constant"] or [r["wall_seconds"] for r in ok]
    return float(np.median(ref)) if ref else math.nan


def _point(group: list[dict], budget: float | None) -> dict:
    """One front point: a (family, scale) over its seeds. Means and across-seed SEs of the gap and W_ex
    (``*_seed_se``), kept apart from the fixed-path error of W_ex (``excess_work_fixed_path_se``:
    sqrt(sum_s se_s^2) / n_seeds, the Monte-Carlo error of the seed mean given the paths)."""
    ok = [r for r in group if not r.get("diverged")]
    if budget is None:
        gaps, wex = [r["gap"] for r in ok], [r["excess_work"] for r in ok]
        fixed = [r["excess_work_fixed_path_se"] for r in ok]
        secs = [r["wall_seconds"] for r in ok]
    else:
        gaps = [read_at(r["curves"]["seconds"], r["curves"]["gap"], budget) for r in ok]
        wex = [read_at(r["curves"]["seconds"], r["curves"]["excess_work"], budget) for r in ok]
        fixed = [math.nan for _ in ok]           # the chain work is stored at the end of a run only
        secs = [min(budget, r["wall_seconds"]) for r in ok]
    g, g_se = _mean_se(gaps)
    w, w_se = _mean_se(wex)
    fx = [f for f in fixed if math.isfinite(f)]
    return {"family": group[0]["family"], "scale": group[0]["scale"], "n_seeds": len(ok),
            "n_diverged": len(group) - len(ok), "gap": g, "gap_seed_se": g_se, "excess_work": w,
            "excess_work_seed_se": w_se,
            "excess_work_fixed_path_se": (math.sqrt(sum(f * f for f in fx)) / len(fx)) if fx else math.nan,
            "seconds": _mean_se(secs)[0], "seeds": sorted(r["seed"] for r in ok)}


def pareto(points: list[dict]) -> list[dict]:
    """The non-dominated points (no other point has both a lower gap and a lower W_ex), sorted by W_ex."""
    pts = sorted((p for p in points if math.isfinite(p["gap"]) and math.isfinite(p["excess_work"])),
                 key=lambda p: (p["excess_work"], p["gap"]))
    out, best = [], math.inf
    for p in pts:
        if p["gap"] < best:
            out.append(p)
            best = p["gap"]
    return out


def least_work_at(points: list[dict], gap_level: float) -> dict | None:
    """The point with the least mean W_ex among those whose mean gap is <= gap_level (None if none)."""
    ok = [p for p in points if math.isfinite(p["gap"]) and p["gap"] <= gap_level and math.isfinite(p["excess_work"])]
    return min(ok, key=lambda p: p["excess_work"]) if ok else None


def best_gap_within(points: list[dict], work_budget: float) -> dict | None:
    """The point with the lowest mean gap among those whose mean W_ex is <= work_budget (None if none)."""
    ok = [p for p in points if math.isfinite(p["gap"]) and math.isfinite(p["excess_work"])
          and p["excess_work"] <= work_budget]
    return min(ok, key=lambda p: p["gap"]) if ok else None


#: the dissipation budgets (kT) at which the fronts' best gaps are compared
WORK_BUDGETS = (1.0, 5.0)


def aggregate(runs: list[dict], expected: list[RunSpec] | None = None, calibration: dict | None = None) -> dict:
    """Per dataset: front points per family at equal updates and at the equal wall-time budget
    (each sorted by W_ex), the Pareto subsets, the best gap per family, the least W_ex at common
    gap levels, and the runs still missing from ``expected``. With ``calibration`` (``calibrate``) the
    time axes are the calibrated ones (``calibrated_times``), else the runs' own clocks."""
    if calibration is not None:
        runs = calibrated_times(runs, calibration)
    out = {"datasets": {}, "missing": [], "time_axis": "calibrated" if calibration is not None else "measured"}
    have = {(r["dataset"], r["family"], float(r["scale"]), int(r["seed"])) for r in runs}
    if expected:
        out["missing"] = [s.key for s in expected if (s.dataset, s.family, s.scale, s.seed) not in have]
    for ds in sorted({r["dataset"] for r in runs}):
        rs = [r for r in runs if r["dataset"] == ds]
        budget = wall_budget(rs)
        groups = {}
        for r in rs:
            groups.setdefault((r["family"], float(r["scale"])), []).append(r)
        fams = [f for f in FAMILIES if any(k[0] == f for k in groups)]
        res = {"budget_seconds": budget, "n_runs": len(rs), "n_diverged": sum(bool(r.get("diverged")) for r in rs),
               "true_density_nll": _mean_se([r.get("true_density_nll") for r in rs])[0],
               "seconds_per_update": {}, "pilot_seconds": {}, "equal_updates": {}, "equal_wall_time": {}}
        for f in fams:
            ok = [r for r in rs if r["family"] == f and not r.get("diverged")]
            res["seconds_per_update"][f] = _mean_se([(r["wall_seconds"] - r["pilot_seconds"]) / r["updates"]
                                                     for r in ok])[0]
            res["pilot_seconds"][f] = _mean_se([r["pilot_seconds"] for r in ok])[0]
            for mode, b in (("equal_updates", None), ("equal_wall_time", budget)):
                pts = [_point(g, b) for (fam, _), g in sorted(groups.items()) if fam == f]
                pts.sort(key=lambda p: (math.isnan(p["excess_work"]), p["excess_work"]))
                res[mode][f] = {"points": pts, "front": pareto(pts)}
        for mode in ("equal_updates", "equal_wall_time"):
            allp = [p for f in fams for p in res[mode][f]["points"]]
            finite = sorted(p["gap"] for p in allp if math.isfinite(p["gap"]))
            levels = []
            if finite:
                # the quality levels compared: 1.1 and 1.5 times the best mean gap any (family, scale) reaches
                levels = sorted({round(1.1 * finite[0], 3), round(1.5 * finite[0], 3)})
            res[mode]["levels"] = {
                str(lv): {f: least_work_at(res[mode][f]["points"], lv) for f in fams} for lv in levels}
            res[mode]["work_budgets"] = {
                str(w): {f: best_gap_within(res[mode][f]["points"], w) for f in fams} for w in WORK_BUDGETS}
        out["datasets"][ds] = res
    return out


def revive(agg: dict) -> dict:
    """An ``aggregate`` result read back from JSON: the front points' nulls (NaN on the way out) become NaN."""
    def fix(p):
        return None if p is None else {k: (math.nan if v is None and k not in ("seeds",) else v) for k, v in p.items()}

    for res in agg.get("datasets", {}).values():
        for mode in ("equal_updates", "equal_wall_time"):
            for f, v in res[mode].items():
                if f in ("levels", "work_budgets"):
                    res[mode][f] = {lv: {g: fix(p) for g, p in by.items()} for lv, by in v.items()}
                else:
                    v["points"] = [fix(p) for p in v["points"]]
                    v["front"] = [fix(p) for p in v["front"]]
        for key in ("budget_seconds", "true_density_nll"):
            if res.get(key) is None:
                res[key] = math.nan
    return agg


def summary_table(agg: dict, mode: str = "equal_updates") -> tuple[list, list]:
    """(columns, rows): one row per (dataset, family, scale): gap and W_ex with the across-seed SE and,
    separately, the fixed-path SE of W_ex."""
    cols = ["dataset", "family", "scale", "n_seeds", "n_diverged", "gap", "gap_seed_se", "excess_work",
            "excess_work_seed_se", "excess_work_fixed_path_se", "seconds", "on_front"]
    rows = []
    for ds, res in agg["datasets"].items():
        for f in FAMILIES:
            if f not in res[mode]:
                continue
            front = {p["scale"] for p in res[mode][f]["front"]}
            for p in sorted(res[mode][f]["points"], key=lambda p: p["scale"]):
                rows.append([ds, f, p["scale"], p["n_seeds"], p["n_diverged"], p["gap"], p["gap_seed_se"],
                             p["excess_work"], p["excess_work_seed_se"], p["excess_work_fixed_path_se"],
                             p["seconds"], p["scale"] in front])
    return cols, rows


# ---------------------------------------------------------------------------- figures

#: the smallest value drawn on the fronts' log axes
FLOOR = 1e-3


def draw_fronts(ax, fams: dict, *, title: str, label_scales: bool = True, y_max: float = 4.0) -> None:
    """One family per curve: its scan points sorted by W_ex, joined; error bars are the across-seed SE;
    marker labels give the scale; scales whose every seed diverged are counted in the legend entry, and
    points where some seeds diverged (the mean over the others) are drawn open."""
    any_partial = False
    for f in FAMILIES:
        if f not in fams:
            continue
        pts = [p for p in fams[f]["points"] if math.isfinite(p["gap"]) and math.isfinite(p["excess_work"])]
        n_div = sum(p["n_diverged"] > 0 and p["n_seeds"] == 0 for p in fams[f]["points"])
        lab = f + (f" ({n_div} scale{'s' if n_div > 1 else ''} diverged)" if n_div else "")
        if not pts:
            ax.plot([], [], color=COLORS[f], marker=MARKERS[f], ls="none", label=lab + " [no finished run]")
            continue
        # log axes: values below FLOOR are drawn at FLOOR, lower error bars stop at 0.9 x the value
        xs = [max(p["excess_work"], FLOOR) for p in pts]
        ys = [max(p["gap"], FLOOR) for p in pts]
        xe = [_z(p["excess_work_seed_se"]) for p in pts]
        ye = [_z(p["gap_seed_se"]) for p in pts]
        ax.errorbar(xs, ys, xerr=[[min(e, 0.9 * x) for e, x in zip(xe, xs)], xe],
                    yerr=[[min(e, 0.9 * y) for e, y in zip(ye, ys)], ye],
                    color=COLORS[f], marker=MARKERS[f], ms=5, lw=1, capsize=2, label=lab)
        part = [(x, y) for x, y, p in zip(xs, ys, pts) if p["n_diverged"] > 0]
        if part:          # a mean over the seeds that survived: drawn open
            ax.plot(*zip(*part), ls="none", marker=MARKERS[f], ms=5, mfc="white", mec=COLORS[f], zorder=3)
            any_partial = True
        if label_scales:
            for x, y, p in zip(xs, ys, pts):
                ax.annotate(f"{p['scale']:g}", (x, y), fontsize=5, xytext=(2, 2), textcoords="offset points",
                            color=COLORS[f])
    if any_partial:
        ax.plot([], [], ls="none", marker="o", mfc="white", mec="0.3", label="open: some seeds diverged")
    ax.set_xscale("log")
    ax.set_yscale("log")
    from matplotlib.ticker import NullFormatter

    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())
    ys_all = [p["gap"] for f in FAMILIES if f in fams for p in fams[f]["points"] if math.isfinite(p["gap"])]
    if ys_all and max(ys_all) > y_max:       # a collapsed model would squash the fronts: clip, and say so
        n_off = sum(y > y_max for y in ys_all)
        ax.set_ylim(top=y_max)
        ax.text(0.98, 0.98, f"{n_off} point{'s' if n_off > 1 else ''} above {y_max:g} nats (see table)",
                transform=ax.transAxes, ha="right", va="top", fontsize=6)
    ax.set(xlabel="final W_ex (kT)", ylabel="test NLL - true density NLL (nats)", title=title)


def _fmt(v) -> str:
    return f"{v:.2g}" if v is not None and math.isfinite(v) else "n/a"


def _z(v):
    return v if v is not None and math.isfinite(v) else 0.0


def plot_fronts(agg: dict):
    import matplotlib.pyplot as plt

    dss = list(agg["datasets"])
    fig, axes = plt.subplots(len(dss), 2, figsize=(13, 5 * len(dss)), squeeze=False)
    for i, ds in enumerate(dss):
        res = agg["datasets"][ds]
        draw_fronts(axes[i, 0], res["equal_updates"], title=f"{ds}: equal updates (final of every run)")
        draw_fronts(axes[i, 1], res["equal_wall_time"],
                    title=f"{ds}: equal wall time ({res['budget_seconds']:.1f} s of training, "
                          f"{agg.get('time_axis', 'measured')} clock)")
        axes[i, 0].legend(fontsize=6, loc="best")
    fig.tight_layout()
    return fig


def plot_densities(runs: list[dict], agg: dict, data_by_name: dict | None = None):
    """Per dataset: the data, then the model density of each family's best-gap scale (first seed)."""
    import matplotlib.pyplot as plt

    dss = list(agg["datasets"])
    fams = [f for f in FAMILIES if any(r["family"] == f for r in runs)]
    fig, axes = plt.subplots(len(dss), len(fams) + 1, figsize=(1.9 * (len(fams) + 1), 1.9 * len(dss)), squeeze=False)
    for i, ds in enumerate(dss):
        view = VIEW.get(ds, ((-4, 4), (-4, 4)))
        ax = axes[i, 0]
        x = datasets.toy(ds, 2000, gen=DATA_SEED).numpy() if data_by_name is None else data_by_name[ds]
        ax.scatter(x[:, 0], x[:, 1], s=0.3, color="0.2")
        ax.set_title(f"{ds}: data", fontsize=7)
        for j, f in enumerate(fams):
            ax = axes[i, j + 1]
            pts = agg["datasets"][ds]["equal_updates"].get(f, {}).get("points", [])
            pts = [p for p in pts if math.isfinite(p["gap"])]
            if pts:
                best = min(pts, key=lambda p: p["gap"])
                r = next((r for r in runs if r["dataset"] == ds and r["family"] == f and r["scale"] == best["scale"]
                          and r.get("density")), None)
                if r is not None:
                    ax.imshow(np.asarray(r["density"]), origin="lower", extent=(*view[0], *view[1]), cmap="Greys",
                              aspect="auto")
                    ax.set_title(f"{f} {best['scale']:g}\n" + (
                        f"seed {r['seed']} (shown) diverged" if r.get("diverged")
                        else f"gap {r['gap']:.2f}, W_ex {r['excess_work']:.2g}"), fontsize=6)
            else:
                ax.set_title(f"{f}: no finished run", fontsize=6)
        for ax in axes[i]:
            ax.set_xlim(*view[0])
            ax.set_ylim(*view[1])
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    return fig


def claims(agg: dict) -> list[str]:
    """Plain-language statements with numbers: per dataset and budget, at each gap level, the family
    with the least W_ex and the runner-up (means with across-seed SE; fixed-path SE in brackets)."""
    lines = []
    for ds, res in agg["datasets"].items():
        for mode in ("equal_updates", "equal_wall_time"):
            for lv, by in res[mode]["levels"].items():
                ok = sorted(((f, p) for f, p in by.items() if p is not None), key=lambda fp: fp[1]["excess_work"])
                if not ok:
                    continue
                miss = [f for f, p in by.items() if p is None]
                parts = [f"{f} (scale {p['scale']:g}, {p['n_seeds']} seeds): W_ex {p['excess_work']:.3g} +- "
                         f"{_fmt(p['excess_work_seed_se'])} (seeds)"
                         + (f" [+- {p['excess_work_fixed_path_se']:.2g} fixed path]"
                            if math.isfinite(p["excess_work_fixed_path_se"]) else "")
                         + f" at gap {p['gap']:.3f} +- {_fmt(p['gap_seed_se'])}" for f, p in ok[:3]]
                head = (f"{ds}, {mode.replace('_', ' ')}"
                        + (f" ({res['budget_seconds']:.1f} s)" if mode == "equal_wall_time" else "")
                        + f", gap <= {float(lv):.3f} nats: least W_ex ")
                ratio = (f"; {ok[0][0]} needs {ok[1][1]['excess_work'] / ok[0][1]['excess_work']:.3g}x less W_ex "
                         f"than {ok[1][0]}" if len(ok) > 1 and ok[0][1]["excess_work"] > 0 else "")
                lines.append(head + "; ".join(parts) + ratio
                             + (f"; not reaching this gap: {', '.join(miss)}" if miss else "") + ".")
            for w, by in res[mode].get("work_budgets", {}).items():
                ok = sorted(((f, p) for f, p in by.items() if p is not None), key=lambda fp: fp[1]["gap"])
                if not ok:
                    continue
                parts = [f"{f} (scale {p['scale']:g}) gap {p['gap']:.3f} +- {_fmt(p['gap_seed_se'])} (seeds) at W_ex "
                         f"{p['excess_work']:.3g}" for f, p in ok[:3]]
                lines.append(f"{ds}, {mode.replace('_', ' ')}, W_ex <= {float(w):g} kT: lowest gap " + "; ".join(parts)
                             + ".")
    return lines


# ---------------------------------------------------------------------------- long runs of chosen settings

def best_scales(summary: dict, dataset: str, families, n: int = 1) -> dict:
    """Per family, the ``n`` scales of a finished study (its ``summary.json``, read back) with the lowest mean
    gaps at equal updates among the scales where every seed finished (n_seeds > 0, n_diverged = 0), best
    first; families without such a scale are left out. Ties: the smaller scale first."""
    res = summary["datasets"].get(dataset)
    if res is None:
        raise InputError(f"the source study has no {dataset!r} runs")
    out = {}
    for f in families:
        pts = [p for p in res["equal_updates"].get(f, {}).get("points", [])
               if p["n_seeds"] > 0 and p["n_diverged"] == 0 and p["gap"] is not None and math.isfinite(p["gap"])]
        if pts:
            out[f] = tuple(float(p["scale"]) for p in sorted(pts, key=lambda p: (p["gap"], p["scale"]))[:n])
    return out


def check_long(source_settings: dict, cfg: Settings, source_dir, out_dir) -> None:
    """A long-run folder must not mix with its source study: another folder and another fingerprint (the
    per-run check of ``run_study`` then keeps any later invocation from mixing settings in either)."""
    if Path(out_dir).resolve() == Path(source_dir).resolve():
        raise InputError("--out is the --best-from study itself: the long runs need their own folder")
    if source_settings == cfg.fingerprint():
        raise InputError("the long runs have the source study's settings (give another --updates): "
                         "the two folders would hold the same runs")


def mean_curves(runs: list[dict], key: str = "gap") -> dict:
    """Per (family, scale) (finished runs only, curves on a common update grid): {"update", "mean", "se", "n"},
    the across-seed mean and standard error of ``key`` at each recorded update."""
    out = {}
    for f, sc in sorted({(r["family"], float(r["scale"])) for r in runs}, key=lambda k: (FAMILIES.index(k[0]), k[1])):
        rs = [r for r in runs
              if (r["family"], float(r["scale"])) == (f, sc) and not r.get("diverged") and r.get("curves")]
        if not rs:
            continue
        upd = rs[0]["curves"]["update"]
        rs = [r for r in rs if r["curves"]["update"] == upd]
        ys = np.asarray([r["curves"][key] for r in rs], float)
        se = ys.std(0, ddof=1) / math.sqrt(len(rs)) if len(rs) > 1 else np.full(len(upd), math.nan)
        out[(f, sc)] = {"update": upd, "mean": ys.mean(0).tolist(), "se": se.tolist(), "n": len(rs)}
    return out


def plot_gap_curves(runs: list[dict], *, reference: dict | None = None, hlines: dict | None = None):
    """Gap against updates, one line per (family, scale) (across-seed mean, band = +- SE); ``reference``:
    {(family, scale): (updates, gap)} drawn as open markers (the short study's final point); ``hlines``:
    {label: gap} dashed lines."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 5.5))
    seen = set()
    for (f, sc), c in mean_curves(runs).items():
        x, m, se = np.asarray(c["update"]), np.asarray(c["mean"]), np.nan_to_num(np.asarray(c["se"]))
        ax.plot(x, m, color=COLORS[f], marker=MARKERS[f], ms=3, lw=1.2, ls=":" if f in seen else "-",
                label=f"{f} {sc:g} ({c['n']} seed{'s' if c['n'] > 1 else ''}): final {m[-1]:.3f}")
        seen.add(f)
        ax.fill_between(x, np.maximum(m - se, FLOOR), m + se, color=COLORS[f], alpha=0.15, lw=0)
        if reference and (f, sc) in reference:
            ax.plot(*reference[(f, sc)], ls="none", marker=MARKERS[f], mfc="white", mec=COLORS[f], ms=7)
    for f, sc in sorted({(r["family"], float(r["scale"])) for r in runs if r.get("diverged")},
                        key=lambda k: (FAMILIES.index(k[0]), k[1])):
        n_div = sum(1 for r in runs if (r["family"], float(r["scale"])) == (f, sc) and r.get("diverged"))
        ax.plot([], [], color=COLORS[f], marker="x", ls="none",
                label=f"{f} {sc:g}: {n_div} seed{'s' if n_div > 1 else ''} diverged")
    if reference:
        ax.plot([], [], ls="none", marker="o", mfc="white", mec="0.3", label="open: same scale, 1,000-update study")
    for lab, v in (hlines or {}).items():
        ax.axhline(v, color="0.4", ls="--", lw=0.8)
        ax.text(ax.get_xlim()[0], v, f" {lab}", fontsize=7, va="bottom", color="0.3")
    ax.set_yscale("log")
    ax.set(xlabel="update", ylabel="test NLL - true density NLL (nats)",
           title="gap against updates at the selected scales (mean over finished seeds, band +- across-seed SE)")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=6.5, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def with_settings(cfg: Settings, **kw) -> Settings:
    return replace(cfg, **{k: v for k, v in kw.items() if v is not None})


__all__ = ["Settings", "FULL", "QUICK", "FAMILIES", "SCALES", "RunSpec", "specs", "run_one", "run_study",
           "load_runs", "aggregate", "pareto", "least_work_at", "plot_fronts", "plot_densities", "claims",
           "summary_table", "Context", "md_lr_rates", "make_recipe", "best_scales", "check_long", "mean_curves",
           "plot_gap_curves"]
