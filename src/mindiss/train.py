"""``train()``: the one update loop of mindiss (design.md, "The canonical update").

For every update k (an impulse is an update whose chain move has length 0):

1. g_hat = E_data[d_theta E] - E_chains[d_theta E]
2. theta_new = theta - lr_k g_hat          (or the next point of a prescribed protocol)
3. work_i += E_{theta_new}(x_i) - E_theta(x_i), chains frozen  (Crooks step a)
4. chains move at theta_new for dt_k; heat_i += E(x_new) - E(x_old)   (Crooks step b)
5. history / observers record

The approximate objective accumulates L_approx += (theta_new - theta) . g_hat, so that
Identity 1 reads  L(theta_T) - L(theta_0) - (L_approx change) = W_ex = <W> - Delta F.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from . import bounds as _bounds
from .chains import GaussianMoments, ParticleChains
from .data import as_dataset
from .energies import Energy, HarmonicTrap
from .errors import DivergenceError, InputError, require_positive, require_positive_int
from .samplers import make_sampler
from .schedules import DiscreteSchedule, Schedule

BACKENDS = ("particles", "moments")
#: |mean work| or |mean heat| per chain beyond this (kT) is treated as a diverged run.
LEDGER_LIMIT = 1e12


@dataclass(frozen=True)
class ThetaProtocol:
    """A prescribed parameter path: update k sets theta to ``thetas[k + 1]`` (open-loop replay).

    ``thetas`` has shape (n_updates + 1, P) (row 0 is theta_0), ``dt`` the chain move after each
    update. Replaying a training run's recorded path on fresh chains removes the feedback of the
    chains on theta, so Jarzynski's equality holds exactly.
    """

    thetas: np.ndarray
    dt: np.ndarray

    @property
    def n_updates(self) -> int:
        return len(self.dt)

    @property
    def duration(self) -> float:
        return float(np.sum(self.dt))


@dataclass(frozen=True)
class History:
    """Per-update records (row 0: the initial state). Columns by name: ``history["work"]``."""

    columns: tuple
    values: np.ndarray

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self.values[:, self.columns.index(name)]
        except ValueError:
            raise KeyError(f"no column {name!r}; columns are {self.columns}") from None

    def block(self, prefix: str) -> np.ndarray:
        """All columns named prefix_0, prefix_1, ... as an array of shape (rows, n)."""
        idx = [i for i, c in enumerate(self.columns) if c.startswith(prefix + "_") and c[len(prefix) + 1:].isdigit()]
        return self.values[:, idx]

    def to_csv(self, path) -> None:
        from .io import atomic_write_text

        lines = [",".join(self.columns)]
        lines += [",".join(repr(float(v)) for v in row) for row in self.values]
        atomic_write_text(path, "\n".join(lines) + "\n")


@dataclass(frozen=True)
class TrainResult:
    """Outcome of ``train``: thermodynamic ledger (kT), losses, residuals of the identities.

    Monte-Carlo figures are means over independent replicas; ``*_se`` is their standard error
    (0 for the deterministic moments backend, NaN for a single particle replica).
    """

    work: float
    work_se: float
    excess_work: float
    excess_work_se: float
    delta_free_energy: float
    loss_true_change: float
    loss_approx_change: float
    final_loss: float
    theta0: list
    theta_final: list
    theta_final_se: list
    n_updates: int
    n_chains: float
    n_replicas: int
    backend: str
    sampler: str
    duration: float
    bound: float | None
    identity1_residual: float       # max over replicas |(dL_true - dL_approx) - W_ex|
    first_law_residual: float       # max over chains |Delta E - W - Q|
    kl_initial: float | None        # moments backend: KL(rho_0 || p_theta_0)
    kl_final: float | None          # moments backend: KL(rho_T || p_theta_T)
    entropy_production: float | None
    acceptance_rate: float | None   # MALA only
    replica_excess_work: list
    replica_theta_final: list
    notes: list                     # caveats that qualify the figures (e.g. sampler bias)
    history: History
    thetas: np.ndarray              # theta after every update (row 0: theta_0), replica 0
    dts: np.ndarray
    temperature_kelvin: float = 300.0
    chain_work: np.ndarray | None = field(default=None, repr=False)   # per chain, replica 0
    final_chains: torch.Tensor | None = field(default=None, repr=False)

    @property
    def energy_joules(self) -> float:
        """The dissipated energy W_ex k_B T in joules at ``temperature_kelvin``."""
        return _bounds.joules(self.excess_work, self.temperature_kelvin)

    @property
    def bias(self) -> float:
        """L(theta_T) - L_approx(T): the under-reporting of the approximate objective."""
        return self.loss_true_change - self.loss_approx_change

    def protocol(self) -> ThetaProtocol:
        """The recorded theta path (replica 0) as a prescribed protocol for ``replay``."""
        return ThetaProtocol(self.thetas.copy(), self.dts.copy())

    def to_dict(self) -> dict:
        keys = ["work", "work_se", "excess_work", "excess_work_se", "delta_free_energy",
                "loss_true_change", "loss_approx_change", "final_loss", "theta0", "theta_final",
                "n_updates", "n_chains", "n_replicas", "backend", "sampler", "duration", "bound",
                "identity1_residual", "first_law_residual", "kl_initial", "kl_final",
                "entropy_production", "acceptance_rate", "replica_excess_work",
                "theta_final_se", "replica_theta_final", "notes", "temperature_kelvin"]
        out = {k: getattr(self, k) for k in keys}
        out["energy_joules"] = self.energy_joules
        out["bias"] = self.bias

        def clean(v):
            if isinstance(v, float):
                return None if not math.isfinite(v) else v
            if isinstance(v, (list, tuple)):
                return [clean(a) for a in v]
            return v

        return {k: clean(v) for k, v in out.items()}


def _seeds(seed: int, n: int) -> list[tuple[int, int]]:
    """Independent (chains, data) generator seeds for each replica."""
    children = np.random.SeedSequence(int(seed)).spawn(n)
    return [tuple(int(a) for a in c.generate_state(2, dtype=np.uint64) % (2**63)) for c in children]


def _as_theta(theta0, energy, device) -> torch.Tensor:
    try:
        theta = torch.as_tensor(np.asarray(theta0, dtype=float), dtype=torch.float64, device=device).reshape(-1)
    except (TypeError, ValueError):
        raise InputError(f"theta0 must be a vector of numbers, got {theta0!r}") from None
    if theta.numel() == 1 and energy.n_params > 1:
        theta = theta.expand(energy.n_params).clone()
    if theta.numel() != energy.n_params:
        raise InputError(f"theta0 has {theta.numel()} entries but {energy!r} has {energy.n_params} parameters")
    if not bool(torch.isfinite(theta).all()):
        raise InputError("theta0 contains NaN or infinite values")
    msg = energy.check_theta(theta)
    if msg:
        raise InputError(f"theta0 is outside the energy's domain: {msg}")
    return theta


def _steps(schedule, n_steps, duration):
    """(per-update lr or None, per-update dt, prescribed thetas or None)."""
    if isinstance(schedule, ThetaProtocol):
        return None, np.asarray(schedule.dt, float), np.asarray(schedule.thetas, float)
    if isinstance(schedule, Schedule):
        if duration is not None and not math.isclose(float(duration), schedule.duration, rel_tol=1e-12):
            raise InputError(f"duration {duration} differs from the schedule's duration {schedule.duration}")
        schedule = schedule.discretise(n_steps)
    if not isinstance(schedule, DiscreteSchedule):
        raise InputError(f"schedule must be a Schedule, DiscreteSchedule or ThetaProtocol, got {type(schedule).__name__}")
    return np.asarray(schedule.lr, float), np.asarray(schedule.dt, float), None


def _initial_chains(backend, energy, theta, chains, n_chains, gen, dtype):
    if backend == "moments":
        if chains is None:
            return GaussianMoments.equilibrium(energy, theta)
        if isinstance(chains, tuple) and len(chains) == 2:
            return GaussianMoments(chains[0], chains[1], energy, theta)
        raise InputError("backend 'moments' takes chains=(mean, variance)")
    if chains is None:
        return ParticleChains.equilibrium(energy, theta, n_chains, gen=gen, dtype=dtype)
    if isinstance(chains, tuple) and len(chains) == 2:  # draw N(mean, variance) exactly
        mean = torch.as_tensor(np.asarray(chains[0], float), dtype=torch.float64).reshape(-1).expand(energy.dim)
        var = torch.as_tensor(np.asarray(chains[1], float), dtype=torch.float64).reshape(-1).expand(energy.dim)
        if not bool((var > 0).all()):
            raise InputError("chain variance must be positive")
        z = torch.empty((n_chains, energy.dim), dtype=torch.float64).normal_(generator=gen)
        return ParticleChains((mean + var.sqrt() * z).to(dtype).to(theta.device), energy, theta)
    x = torch.as_tensor(chains)
    return ParticleChains(x.to(device=theta.device, dtype=dtype).clone(), energy, theta)


def _loss(energy, data, theta) -> float:
    """L(theta) = E_data[E_theta] - F(theta) where it is known exactly, else NaN."""
    if getattr(energy, "gaussian", False):
        return energy.loss(data.mean, data.variance, theta)
    try:
        return float(energy.energy(data.samples, theta).mean()) - energy.free_energy(theta)
    except NotImplementedError:
        return math.nan


def _free_energy(energy, theta) -> float:
    try:
        return energy.free_energy(theta)
    except NotImplementedError:
        return math.nan


def _divergence_cause(sampler, energy, dt, mobility) -> str:
    if sampler.name == "euler" and hasattr(energy, "variance"):
        return (f"the Euler-Maruyama step is too large for the stiffness (mu dt / s = "
                f"{mobility * dt / energy.variance:.3g}; it must be well below 2)")
    return "the learning rate or chain step is too large for this energy"


def train(energy: Energy, data, *, schedule, theta0, mobility: float = 1.0, duration: float | None = None,
          n_steps: int = 1000, n_chains: int = 100_000, n_replicas: int | None = None,
          sampler="exact", backend: str = "particles", seed: int = 0, dtype=torch.float32,
          device="cpu", chains=None, data_term: str = "moments", record_every: int = 1,
          temperature_kelvin: float = 300.0, observers: Sequence[Callable] = (),
          progress: bool = False, keep_chains: bool = False) -> TrainResult:
    """Persistent-chain training of ``energy`` on ``data`` with a learning-rate ``schedule``.

    dx = -mu grad_x E dt + sqrt(2 mu) dW between updates; theta_new = theta - lr_k g_hat.
    ``chains``: None (exact equilibrium of p_theta0), a tensor of states (particles), or
    (mean, variance) of a Gaussian start. ``n_replicas`` independent runs give the errors
    (default 4 for particles, 1 for moments). ``observers`` are called as
    ``obs(update, theta, chains)`` after every update.
    """
    mobility = require_positive("mobility", mobility)
    temperature_kelvin = require_positive("temperature_kelvin", temperature_kelvin)
    if duration is not None:
        require_positive("duration", duration)
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    if data_term not in ("moments", "samples"):
        raise InputError(f"data_term must be 'moments' or 'samples', got {data_term!r}")
    n_chains = require_positive_int("n_chains", n_chains)
    record_every = require_positive_int("record_every", record_every)
    if n_replicas is None:
        n_replicas = 1 if backend == "moments" else 4
    n_replicas = require_positive_int("n_replicas", n_replicas)
    dtype = {"float32": torch.float32, "float64": torch.float64}.get(dtype, dtype)
    if dtype not in (torch.float32, torch.float64):
        raise InputError(f"dtype must be float32 or float64, got {dtype!r}")
    sampler_obj = make_sampler(sampler)
    sampler_obj.check(energy)
    theta_start = _as_theta(theta0, energy, device)
    dataset = as_dataset(data, energy.dim, device=device)
    lrs, dts, path = _steps(schedule, n_steps, duration)
    if path is not None and path.shape != (len(dts) + 1, energy.n_params):
        raise InputError(f"protocol thetas must have shape ({len(dts) + 1}, {energy.n_params}), got {path.shape}")
    n_updates = len(dts)

    bar = None
    if progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(TextColumn("[bold]train[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                       TimeRemainingColumn(), transient=True)
        bar.start()
        task = bar.add_task(f"{backend}/{sampler_obj.name}", total=n_replicas * n_updates)

    runs = []
    try:
        for replica, (chain_seed, data_seed) in enumerate(_seeds(seed, n_replicas)):
            gen = torch.Generator(device=device).manual_seed(chain_seed)
            data_r = dataset
            if data_term == "samples" and dataset.samples is None and backend == "particles":
                from .data import Gaussian as _G

                dgen = torch.Generator().manual_seed(data_seed)
                draws = _G(dataset.mean.cpu().numpy(), dataset.variance.cpu().numpy()).sample(n_chains, gen=dgen)
                data_r = as_dataset(draws, energy.dim, device=device)
            state = _initial_chains(backend, energy, theta_start, chains, n_chains, gen, dtype)
            run = _run_replica(energy, data_r, state, theta_start, lrs, dts, path, mobility, sampler_obj, gen,
                               record_every, observers if replica == 0 else (),
                               (lambda: bar.advance(task)) if bar else None)
            runs.append(run)
    finally:
        if bar:
            bar.stop()

    total_time = schedule.duration if isinstance(schedule, Schedule) else float(np.sum(dts))
    return _summarise(runs, energy, theta_start, dts, total_time, backend, sampler_obj, n_chains, mobility,
                      temperature_kelvin, keep_chains, chains is None)


def replay(energy: Energy, data, protocol: ThetaProtocol, **kwargs) -> TrainResult:
    """Run a prescribed theta path open-loop on fresh chains (same loop, no feedback)."""
    return train(energy, data, schedule=protocol, theta0=protocol.thetas[0], **kwargs)


def _run_replica(energy, data, state, theta, lrs, dts, path, mobility, sampler, gen, record_every,
                 observers, tick):
    """The canonical update loop for one replica."""
    n_updates = len(dts)
    fe0 = _free_energy(energy, theta)
    loss0 = _loss(energy, data, theta)
    gaussian = getattr(energy, "gaussian", False)
    if gaussian:
        data_grad = lambda th: energy.expected_grad_theta(data.mean, data.variance, th)  # noqa: E731
    else:
        data_grad = lambda th: energy.mean_grad_theta(data.samples, th)  # noqa: E731
    if path is not None:
        path_t = torch.as_tensor(path, dtype=torch.float64, device=theta.device)

    d, P = energy.dim, energy.n_params
    columns = ("update", "t", "lr", "dt", *[f"theta_{i}" for i in range(P)],
               *[f"chain_mean_{i}" for i in range(d)], "work", "heat", "delta_free_energy",
               "excess_work", "loss_true", "loss_approx")
    rows = []
    thetas = np.empty((n_updates + 1, P))
    thetas[0] = theta.cpu().numpy()
    t_now, loss_approx = 0.0, 0.0

    def record(k, lr, dt):
        fe = _free_energy(energy, theta) - fe0
        work, heat = state.mean_work(), state.mean_heat()
        if not (abs(work) < LEDGER_LIMIT and abs(heat) < LEDGER_LIMIT):
            raise DivergenceError(k, f"the ledger left the finite range (mean work {work:.3g}, mean heat "
                                  f"{heat:.3g} kT per chain): chains escaping to huge energies",
                                  _divergence_cause(sampler, energy, dt or float(dts[max(k - 2, 0)]), mobility)
                                  if path is None and sampler.name == "euler" else
                                  "the learning rate or chain step is too large for this energy")
        rows.append([k, t_now, lr, dt, *theta.tolist(), *state.chain_mean().tolist(), work,
                     heat, fe, work - fe, _loss(energy, data, theta), loss0 + loss_approx])

    record(0, 0.0, 0.0)
    for k in range(n_updates):
        dt = float(dts[k])
        g = data_grad(theta) - state.mean_grad_theta(energy, theta)
        if not bool(torch.isfinite(g).all()):
            raise DivergenceError(k + 1, "g_hat (the chain statistics) is not finite",
                                  _divergence_cause(sampler, energy, float(dts[max(k - 1, 0)]), mobility))
        if path is None:
            lr = float(lrs[k])
            theta_new = theta - lr * g
        else:
            lr = math.nan
            theta_new = path_t[k + 1]
        if not bool(torch.isfinite(theta_new).all()):
            raise DivergenceError(k + 1, "theta is not finite", "the learning rate is too large")
        msg = energy.check_theta(theta_new)
        if msg:
            raise DivergenceError(k + 1, msg, "the learning rate is too large for this parameter")
        state.apply_update(energy, theta, theta_new)
        loss_approx += float(torch.dot(theta_new - theta, g))
        theta = theta_new
        if dt > 0:
            state.move(energy, theta, dt, mobility, sampler, gen)
            t_now += dt
        thetas[k + 1] = theta.cpu().numpy()
        if (k + 1) % record_every == 0 or k + 1 == n_updates:
            record(k + 1, lr, dt)
        for obs in observers:
            obs(k + 1, theta, state)
        if tick:
            tick()
    if not state.finite():
        raise DivergenceError(n_updates, "chain energies are not finite", "the chain step is too large")
    return {"state": state, "theta": theta, "loss0": loss0, "loss_approx": loss_approx, "fe0": fe0,
            "history": History(columns, np.asarray(rows, dtype=float)), "thetas": thetas,
            "data": data}


def _mean_se(values):
    v = np.asarray(values, float)
    if len(v) < 2:
        return float(v[0]), math.nan
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v)))


def _notes(energy, sampler, dts, mobility, n_replicas, deterministic) -> list:
    """Caveats that qualify the reported figures; printed by the CLI and kept in result.json."""
    notes = []
    dt = float(np.max(dts)) if len(dts) else 0.0
    if sampler.name == "euler":
        ratio = ""
        if isinstance(energy, HarmonicTrap):
            h = mobility * dt / energy.variance
            ratio = f"; on this trap the stationary variance is s / (1 - mu dt / 2s) = {1 / (1 - h / 2):.6g} s"
        notes.append("Euler-Maruyama does not leave p_theta invariant: work, heat and Jarzynski carry an "
                     f"O(dt) bias (mu dt = {mobility * dt:.3g}){ratio}.")
    if sampler.name == "mala":
        notes.append("MALA keeps p_theta exactly invariant but its dynamics are O(dt): the mean work of a "
                     f"driven run is biased at O(dt) (mu dt = {mobility * dt:.3g}); acceptance rate "
                     f"{sampler.acceptance_rate:.3f}.")
    if not deterministic and n_replicas < 2:
        notes.append("one replica: no error estimate (theta noise is shared by all chains; use n_replicas >= 2).")
    return notes


def _summarise(runs, energy, theta0, dts, total_time, backend, sampler, n_chains, mobility, temperature_kelvin,
               keep_chains, equilibrium_start) -> TrainResult:
    works, excess, dfe, dl_true, dl_approx, ident, first_law, finals = [], [], [], [], [], [], [], []
    for r in runs:
        st, theta = r["state"], r["theta"]
        w = st.mean_work()
        fe = _free_energy(energy, theta) - r["fe0"]
        works.append(w); dfe.append(fe); excess.append(w - fe)
        dl_true.append(_loss(energy, r["data"], theta) - r["loss0"])
        dl_approx.append(r["loss_approx"])
        ident.append(abs(dl_true[-1] - dl_approx[-1] - excess[-1]))
        first_law.append(st.first_law_residual(energy, theta))
        finals.append(theta.cpu().numpy())
    deterministic = backend == "moments"
    work, work_se = _mean_se(works)
    ex, ex_se = _mean_se(excess)
    if deterministic:
        work_se = ex_se = 0.0
    finals = np.asarray(finals)
    theta_final = finals.mean(axis=0)
    theta_final_se = (finals.std(axis=0, ddof=1) / math.sqrt(len(finals)) if len(finals) > 1
                      else np.full(finals.shape[1], 0.0 if deterministic else math.nan))
    bound = None
    if isinstance(energy, HarmonicTrap) and equilibrium_start:
        bound = _bounds.harmonic(energy.variance, mobility, total_time,
                                 theta0.cpu().numpy(), theta_final).excess_work
    r0 = runs[0]
    st0 = r0["state"]
    moments = isinstance(st0, GaussianMoments)
    return TrainResult(
        work=work, work_se=work_se, excess_work=ex, excess_work_se=ex_se,
        delta_free_energy=float(np.mean(dfe)), loss_true_change=float(np.mean(dl_true)),
        loss_approx_change=float(np.mean(dl_approx)),
        final_loss=float(np.mean([r["loss0"] for r in runs]) + np.mean(dl_true)),
        theta0=theta0.cpu().tolist(), theta_final=theta_final.tolist(),
        theta_final_se=theta_final_se.tolist(), n_updates=len(dts),
        n_chains=math.inf if moments else n_chains, n_replicas=len(runs), backend=backend,
        sampler=sampler.name, duration=total_time, bound=bound,
        identity1_residual=float(max(ident)), first_law_residual=float(max(first_law)),
        kl_initial=st0.kl_initial if moments else None,
        kl_final=energy.kl(st0.mean, st0.var, r0["theta"]) if moments else None,
        entropy_production=st0.entropy_production if moments else None,
        acceptance_rate=sampler.acceptance_rate if sampler.name == "mala" else None,
        replica_excess_work=[float(e) for e in excess], replica_theta_final=finals.tolist(),
        notes=_notes(energy, sampler, dts, mobility, len(runs), deterministic), history=r0["history"], thetas=r0["thetas"],
        dts=np.asarray(dts, float), temperature_kelvin=temperature_kelvin,
        chain_work=st0.work.cpu().numpy() if keep_chains and not moments else None,
        final_chains=st0.x.cpu() if keep_chains and not moments else None,
    )
