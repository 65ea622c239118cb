"""The thermodynamic ledger of a persistent-chain training run (theory.md section 2), kT = 1.

One object and a few pure functions, for ``mindiss.tracker.WorkTracker`` (a user's own loop) and,
later, ``mindiss.train``:

* ``Ledger``: per-chain float64 ``work`` and ``heat``. Crooks split of every update:
  ``record_work(E_new(x) - E_old(x))`` at frozen chains, ``record_heat(E(x_new))`` at fixed theta
  (the heat is E(x_new) - E(x_old) with E(x_old) the ledger's running energy, so the first law
  E_T(x_T) - E_0(x_0) = W_i + Q_i closes to rounding). Chains that a replay buffer restarts leave
  the ledger and re-enter as new systems (``restart``): their energy jump is neither work nor heat
  and is booked apart. Per-update history rows (mean work, heat, work variance, lag) are kept.
* ``delta_free_energy``: the ONE dispatch for Delta F = F(theta_T) - F(theta_0): "exact",
  "quadrature", "ais", "ti", "bar", "jarzynski", "none" or "auto".
* ``excess_work``: W_ex = <W> - Delta F; ``measured_bias``: L(theta_T) - L_approx(T) measured from
  the true-loss change and the approximate-objective change sum_k dtheta_k . g_hat_k, never a
  copy of W_ex (Identity 1 says they agree up to O(|dtheta|^2) per update; exactly for energies
  linear in theta).
* ``WorkReport`` (frozen, with ``_se`` twins) and ``combine`` over independent seeds.

Errors: ``*_se`` of a single run are batch means over chain blocks with the theta path held fixed
(the chains' sampling noise only); ``combine`` over independent seeds gives the spread of the
whole run (theta noise included), which is the error to quote when comparing training methods.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ..errors import InputError

F64 = torch.float64
FREE_ENERGY_METHODS = ("auto", "exact", "quadrature", "ais", "ti", "bar", "jarzynski", "none")
FIXED_PATH = "fixed path"
ACROSS_SEEDS = "across seeds"


# ---------------------------------------------------------------------------- the ledger

class Ledger:
    """Per-chain work W_i and heat Q_i in kT, float64, with E_theta(x_i) kept current.

    ``energy_start``: E_{theta_0}(x_i,0) of the N chains (N,). Everything else follows from
    ``record_work`` / ``record_heat`` / ``reassign``. The arrays are per *system*: a chain that a
    replay buffer restarts leaves, and a new system with zero work and heat enters its slot
    (``energy_start`` = its energy on entry). The population figures ``mean_work`` / ``mean_heat``
    are sum_k mean_i(w_ik): the mean over the chains present at each update (equal to
    ``work.mean()`` when no chain restarted). ``n_blocks`` chain blocks (by slot) carry the same
    sums for batch-means errors. ``history``: one row per update, ``HISTORY_COLUMNS``.
    """

    HISTORY_COLUMNS = ("update", "work", "work_var", "heat", "approx_change", "lag", "n_restarts")

    def __init__(self, energy_start: torch.Tensor, *, n_blocks: int = 16):
        e = torch.as_tensor(energy_start).detach().to(F64).reshape(-1).clone()
        if e.numel() < 1:
            raise InputError("the ledger needs at least one chain")
        if not bool(torch.isfinite(e).all()):
            raise InputError("the initial chain energies are not all finite")
        self.energy_start = e
        self.energy_now = e.clone()
        self.work = torch.zeros_like(e)
        self.heat = torch.zeros_like(e)
        nb = max(1, min(int(n_blocks), e.numel()))
        self.block = (torch.arange(e.numel(), device=e.device) * nb) // e.numel()   # slot -> block
        self.block_size = torch.bincount(self.block, minlength=nb).to(F64)
        self.block_work = torch.zeros(nb, dtype=F64, device=e.device)
        self.block_heat = torch.zeros(nb, dtype=F64, device=e.device)
        self.n_updates = 0
        self.n_moves = 0
        self.n_restarts = 0
        self.approx_change = 0.0                      # sum_k dtheta_k . g_hat_k, where given
        self.approx_known = True
        self.history: list[tuple] = []

    @property
    def n_chains(self) -> int:
        return int(self.work.shape[0])

    def _block_mean(self, v: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(self.block_work).index_add_(0, self.block, v) / self.block_size

    def record_work(self, w: torch.Tensor, *, approx_change: float | None = None) -> torch.Tensor:
        """W_i += w_i = E_{theta_new}(x_i) - E_{theta_old}(x_i) (chains frozen); returns w (float64).

        ``approx_change``: this update's dtheta . g_hat (the approximate objective's change), if known."""
        w = torch.as_tensor(w).detach().to(F64).reshape(-1)
        if w.shape[0] != self.n_chains:
            raise InputError(f"work must have one value per chain ({self.n_chains},), got {tuple(w.shape)}")
        self.work.add_(w)
        self.energy_now.add_(w)
        self.block_work.add_(self._block_mean(w))
        self.n_updates += 1
        if approx_change is None:
            self.approx_known = False
            a = math.nan
        else:
            a = float(approx_change)
            self.approx_change += a
        wv, wm = (float(v) for v in torch.var_mean(w, correction=0))
        self.history.append((self.n_updates, wm, wv, 0.0, a, math.nan, self.n_restarts))
        return w

    def record_heat(self, energy_new: torch.Tensor) -> torch.Tensor:
        """Q_i += E_theta(x_i,new) - E_theta(x_i,old) at fixed theta; returns this move's heat."""
        e = torch.as_tensor(energy_new).detach().to(F64).reshape(-1)
        if e.shape[0] != self.n_chains:
            raise InputError(f"chains must keep their number ({self.n_chains}), got {e.shape[0]} energies")
        q = e - self.energy_now
        self._book_move(q, lag=_correlation(self.energy_now, e))
        self.energy_now = e.clone()
        return q

    def reassign(self, source: torch.Tensor, energy_new: torch.Tensor) -> torch.Tensor:
        """A chain move that also relabels systems (a replay buffer): slot j now holds the system that was
        in slot ``source[j]`` (moved to energy ``energy_new[j]``: heat), or a new system if ``source[j] < 0``.

        Returns this move's heat per slot (0 for new systems)."""
        src = torch.as_tensor(source, dtype=torch.long).reshape(-1).to(self.work.device)
        e = torch.as_tensor(energy_new).detach().to(F64).reshape(-1).to(self.work.device)
        if src.shape[0] != self.n_chains or e.shape[0] != self.n_chains:
            raise InputError(f"reassign needs one source and one energy per slot ({self.n_chains})")
        if bool((src >= self.n_chains).any()):
            raise InputError("reassign: a source slot is out of range")
        new = src < 0
        s = src.clamp(min=0)
        q = torch.where(new, torch.zeros_like(e), e - self.energy_now[s])
        lag = _correlation(self.energy_now[s][~new], e[~new]) if bool((~new).any()) else math.nan
        self.work = torch.where(new, torch.zeros_like(e), self.work[s])
        self.heat = torch.where(new, torch.zeros_like(e), self.heat[s])   # _book_move adds this move's heat
        self.energy_start = torch.where(new, e, self.energy_start[s])
        self.n_restarts += int(new.sum())
        self._book_move(q, lag=lag)
        self.energy_now = e.clone()
        return q

    def _book_move(self, q: torch.Tensor, *, lag: float) -> None:
        self.heat.add_(q)
        self.block_heat.add_(self._block_mean(q))
        self.n_moves += 1
        qm = float(q.mean())
        if self.history and self.history[-1][0] == self.n_updates and self.n_updates > 0 \
                and math.isnan(self.history[-1][5]):
            row = self.history[-1]
            self.history[-1] = (row[0], row[1], row[2], qm, row[4], lag, self.n_restarts)
        else:
            self.history.append((self.n_updates, 0.0, 0.0, qm, 0.0, lag, self.n_restarts))

    @property
    def mean_work(self) -> float:
        """<W> per chain: ``work.mean()`` (as mindiss.train) without restarts, else sum_k mean_i w_ik."""
        return float(self.work.mean()) if self.n_restarts == 0 else float(self.block_work @ self.block_size
                                                                          / self.block_size.sum())

    @property
    def mean_heat(self) -> float:
        return float(self.heat.mean()) if self.n_restarts == 0 else float(self.block_heat @ self.block_size
                                                                          / self.block_size.sum())

    def first_law_residual(self, energy_recomputed: torch.Tensor) -> float:
        """max_i |E_theta(x_i) - E_entry(x_i) - W_i - Q_i| per system, energies recomputed afresh."""
        e = torch.as_tensor(energy_recomputed).detach().to(F64).reshape(-1)
        return float((e - self.energy_start - self.work - self.heat).abs().max())

    def relaxation_time(self, window: int = 20) -> float:
        """tau in updates from the one-move energy autocorrelation r = corr_i(E(x_old), E(x_new)) at fixed
        theta, averaged over the last ``window`` moves: tau = -1 / ln r (NaN before the first move)."""
        lags = []
        for row in reversed(self.history):
            if len(lags) >= int(window):
                break
            if math.isfinite(row[5]):
                lags.append(row[5])
        if not lags:
            return math.nan
        r = float(np.mean(lags))
        if r <= 0.0:
            return 0.5
        if r >= 1.0:
            return math.inf
        return -1.0 / math.log(r)

    def means(self) -> "LedgerMeans":
        """<W>, <Q> per chain with batch-means errors over the chain blocks (theta path held fixed)."""
        nb = self.block_work.numel()
        w_se = float(self.block_work.std() / math.sqrt(nb)) if nb > 1 else math.nan
        q_se = float(self.block_heat.std() / math.sqrt(nb)) if nb > 1 else math.nan
        return LedgerMeans(work=self.mean_work, work_se=w_se, heat=self.mean_heat, heat_se=q_se, n_blocks=nb)

    def history_array(self) -> np.ndarray:
        """The per-update rows, columns ``HISTORY_COLUMNS``, float64 (n_rows, 7)."""
        return np.asarray(self.history, dtype=float).reshape(-1, len(self.HISTORY_COLUMNS))

    _STATE = ("energy_start", "energy_now", "work", "heat", "block", "block_size", "block_work", "block_heat",
              "n_updates", "n_moves", "n_restarts", "approx_change", "approx_known")

    def state_dict(self) -> dict:
        """Plain tensors and numbers (safe to save with safetensors / torch.save(weights_only=True))."""
        sd = {k: (v.clone() if torch.is_tensor(v) else v) for k in self._STATE for v in [getattr(self, k)]}
        sd["history"] = torch.as_tensor(self.history_array())
        return sd

    def load_state_dict(self, sd: dict) -> None:
        missing = [k for k in (*self._STATE, "history") if k not in sd]
        if missing:
            raise InputError(f"ledger state is missing {missing}")
        for k in self._STATE:
            v = sd[k]
            setattr(self, k, v.detach().clone() if torch.is_tensor(v) else v)
        self.n_updates, self.n_moves, self.n_restarts = int(self.n_updates), int(self.n_moves), int(self.n_restarts)
        self.approx_change, self.approx_known = float(self.approx_change), bool(self.approx_known)
        self.history = [tuple(float(a) for a in row) for row in torch.as_tensor(sd["history"]).tolist()]


