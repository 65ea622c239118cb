"""The ``mindiss`` command: a thin typer layer over the library.

Exit codes: 0 success, 2 bad input (nothing written), 3 a run diverged.
``--json`` prints exactly one JSON object on stdout. Only typer and this module load at start-up
(torch, numpy and the experiments load inside the commands), so ``--help`` answers at once.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Optional

import typer

from ..errors import DivergenceError, InputError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
                  help="Minimal-dissipation learning for energy-based models (kT = 1).")
bound_app = typer.Typer(no_args_is_help=True, help="Closed-form minimal excess work.")
schedule_app = typer.Typer(no_args_is_help=True, help="Export discretised learning-rate schedules.")
app.add_typer(bound_app, name="bound")
app.add_typer(schedule_app, name="schedule")

#: the most repeats ``mindiss bench`` times per configuration
MAX_BENCH_REPEATS = 100
#: the most interior updates ``mindiss schedule harmonic`` exports (one row each)
MAX_SCHEDULE_STEPS = 1_000_000


def _version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"mindiss {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(version: bool = typer.Option(False, "--version", is_eager=True, callback=_version,
                                       help="print the version and exit")) -> None:
    """Minimal-dissipation learning for energy-based models (kT = 1)."""


def _fail(exc: Exception, code: int) -> None:
    typer.echo(f"mindiss: error: {exc}", err=True)
    raise typer.Exit(code)


def _vector(name: str, text: str) -> list[float]:
    """'1.5' or '1.5,-2' -> list of floats."""
    try:
        vals = [float(a) for a in str(text).split(",")]
    except ValueError:
        raise InputError(f"{name} must be a number or comma-separated numbers, got {text!r}") from None
    return vals


def _print_json(obj) -> None:
    typer.echo(json.dumps(obj, indent=2, sort_keys=True, allow_nan=False))


def _print_bound(out: dict, title: str, as_json: bool, sep: str) -> None:
    """A bound's figures as one JSON object or a table (vectors joined by ``sep``)."""
    if as_json:
        _print_json(out)
        return
    from rich.console import Console
    from rich.table import Table

    def fmt(v):
        return sep.join(fmt(a) for a in v) if isinstance(v, list) else f"{v:.10g}"

    t = Table(title=title)
    t.add_column("quantity"); t.add_column("value", justify="right")
    for k, v in out.items():
        t.add_row(k, fmt(v))
    Console().print(t)


