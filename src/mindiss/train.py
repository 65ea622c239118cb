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
from typing import Callable, Sequence

import numpy as np
import torch

from . import backends as _backends
from . import distributed as _dist
from .backends import BACKENDS, DETERMINISTIC
from .chains import ParticleChains
from .data import as_dataset
from .energies import Energy
from .preconditioners import PreconditionContext
from .errors import DivergenceError, InputError, require_positive, require_positive_int
from .results import ThetaProtocol, TrainResult
from .replica import ReplicaState, n_rows as _n_rows
from .summary import _estimate_free_energy, _finish, _summarise
from .samplers import make_sampler
from .schedules import DiscreteSchedule, Schedule

FREE_ENERGY_METHODS = ("auto", "exact", "ais", "ti", "jarzynski")
#: |mean work| or |mean heat| per chain beyond this (kT) is treated as a diverged run.
LEDGER_LIMIT = 1e12


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


def _tau_mode(schedule) -> str | None:
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
        if _tau_mode(schedule):  # learning rates follow tau, estimated per replica: layout only here
            d = schedule.at_tau(1.0).discretise(n_steps)
            return np.full(len(d.dt), np.nan), np.asarray(d.dt, float), None
        schedule = schedule.discretise(n_steps)
    if not isinstance(schedule, DiscreteSchedule):
        raise InputError(f"schedule must be a Schedule, DiscreteSchedule or ThetaProtocol, got {type(schedule).__name__}")
    return np.asarray(schedule.lr, float), np.asarray(schedule.dt, float), None


def _divergence_cause(sampler, energy, dt, mobility) -> str:
    if sampler.name == "euler" and hasattr(energy, "variance"):
        return (f"the Euler-Maruyama step is too large for the stiffness (mu dt / s = "
                f"{mobility * dt / energy.variance:.3g}; it must be well below 2)")
    return "the learning rate or chain step is too large for this energy"


class Interrupted(KeyboardInterrupt):
    """A run stopped on request (SIGINT/SIGTERM) after saving its checkpoint."""

    def __init__(self, update: int, checkpoint):
        self.update, self.checkpoint = update, checkpoint
        where = f"; checkpoint saved to {checkpoint}" if checkpoint else ""
        super().__init__(f"interrupted at update {update}{where}")


