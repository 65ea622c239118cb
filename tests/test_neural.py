"""NeuralEnergy: a torch module as E_theta(x), checked against closed forms, a per-sample autograd
loop, finite differences and the training loop's first law."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

import mindiss as md
from mindiss.errors import InputError
from mindiss.energies.neural import NeuralEnergy

F64 = torch.float64


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def linear(d_in, d_out, seed, dtype=torch.float32):
    """nn.Linear with weights drawn from an explicit generator (never the global RNG)."""
    lin = torch.nn.utils.skip_init(torch.nn.Linear, d_in, d_out, dtype=dtype)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(d_out, d_in, generator=gen(seed), dtype=F64))
        lin.bias.copy_(torch.randn(d_out, generator=gen(seed + 1), dtype=F64))
    return lin


class HalfSquare(torch.nn.Module):
    """f(x) = |W x + b|^2 / 2, output (N,): every derivative in closed form."""

    def __init__(self, d, k, seed=0):
        super().__init__()
        self.lin = linear(d, k, seed, F64)

    def forward(self, x):
        return 0.5 * self.lin(x).square().sum(-1)


class NoParams(torch.nn.Module):
    def forward(self, x):
        return x.sum(-1)


def mlp(dtype=F64, seed=3, confinement=0.1, hidden=(16, 16), activation="tanh"):
    return NeuralEnergy.mlp(2, hidden, activation, confinement, gen=seed, dtype=dtype)


def loop_grad_theta(module, theta, x):
    """d_theta f per sample by a python loop of autograd on a float64 copy of the module."""
    m = copy.deepcopy(module).to(F64)
    torch.nn.utils.vector_to_parameters(theta.clone(), m.parameters())
    rows = []
    for xi in x.to(F64):
        grads = torch.autograd.grad(m(xi[None]).sum(), list(m.parameters()))
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    return torch.stack(rows)


# -- closed forms -----------------------------------------------------------------------------
@pytest.mark.parametrize("confinement", [0.0, 0.7])
def test_quadratic_module_matches_closed_form(confinement):
    d, k, c = 3, 4, confinement
    e = NeuralEnergy(HalfSquare(d, k), d, confinement=c, dtype=F64)
    assert e.n_params == k * d + k and not e.linear_in_theta and not e.gaussian
    theta = torch.randn(e.n_params, generator=gen(5), dtype=F64)
    W, b = theta[: k * d].reshape(k, d), theta[k * d:]
    x = torch.randn(50, d, generator=gen(6), dtype=F64)
    u = x @ W.T + b
    torch.testing.assert_close(e.energy(x, theta), 0.5 * (u * u).sum(-1) + 0.5 * c * (x * x).sum(-1),
                               rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(e.grad_x(x, theta), u @ W + c * x, rtol=1e-13, atol=1e-13)
    exact = torch.cat([(u[:, :, None] * x[:, None, :]).reshape(50, -1), u], dim=1)  # d/dW = u x^T, d/db = u
    torch.testing.assert_close(e.grad_theta(x, theta), exact, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(e.mean_grad_theta(x, theta), exact.mean(0), rtol=1e-13, atol=1e-13)


def test_per_sample_grad_theta_matches_autograd_loop_and_finite_differences():
    e = mlp()
    theta = e.theta0() + 0.1 * torch.randn(e.n_params, generator=gen(7), dtype=F64)
    x = 1.5 * torch.randn(24, 2, generator=gen(8), dtype=F64)
    g = e.grad_theta(x, theta)
    assert g.dtype == F64 and g.shape == (24, e.n_params)
    assert (g - loop_grad_theta(e.module, theta, x)).abs().max() < 1e-10
    h = 1e-5
    for j in torch.randperm(e.n_params, generator=gen(9))[:12].tolist():
        step = torch.zeros(e.n_params, dtype=F64)
        step[j] = h
        fd = (e.energy(x, theta + step) - e.energy(x, theta - step)) / (2 * h)
        torch.testing.assert_close(g[:, j], fd, rtol=1e-6, atol=1e-8)


def test_grad_x_matches_finite_differences_and_float32_path():
    e = mlp()
    theta = e.theta0()
    x = 1.5 * torch.randn(40, 2, generator=gen(10), dtype=F64)
    g = e.grad_x(x, theta)
    h = 1e-6
    for j in range(2):
        step = torch.zeros(2, dtype=F64)
        step[j] = h
        fd = (e.energy(x + step, theta) - e.energy(x - step, theta)) / (2 * h)
        torch.testing.assert_close(g[:, j], fd, rtol=1e-7, atol=1e-8)
    e32 = NeuralEnergy(e.module, 2, confinement=0.1)  # compute dtype follows x
    g32 = e32.grad_x(x.float(), theta)
    assert g32.dtype == torch.float32 and e32.energy(x.float(), theta).dtype == F64
    torch.testing.assert_close(g32.to(F64), g, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(e32.energy(x.float(), theta), e.energy(x.float().to(F64), theta), rtol=1e-5,
                               atol=1e-5)


def test_mean_grad_theta_is_the_mean_of_per_sample_gradients_and_chunks_agree():
    e = mlp(hidden=(8,))
    theta = e.theta0()
    x = torch.randn(301, 2, generator=gen(11), dtype=F64)
    per = e.grad_theta(x, theta)
    torch.testing.assert_close(e.grad_theta(x, theta, chunk_size=7), per, rtol=0, atol=1e-15)
    torch.testing.assert_close(e.mean_grad_theta(x, theta), per.mean(0), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(e.mean_grad_theta(x, theta, chunk_size=50), per.mean(0), rtol=1e-12, atol=1e-14)


def test_delta_energy_and_out_buffers():
    e = mlp()
    t0 = e.theta0()
    t1 = t0 + 0.05 * torch.randn(e.n_params, generator=gen(12), dtype=F64)
    x = torch.randn(64, 2, generator=gen(13))
    w = e.delta_energy(x, t0, t1)
    torch.testing.assert_close(w, e.energy(x, t1) - e.energy(x, t0), rtol=0, atol=1e-14)
    buf = torch.empty(64, dtype=F64)
    assert e.delta_energy(x, t0, t1, out=buf) is buf and torch.equal(buf, w)
    assert e.energy(x, t1, out=buf) is buf and torch.equal(buf, e.energy(x, t1))


# -- theta <-> module ----------------------------------------------------------------------------
def test_theta_round_trip_and_module_untouched():
    module = mlp(dtype=None, hidden=(5, 4)).module  # float32 parameters
    e = NeuralEnergy(module, 2, confinement=0.3)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    theta = e.theta0()
    assert theta.dtype == F64 and e.n_params == 2 * 5 + 5 + 5 * 4 + 4 + 4 + 1
    assert torch.equal(theta, torch.nn.utils.parameters_to_vector(module.parameters()).to(F64))
    x = torch.randn(32, 2, generator=gen(14))
    with torch.no_grad():
        direct = module(x).reshape(-1).to(F64) + 0.15 * x.to(F64).square().sum(-1)
    torch.testing.assert_close(e.energy(x, theta), direct, rtol=1e-6, atol=1e-6)
    other = theta + 1.0
    for f in (e.energy, e.grad_x, e.grad_theta, e.mean_grad_theta):
        f(x, other)
    e.delta_energy(x, theta, other)
    after = module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None and p.requires_grad for p in module.parameters())
    moved = e.module_at(other)
    assert torch.equal(torch.nn.utils.parameters_to_vector(moved.parameters()), other.float())
    with torch.no_grad():
        torch.testing.assert_close(moved(x).reshape(-1).to(F64) + 0.15 * x.to(F64).square().sum(-1),
                                   e.energy(x, other), rtol=1e-6, atol=1e-6)


def test_parameter_cache_follows_in_place_changes_and_dtypes():
    e = mlp(dtype=torch.float32)  # parameters are cast copies of theta: a stale cache would show
    x = torch.randn(16, 2, generator=gen(15), dtype=F64)
    theta = e.theta0()
    first = e.energy(x, theta)
    assert e._params(theta, torch.float32) is e._params(theta, torch.float32)  # one unflatten per theta
    theta.add_(0.25)  # same object, new version: the cached parameters must not be reused
    torch.testing.assert_close(e.energy(x, theta), e.energy(x, theta.clone()), rtol=0, atol=0)
    assert not torch.allclose(e.energy(x, theta), first)
    e_any = NeuralEnergy(e.module, 2, confinement=0.1)  # compute dtype follows x
    e64 = NeuralEnergy(e.module, 2, confinement=0.1, dtype=F64)
    torch.testing.assert_close(e_any.energy(x.float(), theta), e.energy(x.float(), theta), rtol=0, atol=0)
    torch.testing.assert_close(e_any.energy(x, theta), e64.energy(x, theta), rtol=0, atol=1e-14)


def test_grad_x_under_no_grad_keeps_no_graph():
    e = mlp()
    x = torch.randn(8, 2, generator=gen(16), dtype=F64)
    ref = e.grad_x(x, e.theta0())
    with torch.no_grad():
        g = e.grad_x(x, e.theta0())
        m = e.mean_grad_theta(x, e.theta0())
    assert torch.equal(g, ref) and g.grad_fn is None and not g.requires_grad and m.grad_fn is None


def test_mlp_factory_is_seeded_and_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    a = NeuralEnergy.mlp(gen=0)
    assert torch.equal(torch.get_rng_state(), state)
    assert a.n_params == 2 * 64 + 64 + 64 * 64 + 64 + 64 + 1 == 4417
    assert torch.equal(a.theta0(), NeuralEnergy.mlp(gen=torch.Generator().manual_seed(0)).theta0())
    assert not torch.equal(a.theta0(), NeuralEnergy.mlp(gen=1).theta0())
    assert "mlp(2-64-64-1, silu)" in repr(a) and "n_params=4417" in repr(a)


# -- through the training loop -------------------------------------------------------------------
@pytest.mark.parametrize("sampler", ["mala", "euler"])
def test_train_first_law_and_first_update(sampler):
    e = mlp(dtype=None, hidden=(32, 32), activation="silu")
    theta0 = e.theta0()
    centres = torch.tensor([[-1.5, 0.0], [1.5, 0.5]], dtype=F64)
    data = centres[torch.arange(512) % 2] + 0.4 * torch.randn(512, 2, generator=gen(20), dtype=F64)
    chains = 1.5 * torch.randn(256, 2, generator=gen(21))
    sched = md.schedules.constant(0.5, 0.2)
    res = md.train(e, data, schedule=sched, theta0=theta0, chains=chains, sampler=sampler,
                   backend="particles", n_chains=256, n_steps=20, n_replicas=2, data_term="samples",
                   keep_chains=True, seed=4)
    assert res.first_law_residual < 1e-10, res.first_law_residual
    assert math.isfinite(res.work) and math.isfinite(res.work_se) and res.n_updates == 22
    assert res.chain_work.shape == (256,) and np.isfinite(res.chain_work).all()
    assert res.final_chains.shape == (256, 2) and bool(torch.isfinite(res.final_chains).all())
    # F is unknown for a network: the default estimates Delta F by AIS, with its error
    assert res.free_energy_method.startswith("ais") and res.delta_free_energy_se > 0
    assert math.isfinite(res.delta_free_energy)
    assert np.abs(res.thetas[-1] - res.thetas[0]).max() > 1e-4
    if sampler == "mala":
        assert 0.5 < res.acceptance_rate <= 1.0
    # Update 1 (update 0 is the zero start impulse) uses the untouched initial chains:
    # theta_2 = theta_1 - lr (E_data[d_theta E] - E_chains[d_theta E]), by the vmap path here.
    lr = sched.discretise(20).lr[1]
    th1 = torch.as_tensor(res.thetas[1])
    g = e.grad_theta(data, th1).mean(0) - e.grad_theta(chains, th1).mean(0)
    assert torch.equal(th1, theta0)
    np.testing.assert_allclose(res.thetas[2], (th1 - lr * g).numpy(), rtol=0, atol=1e-8)  # float32 chains
    work1 = (e.energy(chains, torch.as_tensor(res.thetas[2])) - e.energy(chains, th1)).mean()
    assert abs(res.history["work"][2] - float(work1)) < 1e-12


# -- bad input -----------------------------------------------------------------------------------
class Dropped(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = linear(2, 1, 0)
        self.drop = torch.nn.Dropout(0.5)

    def forward(self, x):
        return self.drop(self.lin(x) + 10.0)


class Centred(torch.nn.Module):
    """Couples rows through the batch mean: refused."""

    def __init__(self):
        super().__init__()
        self.lin = linear(2, 1, 0)

    def forward(self, x):
        return self.lin(x - x.mean(0)).square()


@pytest.mark.parametrize("make,match", [
    (lambda: NeuralEnergy(lambda x: x.sum(-1), 2), "torch.nn.Module"),
    (lambda: NeuralEnergy(linear(2, 3, 0), 2), r"energies \(N,\) or \(N, 1\); got \(2, 3\)"),
    (lambda: NeuralEnergy(linear(2, 1, 0), 0), "dim"),
    (lambda: NeuralEnergy(linear(3, 1, 0), 2), r"failed on a probe input of shape \(2, 2\)"),
    (lambda: NeuralEnergy(linear(2, 1, 0), 2, confinement=-1.0), "confinement"),
    (lambda: NeuralEnergy(linear(2, 1, 0), 2, dtype=torch.float16), "dtype"),
    (lambda: NeuralEnergy(NoParams(), 2), "no parameters"),
    (lambda: NeuralEnergy(Dropped(), 2), r"Dropout in training mode.*module.eval\(\)"),
    (lambda: NeuralEnergy(torch.nn.Sequential(linear(2, 1, 0), torch.nn.BatchNorm1d(1)), 2), "BatchNorm1d"),
    (lambda: NeuralEnergy(Centred(), 2), "mixes rows"),
    (lambda: NeuralEnergy.mlp(activation="swish", gen=0), "activation"),
    (lambda: NeuralEnergy.mlp(gen=None), "gen"),
])
def test_bad_input_is_refused_with_a_named_problem(make, match):
    with pytest.raises(InputError, match=match):
        make()


def test_eval_mode_dropout_is_accepted():
    assert NeuralEnergy(Dropped().eval(), 2).n_params == 3


def test_domain_checks_and_unknown_closed_forms():
    e = mlp(hidden=(4,))
    theta = e.theta0()
    assert e.check_theta(theta) is None
    bad = theta.clone()
    bad[3] = math.nan
    assert "NaN" in e.check_theta(bad)
    with pytest.raises(InputError, match="theta must have shape"):
        e.energy(torch.zeros(3, 2, dtype=F64), theta[:-1])
    for f in (e.free_energy, e.fisher):
        with pytest.raises(NotImplementedError):
            f(theta)
    with pytest.raises(NotImplementedError, match="initial chain"):
        e.sample_equilibrium(theta, 10, gen=gen())
    with pytest.raises(InputError, match="theta0 contains NaN"):
        md.train(e, torch.zeros(4, 2), schedule=md.schedules.constant(1.0, 1.0), theta0=bad.numpy(),
                 chains=torch.zeros(4, 2), sampler="mala", n_steps=2, n_chains=4)