def _correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """corr_i(a_i, b_i) (Pearson), NaN for fewer than 2 chains or no spread."""
    if a.numel() < 2:
        return math.nan
    a, b = a - a.mean(), b - b.mean()
    den = float(torch.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum()) / den if den > 0 else math.nan


@dataclass(frozen=True)
class LedgerMeans:
    """<W>, <Q> per chain (kT) with batch-means errors over chain blocks (theta path held fixed)."""

    work: float
    work_se: float
    heat: float
    heat_se: float
    n_blocks: int


def batch_means(values, n_blocks: int) -> tuple[float, float]:
    """(mean, std of the means of n_blocks contiguous blocks / sqrt(n_blocks))."""
    v = np.asarray(torch.as_tensor(values).detach().cpu().to(F64).numpy() if torch.is_tensor(values) else values,
                   float).reshape(-1)
    nb = int(n_blocks)
    length = len(v) // nb
    if length < 1 or nb < 2:
        return float(v.mean()), math.nan
    means = v[: nb * length].reshape(nb, length).mean(axis=1)
    return float(v.mean()), float(means.std(ddof=1) / math.sqrt(nb))


# ---------------------------------------------------------------------------- Delta F: one dispatch

@dataclass(frozen=True)
class FreeEnergyDifference:
    """Delta F = F(theta_T) - F(theta_0) in kT with its standard error and how it was obtained.

    ``method`` is NaN-free text; when no estimate exists ``delta_free_energy`` is NaN and ``method``
    reads "none (<reason>)"."""

    delta_free_energy: float
    delta_free_energy_se: float
    method: str


