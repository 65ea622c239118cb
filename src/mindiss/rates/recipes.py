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
natural-kfac       scale alpha(t)                              (I_kfac + lambda)^-1 (``kfac.KFACFisher``)
friction-diag      scale alpha(t)                              tau (diag zeta + lambda)^-1
=================  ==========================================  =====================================

alpha(t) = tau/(T + 2 tau) delta(t) + 1/(T - t + 2 tau) + 1/2 delta(t - T) is the paper's
minimal-dissipation rate (``schedules.alpha``); scale = 1 is the design itself, other scales
multiply the interior and both impulses. I = Cov_chains[d_theta E] is the Fisher information of
the model family, estimated from the chains at every update (moving average ``fisher_ema``);
zeta_ii = I_ii tau_i is the diagonal friction tensor with tau_i the integrated autocorrelation
time of d_theta_i E along a pilot run of a clone of the chains (``diagonal_relaxation``), and
tau = mean_i tau_i (= tr(I^-1 zeta) / P for diagonal matrices).

Where tau and tau_i come from: by default (``tau=None``) from the training chains themselves
(``relaxation.ChainRelaxation``: the autocorrelation of the per-chain d_theta E along the run's own
updates, no pilot run): alpha(t)'s interior rates are retuned to the current estimate every
``tau_refresh`` updates (``tau="online"`` schedules), and the start impulse, which comes before any
record, uses ``tau0`` (default: one chain step dt). The pilot stays available: pass ``tau`` (e.g.
from ``estimate_tau``) or ``relaxation`` (a ``diagonal_relaxation`` result).

