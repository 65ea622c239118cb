"""Training recipes: their schedules and learning-rate matrices, torch.optim.Adam against the
library's Adam, per-component relaxation times against the Gaussian's exact ones, and a short smoke
training of every recipe on the moons that lowers the exact (grid) NLL and keeps the first law."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import mindiss as md
from mindiss.data import toy as D
from mindiss.estimators import evaluate as ev
from mindiss.rates import recipes as R
from mindiss.errors import InputError
from mindiss.rates.preconditioners import Adam, Fisher, GradStats

F64 = torch.float64
#: small tensors: one torch thread (conftest) avoids stalls when the 2 cores are shared
pytestmark = pytest.mark.usefixtures("one_thread")


def gen(seed):
    return torch.Generator().manual_seed(seed)


def test_recipe_schedules_and_matrices():
    T, tau = 4.0, 0.7
    for name in ("sgd-constant", "sgd-cosine", "sgd-linear", "adam"):
        sched, pre = R.recipe(name, scale=2.0, duration=T)
        assert sched.duration == T and sched.impulse_start == 0 and sched.impulse_end == 0
        assert float(sched(0.0)) == pytest.approx(2.0)
        assert (pre is None) == (name != "adam")
    assert float(R.recipe("sgd-cosine", scale=2.0, duration=T).schedule(T)) == pytest.approx(0.0, abs=1e-12)
    assert float(R.recipe("sgd-linear", scale=2.0, duration=T).schedule(T / 2)) == pytest.approx(1.0)
    assert isinstance(R.recipe("adam", scale=1.0, duration=T).preconditioner, Adam)
    for name, kind in (("natural-diag", Fisher), ("natural-lowrank", Fisher), ("friction-diag", R.DiagonalFriction)):
        sched, pre = R.recipe(name, scale=0.5, duration=T, tau=tau)
        assert isinstance(pre, kind)
        a = md.schedules.alpha(T, tau)
        assert sched.impulse_start == pytest.approx(0.5 * tau / (T + 2 * tau))
        assert sched.impulse_end == pytest.approx(0.25)
        t = np.linspace(0, T, 7)
        np.testing.assert_allclose(sched(t), 0.5 * a(t), rtol=1e-14)
    assert R.recipe("natural-diag", scale=1, duration=T, tau=tau).preconditioner.kind == "diag"
    low = R.recipe("natural-lowrank", scale=1, duration=T, tau=tau).preconditioner
    assert low.kind == "lowrank" and low.relative_damping == 1.0
    for name in R.NEEDS_TAU:          # default: tau from the training chains, retuned online
        sched, pre = R.recipe(name, scale=0.5, duration=T)
        assert sched.params["tau"] == "online" and sched.params["tau_from"] == "training chains"
        assert sched.at_tau(tau).impulse_start == pytest.approx(0.5 * tau / (T + 2 * tau))
        np.testing.assert_allclose(sched.at_tau(tau)(np.linspace(0, T, 5)), 0.5 * md.schedules.alpha(T, tau)(
            np.linspace(0, T, 5)), rtol=1e-14)
        assert isinstance(pre, R.DiagonalFriction if name == "friction-diag" else R.TauFromChains)
    with pytest.raises(InputError, match="tau must be"):
        R.recipe("natural-diag", scale=1.0, duration=T, tau="pilot")
    with pytest.raises(InputError, match="unknown recipe"):
        R.recipe("sgd-momentum", scale=1.0, duration=T)
    with pytest.raises(InputError, match="scale"):
        R.recipe("adam", scale=0.0, duration=T)
    assert set(R.ALL_RECIPES) >= set(R.NEEDS_TAU) | set(R.RECIPES) and all(R.describe(n) for n in R.ALL_RECIPES)


def test_library_adam_direction_equals_torch_optim_adam():
    """The one Adam (preconditioners.Adam, theta_new = theta - lr P g) against torch.optim.Adam (an
    implementation written apart from ours) on the same gradients and per-update learning rates."""
    g = torch.Generator().manual_seed(1)
    grads = [torch.randn(5, generator=g, dtype=F64) for _ in range(6)]
    lrs = [0.1, 0.05, 0.2, 0.1, 0.01, 0.3]
    lib = Adam().fresh()
    theta = torch.zeros(5, dtype=F64)
    p = torch.nn.Parameter(torch.zeros(5, dtype=F64))
    opt = torch.optim.Adam([p], lr=lrs[0])
    for gk, lr in zip(grads, lrs):
        theta = theta - lr * lib.apply(gk)
        for group in opt.param_groups:
            group["lr"] = lr
        p.grad = gk.clone()
        opt.step()
        torch.testing.assert_close(theta, p.detach(), rtol=1e-12, atol=1e-15)
    assert not hasattr(R, "TorchOptimizer")   # one Adam: the recipes use preconditioners.Adam


def test_diagonal_relaxation_times_match_the_gaussian_exactly():
    """E = (x - a)^2 / (2 s) in natural parameters: d_theta E = (a - x, (x^2 - a^2)/2); under the exact
    OU move at equilibrium (a = 0) x decorrelates in s / mu and x^2 in s / (2 mu), and the Fisher
    diagonal is (s, s^2 / 2)."""
    s, mu, dt = 0.8, 1.25, 0.04
    energy = md.Gaussian(1)
    theta = md.Gaussian.natural(0.0, s)
    x = energy.sample_equilibrium(theta, 4000, gen=gen(2))
    est = R.diagonal_relaxation(energy, theta, x, md.ExactOU(), dt=dt, mobility=mu, gen=gen(3), rows=4000,
                                n_steps=300)
    a = math.exp(-mu * dt / s)
    discrete = [dt * (1 + a) / (2 * (1 - a)), dt * (1 + a * a) / (2 * (1 - a * a))]   # dt (1/2 + sum a^l)
    np.testing.assert_allclose(est["tau"].numpy(), discrete, rtol=0.08)
    np.testing.assert_allclose(discrete, [s / mu, s / (2 * mu)], rtol=0.01)
    np.testing.assert_allclose(est["fisher_diag"].numpy(), [s, s * s / 2], rtol=0.08)
    assert est["tau_mean"] == pytest.approx(float(est["tau"].mean()))
    tau = R.estimate_tau(energy, theta, x, sampler="exact", dt=dt, mobility=mu, gen=gen(3), rows=4000, n_steps=300)
    assert tau == pytest.approx(est["tau_mean"], rel=1e-12)


def test_diagonal_friction_with_equal_relaxation_times_is_the_diagonal_fisher():
    P, tau = 6, 0.9
    fr = R.DiagonalFriction(relaxation={"tau": torch.full((P,), tau, dtype=F64), "tau_mean": tau}, ema=0.8,
                            relative_damping=1e-3).fresh()
    fi = Fisher("diag", ema=0.8, relative_damping=1e-3).fresh()
    g = torch.Generator().manual_seed(4)
    scales = torch.linspace(0.5, 3.0, P, dtype=F64)
    for _ in range(4):
        samples = torch.randn(64, P, generator=g, dtype=F64) * scales
        stats = GradStats(samples.mean(0), samples=samples)
        fr.observe(stats, None)
        fi.observe(stats, None)
        gh = torch.randn(P, generator=g, dtype=F64)
        torch.testing.assert_close(fr.apply(gh), fi.apply(gh), rtol=1e-10, atol=0)
    assert fr.report()["tau"] == tau and fr.report()["n_pilots"] == 0


# -- smoke training on the moons ----------------------------------------------------------------
STEP = 0.2
SMOKE_SCALES = {"sgd-constant": 0.3, "sgd-cosine": 0.5, "sgd-linear": 0.5, "adam": 0.003, "natural-diag": 0.01,
                "natural-lowrank": 0.05, "natural-kfac": 0.01, "friction-diag": 0.01}


@pytest.fixture(scope="module")
def moons_setup():
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    e = ev.GridQuadrature(md.NeuralEnergy.mlp(2, (16, 16), "silu", 0.5, gen=3), box=(-10.0, 10.0), n=101,
                          dtype=torch.float32)
    theta0 = e.theta0()
    chains = e.sample_equilibrium(theta0, 128, gen=gen(5))
    relax = R.diagonal_relaxation(e.inner, theta0, chains, md.MALA(), dt=STEP, mobility=1.0, gen=gen(6),
                                  rows=32, n_steps=32)
    yield e, theta0, chains, D.toy("moons", 300, gen=7), relax
    torch.set_num_threads(torch_threads)


@pytest.mark.parametrize("name", R.ALL_RECIPES)
def test_every_recipe_lowers_the_true_nll_on_the_moons_and_keeps_the_first_law(name, moons_setup):
    e, theta0, chains, data, relax = moons_setup
    n = 30
    alpha = name in R.NEEDS_TAU
    scale = SMOKE_SCALES[name] if alpha else SMOKE_SCALES[name] / STEP
    sched, pre = R.recipe(name, scale=scale, duration=n * STEP, relaxation=relax if alpha else None)
    res = md.train(e, data, schedule=sched, preconditioner=pre, theta0=theta0, chains=chains, sampler="mala",
                   n_steps=n, n_chains=128, n_replicas=1, seed=9, record_every=10)
    h = res.history
    assert h["loss_true"][-1] < h["loss_true"][0] - 0.02, (name, h["loss_true"])
    assert res.first_law_residual < 1e-9
    assert e.worst_boundary_mass < 1e-3
    if pre is not None:
        assert res.preconditioner["name"] == pre.name


# -- tau from the training chains (no pilot) ------------------------------------------------------

def _trap_run(seed, rows=256, n=100, T=10.0, s=0.5, mu=1.0):
    energy = md.HarmonicTrap(variance=s, dim=2)
    data = md.data.Gaussian(mean=[2.0, -1.0], variance=[s, s])
    rec = R.recipe("natural-diag", scale=1.0, duration=T, chain_relaxation=R.ChainRelaxation(rows=rows))
    res = md.train(energy, data, schedule=rec.schedule, preconditioner=rec.preconditioner, theta0=[0.0, 0.0],
                   n_steps=n, n_chains=4096, sampler="exact", n_replicas=1, seed=seed, mobility=mu)
    return res, res.preconditioner["tau_from"]


def test_training_chain_tau_matches_the_ou_closed_form_within_its_error():
    """Harmonic trap, exact OU moves: d_theta E = (theta - x)/s relaxes as exp(-mu t / s), so tau = s / mu
    (the continuum closed form; the trapezoid sum at dt = 0.1 differs by 0.3 %), while theta moves from
    0 to the data mean along the run (the estimate is made on the learning trajectory)."""
    res, est = _trap_run(seed=1)
    assert res.tau_estimates[0]["method"].startswith("training chains: none recorded yet")
    assert res.tau_estimates[-1]["method"].startswith("training chains (256 chains")
    assert est["converged"] == 1.0 and est["resets"] == 0
    assert abs(est["tau"] - 0.5) < 3 * est["tau_se"], est
    assert est["tau_se"] < 0.1 * 0.5          # informative: the check could fail
    assert abs(res.theta_final[0] - 2.0) < 0.1 and abs(res.theta_final[1] + 1.0) < 0.1   # it learned


@pytest.mark.slow
def test_training_chain_tau_error_is_calibrated_over_seeds():
    """Over 12 independent runs the z-scores (tau - s/mu) / se have a root mean square near 1."""
    z = [(e["tau"] - 0.5) / e["tau_se"] for e in (_trap_run(seed)[1] for seed in range(12))]
    rms = float(np.sqrt(np.mean(np.square(z))))
    assert 0.5 < rms < 1.6, z


def test_training_chain_tau_on_the_double_well_agrees_with_the_pilot():
    """Tilted double well E = 1.3 (x^2 - 1)^2 + 0.4 x under MALA: the slow component (x, hopping between
    wells) needs lags past the 64 kept (its exponential tail is added); the training run, on data drawn
    from the model itself so that theta stays near theta_0, is compared with pilot runs on clones
    (diagonal_relaxation, 1,024 chains x 400 moves, 3 seeds) at theta_0."""
    dw = md.ExpFamily.tilted_double_well()
    th = torch.tensor([1.3, 0.4], dtype=F64)
    dt = 0.05
    pilots = []
    for seed in range(3):
        x = dw.sample_equilibrium(th, 1024, gen=gen(seed), dtype=F64)
        pilots.append(R.diagonal_relaxation(dw, th, x, md.MALA(), dt=dt, mobility=1.0, gen=gen(seed + 5), rows=1024,
                                            n_steps=400)["tau_mean"])
    pilot, pilot_se = float(np.mean(pilots)), float(np.std(pilots, ddof=1) / math.sqrt(3))
    data = dw.sample_equilibrium(th, 20_000, gen=gen(99), dtype=F64)
    n = 300
    rec = R.recipe("natural-diag", scale=0.05, duration=n * dt,
                   chain_relaxation=R.ChainRelaxation(rows=1024, params=None))
    res = md.train(dw, data, schedule=rec.schedule, preconditioner=rec.preconditioner, theta0=th,
                   chains=dw.sample_equilibrium(th, 4096, gen=gen(50), dtype=F64), n_steps=n, n_chains=4096,
                   sampler="mala", n_replicas=1, seed=0)
    est = res.preconditioner["tau_from"]
    assert np.allclose(res.theta_final, th.numpy(), atol=0.02)
    assert est["converged"] == 0.5            # the slow parameter's window did not close: tail added
    assert abs(est["tau"] - pilot) < 3 * math.hypot(est["tau_se"], pilot_se), (est, pilots)


@pytest.mark.parametrize("name", ["natural-kfac", "friction-diag"])
def test_recipes_with_tau_from_the_training_chains_lower_the_nll(name, moons_setup):
    e, theta0, chains, data, _ = moons_setup
    n = 30
    sched, pre = R.recipe(name, scale=SMOKE_SCALES[name], duration=n * STEP)
    res = md.train(e, data, schedule=sched, preconditioner=pre, theta0=theta0, chains=chains, sampler="mala",
                   n_steps=n, n_chains=128, n_replicas=1, seed=9, record_every=10)
    h = res.history
    assert h["loss_true"][-1] < h["loss_true"][0] - 0.02, (name, h["loss_true"])
    assert res.first_law_residual < 1e-9
    assert all(t["method"].startswith("training chains") for t in res.tau_estimates)
    assert res.preconditioner["tau_from"]["records"] >= n


@pytest.mark.parametrize("name", ["natural-kfac", "friction-diag"])
def test_resume_with_kfac_and_training_chain_tau_is_bit_identical(name, moons_setup, tmp_path):
    e, theta0, chains, data, _ = moons_setup
    n = 14
    kw = dict(theta0=theta0, chains=chains, sampler="mala", n_steps=n, n_chains=128, n_replicas=1, seed=9)

    def run(**more):
        sched, pre = R.recipe(name, scale=SMOKE_SCALES[name], duration=n * STEP, tau_refresh=3)
        return md.train(e, data, schedule=sched, preconditioner=pre, **kw, **more)

    full = run()
    ck = tmp_path / "ck.pt"
    calls = iter(range(1000))
    with pytest.raises(md.Interrupted):
        run(checkpoint=ck, checkpoint_every=5, stop=lambda: next(calls) == 9)
    res = run(checkpoint=ck, resume=True)
    assert np.array_equal(res.thetas, full.thetas)
    assert res.tau_estimates == full.tau_estimates
