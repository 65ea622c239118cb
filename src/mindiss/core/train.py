"""``train()``: persistent-chain training with the thermodynamic ledger (design.md, "The canonical
update"). The update itself lives once in ``core.step``; the contract check in ``core.contract``;
this module runs the replicas around them (generators, initial chains, checkpoints, progress) and
summarises them.
"""
from __future__ import annotations

import numpy as np
import torch

from .. import backends as _backends
from ..backends import sharded as _dist
from .contract import Plan, check_contract
from .options import Checkpointing, Dynamics, Ensemble, Estimation, Output, group_options
from .step import Interrupted, Paths, retune, run_updates
from ..backends.chains import ChainBackend
from ..data.base import as_dataset
from ..energies.base import Energy
from ..rates.preconditioners import PreconditionContext
from .results import ThetaProtocol, TrainResult
from ..rates.schedules import Schedule
from .state import ReplicaState, n_rows as _n_rows
from .summary import _estimate_free_energy, _finish, _summarise

__all__ = ["train", "replay", "Interrupted", "Dynamics", "Ensemble", "Estimation", "Checkpointing", "Output"]


def _seeds(seed: int, n: int) -> list[tuple[int, int]]:
    """Independent (chains, data) generator seeds for each replica."""
    children = np.random.SeedSequence(int(seed)).spawn(n)
    return [tuple(int(a) for a in c.generate_state(2, dtype=np.uint64) % (2**63)) for c in children]


def train(energy: Energy, data, *, schedule, theta0, dynamics: Dynamics | None = None,
          ensemble: Ensemble | None = None, estimation: Estimation | None = None,
          checkpointing: Checkpointing | None = None, output: Output | None = None, **options) -> TrainResult:
    """Persistent-chain training of ``energy`` on ``data`` with a learning-rate ``schedule``.

    dx = -mu grad_x E dt + sqrt(2 mu) dW between updates; theta_new = theta - lr_k P_k g_hat.
    ``schedule``: a Schedule (discretised into ``n_steps`` interior updates plus its impulses), a
    DiscreteSchedule or a ThetaProtocol (open-loop replay). ``theta0``: the initial parameters.

    The other options come in five groups (``mindiss.core.options``), given as objects or flat
    (``train(..., mobility=1.0, n_chains=1000)``; a flat name overrides its group's field):

    * ``dynamics``: mobility, duration, n_steps, sampler, backend, dtype, device, seed, step_mode
      ("default"; opt-in "fused" / "compiled": what each guarantees is in ``Dynamics``);
    * ``ensemble``: n_chains, n_replicas, chains (initial states), shards, keep_chains;
    * ``estimation``: preconditioner, data_term, batch_size, free_energy, temperature_kelvin;
    * ``checkpointing``: checkpoint, checkpoint_every, resume, stop, on_start;
    * ``output``: record_every, history_file, keep_thetas, observers, progress.

    ``n_replicas`` independent runs give the errors (default 4 on particles, 1 on the exact
    backends). ``checkpoint``: a file written every ``checkpoint_every`` updates, after each replica
    and when ``stop()`` turns true (then ``Interrupted`` is raised); ``resume=True`` continues from
    it, bit-identical to an uninterrupted run. ``preconditioner``: a learning-rate matrix
    (``mindiss.preconditioners``: Fisher, Friction, Adam, or a name such as "fisher-diag"); default:
    the schedule's own, else a scalar learning rate. ``free_energy``: how Delta F is obtained: "exact"
    (closed form, quadrature or the grid; NaN where none exists), "ais" or "ti" (an estimator run per
    replica from its initial chains, assumed in equilibrium at theta_0), "jarzynski" (the run's own
    work: biased by the feedback of finite N), or "auto" (exact where known, else "ais").
    ``shards``: chain blocks with their own generators, spread over the ranks of an initialised
    ``torch.distributed`` group with every chain statistic all-reduced (docs/distributed.md).
    ``batch_size``: the data term from minibatches drawn with replacement by the replica's data
    generator (saved in checkpoints); the ledger is exact per update and Identity 1 holds on average.
    ``history_file``: stream replica 0's history into this ``.npy`` (memory does not grow with the
    number of updates). ``keep_thetas``: keep theta after every update (``result.thetas``,
    ``result.protocol()``, and in checkpoints); the default keeps it while (n_updates + 1) x P <= 4,194,304
    floats (32 MB), so a 25k-parameter network's 2,000-update run does not hold 400 MB.

    Every input is validated and every path chosen by ``core.contract.check_contract`` before the
    first update: bad input raises ``InputError`` naming the argument.
    """
    groups = group_options({"dynamics": dynamics, "ensemble": ensemble, "estimation": estimation,
                            "checkpointing": checkpointing, "output": output}, options)
    plan = check_contract(energy, data, schedule, theta0, **groups)
    return _run(plan)


