"""The ``mindiss`` command: a thin typer layer over the library.

Exit codes: 0 success, 2 bad input (nothing written), 3 a run diverged.
``--json`` prints exactly one JSON object on stdout.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from .errors import DivergenceError, InputError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
                  help="Minimal-dissipation learning for energy-based models (kT = 1).")
bound_app = typer.Typer(no_args_is_help=True, help="Closed-form minimal excess work.")
schedule_app = typer.Typer(no_args_is_help=True, help="Export discretised learning-rate schedules.")
app.add_typer(bound_app, name="bound")
app.add_typer(schedule_app, name="schedule")


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
    from . import bounds

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
    from . import bounds

    try:
        b = bounds.gaussian(_vector("mean0", mean0), _vector("variance0", variance0), _vector("data_mean", data_mean),
                            _vector("data_variance", data_variance), mobility, duration)
        out = {**b.to_dict(), "energy_joules": bounds.joules(b.excess_work, temperature_kelvin),
               "temperature_kelvin": temperature_kelvin}
    except InputError as exc:
        _fail(exc, 2)
    _print_bound(out, "Learnable-variance Gaussian: minimal-dissipation learning (kT = 1)", as_json, "; ")


@schedule_app.command("harmonic")
def schedule_harmonic(
    variance: float = typer.Option(..., help="trap variance s (> 0)"),
    mobility: float = typer.Option(..., help="chain mobility mu (> 0)"),
    duration: float = typer.Option(..., help="training duration T (> 0)"),
    steps: int = typer.Option(..., help="interior updates n (n + 2 updates with the impulses)"),
    theta0: Optional[str] = typer.Option(None, help="initial centre: adds the theta(t) and chain-mean path"),
    target: Optional[str] = typer.Option(None, help="data mean xbar (with --theta0)"),
    fmt: str = typer.Option("csv", "--format", help="csv or json"),
    out: Optional[Path] = typer.Option(None, "--out", help="write to this file (atomically) instead of stdout"),
):
    """The optimal schedule's discretised learning rates, one row per update.

    Columns: update, t, lr, dt, impulse. Update k sets theta at time t - dt with learning
    rate lr, then the chains move for dt (0 for the impulses), so t is the time at the end of
    the update's move. With --theta0/--target also theta (the value the update set, held during
    its move) and chain_mean (the N -> infinity chain mean at t). Row 0 is the initial state, so
    the jump at t = 0 is two rows at t = 0 and the final jump two rows at t = T.
    """
    from . import schedules

    try:
        if fmt not in ("csv", "json"):
            raise InputError(f"--format must be csv or json, got {fmt!r}")
        if (theta0 is None) != (target is None):
            raise InputError("give both --theta0 and --target, or neither")
        sched = schedules.optimal_harmonic(variance, mobility, duration)
        disc = sched.discretise(steps)
        rows = [{"update": k + 1, "t": float(disc.t[k] + disc.dt[k]), "lr": float(disc.lr[k]), "dt": float(disc.dt[k]),
                 "impulse": bool(disc.is_impulse[k])} for k in range(disc.n_updates)]
        if theta0 is not None:
            rows = _with_path(rows, sched, variance, mobility, steps, _vector("theta0", theta0),
                              _vector("target", target))
    except InputError as exc:
        _fail(exc, 2)
    if fmt == "json":
        text = json.dumps({"schedule": "optimal_harmonic", "variance": variance, "mobility": mobility,
                           "duration": duration, "steps": steps, "rows": rows}, indent=1) + "\n"
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
        from .io import atomic_write_text

        atomic_write_text(out, text)


def _with_path(rows, sched, variance, mobility, steps, theta0, target):
    """Add theta and chain_mean columns from the exact N -> infinity run of the same schedule."""
    from . import data, train
    from .energies import HarmonicTrap

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


@app.command("train")
def train_cmd(
    config: Optional[Path] = typer.Argument(None, help="TOML config; built-in defaults when omitted"),
    out: Optional[Path] = typer.Option(None, "--out", help="run directory: config.toml, checkpoint.pt, "
                                       "result.json, history.csv, figures/, run.log"),
    resume: bool = typer.Option(False, "--resume", help="continue from the checkpoint in --out"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object on stdout"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
    print_defaults: bool = typer.Option(False, "--print-defaults", help="print a complete commented config and exit"),
):
    """Train a persistent-chain EBM with a learning-rate schedule and report its thermodynamic ledger.

    Exit codes: 0 done, 2 bad input (nothing written), 3 diverged (the last good checkpoint is
    kept), 130 interrupted by SIGINT/SIGTERM (checkpoint saved; continue with --resume).
    """
    import signal

    from . import config as C
    from .config_neural import grid_note
    from .rundir import RunDir
    from .train import Interrupted, train

    if print_defaults:
        typer.echo(C.to_toml(C.defaults(), comments=True))
        return
    try:
        cfg = C.load(config) if config is not None else C.defaults()
        kwargs = C.build(cfg)
        if out is not None and out.exists() and not out.is_dir():
            raise InputError(f"--out {str(out)!r} exists and is not a directory")
        if resume and out is None:
            raise InputError("--resume needs --out DIR (the run directory holding checkpoint.pt)")
        if resume and not (out / "checkpoint.pt").is_file():
            raise InputError(f"--resume: no checkpoint in {str(out)!r}")
        if out is not None and not resume and (out / "result.json").exists():
            raise InputError(f"{str(out)!r} already holds a finished run: choose another --out or use --resume")
    except InputError as exc:
        _fail(exc, 2)
    run_dir = None
    created = out is not None and not out.exists()
    checkpoint_every = kwargs.pop("checkpoint_every")
    notes = kwargs.pop("notes", [])
    if out is not None:
        run_dir = RunDir(out)
        kwargs.update(checkpoint=run_dir.checkpoint, checkpoint_every=checkpoint_every, resume=resume)
    stop_requested = []

    def on_signal(signum, frame):
        stop_requested.append(signum)

    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        def start():
            if run_dir is not None:
                run_dir.prepare(C.to_toml(cfg), resume)
                run_dir.log("resumed from checkpoint" if resume else "started")

        progress = not quiet and not as_json and sys.stderr.isatty()
        network = cfg["energy"]["kind"] in ("mlp", "rbm")   # keep the chains for the saved model
        res = train(**kwargs, progress=progress, stop=lambda: bool(stop_requested), on_start=start,
                    keep_chains=network)
        res.notes.extend(notes + [n for n in [grid_note(kwargs["energy"], res.replica_theta_final[0])] if n])
        written = None
        if run_dir is not None:
            written = run_dir.write_result(res, model=(cfg, kwargs["energy"], kwargs["data"]) if network else None)
            run_dir.log(f"finished: excess work {res.excess_work:.6g} +- {res.excess_work_se:.2g} kT")
    except InputError as exc:
        if created and out.exists():  # bad input found late: leave nothing behind
            import shutil

            shutil.rmtree(out)
        _fail(exc, 2)
    except DivergenceError as exc:
        if run_dir is not None:
            run_dir.log(f"{exc}; last good checkpoint kept in {run_dir.checkpoint}")
            exc = DivergenceError(exc.update, exc.quantity,
                                  exc.cause + f". The last good checkpoint is kept in {run_dir.checkpoint}")
        _fail(exc, 3)
    except Interrupted as exc:
        if run_dir is not None:
            run_dir.log(str(exc))
        typer.echo(f"mindiss: {exc}" + ("; continue with --resume" if run_dir else ""), err=True)
        raise typer.Exit(130)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
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
                   f"{out / 'model.safetensors'}, figure {out / 'figures' / 'density.png'}", err=True)


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
    t.add_row("bias = W_ex (Identity 1 residual)", f"{res.bias:.6g} ({res.identity1_residual:.1e})")
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
    out: Path = typer.Option(Path("mindiss-report"), "--out", help="output folder"),
    quick: bool = typer.Option(False, "--quick", help="smaller runs (a few minutes on 2 cores)"),
    only: Optional[list[str]] = typer.Option(None, "--only", help="run only this experiment (repeat the flag for "
                                             "several): " + ", ".join(_EXPERIMENTS)),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
    as_json: bool = typer.Option(False, "--json", help="print the summary as one JSON object"),
):
    """Every result of the paper as figures, tables, results.json and report.html in OUT."""
    from . import report

    if out.exists() and not out.is_dir():
        _fail(InputError(f"--out {str(out)!r} exists and is not a directory"), 2)
    try:
        results = report.reproduce(out, only, quick=quick,
                                   show_progress=not quiet and not as_json and sys.stderr.isatty())
    except InputError as exc:
        _fail(exc, 2)
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
    repeats: int = typer.Option(0, help="timed repeats per configuration, median reported (0: 5, or 2 with --quick)"),
    dtype: str = typer.Option("both", help="chain dtype: float32, float64 or both"),
    case: str = typer.Option("all", help="trap, double_well, mlp or all"),
    memory: bool = typer.Option(True, "--memory/--no-memory", help="measure peak memory per chain"),
    quick: bool = typer.Option(False, "--quick", help="10x fewer updates, 2 repeats"),
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
    if case not in ("trap", "double_well", "mlp", "all"):
        _fail(InputError(f"--case must be trap, double_well, mlp or all, got {case!r}"), 2)
    if repeats < 0:
        _fail(InputError("--repeats must be >= 0"), 2)
    out = bench.run_all(quick=quick, device=device, repeats=repeats or None,
                        dtypes=("float32", "float64") if dtype == "both" else (dtype,), memory=memory,
                        cases=None if case == "all" else (case,))
    if as_json:
        _print_json(out)
        return
    typer.echo(f"device {out['device']}, torch {out['torch']}, {out['threads']} threads, load average "
               f"{out['load_average'][0]:.2f}, median of {out['repeats']} after one warm-up, interleaved")
    typer.echo(f"{'case':<38}{'N':>8}{'d':>3}{'updates':>8}{'dtype':>9}{'library':>10}{'bare':>10}"
               f"{'ratio':>7}{'B/chain lib':>13}{'bare':>7}  target")
    for r in out["cases"]:
        mem = ("" if r["library_bytes_per_chain"] is None else
               f"{r['library_bytes_per_chain']:>13.0f}{r['bare_bytes_per_chain']:>7.0f}")
        typer.echo(f"{r['label']:<38}{r['n_chains']:>8}{r['dim']:>3}{r['n_steps']:>8}{r['dtype']:>9}"
                   f"{r['library_msteps_per_s']:>10.2f}{r['bare_msteps_per_s']:>10.2f}{r['ratio']:>7.2f}"
                   f"{mem:<20}  {r['target']} {'ok' if r['meets_target'] else 'MISSED'}")
    typer.echo("throughput in M chain-steps/s; ratio = library/bare speed")
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

    from .io import atomic_write_bytes
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
    atomic_write_bytes(target, buf.getvalue())
    typer.echo(f"{n} samples -> {target} (from {d.start}; {d.steps} MALA moves of dt = {d.dt:g}, acceptance "
               f"{d.acceptance_rate:.3f})", err=True)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