For networks with P ~ 10^3 parameters ``Fisher("full")`` forms a P x P matrix per update: use
these diagonal / low-rank / K-FAC recipes. The per-chain gradients of natural-diag cost an (N, P)
array per update (19.5x an SGD update at P = 4,417, N = 4,096; benchmarks/README.md):
``fisher_route="layers"`` gives the same diagonal from one forward and backward (1.7x), natural-kfac
costs 2.2x (1.4x with ``kfac_refresh=10``). ``Friction`` and ``tau="auto"`` switch to their diagonal
estimates above ``max_dense_params`` parameters, but their pilot still holds the whole d_theta E
series (pilot steps x pilot chains x P).
"""
from __future__ import annotations

import copy
import math
from dataclasses import replace
from typing import NamedTuple

import numpy as np
import torch

from . import schedules as S
from ..errors import InputError, require_positive, require_positive_int
from .preconditioners import Adam, Fisher, Preconditioner
from .relaxation import ChainRelaxation, diagonal_relaxation, estimate_tau  # re-exported for the recipes

#: the recipes that ``mindiss reproduce``'s neural_recipes section compares (it keeps a scale grid per name)
RECIPES = ("sgd-constant", "sgd-cosine", "sgd-linear", "adam", "natural-diag", "natural-lowrank", "friction-diag")
#: every recipe ``recipe`` builds: RECIPES plus natural-kfac (added to the comparison with its scale grid)
ALL_RECIPES = RECIPES[:6] + ("natural-kfac",) + RECIPES[6:]
#: recipes whose schedule is alpha(t) and that need a relaxation time tau
NEEDS_TAU = ("natural-diag", "natural-lowrank", "natural-kfac", "friction-diag")


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
    ``relaxation``: a ``diagonal_relaxation`` result at theta_0 to use instead of the first pilot, or
    a ``ChainRelaxation`` (tau_i from the training chains, every update, no pilot; before its first
    estimate all tau_i = its tau0, i.e. P = (diag I + lambda / tau0)^-1). ``relative_damping`` lambda / mean(zeta_ii).
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
        self.tracker = relaxation if isinstance(relaxation, ChainRelaxation) else None
        given = relaxation is not None and self.tracker is None
        self.tau_i = relaxation["tau"].clone() if given else None
        self.tau = float(relaxation["tau_mean"]) if given else None
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
        if self.tracker is not None:
            self.tracker.start(ctx)
            self.tau = self.tracker.tau()[0]
            self.tau_i = torch.full((int(ctx.theta.numel()),), self.tau, dtype=torch.float64)
        elif not self._given:
            self._pilot(ctx)

    def observe(self, stats, ctx) -> None:
        self.updates += 1
        if self.tracker is not None:
            self.tracker.observe(stats, ctx)
            est = self.tracker.estimate()
            if est is not None:
                self.tau_i, self.tau = est["tau_p"], est["tau"]
        elif self.refresh and self.updates % self.refresh == 0:
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
        out = {"name": self.name, "tau": self.tau, "tau_min": float(self.tau_i.min()),
               "tau_max": float(self.tau_i.max()), "n_pilots": self.n_pilots, "damping": self.damping,
               "ema": self.ema}
        if self.tracker is not None:
            out["tau_from"] = self.tracker.report()
        return out

    def state_dict(self) -> dict:
        sd = super().state_dict()
        if self.tracker is not None:
            sd["tracker"] = self.tracker.state_dict()
        return sd

    def load_state_dict(self, sd: dict) -> None:
        sd = dict(sd)
        tracker = sd.pop("tracker", None)
        super().load_state_dict(sd)
        if tracker is not None:    # into the object that start() registered on the context
            self.tracker.load_state_dict(tracker)


class TauFromChains(Preconditioner):
    """A learning-rate matrix ``inner`` plus a ``ChainRelaxation`` that estimates alpha(t)'s tau from
    the training chains: it sees the same chain statistics as ``inner`` at every update and answers
    ``PreconditionContext.relaxation_time`` (so a ``tau="online"`` schedule is retuned from it)."""

    def __init__(self, inner: Preconditioner, tracker: ChainRelaxation | None = None):
        self.inner = inner
        self.tracker = tracker if tracker is not None else ChainRelaxation()
        self.name, self.needs, self.rows = inner.name, inner.needs, inner.rows

    def __repr__(self):   # settings only: part of a run's fingerprint (checkpoints); taken before start()
        inner = self.inner
        if type(inner).__repr__ is object.__repr__:   # no repr of its own: its plain attributes
            inner = (type(inner).__name__, sorted((k, repr(v)) for k, v in vars(inner).items()))
        return f"TauFromChains({inner!r}, {self.tracker!r})"

    def start(self, ctx) -> None:
        self.inner.start(ctx)
        self.tracker.start(ctx)

    def observe(self, stats, ctx) -> None:
        self.tracker.observe(stats, ctx)
        self.inner.observe(stats, ctx)

    def apply(self, g):
        return self.inner.apply(g)

    def matrix(self):
        return self.inner.matrix()

    def report(self) -> dict:
        return {**self.inner.report(), "tau_from": self.tracker.report()}

    def state_dict(self) -> dict:
        return {"inner": self.inner.state_dict(), "tracker": self.tracker.state_dict()}

    def load_state_dict(self, sd: dict) -> None:
        self.inner.load_state_dict(sd["inner"])
        self.tracker.load_state_dict(sd["tracker"])


# ---------------------------------------------------------------------------- recipes

def recipe(name: str, *, scale: float, duration: float, tau=None, fisher_ema: float = 0.9,
           relative_damping: float | None = None, rank: int = 128, friction_refresh: int = 0,
           relaxation: dict | None = None, tau_refresh: int = 5, tau0: float | None = None,
           kfac_refresh: int = 1, chain_relaxation: ChainRelaxation | None = None,
           fisher_route: str = "samples") -> Recipe:
    """The named recipe (see the module table) over training time ``duration`` = n_steps x dt.

    ``scale``: SGD / Adam: the rate per unit time at t = 0 (per-update lr = scale x dt); natural /
    friction: the factor on alpha(t) (1 = the paper's design). ``tau``: the relaxation time of
    alpha(t) (natural-*, friction-diag): None or "chains" (the default: from the training chains,
    ``ChainRelaxation``, retuned every ``tau_refresh`` updates, ``tau0`` before the first estimate;
    ``chain_relaxation``: the estimator's settings), or a number (e.g. from the pilot ``estimate_tau``).
    ``fisher_ema``, ``relative_damping``, ``rank``: the Fisher estimate (damping lambda =
    relative_damping x mean diagonal; default 1e-3 for the diagonal and K-FAC recipes and 1 for the
    low-rank one, whose inverse multiplies every direction outside the span of its <= 2 x rank sampled
    gradients by 1 / lambda: a small lambda there turns the data term's unsampled components into
    huge steps); ``fisher_route``: natural-diag's route to the diagonal Fisher ("samples": per-chain
    gradients; "layers": a network's layer statistics, the same numbers up to round-off at about the
    cost of one backward, ``kfac.diagonal_fisher``); ``kfac_refresh``: updates between K-FAC factor
    estimates; ``friction_refresh``:
    updates between pilots; ``relaxation``: a ``diagonal_relaxation`` result at theta_0 (the pilot:
    friction-diag skips its first pilot; with tau None, tau = its ``tau_mean``).
    """
    if name not in ALL_RECIPES:
        raise InputError(f"unknown recipe {name!r}; choose one of {', '.join(ALL_RECIPES)}")
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
    chains = tau is None or tau == "chains"
    if not chains:
        if isinstance(tau, str):
            raise InputError(f"tau must be None, 'chains' or a number > 0, got {tau!r}")
        tau = require_positive("tau", tau)
    if relative_damping is None:
        relative_damping = 1.0 if name == "natural-lowrank" else 1e-3
    tracker = None
    if chains:
        tracker = (copy.deepcopy(chain_relaxation) if chain_relaxation is not None
                   else ChainRelaxation(tau0=tau0) if name != "friction-diag"
                   # tau_i for every parameter: fewer chains and lags keep it O(32 x 32 x P) per update
                   else ChainRelaxation(params=None, rows=32, lags=32, tau0=tau0))
        if name == "friction-diag" and tracker.params is not None:
            raise InputError("friction-diag needs tau_i for every parameter: ChainRelaxation(params=None)")
    if name == "natural-diag":
        pre = Fisher("diag", ema=fisher_ema, relative_damping=relative_damping, route=fisher_route)
    elif name == "natural-lowrank":
        pre = Fisher("lowrank", ema=fisher_ema, relative_damping=relative_damping, rank=rank, max_blocks=2)
    elif name == "natural-kfac":
        from .kfac import KFACFisher

        pre = KFACFisher(refresh=kfac_refresh, ema=fisher_ema, relative_damping=relative_damping)
    else:
        pre = DiagonalFriction(refresh=friction_refresh, ema=fisher_ema, relative_damping=relative_damping,
                               relaxation=tracker if chains else relaxation)
    if chains:
        if name != "friction-diag":
            pre = TauFromChains(pre, tracker)
        return Recipe(_alpha_online(name, scale, T, require_positive_int("tau_refresh", tau_refresh)), pre)
    a = S.alpha(T, tau)
    return Recipe(a.scaled(scale, scale * a.impulse_start, scale * a.impulse_end, name=f"{name}*{scale:g}"), pre)


def _alpha_online(name: str, scale: float, T: float, refresh: int) -> S.Schedule:
    """scale x alpha(t) (interior and both impulses) with tau estimated during the run (``tau="online"``:
    ``train`` asks ``PreconditionContext.relaxation_time`` at the start and every ``refresh`` updates)."""
    def at_tau(value):
        a = S.alpha(T, value)
        return a.scaled(scale, scale * a.impulse_start, scale * a.impulse_end, name=f"{name}*{scale:g}")

    base = S.Schedule(name=f"{name}*{scale:g}", duration=T, rate=lambda t: np.full_like(np.asarray(t, float), np.nan),
                      impulse_start=math.nan, impulse_end=0.5 * scale,
                      params={"tau": "online", "tau_refresh": refresh, "tau_from": "training chains",
                              "interior_scale": scale})
    return replace(base, at_tau=at_tau)


def describe(name: str) -> str:
    """One line: the recipe's rate and learning-rate matrix."""
    return {"sgd-constant": "SGD, eta = scale", "sgd-cosine": "SGD, eta = scale (1 + cos pi t/T)/2",
            "sgd-linear": "SGD, eta = scale (1 - t/T)", "adam": "Adam direction, eta = scale",
            "natural-diag": "scale alpha(t) (diag I)^-1", "natural-lowrank": "scale alpha(t) (low-rank I)^-1",
            "natural-kfac": "scale alpha(t) (K-FAC I)^-1",
            "friction-diag": "scale alpha(t) tau (diag zeta)^-1"}[name]

