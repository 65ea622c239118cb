"""ExpFamily: E_theta(x) = theta . phi(x) with quadrature references in 1-D."""
import math

import numpy as np
import pytest
import torch

import mindiss as md

F64 = torch.float64


def th(*v):
    return torch.tensor(v, dtype=F64)


def dw_features(x):  # the double-well features, written independently of the built-in
    return torch.cat([(x**2 - 1.0) ** 2, x], dim=-1)


def trapezoid_free_energy(energy_fn, lo=-12.0, hi=12.0, n=4_000_001):
    x = np.linspace(lo, hi, n)
    e = energy_fn(x)
    m = e.min()
    return m - math.log(np.trapezoid(np.exp(-(e - m)), x))


# -- gradients and work ------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_grad_x_double_well_autograd_analytic_and_finite_differences(dtype):
    builtin = md.ExpFamily.tilted_double_well()
    auto = md.ExpFamily(dw_features, names=("a", "b"))  # no grad_features: autograd path
    theta = th(1.7, -0.4)
    x = torch.linspace(-2.5, 2.5, 101, dtype=dtype).reshape(-1, 1)
    x64 = x.to(F64)
    exact = 4.0 * 1.7 * x64 * (x64**2 - 1.0) - 0.4
    for e in (builtin, auto):
        g = e.grad_x(x, theta)
        assert g.dtype == dtype and g.shape == x.shape
        tol = 1e-12 if dtype == F64 else 1e-5
        torch.testing.assert_close(g.to(F64), exact, rtol=tol, atol=tol)
    h = 1e-6
    fd = (auto.energy(x64 + h, theta) - auto.energy(x64 - h, theta)) / (2 * h)
    torch.testing.assert_close(auto.grad_x(x64, theta).squeeze(-1), fd, rtol=1e-7, atol=1e-7)


def test_grad_x_autograd_does_not_keep_a_graph():
    e = md.ExpFamily(dw_features)
    x = torch.randn(5, 1, generator=torch.Generator().manual_seed(0))
    g = e.grad_x(x, th(1.0, 0.0))
    assert not g.requires_grad and g.grad_fn is None


def test_energy_grad_theta_and_delta_energy_exact():
    e = md.ExpFamily.tilted_double_well()
    x = torch.randn(1000, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float32)
    t0, t1 = th(1.3, 0.2), th(0.9, -0.7)
    phi = e.grad_theta(x, t0)
    assert phi.dtype == F64 and phi.shape == (1000, 2)
    torch.testing.assert_close(e.mean_grad_theta(x, t0), phi.mean(0))
    e0 = e.energy(x, t0)
    assert e0.dtype == F64
    diff = e.energy(x, t1) - e0
    w = e.delta_energy(x, t0, t1)
    assert float((w - diff).abs().max()) < 1e-12
    buf = torch.empty(1000, dtype=F64)
    assert e.delta_energy(x, t0, t1, out=buf) is buf and float((buf - diff).abs().max()) < 1e-12
    buf2 = torch.empty(1000, dtype=F64)
    assert e.energy(x, t0, out=buf2) is buf2 and torch.equal(buf2, e0)
    assert e.linear_in_theta and not e.gaussian


# -- quadrature --------------------------------------------------------------------------------
@pytest.mark.parametrize("theta", [(2.0, 0.5), (0.3, -1.2), (6.0, 0.0)])
def test_free_energy_double_well_vs_trapezoid(theta):
    a, b = theta
    ref = trapezoid_free_energy(lambda x: a * (x**2 - 1) ** 2 + b * x)
    got = md.ExpFamily.tilted_double_well().free_energy(th(a, b))
    assert got == pytest.approx(ref, rel=1e-8, abs=1e-10)
    # a generic family (no polynomial description) gives the same quadrature
    assert md.ExpFamily(dw_features).free_energy(th(a, b)) == pytest.approx(ref, rel=1e-8, abs=1e-10)


