"""``reproduce``: run the experiments, save figures/tables/results.json and a static report.html.

Every file is written atomically. A failing experiment is recorded (with its error) and the
others still run; the caller turns ``summary['ok'] == False`` into a non-zero exit code. The
report is built in a staging folder beside ``out`` and moved into place only when complete, so
an interrupted reproduction leaves ``out`` as it was (``_report_folder``).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import html
import io
import os
import time
import traceback
from pathlib import Path

from .. import __version__
from .experiments import ORDER, available, get
from .experiments.base import CHECK_KINDS, EXTERNAL_KINDS, count_kinds, external_share
from ..io import atomic_write_bytes, atomic_write_json, atomic_write_text

#: JSON schema of results.json (draft 2020-12); documented in docs/results.md.
RESULTS_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["mindiss_version", "created", "quick", "experiments", "summary"],
    "properties": {
        "mindiss_version": {"type": "string"},
        "created": {"type": "string"},
        "quick": {"type": "boolean"},
        "summary": {
            "type": "object",
            "required": ["ok", "n_experiments", "n_failed", "n_checks", "n_checks_failed", "seconds",
                         "checks_by_kind", "sections_below_external_target"],
            "properties": {"ok": {"type": "boolean"}, "n_experiments": {"type": "integer"},
                           "n_failed": {"type": "integer"}, "n_checks": {"type": "integer"},
                           "n_checks_failed": {"type": "integer"}, "seconds": {"type": "number"},
                           "checks_by_kind": {"type": "object", "required": list(CHECK_KINDS),
                                              "additionalProperties": {"type": "integer"}},
                           "sections_below_external_target": {"type": "array", "items": {"type": "string"}}},
        },
        "experiments": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["title", "claim", "status", "error", "command", "seconds", "numbers", "checks",
                             "check_kinds", "external_share", "tables", "figures", "parameters", "notes"],
                "properties": {
                    "title": {"type": "string"},
                    "claim": {"type": "string"},
                    "status": {"enum": ["passed", "check-failed", "error"]},
                    "error": {"type": ["string", "null"]},
                    "command": {"type": "string"},
                    "seconds": {"type": "number"},
                    "numbers": {"type": "object", "additionalProperties": {"type": ["number", "null"]}},
                    "parameters": {"type": "object"},
                    "notes": {"type": "array", "items": {"type": "string"}},
                    "figures": {"type": "array", "items": {"type": "string"}},
                    "check_kinds": {"type": "object", "required": list(CHECK_KINDS),
                                    "additionalProperties": {"type": "integer"}},
                    "external_share": {"type": ["number", "null"]},
                    "checks": {"type": "array", "items": {
                        "type": "object",
                        "required": ["name", "measured", "reference", "tolerance", "mode", "passed", "criterion",
                                     "kind"],
                        "properties": {"name": {"type": "string"}, "measured": {"type": ["number", "null"]},
                                       "reference": {"type": ["number", "null"]},
                                       "reference_name": {"type": "string"},
                                       "tolerance": {"type": "number"},
                                       "mode": {"enum": ["abs", "rel", "se", "ge", "le"]},
                                       "se": {"type": ["number", "null"]}, "passed": {"type": "boolean"},
                                       "criterion": {"type": "string"}, "kind": {"enum": list(CHECK_KINDS)}}}},
                    "tables": {"type": "array", "items": {
                        "type": "object", "required": ["name", "columns", "rows", "file"],
                        "properties": {"name": {"type": "string"}, "file": {"type": "string"},
                                       "columns": {"type": "array", "items": {"type": "string"}},
                                       "rows": {"type": "array", "items": {"type": "array"}}}}},
                },
            },
        },
    },
}


#: At least this share of a section's checks are independent references or physical laws (issue 19).
EXTERNAL_TARGET = 0.5


def command_for(name: str, quick: bool) -> str:
    return f"mindiss reproduce --only {name}" + (" --quick" if quick else "")


def _save_figure(fig, folder: Path, name: str) -> list[str]:
    import matplotlib.pyplot as plt

    files = []
    for ext in ("png", "svg"):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, dpi=110 if ext == "png" else None, bbox_inches="tight")
        atomic_write_bytes(folder / f"{name}.{ext}", buf.getvalue())
        files.append(f"figures/{name}.{ext}")
    plt.close(fig)
    return files


def _table_csv(table) -> str:
    def cell(v):
        if isinstance(v, float):
            return repr(v)
        text = str(v)
        return f'"{text}"' if "," in text else text

    return "\n".join([",".join(table.columns)] + [",".join(cell(v) for v in row) for row in table.rows]) + "\n"


def run_experiment(name: str, out: Path, quick: bool, progress) -> dict:
    """Run one experiment, save its figure and tables; never raises (errors are recorded)."""
    mod = get(name)
    start = time.perf_counter()
    entry = {"title": mod.TITLE, "claim": mod.CLAIM, "caption": getattr(mod, "CAPTION", ""),
             "command": command_for(name, quick), "status": "error", "error": None, "numbers": {},
             "checks": [], "check_kinds": count_kinds(()), "external_share": None, "tables": [], "figures": [],
             "parameters": {}, "notes": []}
    try:
        result = mod.run(quick=quick, progress=progress)
        entry["numbers"] = {k: (None if v is None else float(v)) for k, v in result.numbers.items()}
        entry["parameters"] = result.parameters
        entry["notes"] = list(result.notes)
        entry["checks"] = [c.to_dict() for c in result.checks]
        entry["check_kinds"] = result.kind_counts()
        share = external_share(entry["check_kinds"])
        entry["external_share"] = None if share != share else share
        for table in result.tables:
            atomic_write_text(out / "tables" / f"{table.name}.csv", _table_csv(table))
            entry["tables"].append({**table.to_dict(), "file": f"tables/{table.name}.csv"})
        entry["figures"] = _save_figure(mod.plot(result), out / "figures", name)
        entry["status"] = "passed" if result.passed else "check-failed"
    except Exception as exc:  # one failure must not stop the others
        entry["error"] = f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc()}"
    entry["seconds"] = time.perf_counter() - start
    return entry


def reproduce(out, names=None, quick: bool = False, show_progress: bool = False) -> dict:
    """Run the experiments ``names`` (default: all) into ``out``; returns the results.json object."""
    out = Path(out)
    names = list(names) if names else available()
    unknown = [n for n in names if n not in ORDER]
    if unknown:
        from ..errors import InputError

        raise InputError(f"unknown experiment(s) {', '.join(unknown)}; choose from {', '.join(available())}")
    import matplotlib

    matplotlib.use("Agg")
    with _report_folder(out) as staging:
        return _reproduce_into(staging, names, quick, show_progress)


#: what a report folder holds; an existing --out with anything else is not replaced
REPORT_ENTRIES = frozenset({"results.json", "report.html", "figures", "tables"})


@contextlib.contextmanager
def _report_folder(out: Path):
    """A staging folder beside ``out`` that becomes ``out`` when the report is complete.

    Checked before any experiment runs: ``out`` must be new, empty or an earlier report (only
    REPORT_ENTRIES), and its parent writable. The report is built in ``.NAME.incomplete-XXXX``
    and renamed into place at the end; on any exception or interrupt (SIGINT: KeyboardInterrupt)
    the staging folder is removed and ``out`` is left exactly as it was. A lock beside ``out``
    (``.NAME.lock``) keeps two reproductions from racing; under it, staging folders that killed
    runs left behind are removed."""
    import shutil
    import tempfile

    from filelock import FileLock, Timeout

    from ..errors import InputError, OutputError
    from ..io import os_reason

    if str(out).strip() in ("", "."):
        raise InputError(f"--out must name a report folder, got {str(out)!r}")
    if out.is_symlink() and not out.exists():
        raise InputError(f"--out {str(out)!r} is a dangling symbolic link")
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {str(out)!r} exists and is not a directory")
    here = Path.cwd().resolve()
    if out.exists() and (out.resolve() == here or out.resolve() in here.parents):
        raise InputError(f"--out {str(out)!r} is the current directory or holds it: choose a report folder")
    if out.is_dir():
        try:
            extra = sorted(set(os.listdir(out)) - REPORT_ENTRIES)
        except OSError as exc:
            raise OutputError(f"cannot read --out {str(out)!r}: {os_reason(exc)}") from None
        if extra:
            raise InputError(f"--out {str(out)!r} is not an earlier report (it holds {', '.join(map(repr, extra[:3]))}"
                             f"{' ...' if len(extra) > 3 else ''}): choose a new or empty folder")
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(parent / f".{out.name}.lock"), timeout=0)
        lock.acquire()
    except Timeout:
        raise InputError(f"another mindiss reproduce is writing {str(out)!r}: wait for it to finish") from None
    except OSError as exc:
        raise OutputError(f"cannot write the report folder {str(out)!r}: {os_reason(exc)}") from None
    staging = None
    try:
        for name in os.listdir(parent):   # left by a killed run (we hold the lock: no live run owns them)
            if name.startswith((f".{out.name}.incomplete-", f".{out.name}.old-")):
                shutil.rmtree(parent / name, ignore_errors=True)
        try:
            staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.incomplete-", dir=parent))
            if out.is_dir() and not os.access(out, os.W_OK | os.X_OK):
                raise PermissionError(13, "Permission denied")
        except OSError as exc:
            raise OutputError(f"cannot write the report folder {str(out)!r}: {os_reason(exc)}") from None
        os.chmod(staging, 0o777 & ~_umask())
        yield staging
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=parent))
            os.replace(out, old / "report")
        os.replace(staging, out)
        staging = None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        lock.release()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _reproduce_into(out: Path, names: list, quick: bool, show_progress: bool) -> dict:
    """Run ``names`` into the folder ``out`` (the staging folder of ``reproduce``)."""
    start = time.perf_counter()
    experiments = {}
    bar = None
    if show_progress:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        bar = Progress(TextColumn("{task.description:<28}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                       TimeElapsedColumn())
        bar.start()
    try:
        for name in names:
            if bar is not None:
                task = bar.add_task(name, total=1)

                def progress(done, total, task=task):
                    bar.update(task, completed=done, total=max(total, 1))
            else:
                def progress(done, total):
                    pass
            experiments[name] = run_experiment(name, out, quick, progress)
            if bar is not None:
                status = experiments[name]["status"]
                mark = {"passed": "[green]ok[/]", "check-failed": "[yellow]check failed[/]",
                        "error": "[red]error[/]"}[status]
                bar.update(task, completed=1, total=1, description=f"{name} {mark}")
    finally:
        if bar is not None:
            bar.stop()
    checks = [c for e in experiments.values() for c in e["checks"]]
    n_failed = sum(e["status"] != "passed" for e in experiments.values())
    results = {
        "mindiss_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "quick": quick,
        "experiments": experiments,
        "summary": {"ok": n_failed == 0, "n_experiments": len(experiments), "n_failed": n_failed,
                    "n_checks": len(checks), "n_checks_failed": sum(not c["passed"] for c in checks),
                    "seconds": time.perf_counter() - start,
                    "checks_by_kind": count_kinds(c["kind"] for c in checks),
                    "sections_below_external_target": [n for n, e in experiments.items()
                                                       if e["external_share"] is not None
                                                       and e["external_share"] < EXTERNAL_TARGET]},
    }
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "report.html", render_html(results))
    return results


# ------------------------------------------------------------------------------------------ HTML

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{margin-bottom:.2em} h2{margin-top:2.2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
.badge{display:inline-block;padding:.1em .6em;border-radius:.8em;font-size:.8em;font-weight:600;margin-left:.6em;vertical-align:middle}
.pass{background:#d8f5dd;color:#17612a} .fail{background:#fde2e1;color:#9b1c1c} .warn{background:#fff1c9;color:#7a5800}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em} td,th{border:1px solid #ddd;padding:.25em .6em;text-align:right}
th{background:#f6f6f6} td:first-child,th:first-child{text-align:left}
figure{margin:1em 0} figure img{max-width:100%;border:1px solid #eee} figcaption{font-size:.88em;color:#555}
code,pre{background:#f4f4f4;padding:.1em .3em;border-radius:3px} pre{padding:.8em;overflow-x:auto;font-size:.85em}
.claim{font-size:1.05em} .meta{color:#666;font-size:.9em}
"""


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.6g}"
    return html.escape(str(v))


