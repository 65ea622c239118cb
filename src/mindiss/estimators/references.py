"""Exact references for Gaussian chains (no Monte-Carlo noise).

* ``ou_moments``: the exact OU transition of a Gaussian's mean and variance.
* ``harmonic_discrete_path``: the harmonic trap's discretised learning dynamics as a linear
  recursion in (theta, m); an independent code path to check the moments backend against.
* ``solve_harmonic_continuous``: adaptive ODE integration of the continuous dynamics
  dm/dt = (theta - m)/tau, dtheta/dt = eta(t) k (xbar - m), dW/dt = dtheta/dt . k (theta - m),
  with impulses applied as frozen-chain jumps.
"""
from __future__ import annotations


import numpy as np
import torch

from ..rates.schedules import DiscreteSchedule, Schedule


def ou_moments(mean, var, centre, variance, mobility: float, dt: float):
    """m' = c + (m - c) e^{-mu dt / v},  var' = v + (var - v) e^{-2 mu dt / v}."""
    a = torch.exp(-mobility * dt / variance)
    return centre + (mean - centre) * a, variance + (var - variance) * a * a


def harmonic_discrete_path(disc: DiscreteSchedule, variance: float, mobility: float,
                           theta0, target, chain_mean0=None) -> dict:
    """theta, m and mean work after each update of the canonical discretisation (N -> infinity).

    Update k: theta' = theta - lr_k k (m - xbar); W += k (theta - theta')(2m - theta - theta')/2;
    then m' = theta' + (m - theta') exp(-mu dt_k / s). Returns arrays with a leading row for the
    initial state: ``theta``, ``chain_mean`` (shape (n+3, d)) and cumulative ``work`` (n+3,).
    """
    k = 1.0 / variance
    theta = np.atleast_1d(np.asarray(theta0, float)).copy()
    xbar = np.broadcast_to(np.asarray(target, float), theta.shape)
    m = theta.copy() if chain_mean0 is None else np.broadcast_to(np.asarray(chain_mean0, float), theta.shape).copy()
    decay = np.exp(-mobility * disc.dt / variance)
    thetas, means, works = [theta.copy()], [m.copy()], [0.0]
    w = 0.0
    for lr, a in zip(disc.lr, decay):
        new = theta - lr * k * (m - xbar)
        w += float(k * np.dot(theta - new, 2.0 * m - theta - new) / 2.0)
        theta = new
        m = theta + (m - theta) * a
        thetas.append(theta.copy()); means.append(m.copy()); works.append(w)
    return {"theta": np.array(thetas), "chain_mean": np.array(means), "work": np.array(works)}


def solve_harmonic_continuous(schedule: Schedule, variance: float, mobility: float, theta0, target,
                              chain_mean0=None, rtol: float = 1e-12, atol: float = 1e-13) -> dict:
    """Continuous-time learning dynamics on the harmonic trap, by adaptive ODE integration (DOP853).

    Impulses are frozen-chain jumps theta -> theta - c k (m - xbar) with work
    k (|m - theta'|^2 - |m - theta|^2) / 2. Returns ``theta_final``, ``chain_mean_final``,
    ``work`` (= W_ex, since Delta F = 0), ``kl_final`` and ``entropy_production``.
    """
    from scipy.integrate import solve_ivp

    s, mu, T = float(variance), float(mobility), schedule.duration
    k, tau = 1.0 / s, s / mu
    theta = np.atleast_1d(np.asarray(theta0, float)).copy()
    d = theta.size
    xbar = np.broadcast_to(np.asarray(target, float), theta.shape)
    m = theta.copy() if chain_mean0 is None else np.broadcast_to(np.asarray(chain_mean0, float), (d,)).copy()
    kl0 = k * np.sum((m - theta) ** 2) / 2.0

    def jump(theta, m, c):
        new = theta - c * k * (m - xbar)
        return new, k * (np.sum((m - new) ** 2) - np.sum((m - theta) ** 2)) / 2.0

    theta, work = jump(theta, m, schedule.impulse_start)

    def rhs(t, y):
        th, mm = y[:d], y[d:2 * d]
        dth = schedule(t) * k * (xbar - mm)
        dm = (th - mm) / tau
        return np.concatenate([dth, dm, [np.dot(dth, k * (th - mm)), np.dot(dm, dm) / mu]])

    y = np.concatenate([theta, m, [work, 0.0]])
    edges = [0.0, *sorted(b for b in schedule.breakpoints if 0 < b < T), T]
    for a, b in zip(edges[:-1], edges[1:]):
        sol = solve_ivp(rhs, (a, b), y, method="DOP853", rtol=rtol, atol=atol)
        if not sol.success:
            raise RuntimeError(f"ODE reference failed: {sol.message}")
        y = sol.y[:, -1]
    theta, m, work, ep = y[:d], y[d:2 * d], y[2 * d], y[2 * d + 1]
    theta, w_end = jump(theta, m, schedule.impulse_end)
    work += w_end
    return {"theta_final": theta, "chain_mean_final": m, "work": float(work),
            "kl_final": float(k * np.sum((m - theta) ** 2) / 2.0), "kl_initial": float(kl0),
            "entropy_production": float(ep)}
