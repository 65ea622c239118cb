"""``optimise_1d``: the optimal n-update schedule for a 1-D energy on its model (theory.md section 4, kT = 1).

The optimisation runs over the theta path itself, not over a class of learning rates: in the canonical
layout (start impulse, n interior updates each followed by a chain move of dt = T/n, final impulse) the
chains see only the n parameter values held during the moves, theta_1..theta_n, and the end point
theta_f; the mean work at frozen chains telescopes over the two updates that see the same chains. So

    W_ex(theta_1, ..., theta_n, theta_f) = sum_k <E_{theta_{k+1}} - E_{theta_k}>_{rho_k} - (F(theta_f) - F(theta_0))

(rho_k the chain density after move k) is minimised over every path, and no schedule of n + 2 updates in
this layout does better on the model, whatever its learning-rate matrices. The learning-rate matrix that
realises the optimum is derived afterwards, update by update, from g_hat on the model: the signed
diagonal P_k = diag((theta_k - theta_{k+1}) / g_hat) (a rank-one matrix where a component of g_hat vanishes).
Gradients by autograd through a torch Fokker-Planck propagation (exp(Q dt) of the library's SQRA generator,
``torch.linalg.matrix_exp``) or, for Gaussian energies, the exact moment recursion (``models``);
L-BFGS-B (SLSQP at a required final loss), then Newton steps on the exact Hessian to polish.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ...pairings import backend_problem
from ...errors import DivergenceError, InputError, require_positive, require_positive_int
from ..schedules import Schedule
from .common import PerUpdateMatrix, UnreachableLossError, _unit_schedule
from .models import _GridModel, _MomentsModel, _true_loss


@dataclass(frozen=True)
class Optimal1D:
    """The optimal n-update schedule (``optimise_1d``) and what it achieves on its own model.

    ``schedule`` runs in ``train`` with ``**train_kwargs`` (backend, grid, n_steps, mobility) and the same
    data; ``theta_path`` (n + 3, P) is theta_0, the value after each of the n + 2 updates (the last one is
    ``theta_final``); ``lr_matrix`` (n + 2, P, P) the integrated learning-rate matrix of every update and
    ``lr_diagonal`` (n + 2, P) its diagonal (the signed per-parameter rates; NaN rows are rank-one updates).
    """

    schedule: Schedule
    excess_work: float          # W_ex = W - Delta F of the optimum, kT
    final_loss: float           # L(theta_T)
    target_loss: float          # the required final loss (= loss_min when landing on the MLE)
    loss_min: float             # L at the maximum-likelihood theta of the model (grid)
    loss_start: float           # L(theta_0)
    theta_final: list
    theta_mle: list
    theta_path: np.ndarray
    lr_matrix: np.ndarray
    lr_diagonal: np.ndarray
    gradient_norm: float        # |d W_ex / d path| at the result (scaled coordinates)
    converged: bool
    iterations: int
    evaluations: int
    message: str
    method: str                 # optimiser and constraint handling
    backend: str
    grid: tuple | None
    n_steps: int
    mobility: float
    x: np.ndarray = field(repr=False, compare=False, default=None)   # raw variables (warm starts)

    @property
    def negative_rates(self) -> int:
        """How many diagonal integrated rates are negative (the optimum moves that parameter against its
        PCD gradient there: not a positive learning rate)."""
        return int(np.sum(np.nan_to_num(self.lr_diagonal, nan=0.0) < 0))

    @property
    def train_kwargs(self) -> dict:
        out = {"schedule": self.schedule, "n_steps": self.n_steps, "backend": self.backend,
               "mobility": self.mobility, "theta0": self.schedule.params["theta0"]}
        if self.grid is not None:
            out["chains"] = {"grid": self.grid}
        return out


def _build_model(energy, data, mu, backend, grid, theta_start):
    if backend == "fokker_planck":
        from ...backends.dispatch import default_grid

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
        return _GridModel(energy, data, mu, grid), grid
    return _MomentsModel(energy, data, mu), None


def _path_excess_work(model, theta_start, path, theta_f, dt):
    """W_ex = sum_k <E_new - E_old> at frozen chains - Delta F along theta_0 -> path[0..n-1] -> theta_f;
    None where a theta leaves the energy's domain."""
    state = model.initial(theta_start)
    p = p0 = model.params(theta_start)
    work = theta_start.new_zeros(())
    for k in range(path.shape[0]):
        p_new = model.params(path[k])
        if not model.valid(path[k], p_new):
            return None
        work = work + model.work(p, p_new, state)
        p = p_new
        state = model.move(p, state, dt)
    p_f = model.params(theta_f)
    if not model.valid(theta_f, p_f):
        return None
    work = work + model.work(p, p_f, state)
    return work - (model.free_energy(p_f) - model.free_energy(p0))


