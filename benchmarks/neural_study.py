"""The neural recipe study (issue 18, item 4): fronts of test-NLL gap against W_ex per recipe family.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/neural_study.py --out benchmarks/results/neural_study

runs every (dataset, family, scale, seed) of ``mindiss.app.neural_study`` that has no JSON yet under
``OUT/runs`` (one JSON per finished run, written atomically: a killed study resumes where it stopped),
then aggregates what is there into ``OUT/summary.json``, ``OUT/fronts.png``, ``OUT/densities.png`` and
``OUT/table.csv``. ``--aggregate-only`` skips training. ``--calibrate`` measures every family's seconds
per update in one process (interleaved rounds; ``OUT/calibration.json``): the equal-wall-time fronts then
read each run's curves on that calibrated clock, since the runs' own clocks drift with a shared machine's
load. ``--best-from STUDY --updates N`` runs, per family, only the scale (``--n-best K``: the K scales)
with the lowest mean gap at equal updates in the finished study STUDY (among scales where no seed
diverged) at N updates into its own ``--out`` (the long runs; ``OUT/selection.json`` records the
choice, ``OUT/gaps.png`` shows the gap against updates). ``--quick`` uses the reduced settings
(``neural_study.QUICK``; use another ``--out``). Bad arguments: a message naming the problem, exit 2.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from mindiss.app import neural_study as ns  # noqa: E402
from mindiss.errors import InputError  # noqa: E402
from mindiss.io import atomic_write_json, atomic_write_text  # noqa: E402
from mindiss.threads import single_thread  # noqa: E402


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output folder (runs/, summary.json, figures)")
    p.add_argument("--datasets", default=",".join(ns.DATASETS), help="comma-separated toy sets")
    p.add_argument("--families", default=",".join(ns.FAMILIES), help="comma-separated recipe families")
    p.add_argument("--seeds", type=int, default=3, help="seeds per (family, scale), from 0")
    p.add_argument("--scales", default=None,
                   help="comma-separated scales for every family (default: each family's scan, neural_study.SCALES)")
    p.add_argument("--quick", action="store_true", help="the reduced settings (neural_study.QUICK)")
    p.add_argument("--updates", type=int, default=None, help="override the interior updates per run")
    p.add_argument("--chains", type=int, default=None, help="override the persistent chains per run")
    p.add_argument("--limit", type=int, default=None, help="run at most this many new runs, then aggregate")
    p.add_argument("--aggregate-only", action="store_true", help="only aggregate the runs already there")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    p.add_argument("--calibrate", action="store_true",
                   help="measure each family's seconds per update in one process (OUT/calibration.json; the "
                        "equal-wall-time fronts then use these costs, not the runs' own clocks)")
    p.add_argument("--best-from", default=None, metavar="STUDY",
                   help="a finished study folder: run each family only at its best scale there (lowest mean gap at "
                        "equal updates, no seed diverged); needs --updates other than the study's and its own --out")
    p.add_argument("--n-best", type=int, default=1,
                   help="with --best-from: run each family's N best scales (a best scale of the short study may "
                        "diverge at the longer length)")
    return p.parse_args(argv)


def _positive(name, v):
    if v is not None and v < 1:
        raise InputError(f"--{name} must be a positive integer, got {v}")
    return v


def build(args):
    """(specs, settings) from the parsed arguments; InputError on anything invalid."""
    _positive("seeds", args.seeds)
    _positive("updates", args.updates)
    _positive("chains", args.chains)
    if args.limit is not None and args.limit < 0:
        raise InputError(f"--limit must be >= 0, got {args.limit}")
    families = ns.check_choice("family", args.families, ns.FAMILIES)
    scales = None
    if args.scales is not None:
        try:
            vals = tuple(float(s) for s in args.scales.split(",") if s.strip())
        except ValueError:
            raise InputError(f"--scales must be comma-separated numbers, got {args.scales!r}") from None
        if not vals or any(not v > 0 for v in vals):
            raise InputError(f"--scales must be positive numbers, got {args.scales!r}")
        scales = {f: vals for f in families}
    cfg = ns.QUICK if args.quick else ns.FULL
    cfg = ns.with_settings(cfg, n_updates=args.updates, n_chains=args.chains)
    if args.best_from is not None:
        return long_specs(args, families, cfg), cfg
    specs = ns.specs(args.datasets, families, tuple(range(args.seeds)), scales)
    return specs, cfg


def _source_summary(study) -> dict:
    path = Path(study) / "summary.json"
    if not path.exists():
        raise InputError(f"--best-from {str(study)!r}: no summary.json there (aggregate that study first)")
    return json.loads(path.read_text())


def long_specs(args, families, cfg):
    """The long runs: each family at its best scale of the --best-from study, seed first; the folders checked apart."""
    if args.scales is not None:
        raise InputError("--best-from picks the scales: drop --scales")
    src = _source_summary(args.best_from)
    ns.check_long(src.get("settings"), cfg, args.best_from, args.out)
    datasets_ = ns.check_choice("dataset", args.datasets, ns.DATASETS)
    _positive("n-best", args.n_best)
    best = {ds: ns.best_scales(src, ds, families, args.n_best) for ds in datasets_}
    return [s for seed in range(args.seeds) for ds in datasets_ if best[ds]
            for s in ns.specs(ds, list(best[ds]), (seed,), best[ds])]


def record_selection(out: Path, args, specs, cfg) -> None:
    """OUT/selection.json: the source study, the length and the chosen scales. A folder holds one source study
    at one length: another source or --updates is refused; more scales (a larger --n-best, more families) are
    added to the record."""
    sel = {"source": str(args.best_from), "updates": cfg.n_updates,
           "scales": sorted({f"{s.dataset}/{s.family}/{s.scale:g}" for s in specs})}
    path = out / "selection.json"
    if path.exists():
        old = json.loads(path.read_text())
        if (old["source"], old["updates"]) != (sel["source"], sel["updates"]):
            raise InputError(f"{path} records another selection ({old['source']}, {old['updates']} updates): "
                             "use a fresh --out")
        sel["scales"] = sorted(set(old["scales"]) | set(sel["scales"]))
    atomic_write_json(path, sel)
    cal, mine = Path(args.best_from) / "calibration.json", out / "calibration.json"
    if cal.exists() and not mine.exists():      # per-update costs do not depend on the run length
        atomic_write_text(mine, cal.read_text())


def aggregate(out: Path, specs, figures: bool = True) -> dict:
    runs = ns.load_runs(out)
    cal_path = out / "calibration.json"
    calibration = json.loads(cal_path.read_text()) if cal_path.exists() else None
    agg = ns.aggregate(runs, specs, calibration)
    agg["calibration"] = calibration
    agg["claims"] = ns.claims(agg)
    agg["n_runs"] = len(runs)
    agg["n_expected"] = len(specs)
    agg["training_seconds_sum"] = sum(r.get("wall_seconds") or 0.0 for r in runs)
    if runs:
        agg["settings"] = runs[0]["settings"]
    atomic_write_json(out / "summary.json", ns._json_safe(agg))
    cols, rows = ns.summary_table(agg)
    lines = [",".join(cols)] + [",".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in r) for r in rows]
    atomic_write_text(out / "table.csv", "\n".join(lines) + "\n")
    if figures and runs:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        for name, fig in (("fronts.png", ns.plot_fronts(agg)), ("densities.png", ns.plot_densities(runs, agg))):
            fig.savefig(out / name, dpi=90)
            plt.close(fig)
        sel_path = out / "selection.json"
        if sel_path.exists():
            sel = json.loads(sel_path.read_text())
            fig = ns.plot_gap_curves(runs, reference=short_study_points(sel), hlines=EXAMPLE_GAP)
            fig.savefig(out / "gaps.png", dpi=90)
            plt.close(fig)
    return agg


#: examples/moons_mlp.toml's measured gap (its own settings: 4,000 updates, 2,048 chains, 2-64-64-1 net, 5,000 draws)
EXAMPLE_GAP = {"examples/moons_mlp.toml: 0.043 (4,000 updates, 2,048 chains, 64-64 net, 5,000 draws)": 0.043}


def short_study_points(sel: dict) -> dict:
    """{(family, scale): ([updates], [mean gap])} of the source study at the selected scales (its final point)."""
    path = Path(sel["source"]) / "summary.json"
    if not path.exists():
        return {}
    src = json.loads(path.read_text())
    n = src["settings"]["n_updates"] + 2
    out = {}
    for key in sel["scales"]:
        ds, f, scale = key.split("/")
        for p in src["datasets"].get(ds, {}).get("equal_updates", {}).get(f, {}).get("points", []):
            if p["scale"] == float(scale) and p["gap"] is not None:
                out[(f, p["scale"])] = ([n], [p["gap"]])
    return out


def main(argv=None) -> int:
    try:
        args = parse(argv)
    except SystemExit as exc:          # argparse: exit 2 on bad syntax, 0 on --help
        return int(exc.code or 0)
    try:
        specs, cfg = build(args)
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise InputError(f"--out {str(out)!r} exists and is not a folder")
        out.mkdir(parents=True, exist_ok=True)
        if args.best_from is not None:
            record_selection(out, args, specs, cfg)
        if not args.aggregate_only:
            start = time.perf_counter()
            with single_thread():
                stats = ns.run_study(out, specs, cfg, limit=args.limit,
                                     log=lambda s: print(s, flush=True))
            print(f"ran {stats['done']} runs, skipped {stats['skipped']} finished ones, "
                  f"{time.perf_counter() - start:.0f} s", flush=True)
        if args.calibrate:
            datasets_ = sorted({s.dataset for s in specs})
            families = [f for f in ns.FAMILIES if any(s.family == f for s in specs)]
            with single_thread():
                cal = ns.calibrate(datasets_, families, cfg, log=lambda s: print(s, flush=True))
            atomic_write_json(out / "calibration.json", ns._json_safe(cal))
        agg = aggregate(out, specs, figures=not args.no_figures)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"runs": agg["n_runs"], "expected": agg["n_expected"], "missing": len(agg["missing"])}))
    for line in agg["claims"]:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
