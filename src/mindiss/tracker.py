"""``WorkTracker``: the thermodynamic ledger of ``mindiss.train`` for any training loop.

Crooks bookkeeping, per chain i, kT = 1 (theory.md section 2, "Discrete time"):

* parameter update at frozen chains:  W_i += E_{theta_new}(x_i) - E_{theta_old}(x_i)
  (``before_update`` / ``after_update``, or ``with tracker.update(): optimizer.step()``);
* chain move at fixed theta:          Q_i += E_theta(x_i,new) - E_theta(x_i,old)   (``after_move``).

First law per chain: E_{theta_T}(x_T) - E_{theta_0}(x_0) = W_i + Q_i. The report gives the mean
work, Delta F (closed form, or an estimator from ``mindiss.free_energy``), the excess work
W_ex = <W> - Delta F and the PCD bias, which equals W_ex (Identity 1: the approximate objective
under-reports the true loss by exactly the dissipated work). Ledgers are float64.
"""
from __future__ import annotations

import inspect
import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from .energies import Energy
from .errors import InputError, require_positive_int

F64 = torch.float64
FREE_ENERGY_METHODS = ("auto", "exact", "jarzynski", "ais", "bar", "none")


@dataclass(frozen=True)
class WorkReport:
    """W_ex = <W> - Delta F per chain, in kT, with the first law's residual and errors.

    ``work_se`` / ``heat_se``: batch means over ``n_blocks`` contiguous chain blocks, conditional on
    the theta path of this run (theta noise is shared by all chains: for the full error combine
    independent runs with ``combine``). ``excess_work_se`` adds Delta F's error in quadrature.
    ``bias``: the PCD bias L(theta_T) - L_approx(T) = W_ex (Identity 1), with ``bias_se``.
    """

    work: float
    work_se: float
    heat: float
    heat_se: float
    delta_free_energy: float
    delta_free_energy_se: float
    free_energy_method: str
    excess_work: float
    excess_work_se: float
    bias: float
    bias_se: float
    first_law_residual: float
    n_chains: int
    n_updates: int
    n_moves: int
    error_method: str
    notes: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def combine(reports) -> WorkReport:
    """Replica mean of independent runs' reports; errors = std over replicas / sqrt(R) (theta noise included)."""
    reports = list(reports)
    if len(reports) < 2:
        raise InputError(f"combine needs at least 2 independent reports, got {len(reports)}")

    def mean_se(name):
        v = np.asarray([getattr(r, name) for r in reports], float)
        return float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v)))

    work, work_se = mean_se("work")
    heat, heat_se = mean_se("heat")
    dfe, dfe_se = mean_se("delta_free_energy")
    ex, ex_se = mean_se("excess_work")
    if dfe_se == 0.0:  # the same Delta F in every replica (closed form): its own error
        dfe_se = float(np.sqrt(np.mean([r.delta_free_energy_se ** 2 for r in reports])))
    methods = sorted({r.free_energy_method for r in reports})
    return WorkReport(work=work, work_se=work_se, heat=heat, heat_se=heat_se, delta_free_energy=dfe,
                      delta_free_energy_se=dfe_se, free_energy_method=", ".join(methods), excess_work=ex,
                      excess_work_se=ex_se,
                      bias=ex, bias_se=ex_se, first_law_residual=max(r.first_law_residual for r in reports),
                      n_chains=sum(r.n_chains for r in reports), n_updates=reports[0].n_updates,
                      n_moves=reports[0].n_moves, error_method=f"replicas ({len(reports)} independent runs)",
                      notes=sorted({n for r in reports for n in r.notes}))