def _numbers_table(numbers: dict) -> str:
    keys = [k for k in numbers if not k.endswith("_se")]
    if not keys:
        return ""
    rows = []
    for k in keys:
        se = numbers.get(k + "_se")
        val = _fmt(numbers[k]) + (f" &plusmn; {_fmt(se)}" if se is not None else "")
        rows.append(f"<tr><td>{html.escape(k)}</td><td>{val}</td></tr>")
    return "<table><tr><th>key number</th><th>value (kT unless stated)</th></tr>" + "".join(rows) + "</table>"


def _checks_table(checks: list) -> str:
    if not checks:
        return ""
    rows = []
    for c in checks:
        badge = '<span class="badge pass">pass</span>' if c["passed"] else '<span class="badge fail">FAIL</span>'
        se = f" &plusmn; {_fmt(c['se'])}" if c.get("se") is not None else ""
        rows.append(f"<tr><td>{html.escape(c['name'])}</td><td>{_fmt(c['measured'])}{se}</td>"
                    f"<td>{_fmt(c['reference'])}</td><td>{html.escape(c.get('reference_name', ''))}</td>"
                    f"<td>{html.escape(c['criterion'])}</td><td>{html.escape(c.get('kind') or '')}</td>"
                    f"<td>{badge}</td></tr>")
    return ("<table><tr><th>check</th><th>measured</th><th>reference</th><th>reference is</th>"
            "<th>tolerance</th><th>kind</th><th>result</th></tr>" + "".join(rows) + "</table>")


