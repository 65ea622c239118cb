"""Exactly optimal discrete schedules (the chains move by exact OU transitions between updates).

Harmonic trap E = |x - theta|^2 / (2 s), k = 1/s, canonical layout of theory.md section 3: a start
impulse, n interior updates each followed by a chain move of dt = T/n, a final impulse. With
a = exp(-mu dt / s) and e_j = m - theta the lag of the chain mean behind the parameter value held
during move j (a move shrinks it to a e_j), Identity 2 gives

    W_ex = (k/2) [ (1 - a^2) sum_j |e_j|^2 + |m_{n+1} - xbar|^2 ],  m_{n+1} - xbar = Delta' - (1 - a) sum_j e_j

(Delta' = theta_0 - xbar, m_{n+1} the chain mean at the final impulse), a convex quadratic whose
minimum has every lag equal, e_j = eps Delta' with eps = 1 / ((1 + a) + (1 - a) n), and

    W_ex* (n) = k |Delta|^2 / (2 + 2 n tanh(mu T / (2 n s)))   ->   k |Delta|^2 / (2 + T/tau)  (n -> inf).

The learning rates realising it depend on neither theta_0 nor xbar (with
theta' = theta - lr k (m - xbar)):

    start impulse   lr = s a eps,                   eps = 1 / ((1 + a) + (1 - a) n)
    interior j=1..n lr = s (1 - a) eps / (1 - (j - 1)(1 - a) eps)
    final impulse   lr = s / (1 + a)

The start impulse and the first interior update see the same (frozen) chains, so only their sum
s eps is fixed by optimality; the split above makes every interior update move theta by the same
step (1 - a) eps Delta', as the continuous optimum does at constant speed.

Beyond the trap (this module's other half; theory.md sections 4 and 6, kT = 1):

* ``gaussian_schedule``: the learnable-variance optimum (``bounds.gaussian``) realised as a schedule
  whose learning-rate matrix is built, update by update, from the chain statistics and the data
  moments (``OptimalGaussianMatrix``).
* ``optimise_1d``: a numerically optimal schedule for a 1-D energy: per-parameter piecewise-linear
  rates and start impulses, the end point chosen on the required final true loss, W_ex minimised
  by L-BFGS-B / SLSQP with gradients from autograd through a torch Fokker-Planck propagation (the
  square-root-approximation generator of ``fokker_planck``, exp(Q dt) by ``torch.linalg.matrix_exp``)
  or, for Gaussian energies, through the exact moment recursion.
* ``pareto_front`` / ``dissipation_ratio``: least W_ex against final true loss (closed forms for the
  trap and the learnable-variance Gaussian, numerical for 1-D) and each schedule's W_ex relative to it.
* ``schedule_for``: the best schedule the library can give for an energy and data, and which kind.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import numpy as np
import torch

from . import bounds as _bounds
from .errors import DivergenceError, InputError, require_positive, require_positive_int
from .preconditioners import Preconditioner
from .schedules import DiscreteSchedule, Schedule


def _decay(n, variance, mobility, duration):
    n = require_positive_int("n", n)
    s = require_positive("variance", variance)
    mu = require_positive("mobility", mobility)
    T = require_positive("duration", duration)
    x = mu * (T / n) / s                       # mu dt / s
    return n, s, mu, T, math.exp(-x), -math.expm1(-x)   # a, 1 - a


def discrete_harmonic(n: int, *, variance: float, mobility: float, duration: float, dim: int = 1) -> DiscreteSchedule:
    """The exactly optimal n + 2 learning rates on the harmonic trap: W_ex = k |Delta|^2 / (2 + 2 n tanh(mu T/(2 n s))).

    Same layout as ``schedules.optimal_harmonic(...).discretise(n)`` (impulse, n interior updates
    with chain moves of T/n, impulse); lands exactly on every target from every start.
    ``dim`` is checked only: the scalar rates are the same in every dimension.
    """
    n, s, mu, T, a, one_minus_a = _decay(n, variance, mobility, duration)
    require_positive_int("dim", dim)
    eps = 1.0 / ((1.0 + a) + one_minus_a * n)
    j = np.arange(n)
    interior = s * one_minus_a * eps / (1.0 - j * one_minus_a * eps)
    dt = T / n
    return DiscreteSchedule(
        lr=np.concatenate([[s * a * eps], interior, [s / (1.0 + a)]]),
        dt=np.concatenate([[0.0], np.full(n, dt), [0.0]]),
        t=np.concatenate([[0.0], j * dt, [T]]),
        is_impulse=np.concatenate([[True], np.zeros(n, bool), [True]]),
        duration=T,
    )


def discrete_harmonic_excess_work(n, *, variance: float, mobility: float, duration: float, distance) -> float:
    """W_ex*(n) = k |Delta|^2 / (2 + 2 n tanh(mu T / (2 n s))), kT: the exact optimum with n interior updates."""
    n, s, mu, T, _, _ = _decay(n, variance, mobility, duration)
    try:
        dist = float(np.linalg.norm(np.atleast_1d(np.asarray(distance, float))))
    except (TypeError, ValueError):
        raise InputError(f"distance must be a number or a vector of numbers, got {distance!r}") from None
    if not math.isfinite(dist):
        raise InputError(f"distance must be finite, got {distance!r}")
    return (dist * dist / s) / (2.0 + 2.0 * n * math.tanh(0.5 * mu * T / (n * s)))


class UnreachableLossError(InputError):
    """A required final true loss lies below the least loss the model family reaches."""


def _layout(ctx, duration: float, n_expected: int | None = None) -> tuple[int, float]:
    """(n, dt) of the canonical layout, from the loop's interior step; refuses a mismatch."""
    dt = float(ctx.dt)
    n = int(round(duration / dt)) if dt > 0 else 0
    if n < 1 or abs(n * dt - duration) > 1e-9 * duration or (n_expected is not None and n != n_expected):
        want = f" and n_steps = {n_expected}" if n_expected is not None else ""
        raise InputError(f"this learning-rate matrix belongs to its own schedule (duration {duration}{want}); "
                         f"the run has interior step {dt}: run it with that schedule")
    return n, duration / n


