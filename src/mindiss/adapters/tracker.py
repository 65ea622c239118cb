"""``WorkTracker``: the thermodynamic ledger (``mindiss.ledger.Ledger``) for any training loop, as a
live bias meter.

Crooks bookkeeping, per chain i, kT = 1 (theory.md section 2, "Discrete time"):

* parameter update at frozen chains:  W_i += E_{theta_new}(x_i) - E_{theta_old}(x_i)
  (``with tracker.update(): optimizer.step()``, or ``before_update`` / ``after_update``);
* chain move at fixed theta:          Q_i += E_theta(x_i,new) - E_theta(x_i,old)   (``after_move``).

First law per chain: E_{theta_T}(x_T) - E_{theta_0}(x_0) = W_i + Q_i. The report gives the mean
work, Delta F (one dispatch: ``mindiss.ledger.delta_free_energy``), the excess work
W_ex = <W> - Delta F, and the PCD bias *measured* as the true-loss change minus the approximate
objective's change sum_k dtheta_k . g_hat_k (given ``data=`` and a Delta F; NaN with a reason
otherwise). Identity 1 says bias = W_ex up to O(|dtheta|^2) per update; the report gives the
difference. Per update a history row (work, heat, work variance, lag) is kept, ``on_update`` is
called, and a ``DissipationWarning`` fires when the dissipation of one update grows far above its
running level. ``follow_replay_buffer`` follows chain identity through torchebm's PCD buffer.
"""
from __future__ import annotations

import inspect
import math
import warnings
from contextlib import contextmanager

import numpy as np
import torch

from ..backends.chains import ParticleChains
from ..energies.base import Energy
from ..errors import InputError, require_positive_int
from ..core.ledger import (FIXED_PATH, FREE_ENERGY_METHODS, FreeEnergyDifference, Ledger, WorkReport, combine,
                     delta_free_energy, excess_work, measured_bias)

F64 = torch.float64


class DissipationWarning(UserWarning):
    """One update's dissipation is far above its running level (often precedes a PCD blow-up)."""