def _data_tables(tables: list) -> str:
    parts = []
    for t in tables:
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in t["columns"])
        body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>" for row in t["rows"])
        parts.append(f"<details><summary>table <code>{html.escape(t['file'])}</code> "
                     f"({len(t['rows'])} rows)</summary><table><tr>{head}</tr>{body}</table></details>")
    return "".join(parts)


_KIND_LABEL = {"independent": "independent reference", "law": "physical law", "identity": "identity",
               "consistency": "consistency", "tuner": "tuner"}


def _kinds_line(counts: dict, share) -> str:
    """'12 checks: 8 independent reference, 2 physical law, ... (83 % independent or physical law)'."""
    total = sum(counts.values())
    if not total:
        return "no checks"
    parts = ", ".join(f"{counts[k]} {_KIND_LABEL[k]}" for k in CHECK_KINDS if counts.get(k))
    pct = "" if share is None else f" ({100 * share:.0f} % independent or physical law)"
    return f"{total} checks: {parts}{pct}"


def _kinds_table(results: dict) -> str:
    """Checks by kind per section, with the share of independent references and physical laws."""
    head = "".join(f"<th>{_KIND_LABEL[k]}</th>" for k in CHECK_KINDS)
    rows = []
    for name, e in results["experiments"].items():
        counts, share = e.get("check_kinds", {}), e.get("external_share")
        cells = "".join(f"<td>{counts.get(k, 0)}</td>" for k in CHECK_KINDS)
        ok = share is not None and share >= EXTERNAL_TARGET
        mark = ('<span class="badge pass">&ge; half</span>' if ok else
                '<span class="badge warn">below half</span>' if share is not None else "")
        pct = "n/a" if share is None else f"{100 * share:.0f} %"
        rows.append(f'<tr><td><a href="#{name}">{html.escape(name)}</a></td>{cells}<td>{pct} {mark}</td></tr>')
    tot = results["summary"].get("checks_by_kind", {})
    total_cells = "".join(f"<td><b>{tot.get(k, 0)}</b></td>" for k in CHECK_KINDS)
    share = external_share({k: tot.get(k, 0) for k in CHECK_KINDS}) if tot else None
    pct = "n/a" if share is None or share != share else f"{100 * share:.0f} %"
    legend = "".join(f"<li><b>{_KIND_LABEL[k]}</b>: {html.escape(v.split(': ', 1)[1])}</li>"
                     for k, v in CHECK_KINDS.items())
    return (f"<h2>What the checks test</h2><table><tr><th>section</th>{head}<th>independent + physical law</th></tr>"
            + "".join(rows) + f"<tr><td><b>all</b></td>{total_cells}<td><b>{pct}</b></td></tr></table>"
            f"<ul class='meta'>{legend}</ul>")


