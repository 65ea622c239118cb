"""An interrupted ``mindiss reproduce`` (issue 16, class 10): exit 130 with a message, and the
report folder is exactly as before (the partial report is built in a staging folder and dropped)."""
import json

import pytest

from mindiss.app import report


def _fake_run(calls, interrupt_at):
    def run_experiment(name, out, quick, progress):
        calls.append(name)
        if len(calls) == interrupt_at:
            raise KeyboardInterrupt   # what SIGINT raises (SIGTERM is mapped to it by the command)
        (out / "tables").mkdir(exist_ok=True)
        (out / "tables" / f"{name}.csv").write_text("a\n1\n")
        return {"title": name, "claim": "", "caption": "", "command": "", "status": "passed", "error": None,
                "numbers": {}, "checks": [], "check_kinds": {}, "external_share": None, "tables": [], "figures": [],
                "parameters": {}, "notes": [],
                "seconds": 0.0}
    return run_experiment


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_interrupt_leaves_the_old_report_untouched(tmp_path, run_cli, monkeypatch):
    out = tmp_path / "rep"
    calls = []
    monkeypatch.setattr(report, "run_experiment", _fake_run(calls, interrupt_at=0))
    code, _, err = run_cli("reproduce", "--out", out, "--quiet", "--only", "exact_optima", "--only", "bias_identity")
    assert code == 0, err
    old = _snapshot(out)
    assert json.loads(old["results.json"])["summary"]["ok"] is True
    calls.clear()
    monkeypatch.setattr(report, "run_experiment", _fake_run(calls, interrupt_at=2))
    code, _, err = run_cli("reproduce", "--out", out, "--quiet", "--only", "exact_optima", "--only", "bias_identity")
    assert code == 130
    assert "interrupted" in err and "discarded" in err and str(out) in err
    assert _snapshot(out) == old
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["rep"]


def test_interrupt_of_a_first_report_leaves_nothing(tmp_path, run_cli, monkeypatch):
    calls = []
    monkeypatch.setattr(report, "run_experiment", _fake_run(calls, interrupt_at=2))
    code, _, err = run_cli("reproduce", "--out", tmp_path / "new", "--quiet", "--only", "exact_optima",
                           "--only", "bias_identity")
    assert code == 130 and not (tmp_path / "new").exists()
    assert not [p for p in tmp_path.iterdir() if "incomplete" in p.name]


def test_a_complete_report_replaces_the_old_one_whole(tmp_path, run_cli, monkeypatch):
    """No stale section survives: a report of one experiment into a folder that held two."""
    out = tmp_path / "rep"
    calls = []
    monkeypatch.setattr(report, "run_experiment", _fake_run(calls, interrupt_at=0))
    run_cli("reproduce", "--out", out, "--quiet", "--only", "exact_optima", "--only", "bias_identity")
    code, _, err = run_cli("reproduce", "--out", out, "--quiet", "--only", "bias_identity")
    assert code == 0, err
    assert sorted(json.loads((out / "results.json").read_text())["experiments"]) == ["bias_identity"]
    assert not (out / "tables" / "exact_optima.csv").exists()


def test_a_folder_that_is_not_a_report_is_not_replaced(tmp_path, run_cli, monkeypatch):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    ran = []
    monkeypatch.setattr(report, "run_experiment", lambda *a, **k: ran.append(1))
    code, _, err = run_cli("reproduce", "--out", out, "--quiet", "--only", "exact_optima")
    assert code == 2 and "thesis.tex" in err and not ran
    assert (out / "thesis.tex").read_text() == "precious"


@pytest.mark.parametrize("bad", [".", "file"])
def test_out_cwd_or_a_file_is_refused(tmp_path, run_cli, monkeypatch, bad):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file").write_text("x")
    code, _, err = run_cli("reproduce", "--out", bad, "--quiet", "--only", "exact_optima")
    assert code == 2 and len(err.strip().splitlines()) == 1