def _initial_path(model, theta_start, theta_f, n, T, mu):
    """A start path inside the domain: the natural-gradient-like design (rates alpha(t) / I_pp with the
    harmonic impulses) run on the model, halved until every theta is valid; its last impulse replaced by
    the jump to theta_f."""
    fisher, spread = model.fisher_diag(theta_start)
    scale = 1.0 / fisher.clamp_min(1e-300)
    tau = spread / mu
    dt = T / n
    t = (np.arange(n) + 0.5) * dt
    alpha = torch.as_tensor(1.0 / (T - t + 2.0 * tau), dtype=torch.float64)
    c0 = tau / (T + 2.0 * tau)
    for _ in range(60):
        with torch.no_grad():
            theta, state = theta_start, model.initial(theta_start)
            path, ok = [], True
            for k in range(n + 1):
                g = model.grad(theta, model.params(theta), state)
                lr = c0 if k == 0 else float(alpha[k - 1]) * dt
                theta = theta - lr * scale * g
                p = model.params(theta)
                if not model.valid(theta, p):
                    ok = False
                    break
                if k >= 1:
                    path.append(theta)
                    state = model.move(p, state, dt)
            if ok:
                return torch.stack(path)
        alpha, c0 = alpha * 0.5, c0 * 0.5
    raise DivergenceError(0, "no start schedule stays inside the energy's domain",
                          "theta_0 or the data are outside what the model family represents")