def _unit_schedule(name: str, duration: float, preconditioner, params: dict) -> Schedule:
    """Scalar rate 1 per unit time and unit impulses (lr_k = 1, dt, ..., dt, 1): the matrix carries the rates."""
    return Schedule(name=name, duration=duration, rate=lambda t: np.ones_like(np.asarray(t, float)),
                    impulse_start=1.0, impulse_end=1.0, params=params, preconditioner=preconditioner)


# ================================================================ learnable variance: the exact optimum
#
# E = (x - a)^2 / (2 s), theta = (a/s, 1/s) per dimension (``energies.Gaussian``). The optimum of
# theory.md section 6 moves the chain mean m and standard deviation sigma linearly in time.

def _ou_inverse(m, v, m_next, v_next, mobility: float, dt: float, update: int):
    """(a, s) whose exact OU move of length dt takes N(m, v) to N(m_next, v_next), per dimension:
    s solves v_next = s + (v - s) exp(-2 mu dt / s) (monotone in s, reachable iff v_next < v + 2 mu dt),
    then a = (m_next - m e) / (1 - e), e = exp(-mu dt / s)."""
    from scipy.optimize import brentq

    a_out, s_out = np.empty(m.size), np.empty(m.size)
    for j in range(m.size):
        vj, tj = float(v[j]), float(v_next[j])
        if not (vj > 0 and 0 < tj < vj + 2.0 * mobility * dt):
            raise DivergenceError(update, f"the chain variance {vj:.6g} cannot reach the optimal path's {tj:.6g} "
                                  f"in one move of length {dt:.3g}", "the chains are not on the optimal path "
                                  "(the variance can grow by less than 2 mu dt per move)")

        def gap(log_s):
            x = 2.0 * mobility * dt * math.exp(-log_s)
            return -math.exp(log_s) * math.expm1(-x) + vj * math.exp(-x) - tj

        lo = hi = math.log(max(vj, tj))
        while gap(hi) < 0:
            hi += 1.0
        while gap(lo) > 0:
            lo -= 1.0
        s = math.exp(brentq(gap, lo, hi, xtol=1e-15, rtol=1e-15))
        x = mobility * dt / s
        a_out[j] = (float(m_next[j]) - float(m[j]) * math.exp(-x)) / -math.expm1(-x)
        s_out[j] = s
    return a_out, s_out


class OptimalGaussianMatrix(Preconditioner):
    """P_k = J diag(alpha_c s, alpha_v 2 s^2) J^T, J = d theta / d(a, s): the learning-rate matrix of
    update k that realises the learnable-variance optimum; natural gradient alpha I^-1 with one rate
    per mode (alpha_c = alpha_v = alpha(t) gives ``schedules.natural_gradient``).

    Rule at update k (only the chain statistics, the data moments and the optimal path enter):
    read the chain moments off E_rho[d_theta E] = (a - m, (v + m^2 - a^2) / 2); the target is the
    path's theta(0+) at the start impulse, the data's (xbar, v_d) at the final impulse, and in between
    the (a', s') whose exact OU move of length dt carries (m, v) onto the path's chain moments at the
    next update time; the two rates make theta - lr P g_hat equal the target. They are reported per
    update (``rate_centre``, ``rate_variance``); a negative one means the optimum moves that mode
    against its PCD gradient, so it is not a positive semi-definite learning-rate matrix there.
    Use it with its own schedule (``gaussian_schedule``: lr = 1, dt, ..., dt, 1).
    """

    name = "optimal-gaussian"
    needs = "none"

    def __init__(self, bound: _bounds.GaussianBound):
        self.bound = bound
        self.k = 0
        self.n, self.dt, self.mobility = None, None, bound.mobility
        self.theta = self.target = None
        self.rates: list = []

    def start(self, ctx) -> None:
        self.n, self.dt = _layout(ctx, self.bound.duration)
        d = len(self.bound.mean0)
        if getattr(ctx.energy, "n_params", None) != 2 * d or not hasattr(ctx.energy, "moments"):
            raise InputError(f"the optimal Gaussian schedule needs md.Gaussian({d}) (centre and variance learned)")
        if abs(float(ctx.mobility) - self.mobility) > 1e-12 * self.mobility:
            raise InputError(f"the schedule was built for mobility {self.mobility}, the run has {ctx.mobility}")

    def observe(self, stats, ctx) -> None:
        theta = ctx.theta.detach().cpu().numpy().astype(float)
        d = theta.size // 2
        a = theta[:d] / theta[d:]
        chain = stats.mean.detach().cpu().numpy()
        m = a - chain[:d]
        v = 2.0 * chain[d:] + (a - m) * (a + m)
        b, k = self.bound, self.k
        if k > self.n + 1:
            raise InputError(f"the run has more than the n + 2 = {self.n + 2} updates of this matrix's schedule: "
                             "run it with its own schedule")
        if k == 0:
            a_new, s_new = np.asarray(b.theta_after_start, float).T
        elif k <= self.n:
            p = b.path(min(k * self.dt, b.duration))
            a_new, s_new = _ou_inverse(m, v, p.chain_mean, p.chain_variance, self.mobility, self.dt, k + 1)
        else:
            a_new, s_new = np.asarray(b.data_mean, float), np.asarray(b.data_variance, float)
        self.theta, self.target = theta, np.concatenate([a_new / s_new, 1.0 / s_new])

    def matrix(self, g) -> tuple[np.ndarray, list]:
        """(P_k, [(alpha_c, alpha_v) per dimension]) for the gradient g at the observed update."""
        theta, d = self.theta, self.theta.size // 2
        lr = 1.0 if self.k in (0, self.n + 1) else self.dt
        a, s = theta[:d] / theta[d:], 1.0 / theta[d:]
        step = (self.target - theta) / lr
        P, rates = np.zeros((2 * d, 2 * d)), []
        for j in range(d):
            idx = [j, j + d]
            J = np.array([[1.0 / s[j], -a[j] / s[j] ** 2], [0.0, -1.0 / s[j] ** 2]])
            inv_fisher = np.array([s[j], 2.0 * s[j] ** 2])      # I^-1 in (a, s)
            delta = np.linalg.solve(J, step[idx])                # the step per unit lr, in (a, s)
            h = J.T @ g[idx]                                     # g_hat in (a, s)
            alpha = np.zeros(2)
            for i in range(2):
                if abs(delta[i]) * lr <= 1e-12 * (math.sqrt(s[j]), s[j])[i]:   # no move (to rounding)
                    continue
                if h[i] == 0.0:
                    raise DivergenceError(self.k + 1, f"the optimal step moves the {('centre', 'variance')[i]} "
                                          "mode, whose PCD gradient is exactly zero",
                                          "no learning-rate matrix realises this step")
                alpha[i] = -delta[i] / (inv_fisher[i] * h[i])
            P[np.ix_(idx, idx)] = J @ np.diag(alpha * inv_fisher) @ J.T
            rates.append(alpha.tolist())
        return P, rates

    def apply(self, g):
        P, rates = self.matrix(g.detach().cpu().numpy())
        self.rates.append(rates)
        self.k += 1
        return torch.as_tensor(P @ g.detach().cpu().numpy(), dtype=g.dtype, device=g.device)

    def report(self) -> dict:
        r = np.asarray(self.rates, float).reshape(len(self.rates), -1, 2)
        return {"name": self.name, "updates": self.k, "rate_centre": r[..., 0].tolist(),
                "rate_variance": r[..., 1].tolist(), "negative_rates": int(np.sum(r < 0)),
                "positive_semidefinite": bool(np.all(r >= 0))}