def train(energy: Energy, data, *, schedule, theta0, mobility: float = 1.0, duration: float | None = None,
          n_steps: int = 1000, n_chains: int = 100_000, n_replicas: int | None = None,
          sampler="exact", backend: str = "particles", seed: int = 0, dtype=torch.float32,
          device="cpu", chains=None, data_term: str = "moments", record_every: int = 1,
          temperature_kelvin: float = 300.0, observers: Sequence[Callable] = (),
          progress: bool = False, keep_chains: bool = False, checkpoint=None,
          checkpoint_every: int = 0, resume: bool = False,
          stop: Callable[[], bool] | None = None, on_start: Callable[[], None] | None = None,
          preconditioner=None, free_energy: str = "auto", shards: int | None = None,
          batch_size: int | None = None, history_file=None) -> TrainResult:
    """Persistent-chain training of ``energy`` on ``data`` with a learning-rate ``schedule``.

    dx = -mu grad_x E dt + sqrt(2 mu) dW between updates; theta_new = theta - lr_k g_hat.
    ``chains``: None (exact equilibrium of p_theta0), a tensor of states (particles), or
    (mean, variance) of a Gaussian start. ``n_replicas`` independent runs give the errors
    (default 4 for particles, 1 for moments). ``observers`` are called as
    ``obs(update, theta, chains)`` after every update of replica 0.

    ``checkpoint``: a file written every ``checkpoint_every`` updates, after each replica and when
    ``stop()`` turns true (then ``Interrupted`` is raised); ``resume=True`` continues from it and
    gives a result bit-identical to an uninterrupted run. ``on_start()`` is called once every input
    has been validated, before the first update (so callers can create output only for valid runs).

    ``preconditioner``: a learning-rate matrix (``mindiss.preconditioners``: Fisher, Friction, Adam,
    or a name such as "fisher-diag"); default: the schedule's own (``natural_gradient`` carries a
    Fisher), else a scalar learning rate. ``backend="fokker_planck"`` evolves the exact density of
    a 1-D energy on a grid (``chains``: None, a FokkerPlanck1D or {"grid": (lo, hi, n), "density": ...}).

    ``free_energy``: how Delta F = F(theta_T) - F(theta_0) is obtained: "exact" (closed form,
    quadrature or the grid; NaN where none exists), "ais" or "ti" (an estimator from
    ``mindiss.free_energy`` run per replica from the replica's initial chains, assumed in equilibrium
    at theta_0, with MALA at the run's step), "jarzynski" (from the run's own per-chain work: biased
    by the feedback of finite N, see theory.md), or "auto" (exact where known, else "ais").

    ``shards``: cut the chains into this many equal blocks, each drawn and moved with its own
    generator (``mindiss.distributed``). Inside an initialised ``torch.distributed`` process group
    the blocks are spread over the ranks (default: one per rank) and every chain statistic is
    all-reduced, so each rank returns the result of one process holding all blocks; only rank 0
    writes checkpoints and shows progress (docs/distributed.md). Default without a group: 1 block.

    ``batch_size``: the data term E_data[d_theta E] of each update from a minibatch of this many data
    samples drawn with replacement by the replica's own data generator (saved in checkpoints, so a
    resumed run is bit-identical); the ledger is unaffected (it never involves the data) and the
    history's true loss stays the full-data loss, while the approximate objective accumulates the
    minibatch g_hat that the update followed (Identity 1 then holds on average; a note says so).
    Default: every sample, every update.

    ``history_file``: stream replica 0's history rows into this ``.npy`` file (a memory map written as
    the run goes, moved into place when the replica ends) instead of memory, so memory does not
    grow with the number of updates; ``result.history.values`` then maps the file read-only and
    ``result.thetas`` is None (the history's theta columns hold the recorded path).
    """
    from .preconditioners import make_preconditioner

    mobility = require_positive("mobility", mobility)
    temperature_kelvin = require_positive("temperature_kelvin", temperature_kelvin)
    if duration is not None:
        require_positive("duration", duration)
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    if free_energy not in FREE_ENERGY_METHODS:
        raise InputError(f"free_energy must be one of {FREE_ENERGY_METHODS}, got {free_energy!r}")
    if data_term not in ("moments", "samples"):
        raise InputError(f"data_term must be 'moments' or 'samples', got {data_term!r}")
    n_chains = require_positive_int("n_chains", n_chains)
    record_every = require_positive_int("record_every", record_every)
    if batch_size is not None:
        batch_size = require_positive_int("batch_size", batch_size)
    if history_file is not None:
        import os

        history_file = os.fspath(history_file)
        if not history_file.endswith(".npy"):
            raise InputError(f"history_file must end in .npy (a NumPy array file), got {history_file!r}")
    if n_replicas is None:
        n_replicas = 1 if backend in DETERMINISTIC else 4
    n_replicas = require_positive_int("n_replicas", n_replicas)
    if checkpoint_every and not checkpoint:
        raise InputError("checkpoint_every needs a checkpoint path")
    if resume and not checkpoint:
        raise InputError("resume needs a checkpoint path")
    comm = _dist.Comm()
    shards = _dist.check_shards(shards, comm, backend)
    dtype = {"float32": torch.float32, "float64": torch.float64}.get(dtype, dtype)
    if dtype not in (torch.float32, torch.float64):
        raise InputError(f"dtype must be float32 or float64, got {dtype!r}")
    sampler_obj = make_sampler(sampler)
    if backend != "fokker_planck":   # the grid backend moves the density exactly for any energy
        sampler_obj.check(energy)
    if backend == "moments" and sampler_obj.name not in ("exact", "euler"):
        raise InputError(f"backend 'moments' supports samplers 'exact' and 'euler', not {sampler_obj.name!r}")
    if backend == "moments" and not getattr(energy, "gaussian", False):
        raise InputError(f"backend 'moments' needs a quadratic energy, not {type(energy).__name__}")
    if backend == "fokker_planck" and sampler_obj.name == "euler":
        raise InputError("backend 'fokker_planck' evolves the exact Langevin density: use sampler 'exact' "
                         "(Euler-Maruyama's O(dt) bias has no grid representation)")
    pre_proto = make_preconditioner(preconditioner if preconditioner is not None
                                    else getattr(schedule, "preconditioner", None))
    if pre_proto is not None and getattr(pre_proto, "kind", None) == "lowrank" and backend != "particles":
        raise InputError("the low-rank Fisher needs per-chain gradients: use backend 'particles' "
                         "(the exact backends give the full covariance; use fisher 'full')")
    theta_start = _as_theta(theta0, energy, device)
    dataset = as_dataset(data, energy.dim, device=device)
    if dataset.samples is None and not getattr(energy, "gaussian", False) and backend == "fokker_planck":
        raise InputError("a non-quadratic energy on the Fokker-Planck backend needs data samples "
                         "(the data term E_data[d_theta E] is not a function of mean and variance)")
    if batch_size and dataset.samples is None and not (backend == "particles" and (
            data_term == "samples" or not getattr(energy, "gaussian", False))):
        raise InputError("batch_size needs data samples (the data is a distribution given by its moments "
                         "here; its data term is exact without minibatches)")
    lrs, dts, path = _steps(schedule, n_steps, duration)
    if path is not None and path.shape != (len(dts) + 1, energy.n_params):
        raise InputError(f"protocol thetas must have shape ({len(dts) + 1}, {energy.n_params}), got {path.shape}")
    n_updates = len(dts)
    total_time = schedule.duration if isinstance(schedule, Schedule) else float(np.sum(dts))

    from . import checkpoint as _ck

    fp = _ck.fingerprint(repr(energy), dataset.mean, dataset.variance,
                         dataset.samples if dataset.samples is not None else None, lrs, dts, path,
                         theta_start, mobility, n_chains, n_replicas, sampler_obj.name, backend, seed,
                         str(dtype), str(device), _chains_key(chains), data_term, record_every, keep_chains,
                         getattr(schedule, "name", None), repr(getattr(schedule, "params", None)),
                         _pre_key(pre_proto), free_energy, *([("shards", shards)] if shards > 1 else []),
                         *([("batch_size", batch_size)] if batch_size else []))
    ck = comm.from_root(lambda: _ck.load(checkpoint, fp)) if resume else None
    writer = (_ck.Writer(checkpoint, fp, fresh=not resume, n_done=len(ck["completed"]) if ck else 0)
              if checkpoint and comm.rank == 0 else None)
    if on_start is not None and comm.rank == 0:
        on_start()
    summaries = list(ck["completed"]) if ck else []
    if ck:
        _ck.restore(sampler_obj, ck["sampler"], "sampler")
    counters = sampler_obj.state_dict()   # the sampler's counters when last common to all ranks
    if stop is not None and comm.world > 1:
        stop = _stop_together(stop, comm)

    bar = None
    if progress and comm.rank == 0:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(TextColumn("[bold]train[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("{task.fields[rate]} upd/s"),
                       TextColumn("W_ex {task.fields[excess]}  L {task.fields[loss]}"),
                       TimeRemainingColumn(), transient=True)
        bar.start()
        task = bar.add_task(f"{backend}/{sampler_obj.name}", total=n_replicas * n_updates,
                            completed=len(summaries) * n_updates, rate="-", excess="-", loss="-")

    def save(run):
        payload = {"completed": summaries, "run": None if run is None else run.state_dict(),
                   "sampler": _dist.reduce_counters(sampler_obj, counters, comm)}
        if writer is not None:
            writer.save(payload)

    try:
        for replica, (chain_seed, data_seed) in enumerate(_seeds(seed, n_replicas)):
            if replica < len(summaries):
                continue
            data_r = dataset
            # a non-quadratic energy's data term needs samples: draw them from a distribution's moments
            if (data_term == "samples" or not getattr(energy, "gaussian", False)) and dataset.samples is None \
                    and backend == "particles":
                from .data import Gaussian as _G

                dgen = torch.Generator().manual_seed(data_seed)
                draws = _G(dataset.mean.cpu().numpy(), dataset.variance.cpu().numpy()).sample(n_chains, gen=dgen)
                data_r = as_dataset(draws, energy.dim, device=device)
            if shards == 1:
                gen = torch.Generator(device=device).manual_seed(chain_seed)
                state = _backends.initial_chains(backend, energy, theta_start, chains, n_chains, gen, dtype,
                                                 data_r.samples)
            else:
                gen = _dist.ShardGenerators(chain_seed, shards, comm, device)
                state = _dist.ShardedParticleChains.start(energy, theta_start, chains, n_chains, gen, dtype,
                                                          data_r.samples)
            data_gen = None
            if batch_size:
                data_gen = torch.Generator(device=data_r.samples.device).manual_seed(data_seed)
            run = ReplicaState(energy, data_r, state, theta_start, gen, n_updates,
                       n_rows=_n_rows(n_updates, record_every) if replica == 0 else 0,
                       history_file=history_file if replica == 0 else None,
                       keep_thetas=replica == 0 and history_file is None, data_gen=data_gen, batch_size=batch_size,
                       reopen=bool(ck is not None and ck["run"] is not None and ck["run"]["replica"] == replica))
            run.once = comm.count_once(sampler_obj)
            if getattr(state, "particles", False) and free_energy in ("auto", "ais", "ti") \
                    and not math.isfinite(run.fe0):
                run.x0 = state.head(1024).to(torch.float64).clone()   # for a Delta F estimate after the run
            run.lrs = None if lrs is None else lrs.copy()
            if pre_proto is not None or _tau_mode(schedule):
                pgen = torch.Generator(device=device).manual_seed((chain_seed * 7919 + 104729) % (2**63))
                dt_int = float(np.max(dts)) if len(dts) else 0.0
                run.ctx = PreconditionContext(energy, theta_start, state, sampler_obj, mobility, dt_int, pgen, dts)
                run.pre = pre_proto.fresh() if pre_proto is not None else None
                if shards > 1 and run.pre is not None:
                    run.stats_kw = {"reduce": _dist.fisher_reduction(run.pre)}
                with run.once:
                    if run.pre is not None:
                        run.pre.start(run.ctx)
                    if _tau_mode(schedule):
                        _retune(run, schedule, n_steps, 0)
            if ck is not None and ck["run"] is not None and ck["run"]["replica"] == replica:
                _ck.restore(run, ck["run"], "run")
                _ck.restore(sampler_obj, ck["sampler"], "sampler")   # pilot runs above counted again
            run.replica = replica
            tick = _progress_tick(bar, task, replica * n_updates) if bar is not None else None
            # observers run on every rank (they may read collective statistics of sharded chains)
            _run_replica(run, dts, path, mobility, sampler_obj, record_every,
                         observers if replica == 0 else (), tick,
                         save if checkpoint else None, checkpoint_every, stop, checkpoint,
                         (schedule, n_steps) if _tau_mode(schedule) == "online" else None)
            if comm.world > 1:
                comm.check_same(run.theta)
                counters = _dist.reduce_counters(sampler_obj, counters, comm)
                sampler_obj.load_state_dict(counters)
            summaries.append(_finish(run, energy, keep=replica == 0, keep_chains=keep_chains))
            _estimate_free_energy(summaries[-1], run, free_energy, sampler_obj, mobility, dts, chain_seed)
            if checkpoint:
                save(None)
    finally:
        if bar:
            bar.stop()

    result = _summarise(summaries, energy, theta_start, dts, total_time, backend, sampler_obj, n_chains, mobility,
                        temperature_kelvin, chains is None)
    if batch_size:
        result.notes.append(f"minibatches of {batch_size} data samples: the approximate objective follows the "
                            "minibatch g_hat, so Identity 1 (true - approximate loss change = W_ex) holds on "
                            "average over minibatches; identity1_residual includes sum_k dtheta . (full-data "
                            "minus minibatch data term). The ledger (work, heat, W_ex) is exact per update.")
    return result


def _stop_together(stop, comm):
    """A stop request on any rank stops every rank at the same update (one all-reduce per update)."""
    return lambda: comm.any(stop())


def _progress_tick(bar, task, offset):
    """A callback updating the bar with updates/s, the current excess work and true loss."""
    import time

    start = []

    def tick(k, run):
        now = time.perf_counter()
        if not start:
            start.append((now, k))
        t0, k0 = start[0]
        rate = (k - k0) / (now - t0) if now > t0 else 0.0
        st = run.state
        excess = st.mean_work() - (_backends.free_energy(run.energy, run.theta, st) - run.fe0)
        loss = _backends.loss(run.energy, run.data, run.theta, st)
        bar.update(task, completed=offset + k, rate=f"{rate:,.0f}", excess=f"{excess:.4g}", loss=f"{loss:.4g}")

    return tick


def _pre_key(pre):
    if pre is None:
        return None
    return (type(pre).__name__, sorted((k, repr(v)) for k, v in vars(pre).items()))


def _retune(run, schedule, n_steps, first: int) -> None:
    """Estimate tau at the current theta and set the learning rates of updates >= ``first``."""
    tau, method = run.ctx.relaxation_time()
    lr = schedule.at_tau(tau).discretise(n_steps).lr
    run.lrs[first:] = lr[first:]
    run.taus.append((run.k, tau, method))


def _chains_key(chains):
    if chains is None:
        return None
    if isinstance(chains, tuple):
        return tuple(np.asarray(c, float).tolist() for c in chains)
    if isinstance(chains, dict):
        return sorted((k, np.asarray(v, float).tolist()) for k, v in chains.items() if v is not None)
    if hasattr(chains, "rho"):   # a FokkerPlanck1D
        return (chains.grid, chains.rho.tolist())
    return torch.as_tensor(chains).detach().cpu().numpy()


def replay(energy: Energy, data, protocol: ThetaProtocol, **kwargs) -> TrainResult:
    """Run a prescribed theta path open-loop on fresh chains (same loop, no feedback)."""
    return train(energy, data, schedule=protocol, theta0=protocol.thetas[0], **kwargs)


def _run_replica(run: ReplicaState, dts, path, mobility, sampler, record_every, observers, tick,
                 save, checkpoint_every, stop, checkpoint_path, online=None):
    """The canonical update loop for one replica (continues from ``run.k``)."""
    energy, data, state, gen = run.energy, run.data, run.state, run.gen
    n_updates = len(dts)
    # a network's g_hat in one backward over data and chains together, data in the chains' dtype
    fused = (run.pre is None and callable(getattr(energy, "grad_hat", None)) and type(state) is ParticleChains
             and data.samples is not None)
    # the rows of the data term: every sample (None: the cached / moment-based data term) or a minibatch
    samples = data.samples.to(device=state.x.device, dtype=state.x.dtype) if fused else data.samples
    if run.batch_size:
        n_data, bsize, dgen = samples.shape[0], run.batch_size, run.data_gen

        def data_rows():   # a minibatch drawn with replacement: O(batch_size), its own generator
            idx = torch.randint(n_data, (bsize,), generator=dgen, device=dgen.device).to(samples.device)
            return samples[idx]
    else:
        data_rows = (lambda: samples) if fused else None

    def data_grad(th):   # E_data[d_theta E]
        if data_rows is None:
            return _backends.data_mean_grad_theta(energy, data, th)
        return energy.mean_grad_theta(data_rows(), th).to(torch.float64)
    if path is not None:
        path_t = torch.as_tensor(path, dtype=torch.float64, device=run.theta.device)
    nan = math.nan
    n_params = energy.n_params
    small = n_params <= 64    # few parameters: host floats are cheaper than tensor ops
    chain_mean = getattr(state, "chain_mean_list", None) or (lambda: state.chain_mean().tolist())

    work_heat = getattr(state, "mean_work_heat", None) or (lambda: (state.mean_work(), state.mean_heat()))

    def record(k, lr, dt, th_host):
        work, heat = work_heat()
        if not (abs(work) < LEDGER_LIMIT and abs(heat) < LEDGER_LIMIT):
            raise DivergenceError(k, f"the ledger left the finite range (mean work {work:.3g}, mean heat "
                                  f"{heat:.3g} kT per chain): chains escaping to huge energies",
                                  _divergence_cause(sampler, energy, dt or float(dts[max(k - 2, 0)]), mobility)
                                  if path is None and sampler.name == "euler" else
                                  "the learning rate or chain step is too large for this energy")
        if run.rows is not None:   # F-dependent columns are filled after the updates (fill_losses)
            run.pending.append([k, run.t_now, lr, dt, *th_host, *chain_mean(), work, heat, nan, nan, nan, nan,
                                run.loss_approx])
            if len(run.pending) >= 256:
                run.flush_rows()

    prev_host = run.theta.tolist() if small else None
    if run.k == 0 and run.n_rows == 0:
        record(0, 0.0, 0.0, run.theta.tolist() if small else run.theta.cpu().numpy())
    dt_list = np.asarray(dts, dtype=float).tolist()
    lr_list = run.lrs.tolist() if run.lrs is not None and online is None else None   # online: retuned
    pre = run.pre
    mean_grad_theta, move, check_theta = state.mean_grad_theta, state.move, energy.check_theta
    for k in range(run.k, n_updates):
        if stop is not None and stop():
            if save is not None:
                save(run)
            raise Interrupted(k, checkpoint_path if save is not None else None)
        theta = run.theta
        dt = dt_list[k]
        if fused:
            g = energy.grad_hat(data_rows(), state.x, theta)
        elif pre is None:
            g = data_grad(theta) - mean_grad_theta(energy, theta)
        else:
            run.ctx.theta, run.ctx.k, run.ctx.lrs = theta, k, run.lrs
            stats = state.grad_theta_stats(energy, theta, pre.needs, pre.rows, run.ctx.gen, **run.stats_kw)
            g = data_grad(theta) - stats.mean
            if not bool(torch.isfinite(g).all()):   # before the preconditioner sees the statistics
                _raise_g(k, g, sampler, energy, dts, mobility)
        if path is None:
            if online is not None and k > 1 and dt > 0 and (k - 1) % online[0].params["tau_refresh"] == 0:
                run.ctx.theta = theta
                with run.once:
                    _retune(run, online[0], online[1], k)
            lr = lr_list[k] if lr_list is not None else float(run.lrs[k])
            if pre is None:
                theta_new = theta - lr * g   # (not add(alpha=-lr): user loops replay this rounding)
            else:
                with run.once:
                    pre.observe(stats, run.ctx)
                theta_new = theta - lr * pre.apply(g)
        else:
            lr = nan
            theta_new = path_t[k + 1]
        # the one host transfer of an update: the checks and the history use it
        th_host = theta_new.tolist() if small else theta_new.cpu().numpy()
        if not (all(map(math.isfinite, th_host)) if small else bool(np.isfinite(th_host).all())):
            _raise_g(k, g, sampler, energy, dts, mobility)
            raise DivergenceError(k + 1, "theta is not finite", "the learning rate is too large")
        msg = check_theta(theta_new)
        if msg:
            raise DivergenceError(k + 1, msg, "the learning rate is too large for this parameter")
        state.apply_update(energy, theta, theta_new)
        if small:
            run.loss_approx += sum((a - b) * c for a, b, c in zip(th_host, prev_host, g.tolist()))
            prev_host = th_host
        else:
            run.loss_approx += float(torch.dot(theta_new - theta, g))
        run.theta = theta_new
        if dt > 0:
            move(energy, theta_new, dt, mobility, sampler, gen)
            run.t_now += dt
        if run.thetas is not None:
            run.thetas[k + 1] = th_host
        if (k + 1) % record_every == 0 or k + 1 == n_updates:
            record(k + 1, lr, dt, th_host)
        run.k = k + 1
        if observers:
            for obs in observers:
                obs(k + 1, theta_new, state)
        if tick is not None and (run.k % 16 == 0 or run.k == n_updates):
            tick(run.k, run)
        if checkpoint_every and save is not None and run.k % checkpoint_every == 0 and run.k < n_updates:
            save(run)
    if not state.finite():
        raise DivergenceError(n_updates, "chain energies are not finite", "the chain step is too large")
    run.flush_rows()
    run.fill_losses()


def _raise_g(k, g, sampler, energy, dts, mobility) -> None:
    """DivergenceError if g_hat is not finite (else return)."""
    if not bool(torch.isfinite(g).all()):
        raise DivergenceError(k + 1, "g_hat (the chain statistics) is not finite",
                              _divergence_cause(sampler, energy, float(dts[max(k - 1, 0)]), mobility))
