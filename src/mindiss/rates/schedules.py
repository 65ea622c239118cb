"""Learning-rate schedules eta(t) = impulse_start delta(t) + rate(t) + impulse_end delta(t - T).

A schedule is a callable of time (the interior rate, per unit time) plus two impulses (the
integrated learning rate of a frozen-chain update at t = 0 and at t = T). ``discretise(n)``
gives the canonical discretisation of theory.md section 3: impulse, n midpoint-rule interior
updates each followed by a chain move of length T / n, impulse: n + 2 updates.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from ..errors import InputError, require_positive, require_positive_int


@dataclass(frozen=True)
class DiscreteSchedule:
    """The n + 2 updates of a discretised schedule, one entry per update.

    ``lr[k]`` is the learning rate of update k, ``dt[k]`` the length of the chain move after it
    (0 for impulses), ``t[k]`` the time at which update k happens.
    """

    lr: np.ndarray
    dt: np.ndarray
    t: np.ndarray
    is_impulse: np.ndarray
    duration: float

    @property
    def n_updates(self) -> int:
        return len(self.lr)


@dataclass(frozen=True)
class Schedule:
    """eta(t): interior rate ``rate(t)`` (vectorised over numpy arrays) and two impulses."""

    name: str
    duration: float
    rate: Callable[[np.ndarray], np.ndarray]
    impulse_start: float = 0.0
    impulse_end: float = 0.0
    params: dict = field(default_factory=dict)
    #: Times inside (0, T) where rate(t) is discontinuous (for adaptive ODE references).
    breakpoints: tuple = ()
    #: Learning-rate matrix P_k applied to g_hat (``mindiss.preconditioners``); None = scalar lr.
    preconditioner: object = None
    #: For schedules that depend on a relaxation time tau estimated by ``train`` (tau = "auto" or
    #: "online"): tau -> the schedule at that tau.
    at_tau: Callable | None = field(default=None, repr=False, compare=False)

    def __call__(self, t):
        return self.rate(np.asarray(t, dtype=float))

    def discretise(self, n_steps: int) -> DiscreteSchedule:
        """Impulse (lr = impulse_start), n updates with lr_k = rate(t_k + dt/2) dt, impulse."""
        n = require_positive_int("n_steps", n_steps)
        if isinstance(self.params.get("tau"), str):
            raise InputError(f"schedule {self.name!r} has tau={self.params['tau']!r}: train() estimates tau from "
                             "the chains; call .at_tau(value) for a fixed-tau schedule")
        dt = self.duration / n
        t_start = np.arange(n) * dt
        interior = np.asarray(self.rate(t_start + 0.5 * dt), dtype=float) * dt
        lr = np.concatenate([[self.impulse_start], interior, [self.impulse_end]])
        if not np.all(np.isfinite(lr)) or np.any(lr < 0):
            raise InputError(f"schedule {self.name!r} gives a negative or non-finite learning rate")
        return DiscreteSchedule(
            lr=lr,
            dt=np.concatenate([[0.0], np.full(n, dt), [0.0]]),
            t=np.concatenate([[0.0], t_start, [self.duration]]),
            is_impulse=np.concatenate([[True], np.zeros(n, bool), [True]]),
            duration=self.duration,
        )

    def scaled(self, interior: float = 1.0, impulse_start: float | None = None,
               impulse_end: float | None = None, name: str | None = None) -> "Schedule":
        """The same schedule with the interior rate scaled and impulses optionally replaced."""
        rate = self.rate
        return replace(
            self,
            name=name or f"{self.name}*{interior:g}",
            rate=lambda t: interior * rate(t),
            impulse_start=self.impulse_start if impulse_start is None else float(impulse_start),
            impulse_end=self.impulse_end if impulse_end is None else float(impulse_end),
            params={**self.params, "interior_scale": interior},
        )


def _relaxation(variance, mobility, duration):
    s = require_positive("variance", variance)
    mu = require_positive("mobility", mobility)
    T = require_positive("duration", duration)
    return s, mu, T, s / mu


def optimal_harmonic(variance: float, mobility: float, duration: float) -> Schedule:
    """eta*(t) = s [tau/(T + 2 tau) delta(t) + 1/(T - t + 2 tau) + 1/2 delta(t - T)], tau = s/mu.

    Reaches the Schmiedl-Seifert bound k |xbar - theta_0|^2 / (2 + T/tau) from equilibrium
    chains, for every target and start (it depends on neither).
    """
    s, mu, T, tau = _relaxation(variance, mobility, duration)
    return Schedule(
        name="optimal",
        duration=T,
        rate=lambda t: s / (T - t + 2.0 * tau),
        impulse_start=s * tau / (T + 2.0 * tau),
        impulse_end=0.5 * s,
        params={"variance": s, "mobility": mu},
    )


def optimal_harmonic_continuous(variance: float, mobility: float, duration: float,
                                smoothing: float = 0.0) -> Schedule:
    """The optimal schedule with bounded rates.

    ``smoothing = 0``: the interior rate s/(T - t + 2 tau) alone, no impulses (it neither lands
    on the target nor reaches the bound). ``smoothing = w > 0``: each impulse spread as a box of
    width w at its end of [0, T] (rate impulse / w on top of the interior rate); W_ex -> W* and
    theta_T -> xbar as w -> 0.
    """
    opt = optimal_harmonic(variance, mobility, duration)
    T = opt.duration
    w = float(smoothing)
    if w < 0 or w > T / 2:
        raise InputError(f"smoothing must lie in [0, duration/2], got {smoothing!r}")
    if w == 0:
        return replace(opt, name="continuous", impulse_start=0.0, impulse_end=0.0)
    c0, cT, interior = opt.impulse_start, opt.impulse_end, opt.rate

    def rate(t):
        t = np.asarray(t, dtype=float)
        return interior(t) + np.where(t < w, c0 / w, 0.0) + np.where(t > T - w, cT / w, 0.0)

    return Schedule(name=f"smoothed(w={w:g})", duration=T, rate=rate,
                    params={**opt.params, "smoothing": w}, breakpoints=(w, T - w))


def optimal_harmonic_prepared(variance: float, mobility: float, duration: float) -> Schedule:
    """Continuous optimum for chains prepared out of equilibrium with the right lag.

    eta(t) = s / (T - t + tau), no impulses. With chains prepared at mean
    m_0 = theta_0 - tau (xbar - theta_0) / T (see ``prepared_chain_mean``) theta and m move at
    constant speed (xbar - theta_0)/T with constant lag, theta_T = xbar exactly and
    W_ex = |xbar - theta_0|^2 / (mu T). The preparation point needs the target xbar.
    """
    s, mu, T, tau = _relaxation(variance, mobility, duration)
    return Schedule(name="prepared", duration=T, rate=lambda t: s / (T - t + tau),
                    params={"variance": s, "mobility": mu})


def prepared_chain_mean(theta0, target, variance, mobility, duration):
    """m_0 = theta_0 - tau (xbar - theta_0) / T: the lagged chain mean the prepared optimum needs."""
    s, mu, T, tau = _relaxation(variance, mobility, duration)
    theta0, target = np.asarray(theta0, float), np.asarray(target, float)
    return theta0 - tau * (target - theta0) / T


# ---------------------------------------------------------------- learning-rate matrices

def alpha(duration: float, tau: float) -> Schedule:
    """alpha(t) = tau/(T + 2 tau) delta(t) + 1/(T - t + 2 tau) + 1/2 delta(t - T): the scalar
    part of the minimal-dissipation learning-rate matrix eta = alpha(t) I^-1 (theory.md section
    4); with I = 1/s and tau = s/mu it is ``optimal_harmonic`` divided by s."""
    T = require_positive("duration", duration)
    tau = require_positive("tau", tau)
    return Schedule(name="alpha", duration=T, rate=lambda t: 1.0 / (T - np.asarray(t, float) + 2.0 * tau),
                    impulse_start=tau / (T + 2.0 * tau), impulse_end=0.5, params={"tau": tau})


def _matrix_schedule(name, duration, tau, preconditioner, tau_refresh) -> Schedule:
    T = require_positive("duration", duration)
    if isinstance(tau, str):
        if tau not in ("auto", "online"):
            raise InputError(f"tau must be a positive number, 'auto' or 'online', got {tau!r}")
        base = Schedule(name=name, duration=T, rate=lambda t: np.full_like(np.asarray(t, float), np.nan),
                        impulse_start=math.nan, impulse_end=0.5, preconditioner=preconditioner,
                        params={"tau": tau, "tau_refresh": int(tau_refresh)})
    else:
        base = replace(alpha(T, tau), name=name, preconditioner=preconditioner)
    return replace(base, at_tau=lambda value: replace(alpha(T, value), name=name, preconditioner=preconditioner))


def natural_gradient(duration: float, *, tau="auto", fisher="full", tau_refresh: int = 0, alpha=None,
                     **fisher_kwargs) -> Schedule:
    """eta(t) = alpha(t) I(theta)^-1: the paper's minimal-dissipation learning-rate matrix, a
    natural-gradient flow on the MLE objective with the rate alpha(t) (see ``alpha``).

    ``fisher``: "full", "diag", "lowrank", "exact" or a ``preconditioners.Fisher``; it is estimated
    from the persistent chains at every update. ``tau``: a number, "auto" (tau = tr(I^-1 zeta)/P,
    exact where known, else from a pilot run on a clone of the chains at the start) or "online"
    (re-estimated every ``tau_refresh`` updates; the remaining interior rates follow it).
    ``alpha``: another scalar Schedule to use instead of the paper's alpha(t) (then tau is unused),
    e.g. ``constant(0.5, T)`` for plain natural-gradient descent.
    """
    from .preconditioners import Fisher, Preconditioner

    pre = fisher if isinstance(fisher, Preconditioner) else Fisher(fisher, **fisher_kwargs)
    if alpha is not None:
        if not isinstance(alpha, Schedule) or not math.isclose(alpha.duration, float(duration), rel_tol=1e-12):
            raise InputError("alpha must be a Schedule with the same duration")
        return replace(alpha, name=f"natural-gradient({alpha.name}, {pre.name})", preconditioner=pre)
    if tau == "online" and tau_refresh < 1:
        raise InputError("tau='online' needs tau_refresh >= 1 (updates between estimates)")
    return _matrix_schedule(f"natural-gradient({pre.name})", duration, tau, pre, tau_refresh)


def friction(duration: float, *, tau="auto", estimate: str = "pilot", refresh: int = 0, **kwargs) -> Schedule:
    """eta(t) = alpha(t) tau zeta(theta)^-1: friction-tensor preconditioning (the Sivak-Crooks
    metric; equal to ``natural_gradient`` for the harmonic trap, where zeta = I tau)."""
    from .preconditioners import Friction

    pre = Friction(estimate, refresh=refresh, **kwargs)
    return _matrix_schedule(f"friction({estimate})", duration, tau, pre, 0)


def preconditioned(schedule: Schedule, preconditioner) -> Schedule:
    """Any scalar schedule with a learning-rate matrix P_k (e.g. SGD schedules with a Fisher)."""
    from .preconditioners import make_preconditioner

    return replace(schedule, preconditioner=make_preconditioner(preconditioner),
                   name=f"{schedule.name}+{getattr(make_preconditioner(preconditioner), 'name', 'none')}")


# ---------------------------------------------------------------- baselines (scale = lr per time)

def constant(scale: float, duration: float) -> Schedule:
    """eta(t) = scale."""
    a, T = require_positive("scale", scale), require_positive("duration", duration)
    return Schedule("constant", T, lambda t: np.full_like(np.asarray(t, float), a), params={"scale": a})


def linear_decay(scale: float, duration: float) -> Schedule:
    """eta(t) = scale (1 - t/T)."""
    a, T = require_positive("scale", scale), require_positive("duration", duration)
    return Schedule("linear", T, lambda t: a * (1.0 - np.asarray(t, float) / T), params={"scale": a})


def cosine(scale: float, duration: float) -> Schedule:
    """eta(t) = scale (1 + cos(pi t / T)) / 2."""
    a, T = require_positive("scale", scale), require_positive("duration", duration)
    return Schedule("cosine", T, lambda t: 0.5 * a * (1.0 + np.cos(np.pi * np.asarray(t, float) / T)),
                    params={"scale": a})


def exponential(scale: float, duration: float, decay: float = 3.0) -> Schedule:
    """eta(t) = scale exp(-decay t / T)."""
    a, T = require_positive("scale", scale), require_positive("duration", duration)
    k = require_positive("decay", decay)
    return Schedule("exponential", T, lambda t: a * np.exp(-k * np.asarray(t, float) / T),
                    params={"scale": a, "decay": k})


def step(scale: float, duration: float, n_drops: int = 2, factor: float = 0.3) -> Schedule:
    """eta(t) = scale factor^floor((n_drops + 1) t / T): piecewise constant, n_drops drops."""
    a, T = require_positive("scale", scale), require_positive("duration", duration)
    n = require_positive_int("n_drops", n_drops)
    f = require_positive("factor", factor)
    edges = tuple(T * (i + 1) / (n + 1) for i in range(n))
    return Schedule("step", T,
                    lambda t: a * f ** np.floor((n + 1) * np.asarray(t, float) / T).clip(0, n),
                    params={"scale": a, "n_drops": n, "factor": f}, breakpoints=edges)


BASELINES = {"constant": constant, "linear": linear_decay, "cosine": cosine,
             "exponential": exponential, "step": step}


def harmonic_final_error(schedule: Schedule, variance: float, mobility: float, n_steps: int,
                         signed: bool = False) -> float:
    """(xbar - theta_T) / (xbar - theta_0) on the harmonic trap (exact, N -> infinity); its absolute
    value unless ``signed`` (negative: the run overshot the target).

    The learning dynamics are linear and homogeneous in (theta - xbar, m - xbar), so the ratio
    depends on neither target nor start.
    """
    from ..estimators.references import harmonic_discrete_path

    with np.errstate(over="ignore", invalid="ignore"):
        path = harmonic_discrete_path(schedule.discretise(n_steps), variance, mobility, 0.0, 1.0)
    r = 1.0 - float(path["theta"][-1, 0])
    return r if signed else abs(r)


def tune_scale(family: str | Callable[..., Schedule], final_error: float, *, variance: float,
               mobility: float, duration: float, n_steps: int, bracket=(1e-6, 1e6),
               **kwargs) -> Schedule:
    """The baseline of the given family whose scale makes |theta_T - xbar| / |theta_0 - xbar| equal
    ``final_error`` (harmonic trap), so schedules can be compared at equal final error.

    Takes the smallest scale at which the signed remaining fraction (xbar - theta_T)/(xbar - theta_0)
    falls through ``final_error`` (a root of a continuous function, bracketed on a log grid and
    refined by Brent's method). Where even that scale overshoots elsewhere it is still the
    undershooting solution, approached from below.
    """
    from scipy.optimize import brentq

    make = BASELINES[family] if isinstance(family, str) else family
    if not 0.0 < final_error < 1.0:
        raise InputError(f"final_error must lie in (0, 1), got {final_error!r}")

    def gap(log_scale):
        sched = make(math.exp(log_scale), duration, **kwargs)
        r = harmonic_final_error(sched, variance, mobility, n_steps, signed=True)
        return r - final_error if math.isfinite(r) else -math.inf

    grid = np.linspace(math.log(bracket[0]), math.log(bracket[1]), 241)
    prev = gap(grid[0])
    for lo, hi in zip(grid[:-1], grid[1:]):
        cur = gap(hi)
        if prev > 0 >= cur:
            if not math.isfinite(cur):
                break
            return make(math.exp(brentq(gap, lo, hi, xtol=1e-14, rtol=1e-13)), duration, **kwargs)
        prev = cur
    raise InputError(f"no scale in {bracket} brings the {getattr(make, '__name__', family)} schedule "
                     f"to final error {final_error}")