class WorkTracker:
    """Per-chain work and heat of a persistent-chain training loop (kT = 1, work on the chains > 0).

    ``energy_fn``: one of

    * a ``mindiss.Energy`` (``energy(x, theta)``; its closed-form ``delta_energy`` gives the work,
      exactly as ``mindiss.train`` computes it); pass ``theta`` to every call;
    * a callable ``energy_fn(x, theta) -> (N,)``; pass ``theta`` (whatever your energy takes);
    * a callable ``energy_fn(x) -> (N,)`` (e.g. an ``nn.Module`` whose parameters an optimizer
      updates in place); call without theta.

    ``chains``: the persistent chains (N, ...) at the start, ideally in equilibrium at theta_0
    (then W_ex >= 0 and Jarzynski hold). ``theta``: theta_0 when the energy takes one.
    ``free_energy_fn(theta) -> F``: a closed form F = -ln Z (theta is None for energies without
    theta). ``data``: samples (n, ...) for the true loss L = E_data[E] - F at the start and the end
    (needed for the measured bias). ``box``: a 1-D / 2-D integration box for Delta F by quadrature.
    ``keep_initial``: initial chain states kept for AIS / BAR / TI. ``n_blocks``: chain blocks for
    the batch-means errors. ``on_update(tracker, row)``: called after every update with the
    history row (a dict). ``warn_factor``: a ``DissipationWarning`` when one update's dissipation
    Var_i(w_i)/2 exceeds this times its running mean (after 20 updates; 0 switches it off).
    ``params``: the parameters whose ``.grad`` is g_hat and whose change is dtheta (default: those of
    an nn.Module energy), for the approximate objective's change sum_k dtheta_k . g_hat_k.

    Per update: ``with tracker.update(theta): optimizer.step()`` (an ``nn.Module`` energy: the
    tracker reads ``p.grad`` as g_hat and the parameter change as dtheta), or
    ``before_update(theta)`` / ``after_update(theta, grad=g_hat)``; per chain move:
    ``after_move(chains_new)``.
    """

    def __init__(self, energy_fn, chains: torch.Tensor, *, theta=None, free_energy_fn=None, data=None, box=None,
                 keep_initial: int = 1024, n_blocks: int = 16, on_update=None, warn_factor: float = 10.0,
                 params=None):
        if not callable(energy_fn) and not isinstance(energy_fn, Energy):
            raise InputError(f"energy_fn must be a mindiss Energy or a callable, got {type(energy_fn).__name__}")
        if not torch.is_tensor(chains) or chains.ndim < 1 or chains.shape[0] < 1:
            raise InputError("chains must be a tensor of shape (n_chains, ...)")
        if on_update is not None and not callable(on_update):
            raise InputError(f"on_update must be callable (tracker, row), got {type(on_update).__name__}")
        if data is not None and (not torch.is_tensor(data) or data.ndim < 1 or data.shape[0] < 2):
            raise InputError("data must be a tensor of at least 2 samples (n, ...)")
        if not (isinstance(warn_factor, (int, float)) and warn_factor >= 0):
            raise InputError(f"warn_factor must be a number >= 0, got {warn_factor!r}")
        self.energy_fn = energy_fn
        if params is None and isinstance(energy_fn, torch.nn.Module):
            params = energy_fn.parameters()
        self.params = None if params is None else list(params)
        self.free_energy_fn = free_energy_fn
        self.data, self.box = data, box
        self.on_update, self.warn_factor = on_update, float(warn_factor)
        self._mindiss = isinstance(energy_fn, Energy)
        self.keep_initial = require_positive_int("keep_initial", keep_initial)
        self.n_blocks = require_positive_int("n_blocks", n_blocks)
        self.x = chains
        self.theta = _snapshot(theta)
        self.theta_start = self.theta
        self._theta_old = None
        self._energy_old = None
        self._params_old = None
        self._grad = None
        self._module_vec = None     # flattened parameters of an nn.Module energy, for AIS / BAR
        self._chains = None         # a mindiss Energy's chains: ParticleChains books work and heat
        self.ledger: Ledger | None = None
        self.free_energy_start = None
        self.data_energy_start = None
        self._dissipation = []      # Var_i(w_i) / 2 per update
        self.n_warnings = 0
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
        if self._mindiss:   # a mindiss Energy: work and heat by the chains' own code (as in train)
            self._chains = ParticleChains(self.x, self.energy_fn, _theta64(theta, self.x))
            self.ledger = Ledger(self._chains.energy_now.clone(), n_blocks=self.n_blocks)
        else:
            self.ledger = Ledger(self.energies(self.x, theta), n_blocks=self.n_blocks)
        if self.free_energy_fn is not None:
            self.free_energy_start = float(self.free_energy_fn(theta))
        if self.data is not None:
            self.data_energy_start = self.energies(self.data, theta)
        if isinstance(self.energy_fn, torch.nn.Module):
            self._module_vec = [_module_vector(self.energy_fn), None]

    # ledger views (the numbers live in ``self.ledger``)
    @property
    def work(self) -> torch.Tensor:
        return self.ledger.work

    @property
    def heat(self) -> torch.Tensor:
        return self.ledger.heat

    @property
    def n_updates(self) -> int:
        return 0 if self.ledger is None else self.ledger.n_updates

    @property
    def n_moves(self) -> int:
        return 0 if self.ledger is None else self.ledger.n_moves

    @property
    def energy_now(self):
        return None if self.ledger is None else self.ledger.energy_now

    def relaxation_time(self, window: int = 20) -> float:
        """tau in updates (one update = one chain move) from the chains' one-move energy autocorrelation;
        NaN before the first move. Used by ``MinimalDissipationLR(tracker=...)``."""
        return math.nan if self.ledger is None else self.ledger.relaxation_time(window)

    def history(self) -> dict:
        """Per-update columns (numpy): update, work, work_var, heat, approx_change, lag, n_restarts,
        dissipation (= work_var / 2)."""
        if self.ledger is None:
            return {}
        arr = self.ledger.history_array()
        out = {name: arr[:, i] for i, name in enumerate(Ledger.HISTORY_COLUMNS)}
        out["dissipation"] = out["work_var"] / 2.0
        return out

    # -- Crooks step (a): parameter update at frozen chains ------------------------------------
    def before_update(self, theta=None, *, grad=None) -> None:
        """Record the energies (or theta) before a parameter update; the chains must not move until
        ``after_update``. ``grad``: g_hat of this update (else read from ``p.grad`` of an nn.Module)."""
        if self._energy_old is not None or self._theta_old is not None:
            raise InputError("before_update called twice without after_update")
        if self.ledger is None:
            self._start(theta)
        if self._mindiss:
            if theta is None:
                raise InputError("a mindiss Energy needs theta: before_update(theta)")
            self._theta_old = _snapshot(theta)
        else:
            self._energy_old = self.energies(self.x, theta)
            if theta is not None:
                self._theta_old = _snapshot(theta)
        self._grad = None if grad is None else torch.as_tensor(grad).detach().to(F64).reshape(-1).clone()
        if self.params is not None:
            params = self.params
            self._params_old = torch.nn.utils.parameters_to_vector(params).detach().to(F64).clone()
            if self._grad is None and all(p.grad is not None for p in params):
                self._grad = torch.cat([p.grad.detach().reshape(-1).to(F64) for p in params])

    def after_update(self, theta=None, *, grad=None) -> torch.Tensor:
        """W_i += E_{theta_new}(x_i) - E_{theta_old}(x_i); returns this update's per-chain work."""
        if self._energy_old is None and self._theta_old is None:
            raise InputError("after_update without before_update")
        if self._mindiss:
            if theta is None:
                raise InputError("a mindiss Energy needs theta: after_update(theta)")
            with torch.no_grad():   # ParticleChains.apply_update: the same code as train's update
                w = self._chains.apply_update(self.energy_fn, _theta64(self._theta_old, self.x),
                                              _theta64(theta, self.x))
        else:
            w = self.energies(self.x, theta) - self._energy_old
        g = self._grad if grad is None else torch.as_tensor(grad).detach().to(F64).reshape(-1)
        approx = None
        if g is not None:
            if self._params_old is not None:
                dtheta = _vector(self.params).to(g.device) - self._params_old.to(g.device)
            elif self._theta_old is not None and theta is not None:
                dtheta = torch.as_tensor(theta).detach().to(F64).reshape(-1) - self._theta_old.to(F64).reshape(-1)
            else:
                dtheta = None
            if dtheta is not None and dtheta.shape == g.shape:
                approx = float(dtheta @ g)
        self._theta_old = self._energy_old = self._params_old = self._grad = None
        self.ledger.record_work(w, approx_change=approx)
        self.theta = _snapshot(theta)
        if self._module_vec is not None:
            self._module_vec[1] = _module_vector(self.energy_fn)
        self._observe_dissipation()
        return w

    @contextmanager
    def update(self, theta=None, *, grad=None):
        """``with tracker.update(theta): optimizer.step()`` for parameters changed in place."""
        self.before_update(theta, grad=grad)
        try:
            yield self
        except BaseException:
            self._theta_old = self._energy_old = self._params_old = self._grad = None
            raise
        self.after_update(theta)

    def _observe_dissipation(self) -> None:
        row = self.ledger.history[-1]
        d = row[2] / 2.0
        past = self._dissipation
        if self.warn_factor > 0 and len(past) >= 20:
            level = float(np.mean(past[-100:]))
            if level > 0 and d > self.warn_factor * level:
                self.n_warnings += 1
                warnings.warn(DissipationWarning(
                    f"update {row[0]:.0f}: dissipation Var(w)/2 = {d:.3g} kT is {d / level:.0f}x its running level "
                    f"{level:.3g} kT; in PCD this often precedes a blow-up (lower the lr)"), stacklevel=3)
        past.append(d)
        if self.on_update is not None:
            self.on_update(self, dict(zip((*Ledger.HISTORY_COLUMNS, "dissipation"), (*row, d))))

    # -- Crooks step (b): chain move at fixed theta --------------------------------------------
    def after_move(self, chains_old, chains_new=None) -> torch.Tensor:
        """Q_i += E_theta(x_new) - E_theta(x_old) at the current theta; returns this move's heat.

        ``after_move(x_new)`` or ``after_move(x_old, x_new)``; E_theta(x_old) is the ledger's running
        energy (samplers that update x in place make x_old and x_new the same tensor)."""
        x_new = chains_old if chains_new is None else chains_new
        if self.ledger is None:
            raise InputError("after_move before the tracker knows theta: pass theta= to WorkTracker or call "
                             "before_update(theta) first")
        if self._energy_old is not None or self._theta_old is not None:
            raise InputError("after_move between before_update and after_update: the chains must stay frozen "
                             "during a parameter update")
        if not torch.is_tensor(x_new) or x_new.shape[0] != self.ledger.n_chains:
            raise InputError(f"chains must keep their number and identity ({self.ledger.n_chains} chains)")
        if self._mindiss:   # ParticleChains.observe_move: the same heat code as train's move
            with torch.no_grad():
                self._chains.observe_move(self.energy_fn, _theta64(self.theta, x_new), x_new)
            q = self.ledger.record_heat(self._chains.energy_now)
        else:
            q = self.ledger.record_heat(self.energies(x_new, self.theta))
        self.x = x_new
        return q

    def after_reassign(self, chains_new, source) -> torch.Tensor:
        """A move through a replay buffer: slot j now holds the system from slot ``source[j]`` (moved: heat),
        or a new system where ``source[j] < 0`` (a restarted chain leaves the ledger and a new one enters)."""
        if self.ledger is None:
            raise InputError("after_reassign before the tracker knows theta")
        if self._mindiss:
            with torch.no_grad():
                self._chains.restart(self.energy_fn, _theta64(self.theta, chains_new), chains_new)
            q = self.ledger.reassign(source, self._chains.energy_now)
        else:
            q = self.ledger.reassign(source, self.energies(chains_new, self.theta))
        self.x = chains_new
        return q

    # -- results ------------------------------------------------------------------------------
    def first_law_residual(self) -> float:
        """max_i |E_theta(x_i) - E_{theta_0}(x_i,0) - W_i - Q_i| per system, energies recomputed afresh."""
        return self.ledger.first_law_residual(self.energies(self.x, self.theta))

    def report(self, free_energy: str = "auto", *, delta_free_energy: float | None = None,
               delta_free_energy_se: float = 0.0, gen: torch.Generator | None = None, **estimator) -> WorkReport:
        """The run's work, heat, Delta F, excess work and measured PCD bias (kT per chain).

        Delta F: ``delta_free_energy`` if given; else ``free_energy``: "exact" (``free_energy_fn``, or
        the Energy's closed form), "quadrature" (``box=`` given to the tracker), "jarzynski" (the run's
        own work: biased by the feedback of finite N), "ais" / "ti" (from the kept initial chains,
        MALA; need ``gen``), "bar" (AIS forward plus the reverse switch from the final chains), "none",
        or "auto" (exact where known, else quadrature with a box, else AIS with ``gen``, else
        Jarzynski). ``estimator``: keyword arguments of ``mindiss.ledger.delta_free_energy``
        (``n_intermediate``, ``n_mcmc``, ``dt``, ``mobility``, ``n_burn``...). Errors are "fixed
        path" (batch means over chain blocks; see ``combine`` for errors across seeds).
        """
        if self.ledger is None:
            raise InputError("nothing tracked yet")
        if free_energy not in FREE_ENERGY_METHODS:
            raise InputError(f"free_energy must be one of {FREE_ENERGY_METHODS}, got {free_energy!r}")
        notes = []
        if delta_free_energy is not None:
            dfe = FreeEnergyDifference(float(delta_free_energy), float(delta_free_energy_se), "given")
        else:
            dfe = self._delta_free_energy(free_energy, gen, estimator, notes)
        led = self.ledger
        m = led.means()
        ex = excess_work(m.work, m.work_se, dfe.delta_free_energy, dfe.delta_free_energy_se)
        d_data, d_data_se = self._data_energy_change()
        approx = led.approx_change if led.approx_known and led.n_updates else math.nan
        bias = measured_bias(d_data, d_data_se, dfe, approx, ex)
        if led.n_restarts:
            notes.append(f"{led.n_restarts} chains were restarted by the replay buffer: they left the ledger and "
                         "re-entered as new systems; <W> is the mean over the chains present at each update")
        if self.n_warnings:
            notes.append(f"{self.n_warnings} dissipation warnings (an update dissipated > {self.warn_factor:g}x the "
                         "running level)")
        return WorkReport(work=m.work, work_se=m.work_se, heat=m.heat, heat_se=m.heat_se,
                          delta_free_energy=dfe.delta_free_energy, delta_free_energy_se=dfe.delta_free_energy_se,
                          free_energy_method=dfe.method, excess_work=ex[0], excess_work_se=ex[1],
                          bias=bias.bias, bias_se=bias.bias_se, bias_reason=bias.reason,
                          bias_residual=bias.residual, bias_residual_se=bias.residual_se,
                          loss_true_change=bias.loss_true_change, loss_true_change_se=bias.loss_true_change_se,
                          loss_approx_change=bias.loss_approx_change, first_law_residual=self.first_law_residual(),
                          n_chains=led.n_chains, n_updates=led.n_updates, n_moves=led.n_moves,
                          n_restarts=led.n_restarts, error_kind=FIXED_PATH,
                          error_method=f"batch means over {m.n_blocks} chain blocks (theta path held fixed)",
                          notes=notes)

    def _data_energy_change(self) -> tuple[float, float]:
        """E_data[E_T] - E_data[E_0] with the error of the per-sample differences (NaN without data)."""
        if self.data_energy_start is None:
            return math.nan, math.nan
        d = self.energies(self.data, self.theta) - self.data_energy_start
        return float(d.mean()), float(d.std() / math.sqrt(d.numel()))

    def _delta_free_energy(self, method, gen, estimator, notes) -> FreeEnergyDifference:
        exact = math.nan
        if method in ("auto", "exact") and self.free_energy_fn is not None:
            exact = float(self.free_energy_fn(self.theta)) - self.free_energy_start
        energy = th0 = th1 = None
        try:
            energy, th0, th1 = self._as_energy()
        except InputError as exc:
            if method in ("ais", "ti", "bar", "quadrature"):
                raise
            reason = str(exc)
        if method == "auto" and not math.isfinite(exact):
            has_exact = False
            if self._mindiss:
                try:
                    has_exact = math.isfinite(self.energy_fn.free_energy(self.theta))
                except NotImplementedError:
                    pass
            if not has_exact:
                method = ("quadrature" if self.box is not None and energy is not None else
                          "ais" if gen is not None and energy is not None else "jarzynski")
        if method == "exact" and not math.isfinite(exact) and not self._mindiss:
            raise InputError("free_energy='exact' needs free_energy_fn= (or a mindiss Energy with a closed-form F)")
        if method in ("ais", "ti", "bar") and not isinstance(gen, torch.Generator):
            raise InputError(f"free_energy={method!r} draws MALA noise: pass gen=torch.Generator()")
        if method == "jarzynski":
            notes.append("Delta F from the run's own work (Jarzynski): biased by the feedback of finite N, and "
                         "valid only if the chains started in equilibrium at theta_0")
        kw = {"dt": 0.01, "mobility": 1.0, **estimator}
        out = delta_free_energy(energy if energy is not None else (self.energy_fn if self._mindiss else None),
                                th0, th1, method=method, exact=exact, work=self.ledger.work, x0=self.x0.to(F64),
                                x1=self.x.detach()[: self.keep_initial].to(F64), gen=gen, box=self.box, **kw)
        if method == "exact" and not math.isfinite(out.delta_free_energy):
            raise InputError("free_energy='exact' needs free_energy_fn= (or a mindiss Energy with a closed-form F)")
        return out

    def _as_energy(self):
        """(mindiss Energy, theta_0, theta_T) for the estimators."""
        if self._mindiss:
            return self.energy_fn, self.theta_start, self.theta
        if isinstance(self.energy_fn, torch.nn.Module) and self._module_vec is not None:
            from ..energies.neural import NeuralEnergy

            energy = NeuralEnergy(self.energy_fn, dim=int(np.prod(self.x.shape[1:])))
            th1 = self._module_vec[1] if self._module_vec[1] is not None else self._module_vec[0]
            return energy, self._module_vec[0], th1
        raise InputError("AIS / BAR / TI / quadrature need the energy as a mindiss Energy (or an nn.Module of x): "
                         "give free_energy_fn= or delta_free_energy=, or use free_energy='jarzynski'")

    # -- resume --------------------------------------------------------------------------------
    _STATE = ("x", "theta", "theta_start", "free_energy_start", "data_energy_start", "x0", "_module_vec",
              "_dissipation", "n_warnings")

    def state_dict(self) -> dict:
        sd = {k: _clone(getattr(self, k)) for k in self._STATE}
        sd["ledger"] = None if self.ledger is None else self.ledger.state_dict()
        sd["chains"] = None if self._chains is None else self._chains.state_dict()
        return sd

    def load_state_dict(self, sd: dict) -> None:
        for k in self._STATE:
            setattr(self, k, _clone(sd[k]))
        self.ledger = None
        if sd["ledger"] is not None:
            self.ledger = Ledger(sd["ledger"]["energy_start"])
            self.ledger.load_state_dict(sd["ledger"])
        if self._mindiss and sd.get("chains") is not None:
            self._chains = ParticleChains(self.x, self.energy_fn, _theta64(self.theta, self.x))
            self._chains.load_state_dict(sd["chains"])
        self._theta_old = self._energy_old = self._params_old = self._grad = None


