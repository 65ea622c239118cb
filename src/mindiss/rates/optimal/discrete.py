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
"""
from __future__ import annotations

import math

import numpy as np

from ...errors import InputError, require_positive, require_positive_int
from ..schedules import DiscreteSchedule


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