def gaussian_schedule(mean0, variance0, data_mean, data_variance, mobility: float, duration: float) -> Schedule:
    """W_ex -> W_ex* = sum Delta^2 / (mu T + 2 v_d) + [stiffness change 1/s0 -> 1/v_d] (kT) as n grows: the
    learnable-variance optimum (``bounds.gaussian``) as a schedule for ``md.Gaussian(d)``.

    Scalar rate 1 per unit time with unit impulses (lr = 1, dt, ..., dt, 1); the learning-rate matrix
    ``OptimalGaussianMatrix`` carries the rates, built at every update from the chain statistics and
    the data moments (the only target information it needs). On the moments backend the chain
    moments sit on the optimal path at every update time, theta_T = (xbar, v_d) exactly, and the
    excess work exceeds W_ex* by O(1/n^2) (piecewise-constant parameters).
    """
    b = _bounds.gaussian(mean0, variance0, data_mean, data_variance, mobility, duration)
    return _unit_schedule("optimal-gaussian", b.duration, OptimalGaussianMatrix(b),
                          {"kind": "exact-gaussian", "excess_work_bound": b.excess_work, "mobility": b.mobility})


# ================================================================ per-update diagonal rates

class PerUpdateDiagonal(Preconditioner):
    """P_k = diag(rates[k]) / lr_k: prescribed per-parameter learning rates for every update of the
    canonical layout (``rates`` (n + 2, P): the integrated rate lr_k P_k of each update; lr_k = 1 for
    the impulses and dt inside, as in ``_unit_schedule``)."""

    name = "per-update-diagonal"
    needs = "none"

    def __init__(self, rates, duration: float):
        self.table = np.asarray(rates, float)
        self.duration = float(duration)
        self.k = 0
        self.dt = None

    def start(self, ctx) -> None:
        _, self.dt = _layout(ctx, self.duration, self.table.shape[0] - 2)
        if getattr(ctx.energy, "n_params", None) != self.table.shape[1]:
            raise InputError(f"the rates are for {self.table.shape[1]} parameters, the energy has {ctx.energy.n_params}")

    def apply(self, g):
        if self.k >= self.table.shape[0]:
            raise InputError(f"the run has more than the {self.table.shape[0]} updates of this matrix's schedule")
        lr = 1.0 if self.k in (0, self.table.shape[0] - 1) else self.dt
        r = torch.as_tensor(self.table[self.k] / lr, dtype=g.dtype, device=g.device)
        self.k += 1
        return r * g

    def report(self) -> dict:
        return {"name": self.name, "updates": self.k, "negative_rates": int(np.sum(self.table < 0))}


# ================================================================ numerically optimal 1-D schedules
#
# Differentiable forward models of the canonical update loop (float64 torch; autograd gives the
# gradient with respect to the schedule). Each holds the chain state as a tuple of tensors.

class _GridModel:
    """The chain density on a uniform grid (reflecting ends), moved by exp(Q dt) with the SQRA
    generator of ``fokker_planck.FokkerPlanck1D``: rates (mu / h^2) exp(-/+ (E_{i+1} - E_i) / 2).
    ``params(theta)`` is E_theta on the grid; ``state`` the masses rho."""

    def __init__(self, energy, data, mobility, grid):
        lo, hi, n = grid
        self.h = (hi - lo) / (n - 1)
        self.x = torch.linspace(lo, hi, n, dtype=torch.float64).reshape(-1, 1)
        self.energy, self.data, self.mobility = energy, data, mobility
        self._data_grad = _data_grad_fn(energy, data)

    def params(self, theta):
        return self.energy.energy(self.x, theta).reshape(-1)

    def initial(self, theta):
        return torch.softmax(-self.params(theta).detach(), 0)

    def grad(self, theta, p, rho):
        """g_hat = E_data[d_theta E] - E_rho[d_theta E]."""
        return self._data_grad(theta) - rho @ self.energy.grad_theta(self.x, theta).reshape(self.x.shape[0], -1)

    def work(self, p_old, p_new, rho):
        return rho @ (p_new - p_old)

    def move(self, p, rho, dt):
        de = p[1:] - p[:-1]
        c = self.mobility / self.h**2
        up, down = c * torch.exp(-0.5 * de), c * torch.exp(0.5 * de)
        zero = p.new_zeros(1)
        q = torch.diag(up, -1) + torch.diag(down, 1) - torch.diag(torch.cat([up, zero]) + torch.cat([zero, down]))
        return torch.linalg.matrix_exp(q * dt) @ rho

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
        self._data_grad = _data_grad_fn(energy, data)

    def params(self, theta):
        return self.energy.gaussian_params(theta)

    def initial(self, theta):
        c, v = self.params(theta.detach())
        return (c.clone(), v.clone())

    def grad(self, theta, p, state):
        return self._data_grad(theta) - self.energy.expected_grad_theta(state[0], state[1], theta)

    def work(self, p_old, p_new, state):
        (c0, s0), (c1, s1), (m, v) = p_old, p_new, state
        return (((m - c1) ** 2 + v) / (2.0 * s1) - ((m - c0) ** 2 + v) / (2.0 * s0)).sum()

    def move(self, p, state, dt):
        c, s = p
        e = torch.exp(-self.mobility * dt / s)
        return (c + (state[0] - c) * e, s + (state[1] - s) * e * e)

    def valid(self, theta, p):
        return bool((p[1] > 0).all())

    def free_energy(self, p):
        return -0.5 * torch.log(2.0 * math.pi * p[1]).sum()

    def fisher_diag(self, theta):
        _, s = self.energy.gaussian_params(theta.detach())
        return torch.diagonal(self.energy.fisher(theta.detach())), float(s.mean())