# ---------------------------------------------------------------------------- replay buffers

class ReplayBufferFollower:
    """Follows chain identity through a replay buffer that draws, moves and writes back chains
    (torchebm's ``PersistentContrastiveDivergence``): the ledger's systems are the buffer slots.

    Every buffer entry feels each parameter update (work on all slots). Per forward pass the
    follower sees the start points and the slots written: a start point equal (bit for bit) to a
    slot's state continues that system (heat); a start point that matches no slot (torchebm's
    exploration noise, ``new_sample_ratio``) and a stale copy left behind when a system moves to
    another slot are restarted chains: they leave the ledger and re-enter as new systems
    (``tracker.ledger.n_restarts`` counts them). Build it with ``follow_replay_buffer``.
    """

    def __init__(self, tracker_kwargs: dict, energy_fn, pcd):
        self.pcd, self.energy_fn = pcd, energy_fn
        self.tracker_kwargs = tracker_kwargs
        self.tracker: WorkTracker | None = None
        self._starts = None
        self._sources = None
        orig_start, orig_update = pcd.get_start_points, pcd.update_buffer

        def get_start_points(x, *args, **kwargs):
            starts = orig_start(x, *args, **kwargs)
            if self.tracker is None:
                self.tracker = WorkTracker(energy_fn, pcd.replay_buffer.detach().clone(), **self.tracker_kwargs)
            self._sources = _match_rows(starts.detach(), pcd.replay_buffer.detach())
            return starts

        def update_buffer(samples, *args, **kwargs):
            ptr = int(getattr(pcd, "_buffer_ptr_int", int(getattr(pcd, "buffer_ptr", 0))))
            out = orig_update(samples, *args, **kwargs)
            self._book(samples.detach(), ptr)
            return out

        pcd.get_start_points = get_start_points
        pcd.update_buffer = update_buffer

    def _book(self, samples: torch.Tensor, ptr: int) -> None:
        size, b = self.pcd.replay_buffer.shape[0], samples.shape[0]
        source = torch.arange(size)
        written = (torch.arange(b) + ptr) % size if b < size else torch.arange(size)
        src_of_written = self._sources if b <= size else self._sources[-size:]
        moved_from = set(int(s) for s in src_of_written.tolist() if s >= 0)
        source[written] = src_of_written
        written_set = set(written.tolist())
        for s in moved_from:                         # stale copies left behind: new systems
            if s not in written_set:
                source[s] = -1
        self.tracker.after_reassign(self.pcd.replay_buffer.detach().clone(), source)

    # what a loop calls
    @contextmanager
    def update(self):
        """``with follower.update(): optimizer.step()`` (work on every buffer slot)."""
        if self.tracker is None:
            raise InputError("call the PCD loss (pcd(x)) once before the first update: torchebm fills its buffer "
                             "lazily")
        with self.tracker.update():
            yield self

    def report(self, *args, **kwargs) -> WorkReport:
        return self.tracker.report(*args, **kwargs)


