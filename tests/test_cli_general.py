"""`mindiss train` on general potentials: exponential families, the Fokker-Planck backend,
learning-rate matrices and Delta F options from a config file."""
import json

import pytest

DW_NG = """
[energy]
kind = "double_well"
theta0 = [1.0, 0.0]
[data]
kind = "model"
theta = [2.0, 0.6]
n_samples = 5000
[schedule]
kind = "natural_gradient"
fisher = "full"
[dynamics]
backend = "fokker_planck"
n_steps = 20
"""


def test_double_well_natural_gradient_on_the_exact_backend(run_cli, tmp_path):
    cfg = tmp_path / "dw.toml"
    cfg.write_text(DW_NG)
    code, out, _ = run_cli("train", cfg, "--json")
    assert code == 0
    res = json.loads(out)
    assert res["backend"] == "fokker_planck" and res["n_replicas"] == 1
    assert res["preconditioner"]["name"] == "fisher-full"
    assert "Fokker-Planck" in res["tau_estimates"][0]["method"]
    assert res["identity1_residual"] < 1e-10 and res["first_law_residual"] < 1e-10
    # Identity 2 on the grid
    assert res["excess_work"] == pytest.approx(res["kl_final"] - res["kl_initial"] + res["entropy_production"],
                                               abs=1e-10)
    assert 0 < res["excess_work"] and res["theta_final"][0] > 1.0


def test_preconditioned_baseline_with_particles(run_cli, tmp_path):
    cfg = tmp_path / "p.toml"
    cfg.write_text('[energy]\nkind = "quartic"\n[data]\nkind = "model"\ntheta = [0.5, 1.0]\nn_samples = 2000\n'
                   '[schedule]\nkind = "constant"\nscale = 2.0\npreconditioner = "fisher-diag"\n'
                   '[dynamics]\nsampler = "mala"\nn_chains = 1000\nn_steps = 10\nn_replicas = 2\n')
    code, out, _ = run_cli("train", cfg, "--json")
    assert code == 0, out
    res = json.loads(out)
    assert res["preconditioner"]["name"] == "fisher-diag" and res["free_energy_method"] == "exact"


def test_bad_general_configs_name_every_problem(run_cli, tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[energy]\nkind = "double_well"\ndim = 2\ntheta0 = [1.0]\n[data]\nkind = "model"\ntheta = [1]\n'
                   '[schedule]\nkind = "natural_gradient"\ntau = "never"\n[dynamics]\nbackend = "moments"\n')
    out_dir = tmp_path / "out"
    code, out, err = run_cli("train", cfg, "--out", out_dir)
    assert code == 2 and not out_dir.exists()
    text = out + err
    for needle in ("schedule.tau", "energy.dim must be 1", "data.theta needs 2", "energy.theta0",
                   "backend = 'moments' needs a quadratic energy"):
        assert needle in text, needle
