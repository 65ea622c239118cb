"""``gaussian_schedule``: the learnable-variance optimum (``bounds.gaussian``; theory.md section 6, kT = 1)
realised as a schedule whose learning-rate matrix is built, update by update, from the chain statistics
and the data moments (``OptimalGaussianMatrix``)."""
from __future__ import annotations

import math

import numpy as np
import torch

from ...estimators import bounds as _bounds
from ...errors import DivergenceError, InputError
from ..preconditioners import Preconditioner
from ..schedules import Schedule
from .common import _layout, _unit_schedule

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
