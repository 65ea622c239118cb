"""Closed-form minimal dissipation (kT = 1).

Harmonic trap E = |x - theta|^2 / (2 s), k = 1/s, tau = s/mu, Delta = xbar - theta_0:
W* = k |Delta|^2 / (2 + T/tau) (Schmiedl-Seifert), reached by ``schedules.optimal_harmonic``.

``schmiedl_seifert``: the optimal stiffness change lambda_i -> lambda_f (theory.md section 6).
``gaussian``: learnable centre and variance E = (x - a)^2 / (2 s) moved to the data Gaussian,
W_ex* = Delta^2 / (mu T + 2 v_d) + the stiffness-change optimum 1/s0 -> 1/v_d (theory.md section 6).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..errors import InputError, require_positive

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


# ------------------------------------------------------------ stiffness change and learnable variance

def _x_minus_log1p(x):
    """x - ln(1 + x) for x > -1 without cancellation near 0 (series below |x| < 1e-3)."""
    x = np.asarray(x, float)
    small = np.abs(x) < 1e-3
    series = x * x * (0.5 - x * (1 / 3 - x * (0.25 - x * (0.2 - x / 6))))
    with np.errstate(invalid="ignore", divide="ignore"):
        direct = x - np.log1p(np.where(small, 0.0, x))
    return np.where(small, series, direct)


@dataclass(frozen=True)
class SchmiedlSeifertBound:
    """Optimal stiffness change V = lambda x^2 / 2, lambda_i -> lambda_f in time T (kT = 1).

    Chains start in equilibrium, <x^2>(t) = (1 + c mu t)^2 / lambda_i on the optimal protocol
    (c per unit of mu t, as in theory.md section 6 with t -> mu t).
    """

    stiffness_initial: float        # lambda_i
    stiffness_final: float          # lambda_f
    duration: float                 # T
    mobility: float                 # mu
    c: float                        # (lambda_i - lambda_f) / (sqrt(1 + 2 lambda_i u + lambda_i lambda_f u^2) + 1 + lambda_f u), u = mu T
    work: float                     # W* = c^2 u / lambda_i + lambda_f (1 + c u)^2 / (2 lambda_i) - 1/2 - ln(1 + c u)
    delta_free_energy: float        # Delta F = ln(lambda_f / lambda_i) / 2
    excess_work: float              # W* - Delta F
    stiffness_after_start: float    # lambda*(0+) = lambda_i - c
    stiffness_before_end: float     # lambda*(T-) = (lambda_i - c (1 + c u)) / (1 + c u)^2
    jump_start: float               # lambda*(0+) - lambda_i = -c
    jump_end: float                 # lambda_f - lambda*(T-)
    variance_end: float             # <x^2>(T) = (1 + c u)^2 / lambda_i
    kl_end: float                   # KL(rho_T || p_lambda_f)
    entropy_production: float       # lambda_i^-1 c^2 mu T

    def stiffness(self, t):
        """lambda*(t) = (lambda_i - c (1 + c mu t)) / (1 + c mu t)^2 on 0 < t < T (the interior limits at 0 and T)."""
        g = 1.0 + self.c * self.mobility * np.asarray(t, float)
        return (self.stiffness_initial - self.c * g) / g**2

    def chain_variance(self, t):
        """<x^2>(t) = (1 + c mu t)^2 / lambda_i."""
        return (1.0 + self.c * self.mobility * np.asarray(t, float)) ** 2 / self.stiffness_initial

    def to_dict(self) -> dict:
        return asdict(self)


def schmiedl_seifert(stiffness_initial: float, stiffness_final: float, duration: float,
                     mobility: float = 1.0) -> SchmiedlSeifertBound:
    """W_ex* = W* - ln(lambda_f / lambda_i) / 2: least excess work of changing a trap's stiffness in time T.

    Schmiedl & Seifert, PRL 98, 108301 (2007); c in the cancellation-free form
    c = (lambda_i - lambda_f) / (sqrt(1 + 2 lambda_i u + lambda_i lambda_f u^2) + 1 + lambda_f u),
    u = mu T, equal to theory.md's [-1 - lambda_f u + sqrt(...)] / (2 u + lambda_f u^2).
    """
    li = require_positive("stiffness_initial", stiffness_initial)
    lf = require_positive("stiffness_final", stiffness_final)
    T = require_positive("duration", duration)
    mu = require_positive("mobility", mobility)
    try:
        with np.errstate(over="raise", divide="raise", invalid="raise", under="ignore"):
            u = mu * T
            c = (li - lf) / (np.sqrt(1.0 + 2.0 * li * u + li * lf * u * u) + 1.0 + lf * u)
            g = 1.0 + c * u                  # sigma_T / sigma_0 > 0
            r_minus_1 = lf * g * g / li - 1.0
            kl_end = 0.5 * float(_x_minus_log1p(r_minus_1))
            ep = c * c * u / li
            dfe = 0.5 * np.log(lf / li)
            lam_end = (li - c * g) / g**2
            b = SchmiedlSeifertBound(
                stiffness_initial=li, stiffness_final=lf, duration=T, mobility=mu, c=float(c),
                work=float(ep + kl_end + dfe), delta_free_energy=float(dfe), excess_work=float(ep + kl_end),
                stiffness_after_start=float(li - c), stiffness_before_end=float(lam_end),
                jump_start=float(-c), jump_end=float(lf - lam_end), variance_end=float(g * g / li),
                kl_end=kl_end, entropy_production=float(ep))
    except FloatingPointError:
        b = None
    if b is None or not all(np.isfinite(v) for v in asdict(b).values()):
        raise InputError("the Schmiedl-Seifert bound overflows for these values (stiffnesses, duration, "
                         "mobility are too extreme for float64)")
    return b


@dataclass(frozen=True)
class GaussianPath:
    """The optimal protocol at times t: chain moments (m, v) and model parameters (a, s), shape t.shape + (d,)."""

    t: np.ndarray
    chain_mean: np.ndarray
    chain_variance: np.ndarray
    centre: np.ndarray
    variance: np.ndarray


@dataclass(frozen=True)
class GaussianBound:
    """Least excess work of moving E = (x - a)^2 / (2 s) from equilibrium at (a0, s0) to the data
    Gaussian (xbar, v_d) in time T (theory.md section 6); vectors are lists, one entry per dimension
    (the dimensions are independent and their parts add up).

    W_ex* = min_{m, v} [(m - a0)^2 + (sqrt v - sqrt s0)^2] / (mu T) + KL(N(m, v) || N(xbar, v_d))
          = mean_part + variance_part = entropy_production + kl_end
    (the initial jump costs nothing beyond what these count: W_ex = KL_T + entropy production).
    """

    excess_work: float          # mean_part + variance_part
    mean_part: float            # sum Delta^2 / (mu T + 2 v_d), Delta = xbar - a0
    variance_part: float        # sum (y - sqrt s0)^2 / (mu T) + (y^2/v_d - 1 - ln(y^2/v_d)) / 2, y = sqrt(v_T)
    work: float                 # excess_work + delta_free_energy
    delta_free_energy: float    # sum -ln(v_d / s0) / 2
    chain_mean_end: list        # m_T = a0 + Delta mu T / (mu T + 2 v_d)
    chain_variance_end: list    # v_T = y^2, y = [v_d sqrt s0 + sqrt(v_d^2 s0 + mu T v_d (2 v_d + mu T))] / (2 v_d + mu T)
    theta_after_start: list     # [a(0+), s(0+)] per dimension
    theta_before_end: list      # [a(T-), s(T-)] per dimension
    impulse_start: list         # [a(0+) - a0, s(0+) - s0]: the parameter jump at t = 0
    impulse_end: list           # [xbar - a(T-), v_d - s(T-)]: the parameter jump at t = T
    kl_end: float               # KL(N(m_T, v_T) || N(xbar, v_d))
    entropy_production: float   # sum [(m_T - a0)^2 + (y - sqrt s0)^2] / (mu T)
    mean0: list
    variance0: list
    data_mean: list
    data_variance: list
    mobility: float
    duration: float

    def path(self, t) -> GaussianPath:
        """Chain mean and standard deviation linear in t; a = m + s (dm/dt) / mu, s = 2 mu v / (2 mu - dv/dt).

        These follow from the moment equations dm/dt = mu (a - m) / s, dv/dt = 2 mu (1 - v / s).
        Valid on 0 < t < T; at t = 0 and t = T it gives the interior limits (after / before the jumps).
        """
        tt = np.asarray(t, float)
        slack = 1e-12 * self.duration   # k * (T / n) may exceed T by one rounding unit
        if np.any(~np.isfinite(tt)) or np.any(tt < -slack) or np.any(tt > self.duration + slack):
            raise InputError(f"t must lie in [0, duration = {self.duration}]")
        tt = np.clip(tt, 0.0, self.duration)
        mu, T = self.mobility, self.duration
        a0, s0 = np.asarray(self.mean0), np.asarray(self.variance0)
        mT, vT = np.asarray(self.chain_mean_end), np.asarray(self.chain_variance_end)
        sig0, sigT = np.sqrt(s0), np.sqrt(vT)
        dm, dsig = (mT - a0) / T, (sigT - sig0) / T
        x = tt[..., None]
        m, sig = a0 + dm * x, sig0 + dsig * x
        v = sig * sig
        s = mu * v / (mu - sig * dsig)       # 2 mu v / (2 mu - dv/dt), dv/dt = 2 sigma dsigma/dt
        return GaussianPath(t=tt, chain_mean=m, chain_variance=v, centre=m + s * dm / mu, variance=s)

    def to_dict(self) -> dict:
        return asdict(self)


def _gaussian_arg(name, value, positive: bool) -> np.ndarray:
    """A number or vector of finite numbers (positive ones if ``positive``) as a 1-D float array."""
    try:
        arr = np.atleast_1d(np.asarray(value, dtype=float))
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number or a vector of numbers, got {value!r}") from None
    if arr.ndim != 1 or arr.size == 0:
        raise InputError(f"{name} must be a number or a vector of numbers, got {value!r}")
    shown = arr.tolist() if arr.size > 1 else float(arr[0])
    if positive and not (np.all(np.isfinite(arr)) and np.all(arr > 0)):
        raise InputError(f"{name} must be positive and finite, got {shown}")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name} must be finite, got {shown}")
    return arr


def gaussian(mean0, variance0, data_mean, data_variance, mobility: float, duration: float) -> GaussianBound:
    """W_ex* = sum Delta^2 / (mu T + 2 v_d) + [Schmiedl-Seifert stiffness change 1/s0 -> 1/v_d]: the least
    excess work (kT) of learning the data Gaussian's mean and variance from equilibrium chains in time T.

    Arguments are numbers or equal-length vectors (a diagonal Gaussian; numbers broadcast).
    """
    args = [_gaussian_arg("mean0", mean0, False), _gaussian_arg("variance0", variance0, True),
            _gaussian_arg("data_mean", data_mean, False), _gaussian_arg("data_variance", data_variance, True)]
    mu = require_positive("mobility", mobility)
    T = require_positive("duration", duration)
    try:
        a0, s0, xbar, vd = np.broadcast_arrays(*args)
    except ValueError:
        raise InputError("mean0, variance0, data_mean and data_variance must have the same length (or be "
                         f"numbers), got lengths {[a.size for a in args]}") from None
    try:
        with np.errstate(over="raise", divide="raise", invalid="raise", under="ignore"):
            b = _gaussian(a0, s0, xbar, vd, mu, T)
    except (FloatingPointError, ZeroDivisionError, OverflowError):
        b = None
    if b is None or not all(np.all(np.isfinite(v)) for v in asdict(b).values()):
        raise InputError("the Gaussian bound overflows for these values (means, variances, mobility, duration "
                         "are too extreme for float64)")
    return b


def _gaussian(a0, s0, xbar, vd, mu, T) -> GaussianBound:
    u = mu * T
    delta = xbar - a0
    sig0 = np.sqrt(s0)
    q = np.sqrt(vd * vd * s0 + u * vd * (2.0 * vd + u))
    y = (vd * sig0 + q) / (2.0 * vd + u)
    dy = u * (vd - s0) / (q + sig0 * (vd + u))       # y - sqrt(s0) without cancellation
    r_minus_1 = -2.0 * y * dy / u                   # y^2 / v_d - 1, from the stationarity condition
    mT = a0 + delta * u / (u + 2.0 * vd)
    mean_part = float(np.sum(delta**2 / (u + 2.0 * vd)))
    var_ep = dy**2 / u
    var_kl = 0.5 * _x_minus_log1p(r_minus_1)
    variance_part = float(np.sum(var_ep + var_kl))
    dm, dsig = (mT - a0) / T, dy / T
    s_start = mu * s0 / (mu - sig0 * dsig)
    s_end = mu * y * y / (mu - y * dsig)
    a_start, a_end = a0 + s_start * dm / mu, mT + s_end * dm / mu
    dfe = float(np.sum(-0.5 * np.log(vd / s0)))
    lst = lambda *cols: np.stack(cols, axis=-1).tolist()  # noqa: E731
    return GaussianBound(
        excess_work=mean_part + variance_part, mean_part=mean_part, variance_part=variance_part,
        work=mean_part + variance_part + dfe, delta_free_energy=dfe,
        chain_mean_end=mT.tolist(), chain_variance_end=(y * y).tolist(),
        theta_after_start=lst(a_start, s_start), theta_before_end=lst(a_end, s_end),
        impulse_start=lst(a_start - a0, s_start - s0), impulse_end=lst(xbar - a_end, vd - s_end),
        kl_end=float(np.sum((xbar - mT) ** 2 / (2.0 * vd) + var_kl)),
        entropy_production=float(np.sum(((mT - a0) ** 2 + dy**2) / u)),
        mean0=a0.tolist(), variance0=s0.tolist(), data_mean=xbar.tolist(), data_variance=vd.tolist(),
        mobility=mu, duration=T,
    )
