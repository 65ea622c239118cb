"""``optimise_1d``: a numerically optimal schedule for a 1-D energy (theory.md section 4, kT = 1):
per-parameter piecewise-linear rates and start impulses, the end point chosen on the required final
true loss, W_ex minimised by L-BFGS-B / SLSQP with gradients from autograd through a torch Fokker-Planck
propagation (the square-root-approximation generator of ``fokker_planck``, exp(Q dt) by
``torch.linalg.matrix_exp``) or, for Gaussian energies, through the exact moment recursion (``models``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import DivergenceError, InputError, require_positive, require_positive_int
from ..schedules import Schedule
from .common import PerUpdateDiagonal, UnreachableLossError, _unit_schedule
from .models import _GridModel, _MomentsModel, _true_loss


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
    from ..data import as_dataset
    from ..core.contract import as_theta as _as_theta

    T = require_positive("duration", duration)
    mu = require_positive("mobility", mobility)
    n = require_positive_int("n_steps", n_steps)
    if backend not in ("fokker_planck", "moments"):
        raise InputError(f"backend must be 'fokker_planck' or 'moments', got {backend!r}")
    if backend == "fokker_planck" and getattr(energy, "dim", None) != 1:
        raise InputError(f"optimise_1d needs a one-dimensional energy on the Fokker-Planck grid, not dim={energy.dim}")
    if backend == "moments" and not energy.capabilities.quadratic:
        raise InputError(f"backend 'moments' needs a quadratic energy, not {type(energy).__name__}")
    theta_start = _as_theta(theta0, energy, "cpu")
    data = as_dataset(data_samples, energy.dim)
    if data.samples is None and not energy.capabilities.quadratic:
        raise InputError("a non-quadratic energy needs data samples (its data term is not a function of moments)")
    if backend == "fokker_planck":
        from ..backends import default_grid

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
        from ..energies import Gaussian, HarmonicTrap

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