def delta_free_energy(energy, theta0, theta1, *, method: str = "auto", exact: float = math.nan,
                      work=None, x0=None, x1=None, gen: torch.Generator | None = None, dt: float = 0.01,
                      mobility: float = 1.0, n_intermediate: int = 50, n_mcmc: int = 1, n_burn: int = 200,
                      ti_points: int = 9, ti_steps: int = 100, box=None, grid_n: int = 257) -> FreeEnergyDifference:
    """Delta F = F(theta1) - F(theta0), kT, by one named method.

    ``exact``: a closed-form Delta F already known (NaN if none); "exact" uses it or the energy's
    ``free_energy``. "quadrature": ln Z on a grid over ``box`` (1-D / 2-D energies,
    ``mindiss.evaluate.grid_log_partition``). "ais" / "ti": from ``x0`` (chain states assumed in
    equilibrium at theta0) with MALA at step ``dt``; "bar": AIS forward plus the reverse switch from
    ``x1`` after ``n_burn`` MALA moves at theta1; "jarzynski": -ln <exp(-W)> of the run's own
    per-chain ``work`` (biased by the feedback of finite N). "auto": exact where known, else "ais"
    from ``x0``. The numbers are those of ``mindiss.train`` for the same inputs and generator."""
    if method not in FREE_ENERGY_METHODS:
        raise InputError(f"free_energy must be one of {FREE_ENERGY_METHODS}, got {method!r}")
    if method == "none":
        return FreeEnergyDifference(math.nan, math.nan, "none (not asked for)")
    if not math.isfinite(exact) and method in ("auto", "exact") and energy is not None:
        try:
            exact = float(energy.free_energy(theta1)) - float(energy.free_energy(theta0))
        except (NotImplementedError, AttributeError):
            exact = math.nan
    if math.isfinite(exact) and method in ("auto", "exact"):
        return FreeEnergyDifference(float(exact), 0.0, "exact")
    if method == "exact":
        return FreeEnergyDifference(math.nan, math.nan, "none (no exact free energy for this energy; choose an "
                                                        "estimator)")
    from ..estimators import free_energy as _fe

    if method == "jarzynski":
        if work is None:
            return FreeEnergyDifference(math.nan, math.nan, "none (no per-chain work for Jarzynski)")
        est = _fe.jarzynski(torch.as_tensor(work).detach().cpu())
        return FreeEnergyDifference(est.delta_free_energy, est.standard_error,
                                    "jarzynski (the run's own work; biased by feedback at finite N)")
    if method == "quadrature":
        if box is None:
            return FreeEnergyDifference(math.nan, math.nan, "none (quadrature needs box=)")
        from ..estimators.evaluate import grid_log_partition

        q0 = grid_log_partition(energy, theta0, box=box, n=grid_n)
        q1 = grid_log_partition(energy, theta1, box=box, n=grid_n)
        se = math.hypot(q0.error_estimate, q1.error_estimate)
        return FreeEnergyDifference(q0.log_partition - q1.log_partition, se,
                                    f"quadrature ({grid_n} points per axis)")
    if x0 is None:
        return FreeEnergyDifference(math.nan, math.nan, "none (no chain states to start an estimator from)")
    if not isinstance(gen, torch.Generator):
        raise InputError(f"free_energy={method!r} draws MALA noise: pass gen=torch.Generator()")
    theta0, theta1 = torch.as_tensor(theta0), torch.as_tensor(theta1)
    try:
        if method == "ti":
            thetas = torch.stack([theta0 + f * (theta1 - theta0) for f in np.linspace(0.0, 1.0, ti_points)])
            est = _fe.thermodynamic_integration_sampled(energy, thetas, n_chains=x0.shape[0], n_steps=ti_steps,
                                                        dt=dt, mobility=mobility, gen=gen, x0=x0)
        elif method == "bar":
            from ..backends.samplers import MALA

            kw = {"n_intermediate": n_intermediate, "n_mcmc": n_mcmc, "dt": dt, "mobility": mobility}
            fwd = _fe.switching_work(energy, theta0, theta1, n_chains=x0.shape[0], gen=gen, x0=x0, **kw)
            if x1 is None:
                return FreeEnergyDifference(math.nan, math.nan, "none (BAR needs the final chain states x1)")
            y = torch.as_tensor(x1).to(F64).clone()
            mala = MALA()
            for _ in range(n_burn):
                y = mala.step(energy, theta1, y, dt=dt, mobility=mobility, gen=gen)
            rev = _fe.switching_work(energy, theta1, theta0, n_chains=y.shape[0], gen=gen, x0=y, **kw)
            est = _fe.bar(fwd, rev)
        else:
            est = _fe.ais(energy, theta0, theta1, n_chains=x0.shape[0], n_intermediate=n_intermediate,
                          n_mcmc=n_mcmc, dt=dt, mobility=mobility, gen=gen, x0=x0)
    except (InputError, NotImplementedError) as exc:
        return FreeEnergyDifference(math.nan, math.nan, f"none ({exc})")
    label = est.method if method != "auto" else f"{est.method} (auto)"
    return FreeEnergyDifference(est.delta_free_energy, est.standard_error, label)


