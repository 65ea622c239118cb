"""``pareto_front`` / ``dissipation_ratio``: least W_ex (kT) against final true loss (closed forms for the
trap and the learnable-variance Gaussian, numerical for 1-D) and each schedule's W_ex relative to it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ...estimators import bounds as _bounds
from ...errors import InputError, require_positive, require_positive_int
from .common import UnreachableLossError
from .discrete import discrete_harmonic_excess_work
from .numerical import Optimal1D, optimise_1d


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
    backend: str = "fokker_planck"

    def __post_init__(self):
        require_positive("duration", self.duration)
        require_positive("mobility", self.mobility)
        require_positive_int("n_steps", self.n_steps)

    def optimise(self, target_loss=None, init=None, **kwargs) -> Optimal1D:
        return optimise_1d(self.energy, self.data, self.theta0, duration=self.duration, mobility=self.mobility,
                           n_steps=self.n_steps, target_loss=target_loss, grid=self.grid,
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
    """W_ex / W_ex*(L_T): a schedule's excess work over the front's at its own final true loss (inf for a
    schedule that dissipates while ending no better than it started). >= 1 for every schedule of the front's
    own setting (exact fronts: any schedule; ``numerical-1d``: any schedule of its layout on its model, to the
    optimiser's tolerance, which the property tests check against every family the library builds).

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

