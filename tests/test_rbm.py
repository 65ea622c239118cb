"""Gaussian-Bernoulli RBM: the free energy of the visible units against brute-force enumeration of
the hidden units, ln Z against quadrature over v, gradients against finite differences, exact
equilibrium draws against enumerated moments, and the first law through ``train``."""
from __future__ import annotations

import math

import pytest
import torch

import mindiss as md
from mindiss.errors import InputError
from mindiss.energies.rbm import (GaussianBernoulliRBM, brute_force_free_energy, brute_force_log_partition,
                         hidden_configurations)

F64 = torch.float64
#: small tensors: one torch thread (conftest) avoids stalls when the 2 cores are shared
pytestmark = pytest.mark.usefixtures("one_thread")


def gen(seed):
    return torch.Generator().manual_seed(seed)


def tiny(n_visible=3, n_hidden=4, sigma=(0.7, 1.3, 1.0), seed=0, scale=0.8):
    rbm = GaussianBernoulliRBM(n_visible, n_hidden, sigma=list(sigma)[:n_visible])
    theta = scale * torch.randn(rbm.n_params, generator=gen(seed), dtype=F64)
    return rbm, theta


def test_free_energy_matches_brute_force_enumeration_of_the_hidden_units():
    rbm, theta = tiny()
    v = 1.5 * torch.randn(200, 3, generator=gen(1), dtype=F64)
    torch.testing.assert_close(rbm.energy(v, theta), brute_force_free_energy(rbm, theta, v), rtol=0, atol=1e-12)
    W, b, c = rbm.unpack(theta)
    assert torch.equal(rbm.pack(W, b, c), theta) and W.shape == (3, 4)
    h = hidden_configurations(4)
    assert h.shape == (16, 4) and torch.equal(h[5], torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=F64))


@pytest.mark.parametrize("n_visible,sigma", [(1, (0.6,)), (2, (0.7, 1.4))])
def test_log_partition_matches_quadrature_over_v(n_visible, sigma):
    rbm = GaussianBernoulliRBM(n_visible, 3, sigma=list(sigma))
    theta = 0.9 * torch.randn(rbm.n_params, generator=gen(2), dtype=F64)
    exact = rbm.log_partition(theta)
    quad = brute_force_log_partition(rbm, theta, half_width=14.0, n=801 if n_visible == 2 else 4001)
    assert exact == pytest.approx(quad, rel=0, abs=1e-9)
    assert rbm.free_energy(theta) == -exact


def test_enumeration_in_chunks_and_the_independent_base():
    rbm, theta = tiny(3, 9, seed=3, scale=0.4)
    small = GaussianBernoulliRBM(3, 9, sigma=rbm.sigma.tolist(), chunk=7)   # 512 states in 74 chunks
    assert small.log_partition(theta) == pytest.approx(rbm.log_partition(theta), rel=0, abs=1e-12)
    base = rbm.base_theta(theta)
    assert rbm.log_partition_independent(base) == pytest.approx(rbm.log_partition(base), rel=0, abs=1e-12)
    with pytest.raises(InputError, match="W = 0"):
        rbm.log_partition_independent(theta)


def test_gradients_match_finite_differences():
    rbm, theta = tiny(seed=4)
    v = torch.randn(17, 3, generator=gen(5), dtype=F64)
    g = rbm.grad_theta(v, theta)
    assert g.shape == (17, rbm.n_params) and g.dtype == F64
    torch.testing.assert_close(rbm.mean_grad_theta(v, theta), g.mean(0), rtol=0, atol=1e-14)
    h = 1e-6
    for j in range(rbm.n_params):
        step = torch.zeros(rbm.n_params, dtype=F64)
        step[j] = h
        fd = (rbm.energy(v, theta + step) - rbm.energy(v, theta - step)) / (2 * h)
        torch.testing.assert_close(g[:, j], fd, rtol=1e-7, atol=1e-8)
    gx = rbm.grad_x(v, theta)
    for i in range(3):
        step = torch.zeros(3, dtype=F64)
        step[i] = h
        fd = (rbm.energy(v + step, theta) - rbm.energy(v - step, theta)) / (2 * h)
        torch.testing.assert_close(gx[:, i], fd, rtol=1e-7, atol=1e-8)
    assert rbm.grad_x(v.float(), theta).dtype == torch.float32


def test_exact_draws_have_the_enumerated_mean_and_second_moment():
    rbm, theta = tiny(2, 3, sigma=(0.8, 1.2), seed=6)
    W, b, c = rbm.unpack(theta)
    h = hidden_configurations(3)
    wh = h @ W.T
    logp = h @ (c + (b / rbm.sigma) @ W) + 0.5 * (wh * wh).sum(-1)
    p = torch.softmax(logp, 0)
    mean_h = b + rbm.sigma * wh                                          # E[v | h]
    mean = (p[:, None] * mean_h).sum(0)
    second = (p[:, None] * (mean_h ** 2 + rbm.sigma ** 2)).sum(0)
    state = torch.get_rng_state()
    x = rbm.sample_equilibrium(theta, 100_000, gen=gen(7), dtype=F64)
    assert torch.equal(torch.get_rng_state(), state)
    for est, ref in ((x, mean), (x ** 2, second)):
        se = est.std(0) / math.sqrt(est.shape[0])
        assert bool(((est.mean(0) - ref).abs() <= 4 * se).all()), (est.mean(0), ref, se)


def test_training_an_rbm_keeps_the_first_law_per_chain_and_knows_its_loss():
    rbm = GaussianBernoulliRBM(4, 3)
    theta0 = rbm.init_theta(gen=1, weight_std=0.3)
    data = torch.randn(300, 4, generator=gen(2), dtype=F64) @ torch.tensor(
        [[1.0, 0.6, 0.0, 0.0], [0.0, 1.0, 0.5, 0.0], [0.0, 0.0, 1.0, 0.4], [0.0, 0.0, 0.0, 1.0]], dtype=F64)
    res = md.train(rbm, data, schedule=md.schedules.constant(0.5, 1.0), theta0=theta0, sampler="mala",
                   n_steps=40, n_chains=256, n_replicas=2, seed=3, record_every=40)
    assert res.first_law_residual < 1e-10
    assert math.isfinite(res.final_loss) and res.free_energy_method == "exact"
    theta_T = torch.as_tensor(res.thetas[-1])
    exact_T = float(rbm.energy(data, theta_T).mean()) + rbm.log_partition(theta_T)
    assert res.history["loss_true"][-1] == pytest.approx(exact_T, rel=0, abs=1e-9)
    assert abs(res.bias - res.excess_work) < 0.2 * abs(res.excess_work) + 0.05   # Identity 1 up to O(dtheta^2)


def test_bad_input_and_limits():
    with pytest.raises(InputError, match="sigma"):
        GaussianBernoulliRBM(3, 2, sigma=[1.0, -1.0, 1.0])
    with pytest.raises(InputError, match="n_hidden"):
        GaussianBernoulliRBM(3, 0)
    rbm = GaussianBernoulliRBM(2, 21)
    theta = torch.zeros(rbm.n_params, dtype=F64)
    with pytest.raises(NotImplementedError, match="ais_log_partition"):
        rbm.log_partition(theta)
    with pytest.raises(InputError, match="theta must have shape"):
        rbm.energy(torch.zeros(3, 2), theta[:-1])
    bad = theta.clone()
    bad[0] = math.nan
    assert "NaN" in rbm.check_theta(bad)
