"""`mindiss train` with neural energies from a config: [energy] kind = "mlp" / "rbm", the named data
sets ([data] kind = "moons", ..., "digits"), the grid quadrature behind the true loss, minibatches and
the schedules that suit networks; every bad key exits 2 naming it."""
import json
import math
import tomllib
from pathlib import Path

import pytest

from mindiss.app import config as C

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]

MOONS = """
[energy]
kind = "mlp"
hidden = [16, 16]
confinement = 0.5

[data]
kind = "moons"
n = 500

[schedule]
kind = "constant"
scale = 1.0

[dynamics]
duration = 12.0
n_steps = 60
n_chains = 512
n_replicas = 2

[output]
record_every = 10
"""


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _train(raw: dict):
    """resolve + build + train, as the CLI does (without the run directory)."""
    from mindiss.core.train import train

    kw = C.build(C.resolve(raw))
    kw.pop("checkpoint_every")
    kw.pop("notes")
    return train(**kw), kw


def test_moons_mlp_trains_through_the_cli(run_cli, tmp_path):
    code, out, err = run_cli("train", _write(tmp_path / "moons.toml", MOONS), "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["n_updates"] == 62 and res["sampler"] == "mala"       # mala: the neural default
    assert res["free_energy_method"] == "exact"                      # ln Z by grid quadrature
    for key in ("excess_work", "excess_work_se", "delta_free_energy", "loss_true_change", "final_loss"):
        assert res[key] is not None and math.isfinite(res[key]), key
    initial = res["final_loss"] - res["loss_true_change"]
    assert res["final_loss"] < initial - 0.05                          # it learned
    assert res["excess_work"] > -4 * res["excess_work_se"]            # second law within errors
    grid = [n for n in res["notes"] if "grid quadrature" in n]
    assert grid and "NOT converged" not in grid[0]


def test_every_update_records_a_finite_true_loss():
    raw = tomllib.loads(MOONS)
    raw["dynamics"].update(n_steps=20, n_chains=256, n_replicas=1)
    raw["output"]["record_every"] = 1
    res, kw = _train(raw)
    h = res.history
    assert len(h["update"]) == 23
    for col in ("loss_true", "excess_work", "work"):
        assert all(math.isfinite(v) for v in h[col]), col
    q = kw["energy"].last
    assert q.boundary_mass < 1e-6 and q.error_estimate < 1e-4


@pytest.mark.parametrize("schedule", [
    {"kind": "cosine", "scale": 1.0},
    {"kind": "linear", "scale": 1.0},
    {"kind": "constant", "scale": 0.05, "preconditioner": "adam"},
    {"kind": "constant", "scale": 0.05, "preconditioner": "fisher-diag"},
    {"kind": "natural_gradient", "scale": 0.03},                      # fisher = diag, tau = auto (pilot)
    {"kind": "natural_gradient", "fisher": "lowrank", "scale": 1.0, "tau": "0.5"},
    {"kind": "friction", "scale": 0.03},
])
def test_network_schedules_from_a_config(schedule):
    raw = tomllib.loads(MOONS)
    raw["schedule"] = schedule
    raw["dynamics"].update(n_steps=16, n_chains=256, n_replicas=2, duration=3.2)
    res, _ = _train(raw)
    assert math.isfinite(res.excess_work) and math.isfinite(res.loss_true_change)
    pre = schedule.get("preconditioner")
    if schedule["kind"] == "natural_gradient":
        pre = f"fisher-{schedule.get('fisher', 'diag')}"
    elif schedule["kind"] == "friction":
        pre = "friction-diag"
    assert (res.preconditioner or {}).get("name") == pre


def test_rbm_on_digits_runs(run_cli, tmp_path):
    text = """
[energy]
kind = "rbm"
hidden = 8

[data]
kind = "digits"

[schedule]
kind = "constant"
scale = 0.5

[dynamics]
duration = 0.25
n_steps = 5
n_chains = 128
n_replicas = 2
"""
    code, out, err = run_cli("train", _write(tmp_path / "rbm.toml", text), "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["n_updates"] == 7 and res["free_energy_method"] == "exact"   # 2^8 hidden states enumerated
    assert math.isfinite(res["excess_work"]) and math.isfinite(res["final_loss"])
    assert "theta_final" not in res                                   # networks: summaries, not weights
    assert res["theta_summary"]["n_params"] == 64 * 8 + 64 + 8
    assert set(res["theta_summary"]["theta0"]) == {"theta_norm", "norm_W", "norm_b", "norm_c"}


def test_mlp_on_digits_gets_delta_f_from_ais():
    res, kw = _train({"energy": {"kind": "mlp", "hidden": [16]}, "data": {"kind": "digits"},
                      "schedule": {"kind": "constant", "scale": 0.5},
                      "dynamics": {"duration": 0.25, "n_steps": 5, "n_chains": 128, "n_replicas": 2}})
    assert kw["energy"].dim == 64 and isinstance(kw["chains"], tuple)   # exact start: N(0, 1/k)
    assert res.free_energy_method.startswith("ais")
    assert math.isfinite(res.delta_free_energy) and math.isfinite(res.excess_work)


def test_minibatches_pass_through():
    raw = tomllib.loads(MOONS)
    raw["dynamics"].update(n_steps=8, n_chains=128, n_replicas=1, duration=1.6, batch_size=64)
    res, kw = _train(raw)
    assert kw["batch_size"] == 64 and math.isfinite(res.excess_work)


def test_bad_keys_exit_2_naming_them(run_cli, tmp_path):
    def fails(text, *words):
        code, out, err = run_cli("train", _write(tmp_path / "bad.toml", text), "--json")
        assert code == 2 and out == "", (code, err)
        for w in words:
            assert w in err, (w, err)
        return err

    fails('[energy]\nkind = "mlp"\nwidths = [8]\n', "energy.widths")
    fails('[energy]\nkind = "mlp"\nvariance = 2.0\n', "energy.variance", "'mlp'")
    for hidden in ("[0, 8]", "[16, -1]", '"wide"', "[]", "[1.5]"):
        fails(f'[energy]\nkind = "mlp"\nhidden = {hidden}\n', "energy.hidden")
    fails('[energy]\nkind = "rbm"\nhidden = [8, 8]\n', "energy.hidden")
    fails('[energy]\nkind = "mlp"\nconfinement = 0.0\n', "energy.confinement", "positive")
    fails('[energy]\nkind = "mlp"\nconfinement = -1.0\n', "energy.confinement")
    fails('[energy]\nkind = "mlp"\nactivation = "sigmoid"\n', "energy.activation")
    fails('[energy]\nkind = "harmonic"\nhidden = [8]\n', "energy.hidden", "'mlp'")
    for n in (0, -5):
        fails(f'[data]\nkind = "moons"\nn = {n}\n', "data.n")
    fails('[data]\nkind = "moons"\nmean = 1.0\n', "data.mean", "'moons'")
    fails('[data]\nkind = "gaussian"\nn = 100\n', "data.n")
    fails('[energy]\nkind = "mlp"\ndim = 3\n[data]\nkind = "moons"\n', "energy.dim", "2-dimensional")
    fails('[energy]\nkind = "mlp"\n[schedule]\nkind = "natural_gradient"\nfisher = "full"\n', "schedule.fisher")
    fails('[energy]\nkind = "mlp"\n[schedule]\nkind = "constant"\npreconditioner = "fisher-full"\n',
          "schedule.preconditioner")
    fails('[energy]\nkind = "mlp"\n[dynamics]\nsampler = "exact"\n', "dynamics.sampler")
    fails('[energy]\nkind = "mlp"\n[schedule]\nkind = "natural_gradient"\ntau = "online"\n', "schedule.tau")
    fails('[energy]\nkind = "mlp"\n[schedule]\nkind = "friction"\n[dynamics]\nbackend = "fokker_planck"\n',
          "schedule.kind = 'friction'", "particles")
    fails('[dynamics]\nbatch_size = 10\n', "dynamics.batch_size")
    fails('[output]\ngrid_n = 101\n', "output.grid_n")
    fails('[energy]\nkind = "mlp"\n[output]\ngrid_n = 100\n', "output.grid_n", "odd")
    fails('[energy]\nkind = "mlp"\n[output]\ngrid_box = [3.0, -3.0]\n', "output.grid_box")
    # found when the energy is built: theta0 of the wrong length
    fails('[energy]\nkind = "mlp"\nhidden = [4]\ntheta0 = [0.0, 1.0]\n[data]\nkind = "moons"\n'
          '[schedule]\nkind = "constant"\n', "energy.theta0", "17 numbers")


def test_resolved_neural_configs_read_back_unchanged():
    for raw in ({"energy": {"kind": "mlp", "hidden": [16, 16]}, "data": {"kind": "moons", "n": 500},
                 "schedule": {"kind": "natural_gradient"}},
                {"energy": {"kind": "rbm", "hidden": 8}, "data": {"kind": "digits"}, "dynamics": {"batch_size": 64},
                 "schedule": {"kind": "cosine"}},
                {"energy": {"kind": "mlp"}, "data": {"kind": "file", "path": "x.npy"},
                 "output": {"grid_n": 101, "grid_box": [-5, 5]}, "schedule": {"kind": "constant"}}):
        cfg = C.resolve(raw)
        assert C.resolve(tomllib.loads(C.to_toml(cfg))) == cfg
    cfg = C.resolve({"energy": {"kind": "mlp"}, "data": {"kind": "pinwheel"}, "schedule": {"kind": "constant"}})
    assert cfg["energy"]["hidden"] == [64, 64] and cfg["energy"]["confinement"] == 0.1
    assert cfg["energy"]["dim"] == 2 and cfg["energy"]["theta0"] is None and cfg["data"]["n"] == 2000
    assert C.resolve({"energy": {"kind": "rbm"}, "data": {"kind": "digits"},
                      "schedule": {"kind": "constant"}})["energy"]["dim"] == 64


def test_config_names_match_the_library():
    from mindiss.data import toy as datasets
    from mindiss.energies import neural

    assert set(C.ACTIVATIONS) == set(neural.ACTIVATIONS)
    assert C.TOY_DATA == datasets.TOY


def test_example_config_builds():
    cfg = C.load(ROOT / "examples" / "moons_mlp.toml")
    assert cfg["energy"]["kind"] == "mlp" and cfg["data"]["kind"] == "moons"
    assert cfg["dynamics"]["n_steps"] == 4000 and cfg["dynamics"]["n_chains"] == 2048
    kw = C.build(cfg)
    assert kw["energy"].n_params == 4417 and kw["sampler"] == "mala"


def test_digits_example_is_the_report_sections_mlp():
    """examples/digits_mlp.toml builds, and it is the model and recipe of the neural_digits section."""
    from mindiss.app.experiments import neural_digits as exp

    cfg = C.load(ROOT / "examples" / "digits_mlp.toml")
    e, d, s, dyn = cfg["energy"], cfg["data"], cfg["schedule"], cfg["dynamics"]
    assert (e["kind"], tuple(e["hidden"]), e["activation"], e["confinement"], e["init_seed"]) == (
        "mlp", exp.MLP_HIDDEN, "silu", exp.MLP_CONFINEMENT, exp.MLP_INIT_SEED)
    assert (d["kind"], d["seed"]) == ("digits", exp.DATA_SEED)
    dt = dyn["duration"] / dyn["n_steps"]
    assert dt == pytest.approx(exp.MLP_STEP) and s["scale"] * dt == pytest.approx(exp.MLP_LR)
    assert (s["kind"], s["preconditioner"]) == ("cosine", "adam")
    assert dyn["n_steps"] == exp.SETTINGS[False]["mlp_updates"] and dyn["n_chains"] == exp.SETTINGS[False]["n_chains"]
    kw = C.build(cfg)
    assert kw["energy"].n_params == 24_961 and kw["energy"].dim == 64 and kw["sampler"] == "mala"
    import torch

    assert torch.equal(torch.as_tensor(kw["theta0"]), exp._mlp_energy().theta0())    # the same initial network
