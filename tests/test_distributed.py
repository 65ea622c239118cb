"""Chains sharded over torch.distributed ranks (docs/distributed.md).

Two gloo processes launched by torchrun must return, on every rank, the result of one process that
holds the same chain blocks (``shards=k``): same seeds per block, every chain statistic summed over
blocks. Two code paths meet here: the all-reduce over ranks and the in-process sum over blocks.

This file is also the torchrun worker: ``torchrun --standalone --nproc_per_node=2
tests/test_distributed.py OUT`` runs every case on each rank and saves the results under OUT.
"""
from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import mindiss as md
from mindiss.rates import schedules as S
from mindiss.backends.chains import ParticleChains
from mindiss.backends.sharded import Comm, ShardedParticleChains, shard_seed
from mindiss.errors import InputError
from mindiss.rates.preconditioners import fisher_from_samples

ROOT = Path(__file__).resolve().parents[1]
#: two ranks add two partial sums (a + b == b + a exactly); with more blocks than ranks the
#: association differs from the in-process order by a few ulp of the float64 sums
RTOL = 1e-12


def _cases() -> dict:
    """name -> train() keyword arguments (fresh objects on every call)."""
    return {
        "trap": dict(energy=md.HarmonicTrap(0.5, 1), data=md.data.Gaussian(1.0, 0.5),
                     schedule=S.optimal_harmonic(0.5, 1.0, 1.0), theta0=0.0, n_chains=2000, n_steps=20,
                     n_replicas=2, dtype="float64", seed=3),
        "fisher_full": dict(energy=md.Gaussian(1), data=md.data.Gaussian(1.0, 2.0), schedule=S.constant(0.05, 1.0),
                            theta0=md.Gaussian.natural(0.0, 1.0), n_chains=2000, n_steps=20, n_replicas=2,
                            dtype="float64", preconditioner="fisher-full", seed=5),
        # four blocks on two ranks; MALA counters, low-rank subsample rows, gathered chains
        "mala_lowrank_4": dict(energy=md.Gaussian(2), data=md.data.Gaussian([1.0, -1.0], [2.0, 0.5]),
                               schedule=S.constant(0.05, 1.0), theta0=md.Gaussian.natural([0.0, 0.0], [1.0, 1.0]),
                               n_chains=2000, n_steps=20, n_replicas=2, sampler="mala",
                               preconditioner=md.preconditioners.Fisher("lowrank", rank=16), seed=7,
                               keep_chains=True, shards=4),
        "natgrad_diag": dict(energy=md.Gaussian(1), data=md.data.Gaussian(1.0, 2.0),
                             schedule=S.natural_gradient(1.0, fisher="diag"), theta0=md.Gaussian.natural(0.0, 1.0),
                             n_chains=2000, n_steps=20, n_replicas=2, seed=9),
        # pilot runs on the gathered chains, repeated identically on every rank
        "friction_pilot": dict(energy=md.HarmonicTrap(1.0, 2), data=md.data.Gaussian([1.0, 0.0], 1.0),
                               schedule=S.friction(1.0, refresh=10, pilot_chains=64, pilot_dt=0.25),
                               theta0=[0.0, 0.0], n_chains=2000, n_steps=20, n_replicas=2, seed=9, sampler="euler"),
    }


def _train(name, **extra) -> md.TrainResult:
    kw = _cases()[name]
    kw.update(extra)
    return md.train(kw.pop("energy"), kw.pop("data"), **kw)


def _flat(res: md.TrainResult) -> dict:
    out = res.to_dict()
    out.update(history=res.history.values, thetas=res.thetas, chain_work=res.chain_work,
               final_chains=None if res.final_chains is None else res.final_chains.numpy())
    return out


def _stop_at(update: int, rank: int):
    """A stop request raised by one rank only, at ``update`` of the first replica."""
    import torch.distributed as dist

    count = [0]

    def stop():
        count[0] += 1
        return dist.get_rank() == rank and count[0] > update

    return stop