def _data_grad_fn(energy, data):
    """theta -> E_data[d_theta E] (a constant, computed once, where d_theta E does not depend on theta)."""
    if getattr(energy, "gaussian", False):
        return lambda th: energy.expected_grad_theta(data.mean, data.variance, th)
    if getattr(energy, "grad_theta_constant", False):
        const = energy.grad_theta(data.samples, torch.zeros(energy.n_params, dtype=torch.float64)).mean(0)
        return lambda th: const
    return lambda th: energy.grad_theta(data.samples, th).mean(0)


def _true_loss(model, theta):
    """L(theta) = E_data[E_theta] - F(theta) (the grid's F on the Fokker-Planck model)."""
    energy, data = model.energy, model.data
    if getattr(energy, "gaussian", False):
        c, s = energy.gaussian_params(theta)
        data_term = (((data.mean - c) ** 2 + data.variance) / (2.0 * s)).sum()
    else:
        data_term = energy.energy(data.samples, theta).mean()
    return data_term - model.free_energy(model.params(theta))


@dataclass(frozen=True)
class Optimal1D:
    """A numerically optimal schedule (``optimise_1d``) and what it achieves on its own model.

    ``schedule`` runs in ``train`` with ``**train_kwargs`` (backend, grid, n_steps, mobility) and the same
    data; ``lr_diagonal`` (n + 2, P) holds the integrated per-parameter rate of every update (start
    impulse, n interior updates, final impulse; the final one lands on ``theta_final``).
    """

    schedule: Schedule
    excess_work: float          # W_ex = W - Delta F of the optimum, kT
    final_loss: float           # L(theta_T)
    target_loss: float          # the required final loss (= loss_min when landing on the MLE)
    loss_min: float             # L at the maximum-likelihood theta of the model (grid)
    loss_start: float           # L(theta_0)
    theta_final: list
    theta_mle: list
    lr_diagonal: np.ndarray
    converged: bool
    iterations: int
    evaluations: int
    message: str
    method: str                 # optimiser and constraint handling
    backend: str
    grid: tuple | None
    n_steps: int
    n_knots: int
    mobility: float
    x: np.ndarray = field(repr=False, compare=False, default=None)   # raw parameters (warm starts)

    @property
    def negative_rates(self) -> int:
        """How many integrated rates are negative (the landing impulse may need one: then the optimum is
        not a positive learning rate in that parameter)."""
        return int(np.sum(self.lr_diagonal < 0))

    @property
    def train_kwargs(self) -> dict:
        out = {"schedule": self.schedule, "n_steps": self.n_steps, "backend": self.backend,
               "mobility": self.mobility, "theta0": self.schedule.params["theta0"]}
        if self.grid is not None:
            out["chains"] = {"grid": self.grid}
        return out


def _softplus_inv(y):
    y = np.asarray(y, float)
    return np.where(y > 30, y, np.log(np.expm1(np.minimum(y, 30))))


def _interp_matrix(n: int, n_knots: int | None, duration: float) -> np.ndarray:
    """(n, K) weights: the piecewise-linear rate through K equally spaced knots at the n midpoints
    (K = n with the identity when ``n_knots`` is None or >= n: a free rate per update)."""
    if n_knots is None or n_knots >= n:
        return np.eye(n)
    K = require_positive_int("n_knots", n_knots)
    if K < 2:
        raise InputError(f"n_knots must be at least 2 (or None for one rate per update), got {n_knots!r}")
    mid = (np.arange(n) + 0.5) * duration / n
    knots = np.linspace(0.0, duration, K)
    return np.stack([np.interp(mid, knots, np.eye(K)[i]) for i in range(K)], axis=1)


