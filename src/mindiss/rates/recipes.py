"""Named training recipes: (schedule, preconditioner) pairs for ``mindiss.train``.

Every recipe runs through the one update loop, theta_new = theta - lr_k P_k g_hat, with the
persistent chains of fixed identity that ``train`` keeps; lr_k = eta(t_k) dt (impulses: their
integrated size). ``scale`` is the recipe's one tunable number:

=================  ==========================================  =====================================
name               eta(t) per unit time                        P_k (learning-rate matrix)
=================  ==========================================  =====================================
sgd-constant       scale                                       identity
sgd-cosine         scale (1 + cos(pi t / T)) / 2               identity
sgd-linear         scale (1 - t / T)                           identity
adam               scale                                       Adam's step direction (``preconditioners.Adam``)
natural-diag       scale alpha(t)                              (diag I + lambda)^-1, I from chains
natural-lowrank    scale alpha(t)                              (I_lowrank + lambda)^-1 by CG
friction-diag      scale alpha(t)                              tau (diag zeta + lambda)^-1
=================  ==========================================  =====================================

alpha(t) = tau/(T + 2 tau) delta(t) + 1/(T - t + 2 tau) + 1/2 delta(t - T) is the paper's
minimal-dissipation rate (``schedules.alpha``); scale = 1 is the design itself, other scales
multiply the interior and both impulses. I = Cov_chains[d_theta E] is the Fisher information of
the model family, estimated from the chains at every update (moving average ``fisher_ema``);
zeta_ii = I_ii tau_i is the diagonal friction tensor with tau_i the integrated autocorrelation
time of d_theta_i E along a pilot run of a clone of the chains (``diagonal_relaxation``), and
tau = mean_i tau_i (= tr(I^-1 zeta) / P for diagonal matrices).

For networks with P ~ 10^3 parameters ``Fisher("full")`` forms a P x P matrix per update: use
these diagonal / low-rank recipes. ``Friction`` and ``tau="auto"`` switch to their diagonal
estimates above ``max_dense_params`` parameters, but their pilot still holds the whole d_theta E
series (pilot steps x pilot chains x P): pass ``tau`` from ``estimate_tau`` or lower ``pilot_chains``.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from . import schedules as S
from ..errors import InputError, require_positive, require_positive_int
from .preconditioners import Adam, Fisher, Preconditioner
from .relaxation import diagonal_relaxation, estimate_tau  # the one estimator, re-exported for the recipes

RECIPES = ("sgd-constant", "sgd-cosine", "sgd-linear", "adam", "natural-diag", "natural-lowrank", "friction-diag")
#: recipes whose schedule is alpha(t) and that need a relaxation time tau
NEEDS_TAU = ("natural-diag", "natural-lowrank", "friction-diag")


class Recipe(NamedTuple):
    """A (schedule, preconditioner) pair: ``train(..., schedule=r.schedule, preconditioner=r.preconditioner)``."""

    schedule: S.Schedule
    preconditioner: Preconditioner | None


class DiagonalFriction(Preconditioner):
    """P = tau (diag zeta + lambda)^-1 with zeta_ii = I_ii tau_i: the friction-tensor learning-rate
    matrix in diagonal form (tau = mean_i tau_i, so P = (diag I)^-1 when all tau_i are equal).

    I_ii comes from the chains at every update (bias-corrected moving average ``ema``); the
    relaxation times tau_i from ``diagonal_relaxation`` at the start and every ``refresh`` updates
    (0: only at the start), each on a clone of the chains (its cost is part of the run's time);
    ``relaxation``: a ``diagonal_relaxation`` result at theta_0 to use instead of the first pilot.
    ``relative_damping`` lambda / mean(zeta_ii).
    """

    name = "friction-diag"
    needs = "samples"

    def __init__(self, *, refresh: int = 0, rows: int = 64, pilot_steps: int = 100, ema: float = 0.9,
                 relative_damping: float = 1e-3, pilot_dt: float | None = None, relaxation: dict | None = None):
        if not 0.0 <= ema < 1.0:
            raise InputError(f"ema must lie in [0, 1), got {ema!r}")
        self.refresh = int(refresh)
        self.rows = require_positive_int("rows", rows)
        self.pilot_steps = require_positive_int("pilot_steps", pilot_steps)
        self.ema, self.relative_damping = float(ema), float(relative_damping)
        self.pilot_dt = pilot_dt
        self.tau_i = None if relaxation is None else relaxation["tau"].clone()
        self.tau = None if relaxation is None else float(relaxation["tau_mean"])
        self._given = relaxation is not None
        self._acc = None
        self.fisher = None
        self.n_seen = 0
        self.updates = 0
        self.n_pilots = 0
        self.damping = 0.0

    def _pilot(self, ctx) -> None:
        if not ctx.state.particles:
            raise InputError("friction-diag needs simulated chains (backend 'particles')")
        x = ctx.state.x
        dt = float(self.pilot_dt or ctx.dt)
        if not dt > 0:
            raise InputError("friction-diag needs a positive chain step for its pilot run")
        est = diagonal_relaxation(ctx.energy, ctx.theta, x, ctx.sampler, dt=dt, mobility=ctx.mobility,
                                  gen=ctx.gen, rows=self.rows, n_steps=self.pilot_steps)
        self.tau_i, self.tau = est["tau"], est["tau_mean"]
        self.n_pilots += 1

    def start(self, ctx) -> None:
        if not self._given:
            self._pilot(ctx)

    def observe(self, stats, ctx) -> None:
        self.updates += 1
        if self.refresh and self.updates % self.refresh == 0:
            self._pilot(ctx)
        g = stats.samples
        new = g.var(0) if g.shape[0] > 1 else torch.zeros_like(stats.mean)
        self.n_seen += 1
        self._acc = (1.0 - self.ema) * new if self._acc is None else self.ema * self._acc + (1.0 - self.ema) * new
        self.fisher = self._acc / (1.0 - self.ema ** self.n_seen)

    def apply(self, g):
        zeta = self.fisher * self.tau_i.to(g.device)
        self.damping = self.relative_damping * float(zeta.mean())
        return self.tau * g / (zeta + self.damping)

    def report(self) -> dict:
        return {"name": self.name, "tau": self.tau, "tau_min": float(self.tau_i.min()),
                "tau_max": float(self.tau_i.max()), "n_pilots": self.n_pilots, "damping": self.damping,
                "ema": self.ema}


# ---------------------------------------------------------------------------- recipes

def recipe(name: str, *, scale: float, duration: float, tau: float | None = None, fisher_ema: float = 0.9,
           relative_damping: float | None = None, rank: int = 128, friction_refresh: int = 0,
           relaxation: dict | None = None) -> Recipe:
    """The named recipe (see the module table) over training time ``duration`` = n_steps x dt.

    ``scale``: SGD / Adam: the rate per unit time at t = 0 (per-update lr = scale x dt); natural /
    friction: the factor on alpha(t) (1 = the paper's design). ``tau``: the relaxation time of
    alpha(t) (natural-*, friction-diag; e.g. from ``estimate_tau``). ``fisher_ema``,
    ``relative_damping``, ``rank``: the Fisher estimate (damping lambda = relative_damping x mean diagonal;
    default 1e-3 for the diagonal recipes and 1 for the low-rank one, whose inverse multiplies every
    direction outside the span of its <= 2 x rank sampled gradients by 1 / lambda: a small lambda
    there turns the data term's unsampled components into huge steps); ``friction_refresh``: updates between pilots;
    ``relaxation``: a ``diagonal_relaxation`` result at theta_0 (friction-diag: skips its first pilot;
    with tau None, tau = its ``tau_mean``).
    """
    if name not in RECIPES:
        raise InputError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    scale, T = require_positive("scale", scale), require_positive("duration", duration)
    if name == "sgd-constant":
        return Recipe(S.constant(scale, T), None)
    if name == "sgd-cosine":
        return Recipe(S.cosine(scale, T), None)
    if name == "sgd-linear":
        return Recipe(S.linear_decay(scale, T), None)
    if name == "adam":
        return Recipe(S.constant(scale, T), Adam())
    if tau is None and relaxation is not None:
        tau = relaxation["tau_mean"]
    if tau is None:
        raise InputError(f"recipe {name!r} needs tau (the relaxation time of alpha(t)); see recipes.estimate_tau")
    tau = require_positive("tau", tau)
    if relative_damping is None:
        relative_damping = 1.0 if name == "natural-lowrank" else 1e-3
    a = S.alpha(T, tau)
    sched = a.scaled(scale, scale * a.impulse_start, scale * a.impulse_end, name=f"{name}*{scale:g}")
    if name == "natural-diag":
        pre = Fisher("diag", ema=fisher_ema, relative_damping=relative_damping)
    elif name == "natural-lowrank":
        pre = Fisher("lowrank", ema=fisher_ema, relative_damping=relative_damping, rank=rank, max_blocks=2)
    else:
        pre = DiagonalFriction(refresh=friction_refresh, ema=fisher_ema, relative_damping=relative_damping,
                               relaxation=relaxation)
    return Recipe(sched, pre)


def describe(name: str) -> str:
    """One line: the recipe's rate and learning-rate matrix."""
    return {"sgd-constant": "SGD, eta = scale", "sgd-cosine": "SGD, eta = scale (1 + cos pi t/T)/2",
            "sgd-linear": "SGD, eta = scale (1 - t/T)", "adam": "Adam direction, eta = scale",
            "natural-diag": "scale alpha(t) (diag I)^-1", "natural-lowrank": "scale alpha(t) (low-rank I)^-1",
            "friction-diag": "scale alpha(t) tau (diag zeta)^-1"}[name]

