"""Energy functions E_theta(x) in kT, with their parameter and space gradients.

Conventions (design.md): p_theta(x) = exp(-E_theta(x)) / Z_theta, F(theta) = -ln Z_theta,
x has shape (N, d) in the chains' dtype, theta is a float64 vector of shape (P,).
Per-chain energies and every quantity that enters the ledger are float64.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np
import torch

from ..errors import InputError, require_positive, require_positive_int

LOG_2PI = math.log(2.0 * math.pi)


@dataclass(frozen=True)
class Capabilities:
    """What an energy provides beyond the required protocol, declared once as data.

    ``core.contract`` reads these flags before the first update and chooses every path from them;
    nothing in the update probes an energy for methods or private names. A flag promises the
    method(s) named beside it.
    """

    #: E = sum_j (x_j - c_j)^2 / (2 v_j) for every theta: ``gaussian_params``, ``expected_*``, ``kl``,
    #: ``cov_grad_theta`` (moments backend, exact OU moves, data term from the data's moments)
    quadratic: bool = False
    #: E linear in theta up to x-independent terms: Identity 1 is exact in discrete time
    linear_in_theta: bool = False
    #: E = theta . phi(x): ``phi_t(x, out=)`` gives phi transposed (P, N); d_theta E does not depend on
    #: theta, so the data term is computed once and one feature pass serves g_hat, work and heat
    features: bool = False
    #: d_theta E is linear in x: E_rho[d_theta E] = ``expected_grad_theta(chain mean, None, theta)``
    grad_theta_from_mean: bool = False
    #: ``energy_and_grad_x``: the work re-evaluates E once and the chain move reuses its gradient
    work_from_energy: bool = False
    #: ``grad_hat(data, x, theta)``: g_hat from one backward over data and chains together
    fused_g_hat: bool = False
    #: ``free_energy_many(thetas)``: F for many thetas in one batched evaluation
    free_energy_many: bool = False
    #: ``loss_many(data_mean, data_var, thetas)``: exact losses for many thetas (quadratic energies)
    loss_many: bool = False
    #: ``quadrature_interval(theta)``: the interval where exp(-E) has not decayed by e^-60 (1-D)
    quadrature_interval: bool = False
    #: ``energy(x, theta, out=)`` and ``delta_energy(x, a, b, out=)`` may fill a float64 buffer
    out_buffer: bool = False

    def without(self, **flags) -> "Capabilities":
        """A copy with the named flags switched off (wrappers that cannot keep a fast path)."""
        return replace(self, **{k: False for k in flags if flags[k]})


class Energy:
    """Protocol every energy follows.

    Required: ``energy(x, theta) -> (N,) float64``, ``grad_x(x, theta) -> (N, d)`` in x's dtype,
    ``grad_theta(x, theta) -> (N, P) float64`` (per sample). Optional closed forms return
    ``None`` / raise ``NotImplementedError`` when unknown: ``delta_energy``, ``free_energy``,
    ``fisher``, ``sample_equilibrium``. Fast paths are declared in ``capabilities``.
    """

    dim: int
    n_params: int
    capabilities: ClassVar[Capabilities] = Capabilities()

    @property
    def linear_in_theta(self) -> bool:
        """E is linear in theta up to x-independent terms (``capabilities.linear_in_theta``)."""
        return self.capabilities.linear_in_theta

    @property
    def gaussian(self) -> bool:
        """E is a diagonal quadratic form in x for every theta (``capabilities.quadratic``)."""
        return self.capabilities.quadratic

    def energy(self, x: torch.Tensor, theta: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """E_theta(x) per chain, float64, shape (N,). ``out``: an optional float64 buffer that
        implementations may fill and return (the hot loop passes one to avoid allocations)."""
        raise NotImplementedError

    def grad_x(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def grad_theta(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def mean_grad_theta(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """E_rho[d_theta E] over the rows of x, float64, shape (P,)."""
        return self.grad_theta(x, theta).mean(0)

    def delta_energy(self, x, theta_old, theta_new, out=None) -> torch.Tensor:
        """W = E_{theta_new}(x) - E_{theta_old}(x) per chain (chains frozen), float64."""
        return self.energy(x, theta_new) - self.energy(x, theta_old)

    def free_energy(self, theta: torch.Tensor) -> float:
        """F(theta) = -ln Z_theta in kT."""
        raise NotImplementedError(f"{type(self).__name__} has no closed-form free energy")

    def fisher(self, theta: torch.Tensor) -> torch.Tensor:
        """I(theta) = Cov_{p_theta}[d_theta E], shape (P, P)."""
        raise NotImplementedError(f"{type(self).__name__} has no closed-form Fisher information")

    def check_theta(self, theta: torch.Tensor) -> str | None:
        """Return a message if theta lies outside the family's domain, else None."""
        return None

    def sample_equilibrium(self, theta, n: int, *, gen: torch.Generator, dtype=torch.float32):
        raise NotImplementedError(
            f"{type(self).__name__} cannot draw exact equilibrium samples: pass initial chain states"
        )