def optimise_1d(energy, data_samples, theta0, *, duration: float, mobility: float = 1.0, n_steps: int,
                target_loss: float | None = None, grid=None, n_knots: int | None = 8,
                backend: str = "fokker_planck", init: Optimal1D | None = None, max_iter: int = 2000,
                tol: float = 1e-13) -> Optimal1D:
    """min W_ex = W - Delta F (kT) over per-parameter rates subject to L(theta_T) <= target_loss: the
    numerically optimal schedule of n_steps interior updates for a 1-D energy, exact on its model.

    Parametrisation (diagonal learning-rate matrix, canonical layout): per parameter a piecewise-linear
    positive rate r_p(t) through ``n_knots`` knots (softplus; None: a free rate per update) and a start
    impulse; the final impulse lands on an end point theta_f, which is the maximum-likelihood theta
    (``target_loss`` None or the minimum) or a free variable constrained by L(theta_f) <= target_loss
    (SLSQP). W_ex is minimised with exact gradients by autograd through the model: ``backend``
    "fokker_planck" (the chain density on ``grid`` = (lo, hi, n_points), exp(Q dt) of the SQRA
    generator, the same numbers as ``train(backend="fokker_planck")`` on that grid; cost O(n_points^3)
    per update) or "moments" (Gaussian energies: the exact moment recursion, no grid).
    ``init``: a previous result to warm-start from (same layout).
    """
    from .data import as_dataset
    from .train import _as_theta

    T = require_positive("duration", duration)
    mu = require_positive("mobility", mobility)
    n = require_positive_int("n_steps", n_steps)
    if backend not in ("fokker_planck", "moments"):
        raise InputError(f"backend must be 'fokker_planck' or 'moments', got {backend!r}")
    if backend == "fokker_planck" and getattr(energy, "dim", None) != 1:
        raise InputError(f"optimise_1d needs a one-dimensional energy on the Fokker-Planck grid, not dim={energy.dim}")
    if backend == "moments" and not getattr(energy, "gaussian", False):
        raise InputError(f"backend 'moments' needs a quadratic energy, not {type(energy).__name__}")
    theta_start = _as_theta(theta0, energy, "cpu")
    data = as_dataset(data_samples, energy.dim)
    if data.samples is None and not getattr(energy, "gaussian", False):
        raise InputError("a non-quadratic energy needs data samples (its data term is not a function of moments)")
    if backend == "fokker_planck":
        from .backends import default_grid

        if grid is None:
            lo, hi, _ = default_grid(energy, theta_start, data.samples)
            grid = (lo, hi, 121)
        try:
            lo, hi, npts = (float(grid[0]), float(grid[1]), int(grid[2]))
        except (TypeError, ValueError, IndexError):
            raise InputError(f"grid must be (lo, hi, n_points), got {grid!r}") from None
        if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo and npts >= 3):
            raise InputError(f"grid needs finite lo < hi and n_points >= 3, got {grid!r}")
        grid = (lo, hi, npts)
        model = _GridModel(energy, data, mu, grid)
    else:
        grid = None
        model = _MomentsModel(energy, data, mu)
    P = energy.n_params
    M = torch.as_tensor(_interp_matrix(n, n_knots, T), dtype=torch.float64)
    K = M.shape[1]
    dt = T / n
    fisher, spread = model.fisher_diag(theta_start)
    scale = 1.0 / fisher.clamp_min(1e-300)
    tau = spread / mu

    theta_mle, loss_min = _mle(model, theta_start, energy)
    loss_start = float(_true_loss(model, theta_start))
    if target_loss is None:
        target = loss_min
    else:
        target = float(target_loss)
        if not math.isfinite(target):
            raise InputError(f"target_loss must be finite, got {target_loss!r}")
    land_tol = 1e-10 * max(1.0, abs(loss_min))
    if target < loss_min - land_tol:
        raise UnreachableLossError(f"target_loss {target:.10g} lies below the least true loss {loss_min:.10g} "
                                   "that this model family reaches (unreachable final loss)")
    landing = target <= loss_min + land_tol
    n_free = P * K + P + (0 if landing else P)

    def unpack(x):
        u = x[: P * K].reshape(P, K)
        w = x[P * K: P * K + P]
        th_f = theta_mle if landing else x[P * K + P:]
        return torch.nn.functional.softplus(u) @ M.T * scale[:, None], torch.nn.functional.softplus(w) * scale, th_f

    def forward(x):
        rates, c0, th_f = unpack(x)
        theta, state = theta_start, model.initial(theta_start)
        p = p0 = model.params(theta)
        work = theta.new_zeros(())
        table = []
        for k in range(n + 2):
            g = model.grad(theta, p, state)
            if k == n + 1:
                new = th_f
                table.append((theta - th_f) / g)
            else:
                lr = c0 if k == 0 else rates[:, k - 1] * dt
                new = theta - lr * g
                table.append(lr)
            p_new = model.params(new)
            if not model.valid(new, p_new):
                return None
            work = work + model.work(p, p_new, state)
            theta, p = new, p_new
            if 0 < k <= n:
                state = model.move(p, state, dt)
        w_ex = work - (model.free_energy(p) - model.free_energy(p0))
        return w_ex, theta, torch.stack(table)

    penalty = [None]

    def objective(xn):
        x = torch.as_tensor(xn, dtype=torch.float64).requires_grad_(True)
        out = forward(x)
        if out is None or not torch.isfinite(out[0]):
            base = penalty[0] if penalty[0] is not None else 1e6
            return 10.0 * base + 1.0, np.zeros_like(xn)
        (grad,) = torch.autograd.grad(out[0], x)
        val = float(out[0].detach())
        if penalty[0] is None:
            penalty[0] = abs(val) + 1.0
        return val, grad.numpy()

    if init is not None:
        if init.x is None or init.x.shape[0] < P * K + P:
            raise InputError("init must be an Optimal1D result with the same layout")
        x0 = np.concatenate([init.x[: P * K + P], init.x[P * K + P:] if not landing and init.x.shape[0] == n_free
                             else _end_point_guess(model, theta_start, theta_mle, target, landing)])
    else:
        knots = np.linspace(0.0, T, K) if K < n else (np.arange(n) + 0.5) * dt
        alpha = 1.0 / (T - knots + 2.0 * tau)
        x0 = np.concatenate([np.tile(_softplus_inv(alpha), P), np.full(P, float(_softplus_inv(tau / (T + 2 * tau)))),
                             _end_point_guess(model, theta_start, theta_mle, target, landing)])
    from scipy.optimize import minimize

    if loss_start <= target:   # theta_0 already meets the target: doing nothing costs nothing
        x0[: P * K + P] = -40.0
    for _ in range(60):        # a start inside the energy's domain: halve the rates until it is
        with torch.no_grad():
            out = forward(torch.as_tensor(x0, dtype=torch.float64))
        if out is not None and torch.isfinite(out[0]):
            break
        x0[: P * K + P] = _softplus_inv(0.5 * np.logaddexp(0.0, x0[: P * K + P]))
    else:
        raise DivergenceError(0, "no start schedule stays inside the energy's domain",
                              "theta_0 or the data are outside what the model family represents")
    if landing:
        res = minimize(objective, x0, jac=True, method="L-BFGS-B",
                       options={"maxiter": max_iter, "maxfun": 4 * max_iter, "ftol": tol, "gtol": 1e-12})
        method = "L-BFGS-B, end point = maximum-likelihood theta"
    else:
        def cons(xn):
            th = torch.as_tensor(xn[P * K + P:], dtype=torch.float64).requires_grad_(True)
            val = _true_loss(model, th)
            (gr,) = torch.autograd.grad(val, th)
            jac = np.zeros_like(xn)
            jac[P * K + P:] = -gr.numpy()
            return target - float(val.detach()), jac

        res = minimize(objective, x0, jac=True, method="SLSQP",
                       constraints=[{"type": "ineq", "fun": lambda xn: cons(xn)[0], "jac": lambda xn: cons(xn)[1]}],
                       options={"maxiter": max_iter, "ftol": tol})
        method = "SLSQP, end point constrained by L(theta_f) <= target_loss"
    converged = bool(res.success)
    if not converged and landing:   # L-BFGS-B's line search can stall at rounding level: judge by the gradient
        val, grad = objective(res.x)
        converged = bool(np.max(np.abs(grad)) <= 1e-7 * (1.0 + abs(val)))
    x = torch.as_tensor(res.x, dtype=torch.float64)
    with torch.no_grad():
        out = forward(x)
    if out is None or not torch.isfinite(out[0]):
        raise DivergenceError(n + 2, "the optimised schedule leaves the energy's domain",
                              "the optimisation failed; try fewer knots, a smaller duration or another start")
    w_ex, theta_T, table = out
    table = table.numpy()
    sched = _unit_schedule("optimal-1d", T, PerUpdateDiagonal(table, T),
                           {"kind": "numerical-1d", "theta0": theta_start.tolist(), "mobility": mu,
                            "n_steps": n, "backend": backend, "grid": grid})
    return Optimal1D(schedule=sched, excess_work=float(w_ex), final_loss=float(_true_loss(model, theta_T)),
                     target_loss=target, loss_min=loss_min, loss_start=loss_start, theta_final=theta_T.tolist(),
                     theta_mle=theta_mle.tolist(), lr_diagonal=table, converged=converged,
                     iterations=int(res.nit), evaluations=int(res.nfev), message=str(res.message), method=method,
                     backend=backend, grid=grid, n_steps=n, n_knots=K, mobility=mu, x=np.asarray(res.x))


