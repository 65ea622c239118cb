"""Closed forms of the built-in energies (HarmonicTrap, Gaussian) against autograd, quadrature
and Monte Carlo over exact equilibrium draws.

Monte-Carlo comparisons use 4 standard errors computed from the samples themselves (the draws are
i.i.d., so std / sqrt(N) is the right error here); deterministic ones use tight absolute bounds.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate

import mindiss as md

F64 = torch.float64
N_MC = 200_000


def t64(v):
    return torch.as_tensor(v, dtype=F64).reshape(-1)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# (id, energy, theta): a representative set of energies and parameters, 1-D and multi-D.
CASES = [
    ("trap-1d", md.HarmonicTrap(variance=0.5, dim=1), t64([0.3])),
    ("trap-3d", md.HarmonicTrap(variance=1.7, dim=3), t64([-1.0, 0.25, 2.0])),
    ("gauss-1d", md.Gaussian(1), md.Gaussian.natural(0.8, 0.6)),
    ("gauss-2d", md.Gaussian(2), md.Gaussian.natural([0.5, -1.2], [2.0, 0.3])),
]
IDS = [c[0] for c in CASES]


def per_sample_grad_theta(energy, x, theta):
    """d_theta E per sample by autograd: the Jacobian of the (N,) energies w.r.t. theta."""
    return torch.autograd.functional.jacobian(lambda th: energy.energy(x, th), theta)


def mc_mean_check(samples: torch.Tensor, target: torch.Tensor, n_se: float = 4.0):
    """Column means of samples (N, k) equal target (k,) within n_se standard errors."""
    samples = samples.reshape(samples.shape[0], -1)
    mean = samples.mean(0)
    se = samples.std(0) / math.sqrt(samples.shape[0])
    target = target.reshape(-1)
    assert torch.all((mean - target).abs() < n_se * se), (mean, target, se)


# ------------------------------------------------------------------ gradients vs autograd

@pytest.mark.parametrize("name,energy,theta", CASES, ids=IDS)
def test_grad_x_matches_autograd(name, energy, theta):
    x = torch.randn(64, energy.dim, dtype=F64, generator=gen(1)) * 1.5 + 0.2
    xr = x.clone().requires_grad_(True)
    energy.energy(xr, theta).sum().backward()
    got = energy.grad_x(x, theta)
    assert got.shape == x.shape and got.dtype == F64
    torch.testing.assert_close(got, xr.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name,energy,theta", CASES, ids=IDS)
def test_grad_theta_matches_autograd(name, energy, theta):
    x = torch.randn(64, energy.dim, dtype=F64, generator=gen(2)) * 1.5 - 0.3
    got = energy.grad_theta(x, theta)
    assert got.shape == (64, energy.n_params) and got.dtype == F64
    ref = per_sample_grad_theta(energy, x, theta)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    # The reduced form used by the chains is the mean of the per-sample one.
    torch.testing.assert_close(energy.mean_grad_theta(x, theta), ref.mean(0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name,energy,theta", CASES, ids=IDS)
def test_grad_x_keeps_chain_dtype(name, energy, theta):
    x = torch.randn(16, energy.dim, generator=gen(3))  # float32 chains
    assert energy.grad_x(x, theta).dtype == torch.float32
    assert energy.energy(x, theta).dtype == F64
    assert energy.grad_theta(x, theta).dtype == F64


# ------------------------------------------------------------------ delta energy (work)

@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=["f32", "f64"])
@pytest.mark.parametrize("name,energy,theta", CASES, ids=IDS)
def test_delta_energy_is_energy_difference(name, energy, theta, dtype):
    x = (torch.randn(500, energy.dim, dtype=F64, generator=gen(4)) * 2.0).to(dtype)
    step = torch.randn(energy.n_params, dtype=F64, generator=gen(5)) * 0.1
    theta_new = theta + step
    assert energy.check_theta(theta_new) is None
    w = energy.delta_energy(x, theta, theta_new)
    assert w.shape == (500,) and w.dtype == F64
    ref = energy.energy(x, theta_new) - energy.energy(x, theta)
    assert float((w - ref).abs().max()) < 1e-12


@pytest.mark.parametrize("name,energy,theta", CASES, ids=IDS)
def test_expected_delta_energy_is_mean_work(name, energy, theta):
    mean, var = t64(np.linspace(-0.5, 0.7, energy.dim)), t64(np.linspace(0.4, 1.3, energy.dim))
    theta_new = theta + 0.05
    x = mean + var.sqrt() * torch.randn(N_MC, energy.dim, dtype=F64, generator=gen(6))
    w = energy.delta_energy(x, theta, theta_new)
    ref = torch.tensor(energy.expected_delta_energy(mean, var, theta, theta_new), dtype=F64)
    mc_mean_check(w, ref)


# ------------------------------------------------------------------ free energy vs quadrature

def _quad_log_z_1d(f):
    val, err = integrate.quad(f, -np.inf, np.inf, epsabs=0.0, epsrel=1e-12, limit=200)
    assert err < 1e-9 * val
    return math.log(val)


def quad_log_z(energy, theta):
    """ln Z by 1-D quadrature per dimension: E is separable, so with e_j the j-th term,
    ln Z = sum_j ln int exp(-(E(x_j e_j) - E(0))) dx_j - E(0), using only energy()."""
    d = energy.dim
    zero = torch.zeros(1, d, dtype=F64)
    e0 = float(energy.energy(zero, theta))
    total = -e0
    for j in range(d):
        def f(xj, j=j):
            x = torch.zeros(1, d, dtype=F64)
            x[0, j] = xj
            return math.exp(-(float(energy.energy(x, theta)) - e0))
        total += _quad_log_z_1d(f)
    return total


@pytest.mark.parametrize("name,energy,theta", CASES, ids=IDS)
def test_free_energy_matches_quadrature(name, energy, theta):
    assert energy.free_energy(theta) == pytest.approx(-quad_log_z(energy, theta), abs=1e-9)


def test_free_energy_2d_direct_double_integral():
    energy = md.Gaussian(2)
    theta = md.Gaussian.natural([0.4, -0.2], [0.7, 1.6])

    def f(y, x):
        return math.exp(-float(energy.energy(torch.tensor([[x, y]], dtype=F64), theta)))

    z, err = integrate.dblquad(f, -10, 10, -10, 10, epsabs=1e-9, epsrel=1e-9)
    assert energy.free_energy(theta) == pytest.approx(-math.log(z), abs=1e-7)


def test_harmonic_free_energy_independent_of_centre():
    e = md.HarmonicTrap(variance=0.8, dim=2)
    f0 = e.free_energy(t64([0.0, 0.0]))
    assert e.free_energy(t64([3.0, -2.0])) == f0
    assert f0 == pytest.approx(-math.log(2 * math.pi * 0.8), abs=1e-14)


def test_expected_grad_theta_at_equilibrium_is_free_energy_gradient():
    """E_{p_theta}[d_theta E] = dF/dtheta (central differences of the closed-form F)."""
    for _, energy, theta in CASES:
        c, v = energy.gaussian_params(theta)
        g = energy.expected_grad_theta(c, v, theta)
        h = 1e-5
        fd = torch.stack([
            torch.tensor((energy.free_energy(theta + h * torch.eye(energy.n_params, dtype=F64)[i])
                          - energy.free_energy(theta - h * torch.eye(energy.n_params, dtype=F64)[i])) / (2 * h),
                         dtype=F64)
            for i in range(energy.n_params)])
        torch.testing.assert_close(g, fd, rtol=0, atol=1e-8)


# ------------------------------------------------------------------ equilibrium draws, Fisher

@pytest.mark.parametrize("name,energy,theta", CASES, ids=IDS)
def test_sample_equilibrium_moments(name, energy, theta):
    x = energy.sample_equilibrium(theta, N_MC, gen=gen(0), dtype=F64)
    assert x.shape == (N_MC, energy.dim) and x.dtype == F64
    c, v = energy.gaussian_params(theta)
    mc_mean_check(x, c)
    # Sample variance: SE sqrt(2/N) var for Gaussian draws.
    var = x.var(0)
    assert torch.all((var - v).abs() < 4 * math.sqrt(2.0 / N_MC) * v), (var, v)
    # Same generator seed -> same draws; another seed -> other draws; default dtype float32.
    assert torch.equal(energy.sample_equilibrium(theta, 1000, gen=gen(11), dtype=F64),
                       energy.sample_equilibrium(theta, 1000, gen=gen(11), dtype=F64))
    assert not torch.equal(energy.sample_equilibrium(theta, 1000, gen=gen(11), dtype=F64),
                           energy.sample_equilibrium(theta, 1000, gen=gen(12), dtype=F64))
    assert energy.sample_equilibrium(theta, 3, gen=gen(0)).dtype == torch.float32


@pytest.mark.parametrize("name,energy,theta", CASES, ids=IDS)
def test_fisher_is_covariance_of_grad_theta(name, energy, theta):
    fisher = energy.fisher(theta)
    P = energy.n_params
    assert fisher.shape == (P, P) and fisher.dtype == F64
    torch.testing.assert_close(fisher, fisher.T, rtol=0, atol=0)
    assert float(torch.linalg.eigvalsh(fisher).min()) > 0

    x = energy.sample_equilibrium(theta, N_MC, gen=gen(0), dtype=F64)
    g = energy.grad_theta(x, theta)
    dg = g - g.mean(0)
    prod = dg[:, :, None] * dg[:, None, :]          # (N, P, P): per-sample covariance terms
    cov = prod.mean(0)
    se = prod.std(0) / math.sqrt(N_MC)
    assert torch.all((cov - fisher).abs() < 4 * se), (cov, fisher, se)


def test_gaussian_fisher_closed_form_blocks():
    energy = md.Gaussian(2)
    a, s = t64([0.5, -1.2]), t64([2.0, 0.3])
    f = energy.fisher(md.Gaussian.natural(a, s))
    for j in range(2):
        block = f[[j, j + 2]][:, [j, j + 2]]
        ref = torch.tensor([[s[j], -a[j] * s[j]], [-a[j] * s[j], s[j] ** 2 / 2 + a[j] ** 2 * s[j]]], dtype=F64)
        torch.testing.assert_close(block, ref, rtol=1e-14, atol=1e-14)
    assert float(f[0, 1]) == 0.0 and float(f[0, 3]) == 0.0   # dimensions decouple


def test_harmonic_fisher_is_stiffness():
    e = md.HarmonicTrap(variance=0.25, dim=3)
    torch.testing.assert_close(e.fisher(t64([1.0, 2.0, 3.0])), 4.0 * torch.eye(3, dtype=F64))
    assert e.stiffness == 4.0


# ------------------------------------------------------------------ KL and Gaussian expectations

def quad_kl_1d(energy, mean, var, theta):
    """KL(N(mean, var) || p_theta) = int q (ln q + E + ln Z), Z by quadrature too."""
    log_z = quad_log_z(energy, theta)

    def integrand(x):
        lq = -0.5 * (math.log(2 * math.pi * var) + (x - mean) ** 2 / var)
        e = float(energy.energy(torch.tensor([[x]], dtype=F64), theta))
        return math.exp(lq) * (lq + e + log_z)

    val, err = integrate.quad(integrand, -np.inf, np.inf, epsabs=1e-13, epsrel=1e-12, limit=200)
    return val


@pytest.mark.parametrize("energy,theta", [
    (md.HarmonicTrap(variance=0.5, dim=1), t64([0.3])),
    (md.Gaussian(1), md.Gaussian.natural(-0.7, 2.5)),
], ids=["trap", "gauss"])
@pytest.mark.parametrize("mean,var", [(0.3, 0.5), (1.1, 0.2), (-2.0, 3.0)])
def test_kl_matches_quadrature(energy, theta, mean, var):
    got = energy.kl(t64([mean]), t64([var]), theta)
    assert got == pytest.approx(quad_kl_1d(energy, mean, var, theta), abs=1e-9)
    assert got >= 0.0


def test_kl_zero_at_equilibrium_and_additive_over_dims():
    energy = md.Gaussian(2)
    theta = md.Gaussian.natural([0.5, -1.2], [2.0, 0.3])
    c, v = energy.gaussian_params(theta)
    assert abs(energy.kl(c, v, theta)) < 1e-14
    mean, var = t64([0.1, 0.2]), t64([1.0, 0.5])
    parts = [md.Gaussian(1).kl(mean[j:j + 1], var[j:j + 1], md.Gaussian.natural(c[j], v[j])) for j in range(2)]
    assert energy.kl(mean, var, theta) == pytest.approx(sum(parts), abs=1e-13)


@pytest.mark.parametrize("name,energy,theta", CASES, ids=IDS)
def test_expected_energy_and_grad_theta_match_monte_carlo(name, energy, theta):
    # A chain density that is *not* p_theta.
    mean = t64(np.linspace(-0.8, 1.0, energy.dim))
    var = t64(np.linspace(0.3, 2.2, energy.dim))
    x = mean + var.sqrt() * torch.randn(N_MC, energy.dim, dtype=F64, generator=gen(7))
    e_ref = torch.tensor(energy.expected_energy(mean, var, theta), dtype=F64)
    mc_mean_check(energy.energy(x, theta), e_ref)
    g_ref = energy.expected_grad_theta(mean, var, theta)
    assert g_ref.shape == (energy.n_params,)
    mc_mean_check(energy.grad_theta(x, theta), g_ref)


def test_expected_energy_exact_for_quadratic():
    """E_{N(m,var)}[E] = sum ((m - c)^2 + var) / (2 v) by 1-D quadrature."""
    energy, theta = md.Gaussian(1), md.Gaussian.natural(0.4, 0.9)
    m, var = 1.3, 0.6

    def integrand(x):
        q = math.exp(-0.5 * (x - m) ** 2 / var) / math.sqrt(2 * math.pi * var)
        return q * float(energy.energy(torch.tensor([[x]], dtype=F64), theta))

    val, _ = integrate.quad(integrand, -np.inf, np.inf, epsabs=1e-13, epsrel=1e-12)
    assert energy.expected_energy(t64([m]), t64([var]), theta) == pytest.approx(val, abs=1e-10)


def test_loss_is_data_energy_minus_free_energy():
    energy, theta = md.Gaussian(1), md.Gaussian.natural(0.0, 1.0)
    dm, dv = t64([1.7]), t64([0.5])
    assert energy.loss(dm, dv, theta) == pytest.approx(
        energy.expected_energy(dm, dv, theta) - energy.free_energy(theta), abs=1e-14)
    # The MLE (theta matching the data moments) minimises the loss.
    best = md.Gaussian.natural(1.7, 0.5)
    assert energy.loss(dm, dv, best) < energy.loss(dm, dv, theta)
    assert energy.loss(dm, dv, best) == pytest.approx(0.5 * math.log(2 * math.pi * 0.5) + 0.5, abs=1e-14)


# ------------------------------------------------------------------ natural params and domain

def test_gaussian_natural_parameters_roundtrip():
    th = md.Gaussian.natural([1.0, -2.0], [0.5, 4.0])
    torch.testing.assert_close(th, t64([2.0, -0.5, 2.0, 0.25]))
    a, s = md.Gaussian(2).moments(th)
    torch.testing.assert_close(a, t64([1.0, -2.0]))
    torch.testing.assert_close(s, t64([0.5, 4.0]))
    # A scalar variance broadcasts over the means.
    torch.testing.assert_close(md.Gaussian.natural([1.0, 2.0], 2.0), t64([0.5, 1.0, 0.5, 0.5]))


@pytest.mark.parametrize("variance", [0.0, -1.0, float("inf"), float("nan")])
def test_gaussian_natural_rejects_bad_variance(variance):
    with pytest.raises(md.InputError):
        md.Gaussian.natural(0.0, variance)


def test_gaussian_check_theta_flags_non_positive_precision():
    e = md.Gaussian(2)
    assert e.check_theta(md.Gaussian.natural([0.0, 1.0], [1.0, 2.0])) is None
    for bad in ([0.0, 0.0, 1.0, 0.0], [0.0, 0.0, -0.5, 1.0], [1.0, 1.0, 1.0, -1e-300]):
        msg = e.check_theta(t64(bad))
        assert isinstance(msg, str) and "precision" in msg
    # HarmonicTrap has no domain restriction on its centre.
    assert md.HarmonicTrap(1.0, 2).check_theta(t64([-1e6, 1e6])) is None


def test_train_rejects_theta0_outside_domain():
    with pytest.raises(md.InputError, match="domain"):
        md.train(md.Gaussian(1), md.data.Gaussian(0.0, 1.0), schedule=md.schedules.constant(0.1, 1.0),
                 theta0=[0.0, -1.0], n_steps=2, backend="moments")


@pytest.mark.parametrize("kwargs", [dict(variance=0.0), dict(variance=-1.0), dict(dim=0), dict(dim=1.5)])
def test_harmonic_trap_rejects_bad_construction(kwargs):
    with pytest.raises(md.InputError):
        md.HarmonicTrap(**kwargs)


def test_base_energy_has_no_closed_forms():
    e = md.Energy()
    th = t64([1.0])
    for call in (lambda: e.free_energy(th), lambda: e.fisher(th),
                 lambda: e.sample_equilibrium(th, 3, gen=gen())):
        with pytest.raises(NotImplementedError):
            call()
    assert e.check_theta(th) is None
    assert not e.gaussian and not e.linear_in_theta
