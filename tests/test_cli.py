"""The command line as a user runs it: figures, JSON keys, exit codes, nothing written on bad input."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import mindiss as md

BOUND = ["bound", "harmonic", "--variance", 0.5, "--mobility", 1.3, "--duration", 2, "--theta0", -0.4,
         "--target", 1.7]


def test_bound_harmonic_reference_value(run_cli):
    code, out, _ = run_cli(*BOUND, "--json")
    assert code == 0
    res = json.loads(out)
    assert abs(res["excess_work"] - 1.225) < 1e-12
    for key in ("impulse_start", "impulse_end", "theta_after_start", "theta_before_end"):
        assert key in res
    # impulses are the integrated learning rates s tau/(T + 2 tau) and s/2
    tau = 0.5 / 1.3
    assert res["impulse_start"] == pytest.approx(0.5 * tau / (2 + 2 * tau), rel=1e-14)
    assert res["impulse_end"] == pytest.approx(0.25, rel=1e-14)


def test_bound_console_script_subprocess():
    """The installed `mindiss` entry point works as a subprocess (as a user runs it)."""
    exe = os.path.join(os.path.dirname(sys.executable), "mindiss")
    proc = subprocess.run([exe, *map(str, BOUND), "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert abs(json.loads(proc.stdout)["excess_work"] - 1.225) < 1e-12


@pytest.mark.parametrize("flag,value,word", [("--variance", 0, "variance"), ("--mobility", -1, "mobility"),
                                             ("--duration", 0, "duration"), ("--variance", "nan", "variance")])
def test_bound_bad_input_exit_2(run_cli, flag, value, word):
    args = list(BOUND)
    args[args.index(flag) + 1] = value
    code, out, err = run_cli(*args, "--json")
    assert code == 2
    assert word in err and out == ""


def test_schedule_csv_path_marks_jumps(run_cli, tmp_path):
    path = tmp_path / "sched.csv"
    code, _, _ = run_cli("schedule", "harmonic", "--variance", 1, "--mobility", 1, "--duration", 1,
                         "--steps", 50, "--theta0", 0, "--target", 5, "--out", path, "--kind", "midpoint")
    assert code == 0
    rows = np.genfromtxt(path, delimiter=",", names=True)
    assert len(rows) == 50 + 3  # initial state + n + 2 updates
    assert rows["t"][0] == rows["t"][1] == 0.0 and rows["t"][-1] == rows["t"][-2] == 1.0
    assert rows["impulse"][1] == 1 and rows["impulse"][-1] == 1 and rows["impulse"][2:-1].sum() == 0
    b = md.bounds.harmonic(1, 1, 1, theta0=0.0, target=5.0)
    assert rows["lr"][1] == pytest.approx(b.impulse_start, rel=1e-14)
    assert rows["lr"][-1] == pytest.approx(b.impulse_end, rel=1e-14)
    assert rows["theta"][1] == pytest.approx(b.theta_after_start[0], rel=1e-14)
    # the path lands on the target to the O(dt) discretisation error
    assert abs(rows["theta"][-1] - 5.0) < 5 * 5.0 / 50
    assert float(np.sum(rows["dt"])) == pytest.approx(1.0, rel=1e-14)


def test_schedule_json_matches_library(run_cli):
    for kind, disc in (("midpoint", md.schedules.optimal_harmonic(2, 0.5, 3).discretise(7)),
                       ("exact", md.optimal.discrete_harmonic(7, variance=2, mobility=0.5, duration=3))):
        code, out, _ = run_cli("schedule", "harmonic", "--variance", 2, "--mobility", 0.5, "--duration", 3,
                               "--steps", 7, "--format", "json", "--kind", kind)
        assert code == 0
        rows = json.loads(out)["rows"]
        assert [r["lr"] for r in rows] == pytest.approx(list(disc.lr), rel=1e-15)
        assert [r["impulse"] for r in rows] == list(disc.is_impulse)


def _excess_work_of_exported_path(rows, s, mu):
    """A separate recursion (no library code): the chain mean of N -> infinity chains of variance s follows
    m <- theta + (m - theta) exp(-mu dt / s) after each update; the work of an update at frozen chains is
    k ((m - theta_new)^2 - (m - theta_old)^2) / 2; Delta F = 0 on the trap, so W_ex = W."""
    theta, m, work = rows["theta"][0], rows["theta"][0], 0.0
    for r in rows[1:]:
        work += ((m - r["theta"]) ** 2 - (m - theta) ** 2) / (2 * s)
        theta = r["theta"]
        m = theta + (m - theta) * math.exp(-mu * r["dt"] / s)
    return work


def test_exact_export_lands_and_has_the_closed_form_excess_work(run_cli, tmp_path):
    """Issue 19: the default export is the exact n-update optimum: lands to 1e-12 for random parameters, and the
    excess work of its exported theta path (separate recursion) is k D^2 / (2 + 2 n tanh(mu T / (2 n s)))."""
    rng = np.random.default_rng(19)
    for i in range(6):
        s, mu, T = rng.uniform(0.1, 3.0, 3)
        n = int(rng.integers(1, 40))
        a, b = rng.uniform(-5, 5, 2)
        path = tmp_path / f"s{i}.csv"
        code, _, err = run_cli("schedule", "harmonic", "--variance", repr(float(s)), "--mobility", repr(float(mu)), "--duration",
                               repr(float(T)), "--steps", n, "--theta0", repr(float(a)), "--target", repr(float(b)),
                               "--out", path)
        assert code == 0, err
        rows = np.genfromtxt(path, delimiter=",", names=True)
        assert len(rows) == n + 3 and abs(rows["theta"][-1] - b) <= 1e-12 * max(1.0, abs(b))
        closed = (b - a) ** 2 / s / (2 + 2 * n * math.tanh(mu * T / (2 * n * s)))
        assert _excess_work_of_exported_path(rows, s, mu) == pytest.approx(closed, rel=1e-10)


def test_midpoint_export_stops_short(run_cli):
    """--kind midpoint keeps the discretised continuous optimum: 1.8 % short with 7 steps (issue 19's case)."""
    code, out, _ = run_cli("schedule", "harmonic", "--variance", 0.37, "--mobility", 2.3, "--duration", 0.83,
                           "--steps", 7, "--theta0", 0, "--target", 1, "--kind", "midpoint", "--format", "json")
    assert code == 0
    assert json.loads(out)["rows"][-1]["theta"] == pytest.approx(0.98173, abs=1e-5)


def test_gaussian_export_lands_on_the_data_moments(run_cli):
    code, out, _ = run_cli("schedule", "gaussian", "--mean0", 0.3, "--variance0", 1.7, "--data-mean", -1.1,
                           "--data-variance", 0.45, "--mobility", 0.8, "--duration", 2.3, "--steps", 20,
                           "--format", "json")
    assert code == 0
    obj = json.loads(out)
    last = obj["rows"][-1]
    assert last["centre"] == pytest.approx(-1.1, abs=1e-12) and last["variance"] == pytest.approx(0.45, abs=1e-12)
    bound = md.bounds.gaussian(0.3, 1.7, -1.1, 0.45, 0.8, 2.3)
    # chain moments on the optimal path at every update time (the last interior row is at t = T)
    path = bound.path(2.3)
    assert obj["rows"][-2]["chain_mean"] == pytest.approx(float(path.chain_mean[0]), rel=1e-10)
    assert obj["rows"][-2]["chain_variance"] == pytest.approx(float(path.chain_variance[0]), rel=1e-10)
    assert obj["excess_work"] == pytest.approx(0.88927, abs=1e-5)


def test_numerical_export(run_cli, tmp_path):
    code, out, _ = run_cli("schedule", "numerical", "--energy", "harmonic", "--theta0", -0.4, "--data-mean", 1.7,
                           "--data-variance", 1.0, "--mobility", 1.3, "--duration", 2.0, "--steps", 3,
                           "--format", "json")
    assert code == 0
    obj = json.loads(out)
    assert obj["excess_work"] == pytest.approx(2.1 ** 2 / (2 + 6 * math.tanh(1.3 * 2 / 6)), rel=1e-10)
    assert obj["rows"][-1]["theta"] == pytest.approx([1.7], abs=1e-14)
    samples = tmp_path / "x.txt"
    samples.write_text("\n".join(str(v) for v in np.random.default_rng(0).normal(0.5, 0.7, 50)))
    code, out, _ = run_cli("schedule", "numerical", "--energy", "double_well", "--theta0", "1,0", "--data", samples,
                           "--duration", 1, "--steps", 2, "--grid", "-3,3,31")
    assert code == 0 and out.count("\n") == 1 + 1 + (2 + 2)   # header, initial state, n + 2 updates


@pytest.mark.parametrize("args,word", [
    (["harmonic", "--variance", 1, "--mobility", 1, "--duration", 1, "--steps", 3, "--kind", "best"], "--kind"),
    (["gaussian", "--mean0", 0, "--variance0", -1, "--data-mean", 0, "--data-variance", 1, "--mobility", 1,
      "--duration", 1, "--steps", 3], "variance"),
    (["numerical", "--energy", "mlp", "--theta0", 0, "--duration", 1, "--steps", 2], "--energy"),
    (["numerical", "--energy", "double_well", "--theta0", "1,0", "--duration", 1, "--steps", 2], "--data"),
    (["numerical", "--energy", "quartic", "--theta0", "1,1", "--data", "/nonexistent.npy", "--duration", 1,
      "--steps", 2], "no such file"),
])
def test_schedule_bad_input(run_cli, args, word):
    code, out, err = run_cli("schedule", *args)
    assert code == 2 and word in err and out == ""


def test_schedule_bad_steps(run_cli):
    code, out, err = run_cli("schedule", "harmonic", "--variance", 1, "--mobility", 1, "--duration", 1,
                             "--steps", 0)
    assert code == 2 and "n_steps" in err and out == ""


def _write(path, text):
    path.write_text(text)
    return path


def test_train_json_keys_and_run_dir(run_cli, tmp_path):
    cfg = _write(tmp_path / "run.toml", """
[energy]
variance = 0.5
theta0 = -0.4
[data]
mean = 1.7
[dynamics]
mobility = 1.3
duration = 2.0
n_steps = 200
backend = "moments"
""")
    out_dir = tmp_path / "run"
    code, out, _ = run_cli("train", cfg, "--json", "--out", out_dir)
    assert code == 0
    res = json.loads(out)
    for key in ("work", "excess_work", "excess_work_se", "delta_free_energy", "loss_true_change",
                "loss_approx_change", "final_loss", "theta_final", "n_updates", "bound", "energy_joules"):
        assert key in res, key
    assert res["n_updates"] == 202
    assert res["energy_joules"] == pytest.approx(res["excess_work"] * 1.380649e-23 * 300, rel=1e-14)
    # the moments backend lands on the bound up to the O(dt) discretisation error
    assert res["excess_work"] == pytest.approx(1.225, rel=5e-3)
    assert res["loss_true_change"] - res["loss_approx_change"] == pytest.approx(res["excess_work"], abs=1e-12)
    assert json.loads((out_dir / "result.json").read_text()) == res
    assert (out_dir / "history.csv").read_text().count("\n") == 1 + 203  # header, initial row, 202 updates
    assert "[dynamics]" in (out_dir / "config.toml").read_text()
    assert not [p for p in out_dir.iterdir() if p.name.startswith(".") and p.name != ".mindiss.lock"]  # no temp files


BAD_CONFIGS = {
    "unknown key": ("[dynamics]\nn_step = 10\n", "dynamics.n_step"),
    "unknown table": ("[dynamic]\nn_steps = 10\n", "[dynamic]"),
    "negative variance": ("[energy]\nvariance = -1.0\n", "energy.variance"),
    "zero duration": ("[dynamics]\nduration = 0.0\n", "dynamics.duration"),
    "zero steps": ("[dynamics]\nn_steps = 0\n", "dynamics.n_steps"),
    "zero mobility": ("[dynamics]\nmobility = 0\n", "dynamics.mobility"),
    "bad choice": ("[dynamics]\nsampler = \"heun\"\n", "dynamics.sampler"),
    "wrong type": ("[dynamics]\nn_chains = \"many\"\n", "dynamics.n_chains"),
    "not toml": ("[dynamics\n", "not valid TOML"),
}


@pytest.mark.parametrize("name", sorted(BAD_CONFIGS))
def test_train_bad_config_exit_2_nothing_written(run_cli, tmp_path, name):
    text, word = BAD_CONFIGS[name]
    cfg = _write(tmp_path / "bad.toml", text)
    out_dir = tmp_path / "out"
    code, out, err = run_cli("train", cfg, "--json", "--out", out_dir)
    assert code == 2
    assert word in err
    assert out == ""
    assert not out_dir.exists()


def test_train_reports_all_problems_at_once(run_cli, tmp_path):
    cfg = _write(tmp_path / "bad.toml", "[energy]\nvariance = 0\nfoo = 1\n[dynamics]\nn_steps = -3\n")
    code, _, err = run_cli("train", cfg)
    assert code == 2
    assert "energy.variance" in err and "energy.foo" in err and "dynamics.n_steps" in err


@pytest.mark.parametrize("content,word", [("1.0\nnan\n2.0\n", "NaN"), ("1,2\n3,4\n", "dimension")])
def test_train_bad_data_file(run_cli, tmp_path, content, word):
    data = tmp_path / "data.csv"
    data.write_text(content)
    cfg = _write(tmp_path / "run.toml", f'[data]\nkind = "file"\npath = "{data}"\n[dynamics]\nbackend = "moments"\n')
    code, out, err = run_cli("train", cfg, "--json", "--out", tmp_path / "out")
    assert code == 2 and word in err and out == ""
    assert not (tmp_path / "out").exists()


def test_train_data_file_npy(run_cli, tmp_path):
    x = np.random.default_rng(0).normal(2.0, 1.0, size=(500, 1))
    np.save(tmp_path / "d.npy", x)
    cfg = _write(tmp_path / "run.toml", f'[data]\nkind = "file"\npath = "{tmp_path / "d.npy"}"\n'
                 '[dynamics]\nbackend = "moments"\nn_steps = 100\n')
    code, out, _ = run_cli("train", cfg, "--json")
    assert code == 0
    # the optimal schedule lands on the sample mean, the data's xbar
    assert json.loads(out)["theta_final"][0] == pytest.approx(x.mean(), abs=5 * abs(x.mean()) / 100)


@pytest.mark.parametrize("text,word", [
    ('[schedule]\nkind = "constant"\nscale = 1e9\n[dynamics]\nbackend = "moments"\nn_steps = 50\n', "ledger"),
    ('[energy]\nkind = "gaussian"\n[schedule]\nkind = "constant"\nscale = 300.0\n[dynamics]\nn_steps = 50\n'
     'n_chains = 1000\n', "precision"),
    ('[schedule]\nkind = "constant"\nscale = 1.0\n[dynamics]\nsampler = "euler"\nn_steps = 40\nn_chains = 100\n'
     'duration = 200.0\n', "Euler-Maruyama step is too large"),
])
def test_train_divergence_exit_3(run_cli, tmp_path, text, word):
    cfg = _write(tmp_path / "run.toml", text)
    code, out, err = run_cli("train", cfg, "--json", "--out", tmp_path / "out")
    assert code == 3 and "diverged at update" in err and word in err and out == ""
    assert not (tmp_path / "out" / "result.json").exists()


def test_print_defaults_roundtrip(run_cli, tmp_path):
    code, out, _ = run_cli("train", "--print-defaults")
    assert code == 0
    import tomllib

    from mindiss.app import config

    assert config.resolve(tomllib.loads(out)) == config.defaults()


def test_version(run_cli):
    import mindiss

    code, out, _ = run_cli("--version")
    assert code == 0 and out.strip() == f"mindiss {mindiss.__version__}"


@pytest.mark.parametrize("args", [[], ["train"], ["reproduce"], ["bench"], ["bound"], ["bound", "harmonic"],
                                  ["bound", "gaussian"], ["schedule"], ["schedule", "harmonic"]])
def test_every_help_answers(run_cli, args):
    code, out, _ = run_cli(*args, "--help")
    assert code == 0 and "Usage" in out


MOMENTS = "[dynamics]\nbackend = \"moments\"\nn_steps = 40\n"


def test_set_overrides_like_the_file(run_cli, tmp_path):
    """--set dynamics.seed=3 --set schedule.scale=0.1 gives the result of a file holding those keys."""
    base = _write(tmp_path / "base.toml", MOMENTS)
    code, via_set, err = run_cli("train", base, "--json", "--set", "schedule.kind=constant",
                                 "--set", "schedule.scale=0.1", "--set", "dynamics.seed=3")
    assert code == 0, err
    full = _write(tmp_path / "full.toml", MOMENTS.replace("[dynamics]", "[schedule]\nkind = \"constant\"\n"
                                                          "scale = 0.1\n[dynamics]\nseed = 3"))
    code, via_file, _ = run_cli("train", full, "--json")
    assert code == 0 and json.loads(via_set) == json.loads(via_file)


@pytest.mark.parametrize("override,word", [
    ("dynamics.sed=3", "dynamics.sed"), ("dynamics.seed=-3", "dynamics.seed"), ("dynamics.seed=x", "dynamics.seed"),
    ("schedule.scale=0", "schedule.scale"), ("dynamics=3", "TABLE.KEY"), ("seed", "TABLE.KEY=VALUE"),
    ("a.b.c=1", "TABLE.KEY"), ("dynamics.n_steps=99999999999999999999", "dynamics.n_steps"),
    ("dynamiks.seed=1", "[dynamiks]"), ("energy.kind=mlp", "needs a quadratic energy, not 'mlp'"),
])
def test_bad_set_exit_2_naming_it(run_cli, tmp_path, override, word):
    cfg = _write(tmp_path / "c.toml", MOMENTS)
    code, out, err = run_cli("train", cfg, "--set", override, "--out", tmp_path / "out")
    assert code == 2 and word in err and out == "", err
    assert not (tmp_path / "out").exists()


def test_resolved_config_with_odd_path_reads_back(run_cli, tmp_path):
    """config.toml in the run directory is written by tomli-w: a data path holding a quote, a backslash
    and a newline reads back unchanged (string formatting wrote invalid TOML for it)."""
    import tomllib

    from mindiss.app import config

    data = tmp_path / 'we"ird \\ na\nme.npy'
    np.save(data, np.random.default_rng(1).normal(1.0, 1.0, size=(200, 1)))
    code, _, err = run_cli("train", "--set", "data.kind=file", "--set", f"data.path={json.dumps(str(data))}",
                           "--set", "dynamics.backend=moments", "--set", "dynamics.n_steps=10",
                           "--out", tmp_path / "run", "--json")
    assert code == 0, err
    back = tomllib.loads((tmp_path / "run" / "config.toml").read_text())
    assert back["data"]["path"] == str(data)
    assert config.resolve(back)["data"]["path"] == str(data)


def test_plain_progress_lines():
    """Off a terminal, train's per-update stop() check prints a plain line every `every` seconds."""
    from mindiss.app.cli import _plain_progress

    lines = []
    import typer

    echo, typer.echo = typer.echo, lambda text, err=False: lines.append(text)
    try:
        check = _plain_progress(lambda: False, 2, every=0.0)
        assert [check() for _ in range(3)] == [False] * 3
    finally:
        typer.echo = echo
    assert len(lines) == 3 and lines[-1].startswith("mindiss train: 3 of about 2 updates")