def _mle(model, theta0, energy):
    """(theta_hat, L(theta_hat)): closed form for the Gaussian energies on the moments model, else
    L-BFGS on the model's L (convex in natural parameters)."""
    from scipy.optimize import minimize

    data = model.data
    if isinstance(model, _MomentsModel):
        from .energies import Gaussian, HarmonicTrap

        if isinstance(energy, HarmonicTrap):
            th = data.mean.clone()
        elif isinstance(energy, Gaussian):
            th = Gaussian.natural(data.mean, data.variance)
        else:
            th = None
        if th is not None:
            return th, float(_true_loss(model, th))

    def f(xn):
        th = torch.as_tensor(xn, dtype=torch.float64).requires_grad_(True)
        if energy.check_theta(th.detach()):
            return 1e300, np.zeros_like(xn)
        val = _true_loss(model, th)
        (gr,) = torch.autograd.grad(val, th)
        return float(val.detach()), gr.numpy()

    res = minimize(f, theta0.numpy(), jac=True, method="L-BFGS-B", options={"ftol": 1e-15, "gtol": 1e-11,
                                                                           "maxiter": 1000})
    th = torch.as_tensor(res.x, dtype=torch.float64)
    return th, float(_true_loss(model, th))


def _end_point_guess(model, theta0, theta_mle, target, landing):
    """The point on the segment theta_mle -> theta_0 whose loss is the target (empty when landing)."""
    if landing:
        return np.zeros(0)
    from scipy.optimize import brentq

    def gap(f):
        with torch.no_grad():
            return float(_true_loss(model, theta_mle + f * (theta0 - theta_mle))) - target

    f = 1.0 if gap(1.0) <= 0 else brentq(gap, 0.0, 1.0, xtol=1e-14)
    return (theta_mle + f * (theta0 - theta_mle)).numpy()


# ================================================================ the Pareto front

def _vector(name, value):
    try:
        arr = np.atleast_1d(np.asarray(value, dtype=float))
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number or a vector of numbers, got {value!r}") from None
    if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)):
        raise InputError(f"{name} must be a finite number or vector, got {value!r}")
    return arr


@dataclass(frozen=True)
class HarmonicProblem:
    """Learn the trap centre: E = |x - theta|^2 / (2 s), data mean ``target`` (variance ``data_variance``,
    default s), from equilibrium chains at ``theta0``, in time T. L(theta) = sum((xbar - theta)^2 + v_d) / (2 s)
    + (d/2) ln(2 pi s)."""

    variance: float
    mobility: float
    duration: float
    theta0: object
    target: object
    data_variance: float | None = None

    def __post_init__(self):
        for name in ("variance", "mobility", "duration"):
            object.__setattr__(self, name, require_positive(name, getattr(self, name)))
        th0, xbar = _vector("theta0", self.theta0), _vector("target", self.target)
        if th0.shape != xbar.shape:
            raise InputError(f"theta0 and target must have the same length, got {th0.size} and {xbar.size}")
        object.__setattr__(self, "theta0", th0)
        object.__setattr__(self, "target", xbar)
        vd = self.variance if self.data_variance is None else require_positive("data_variance", self.data_variance)
        object.__setattr__(self, "data_variance", vd)

    def loss(self, theta) -> float:
        d = self.target - _vector("theta", theta)
        k = self.target.size
        return float(np.sum(d * d + self.data_variance) / (2 * self.variance) + 0.5 * k * math.log(2 * math.pi * self.variance))

    def excess_work(self, loss, n_steps: int | None = None):
        """W*(L) = k (|Delta| - r)_+^2 / (2 + T / tau), r = sqrt(2 s (L - L_min)): the optimum lands on the segment
        theta_0 -> xbar at distance r from xbar, so W* scales with the covered distance squared (with
        ``n_steps``: the exact discrete optimum, ``discrete_harmonic_excess_work``)."""
        loss = np.asarray(loss, float)
        lmin = self.loss(self.target)
        if np.any(loss < lmin - 1e-12 * max(1.0, abs(lmin))):
            raise UnreachableLossError(f"final loss {np.min(loss):.10g} lies below the least loss {lmin:.10g} "
                                       "(unreachable final loss)")
        excess = loss - lmin
        excess = np.where(excess <= 8 * np.finfo(float).eps * max(1.0, abs(lmin)), 0.0, excess)  # L rounded: sqrt
        r = np.sqrt(2.0 * self.variance * excess)
        covered = np.maximum(float(np.linalg.norm(self.target - self.theta0)) - r, 0.0)
        if n_steps is None:
            return _bounds.harmonic_excess_work(self.variance, self.mobility, self.duration, covered)
        out = [discrete_harmonic_excess_work(n_steps, variance=self.variance, mobility=self.mobility,
                                             duration=self.duration, distance=c) for c in covered.reshape(-1)]
        return np.asarray(out).reshape(covered.shape)