@pytest.mark.parametrize("theta", [(1.0, 1.0), (-3.0, 0.5), (2.0, 0.0)])
def test_free_energy_quartic_vs_trapezoid(theta):
    k2, k4 = theta
    ref = trapezoid_free_energy(lambda x: k2 * x**2 / 2 + k4 * x**4 / 4, lo=-40, hi=40, n=8_000_001)
    assert md.ExpFamily.quartic().free_energy(th(k2, k4)) == pytest.approx(ref, rel=1e-8, abs=1e-10)


@pytest.mark.parametrize("m,s", [(0.0, 1.0), (0.7, 1.3), (-2.5, 0.05), (4.0, 9.0)])
def test_gaussian_special_case_closed_form(m, s):
    # E = -m x / s + x^2 / (2 s)  =>  Z = sqrt(2 pi s) exp(m^2 / (2 s))
    e = md.ExpFamily.polynomial(2)
    theta = th(-m / s, 1.0 / (2.0 * s))
    assert e.free_energy(theta) == pytest.approx(-0.5 * math.log(2 * math.pi * s) - m * m / (2 * s), rel=1e-10,
                                                 abs=1e-12)
    # Cov of (x, x^2) under N(m, s)
    ref = torch.tensor([[s, 2 * m * s], [2 * m * s, 2 * s * s + 4 * m * m * s]], dtype=F64)
    torch.testing.assert_close(e.fisher(theta), ref, rtol=1e-9, atol=1e-12)


def test_fisher_and_mean_vs_monte_carlo():
    e = md.ExpFamily.tilted_double_well()
    theta = th(1.5, 0.4)
    n = 200_000
    x = e.sample_equilibrium(theta, n, gen=torch.Generator().manual_seed(7), dtype=F64)
    assert x.shape == (n, 1) and x.dtype == F64
    phi = e.phi(x)
    mean = e.expected_phi(theta)
    se = phi.std(0) / math.sqrt(n)
    assert bool(((phi.mean(0) - mean).abs() < 4 * se).all())
    c = phi - phi.mean(0)
    prods = c[:, :, None] * c[:, None, :]
    cov, cov_se = prods.mean(0), prods.std(0) / math.sqrt(n)
    fisher = e.fisher(theta)
    assert fisher.shape == (2, 2) and torch.allclose(fisher, fisher.T)
    assert bool(((cov - fisher).abs() < 4 * cov_se).all()), (cov, fisher)


def test_sample_equilibrium_reproducible_and_dtype():
    e = md.ExpFamily.quartic()
    a = e.sample_equilibrium(th(-2.0, 1.0), 100, gen=torch.Generator().manual_seed(3))
    b = e.sample_equilibrium(th(-2.0, 1.0), 100, gen=torch.Generator().manual_seed(3))
    assert a.dtype == torch.float32 and torch.equal(a, b)


def test_mala_keeps_equilibrium_invariant():
    e = md.ExpFamily.tilted_double_well()
    theta = th(2.0, 0.5)
    gen = torch.Generator().manual_seed(11)
    n = 100_000
    x = e.sample_equilibrium(theta, n, gen=gen, dtype=F64)
    mala = md.MALA()
    for _ in range(30):
        x = mala.step(e, theta, x, dt=0.05, mobility=1.0, gen=gen)
    assert 0.5 < mala.acceptance_rate < 1.0
    phi = e.phi(x)
    se = phi.std(0) / math.sqrt(n)
    assert bool(((phi.mean(0) - e.expected_phi(theta)).abs() < 4 * se).all())