class DiagonalGaussianEnergy(Energy):
    """E = sum_j (x_j - c_j)^2 / (2 v_j), with centre c(theta) and variance v(theta) per dimension.

    Subclasses define ``gaussian_params(theta) -> (c, v)`` and the parameter gradients; every
    closed form (F, KL, expected energies, equilibrium draws) follows from (c, v).
    """

    capabilities = Capabilities(quadratic=True, out_buffer=True)

    def gaussian_params(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def energy(self, x, theta, out=None):
        c, v = self.gaussian_params(theta)
        x64 = x.to(torch.float64)
        return ((x64 - c) ** 2 / (2.0 * v)).sum(-1)

    def grad_x(self, x, theta):
        c, v = self.gaussian_params(theta)
        return (x - c.to(x.dtype)) / v.to(x.dtype)

    def free_energy(self, theta) -> float:
        """F = -ln Z = -sum_j ln(2 pi v_j) / 2."""
        _, v = self.gaussian_params(theta)
        return float(-0.5 * (LOG_2PI + torch.log(v)).sum())

    def expected_energy(self, mean, var, theta) -> float:
        """E_{N(m, var)}[E_theta] = sum_j ((m_j - c_j)^2 + var_j) / (2 v_j)."""
        c, v = self.gaussian_params(theta)
        return float((((mean - c) ** 2 + var) / (2.0 * v)).sum())

    def expected_delta_energy(self, mean, var, theta_old, theta_new) -> float:
        """E_{N(m, var)}[E_{theta_new} - E_{theta_old}]: the mean work of a frozen-chain update."""
        return self.expected_energy(mean, var, theta_new) - self.expected_energy(mean, var, theta_old)

    def expected_grad_theta(self, mean, var, theta) -> torch.Tensor:
        """E_{N(m, var)}[d_theta E], shape (P,)."""
        raise NotImplementedError

    def kl(self, mean, var, theta) -> float:
        """KL(N(m, var) || p_theta) = sum_j [var/v + (m - c)^2 / v - 1 - ln(var / v)] / 2."""
        c, v = self.gaussian_params(theta)
        r = var / v
        return float(0.5 * (r + (mean - c) ** 2 / v - 1.0 - torch.log(r)).sum())

    def loss(self, data_mean, data_var, theta) -> float:
        """L(theta) = E_data[E_theta] - F(theta): the exact negative log-likelihood per sample."""
        return self.expected_energy(data_mean, data_var, theta) - self.free_energy(theta)

    def sample_equilibrium(self, theta, n, *, gen, dtype=torch.float32):
        """Exact draws x ~ N(c, diag v), shape (n, d)."""
        c, v = self.gaussian_params(theta)
        z = torch.empty((n, self.dim), dtype=torch.float64, device=theta.device)
        z.normal_(generator=gen)
        return (c + v.sqrt() * z).to(dtype)


class HarmonicTrap(DiagonalGaussianEnergy):
    """E_theta(x) = |x - theta|^2 / (2 s): fixed variance s, learned centre theta in R^d.

    Stiffness k = 1/s, Fisher I = k * identity, Z independent of theta (Delta F = 0).
    """

    # d_theta E = (theta - x)/s is linear in x: the chain mean is enough
    capabilities = Capabilities(quadratic=True, linear_in_theta=True, grad_theta_from_mean=True, loss_many=True,
                                out_buffer=True)

    def __init__(self, variance: float = 1.0, dim: int = 1):
        self.variance = require_positive("variance", variance)
        self.dim = require_positive_int("dim", dim)
        self.n_params = self.dim
        self._variances = None  # (d,) tensor of s, made once per device

    def __repr__(self):
        return f"HarmonicTrap(variance={self.variance}, dim={self.dim})"

    @property
    def stiffness(self) -> float:
        return 1.0 / self.variance

    def gaussian_params(self, theta):
        v = self._variances
        if v is None or v.device != theta.device:
            v = self._variances = torch.full_like(theta, self.variance)
        return theta, v

    def free_energy(self, theta) -> float:
        """F = -d ln(2 pi s) / 2, independent of theta."""
        return -0.5 * self.dim * (LOG_2PI + math.log(self.variance))

    def energy(self, x, theta, out=None):
        if self.dim == 1:
            if out is not None:  # in place: no allocation in the hot loop
                return torch.sub(x.squeeze(-1), theta, out=out).square_().mul_(0.5 / self.variance)
            return (x.to(torch.float64).squeeze(-1) - theta).square_().mul_(0.5 / self.variance)
        e = torch.sub(x, theta).square_()   # float32 - float64 promotes: the energy is float64
        # the sum over a short last axis as a mat-vec (a reduction over 2 columns is ~10x slower)
        half_k = theta.new_full((self.dim,), 0.5 / self.variance)
        return torch.mv(e, half_k, out=out) if out is not None else torch.mv(e, half_k)

    def loss_many(self, data_mean, data_var, thetas) -> np.ndarray:
        """L(theta_r) = sum_j ((m_j - theta_rj)^2 + v_j) / (2 s) + d ln(2 pi s) / 2 for each row of
        ``thetas`` (R, d) at once (the history's true-loss column)."""
        m = torch.as_tensor(data_mean, dtype=torch.float64).cpu().numpy().reshape(1, -1)
        v = torch.as_tensor(data_var, dtype=torch.float64).cpu().numpy().reshape(1, -1)
        th = np.asarray(thetas, dtype=float).reshape(-1, self.dim)
        return (((m - th) ** 2 + v).sum(axis=1) / (2.0 * self.variance)) - self.free_energy(None)

    def grad_x(self, x, theta):
        return (x - theta.to(x.dtype)) / self.variance

    def grad_theta(self, x, theta):
        """d_theta E = (theta - x) / s."""
        return (theta - x.to(torch.float64)) / self.variance

    def mean_grad_theta(self, x, theta):
        return (theta - x.mean(0, dtype=torch.float64)) / self.variance

    def expected_grad_theta(self, mean, var, theta):
        return (theta - mean) / self.variance

    def delta_energy(self, x, theta_old, theta_new, out=None):
        """W = (theta_old - theta_new) . (2x - theta_old - theta_new) / (2 s), exact difference."""
        step = (theta_old - theta_new) / (2.0 * self.variance)
        shift = theta_old + theta_new
        if self.dim == 1 and out is not None:
            return torch.mul(x.squeeze(-1), 2.0, out=out).sub_(shift).mul_(step)
        if self.dim == 1:
            return (x.to(torch.float64).squeeze(-1) * 2.0 - shift) * step
        # = x . (2 step) - shift . step: one mat-vec over the chains, the rest on d-vectors
        offset = -(shift @ step)
        return torch.addmv(offset, x.to(torch.float64), step * 2.0, out=out) if out is not None \
            else torch.addmv(offset, x.to(torch.float64), step * 2.0)

    def expected_delta_energy(self, mean, var, theta_old, theta_new):
        # Linear in x, so its mean is its value at the chain mean (no cancellation error).
        step = (theta_old - theta_new) / (2.0 * self.variance)
        return float(((2.0 * mean - theta_old - theta_new) * step).sum())

    def fisher(self, theta):
        return torch.eye(self.dim, dtype=torch.float64, device=theta.device) / self.variance

    def cov_grad_theta(self, mean, var, theta):
        """Cov_{N(m, var)}[d_theta E] = diag(var) / s^2."""
        return torch.diag(torch.as_tensor(var, dtype=torch.float64, device=theta.device).reshape(self.dim)
                          / self.variance**2)


class Gaussian(DiagonalGaussianEnergy):
    """E_theta(x) = sum_j (x_j - a_j)^2 / (2 s_j), centre a and variance s both learned.

    theta holds the natural parameters, theta = (l1, l2) with l1 = a / s and l2 = 1 / s
    (P = 2d; l1 first), so E = l2 x^2 / 2 - l1 x + l1^2 / (2 l2) is linear in theta up to an
    x-independent term. Per dimension the Fisher block in (l1, l2) is
    [[s, -a s], [-a s, s^2/2 + a^2 s]].
    """

    capabilities = Capabilities(quadratic=True, linear_in_theta=True, out_buffer=True)

    def __init__(self, dim: int = 1):
        self.dim = require_positive_int("dim", dim)
        self.n_params = 2 * self.dim

    def __repr__(self):
        return f"Gaussian(dim={self.dim})"

    @staticmethod
    def natural(mean, variance) -> torch.Tensor:
        """theta = (a / s, 1 / s) from centre a and variance s."""
        a = torch.as_tensor(mean, dtype=torch.float64).reshape(-1)
        s = torch.as_tensor(variance, dtype=torch.float64).reshape(-1)
        if (s <= 0).any() or not torch.isfinite(s).all():
            raise InputError(f"variance must be positive and finite, got {s.tolist()}")
        a, s = torch.broadcast_tensors(a, s)
        return torch.cat([a / s, 1.0 / s])

    def moments(self, theta) -> tuple[torch.Tensor, torch.Tensor]:
        """(a, s): the centre and variance of p_theta."""
        return self.gaussian_params(theta)

    def gaussian_params(self, theta):
        l1, l2 = theta[: self.dim], theta[self.dim :]
        return l1 / l2, 1.0 / l2

    def check_theta(self, theta):
        l2 = theta[self.dim :]
        if not bool((l2 > 0).all()):
            return f"precision 1/s became non-positive ({l2.tolist()}): the variance left its domain"
        return None

    def grad_theta(self, x, theta):
        """d_l1 E = -(x - a), d_l2 E = (x^2 - a^2) / 2."""
        a, _ = self.gaussian_params(theta)
        x64 = x.to(torch.float64)
        return torch.cat([a - x64, 0.5 * (x64**2 - a**2)], dim=-1)

    def mean_grad_theta(self, x, theta):
        x64 = x.to(torch.float64)
        mean = x64.mean(0)
        var = (x64 - mean).pow(2).mean(0)
        return self.expected_grad_theta(mean, var, theta)

    def expected_grad_theta(self, mean, var, theta):
        a, _ = self.gaussian_params(theta)
        return torch.cat([a - mean, 0.5 * (var + mean**2 - a**2)])

    def cov_grad_theta(self, mean, var, theta):
        """Cov_{N(m, v)}[(-x, x^2/2)] per dimension: [[v, -m v], [-m v, m^2 v + v^2/2]]."""
        d = self.dim
        m = torch.as_tensor(mean, dtype=torch.float64, device=theta.device).reshape(d)
        v = torch.as_tensor(var, dtype=torch.float64, device=theta.device).reshape(d)
        out = torch.zeros(2 * d, 2 * d, dtype=torch.float64, device=theta.device)
        idx = torch.arange(d, device=theta.device)
        out[idx, idx] = v
        out[idx, idx + d] = out[idx + d, idx] = -m * v
        out[idx + d, idx + d] = m**2 * v + 0.5 * v**2
        return out

    def fisher(self, theta):
        a, s = self.gaussian_params(theta)
        d = self.dim
        out = torch.zeros(2 * d, 2 * d, dtype=torch.float64, device=theta.device)
        idx = torch.arange(d, device=theta.device)
        out[idx, idx] = s
        out[idx, idx + d] = out[idx + d, idx] = -a * s
        out[idx + d, idx + d] = 0.5 * s**2 + a**2 * s
        return out