@dataclass(frozen=True)
class GaussianProblem:
    """Learn centre and variance (1-D ``energies.Gaussian``): data (xbar, v_d), equilibrium chains at
    (a0, s0), time T. L(a, s) = ((xbar - a)^2 + v_d) / (2 s) + ln(2 pi s) / 2."""

    mean0: float
    variance0: float
    data_mean: float
    data_variance: float
    mobility: float
    duration: float

    def __post_init__(self):
        for name in ("variance0", "data_variance", "mobility", "duration"):
            object.__setattr__(self, name, require_positive(name, getattr(self, name)))
        for name in ("mean0", "data_mean"):
            v = _vector(name, getattr(self, name))
            if v.size != 1:
                raise InputError(f"{name}: the Gaussian front is for one dimension, got {v.size} values")
            object.__setattr__(self, name, float(v[0]))

    def loss(self, mean, variance) -> float:
        return float(((self.data_mean - mean) ** 2 + self.data_variance) / (2 * variance)
                     + 0.5 * math.log(2 * math.pi * variance))

    def excess_work(self, loss) -> float:
        """min over (a_f, s_f) with L(a_f, s_f) <= loss of ``bounds.gaussian((a0, s0) -> (a_f, s_f))``:
        for fixed s_f the best a_f is the point of [xbar - R, xbar + R] nearest a0 (R^2 = 2 s_f (L -
        ln(2 pi s_f)/2) - v_d), leaving a bounded 1-D minimisation over s_f (scan + Brent)."""
        from scipy.optimize import brentq, minimize_scalar

        ell, vd = float(loss), self.data_variance
        lmin, lstart = self.loss(self.data_mean, vd), self.loss(self.mean0, self.variance0)
        if ell < lmin - 1e-12 * max(1.0, abs(lmin)):
            raise UnreachableLossError(f"final loss {ell:.10g} lies below the least loss {lmin:.10g} "
                                       "(unreachable final loss)")
        if ell >= lstart:
            return 0.0
        u = self.mobility * self.duration
        dist = abs(self.mean0 - self.data_mean)

        def room(s):                        # R^2(s); the feasible variances are where it is >= 0
            return 2.0 * s * ell - s * math.log(2 * math.pi * s) - vd

        def work(s):
            r = math.sqrt(max(room(s), 0.0))
            var = 0.0 if s == self.variance0 else _bounds.schmiedl_seifert(
                1.0 / self.variance0, 1.0 / s, self.duration, self.mobility).excess_work
            return max(dist - r, 0.0) ** 2 / (u + 2.0 * s) + var

        if room(vd) <= 16 * np.finfo(float).eps * vd * max(1.0, abs(ell)):   # at the least loss (to rounding)
            return work(vd)
        lo, hi = vd, vd
        while room(lo) > 0:
            lo *= 0.5
        while room(hi) > 0:
            hi *= 2.0
        s_lo = brentq(room, lo, vd, xtol=1e-15 * vd, rtol=1e-15)
        s_hi = brentq(room, vd, hi, xtol=1e-15 * vd, rtol=1e-15)
        grid = np.geomspace(s_lo, s_hi, 65)
        vals = [work(s) for s in grid]
        i = int(np.argmin(vals))
        a, b = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
        best = minimize_scalar(work, bounds=(a, b), method="bounded", options={"xatol": 1e-13 * b})
        return float(min(best.fun, vals[i]))


@dataclass(frozen=True)
class Problem1D:
    """A 1-D energy learnt from ``data`` (samples or ``md.data.Gaussian``) from equilibrium at ``theta0``,
    for the numerical front (``optimise_1d`` at every loss: same model, grid and layout)."""

    energy: object
    data: object
    theta0: object
    duration: float
    mobility: float = 1.0
    n_steps: int = 8
    grid: tuple | None = None
    n_knots: int | None = None
    backend: str = "fokker_planck"

    def __post_init__(self):
        require_positive("duration", self.duration)
        require_positive("mobility", self.mobility)
        require_positive_int("n_steps", self.n_steps)

    def optimise(self, target_loss=None, init=None, **kwargs) -> Optimal1D:
        return optimise_1d(self.energy, self.data, self.theta0, duration=self.duration, mobility=self.mobility,
                           n_steps=self.n_steps, target_loss=target_loss, grid=self.grid, n_knots=self.n_knots,
                           backend=self.backend, init=init, **kwargs)


@dataclass(frozen=True)
class ParetoFront:
    """Least excess work (kT) against final true loss; ``at(L)`` evaluates it (exactly for the closed forms,
    by linear interpolation between the optimised points for the numerical front)."""

    kind: str                   # "harmonic", "harmonic-discrete", "gaussian", "numerical-1d"
    losses: np.ndarray
    excess_work: np.ndarray
    loss_min: float             # the least reachable final loss (landing on the maximum-likelihood theta)
    loss_start: float           # L(theta_0): at and above it W* = 0
    n_steps: int | None         # None: the continuous-time front
    exact: bool                 # closed form (True) or numerical optimisation (False)
    function: Callable | None = field(default=None, repr=False, compare=False)
    results: tuple = field(default=(), repr=False, compare=False)

    def at(self, loss):
        loss = np.asarray(loss, float)
        if np.any(loss < self.loss_min - 1e-9 * max(1.0, abs(self.loss_min))):
            raise UnreachableLossError(f"final loss {float(np.min(loss)):.10g} lies below the front's least loss "
                                       f"{self.loss_min:.10g} (unreachable: is the point from another problem?)")
        if self.function is not None:
            out = np.vectorize(self.function, otypes=[float])(np.maximum(loss, self.loss_min))
        else:
            out = np.interp(loss, self.losses, self.excess_work, right=0.0)
        return float(out) if out.ndim == 0 else out