class WorkTracker:
    """Per-chain work and heat of a persistent-chain training loop (kT = 1, work on the chains > 0).

    ``energy_fn``: one of

    * a ``mindiss.Energy`` (``energy(x, theta)``; its closed-form ``delta_energy`` gives the work,
      exactly as ``mindiss.train`` computes it); pass ``theta`` to every call;
    * a callable ``energy_fn(x, theta) -> (N,)``; pass ``theta`` (whatever your energy takes);
    * a callable ``energy_fn(x) -> (N,)`` (e.g. an ``nn.Module`` whose parameters an optimizer
      updates in place); call without theta.

    ``chains``: the persistent chains (N, ...) at the start, ideally in equilibrium at theta_0
    (then W_ex >= 0 and Jarzynski hold). ``theta``: theta_0 when the energy takes one (else given
    by the first ``before_update``). ``free_energy_fn(theta) -> F``: a closed form F = -ln Z (theta
    is None for energies without theta) for the exact Delta F. ``keep_initial``: how many initial
    chain states to keep for the AIS / BAR estimators of Delta F.

    Per update: ``before_update(theta)``, your optimizer step, ``after_update(theta)`` (or
    ``with tracker.update(theta): optimizer.step()`` when theta is changed in place); per chain
    move: ``after_move(chains_new)`` or ``after_move(chains_old, chains_new)``. The heat is
    measured from the ledger's running energy E_theta(x_old), so the first law closes to rounding.
    """

    def __init__(self, energy_fn, chains: torch.Tensor, *, theta=None, free_energy_fn=None,
                 keep_initial: int = 1024):
        if not callable(energy_fn) and not isinstance(energy_fn, Energy):
            raise InputError(f"energy_fn must be a mindiss Energy or a callable, got {type(energy_fn).__name__}")
        if not torch.is_tensor(chains) or chains.ndim < 1 or chains.shape[0] < 1:
            raise InputError("chains must be a tensor of shape (n_chains, ...)")
        self.energy_fn = energy_fn
        self.free_energy_fn = free_energy_fn
        self._mindiss = isinstance(energy_fn, Energy)
        self.keep_initial = require_positive_int("keep_initial", keep_initial)
        self.x = chains
        self.theta = _snapshot(theta)
        self.theta_start = self.theta
        self._theta_old = None
        self._energy_old = None
        self._module_vec = None     # flattened parameters of an nn.Module energy, for AIS / BAR
        self.n_updates = 0
        self.n_moves = 0
        self.energy_start = None
        self.energy_now = None
        self.work = self.heat = None
        self.free_energy_start = None
        self.x0 = chains.detach()[: self.keep_initial].clone()
        if theta is not None or not self._needs_theta():
            self._start(theta)

    # -- evaluation ----------------------------------------------------------------------------
    def _needs_theta(self) -> bool:
        """Whether energy_fn takes theta (a mindiss Energy, or a callable with two required arguments)."""
        if self._mindiss:
            return True
        fn = self.energy_fn.forward if isinstance(self.energy_fn, torch.nn.Module) else self.energy_fn
        try:
            params = inspect.signature(fn).parameters.values()
        except (TypeError, ValueError):
            return False
        positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        return sum(p.kind in positional and p.default is p.empty for p in params) >= 2

    def energies(self, x, theta=None) -> torch.Tensor:
        """E_theta(x) per chain, float64 (N,), no autograd graph."""
        with torch.no_grad():
            if self._mindiss:
                e = self.energy_fn.energy(x, theta)
            elif theta is None:
                e = self.energy_fn(x)
            else:
                e = self.energy_fn(x, theta)
        e = torch.as_tensor(e).detach().to(F64).reshape(-1)
        if e.shape[0] != x.shape[0]:
            raise InputError(f"energy_fn must return one energy per chain ({x.shape[0]},), got {e.shape[0]} values")
        return e

    def _start(self, theta) -> None:
        self.theta_start = self.theta = _snapshot(theta)
        self.energy_start = self.energies(self.x, theta)
        if not bool(torch.isfinite(self.energy_start).all()):
            raise InputError("the initial chain energies are not all finite")
        self.energy_now = self.energy_start.clone()
        self.work = torch.zeros_like(self.energy_now)
        self.heat = torch.zeros_like(self.energy_now)
        if self.free_energy_fn is not None:
            self.free_energy_start = float(self.free_energy_fn(theta))
        if isinstance(self.energy_fn, torch.nn.Module):
            self._module_vec = [_module_vector(self.energy_fn), None]

    # -- Crooks step (a): parameter update at frozen chains ------------------------------------
    def before_update(self, theta=None) -> None:
        """Record the energies (or theta) before a parameter update; the chains must not move until
        ``after_update``."""
        if self._energy_old is not None or self._theta_old is not None:
            raise InputError("before_update called twice without after_update")
        if self.energy_now is None:
            self._start(theta)
        if self._mindiss:
            if theta is None:
                raise InputError("a mindiss Energy needs theta: before_update(theta)")
            self._theta_old = _snapshot(theta)
        else:
            self._energy_old = self.energies(self.x, theta)

    def after_update(self, theta=None) -> torch.Tensor:
        """W_i += E_{theta_new}(x_i) - E_{theta_old}(x_i); returns this update's per-chain work."""
        if self._energy_old is None and self._theta_old is None:
            raise InputError("after_update without before_update")
        if self._mindiss:
            if theta is None:
                raise InputError("a mindiss Energy needs theta: after_update(theta)")
            with torch.no_grad():
                w = self.energy_fn.delta_energy(self.x, self._theta_old, theta)
            w = torch.as_tensor(w).to(F64).reshape(-1)
        else:
            w = self.energies(self.x, theta) - self._energy_old
        self._theta_old = self._energy_old = None
        self.work.add_(w)
        self.energy_now.add_(w)
        self.theta = _snapshot(theta)
        self.n_updates += 1
        if self._module_vec is not None:
            self._module_vec[1] = _module_vector(self.energy_fn)
        return w

    @contextmanager
    def update(self, theta=None):
        """``with tracker.update(theta): optimizer.step()`` for parameters changed in place."""
        self.before_update(theta)
        try:
            yield self
        except BaseException:
            self._theta_old = self._energy_old = None
            raise
        self.after_update(theta)

    # -- Crooks step (b): chain move at fixed theta --------------------------------------------
    def after_move(self, chains_old, chains_new=None) -> torch.Tensor:
        """Q_i += E_theta(x_new) - E_theta(x_old) at the current theta; returns this move's heat.

        ``after_move(x_new)`` or ``after_move(x_old, x_new)``; E_theta(x_old) is the ledger's running
        energy (samplers that update x in place make x_old and x_new the same tensor)."""
        x_new = chains_old if chains_new is None else chains_new
        if self.energy_now is None:
            raise InputError("after_move before the tracker knows theta: pass theta= to WorkTracker or call "
                             "before_update(theta) first")
        if self._energy_old is not None or self._theta_old is not None:
            raise InputError("after_move between before_update and after_update: the chains must stay frozen "
                             "during a parameter update")
        if not torch.is_tensor(x_new) or x_new.shape[0] != self.energy_now.shape[0]:
            raise InputError(f"chains must keep their number and identity ({self.energy_now.shape[0]} chains)")
        e_new = self.energies(x_new, self.theta)
        q = e_new - self.energy_now
        self.heat.add_(q)
        self.energy_now = e_new
        self.x = x_new
        self.n_moves += 1
        return q

    # -- results ------------------------------------------------------------------------------
    def first_law_residual(self) -> float:
        """max_i |E_{theta}(x_i) - E_{theta_0}(x_i,0) - W_i - Q_i|, energies recomputed afresh."""
        delta = self.energies(self.x, self.theta) - self.energy_start
        return float((delta - self.work - self.heat).abs().max())

    def report(self, free_energy: str = "auto", *, delta_free_energy: float | None = None,
               delta_free_energy_se: float = 0.0, n_blocks: int = 16, gen: torch.Generator | None = None,
               **estimator) -> WorkReport:
        """The run's work, heat, Delta F, excess work and PCD bias (kT per chain).

        Delta F: ``delta_free_energy`` if given; else ``free_energy``: "exact" (``free_energy_fn``,
        or the Energy's closed form), "jarzynski" (-ln <exp(-W)> of this run's own work: biased by
        the feedback of finite N, see theory.md), "ais" (annealed importance sampling from the kept
        initial chains, theta_0 -> theta_T, MALA; needs ``gen``), "bar" (Bennett: AIS forward plus the
        reverse switch from the final chains after a MALA burn-in; needs ``gen``), "none", or "auto"
        (exact where known, else "ais" when ``gen`` is given, else "jarzynski"). ``estimator``:
        keyword arguments for the AIS switch (``n_intermediate``, ``n_mcmc``, ``dt``, ``mobility``; BAR also
        ``n_burn``, the MALA moves that equilibrate the final chains at theta_T before the reverse switch).
        """
        if self.energy_now is None:
            raise InputError("nothing tracked yet")
        if free_energy not in FREE_ENERGY_METHODS:
            raise InputError(f"free_energy must be one of {FREE_ENERGY_METHODS}, got {free_energy!r}")
        notes = []
        if delta_free_energy is not None:
            dfe, dfe_se, method = float(delta_free_energy), float(delta_free_energy_se), "given"
        else:
            dfe, dfe_se, method = self._delta_free_energy(free_energy, gen, estimator, notes)
        work = self.work.detach().cpu().numpy()
        heat = self.heat.detach().cpu().numpy()
        nb = max(2, min(int(n_blocks), len(work)))
        (w, w_se), (q, q_se) = _batch_means(work, nb), _batch_means(heat, nb)
        w, q = float(self.work.mean()), float(self.heat.mean())  # the same reduction as mindiss.train
        ex = w - dfe
        ex_se = math.hypot(w_se, dfe_se) if math.isfinite(dfe_se) else math.nan
        return WorkReport(work=w, work_se=w_se, heat=q, heat_se=q_se, delta_free_energy=dfe,
                          delta_free_energy_se=dfe_se, free_energy_method=method, excess_work=ex,
                          excess_work_se=ex_se, bias=ex, bias_se=ex_se, first_law_residual=self.first_law_residual(),
                          n_chains=len(work), n_updates=self.n_updates, n_moves=self.n_moves,
                          error_method=f"batch means over {nb} chain blocks (theta path held fixed)", notes=notes)

    def _delta_free_energy(self, method, gen, estimator, notes):
        if method == "none":
            return math.nan, math.nan, "none"
        if method in ("auto", "exact"):
            if self.free_energy_fn is not None:
                return float(self.free_energy_fn(self.theta)) - self.free_energy_start, 0.0, "exact"
            if self._mindiss:
                try:
                    f1 = self.energy_fn.free_energy(self.theta)
                    f0 = self.energy_fn.free_energy(self.theta_start)
                except NotImplementedError:
                    f0 = f1 = math.nan
                if math.isfinite(f1) and math.isfinite(f0):
                    return float(f1 - f0), 0.0, "exact"
            if method == "exact":
                raise InputError("free_energy='exact' needs free_energy_fn= (or a mindiss Energy with a closed-form F)")
            method = "ais" if gen is not None else "jarzynski"
        if method == "jarzynski":
            from .free_energy import jarzynski

            est = jarzynski(self.work.detach().cpu())
            notes.append("Delta F from the run's own work (Jarzynski): biased by the feedback of finite N, and "
                         "valid only if the chains started in equilibrium at theta_0")
            return est.delta_free_energy, est.standard_error, "jarzynski"
        energy, th0, th1 = self._as_energy()
        if not isinstance(gen, torch.Generator):
            raise InputError(f"free_energy={method!r} draws MALA noise: pass gen=torch.Generator()")
        from . import free_energy as fe

        kw = {"n_intermediate": 50, "n_mcmc": 1, "dt": 0.01, "mobility": 1.0, **estimator}
        n_burn = int(kw.pop("n_burn", 200))
        x0 = self.x0.to(F64)
        if method == "ais":
            est = fe.ais(energy, th0, th1, n_chains=x0.shape[0], gen=gen, x0=x0, **kw)
            return est.delta_free_energy, est.standard_error, "ais"
        fwd = fe.switching_work(energy, th0, th1, n_chains=x0.shape[0], gen=gen, x0=x0, **kw)
        y = self.x.detach()[: self.keep_initial].to(F64).clone()
        from .samplers import MALA

        mala = MALA()
        for _ in range(n_burn):
            y = mala.step(energy, th1, y, dt=kw["dt"], mobility=kw["mobility"], gen=gen)
        rev = fe.switching_work(energy, th1, th0, n_chains=y.shape[0], gen=gen, x0=y, **kw)
        est = fe.bar(fwd, rev)
        return est.delta_free_energy, est.standard_error, "bar"

    def _as_energy(self):
        """(mindiss Energy, theta_0, theta_T) for the AIS / BAR estimators."""
        if self._mindiss:
            return self.energy_fn, self.theta_start, self.theta
        if isinstance(self.energy_fn, torch.nn.Module) and self._module_vec is not None:
            from .neural import NeuralEnergy

            energy = NeuralEnergy(self.energy_fn, dim=int(np.prod(self.x.shape[1:])))
            th1 = self._module_vec[1] if self._module_vec[1] is not None else self._module_vec[0]
            return energy, self._module_vec[0], th1
        raise InputError("AIS / BAR need the energy as a mindiss Energy (or an nn.Module of x): give "
                         "free_energy_fn= or delta_free_energy=, or use free_energy='jarzynski'")

    # -- resume --------------------------------------------------------------------------------
    _STATE = ("x", "theta", "theta_start", "energy_start", "energy_now", "work", "heat", "n_updates", "n_moves",
              "free_energy_start", "x0", "_module_vec")

    def state_dict(self) -> dict:
        return {k: _clone(getattr(self, k)) for k in self._STATE}

    def load_state_dict(self, sd: dict) -> None:
        for k in self._STATE:
            setattr(self, k, _clone(sd[k]))
        self._theta_old = self._energy_old = None


def _snapshot(theta):
    if torch.is_tensor(theta):
        return theta.detach().clone()
    return theta


def _clone(v):
    if torch.is_tensor(v):
        return v.clone()
    if isinstance(v, list):
        return [_clone(a) for a in v]
    return v


def _module_vector(module) -> torch.Tensor:
    return torch.nn.utils.parameters_to_vector(module.parameters()).detach().to(F64).cpu().clone()


def _batch_means(values: np.ndarray, n_blocks: int):
    """(mean, standard error from n_blocks contiguous blocks)."""
    v = np.asarray(values, float)
    length = len(v) // n_blocks
    means = v[: n_blocks * length].reshape(n_blocks, length).mean(axis=1)
    return float(v.mean()), float(means.std(ddof=1) / math.sqrt(n_blocks))


__all__ = ["WorkTracker", "WorkReport", "combine"]
