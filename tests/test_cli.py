"""The command line as a user runs it: figures, JSON keys, exit codes, nothing written on bad input."""
import json
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
                         "--steps", 50, "--theta0", 0, "--target", 5, "--out", path)
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
    code, out, _ = run_cli("schedule", "harmonic", "--variance", 2, "--mobility", 0.5, "--duration", 3,
                           "--steps", 7, "--format", "json")
    assert code == 0
    rows = json.loads(out)["rows"]
    disc = md.schedules.optimal_harmonic(2, 0.5, 3).discretise(7)
    assert [r["lr"] for r in rows] == pytest.approx(list(disc.lr), rel=1e-15)
    assert [r["impulse"] for r in rows] == list(disc.is_impulse)


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

    from mindiss import config

    assert config.resolve(tomllib.loads(out)) == config.defaults()
