"""Closed-form minimal dissipation (kT = 1).

Harmonic trap E = |x - theta|^2 / (2 s), k = 1/s, tau = s/mu, Delta = xbar - theta_0:
W* = k |Delta|^2 / (2 + T/tau) (Schmiedl-Seifert), reached by ``schedules.optimal_harmonic``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .errors import InputError, require_positive

BOLTZMANN = 1.380649e-23  # J/K


def joules(energy_kt: float, temperature_kelvin: float = 300.0) -> float:
    """Energy in kT -> joules at the given temperature: E k_B T."""
    return float(energy_kt) * BOLTZMANN * require_positive("temperature_kelvin", temperature_kelvin)


@dataclass(frozen=True)
class HarmonicBound:
    """The optimal protocol's figures; vectors are lists (one entry per dimension)."""

    excess_work: float          # W* = k |Delta|^2 / (2 + T/tau)
    impulse_start: float        # integrated learning rate of the jump at t = 0: s tau / (T + 2 tau)
    impulse_end: float          # integrated learning rate of the jump at t = T: s / 2
    theta_after_start: list     # theta_0 + Delta / (2 + T/tau)
    theta_before_end: list      # theta_0 + Delta (T + tau) / (T + 2 tau)
    chain_mean_end: list        # m_T = theta_0 + Delta T / (T + 2 tau)
    lag: list                   # theta - m on (0, T): Delta / (2 + T/tau)
    kl_end: float               # KL(rho_T || p_theta_T) = k |xbar - m_T|^2 / 2
    entropy_production: float   # int |dm/dt|^2 / mu dt = |Delta|^2 T / (mu (T + 2 tau)^2)
    relaxation_time: float      # tau = s / mu
    quench_limit: float         # T -> 0: k |Delta|^2 / 2
    slow_limit: float           # T -> inf: |Delta|^2 / (mu T)

    def to_dict(self) -> dict:
        return asdict(self)


def harmonic(variance: float, mobility: float, duration: float, theta0=None, target=None,
             distance: float | None = None) -> HarmonicBound:
    """Minimal excess work of moving the trap centre from theta0 to target in time T.

    Give either ``theta0`` and ``target`` (scalars or equal-length vectors) or ``distance``
    |target - theta0| (then theta0 = 0, target = distance, d = 1).
    """
    s = require_positive("variance", variance)
    mu = require_positive("mobility", mobility)
    T = require_positive("duration", duration)
    if distance is not None:
        if theta0 is not None or target is not None:
            raise InputError("give either distance or theta0 and target, not both")
        theta0, target = 0.0, float(distance)
    if theta0 is None or target is None:
        raise InputError("harmonic bound needs theta0 and target (or distance)")
    th0 = np.atleast_1d(np.asarray(theta0, float))
    xbar = np.atleast_1d(np.asarray(target, float))
    if th0.shape != xbar.shape or th0.ndim != 1:
        raise InputError(f"theta0 {th0.tolist()} and target {xbar.tolist()} must have the same length")
    if not (np.all(np.isfinite(th0)) and np.all(np.isfinite(xbar))):
        raise InputError("theta0 and target must be finite")
    try:
        with np.errstate(over="raise", divide="raise", invalid="raise"):
            b = _harmonic(s, mu, T, th0, xbar)
    except (ZeroDivisionError, OverflowError, FloatingPointError):
        b = None
    if b is None or not all(np.all(np.isfinite(v)) for v in asdict(b).values()):
        raise InputError("the harmonic bound overflows for these values (variance, mobility, duration, "
                         "theta0, target are too extreme for float64)")
    return b


def _harmonic(s, mu, T, th0, xbar) -> HarmonicBound:
    k, tau = 1.0 / s, s / mu
    delta = xbar - th0
    d2 = float(delta @ delta)
    m_end = th0 + delta * T / (T + 2 * tau)
    return HarmonicBound(
        excess_work=k * d2 / (2.0 + T / tau),
        impulse_start=s * tau / (T + 2 * tau),
        impulse_end=0.5 * s,
        theta_after_start=(th0 + delta / (2.0 + T / tau)).tolist(),
        theta_before_end=(th0 + delta * (T + tau) / (T + 2 * tau)).tolist(),
        chain_mean_end=m_end.tolist(),
        lag=(delta / (2.0 + T / tau)).tolist(),
        kl_end=k * float((xbar - m_end) @ (xbar - m_end)) / 2.0,
        entropy_production=d2 * T / (mu * (T + 2 * tau) ** 2),
        relaxation_time=tau,
        quench_limit=k * d2 / 2.0,
        slow_limit=d2 / (mu * T),
    )




def harmonic_excess_work(variance, mobility, duration, distance) -> float:
    """W* = k Delta^2 / (2 + T/tau) for |Delta| = distance (vectorised over numpy arrays)."""
    s, mu = float(variance), float(mobility)
    T, dist = np.asarray(duration, float), np.asarray(distance, float)
    return (dist**2 / s) / (2.0 + T * mu / s)
