"""`mindiss reproduce` as a user runs it: report, results.json schema, files, browser, failures."""
import json
import re
import shutil

import pytest

from mindiss.app import report
from mindiss.app.experiments import ORDER, available

BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    results = report.reproduce(out, quick=True)
    return out, results


def test_every_experiment_runs_and_passes(quick_report):
    out, results = quick_report
    assert list(results["experiments"]) == available()
    for name, e in results["experiments"].items():
        assert e["status"] == "passed", (name, e["error"], [c for c in e["checks"] if not c["passed"]])
        assert e["checks"], f"{name} reports no check against theory"
    assert results["summary"]["ok"]


def test_results_json_schema(quick_report):
    jsonschema = pytest.importorskip("jsonschema")
    out, results = quick_report
    on_disk = json.loads((out / "results.json").read_text())
    jsonschema.validate(on_disk, report.RESULTS_SCHEMA)
    assert on_disk["summary"] == results["summary"]


def test_checks_declare_their_kind_and_the_summary_counts_them(quick_report):
    """Issue 19: every check has a kind, the summary counts them per section, and at least half of every section's
    checks are independent references or physical laws (every section, neural ones included)."""
    out, results = quick_report
    from mindiss.app.experiments.base import CHECK_KINDS

    totals = dict.fromkeys(CHECK_KINDS, 0)
    below = []
    for name, e in results["experiments"].items():
        kinds = [c["kind"] for c in e["checks"]]
        assert set(kinds) <= set(CHECK_KINDS)
        assert e["check_kinds"] == {k: kinds.count(k) for k in CHECK_KINDS}
        for k in CHECK_KINDS:
            totals[k] += e["check_kinds"][k]
        share = (kinds.count("independent") + kinds.count("law")) / len(kinds)
        assert e["external_share"] == pytest.approx(share)
        if share < 0.5:
            below.append(name)
    assert results["summary"]["checks_by_kind"] == totals
    assert results["summary"]["sections_below_external_target"] == below
    assert below == [], below
    page = (out / "report.html").read_text()
    assert "What the checks test" in page and "independent reference" in page


def test_checks_shown_are_the_checks_computed(quick_report):
    """Each check's pass flag is recomputed from its numbers and criterion."""
    _, results = quick_report
    for e in results["experiments"].values():
        for c in e["checks"]:
            m, r, tol = c["measured"], c["reference"], c["tolerance"]
            ok = {"abs": lambda: abs(m - r) <= tol, "rel": lambda: abs(m - r) <= tol * abs(r),
                  "se": lambda: abs(m - r) <= tol * c["se"], "ge": lambda: m >= r - tol,
                  "le": lambda: m <= r + tol}[c["mode"]]()
            assert ok == c["passed"], c


def test_html_references_existing_files(quick_report):
    out, results = quick_report
    page = (out / "report.html").read_text()
    refs = re.findall(r'(?:src|href)="([^"#]+)"', page)
    assert refs
    for ref in refs:
        assert not ref.startswith(("http:", "https:", "//")), f"report must work offline: {ref}"
        assert (out / ref).is_file(), ref
    for e in results["experiments"].values():
        assert any(f.endswith(".png") for f in e["figures"]) and any(f.endswith(".svg") for f in e["figures"])
        for t in e["tables"]:
            assert (out / t["file"]).is_file()
        assert e["command"] in page
    assert not [p for p in out.rglob(".*.tmp")], "temporary files left behind"


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def test_report_in_headless_chromium(quick_report):
    out, results = quick_report
    exe = _chromium()
    if exe is None:
        pytest.skip("no Chromium on this machine (.ci/run installs Debian's chromium package)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (test extra)")
    errors = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=BROWSER_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto((out / "report.html").as_uri())
        page.wait_for_load_state("load")
        sizes = page.evaluate("Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])")
        page.screenshot(path=str(out / "report-screenshot.png"), full_page=True)
        browser.close()
    assert len(sizes) == len(results["experiments"])
    for src, complete, width in sizes:
        assert complete and width > 0, f"figure {src} did not load"
    assert errors == []
    assert (out / "report-screenshot.png").stat().st_size > 10_000


def test_failed_experiment_does_not_abort_others(tmp_path, monkeypatch, run_cli):
    from mindiss.app.experiments import optimal_schedule

    def boom(quick=False, progress=None):
        raise RuntimeError("deliberate failure")

    monkeypatch.setattr(optimal_schedule, "run", boom)
    names = available()[:2] if len(available()) > 1 else available()
    args = ["reproduce", "--quick", "--out", tmp_path, "--quiet"]
    for n in names:
        args += ["--only", n]
    code, out, err = run_cli(*args)
    assert code == 1
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["experiments"]["optimal_schedule"]["status"] == "error"
    assert "deliberate failure" in results["experiments"]["optimal_schedule"]["error"]
    if len(names) > 1:
        assert results["experiments"][names[1]]["status"] == "passed"
    page = (tmp_path / "report.html").read_text()
    assert "This experiment failed" in page and "deliberate failure" in page
    assert not (tmp_path / "figures" / "optimal_schedule.png").exists()
    assert not [p for p in tmp_path.rglob(".*.tmp")]


def test_unknown_experiment_exit_2(tmp_path, run_cli):
    code, out, err = run_cli("reproduce", "--only", "nonsense", "--out", tmp_path / "o")
    assert code == 2 and "nonsense" in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_all_experiments_registered():
    assert set(available()) <= set(ORDER)
