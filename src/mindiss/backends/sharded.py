"""Chains sharded over ``torch.distributed`` ranks (docs/distributed.md).

N = n_chains persistent chains are cut into ``shards`` equal blocks of m = N / shards chains.
Block b draws its initial states and its move noise from its own generator, seeded
``shard_seed(chain_seed, b)`` (block 0 keeps the replica's chain seed). With ``world`` ranks,
rank r owns blocks r * shards / world ... (r + 1) * shards / world - 1; one process may own all
blocks (``train(..., shards=k)`` without a process group), which is the single-process reference
a sharded run must reproduce.

Every chain statistic the update needs is a sum over chains, so each rank sums over its own blocks
(in float64) and one all-reduce adds the ranks:

    E_rho[f] = (1 / N) sum_ranks sum_blocks sum_{i in block} f(x_i)

for the chain mean, E_rho[d_theta E] (g_hat), the mean work and heat (the ledger), and the
Fisher information I = Cov_rho[d_theta E] (two passes: the all-reduced mean, then the
all-reduced sum of centred outer products). The first-law residual is an all-reduce MAX. theta
is then computed identically on every rank (same inputs, same operations), so every rank
returns the same ``TrainResult``. The results equal those of one process holding all blocks up to
the order in which block sums are added (bit-identical for two blocks; otherwise a few ulp).
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch

from .chains import ChainBackend, ParticleChains
from ..errors import InputError, require_positive_int

F64 = torch.float64


def shard_seed(chain_seed: int, block: int) -> int:
    """Seed of block ``block``'s chain generator: the replica's seed for block 0, an independent
    child of it (numpy SeedSequence with spawn key (block,)) for the others."""
    if block == 0:
        return int(chain_seed)
    ss = np.random.SeedSequence(int(chain_seed), spawn_key=(int(block),))
    return int(ss.generate_state(1, dtype=np.uint64)[0] % (2**63))


class Comm:
    """The ranks a sharded run reduces over: ``rank``, ``world`` and the few collectives it needs.

    Without an initialised default process group (or with one rank) every collective is the
    identity, so one process holding all blocks runs the same code."""

    def __init__(self):
        import torch.distributed as dist

        self._dist = dist
        on = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if on else 0
        self.world = dist.get_world_size() if on else 1
        #: where small reductions live: nccl reduces CUDA tensors only
        self.device = (torch.device("cuda", torch.cuda.current_device())
                       if on and dist.get_backend() == "nccl" else torch.device("cpu"))

    def __repr__(self):
        return f"Comm(rank={self.rank}, world={self.world})"

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        """In-place all-reduce SUM (returns ``t``)."""
        if self.world > 1:
            self._dist.all_reduce(t, op=self._dist.ReduceOp.SUM)
        return t

    def max_(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            self._dist.all_reduce(t, op=self._dist.ReduceOp.MAX)
        return t

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        """Rows of every rank concatenated in rank order (every rank passes the same shape)."""
        if self.world == 1:
            return t
        parts = [torch.empty_like(t) for _ in range(self.world)]
        self._dist.all_gather(parts, t.contiguous())
        return torch.cat(parts)

    def gather_objects(self, obj) -> list:
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        self._dist.all_gather_object(out, obj)
        return out

    def any(self, flag: bool) -> bool:
        """True on every rank if ``flag`` is true on any rank."""
        if self.world == 1:
            return bool(flag)
        return bool(self.max_(torch.tensor([1.0 if flag else 0.0], dtype=F64, device=self.device)).item() > 0)

    def from_root(self, fn):
        """``fn()`` evaluated on rank 0 only and broadcast; an exception there is raised on every rank."""
        if self.world == 1:
            return fn()
        box = [None]
        if self.rank == 0:
            try:
                box[0] = (True, fn())
            except Exception as exc:   # every rank must leave the collective, then all raise
                box[0] = (False, exc)
        self._dist.broadcast_object_list(box, src=0)
        ok, value = box[0]
        if not ok:
            raise value
        return value

    def check_same(self, theta: torch.Tensor) -> None:
        """Every rank must hold rank 0's theta bit for bit (the update is replicated, not broadcast)."""
        if self.world == 1:
            return
        ref = theta.clone()
        self._dist.broadcast(ref, src=0)
        if self.any(not torch.equal(ref, theta)):
            raise RuntimeError("ranks disagree on theta: a non-deterministic operation in the update "
                               "(sharded runs need identical arithmetic on every rank)")

    def count_once(self, sampler):
        """A context for work that every rank repeats identically (pilot runs of a preconditioner on
        the gathered chains): only rank 0 keeps the sampler's counters (MALA acceptances)."""
        if self.world == 1 or self.rank == 0:
            return contextlib.nullcontext()
        return _RestoreCounters(sampler)


class _RestoreCounters:
    def __init__(self, sampler):
        self.sampler = sampler

    def __enter__(self):
        self.saved = self.sampler.state_dict()

    def __exit__(self, *exc):
        self.sampler.load_state_dict(self.saved)
        return False