def optimise_1d(energy, data_samples, theta0, *, duration: float, mobility: float = 1.0, n_steps: int,
                target_loss: float | None = None, grid=None, backend: str = "fokker_planck",
                init: Optimal1D | None = None, max_iter: int = 2000, tol: float = 1e-14) -> Optimal1D:
    """min W_ex = W - Delta F (kT) over every theta path of n_steps interior updates subject to
    L(theta_T) <= target_loss: the optimal schedule in the canonical layout on its model, with the
    learning-rate matrices that realise it.

    The variables are the parameter values held during the n chain moves and, at a required final loss
    above the least one, the end point theta_f (constrained by L(theta_f) <= target_loss, SLSQP); at the
    least loss (``target_loss`` None) theta_f is the maximum-likelihood theta. Every path is allowed (any
    signed, full learning-rate matrix realises it), so the result is the optimum over all schedules of
    this layout on the model, to the optimiser's tolerance (``converged``, ``gradient_norm``): a local
    optimum where W_ex is not convex in the path (the trap and the Gaussian moments are smooth, and the
    tests find the closed-form optima). ``backend`` "fokker_planck" (the chain density on ``grid`` = (lo, hi,
    n_points), exp(Q dt) of the SQRA generator, the same numbers as ``train(backend="fokker_planck")`` on
    that grid to rounding; cost O(n_points^3) per update) or "moments" (Gaussian energies: the exact moment
    recursion). ``init``: a previous result to warm-start from (same layout).
    """
    from ...data.base import as_dataset
    from ...core.contract import as_theta as _as_theta

    T = require_positive("duration", duration)
    mu = require_positive("mobility", mobility)
    n = require_positive_int("n_steps", n_steps)
    if backend not in ("fokker_planck", "moments"):
        raise InputError(f"backend must be 'fokker_planck' or 'moments', got {backend!r}")
    problem = backend_problem(backend, quadratic=energy.capabilities.quadratic, dim=energy.dim,
                              energy_name=type(energy).__name__)
    if problem:
        raise InputError(f"optimise_1d: {problem}")
    theta_start = _as_theta(theta0, energy, "cpu")
    data = as_dataset(data_samples, energy.dim)
    if data.samples is None and not energy.capabilities.quadratic:
        raise InputError("a non-quadratic energy needs data samples (its data term is not a function of moments)")
    model, grid = _build_model(energy, data, mu, backend, grid, theta_start)
    P = energy.n_params
    dt = T / n

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
    stay = loss_start <= target          # theta_0 already meets the target: doing nothing costs nothing
    fisher, _ = model.fisher_diag(theta_start)
    scale = 1.0 / fisher.clamp_min(1e-300).sqrt()          # natural length per parameter
    n_path = n * P

    def unpack(x):
        path = theta_start + x[:n_path].reshape(n, P) * scale
        th_f = theta_mle if landing else theta_start + x[n_path:] * scale
        return path, th_f

    def w_of(x):
        path, th_f = unpack(x)
        return _path_excess_work(model, theta_start, path, th_f, dt)

    penalty = [None]

    def objective(xn):
        x = torch.as_tensor(xn, dtype=torch.float64).requires_grad_(True)
        out = w_of(x)
        if out is None or not torch.isfinite(out):
            base = penalty[0] if penalty[0] is not None else 1e6
            return 10.0 * base + 1.0, np.zeros_like(xn)
        (grad,) = torch.autograd.grad(out, x)
        val = float(out.detach())
        if penalty[0] is None:
            penalty[0] = abs(val) + 1.0
        return val, grad.numpy()

    if stay:
        x0 = np.zeros(n_path + (0 if landing else P))
    elif init is not None:
        if init.x is None or init.x.shape[0] < n_path:
            raise InputError("init must be an Optimal1D result with the same layout")
        end = init.x[n_path:] if (not landing and init.x.shape[0] == n_path + P) else \
            _end_point_guess(model, theta_start, theta_mle, target, landing, scale)
        x0 = np.concatenate([init.x[:n_path], end])
    else:
        end = _end_point_guess(model, theta_start, theta_mle, target, landing, scale)
        th_f = theta_mle if landing else theta_start + torch.as_tensor(end) * scale
        path0 = _initial_path(model, theta_start, th_f, n, T, mu)
        x0 = np.concatenate([((path0 - theta_start) / scale).reshape(-1).numpy(), end])
    from scipy.optimize import minimize

    if stay:
        x, nit, nfev, message, method = x0, 0, 1, "theta_0 already meets the target loss", "none"
    elif landing:
        res = minimize(objective, x0, jac=True, method="L-BFGS-B",
                       options={"maxiter": max_iter, "maxfun": 4 * max_iter, "ftol": tol, "gtol": 1e-13})
        x, nit, nfev, message = _newton_polish(w_of, res.x, objective), int(res.nit), int(res.nfev), str(res.message)
        method = "L-BFGS-B + Newton over the theta path, end point = maximum-likelihood theta"
    else:
        def cons(xn):
            th = theta_start + torch.as_tensor(xn[n_path:], dtype=torch.float64).requires_grad_(True) * scale
            val = _true_loss(model, th)
            (gr,) = torch.autograd.grad(val, th)
            jac = np.zeros_like(xn)
            jac[n_path:] = -(gr * scale).detach().numpy()
            return target - float(val.detach()), jac

        res = minimize(objective, x0, jac=True, method="SLSQP",
                       constraints=[{"type": "ineq", "fun": lambda xn: cons(xn)[0], "jac": lambda xn: cons(xn)[1]}],
                       options={"maxiter": max_iter, "ftol": tol})
        x, nit, nfev, message = res.x, int(res.nit), int(res.nfev), str(res.message)
        method = "SLSQP over the theta path and the end point, L(theta_f) <= target_loss"
    val, grad = objective(x)
    if stay:
        gnorm, converged = 0.0, True
    elif landing:
        gnorm = float(np.max(np.abs(grad)))
        converged = gnorm <= 1e-7 * (1.0 + abs(val))
    else:
        gnorm, converged = float(np.max(np.abs(grad))), bool(res.success)
    xt = torch.as_tensor(x, dtype=torch.float64)
    with torch.no_grad():
        path, th_f = unpack(xt)
        w_ex = _path_excess_work(model, theta_start, path, th_f, dt)
    if w_ex is None or not torch.isfinite(w_ex):
        raise DivergenceError(n + 2, "the optimised path leaves the energy's domain",
                              "the optimisation failed; try a smaller duration or another start")
    thetas, matrices = _realise(model, theta_start, path, th_f, n, dt)
    diag = np.diagonal(matrices, axis1=1, axis2=2).copy()
    off = np.abs(matrices).sum(axis=(1, 2)) - np.abs(diag).sum(axis=1)
    diag[off > 0] = np.nan
    sched = _unit_schedule("optimal-1d", T, PerUpdateMatrix(matrices, T),
                           {"kind": "numerical-1d", "theta0": theta_start.tolist(), "mobility": mu,
                            "n_steps": n, "backend": backend, "grid": grid})
    return Optimal1D(schedule=sched, excess_work=float(w_ex), final_loss=float(_true_loss(model, th_f)),
                     target_loss=target, loss_min=loss_min, loss_start=loss_start, theta_final=th_f.tolist(),
                     theta_mle=theta_mle.tolist(), theta_path=thetas, lr_matrix=matrices, lr_diagonal=diag,
                     gradient_norm=gnorm, converged=converged, iterations=nit, evaluations=nfev, message=message,
                     method=method, backend=backend, grid=grid, n_steps=n, mobility=mu, x=np.asarray(x))


