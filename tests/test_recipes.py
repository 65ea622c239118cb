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
    with pytest.raises(InputError, match="needs tau"):
        R.recipe("natural-diag", scale=1.0, duration=T)
    with pytest.raises(InputError, match="unknown recipe"):
        R.recipe("sgd-momentum", scale=1.0, duration=T)
    with pytest.raises(InputError, match="scale"):
        R.recipe("adam", scale=0.0, duration=T)
    assert set(R.RECIPES) >= set(R.NEEDS_TAU) and all(R.describe(n) for n in R.RECIPES)


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
                "natural-lowrank": 0.05, "friction-diag": 0.01}


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


@pytest.mark.parametrize("name", R.RECIPES)
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