def _worker(out: Path) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    results = {name: _flat(_train(name, **({} if "shards" in _cases()[name] else {"shards": 2})))
               for name in _cases()}
    # an interrupted run: rank 1 alone asks to stop; every rank stops, rank 0 writes the checkpoint
    try:
        _train("trap", checkpoint=out / "trap.ckpt", stop=_stop_at(7, rank=1))
        results["interrupted"] = None
    except md.Interrupted as exc:
        results["interrupted"] = exc.update
    torch.save(results, out / f"rank{rank}.pt")
    dist.destroy_process_group()


def _torchrun(script, *args) -> subprocess.CompletedProcess:
    """Two gloo ranks on CPU (``--standalone`` takes a free port from the OS)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), *map(str, args)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """Results of every case on each of two gloo ranks (one torchrun launch)."""
    out = tmp_path_factory.mktemp("dist")
    _torchrun(__file__, out)
    return out, [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


def _compare(a, b, rtol, path=""):
    """Recursive comparison, returning the largest relative difference: numbers to ``rtol`` of their
    magnitude, arrays to ``rtol`` of each column's largest magnitude (norm-wise: a per-chain work
    near 0 carries the rounding of its neighbours), strings and structure exactly. The residual
    fields are rounding noise themselves: both must stay below ``rtol`` kT. rtol = 0: bit for bit."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        return max((_compare(a[k], b[k], rtol, f"{path}.{k}") for k in a), default=0.0)
    if isinstance(a, (list, tuple)) and not (a and isinstance(a[0], (int, float))):
        assert len(a) == len(b), path
        return max((_compare(x, y, rtol, f"{path}[{i}]") for i, (x, y) in enumerate(zip(a, b))), default=0.0)
    if a is None or isinstance(a, str) or isinstance(a, bool):
        assert a == b, f"{path}: {a!r} != {b!r}"
        return 0.0
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    assert x.shape == y.shape, path
    assert np.array_equal(np.isnan(x), np.isnan(y)), path
    if rtol > 0 and path.endswith("_residual"):
        assert max(float(x), float(y)) <= rtol, f"{path}: {float(x):.3g}, {float(y):.3g}"
        return 0.0
    x, y = np.nan_to_num(x), np.nan_to_num(y)
    scale = np.maximum(np.abs(x), np.abs(y)).max(axis=0) if x.ndim else max(abs(x), abs(y))
    diff = np.abs(x - y).max(axis=0) if x.ndim else abs(x - y)
    rel = float(np.max(np.where(scale > 0, diff / np.where(scale > 0, scale, 1.0), 0.0), initial=0.0))
    assert rel <= rtol, f"{path}: relative difference {rel:.3g} > {rtol:g}"
    return rel


def test_every_rank_returns_the_same_result(ranks):
    _, (r0, r1) = ranks
    assert _compare(r0, r1, 0.0) == 0.0


@pytest.mark.parametrize("name", list(_cases()))
def test_two_gloo_ranks_match_one_process_with_the_same_shards(ranks, name):
    _, (r0, _) = ranks
    shards = _cases()[name].get("shards", 2)
    single = _flat(_train(name, shards=shards))
    rel = _compare(r0[name], single, RTOL)
    if shards == 2:
        assert rel == 0.0   # two partial sums: the same bits in either order


def test_interrupted_ranks_resume_in_one_process(ranks):
    """A stop asked by rank 1 alone stops both ranks at the same update; rank 0's checkpoint (global
    chain layout) resumes in one process with the same shards and ends where an unbroken run ends."""
    out, (r0, r1) = ranks
    assert r0["interrupted"] == r1["interrupted"] == 7
    resumed = _flat(_train("trap", shards=2, checkpoint=out / "trap.ckpt", resume=True))
    _compare(resumed, _flat(_train("trap", shards=2)), RTOL)
    _compare(resumed, r0["trap"], RTOL)