@bound_app.command("harmonic")
def bound_harmonic(
    variance: float = typer.Option(..., help="trap variance s (> 0)"),
    mobility: float = typer.Option(..., help="chain mobility mu (> 0)"),
    duration: float = typer.Option(..., help="training duration T (> 0)"),
    theta0: str = typer.Option(..., help="initial centre (number or comma-separated vector)"),
    target: str = typer.Option(..., help="data mean xbar (same length as theta0)"),
    temperature_kelvin: float = typer.Option(300.0, help="temperature for the joule figure"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
):
    """W* = k |xbar - theta0|^2 / (2 + T / tau): the least excess work of any learning-rate schedule."""
    from ..estimators import bounds

    try:
        b = bounds.harmonic(variance, mobility, duration, _vector("theta0", theta0), _vector("target", target))
        out = {**b.to_dict(), "energy_joules": bounds.joules(b.excess_work, temperature_kelvin),
               "temperature_kelvin": temperature_kelvin}
    except InputError as exc:
        _fail(exc, 2)
    _print_bound(out, "Harmonic trap: minimal-dissipation learning (kT = 1)", as_json, ", ")


@bound_app.command("gaussian")
def bound_gaussian(
    mean0: str = typer.Option(..., help="initial model centre a0 (number or comma-separated vector)"),
    variance0: str = typer.Option(..., help="initial model variance s0 (> 0; same length as mean0)"),
    data_mean: str = typer.Option(..., help="data mean xbar"),
    data_variance: str = typer.Option(..., help="data variance v_d (> 0)"),
    mobility: float = typer.Option(..., help="chain mobility mu (> 0)"),
    duration: float = typer.Option(..., help="training duration T (> 0)"),
    temperature_kelvin: float = typer.Option(300.0, help="temperature for the joule figure"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
):
    """W_ex* = Delta^2 / (mu T + 2 v_d) + variance part: least excess work of learning a Gaussian's centre and variance.

    theory.md section 6: from equilibrium chains at (mean0, variance0) to the data Gaussian in time T.
    """
    from ..estimators import bounds

    try:
        b = bounds.gaussian(_vector("mean0", mean0), _vector("variance0", variance0), _vector("data_mean", data_mean),
                            _vector("data_variance", data_variance), mobility, duration)
        out = {**b.to_dict(), "energy_joules": bounds.joules(b.excess_work, temperature_kelvin),
               "temperature_kelvin": temperature_kelvin}
    except InputError as exc:
        _fail(exc, 2)
    _print_bound(out, "Learnable-variance Gaussian: minimal-dissipation learning (kT = 1)", as_json, "; ")


def _schedule_rows(disc) -> list[dict]:
    """One row per update of a DiscreteSchedule: update, t (end of its move), lr, dt, impulse."""
    return [{"update": k + 1, "t": float(disc.t[k] + disc.dt[k]), "lr": float(disc.lr[k]), "dt": float(disc.dt[k]),
             "impulse": bool(disc.is_impulse[k])} for k in range(disc.n_updates)]


def _write_schedule(rows: list[dict], header: dict, fmt: str, out: Optional[str]) -> None:
    """The rows as CSV (vectors joined by ';') or one JSON object, to ``out`` (atomically) or stdout."""
    if out is not None and (out.strip() == "" or Path(out).is_dir()):
        _fail(InputError(f"--out {out!r} " + ("is empty" if not out.strip() else "is a directory") +
                         ": give a file path"), 2)
    if fmt == "json":
        text = json.dumps({**header, "rows": rows}, indent=1) + "\n"
    else:
        cols = list(rows[0])
        lines = [",".join(cols)]
        for r in rows:
            lines.append(",".join(
                (str(int(r[c])) if isinstance(r[c], bool) else repr(r[c])) if not isinstance(r[c], list)
                else ";".join(repr(a) for a in r[c]) for c in cols))
        text = "\n".join(lines) + "\n"
    if out is None:
        sys.stdout.write(text)
    else:
        from ..errors import OutputError
        from ..io import atomic_write_text

        try:
            atomic_write_text(out, text)
        except OutputError as exc:
            _fail(exc, 2)


def _check_format(fmt: str) -> None:
    if fmt not in ("csv", "json"):
        raise InputError(f"--format must be csv or json, got {fmt!r}")


@schedule_app.command("harmonic")
def schedule_harmonic(
    variance: float = typer.Option(..., help="trap variance s (> 0)"),
    mobility: float = typer.Option(..., help="chain mobility mu (> 0)"),
    duration: float = typer.Option(..., help="training duration T (> 0)"),
    steps: int = typer.Option(..., max=MAX_SCHEDULE_STEPS, help="interior updates n (n + 2 updates with the impulses)"),
    theta0: Optional[str] = typer.Option(None, help="initial centre: adds the theta(t) and chain-mean path"),
    target: Optional[str] = typer.Option(None, help="data mean xbar (with --theta0)"),
    kind: str = typer.Option("exact", help="exact: the exactly optimal n-update schedule (lands on the target; "
                             "W_ex = k D^2 / (2 + 2 n tanh(mu T / (2 n s)))); midpoint: the continuous optimum "
                             "discretised by the midpoint rule (misses the target by O(1/n))"),
    fmt: str = typer.Option("csv", "--format", help="csv or json"),
    out: Optional[str] = typer.Option(None, "--out", metavar="FILE", help="write to this file (atomically) instead of stdout"),
):
    """The optimal schedule's learning rates for n interior updates, one row per update.

    --kind exact (default): the exactly optimal n-update schedule (optimal.discrete_harmonic; the
    chains move by exact OU transitions between updates), which lands on every target from every
    start. --kind midpoint: the continuous optimum eta*(t) discretised by the midpoint rule, which
    stops short of the target by O(1/n).

    Columns: update, t, lr, dt, impulse. Update k sets theta at time t - dt with learning
    rate lr, then the chains move for dt (0 for the impulses), so t is the time at the end of
    the update's move. With --theta0/--target also theta (the value the update set, held during
    its move) and chain_mean (the N -> infinity chain mean at t). Row 0 is the initial state, so
    the jump at t = 0 is two rows at t = 0 and the final jump two rows at t = T.
    """
    from ..rates import optimal, schedules

    try:
        _check_format(fmt)
        if kind not in ("exact", "midpoint"):
            raise InputError(f"--kind must be exact or midpoint, got {kind!r}")
        if (theta0 is None) != (target is None):
            raise InputError("give both --theta0 and --target, or neither")
        if out is not None and (out.strip() == "" or Path(out).is_dir()):
            raise InputError(f"--out {out!r} " + ("is empty" if not out.strip() else "is a directory") +
                             ": give a file path")
        from ..errors import require_positive_int

        require_positive_int("n_steps", steps)
        if kind == "exact":
            disc = optimal.discrete_harmonic(steps, variance=variance, mobility=mobility, duration=duration)
        else:
            disc = schedules.optimal_harmonic(variance, mobility, duration).discretise(steps)
        rows = _schedule_rows(disc)
        if theta0 is not None:
            rows = _with_path(rows, disc, variance, mobility, steps, _vector("theta0", theta0),
                              _vector("target", target))
    except InputError as exc:
        _fail(exc, 2)
    name = "discrete_harmonic" if kind == "exact" else "optimal_harmonic (midpoint)"
    _write_schedule(rows, {"schedule": name, "kind": kind, "variance": variance, "mobility": mobility,
                           "duration": duration, "steps": steps}, fmt, out)


def _with_path(rows, sched, variance, mobility, steps, theta0, target):
    """Add theta and chain_mean columns from the exact N -> infinity run of the same schedule."""
    from .. import data
    from ..core.train import train
    from ..energies.base import HarmonicTrap

    if len(theta0) != len(target):
        raise InputError(f"--theta0 has {len(theta0)} entries but --target has {len(target)}")
    res = train(HarmonicTrap(variance, len(theta0)), data.Gaussian(target, variance), schedule=sched,
                theta0=theta0, mobility=mobility, n_steps=steps, backend="moments")
    thetas, means = res.history.block("theta"), res.history.block("chain_mean")
    scalar = len(theta0) == 1
    pack = (lambda v: float(v[0])) if scalar else (lambda v: [float(a) for a in v])
    first = {"update": 0, "t": 0.0, "lr": 0.0, "dt": 0.0, "impulse": False,
             "theta": pack(thetas[0]), "chain_mean": pack(means[0])}
    return [first] + [{**r, "theta": pack(thetas[i + 1]), "chain_mean": pack(means[i + 1])}
                      for i, r in enumerate(rows)]


@schedule_app.command("gaussian")
def schedule_gaussian(
    mean0: float = typer.Option(..., help="initial centre a0"),
    variance0: float = typer.Option(..., help="initial variance s0 (> 0)"),
    data_mean: float = typer.Option(..., help="data mean xbar"),
    data_variance: float = typer.Option(..., help="data variance v_d (> 0)"),
    mobility: float = typer.Option(..., help="chain mobility mu (> 0)"),
    duration: float = typer.Option(..., help="training duration T (> 0)"),
    steps: int = typer.Option(..., max=MAX_SCHEDULE_STEPS, help="interior updates n (n + 2 updates with the impulses)"),
    fmt: str = typer.Option("csv", "--format", help="csv or json"),
    out: Optional[str] = typer.Option(None, "--out", metavar="FILE", help="write to this file (atomically) instead of stdout"),
):
    """The learnable-variance optimum (centre and variance learned; theory.md section 6) as n updates.

    The exact optimum's chain moments, hit at every update time by the parameters held during each
    move (optimal.gaussian_schedule on the exact moments backend); lands on (xbar, v_d); its excess
    work exceeds the continuous bound by O(1/n^2). Columns: update, t, dt, impulse, centre, variance
    (the parameters the update set, held during its move), chain_mean, chain_variance (at t),
    rate_centre, rate_variance (the per-mode rates alpha of P = J diag(alpha s, alpha 2 s^2) J^T).
    Row 0 is the initial state.
    """
    from .. import data
    from ..rates import optimal
    from ..core.train import train
    from ..energies.base import Gaussian

    try:
        _check_format(fmt)
        sched = optimal.gaussian_schedule(mean0, variance0, data_mean, data_variance, mobility, duration)
        disc = sched.discretise(steps)
        res = train(Gaussian(1), data.Gaussian(data_mean, data_variance), schedule=sched,
                    theta0=Gaussian.natural(mean0, variance0), mobility=mobility, n_steps=steps, backend="moments")
    except InputError as exc:
        _fail(exc, 2)
    except DivergenceError as exc:
        _fail(exc, 3)
    thetas, means = res.history.block("theta"), res.history.block("chain_mean")
    rates = res.preconditioner
    m, v = float(mean0), float(variance0)
    rows = [{"update": 0, "t": 0.0, "dt": 0.0, "impulse": False, "centre": m, "variance": v, "chain_mean": m,
             "chain_variance": v, "rate_centre": 0.0, "rate_variance": 0.0}]
    for k, r in enumerate(_schedule_rows(disc)):
        a, s = float(thetas[k + 1][0] / thetas[k + 1][1]), float(1.0 / thetas[k + 1][1])
        if r["dt"] > 0:                        # the exact OU move of the chain variance at (a, s)
            e2 = math.exp(-2.0 * mobility * r["dt"] / s)
            v = s + (v - s) * e2
        rows.append({"update": r["update"], "t": r["t"], "dt": r["dt"], "impulse": r["impulse"], "centre": a,
                     "variance": s, "chain_mean": float(means[k + 1][0]), "chain_variance": v,
                     "rate_centre": float(rates["rate_centre"][k][0]),
                     "rate_variance": float(rates["rate_variance"][k][0])})
    _write_schedule(rows, {"schedule": "gaussian_schedule", "mean0": mean0, "variance0": variance0,
                           "data_mean": data_mean, "data_variance": data_variance, "mobility": mobility,
                           "duration": duration, "steps": steps, "excess_work": res.excess_work}, fmt, out)


_NUMERICAL_ENERGIES = ("harmonic", "gaussian", "double_well", "quartic")


@schedule_app.command("numerical")
def schedule_numerical(
    energy: str = typer.Option(..., help="harmonic (variance 1), gaussian (centre and variance), double_well "
                               "(a (x^2-1)^2 + b x) or quartic (k2 x^2/2 + k4 x^4/4)"),
    theta0: str = typer.Option(..., help="initial parameters, comma-separated (gaussian: the mean and variance; exported as natural parameters (a/s, 1/s))"),
    duration: float = typer.Option(..., help="training duration T (> 0)"),
    steps: int = typer.Option(..., max=MAX_SCHEDULE_STEPS, help="interior updates n (n + 2 updates with the impulses)"),
    mobility: float = typer.Option(1.0, help="chain mobility mu (> 0)"),
    data_file: Optional[Path] = typer.Option(None, "--data", help="1-D data samples: .npy (no pickles) or text, "
                                             "one number per line (double_well, quartic)"),
    data_mean: Optional[float] = typer.Option(None, help="data mean (harmonic, gaussian)"),
    data_variance: Optional[float] = typer.Option(None, help="data variance (harmonic, gaussian)"),
    grid: Optional[str] = typer.Option(None, help="lo,hi,n_points of the Fokker-Planck grid (default: chosen)"),
    fmt: str = typer.Option("csv", "--format", help="csv or json"),
    out: Optional[str] = typer.Option(None, "--out", metavar="FILE", help="write to this file (atomically) instead of stdout"),
):
    """The optimal n-update schedule of a 1-D energy on its model (optimal.optimise_1d), landing on the
    maximum-likelihood parameters: W_ex minimised over the theta path (exact moments for harmonic and
    gaussian, the Fokker-Planck grid otherwise), then realised as signed per-update learning rates.

    Columns: update, t, dt, impulse, theta (the parameters the update set, held during its move; row 0
    the initial ones), rate (the integrated per-parameter rate of the update, so theta_new = theta -
    rate * g_hat on the model; empty where the update needs a full matrix).
    """
    import numpy as np

    from .. import data as _data
    from ..rates import optimal
    from ..energies.base import Gaussian, HarmonicTrap
    from ..energies.expfamily import ExpFamily

    try:
        _check_format(fmt)
        if energy not in _NUMERICAL_ENERGIES:
            raise InputError(f"--energy must be one of {', '.join(_NUMERICAL_ENERGIES)}, got {energy!r}")
        th0 = _vector("theta0", theta0)
        gaussian = energy in ("harmonic", "gaussian")
        if gaussian:
            if data_mean is None or data_variance is None or data_file is not None:
                raise InputError(f"--energy {energy} takes --data-mean and --data-variance (not --data)")
            ds = _data.Gaussian(data_mean, data_variance)
            if energy == "harmonic":
                model, theta = HarmonicTrap(1.0), th0
            else:
                if len(th0) != 2:
                    raise InputError(f"--theta0 for gaussian is the mean and variance, got {len(th0)} values")
                model, theta = Gaussian(1), Gaussian.natural(th0[0], th0[1])
            kwargs = {"backend": "moments"}
        else:
            if data_file is None or data_mean is not None or data_variance is not None:
                raise InputError(f"--energy {energy} takes --data FILE (samples), not --data-mean/--data-variance")
            ds = _load_samples(data_file)
            model = ExpFamily.tilted_double_well() if energy == "double_well" else ExpFamily.quartic()
            theta = th0
            kwargs = {"backend": "fokker_planck"}
            if grid is not None:
                g = _vector("grid", grid)
                if len(g) != 3:
                    raise InputError(f"--grid must be lo,hi,n_points, got {grid!r}")
                kwargs["grid"] = (g[0], g[1], int(g[2]))
        res = optimal.optimise_1d(model, ds, theta, duration=duration, mobility=mobility, n_steps=steps, **kwargs)
    except InputError as exc:
        _fail(exc, 2)
    except DivergenceError as exc:
        _fail(exc, 3)
    disc = res.schedule.discretise(steps)
    path = res.theta_path
    rows = [{"update": 0, "t": 0.0, "dt": 0.0, "impulse": False, "theta": [float(a) for a in path[0]], "rate": []}]
    for k, r in enumerate(_schedule_rows(disc)):
        diag = res.lr_diagonal[k]
        rows.append({"update": r["update"], "t": r["t"], "dt": r["dt"], "impulse": r["impulse"],
                     "theta": [float(a) for a in path[k + 1]],
                     "rate": [] if np.any(np.isnan(diag)) else [float(a) for a in diag]})
    _write_schedule(rows, {"schedule": "optimise_1d", "energy": energy, "duration": duration, "steps": steps,
                           "mobility": mobility, "excess_work": res.excess_work, "converged": res.converged,
                           "gradient_norm": res.gradient_norm, "final_loss": res.final_loss}, fmt, out)


def _load_samples(path: Path):
    """1-D samples from .npy (allow_pickle=False: nothing loaded can run code) or a text file."""
    import numpy as np
    import torch

    if not path.is_file():
        raise InputError(f"--data: no such file {str(path)!r}")
    try:
        arr = np.load(path, allow_pickle=False) if path.suffix == ".npy" else np.loadtxt(path, ndmin=1)
    except (ValueError, OSError) as exc:
        raise InputError(f"--data: cannot read {str(path)!r} as numbers ({exc})") from None
    arr = np.asarray(arr, dtype=float).reshape(-1)
    if arr.size < 2 or not np.all(np.isfinite(arr)):
        raise InputError(f"--data: needs at least 2 finite samples, got {arr.size}")
    return torch.as_tensor(arr, dtype=torch.float64).reshape(-1, 1)


@app.command("train")
def train_cmd(
    config: Optional[Path] = typer.Argument(None, help="TOML config; built-in defaults when omitted"),
    out: Optional[str] = typer.Option(None, "--out", metavar="DIR", help="run directory: config.toml, checkpoint/, "
                                      "result.json, history.csv, figures/, run.log (locked while the run lasts)"),
    resume: bool = typer.Option(False, "--resume", help="continue from the checkpoint in --out"),
    overwrite: bool = typer.Option(False, "--overwrite", help="discard an earlier run (finished or interrupted) "
                                   "in --out"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object on stdout"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
    print_defaults: bool = typer.Option(False, "--print-defaults", help="print a complete commented config and exit"),
    overrides: Optional[list[str]] = typer.Option(None, "--set", metavar="TABLE.KEY=VALUE",
                                                  help="override one key of the config (repeatable), e.g. --set "
                                                  "dynamics.seed=3; VALUE is read as TOML (a bare word as a "
                                                  "string) and validated like the file"),
):
    """Train a persistent-chain EBM with a learning-rate schedule and report its thermodynamic ledger.

    Exit codes: 0 done, 2 bad input or an output that cannot be written (the message names the
    problem), 3 diverged (the message says which checkpoint, if any, is kept), 130 interrupted by
    SIGINT/SIGTERM (checkpoint saved; continue with --resume).
    """
    import signal

    from . import config as C

    if print_defaults:
        typer.echo(C.to_toml(C.defaults(), comments=True))
        return
    run_dir = None
    try:
        if resume and out is None:
            raise InputError("--resume needs --out DIR (the run directory holding the checkpoint)")
        if resume and overwrite:
            raise InputError("--resume and --overwrite exclude each other")
        cfg = C.resolve(C.apply_overrides(C.read_raw(config) if config is not None else {}, overrides))
    except InputError as exc:      # before torch is imported: a bad config answers at once
        _fail(exc, 2)
    from .config_neural import grid_note
    from ..errors import OutputError
    from .rundir import RunDir
    from ..core.train import Interrupted, train

    try:
        kwargs = C.build(cfg)
        if out is not None:
            run_dir = RunDir.open(out, resume=resume, overwrite=overwrite)
    except (InputError, OutputError) as exc:
        _fail(exc, 2)
    except OSError as exc:
        _fail(_os_message(exc), 2)
    checkpoint_every = kwargs.pop("checkpoint_every")
    notes = kwargs.pop("notes", [])
    if run_dir is not None:
        kwargs.update(checkpoint=run_dir.checkpoint, checkpoint_every=checkpoint_every, resume=resume)
    stop_requested = []

    def on_signal(signum, frame):
        stop_requested.append(signum)

    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    remove = False
    try:
        def start():
            if run_dir is not None:
                run_dir.prepare(C.to_toml(cfg), resume)
                run_dir.log("resumed from checkpoint" if resume else "started")

        progress = not quiet and not as_json and sys.stderr.isatty()
        stop = lambda: bool(stop_requested)  # noqa: E731
        if not quiet and not as_json and not progress:
            stop = _plain_progress(stop, kwargs["n_replicas"] * kwargs["n_steps"])
        network = cfg["energy"]["kind"] in ("mlp", "rbm")   # keep the chains for the saved model
        res = train(**kwargs, progress=progress, stop=stop, on_start=start, keep_chains=network)
        res.notes.extend(notes + [n for n in [grid_note(kwargs["energy"], res.replica_theta_final[0])] if n])
        written = None
        if run_dir is not None:
            written = run_dir.write_result(res, model=(cfg, kwargs["energy"], kwargs["data"]) if network else None)
            run_dir.log(f"finished: excess work {res.excess_work:.6g} +- {res.excess_work_se:.2g} kT")
    except InputError as exc:
        remove = run_dir is not None and run_dir.created  # bad input found late: leave nothing behind
        _fail(exc, 2)
    except (OutputError, OSError) as exc:
        msg = str(exc) if isinstance(exc, OutputError) else _os_message(exc)
        if run_dir is not None:
            msg += f" ({run_dir.describe_checkpoint('; continue with --resume once the cause is fixed')})"
        _fail(msg, 2)
    except DivergenceError as exc:
        if run_dir is not None:
            kept = run_dir.describe_checkpoint()
            _try_log(run_dir, f"{exc}; {kept}")
            exc = DivergenceError(exc.update, exc.quantity, f"{exc.cause}. {kept[0].upper()}{kept[1:]}")
        _fail(exc, 3)
    except Interrupted as exc:
        if run_dir is not None:
            _try_log(run_dir, str(exc))
        typer.echo(f"mindiss: {exc}" + ("; continue with --resume" if run_dir else ""), err=True)
        raise typer.Exit(130)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if run_dir is not None:
            run_dir.close(remove=remove)
    if as_json:
        if network:
            from .model_io import evaluate_toy, result_dict
            _print_json(written or result_dict(res, kwargs["energy"], evaluate_toy(cfg, kwargs["energy"], res)))
        else:
            _print_json(res.to_dict())
        return
    _print_summary(res)
    if written and written.get("test_nll") is not None:   # a toy set's held-out NLL against its true density
        typer.echo(f"held-out NLL {written['test_nll']:.4f}, true density {written['true_density_nll']:.4f}: gap "
                   f"{written['test_nll_gap']:.4f} ± {written['test_nll_gap_se']:.2g} nats; model in "
                   f"{Path(out) / 'model.safetensors'}, figure {Path(out) / 'figures' / 'density.png'}", err=True)


def _plain_progress(stop, planned: int, every: float = 10.0):
    """``stop`` that also prints a plain line to stderr every ``every`` seconds (stderr not a terminal:
    no progress bar); train calls ``stop()`` once per update. ``planned``: replicas x n_steps (the
    impulses add up to 2 updates per replica; a resumed run counts from its restart)."""
    import time

    start = time.monotonic()
    state = {"updates": 0, "next": start + every}

    def check() -> bool:
        state["updates"] += 1
        now = time.monotonic()
        if now >= state["next"]:
            state["next"] = now + every
            k = state["updates"]
            typer.echo(f"mindiss train: {k} of about {planned} updates (all replicas) after {now - start:.0f} s, "
                       f"{k / (now - start):.0f} updates/s", err=True)
        return stop()

    return check


def _os_message(exc: OSError) -> str:
    """One line naming the path and the OS's reason of an OSError."""
    where = f"{exc.filename!r}: " if getattr(exc, "filename", None) else ""
    return f"{where}{exc.strerror or exc}"


def _try_log(run_dir, message: str) -> None:
    try:
        run_dir.log(message)
    except OSError:
        pass


def _print_summary(res) -> None:
    from rich.console import Console
    from rich.table import Table

    def pm(v, se):
        return f"{v:.6g} ± {se:.2g}" if se == se and se > 0 else f"{v:.10g}"

    t = Table(title=f"mindiss train: {res.backend} / {res.sampler}, {res.n_updates} updates, "
                    f"{res.n_replicas} replica(s) (energies in kT)")
    t.add_column("quantity"); t.add_column("value", justify="right")
    t.add_row("work <W>", pm(res.work, res.work_se))
    t.add_row("excess work W_ex", pm(res.excess_work, res.excess_work_se))
    if res.bound is not None:
        t.add_row("bound W* (same endpoint)", f"{res.bound:.6g}")
    dfe = f"{res.delta_free_energy:.6g}"
    if res.free_energy_method != "exact":
        dfe += (f" ± {res.delta_free_energy_se:.2g} ({res.free_energy_method})" if res.delta_free_energy_se
                else f" ({res.free_energy_method})")
    t.add_row("delta free energy", dfe)
    if res.preconditioner:
        t.add_row("learning-rate matrix", ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                                                    for k, v in res.preconditioner.items()
                                                    if not isinstance(v, (list, dict))))
    t.add_row("true loss change", f"{res.loss_true_change:.6g}")
    t.add_row("approx. (PCD) loss change", f"{res.loss_approx_change:.6g}")
    t.add_row("measured bias L - L_approx (|bias - W_ex|)", f"{res.bias:.6g} ({res.identity1_residual:.1e})")
    t.add_row("final loss", f"{res.final_loss:.6g}")
    pairs = list(zip(res.theta_final, res.theta_final_se))
    t.add_row("theta_final", ", ".join(pm(a, se) for a, se in pairs[:4 if len(pairs) > 8 else 8])
              + (f", ... ({len(pairs)} parameters; all of them in --out's model.safetensors (mlp / rbm) or result.json)"
                 if len(pairs) > 8 else ""))
    t.add_row(f"dissipated energy at {res.temperature_kelvin:g} K", f"{res.energy_joules:.4g} J")
    Console().print(t)
    for note in res.notes:
        Console(stderr=True).print(f"[yellow]note:[/] {note}")


from .experiments import ORDER as _EXPERIMENTS  # noqa: E402  (light: experiment modules load lazily)


@app.command("reproduce")
def reproduce_cmd(
    out: str = typer.Option("mindiss-report", "--out", metavar="DIR", help="output folder (new, empty or an earlier report; "
                            "replaced only when the new report is complete)"),
    quick: bool = typer.Option(False, "--quick", help="smaller runs (a few minutes on 2 cores)"),
    only: Optional[list[str]] = typer.Option(None, "--only", help="run only this experiment (repeat the flag for "
                                             "several): " + ", ".join(_EXPERIMENTS)),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
    as_json: bool = typer.Option(False, "--json", help="print the summary as one JSON object"),
):
    """Every result of the paper as figures, tables, results.json and report.html in OUT.

    Exit codes: 0 every check passes, 1 a check or an experiment failed, 2 bad input or an output
    folder that cannot be written (checked before any experiment runs), 130 interrupted (SIGINT or
    SIGTERM: OUT is left as it was; the partial report is discarded).
    """
    import signal

    from . import report
    from ..errors import OutputError

    if out.strip() == "":
        _fail(InputError("--out must name a report folder, got an empty path"), 2)
    out = Path(out)

    def on_term(signum, frame):
        raise KeyboardInterrupt

    old_term = signal.signal(signal.SIGTERM, on_term)
    try:
        results = report.reproduce(out, only, quick=quick,
                                   show_progress=not quiet and not as_json and sys.stderr.isatty())
    except (InputError, OutputError) as exc:
        _fail(exc, 2)
    except OSError as exc:
        _fail(_os_message(exc), 2)
    except KeyboardInterrupt:
        typer.echo(f"mindiss: reproduce interrupted: the partial report was discarded and {str(out)!r} was left "
                   "as it was", err=True)
        raise typer.Exit(130)
    finally:
        signal.signal(signal.SIGTERM, old_term)
    s = results["summary"]
    if as_json:
        _print_json({"out": str(out), **s, "status": {k: e["status"] for k, e in results["experiments"].items()}})
    else:
        for name, e in results["experiments"].items():
            typer.echo(f"  {e['status']:<13} {name} ({e['seconds']:.1f} s)")
            if e["error"]:
                typer.echo("    " + e["error"].splitlines()[0], err=True)
        typer.echo(f"{s['n_checks'] - s['n_checks_failed']}/{s['n_checks']} checks pass; "
                   f"report: {out / 'report.html'}")
    if not s["ok"]:
        raise typer.Exit(1)


@app.command("bench")
def bench_cmd(
    device: str = typer.Option("cpu", help="cpu or cuda"),
    repeats: int = typer.Option(0, min=0, max=MAX_BENCH_REPEATS,
                                help="timed repeats per configuration, median reported (0: 5, or 2 with --quick)"),
    dtype: str = typer.Option("both", help="chain dtype: float32, float64 or both"),
    case: str = typer.Option("all", help="trap, double_well, mlp, overhead or all"),
    memory: bool = typer.Option(True, "--memory/--no-memory", help="measure peak memory per chain"),
    quick: bool = typer.Option(False, "--quick", help="10x fewer updates, 2 repeats"),
    threads: int = typer.Option(0, min=0, help="torch intra-op threads for the timings (0: torch's default)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
):
    """Throughput (M chain-steps/s) of train()'s full update next to a bare torch loop, one process."""
    import torch

    from . import bench

    if device not in ("cpu", "cuda"):
        _fail(InputError(f"--device must be cpu or cuda, got {device!r}"), 2)
    if device == "cuda" and not torch.cuda.is_available():
        _fail(InputError("--device cuda: CUDA is not available on this machine (torch "
                         f"{torch.__version__}, cuda build {torch.version.cuda})"), 2)
    if dtype not in ("float32", "float64", "both"):
        _fail(InputError(f"--dtype must be float32, float64 or both, got {dtype!r}"), 2)
    if case not in ("trap", "double_well", "mlp", "overhead", "all"):
        _fail(InputError(f"--case must be trap, double_well, mlp, overhead or all, got {case!r}"), 2)
    if repeats < 0:
        _fail(InputError("--repeats must be >= 0"), 2)
    out = bench.run_all(quick=quick, device=device, repeats=repeats or None,
                        dtypes=("float32", "float64") if dtype == "both" else (dtype,), memory=memory,
                        cases=None if case == "all" else (case,), threads=threads or None)
    if as_json:
        _print_json(out)
        return
    typer.echo(f"device {out['device']}, torch {out['torch']}, {out['threads']} threads, load average "
               f"{out['load_average'][0]:.2f}, median of {out['repeats']} after one warm-up, interleaved")
    typer.echo(bench.format_table(out))
    if out["memory_method"]:
        typer.echo(f"memory: {out['memory_method']}")


@app.command("sample")
def sample_cmd(
    run_dir: Path = typer.Argument(..., help="run directory of mindiss train --out with an mlp / rbm model"),
    n: int = typer.Option(..., "--n", help="number of samples (> 0)"),
    out: Optional[Path] = typer.Option(None, "--out", help="output .npy file (default RUN_DIR/samples.npy)"),
    seed: int = typer.Option(0, "--seed", help="seed of the torch.Generator of every draw"),
    steps: Optional[int] = typer.Option(None, "--steps", help="MALA moves (default 100 from the kept chains, "
                                        "2000 from scratch: the burn-in)"),
    from_scratch: bool = typer.Option(False, "--from-scratch", help="start from the confinement Gaussian, not "
                                      "the run's kept chains"),
    dt: Optional[float] = typer.Option(None, "--dt", help="MALA step (default: the run's last chain move)"),
):
    """Draw samples of a trained network by MALA at its final parameters; writes (n, d) float64 .npy.

    Starts from n of the run's kept chains (replica 0's final states) or, with --from-scratch, from
    the confinement Gaussian with a burn-in of --steps moves. Exit 2 on bad input (nothing written).
    """
    import numpy as np
    import torch

    from ..errors import OutputError
    from ..io import atomic_write_bytes
    from .model_io import load_model
    from .sampling import draw

    try:
        if n <= 0:
            raise InputError(f"--n must be a positive integer, got {n}")
        target = out if out is not None else run_dir / "samples.npy"
        if target.suffix != ".npy":
            raise InputError(f"--out must name a .npy file, got {str(target)!r}")
        if target.exists() and target.is_dir():
            raise InputError(f"--out {str(target)!r} is a directory")
        model = load_model(run_dir)
        d = draw(model, n, gen=torch.Generator().manual_seed(seed), steps=steps, from_scratch=from_scratch, dt=dt)
    except InputError as exc:
        _fail(exc, 2)
    import io as _io

    buf = _io.BytesIO()
    np.save(buf, d.samples.numpy())
    try:
        atomic_write_bytes(target, buf.getvalue())
    except OutputError as exc:
        _fail(exc, 2)
    typer.echo(f"{n} samples -> {target} (from {d.start}; {d.steps} MALA moves of dt = {d.dt:g}, acceptance "
               f"{d.acceptance_rate:.3f})", err=True)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