def _newton_polish(w_of, x, objective, steps: int = 8):
    """Newton steps on the exact Hessian (autograd) with a backtracking line search, while they lower W_ex
    (the L-BFGS end point is within its tolerance; this brings the gradient to rounding)."""
    if x.size > 400:
        return x
    best_val, best_grad = objective(x)
    for _ in range(steps):
        xt = torch.as_tensor(x, dtype=torch.float64)
        try:
            H = torch.autograd.functional.hessian(lambda z: w_of(z), xt).numpy()
        except (TypeError, RuntimeError):
            return x
        if not np.all(np.isfinite(H)):
            return x
        H = 0.5 * (H + H.T)
        w, V = np.linalg.eigh(H)
        if w[0] <= 0:
            return x
        step = -V @ ((V.T @ best_grad) / w)
        t = 1.0
        while t > 1e-4:
            val, grad = objective(x + t * step)
            if val <= best_val and np.max(np.abs(grad)) < np.max(np.abs(best_grad)):
                break
            t *= 0.5
        else:
            return x
        x, best_val, best_grad = x + t * step, val, grad
        if np.max(np.abs(best_grad)) <= 1e-15 * (1.0 + abs(best_val)):
            break
    return x


def _realise(model, theta_start, path, theta_f, n, dt):
    """(thetas (n + 3, P), R (n + 2, P, P)): the theta after every update and the integrated learning-rate
    matrix R_k with theta_{k+1} = theta_k - R_k g_hat_k on the model. The start impulse and the first
    interior update see the same frozen chains: the start impulse goes to 2 theta_1 - theta_2 (interior
    steps of equal size at the start, as on the trap's exact optimum) when that theta is valid, else to
    the midpoint of theta_0 -> theta_1. R_k is diagonal, diag((theta_k - theta_{k+1}) / g_hat), unless a
    component of g_hat vanishes where theta moves: then the rank-one (theta_k - theta_{k+1}) g^T / |g|^2."""
    with torch.no_grad():
        mid = None
        if n >= 2:
            cand = 2.0 * path[0] - path[1]
            if model.valid(cand, model.params(cand)):
                mid = cand
        if mid is None:
            mid = 0.5 * (theta_start + path[0])
        thetas = [theta_start, mid] + [path[k] for k in range(n)] + [theta_f]
        state = model.initial(theta_start)
        mats = []
        for k in range(n + 2):
            old, new = thetas[k], thetas[k + 1]
            g = model.grad(old, model.params(old), state).reshape(-1)
            step = (old - new).reshape(-1)
            gn = g.numpy()
            sn = step.numpy()
            tiny = np.abs(gn) <= 1e-300
            if np.any(tiny & (sn != 0)):
                gg = float(gn @ gn)
                if gg == 0.0:
                    raise DivergenceError(k + 1, "the optimal step moves theta where g_hat is exactly zero",
                                          "no learning-rate matrix realises this step")
                mats.append(np.outer(sn, gn) / gg)
            else:
                mats.append(np.diag(np.where(tiny, 0.0, sn / np.where(tiny, 1.0, gn))))
            if 1 <= k <= n:
                state = model.move(model.params(new), state, dt)
    return torch.stack([t.reshape(-1) for t in thetas]).numpy(), np.stack(mats)


def _mle(model, theta0, energy):
    """(theta_hat, L(theta_hat)): closed form for the Gaussian energies on the moments model, else
    L-BFGS on the model's L (convex in natural parameters)."""
    from scipy.optimize import minimize

    data = model.data
    if isinstance(model, _MomentsModel):
        from ...energies.base import Gaussian, HarmonicTrap

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


def _end_point_guess(model, theta0, theta_mle, target, landing, scale):
    """(theta_f - theta_0) / scale for the point on the segment theta_mle -> theta_0 whose loss is the target
    (empty when landing)."""
    if landing:
        return np.zeros(0)
    from scipy.optimize import brentq

    def gap(f):
        with torch.no_grad():
            return float(_true_loss(model, theta_mle + f * (theta0 - theta_mle))) - target

    f = 1.0 if gap(1.0) <= 0 else brentq(gap, 0.0, 1.0, xtol=1e-14)
    return (((theta_mle + f * (theta0 - theta_mle)) - theta0) / scale).numpy()