def render_html(results: dict) -> str:
    s = results["summary"]
    status = ('<span class="badge pass">all checks pass</span>' if s["ok"]
              else f'<span class="badge fail">{s["n_failed"]} experiment(s) failed</span>')
    toc, sections = [], []
    for i, (name, e) in enumerate(results["experiments"].items(), 1):
        badge = {"passed": '<span class="badge pass">all checks pass</span>',
                 "check-failed": '<span class="badge fail">check failed</span>',
                 "error": '<span class="badge fail">error</span>'}[e["status"]]
        toc.append(f'<li><a href="#{name}">{html.escape(e["title"])}</a> {badge}</li>')
        body = [f'<h2 id="{name}">{i}. {html.escape(e["title"])} {badge}</h2>',
                f'<p class="claim"><b>Claim.</b> {html.escape(e["claim"])}</p>',
                f'<p class="meta">{html.escape(_kinds_line(e.get("check_kinds", {}), e.get("external_share")))}</p>']
        if e["status"] == "error":
            body.append(f"<p><b>This experiment failed.</b></p><pre>{html.escape(e['error'] or '')}</pre>")
        png = [f for f in e["figures"] if f.endswith(".png")]
        if png:
            body.append(f'<figure><img src="{png[0]}" alt="{html.escape(e["title"])}">'
                        f'<figcaption>{html.escape(e.get("caption", ""))} '
                        f'(<a href="{png[0][:-4]}.svg">svg</a>)</figcaption></figure>')
        body.append(_numbers_table(e["numbers"]))
        body.append(_checks_table(e["checks"]))
        body.extend(f"<p class='meta'>Note: {html.escape(n)}</p>" for n in e["notes"])
        body.append(_data_tables(e["tables"]))
        body.append(f'<p class="meta">Reproduce this section alone: <code>{html.escape(e["command"])}</code> '
                    f'({e["seconds"]:.1f} s)</p>')
        sections.append("<section>" + "".join(body) + "</section>")
    mode = "quick" if results["quick"] else "full"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>mindiss reproduction report</title>
<style>{_CSS}</style></head><body>
<h1>Minimal-dissipation learning: reproduction report {status}</h1>
<p class="meta">mindiss {html.escape(results["mindiss_version"])}, {mode} run, {html.escape(results["created"])},
{s["n_checks"] - s["n_checks_failed"]}/{s["n_checks"]} checks pass, {s["seconds"]:.0f} s.
Hnybida &amp; Verret, <i>Minimal-Dissipation Learning for Energy-Based Models</i>, arXiv 2510.03137.
Conventions: kT = 1 (energies in kT; joules at 300 K where stated), Langevin
dx = -mu grad E dt + sqrt(2 mu) dW, work done on the chains positive. Errors are standard errors over
independent replicas. Numbers: <a href="results.json">results.json</a>; tables in <code>tables/</code>.</p>
<ol>{"".join(toc)}</ol>
{_kinds_table(results)}
{"".join(sections)}
</body></html>
"""