# ---------------------------------------------------------------------------- excess work and bias

def excess_work(work: float, work_se: float, delta_f: float, delta_f_se: float) -> tuple[float, float]:
    """W_ex = <W> - Delta F (kT per chain), error in quadrature."""
    se = math.hypot(work_se, delta_f_se) if math.isfinite(delta_f_se) else math.nan
    return float(work - delta_f), float(se)


@dataclass(frozen=True)
class Bias:
    """b = [L(theta_T) - L(theta_0)] - [L_approx(T) - L_approx(0)] in nats (kT): the PCD bias, measured.

    ``loss_true_change`` = Delta E_data - Delta F; ``loss_approx_change`` = sum_k dtheta_k . g_hat_k.
    ``residual`` = b - W_ex: zero for energies linear in theta (Identity 1), O(|dtheta|^2) per update
    otherwise. NaN with ``reason`` where the true loss is not known."""

    bias: float
    bias_se: float
    loss_true_change: float
    loss_true_change_se: float
    loss_approx_change: float
    residual: float
    residual_se: float
    reason: str


def measured_bias(data_energy_change: float, data_energy_change_se: float, delta_f: FreeEnergyDifference,
                  loss_approx_change: float, excess: tuple[float, float]) -> Bias:
    """b = (Delta E_data - Delta F) - sum_k dtheta_k . g_hat_k; NaN with a reason where a term is missing."""
    reasons = []
    if not math.isfinite(data_energy_change):
        reasons.append("no data given (WorkTracker(data=...)) for the true loss")
    if not math.isfinite(delta_f.delta_free_energy):
        reasons.append(f"no Delta F: {delta_f.method}")
    if not math.isfinite(loss_approx_change):
        reasons.append("the approximate objective's change sum dtheta . g_hat is unknown (give the gradient: "
                       "p.grad of an nn.Module energy, or after_update(theta, grad=g_hat))")
    if reasons:
        return Bias(math.nan, math.nan, math.nan, math.nan, loss_approx_change, math.nan, math.nan, "; ".join(reasons))
    true = data_energy_change - delta_f.delta_free_energy
    true_se = math.hypot(data_energy_change_se, delta_f.delta_free_energy_se)
    b = true - loss_approx_change
    return Bias(float(b), float(true_se), float(true), float(true_se), float(loss_approx_change),
                float(b - excess[0]), float(math.hypot(true_se, excess[1])), "measured")