def reduce_counters(sampler, base: dict, comm: Comm) -> dict:
    """``sampler.state_dict()`` with its counters summed over ranks since ``base`` (the counters
    when they were last common to all ranks): base + sum_ranks (local - base)."""
    sd = sampler.state_dict()
    if comm.world == 1 or not sd:
        return sd
    keys = sorted(sd)
    delta = torch.tensor([float(sd[k]) - float(base[k]) for k in keys], dtype=F64, device=comm.device)
    comm.sum_(delta)
    return {k: type(sd[k])(float(base[k]) + float(v)) for k, v in zip(keys, delta.cpu().tolist())}


def check_shards(shards, comm: Comm, backend: str) -> int:
    """The number of chain blocks: ``shards`` or, by default, one per rank (particles only)."""
    if backend != "particles":
        if shards not in (None, 1):
            raise InputError(f"shards apply to simulated chains (backend 'particles'), not {backend!r}; "
                             "the exact backends run whole on every rank")
        return 1
    shards = comm.world if shards is None else require_positive_int("shards", shards)
    if shards % comm.world:
        raise InputError(f"shards={shards} must be a multiple of the {comm.world} ranks of the process group")
    return shards


def fisher_reduction(pre) -> str:
    """How a sharded run hands per-chain gradients to a preconditioner: "cov" (the all-reduced
    covariance; Fisher full), "var" (its diagonal; Fisher diag) or "samples" (gathered)."""
    from ..rates.preconditioners import Fisher

    if isinstance(pre, Fisher) and pre.kind in ("full", "diag"):
        return "cov" if pre.kind == "full" else "var"
    return "samples"


class ShardGenerators:
    """The chain generators of the blocks this rank owns (block b: ``shard_seed(seed, b)``).

    ``get_state`` / ``set_state`` use the global layout (one state per block, all blocks), so a
    checkpoint does not depend on how blocks were spread over ranks."""

    def __init__(self, chain_seed: int, shards: int, comm: Comm, device="cpu"):
        per = shards // comm.world
        self.comm, self.first = comm, comm.rank * per
        self.gens = [torch.Generator(device=device).manual_seed(shard_seed(chain_seed, self.first + i))
                     for i in range(per)]

    def get_state(self) -> list:
        local = [g.get_state() for g in self.gens]
        return [s for part in self.comm.gather_objects(local) for s in part]

    def set_state(self, states) -> None:
        for i, g in enumerate(self.gens):
            g.set_state(states[self.first + i])


