"""Differentiable forward models of the canonical update loop for ``optimise_1d`` (float64 torch; autograd
gives the gradient with respect to the theta path): the chain density on a grid moved by exp(Q dt) of the
library's one SQRA generator (``fokker_planck.sqra_generator_dense``; ``_GridModel``), or the exact moment
recursion of Gaussian chains (``_MomentsModel``); the data term of g_hat is the library's one
(``backends.data_mean_grad_theta``); and the true loss L(theta) on either."""
from __future__ import annotations

import math

import torch


class _GridModel:
    """The chain density on a uniform grid (reflecting ends), moved by exp(Q dt) with the SQRA
    generator of ``fokker_planck`` (the same rates as ``FokkerPlanck1D``).
    ``params(theta)`` is E_theta on the grid; ``state`` the masses rho."""

    def __init__(self, energy, data, mobility, grid):
        lo, hi, n = grid
        self.h = (hi - lo) / (n - 1)
        self.x = torch.linspace(lo, hi, n, dtype=torch.float64).reshape(-1, 1)
        self.energy, self.data, self.mobility = energy, data, mobility

    def params(self, theta):
        return self.energy.energy(self.x, theta).reshape(-1)

    def initial(self, theta):
        return torch.softmax(-self.params(theta).detach(), 0)

    def grad(self, theta, p, rho):
        """g_hat = E_data[d_theta E] - E_rho[d_theta E]."""
        return _data_term(self.energy, self.data, theta) - rho @ self.energy.grad_theta(self.x, theta).reshape(
            self.x.shape[0], -1)

    def work(self, p_old, p_new, rho):
        return rho @ (p_new - p_old)

    def move(self, p, rho, dt):
        from ...backends.fokker_planck import sqra_generator_dense

        return torch.linalg.matrix_exp(sqra_generator_dense(p, self.mobility, self.h) * dt) @ rho

    def valid(self, theta, p):
        return bool(torch.isfinite(p).all()) and not self.energy.check_theta(theta.detach())

    def free_energy(self, p):
        return -torch.logsumexp(-p, 0) - math.log(self.h)

    def fisher_diag(self, theta):
        rho = self.initial(theta)
        f = self.energy.grad_theta(self.x, theta).reshape(self.x.shape[0], -1)
        c = f - rho @ f
        return (rho @ (c * c)).detach(), float(rho @ (self.x[:, 0] - rho @ self.x[:, 0]) ** 2)


class _MomentsModel:
    """Gaussian chains N(m, v) of a quadratic energy, moved by the exact OU transition (no grid).
    ``params(theta)`` is the energy's (centre, variance); ``state`` is (m, v)."""

    def __init__(self, energy, data, mobility):
        self.energy, self.data, self.mobility = energy, data, mobility

    def params(self, theta):
        return self.energy.gaussian_params(theta)

    def initial(self, theta):
        c, v = self.params(theta.detach())
        return (c.clone(), v.clone())

    def grad(self, theta, p, state):
        return _data_term(self.energy, self.data, theta) - self.energy.expected_grad_theta(state[0], state[1], theta)

    def work(self, p_old, p_new, state):
        (c0, s0), (c1, s1), (m, v) = p_old, p_new, state
        return (((m - c1) ** 2 + v) / (2.0 * s1) - ((m - c0) ** 2 + v) / (2.0 * s0)).sum()

    def move(self, p, state, dt):
        c, s = p
        e = torch.exp(-self.mobility * dt / s)
        return (c + (state[0] - c) * e, s + (state[1] - s) * e * e)

    def valid(self, theta, p):
        return bool(torch.isfinite(p[0]).all() and torch.isfinite(p[1]).all() and (p[1] > 0).all())

    def free_energy(self, p):
        return -0.5 * torch.log(2.0 * math.pi * p[1]).sum()

    def fisher_diag(self, theta):
        _, s = self.energy.gaussian_params(theta.detach())
        return torch.diagonal(self.energy.fisher(theta.detach())), float(s.mean())


def _data_term(energy, data, theta):
    """E_data[d_theta E]: the library's one data term (``backends.data_mean_grad_theta``)."""
    from ...backends.dispatch import data_mean_grad_theta

    return data_mean_grad_theta(energy, data, theta).to(torch.float64)


def _true_loss(model, theta):
    """L(theta) = E_data[E_theta] - F(theta) (the grid's F on the Fokker-Planck model), differentiable."""
    energy, data = model.energy, model.data
    if energy.capabilities.quadratic:
        c, s = energy.gaussian_params(theta)
        data_term = (((data.mean - c) ** 2 + data.variance) / (2.0 * s)).sum()
    else:
        data_term = energy.energy(data.samples, theta).mean()
    return data_term - model.free_energy(model.params(theta))