# ---------------------------------------------------------------------------- the report

@dataclass(frozen=True)
class WorkReport:
    """W_ex = <W> - Delta F per chain (kT) and the measured PCD bias, with errors that say what they are.

    ``error_kind``: "fixed path" (one run: batch means over chain blocks, the theta path held fixed;
    sampling noise of the chains only) or "across seeds" (``combine`` of independent runs: the whole
    run's spread, theta noise included). ``bias`` is measured (see ``Bias``), NaN with ``bias_reason``
    otherwise; ``bias_residual`` = bias - excess_work (the O(|dtheta|^2) part). ``n_restarts``:
    chains a replay buffer restarted (they left the ledger and re-entered as new systems)."""

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
    bias_reason: str
    bias_residual: float
    bias_residual_se: float
    loss_true_change: float
    loss_true_change_se: float
    loss_approx_change: float
    first_law_residual: float
    n_chains: int
    n_updates: int
    n_moves: int
    n_restarts: int
    error_kind: str
    error_method: str
    notes: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        """Human-readable rows, each saying what the number is."""
        out = [f"work <W>            {self.work:.4g} +- {self.work_se:.2g} kT per chain",
               f"Delta F             {self.delta_free_energy:.4g} +- {self.delta_free_energy_se:.2g} "
               f"({self.free_energy_method})",
               f"excess work W_ex    {self.excess_work:.4g} +- {self.excess_work_se:.2g} kT (= <W> - Delta F)"]
        if math.isfinite(self.bias):
            out.append(f"measured bias       {self.bias:.4g} +- {self.bias_se:.2g} nats (true - approximate loss "
                       f"change; minus W_ex: {self.bias_residual:.2g})")
        else:
            out.append(f"measured bias       not measured: {self.bias_reason}")
        out.append(f"errors              {self.error_kind}: {self.error_method}")
        if self.n_restarts:
            out.append(f"restarted chains    {self.n_restarts} (left the ledger, re-entered as new systems)")
        return out