def _run(plan: Plan) -> TrainResult:
    """The replicas of a validated plan, with checkpoints, progress and the summary."""
    from . import checkpoint as _ck

    energy, dataset, comm, sampler = plan.energy, plan.dataset, plan.comm, plan.sampler
    n_updates = plan.n_updates
    fp = _fingerprint(plan)
    ck = comm.from_root(lambda: _ck.load(plan.checkpoint, fp)) if plan.resume else None
    writer = (_ck.Writer(plan.checkpoint, fp, fresh=not plan.resume, n_done=len(ck["completed"]) if ck else 0)
              if plan.checkpoint and comm.rank == 0 else None)
    if plan.on_start is not None and comm.rank == 0:
        plan.on_start()
    summaries = list(ck["completed"]) if ck else []
    if ck:
        _ck.restore(sampler, ck["sampler"], "sampler")
    counters = sampler.state_dict()   # the sampler's counters when last common to all ranks
    stop = plan.stop
    if stop is not None and comm.world > 1:
        stop = _stop_together(stop, comm)

    bar = task = None
    if plan.progress and comm.rank == 0:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(TextColumn("[bold]train[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("{task.fields[rate]} upd/s"),
                       TextColumn("W_ex {task.fields[excess]}  L {task.fields[loss]}"),
                       TimeRemainingColumn(), transient=True)
        bar.start()
        task = bar.add_task(f"{plan.backend}/{sampler.name}", total=plan.n_replicas * n_updates,
                            completed=len(summaries) * n_updates, rate="-", excess="-", loss="-")

    def save(run):
        payload = {"completed": summaries, "run": None if run is None else run.state_dict(),
                   "sampler": _dist.reduce_counters(sampler, counters, comm)}
        if writer is not None:
            writer.save(payload)

    try:
        for replica, (chain_seed, data_seed) in enumerate(_seeds(plan.seed, plan.n_replicas)):
            if replica < len(summaries):
                continue
            resumed = ck is not None and ck["run"] is not None and ck["run"]["replica"] == replica
            run = _start_replica(plan, replica, chain_seed, data_seed, resumed)
            if resumed:
                _ck.restore(run, ck["run"], "run")
                _ck.restore(sampler, ck["sampler"], "sampler")   # pilot runs in _start_replica counted again
            run.replica = replica
            tick = _progress_tick(bar, task, replica * n_updates) if bar is not None else None
            # observers run on every rank (they may read collective statistics of sharded chains)
            run_updates(run, Paths(plan, run), stop=stop, observers=plan.observers if replica == 0 else (),
                        tick=tick,
                        save=save if plan.checkpoint else None, checkpoint_path=plan.checkpoint)
            if comm.world > 1:
                comm.check_same(run.theta)
                counters = _dist.reduce_counters(sampler, counters, comm)
                sampler.load_state_dict(counters)
            summaries.append(_finish(run, energy, keep=replica == 0, keep_chains=plan.keep_chains))
            _estimate_free_energy(summaries[-1], run, plan.free_energy, sampler, plan.mobility, plan.dts, chain_seed)
            if plan.checkpoint:
                save(None)
    finally:
        if bar:
            bar.stop()

    result = _summarise(summaries, energy, plan.theta0, plan.dts, plan.total_time, plan.backend, sampler,
                        plan.n_chains, plan.mobility, plan.temperature_kelvin, plan.chains is None)
    if plan.batch_size:
        result.notes.append(f"minibatches of {plan.batch_size} data samples: the approximate objective follows "
                            "the minibatch g_hat, so Identity 1 (true - approximate loss change = W_ex) holds on "
                            "average over minibatches; identity1_residual includes sum_k dtheta . (full-data "
                            "minus minibatch data term). The ledger (work, heat, W_ex) is exact per update.")
    return result


def _start_replica(plan: Plan, replica: int, chain_seed: int, data_seed: int, resumed: bool) -> ReplicaState:
    """A replica's generators, data, initial chains, preconditioner and context."""
    energy, device, comm = plan.energy, plan.device, plan.comm
    data_r = plan.dataset
    if plan.draw_data:   # a non-quadratic energy's data term needs samples: draw them from the moments
        from ..data.base import Gaussian as _G

        dgen = torch.Generator().manual_seed(data_seed)
        draws = _G(data_r.mean.cpu().numpy(), data_r.variance.cpu().numpy()).sample(plan.n_chains, gen=dgen)
        data_r = as_dataset(draws, energy.dim, device=device)
    if plan.shards == 1:
        gen = torch.Generator(device=device).manual_seed(chain_seed)
        state = _backends.initial_chains(plan.backend, energy, plan.theta0, plan.chains, plan.n_chains, gen,
                                         plan.dtype, data_r.samples)
        if plan.step_mode == "fused":   # the same initial states, the ledger kept by backends.fused
            from ..backends.fused import FusedParticleChains

            state = FusedParticleChains(state.x, energy, plan.theta0)
    else:
        gen = _dist.ShardGenerators(chain_seed, plan.shards, comm, device)
        state = _dist.ShardedParticleChains.start(energy, plan.theta0, plan.chains, plan.n_chains, gen, plan.dtype,
                                                  data_r.samples)
    data_gen = None
    if plan.batch_size:
        data_gen = torch.Generator(device=data_r.samples.device).manual_seed(data_seed)
    run = ReplicaState(energy, data_r, state, plan.theta0, gen, plan.n_updates,
                       n_rows=_n_rows(plan.n_updates, plan.record_every) if replica == 0 else 0,
                       history_file=plan.history_file if replica == 0 else None,
                       keep_thetas=replica == 0 and plan.keep_thetas,
                       data_gen=data_gen,
                       batch_size=plan.batch_size, reopen=resumed)
    run.once = comm.count_once(plan.sampler)
    if state.particles and plan.free_energy in ("auto", "ais", "ti") and not np.isfinite(run.fe0):
        run.x0 = state.head(1024).to(torch.float64).clone()   # for a Delta F estimate after the run
    run.lrs = None if plan.lrs is None else plan.lrs.copy()
    if plan.context:
        pgen = torch.Generator(device=device).manual_seed((chain_seed * 7919 + 104729) % (2**63))
        dt_int = float(np.max(plan.dts)) if len(plan.dts) else 0.0
        run.ctx = PreconditionContext(energy, plan.theta0, state, plan.sampler, plan.mobility, dt_int, pgen, plan.dts)
        run.pre = plan.preconditioner.fresh() if plan.preconditioner is not None else None
        if plan.shards > 1 and run.pre is not None:
            run.stats_kw = {"reduce": _dist.fisher_reduction(run.pre)}
        with run.once:
            if run.pre is not None:
                run.pre.start(run.ctx)
            if plan.tau_mode:
                retune(run, plan.schedule, plan.n_steps, 0)
    return run


def _fingerprint(plan: Plan) -> str:
    """sha256 of every input that determines the run (a checkpoint of other inputs is refused)."""
    from . import checkpoint as _ck

    ds = plan.dataset
    return _ck.fingerprint(repr(plan.energy), ds.mean, ds.variance, ds.samples if ds.samples is not None else None,
                           plan.lrs, plan.dts, plan.path, plan.theta0, plan.mobility, plan.n_chains, plan.n_replicas,
                           plan.sampler.name, plan.backend, plan.seed, str(plan.dtype), str(plan.device),
                           _chains_key(plan.chains), plan.data_term, plan.record_every, plan.keep_chains,
                           *((plan.schedule.name, repr(plan.schedule.params)) if isinstance(plan.schedule, Schedule)
                             else (None, repr(None))),
                           _pre_key(plan.preconditioner), plan.free_energy,
                           *([("shards", plan.shards)] if plan.shards > 1 else []),
                           *([("batch_size", plan.batch_size)] if plan.batch_size else []),
                           *([("step_mode", plan.step_mode)] if plan.step_mode != "default" else []))


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


def _chains_key(chains):
    if chains is None:
        return None
    if isinstance(chains, tuple):
        return tuple(np.asarray(c, float).tolist() for c in chains)
    if isinstance(chains, dict):
        return sorted((k, np.asarray(v, float).tolist()) for k, v in chains.items() if v is not None)
    if isinstance(chains, ChainBackend):   # a FokkerPlanck1D
        return (chains.grid, chains.rho.tolist())
    return torch.as_tensor(chains).detach().cpu().numpy()


def replay(energy: Energy, data, protocol: ThetaProtocol, **kwargs) -> TrainResult:
    """Run a prescribed theta path open-loop on fresh chains (same loop, no feedback)."""
    return train(energy, data, schedule=protocol, theta0=protocol.thetas[0], **kwargs)
