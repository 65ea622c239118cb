"""The 1-D Fokker-Planck backend (``mindiss.fokker_planck.FokkerPlanck1D``) against exact references.

* Harmonic trap: the exact OU moments (``md.moments.ou_moments``); the SQRA discretisation
  converges at O(h^2) (the mean error falls 4x when h halves; measured constant ~0.09 h^2 for
  the move below).
* Discrete exactness (float64 round-off only): Boltzmann stationarity, mass conservation,
  positivity, first law and Identity 2 on the grid.
* The canonical update driven by hand with the optimal schedule against ``md.train`` with the
  moments backend (same discretised schedule).
* A non-Gaussian double well: stationarity, mass, positivity, Identity 2.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import mindiss as md
from mindiss.backends.fokker_planck import FokkerPlanck1D

S0, MU0, T0, TH0, XB0 = 0.5, 1.3, 2.0, -0.4, 1.7
EXACT = 1e-12


def t64(*v):
    return torch.tensor(v, dtype=torch.float64)


class DoubleWell(md.Energy):
    """E = a (x^2 - 1)^2 + b x, theta = (a, b): linear in theta, non-Gaussian."""

    dim, n_params, linear_in_theta = 1, 2, True

    def energy(self, x, theta, out=None):
        x = x.to(torch.float64).squeeze(-1)
        return theta[0] * (x * x - 1.0) ** 2 + theta[1] * x

    def grad_x(self, x, theta):
        return 4.0 * theta[0].to(x.dtype) * x * (x * x - 1.0) + theta[1].to(x.dtype)

    def grad_theta(self, x, theta):
        x = x.to(torch.float64)
        return torch.cat([(x * x - 1.0) ** 2, x], dim=-1)


def ou_reference(m, v, centre, s, mu, dt):
    mr, vr = md.moments.ou_moments(t64(m), t64(v), t64(centre), t64(s), mu, dt)
    return float(mr), float(vr)


# ------------------------------------------------------------------------------ harmonic: OU moments

def test_move_matches_exact_ou_moments_at_second_order():
    trap = md.HarmonicTrap(variance=S0)
    m_ref, v_ref = ou_reference(TH0, S0, XB0, S0, MU0, 0.3)
    errors = []
    for n in (401, 801, 1601):
        fp = FokkerPlanck1D(trap, t64(TH0), grid=(-8.0, 8.0, n))
        fp.move(trap, t64(XB0), 0.3, MU0)
        m, v = fp.moments()
        errors.append((abs(m - m_ref), abs(v - v_ref)))
        assert abs(float(fp.chain_mean()[0]) - m) < EXACT
    # finest grid (h = 0.01): ~1e-5 on the mean, far better on the variance
    assert errors[-1][0] < 1.2e-5 and errors[-1][1] < 1e-8
    for coarse, fine in zip(errors[:-1], errors[1:]):
        assert 3.6 < coarse[0] / fine[0] < 4.4   # O(h^2)
        assert coarse[1] / fine[1] > 3.6


def test_uniformization_agrees_with_expm_multiply():
    trap = md.HarmonicTrap(variance=S0)
    a = FokkerPlanck1D(trap, t64(TH0), grid=(-6.0, 6.0, 241))
    b = FokkerPlanck1D(trap, t64(TH0), grid=(-6.0, 6.0, 241), method="expm_multiply")
    for fp in (a, b):
        fp.move(trap, t64(XB0), 0.2, MU0)
    np.testing.assert_allclose(a.rho, b.rho, rtol=0, atol=1e-13)


# ---------------------------------------------------------------------- discrete exactness

@pytest.mark.parametrize("which", ["harmonic", "double-well"])
def test_boltzmann_stationary_mass_conserved_positive(which):
    if which == "harmonic":
        energy, theta, grid = md.HarmonicTrap(variance=S0), t64(0.3), (-6.0, 6.0, 601)
    else:
        energy, theta, grid = DoubleWell(), t64(2.5, 0.4), (-2.5, 2.5, 201)
    fp = FokkerPlanck1D(energy, theta, grid=grid)
    pi = fp.boltzmann(energy, theta)
    np.testing.assert_allclose(fp.rho, pi, rtol=0, atol=1e-15)
    assert fp.kl_initial < 1e-13
    for dt in (0.01, 0.37, 1.0, 0.37):
        fp.move(energy, theta, dt, MU0)
        assert np.max(np.abs(fp.rho - pi)) < EXACT
        assert abs(fp.rho.sum() - 1.0) < EXACT
        assert fp.rho.min() >= 0.0
    assert abs(fp.heat) < EXACT and abs(fp.entropy_production) < EXACT

    # out of equilibrium: mass, positivity, monotone KL, relaxation to pi
    start = np.exp(-0.5 * (fp.x - fp.x[len(fp.x) // 5]) ** 2 / 0.05)
    fp = FokkerPlanck1D(energy, theta, grid=grid, density=start)
    kl = fp.kl(energy, theta)
    for _ in range(8):
        fp.move(energy, theta, 0.5, MU0)
        assert abs(fp.rho.sum() - 1.0) < EXACT and fp.rho.min() >= 0.0
        new = fp.kl(energy, theta)
        assert new <= kl + 1e-15
        kl = new
    assert fp.entropy_production > 0
    assert abs(fp.kl_initial - kl - fp.entropy_production) < EXACT
    assert fp.first_law_residual(energy, theta) < EXACT
    assert kl < 1e-2 * fp.kl_initial   # relaxing towards pi


def test_double_well_driven_identity2_and_state_dict():
    energy = DoubleWell()
    grid = (-2.5, 2.5, 401)
    thetas = [t64(2.0, 0.0), t64(2.3, 0.5), t64(2.6, 1.0), t64(3.0, 0.4)]
    fp = FokkerPlanck1D(energy, thetas[0], grid=grid)
    f0 = fp.free_energy_on_grid(energy, thetas[0])
    for old, new in zip(thetas[:-1], thetas[1:]):
        fp.apply_update(energy, old, new)
        fp.move(energy, new, 0.05, 1.0)
        assert abs(fp.rho.sum() - 1.0) < EXACT and fp.rho.min() >= 0.0
    d_f = fp.free_energy_on_grid(energy, thetas[-1]) - f0
    kl_t = fp.kl(energy, thetas[-1])
    w_ex = fp.mean_work() - d_f
    assert w_ex > 0 and fp.entropy_production > 0
    assert abs(w_ex - (kl_t - fp.kl_initial + fp.entropy_production)) < 1e-10
    assert fp.first_law_residual(energy, thetas[-1]) < EXACT and fp.finite()
    # mean_grad_theta = sum rho_i grad_theta E(x_i)
    g = fp.mean_grad_theta(energy, thetas[-1])
    ref = [float(fp.rho @ (fp.x**2 - 1.0) ** 2), float(fp.rho @ fp.x)]
    np.testing.assert_allclose(g.numpy(), ref, rtol=0, atol=1e-14)
    # state round trip
    sd = fp.state_dict()
    other = FokkerPlanck1D(energy, thetas[0], grid=grid)
    other.load_state_dict(sd)
    fp.move(energy, thetas[-1], 0.1, 1.0)
    other.move(energy, thetas[-1], 0.1, 1.0)
    np.testing.assert_array_equal(fp.rho, other.rho)
    assert (fp.work, fp.heat, fp.entropy_production) == (other.work, other.heat, other.entropy_production)


# ------------------------------------------------------- the canonical update vs md.train (moments)

def drive(trap, disc, n_points):
    """The canonical update (impulse, interior updates with moves, impulse) on the FP backend."""
    theta = t64(TH0)
    fp = FokkerPlanck1D(trap, theta, grid=(-7.0, 9.0, n_points))
    f0 = fp.free_energy_on_grid(trap, theta)
    xbar, var_data = t64(XB0), t64(1.0)
    for lr, dt in zip(disc.lr, disc.dt):
        g = trap.expected_grad_theta(xbar, var_data, theta) - fp.mean_grad_theta(trap, theta)
        theta_new = theta - float(lr) * g
        fp.apply_update(trap, theta, theta_new)
        if dt > 0:
            fp.move(trap, theta_new, float(dt), MU0)
        theta = theta_new
    return fp, theta, f0


def test_canonical_update_matches_moments_backend():
    trap = md.HarmonicTrap(variance=S0)
    disc = md.schedules.optimal_harmonic(S0, MU0, T0).discretise(50)
    ref = md.train(trap, md.data.Gaussian(XB0, 1.0), schedule=disc, theta0=[TH0], mobility=MU0,
                   backend="moments")
    coarse, _, _ = drive(trap, disc, 801)        # h = 0.02
    fp, theta, f0 = drive(trap, disc, 1601)      # h = 0.01
    err_coarse, err = coarse.mean_work() - ref.work, fp.mean_work() - ref.work
    assert abs(err) < 3e-5 * abs(ref.work)       # measured 2.3e-5 relative
    assert 3.6 < err_coarse / err < 4.4          # O(h^2)
    richardson = (4.0 * fp.mean_work() - coarse.mean_work()) / 3.0
    assert abs(richardson - ref.work) < 1e-6 * abs(ref.work)
    assert abs(float(theta[0]) - float(ref.theta_final[0])) < 1e-5
    # Identity 2 on the grid, exact in discrete time
    d_f = fp.free_energy_on_grid(trap, theta) - f0
    assert abs(d_f) < 1e-12   # the trap's Z does not depend on theta (also on a wide grid)
    kl_t = fp.kl(trap, theta)
    assert abs(fp.mean_work() - d_f - (kl_t - fp.kl_initial + fp.entropy_production)) < 1e-10
    assert abs(kl_t - ref.kl_final) < 5e-5 * ref.kl_final      # O(h^2), measured 3.4e-5 relative
    assert abs(fp.entropy_production - ref.entropy_production) < 5e-5 * ref.entropy_production
    assert fp.first_law_residual(trap, theta) < EXACT
    assert abs(fp.rho.sum() - 1.0) < EXACT and fp.rho.min() >= 0.0


def test_rejects_bad_input():
    trap = md.HarmonicTrap(variance=S0)
    with pytest.raises(md.InputError):
        FokkerPlanck1D(trap, t64(0.0), grid=(1.0, -1.0, 10))
    with pytest.raises(md.InputError):
        FokkerPlanck1D(trap, t64(0.0), grid=(-1.0, 1.0, 11), density=np.ones(5))
    with pytest.raises(md.InputError):
        FokkerPlanck1D(md.HarmonicTrap(dim=2), t64(0.0, 0.0))
    fp = FokkerPlanck1D(trap, t64(0.0), grid=(-5.0, 5.0, 101))
    with pytest.raises(md.InputError):
        fp.move(trap, t64(0.0), 0.1, 1.0, sampler=md.EulerMaruyama())
    assert fp.n_chains == math.inf