def pareto_front(problem, losses=None, *, n_steps: int | None = None, n_points: int = 25) -> ParetoFront:
    """W_ex*(L) = least excess work of any schedule whose final true loss is at most L, at ``losses``
    (default: n_points from the least reachable loss up to L(theta_0), denser near the least).

    ``HarmonicProblem``: closed form (``n_steps``: the exact discrete front). ``GaussianProblem``: the
    learnable-variance bound minimised over the end points on the loss level (a 1-D minimisation).
    ``Problem1D``: ``optimise_1d`` at every loss (warm-started along the front; its own grid and layout).
    """
    n_points = require_positive_int("n_points", n_points)
    if isinstance(problem, HarmonicProblem):
        lmin, lstart = problem.loss(problem.target), problem.loss(problem.theta0)
        if n_steps is not None:
            require_positive_int("n_steps", n_steps)
        fn = lambda ell: float(problem.excess_work(ell, n_steps))  # noqa: E731
        kind, exact = ("harmonic" if n_steps is None else "harmonic-discrete"), True
    elif isinstance(problem, GaussianProblem):
        if n_steps is not None:
            raise InputError("the learnable-variance front is the continuous-time one (n_steps is not supported)")
        lmin = problem.loss(problem.data_mean, problem.data_variance)
        lstart = problem.loss(problem.mean0, problem.variance0)
        fn, kind, exact = problem.excess_work, "gaussian", True
    elif isinstance(problem, Problem1D):
        first = problem.optimise(None)
        lmin, lstart, fn, kind, exact = first.loss_min, first.loss_start, None, "numerical-1d", False
        n_steps = problem.n_steps
    else:
        raise InputError(f"problem must be a HarmonicProblem, GaussianProblem or Problem1D, got {type(problem).__name__}")
    if losses is None:
        losses = lmin + (lstart - lmin) * np.linspace(0.0, 1.0, n_points) ** 2
    losses = np.sort(_vector("losses", losses))
    if losses[0] < lmin - 1e-12 * max(1.0, abs(lmin)):
        raise UnreachableLossError(f"loss {losses[0]:.10g} lies below the least reachable loss {lmin:.10g} "
                                   "(unreachable final loss)")
    if fn is not None:
        return ParetoFront(kind, losses, np.array([fn(ell) for ell in losses]), lmin, lstart, n_steps, exact, fn)
    results, prev = [], first
    for ell in losses:
        if ell >= lstart:
            results.append(None)
            continue
        prev = first if ell <= lmin + 1e-10 * max(1.0, abs(lmin)) else problem.optimise(ell, init=prev)
        results.append(prev)
    works = np.array([0.0 if r is None else r.excess_work for r in results])
    return ParetoFront(kind, losses, works, lmin, lstart, n_steps, exact, None, tuple(results))


def dissipation_ratio(point, front: ParetoFront) -> float:
    """W_ex / W_ex*(L_T): a schedule's excess work over the front's at its own final true loss (>= 1;
    inf for a schedule that dissipates while ending no better than it started).

    ``point``: a ``TrainResult`` (its ``final_loss`` and ``excess_work``) or a pair (final loss, W_ex).
    Near the least loss the front is steep (W* falls like sqrt(L - L_min)), so a final loss rounded by
    eps |L| moves the ratio by O(sqrt(eps)) ~ 1e-8; losses within 8 eps |L_min| of the least count as landed.
    """
    if hasattr(point, "final_loss") and hasattr(point, "excess_work"):
        loss, work = float(point.final_loss), float(point.excess_work)
    else:
        try:
            loss, work = (float(v) for v in point)
        except (TypeError, ValueError):
            raise InputError(f"point must be a TrainResult or a pair (final_loss, excess_work), got {point!r}") from None
    if not (math.isfinite(loss) and math.isfinite(work)):
        raise InputError(f"the point's final loss and excess work must be finite, got ({loss}, {work})")
    best = front.at(loss)
    if best <= 0.0:
        return math.inf if work > 1e-12 else 1.0
    return work / best


# ================================================================ the schedule for a user's problem

class ScheduleChoice(NamedTuple):
    """(schedule, kind) from ``schedule_for``; ``reason`` says why this kind."""

    schedule: Schedule
    kind: str

    @property
    def reason(self) -> str:
        return {"exact-harmonic": "closed form: the Schmiedl-Seifert optimum (target-free rates)",
                "exact-gaussian": "closed form: the learnable-variance optimum, built from the data moments",
                "numerical-1d": "no closed form; numerically optimal on the Fokker-Planck grid (optimise_1d)",
                "natural-gradient": "no closed form and not 1-D: the linear-response design alpha(t) I^-1",
                }[self.kind]


def schedule_for(energy, data, *, theta0, duration: float, mobility: float = 1.0, n_steps: int | None = None,
                 **options) -> ScheduleChoice:
    """The least-dissipation schedule mindiss can give for ``energy`` learnt from ``data`` in time T:
    the exact optimum where a closed form exists (harmonic trap; learnable-variance Gaussian), else the
    numerical optimum for a 1-D energy (``optimise_1d``, needs ``n_steps``; ``options`` go to it), else the
    natural-gradient design (``options``: ``fisher``, ``tau``). Returns (schedule, kind)."""
    from .data import as_dataset
    from .energies import Gaussian, HarmonicTrap
    from .schedules import natural_gradient, optimal_harmonic

    T = require_positive("duration", duration)
    mu = require_positive("mobility", mobility)
    if isinstance(energy, HarmonicTrap):
        return ScheduleChoice(optimal_harmonic(energy.variance, mu, T), "exact-harmonic")
    if isinstance(energy, Gaussian):
        ds = as_dataset(data, energy.dim)
        th = torch.as_tensor(np.asarray(theta0, float), dtype=torch.float64).reshape(-1)
        if th.numel() != energy.n_params or energy.check_theta(th):
            raise InputError(f"theta0 must be {energy.n_params} natural parameters with positive precisions "
                             "(md.Gaussian.natural(mean, variance))")
        a0, s0 = energy.moments(th)
        return ScheduleChoice(gaussian_schedule(a0.numpy(), s0.numpy(), ds.mean.numpy(), ds.variance.numpy(), mu, T),
                              "exact-gaussian")
    if getattr(energy, "dim", None) == 1:
        if n_steps is None:
            raise InputError("a numerically optimal 1-D schedule is built for a given number of updates: pass n_steps")
        res = optimise_1d(energy, data, theta0, duration=T, mobility=mu, n_steps=n_steps, **options)
        return ScheduleChoice(res.schedule, "numerical-1d")
    return ScheduleChoice(natural_gradient(T, tau=options.get("tau", "auto"), fisher=options.get("fisher", "full")),
                          "natural-gradient")