def test_the_documented_script(tmp_path, monkeypatch, capsys):
    """docs/distributed.md's script under torchrun prints what it prints in one process with two blocks."""
    source = re.search(r"```python\n(.*?)```", (ROOT / "docs" / "distributed.md").read_text(), re.S).group(1)
    (tmp_path / "train_sharded.py").write_text(source)
    printed = re.search(r"W_ex = .*", _torchrun(tmp_path / "train_sharded.py").stdout).group(0)
    import torch.distributed as dist

    for name, value in (("init_process_group", None), ("get_rank", 0), ("destroy_process_group", None)):
        monkeypatch.setattr(dist, name, lambda *a, _v=value, **k: _v)
    train = md.train
    monkeypatch.setattr(md, "train", lambda *a, **k: train(*a, shards=2, **k))
    exec(compile(source, "train_sharded.py", "exec"), {"__name__": "__main__"})
    assert capsys.readouterr().out.strip() == printed.strip()


def test_block_reductions_equal_the_statistics_of_all_chains():
    """The sums over blocks against ParticleChains over the concatenated chains (another code path)."""
    energy, theta = md.Gaussian(2), md.Gaussian.natural([0.3, -1.0], [1.5, 0.7])
    gen = torch.Generator().manual_seed(1)
    blocks = [ParticleChains.equilibrium(energy, theta, 500, gen=gen, dtype=torch.float64) for _ in range(3)]
    sharded = ShardedParticleChains(blocks, Comm(), 3)
    whole = ParticleChains(torch.cat([b.x for b in blocks]), energy, theta)
    theta_new = theta + 0.05
    for st in (sharded, whole):
        st.apply_update(energy, theta, theta_new)
    close = dict(rtol=RTOL, atol=0.0)
    torch.testing.assert_close(sharded.chain_mean(), whole.chain_mean(), **close)
    torch.testing.assert_close(sharded.mean_work(), whole.mean_work(), **close)
    torch.testing.assert_close(sharded.mean_grad_theta(energy, theta_new),
                               energy.grad_theta(whole.x, theta_new).mean(0), **close)
    samples = energy.grad_theta(whole.x, theta_new)
    full = sharded.grad_theta_stats(energy, theta_new, "samples", reduce="cov")
    torch.testing.assert_close(full.cov, fisher_from_samples(samples), **close)
    diag = sharded.grad_theta_stats(energy, theta_new, "samples", reduce="var")
    torch.testing.assert_close(torch.diagonal(diag.cov), samples.var(0), **close)
    gathered = sharded.grad_theta_stats(energy, theta_new, "samples")
    assert torch.equal(gathered.samples, samples)
    # the low-rank subsample picks the same rows as one process drawing from the same generator
    sub = sharded.grad_theta_stats(energy, theta_new, "subsample", 64, torch.Generator().manual_seed(4))
    ref = whole.grad_theta_stats(energy, theta_new, "subsample", 64, torch.Generator().manual_seed(4))
    assert torch.equal(sub.samples, ref.samples)
    assert sharded.first_law_residual(energy, theta_new) == whole.first_law_residual(energy, theta_new)
    assert torch.equal(sharded.head(700), whole.x[:700])


def test_block_seeds_and_inputs():
    assert shard_seed(12345, 0) == 12345
    seeds = {shard_seed(12345, b) for b in range(64)}
    assert len(seeds) == 64 and all(0 <= s < 2**63 for s in seeds)
    with pytest.raises(InputError, match="equal shards"):
        _train("trap", shards=3)
    with pytest.raises(InputError, match="backend 'particles'"):
        _train("trap", shards=2, backend="moments")
    # one block is the unsharded run, bit for bit
    assert _compare(_flat(_train("trap", shards=1)), _flat(_train("trap")), 0.0) == 0.0
    # two blocks: a different random stream for the same physics (within 4 combined replica SE)
    a, b = _train("trap", shards=2, n_replicas=4), _train("trap", n_replicas=4)
    assert abs(a.excess_work - b.excess_work) <= 4 * math.hypot(a.excess_work_se, b.excess_work_se)


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