# -- training ----------------------------------------------------------------------------------
def test_train_double_well_identity1_and_first_law_exact():
    e = md.ExpFamily.tilted_double_well()
    data = e.sample_equilibrium(th(1.5, -0.5), 5000, gen=torch.Generator().manual_seed(1), dtype=F64)
    r = md.train(e, data, schedule=md.schedules.constant(0.05, 1.0), theta0=(1.0, 0.3), sampler="mala",
                 backend="particles", n_chains=20_000, n_replicas=4, n_steps=50, seed=3)
    assert r.identity1_residual < 1e-8
    assert r.first_law_residual < 1e-8
    assert r.n_replicas == 4 and np.all(np.isfinite(r.theta_final))
    # the true loss is known: L = E_data[E] - F
    th_final = torch.tensor(r.replica_theta_final[0], dtype=F64)
    assert math.isfinite(r.final_loss)
    assert math.isfinite(float(e.energy(data, th_final).mean()) - e.free_energy(th_final))


def test_train_euler_with_given_chains():
    e = md.ExpFamily.quartic()
    data = torch.randn(2000, 1, generator=torch.Generator().manual_seed(2), dtype=F64)
    x0 = torch.zeros(1000, 1)
    r = md.train(e, data, schedule=md.schedules.constant(0.05, 1.0), theta0=(1.0, 0.5), sampler="euler",
                 n_chains=1000, n_replicas=2, n_steps=20, chains=x0)
    assert r.identity1_residual < 1e-8 and r.first_law_residual < 1e-8


# -- domain ------------------------------------------------------------------------------------
def test_check_theta_and_train_refuse_non_normalisable():
    dw = md.ExpFamily.tilted_double_well()
    assert dw.check_theta(th(1.0, 5.0)) is None
    assert "leading coefficient" in dw.check_theta(th(-1.0, 0.0))
    assert "odd degree" in dw.check_theta(th(0.0, 1.0))
    assert "constant" in dw.check_theta(th(0.0, 0.0))
    assert "odd degree 3" in md.ExpFamily.polynomial(3).check_theta(th(0.0, 1.0, 0.1))
    assert md.ExpFamily.polynomial(3).check_theta(th(0.0, 1.0, 0.0)) is None
    assert md.ExpFamily.quartic().check_theta(th(1.0, 0.0)) is None
    assert md.ExpFamily.quartic().check_theta(th(-1.0, 0.0)) is not None
    with pytest.raises(md.InputError, match="not normalisable"):
        dw.free_energy(th(-1.0, 0.0))
    data = torch.zeros(10, 1, dtype=F64)
    with pytest.raises(md.InputError, match="domain"):
        md.train(dw, data, schedule=md.schedules.constant(0.05, 1.0), theta0=(-1.0, 0.0), sampler="mala",
                 n_chains=100, n_steps=5)
    # a generic family has no symbolic check: the quadrature detects the divergence
    generic = md.ExpFamily(lambda x: torch.cat([x**2 / 2, x**4 / 4], -1))
    with pytest.raises(md.InputError, match="not normalisable"):
        generic.free_energy(th(1.0, -1.0))
    with pytest.raises(md.InputError, match="not normalisable"):
        md.train(generic, data, schedule=md.schedules.constant(0.05, 1.0), theta0=(1.0, -1.0), sampler="mala",
                 n_chains=100, n_steps=5)


def test_higher_dimensions_have_no_quadrature():
    e = md.ExpFamily(lambda x: torch.cat([(x**2).sum(-1, keepdim=True) / 2, x], -1), dim=2)
    assert e.n_params == 3
    theta = th(1.0, 0.5, -0.5)
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(e.grad_x(x, theta), x + torch.tensor([0.5, -0.5]))
    for call in (lambda: e.free_energy(theta), lambda: e.fisher(theta),
                 lambda: e.sample_equilibrium(theta, 4, gen=torch.Generator())):
        with pytest.raises(NotImplementedError, match="dim = 1 only"):
            call()


def test_bad_construction():
    with pytest.raises(md.InputError):
        md.ExpFamily("not callable")
    with pytest.raises(md.InputError, match="names"):
        md.ExpFamily(dw_features, names=("a",))
