"""``check_contract``: every input of ``train`` validated and every path chosen once, before the
first update (the torchsde pattern). It returns a frozen ``Plan``; the update loop reads the plan
and never probes an energy, a backend or a preconditioner for what it can do.

Rules decided here and nowhere else (each refusal names both sides of a bad pairing):

* backend x energy: "moments" needs a quadratic energy (``capabilities.quadratic``);
  "fokker_planck" a one-dimensional one, with data samples unless quadratic;
* backend x sampler: "moments" moves by "exact" or "euler"; "fokker_planck" by the exact generator;
  on particles the sampler's own ``check(energy)`` (e.g. "exact" needs a quadratic energy);
* backend x preconditioner: the low-rank Fisher needs per-chain gradients (particles);
* the g_hat path: fused (one backward over data and chains: ``capabilities.fused_g_hat``, no
  preconditioner, unsharded particles with data rows), plain (data term minus E_rho[d_theta E]), or
  with statistics for a preconditioner; the data term from every sample, a minibatch, or cached /
  moments (``backends.data_mean_grad_theta``);
* host arithmetic for few parameters (P <= 64: Python floats are cheaper than tensor ops);
* ``step_mode`` (opt-in): "fused" needs a HarmonicTrap or ExpFamily on unsharded particles
  (``backends.fused.fused_problem``), "compiled" a NeuralEnergy on unsharded particles and a torch
  with ``torch.compile`` (``energies.compiled.compiled_problem``; the plan's energy is then the
  ``CompiledNeuralEnergy``).
"""
from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..backends import sharded as _dist
from ..backends.dispatch import BACKENDS, DETERMINISTIC
from ..pairings import backend_problem
from ..data.base import Dataset, as_dataset
from ..errors import InputError, require_positive, require_positive_int
from .ledger import FREE_ENERGY_METHODS as LEDGER_METHODS
from ..rates.preconditioners import make_preconditioner
from .results import ThetaProtocol
from ..backends.samplers import make_sampler
from ..rates.schedules import DiscreteSchedule, Schedule
from .options import KEEP_THETAS_LIMIT, Checkpointing, Dynamics, Ensemble, Estimation, Output

#: the Delta F methods of ``ledger.delta_free_energy`` that a run can feed by itself ("quadrature" needs a
#: box, "bar" the final chains moved at theta_T, "none" is the tracker's)
FREE_ENERGY_METHODS = tuple(m for m in LEDGER_METHODS if m not in ("quadrature", "bar", "none"))
DATA_TERMS = ("moments", "samples")
STEP_MODES = ("default", "fused", "compiled")
#: at most this many parameters: the update's host-side arithmetic uses Python floats
SMALL_PARAMS = 64
DEFAULT_N_CHAINS = 100_000


@dataclass(frozen=True)
class Plan:
    """Everything ``train`` decided before the first update (validated inputs and chosen paths)."""

    energy: Any
    dataset: Dataset
    sampler: Any                 # a Sampler instance
    backend: str
    theta0: torch.Tensor         # float64 (P,)
    lrs: np.ndarray | None       # per-update learning rates (NaN placeholders when tau is estimated)
    dts: np.ndarray              # per-update chain-move lengths
    path: np.ndarray | None      # a prescribed theta path (open-loop replay), else None
    total_time: float
    mobility: float
    n_chains: int
    n_replicas: int
    dtype: torch.dtype
    device: torch.device
    seed: int
    chains: Any                  # the initial-chain specification
    keep_chains: bool
    shards: int
    comm: Any
    preconditioner: Any          # a prototype (``fresh()`` per replica) or None
    tau_mode: str | None         # "auto" / "online": alpha(t)'s tau estimated per replica
    schedule: Any
    n_steps: int
    data_term: str
    batch_size: int | None
    free_energy: str
    temperature_kelvin: float
    record_every: int
    history_file: str | None
    keep_thetas: bool            # theta after every update kept (replica 0; in memory and checkpoints; never
                                 # with a history_file)
    observers: tuple
    progress: bool
    checkpoint: Any
    checkpoint_every: int
    resume: bool
    stop: Any
    on_start: Any
    # -- chosen paths
    draw_data: bool              # draw data samples from the data moments per replica (non-quadratic energy)
    fused: bool                  # g_hat from energy.grad_hat(data rows, chains, theta)
    data_rows: str | None        # "all" / "minibatch": the data term from rows; None: cached / moments
    small: bool                  # host floats for the approximate objective and the checks
    step_mode: str = "default"   # "fused" (backends.fused) / "compiled" (energies.compiled): opt-in

    @property
    def n_updates(self) -> int:
        return len(self.dts)

    @property
    def context(self) -> bool:
        """A replica needs a PreconditionContext (a preconditioner, or tau estimated from chains)."""
        return self.preconditioner is not None or self.tau_mode is not None