def combine(reports) -> WorkReport:
    """Mean over independent seeds; every error = std over seeds / sqrt(R) ("across seeds")."""
    reports = list(reports)
    if len(reports) < 2:
        raise InputError(f"combine needs at least 2 independent reports, got {len(reports)}")

    def ms(name):
        v = np.asarray([getattr(r, name) for r in reports], float)
        return float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v)))

    work, work_se = ms("work")
    heat, heat_se = ms("heat")
    dfe, dfe_se = ms("delta_free_energy")
    ex, ex_se = ms("excess_work")
    bias, bias_se = ms("bias")
    res, res_se = ms("bias_residual")
    true, true_se = ms("loss_true_change")
    approx, _ = ms("loss_approx_change")
    reasons = sorted({r.bias_reason for r in reports if r.bias_reason != "measured"})
    return WorkReport(work=work, work_se=work_se, heat=heat, heat_se=heat_se, delta_free_energy=dfe,
                      delta_free_energy_se=dfe_se,
                      free_energy_method=", ".join(sorted({r.free_energy_method for r in reports})),
                      excess_work=ex, excess_work_se=ex_se, bias=bias, bias_se=bias_se,
                      bias_reason="; ".join(reasons) if reasons else "measured", bias_residual=res,
                      bias_residual_se=res_se, loss_true_change=true, loss_true_change_se=true_se,
                      loss_approx_change=approx,
                      first_law_residual=max(r.first_law_residual for r in reports),
                      n_chains=sum(r.n_chains for r in reports), n_updates=reports[0].n_updates,
                      n_moves=reports[0].n_moves, n_restarts=sum(r.n_restarts for r in reports),
                      error_kind=ACROSS_SEEDS,
                      error_method=f"std over {len(reports)} independent seeds / sqrt({len(reports)})",
                      notes=sorted({n for r in reports for n in r.notes}))


__all__ = ["Ledger", "LedgerMeans", "batch_means", "FreeEnergyDifference", "delta_free_energy", "excess_work",
           "Bias", "measured_bias", "WorkReport", "combine", "FREE_ENERGY_METHODS"]