def follow_replay_buffer(energy_fn, pcd, **tracker_kwargs) -> ReplayBufferFollower:
    """A WorkTracker over the replay buffer of torchebm's ``PersistentContrastiveDivergence`` ``pcd``
    (anything with ``get_start_points(x)``, ``update_buffer(samples)``, ``replay_buffer`` and a FIFO
    pointer ``_buffer_ptr_int``). ``tracker_kwargs`` go to ``WorkTracker``."""
    for name in ("get_start_points", "update_buffer"):
        if not callable(getattr(pcd, name, None)):
            raise InputError(f"follow_replay_buffer needs a PCD loss with {name}() (torchebm's "
                             f"PersistentContrastiveDivergence), got {type(pcd).__name__}")
    return ReplayBufferFollower(tracker_kwargs, energy_fn, pcd)


def _match_rows(rows: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """For each row, the index of a bit-identical row of ``table`` (each table row used once), else -1."""
    lookup: dict[bytes, list[int]] = {}
    flat = table.reshape(table.shape[0], -1).cpu().contiguous()
    for i in range(flat.shape[0]):
        lookup.setdefault(flat[i].numpy().tobytes(), []).append(i)
    out = torch.full((rows.shape[0],), -1, dtype=torch.long)
    r = rows.reshape(rows.shape[0], -1).to(flat.dtype).cpu().contiguous()
    for j in range(r.shape[0]):
        hits = lookup.get(r[j].numpy().tobytes())
        if hits:
            out[j] = hits.pop(0)
    return out


def _theta64(theta, like: torch.Tensor) -> torch.Tensor:
    """theta as the float64 vector a mindiss Energy takes, on the chains' device."""
    return torch.as_tensor(theta, dtype=F64, device=like.device).reshape(-1)


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


def _vector(params) -> torch.Tensor:
    return torch.nn.utils.parameters_to_vector(list(params)).detach().to(F64).cpu().clone()


def _module_vector(module) -> torch.Tensor:
    return torch.nn.utils.parameters_to_vector(module.parameters()).detach().to(F64).cpu().clone()



__all__ = ["WorkTracker", "WorkReport", "combine", "DissipationWarning", "ReplayBufferFollower",
           "follow_replay_buffer"]