def _seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    if int(seed) < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _device(device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InputError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {device!r}: CUDA is not available on this machine (use device='cpu')")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise InputError(f"device must be 'cpu' or a CUDA device, got {device!r}")
    return dev


def _dtype(dtype) -> torch.dtype:
    dt = {"float32": torch.float32, "float64": torch.float64}.get(dtype, dtype) if isinstance(dtype, str) else dtype
    if dt not in (torch.float32, torch.float64):
        raise InputError(f"dtype must be float32 or float64, got {dtype!r}")
    return dt


def as_theta(theta0, energy, device) -> torch.Tensor:
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


def tau_mode(schedule) -> str | None:
    """'auto' / 'online' for schedules whose rates depend on a tau that train() estimates."""
    tau = schedule.params.get("tau") if isinstance(schedule, Schedule) else None
    return tau if isinstance(tau, str) else None


def _steps(schedule, n_steps, duration):
    """(per-update lr or None, per-update dt, prescribed thetas or None)."""
    if isinstance(schedule, ThetaProtocol):
        return None, np.asarray(schedule.dt, float), np.asarray(schedule.thetas, float)
    if isinstance(schedule, Schedule):
        if duration is not None and not math.isclose(float(duration), schedule.duration, rel_tol=1e-12):
            raise InputError(f"duration {duration} differs from the schedule's duration {schedule.duration}")
        if tau_mode(schedule):  # learning rates follow tau, estimated per replica: layout only here
            d = schedule.at_tau(1.0).discretise(n_steps)
            return np.full(len(d.dt), np.nan), np.asarray(d.dt, float), None
        schedule = schedule.discretise(n_steps)
    if not isinstance(schedule, DiscreteSchedule):
        raise InputError(f"schedule must be a Schedule, DiscreteSchedule or ThetaProtocol, got {type(schedule).__name__}")
    lr, dt = np.asarray(schedule.lr, float).reshape(-1), np.asarray(schedule.dt, float).reshape(-1)
    if lr.shape != dt.shape:
        raise InputError(f"schedule has {lr.size} learning rates but {dt.size} chain-move lengths (dt); "
                         "they must be one per update")
    if not (np.isfinite(lr).all() and np.isfinite(dt).all()):
        raise InputError("schedule learning rates and chain-move lengths (dt) must be finite")
    if (lr < 0).any() or (dt < 0).any():
        which = "learning rate" if (lr < 0).any() else "chain-move length (dt)"
        k = int(np.argmax(lr < 0)) if (lr < 0).any() else int(np.argmax(dt < 0))
        raise InputError(f"schedule has a negative {which} at update {k}: rates and dt must be >= 0")
    return lr, dt, None


def _n_chains(n_chains, chains, backend) -> int:
    """n_chains: given, or the number of initial states in ``chains``, else the default."""
    rows = None
    if backend == "particles" and chains is not None and not isinstance(chains, (tuple, dict)):
        try:
            rows = int(torch.as_tensor(chains).shape[0])
        except (TypeError, ValueError, RuntimeError, IndexError):
            raise InputError(f"chains must be a tensor of states (n_chains, d), (mean, variance) or None, "
                             f"got {type(chains).__name__}") from None
    if n_chains is None:
        return rows if rows is not None else DEFAULT_N_CHAINS
    n = require_positive_int("n_chains", n_chains)
    if rows is not None and rows != n:
        raise InputError(f"chains holds {rows} initial states but n_chains={n}: give one or make them agree")
    return n


def _data(data):
    """Samples that carry an autograd graph are detached (the data term never differentiates them)."""
    if isinstance(data, torch.Tensor) and data.requires_grad:
        return data.detach()
    return data


def check_contract(energy, data, schedule, theta0, dynamics: Dynamics, ensemble: Ensemble,
                   estimation: Estimation, checkpointing: Checkpointing, output: Output) -> Plan:
    """Validate every input of ``train`` and choose every path; raise InputError naming the problem."""
    dyn, ens, est, ck, out = dynamics, ensemble, estimation, checkpointing, output
    mobility = require_positive("mobility", dyn.mobility)
    temperature_kelvin = require_positive("temperature_kelvin", est.temperature_kelvin)
    if dyn.duration is not None:
        require_positive("duration", dyn.duration)
    backend = dyn.backend
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    if est.free_energy not in FREE_ENERGY_METHODS:
        raise InputError(f"free_energy must be one of {FREE_ENERGY_METHODS}, got {est.free_energy!r}")
    if est.data_term not in DATA_TERMS:
        raise InputError(f"data_term must be 'moments' or 'samples', got {est.data_term!r}")
    seed = _seed(dyn.seed)
    device = _device(dyn.device)
    dtype = _dtype(dyn.dtype)
    n_steps = require_positive_int("n_steps", dyn.n_steps)
    n_chains = _n_chains(ens.n_chains, ens.chains, backend)
    record_every = require_positive_int("record_every", out.record_every)
    batch_size = None if est.batch_size is None else require_positive_int("batch_size", est.batch_size)
    history_file = None
    if out.history_file is not None:
        history_file = os.fspath(out.history_file)
        if not history_file.endswith(".npy"):
            raise InputError(f"history_file must end in .npy (a NumPy array file), got {history_file!r}")
    n_replicas = ens.n_replicas
    if n_replicas is None:
        n_replicas = 1 if backend in DETERMINISTIC else 4
    n_replicas = require_positive_int("n_replicas", n_replicas)
    if ck.checkpoint_every and not ck.checkpoint:
        raise InputError("checkpoint_every needs a checkpoint path")
    if ck.resume and not ck.checkpoint:
        raise InputError("resume needs a checkpoint path")
    comm = _dist.Comm()
    shards = _dist.check_shards(ens.shards, comm, backend)

    if dyn.step_mode not in STEP_MODES:
        raise InputError(f"step_mode must be one of {STEP_MODES}, got {dyn.step_mode!r}")
    if dyn.step_mode == "fused":
        from ..backends.fused import fused_problem

        problem = fused_problem(energy, backend, shards)
        if problem:
            raise InputError(problem)
    if dyn.step_mode == "compiled":
        from ..energies.compiled import CompiledNeuralEnergy, compiled_problem

        problem = compiled_problem(energy, backend, shards)
        if problem:
            raise InputError(problem)
        energy = CompiledNeuralEnergy.of(energy)   # the same energy, its update passes compiled
    caps = energy.capabilities
    sampler = make_sampler(dyn.sampler)
    if backend != "fokker_planck":   # the grid backend moves the density exactly for any energy
        sampler.check(energy)
    problem = backend_problem(backend, quadratic=caps.quadratic, dim=energy.dim, sampler=sampler.name,
                              energy_name=type(energy).__name__)
    if problem:
        raise InputError(problem)
    own = schedule.preconditioner if isinstance(schedule, Schedule) else None   # natural_gradient carries a Fisher
    pre = make_preconditioner(est.preconditioner if est.preconditioner is not None else own)
    if pre is not None and pre.needs == "subsample" and backend != "particles":
        raise InputError(f"the low-rank Fisher ({pre.name}) needs per-chain gradients: use backend 'particles' "
                         "(the exact backends give the full covariance; use fisher 'full')")
    theta = as_theta(theta0, energy, device)
    dataset = as_dataset(_data(data), energy.dim, device=device)
    if dataset.samples is None and not caps.quadratic and backend == "fokker_planck":
        raise InputError("a non-quadratic energy on the Fokker-Planck backend needs data samples "
                         "(the data term E_data[d_theta E] is not a function of mean and variance)")
    draw_data = backend == "particles" and dataset.samples is None and (
        est.data_term == "samples" or not caps.quadratic)
    has_rows = dataset.samples is not None or draw_data
    if batch_size and not (dataset.samples is not None or draw_data):
        raise InputError("batch_size needs data samples (the data is a distribution given by its moments "
                         "here; its data term is exact without minibatches)")
    lrs, dts, path = _steps(schedule, n_steps, dyn.duration)
    if path is not None and path.shape != (len(dts) + 1, energy.n_params):
        raise InputError(f"protocol thetas must have shape ({len(dts) + 1}, {energy.n_params}), got {path.shape}")
    if out.keep_thetas is None:   # auto: the per-update theta path while it stays small
        keep_thetas = (len(dts) + 1) * energy.n_params <= KEEP_THETAS_LIMIT
    elif isinstance(out.keep_thetas, (bool, np.bool_)):
        keep_thetas = bool(out.keep_thetas)
    else:
        raise InputError(f"keep_thetas must be True, False or None (keep while small), got {out.keep_thetas!r}")
    keep_thetas = keep_thetas and history_file is None   # a streamed history keeps no in-memory path
    total_time = schedule.duration if isinstance(schedule, Schedule) else float(np.sum(dts))
    fused = pre is None and caps.fused_g_hat and backend == "particles" and shards == 1 and has_rows
    data_rows = "minibatch" if batch_size else ("all" if fused else None)
    return Plan(
        energy=energy, dataset=dataset, sampler=sampler, backend=backend, theta0=theta, lrs=lrs, dts=dts,
        path=path, total_time=total_time, mobility=mobility, n_chains=n_chains, n_replicas=n_replicas,
        dtype=dtype, device=device, seed=seed, chains=ens.chains, keep_chains=bool(ens.keep_chains),
        shards=shards, comm=comm, preconditioner=pre, tau_mode=tau_mode(schedule), schedule=schedule,
        n_steps=n_steps, data_term=est.data_term, batch_size=batch_size, free_energy=est.free_energy,
        temperature_kelvin=temperature_kelvin, record_every=record_every, history_file=history_file,
        keep_thetas=keep_thetas, observers=tuple(out.observers), progress=bool(out.progress),
        checkpoint=ck.checkpoint,
        checkpoint_every=int(ck.checkpoint_every or 0), resume=bool(ck.resume), stop=ck.stop,
        on_start=ck.on_start, draw_data=draw_data, fused=fused, data_rows=data_rows,
        small=energy.n_params <= SMALL_PARAMS, step_mode=dyn.step_mode)