class ShardedParticleChains(ChainBackend):
    """N = shards * m persistent chains in blocks of m, of which this rank owns some; the calls of
    ``ParticleChains`` with every mean over chains all-reduced (see the module docstring).

    ``x``, ``work`` and ``heat`` gather all chains in global order (collective, O(N d)): for
    checkpoints, ``keep_chains`` and pilot runs, never in the per-update path.
    """

    particles = True

    def __init__(self, blocks: list, comm: Comm, shards: int):
        self.blocks, self.comm, self.shards = list(blocks), comm, int(shards)
        self.block_size = blocks[0].n_chains
        if any(b.n_chains != self.block_size for b in blocks):
            raise InputError("chain blocks must have equal sizes")
        self.first = comm.rank * len(blocks)
        self._sums: torch.Tensor | None = None   # all-reduced (sum x, sum work, sum heat) / N

    @classmethod
    def start(cls, energy, theta, chains, n_chains: int, gens: ShardGenerators, dtype, data_samples=None):
        """Each owned block started as ``backends.initial_chains`` would start it, with its own
        generator: exact equilibrium draws, N(mean, variance) draws, or its rows of given states."""
        from .dispatch import initial_chains

        comm, shards = gens.comm, len(gens.gens) * gens.comm.world
        if chains is not None and not isinstance(chains, tuple):
            chains = torch.as_tensor(chains)
            n_chains = chains.shape[0]
        if n_chains % shards:
            raise InputError(f"{n_chains} chains do not split into {shards} equal shards")
        m = n_chains // shards
        blocks = []
        for i, g in enumerate(gens.gens):
            b = gens.first + i
            part = chains[b * m:(b + 1) * m] if isinstance(chains, torch.Tensor) else chains
            blocks.append(initial_chains("particles", energy, theta, part, m, g, dtype, data_samples))
        return cls(blocks, comm, shards)

    @property
    def n_chains(self) -> int:
        return self.block_size * self.shards

    # ------------------------------------------------------------------ reductions
    def _sum_blocks(self, parts) -> torch.Tensor:
        """sum over owned blocks (in block order), then over ranks."""
        total = parts[0].clone()
        for p in parts[1:]:
            total += p
        return self.comm.sum_(total)

    def _ledger(self) -> torch.Tensor:
        """(chain mean (d), mean work, mean heat), one all-reduce, cached until the chains change."""
        if self._sums is None:
            parts = [torch.cat([b.x.sum(0, dtype=F64), b.work.sum().reshape(1), b.heat.sum().reshape(1)])
                     for b in self.blocks]
            self._sums = self._sum_blocks(parts) / self.n_chains
        return self._sums

    def chain_mean(self) -> torch.Tensor:
        return self._ledger()[:-2]

    def mean_work(self) -> float:
        return float(self._ledger()[-2])

    def mean_heat(self) -> float:
        return float(self._ledger()[-1])

    def mean_grad_theta(self, energy, theta):
        if energy.capabilities.quadratic and energy.capabilities.grad_theta_from_mean:
            return energy.expected_grad_theta(self.chain_mean(), None, theta)
        # E_rho[d_theta E] is linear in the empirical measure: a block-size-weighted sum of block means
        parts = [energy.mean_grad_theta(b.x, theta).to(F64) * b.n_chains for b in self.blocks]
        return self._sum_blocks(parts) / self.n_chains

    def grad_theta_stats(self, energy, theta, needs: str, rows: int = 0, gen=None, *, reduce: str = "samples"):
        """As ``ParticleChains.grad_theta_stats`` over all N chains. With ``needs == "samples"``,
        ``reduce`` says what crosses ranks: "cov" / "var" the exact two-pass covariance (diagonal)
        of d_theta E over all chains (O(P^2) / O(P) per all-reduce), "samples" all per-chain
        gradients (gathered, O(N P) on every rank)."""
        from ..rates.preconditioners import GradStats

        N = self.n_chains
        if needs == "samples" or (needs == "subsample" and rows >= N):
            gs = [energy.grad_theta(b.x, theta).to(F64) for b in self.blocks]
            mean = self._sum_blocks([g.sum(0) for g in gs]) / N
            if reduce == "samples":
                return GradStats(mean, samples=self.comm.gather(torch.cat(gs)))
            if reduce == "var":
                var = self._sum_blocks([((g - mean) ** 2).sum(0) for g in gs]) / max(N - 1, 1)
                # Fisher("diag") reads only the diagonal of ``cov``
                return GradStats(mean, cov=torch.diag(var))
            cs = [g - mean for g in gs]
            return GradStats(mean, cov=self._sum_blocks([c.T @ c for c in cs]) / max(N - 1, 1))
        mean = self.mean_grad_theta(energy, theta)
        if needs == "subsample":
            # the same rows (with replacement) as one process would draw: every rank draws the global
            # indices from the shared generator and fills the rows it owns; a SUM assembles them
            idx = torch.randint(N, (rows,), generator=gen, device=gen.device).to(self.blocks[0].x.device)
            out = torch.zeros(rows, energy.n_params, dtype=F64, device=idx.device)
            for i, b in enumerate(self.blocks):
                lo = (self.first + i) * self.block_size
                mine = ((idx >= lo) & (idx < lo + self.block_size)).nonzero().reshape(-1)
                if mine.numel():
                    out[mine] = energy.grad_theta(b.x[idx[mine] - lo], theta).to(F64)
            return GradStats(mean, samples=self.comm.sum_(out))
        return GradStats(mean)

    def first_law_residual(self, energy, theta) -> float:
        """max_i |E_theta(x_i) - E_theta0(x_i,0) - W_i - Q_i| over all chains (all-reduce MAX)."""
        r = max(b.first_law_residual(energy, theta) for b in self.blocks)
        return float(self.comm.max_(torch.tensor([r], dtype=F64, device=self.blocks[0].work.device)))

    def finite(self) -> bool:
        bad = not all(b.finite() for b in self.blocks)
        return not self.comm.any(bad)

    # ------------------------------------------------------------------ the update
    def apply_update(self, energy, theta_old, theta_new) -> None:
        for b in self.blocks:
            b.apply_update(energy, theta_old, theta_new)
        self._sums = None

    def move(self, energy, theta, dt, mobility, sampler, gen: ShardGenerators) -> None:
        """Block i moves with its own generator ``gen.gens[i]``."""
        for b, g in zip(self.blocks, gen.gens):
            b.move(energy, theta, dt, mobility, sampler, g)
        self._sums = None

    # ------------------------------------------------------------------ all chains (collective)
    def _gathered(self, name: str) -> torch.Tensor:
        return self.comm.gather(torch.cat([getattr(b, name) for b in self.blocks]))

    @property
    def x(self) -> torch.Tensor:
        return self._gathered("x")

    @property
    def work(self) -> torch.Tensor:
        return self._gathered("work")

    @property
    def heat(self) -> torch.Tensor:
        return self._gathered("heat")

    def head(self, n: int) -> torch.Tensor:
        """The first ``n`` chains in global order (what ``x[:n]`` would be)."""
        local = torch.cat([b.x[:n] for b in self.blocks])[:n]
        return self.comm.gather(local)[:n]

    def state_dict(self) -> dict:
        """All chains in global order (collective): the layout of ``ParticleChains.state_dict``."""
        return {k: self._gathered(k).clone() for k in ParticleChains._STATE}

    def load_state_dict(self, sd: dict) -> None:
        m = self.block_size
        for i, b in enumerate(self.blocks):
            lo = (self.first + i) * m
            b.load_state_dict({k: sd[k][lo:lo + m].to(b.x.device) for k in ParticleChains._STATE})
        self._sums = None
