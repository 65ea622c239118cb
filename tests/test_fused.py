"""train(step_mode="fused") (backends/fused.py) against the default path, and the default path against
the numbers of the implementation before issue 20 (frozen digests)."""
import hashlib
import os

import numpy as np
import pytest
import torch

import mindiss as md
from mindiss.data.base import Gaussian
from mindiss.energies.expfamily import ExpFamily
from mindiss.errors import InputError
from mindiss.rates.schedules import constant, optimal_harmonic

#: sha256[:16] of (history, thetas, per-chain work, final chains) of ``_runs()`` on the default path,
#: computed with the code before issue 20 (commit 8de9f41) on torch 2.13.0+cpu: the default path must
#: reproduce them bit for bit (another torch build may round differently: then the test is skipped)
FROZEN = {"trap1_float32": "5e3e4259c2bd574a", "trap2_float64": "b761f3d58947f521",
          "double_well_float32": "fbe868df0b68add6"}
FROZEN_TORCH = "2.13.0+cpu"


def _digest(res) -> str:
    h = hashlib.sha256()
    for a in (res.history.values, res.thetas, res.chain_work, res.final_chains.numpy()):
        h.update(np.ascontiguousarray(np.asarray(a, dtype=np.float64)).tobytes())
    return h.hexdigest()[:16]


def _runs(step_mode="default"):
    out = {}
    for d, dt in ((1, "float32"), (2, "float64")):
        out[f"trap{d}_{dt}"] = md.train(md.HarmonicTrap(1.0, d), Gaussian([5.0] * d, [1.0] * d),
                                         schedule=optimal_harmonic(1.0, 1.0, 1.0).discretise(40), theta0=[0.0] * d,
                                         n_chains=500, n_replicas=2, seed=3, dtype=dt, keep_chains=True,
                                         step_mode=step_mode)
    e = ExpFamily.tilted_double_well()
    g = torch.Generator().manual_seed(1)
    data = e.sample_equilibrium(torch.tensor([1.5, 0.5], dtype=torch.float64), 400, gen=g, dtype=torch.float64)
    x0 = e.sample_equilibrium(torch.tensor([1.0, 0.0], dtype=torch.float64), 400, gen=g, dtype=torch.float32)
    out["double_well_float32"] = md.train(e, data, schedule=constant(1.0, 0.04).discretise(40), theta0=[1.0, 0.0],
                                          n_chains=400, n_replicas=1, seed=3, sampler="euler", chains=x0,
                                          keep_chains=True, free_energy="exact", step_mode=step_mode)
    return out


@pytest.fixture(scope="module")
def both():
    torch.set_num_threads(1)
    return _runs("default"), _runs("fused")


@pytest.mark.skipif(torch.__version__ != FROZEN_TORCH, reason=f"digests recorded on torch {FROZEN_TORCH}")
def test_default_path_bit_identical_to_before(both):
    default, _ = both
    assert {k: _digest(v) for k, v in default.items()} == FROZEN


def test_fused_chains_theta_bit_identical_ledger_to_rounding(both):
    """Fused: the chains, theta after every update and the chain-mean history column are the default's
    bit for bit; work and heat (per chain and in the history) agree to float64 rounding."""
    default, fused = both
    for key in default:
        a, b = default[key], fused[key]
        assert np.array_equal(a.thetas, b.thetas), key
        assert torch.equal(a.final_chains, b.final_chains), key
        cols = a.history.columns
        mean_cols = [i for i, c in enumerate(cols) if c.startswith("chain_mean") or c.startswith("theta")]
        assert mean_cols and np.array_equal(a.history.values[:, mean_cols], b.history.values[:, mean_cols]), key
        for c in ("work", "heat"):
            i = cols.index(c)
            np.testing.assert_allclose(b.history.values[:, i], a.history.values[:, i], rtol=1e-11, atol=1e-12)
        np.testing.assert_allclose(b.chain_work, a.chain_work, rtol=1e-11, atol=1e-11)
        assert b.work == pytest.approx(a.work, rel=1e-12, abs=1e-13)
        assert b.first_law_residual < 1e-9


def test_fused_work_matches_hand_written_loop():
    """Against the bench's bare loop (written apart: per-chain energies differenced every update)."""
    from mindiss.app import bench

    torch.set_num_threads(1)
    for dim in (1, 2):
        fns = bench.make_trap(800, dim, 30, torch.float32)
        assert fns["fused"]() == pytest.approx(fns["bare"](), rel=1e-12)
    fns = bench.make_double_well(800, 30, torch.float64)
    assert fns["fused"]() == pytest.approx(fns["bare"](), rel=1e-9)


def test_fused_heat_per_chain_first_law_against_fresh_energies():
    """Q_i of the fused ledger equals E_theta_T(x_T) - E_theta_0(x_0) - W_i with the energies recomputed
    by an independent NumPy formula (x - theta)^2 / 2 from the initial and final chains."""
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(5)
    x0 = torch.randn(300, 1, generator=gen, dtype=torch.float64)
    from mindiss.backends.fused import FusedParticleChains
    from mindiss.backends.samplers import ExactOU

    energy = md.HarmonicTrap(1.0, 1)
    theta = torch.zeros(1, dtype=torch.float64)
    st = FusedParticleChains(x0.clone(), energy, theta)
    sampler = ExactOU()
    for k in range(20):
        new = theta + 0.05
        st.apply_update(energy, theta, new)
        theta = new
        st.move(energy, theta, 0.01, 1.0, sampler, gen)
    xT = st.x.numpy().reshape(-1)
    e_T = (xT - theta.item()) ** 2 / 2
    e_0 = x0.numpy().reshape(-1) ** 2 / 2
    # work per chain: sum_k W_k with W = E_new(x) - E_old(x) from the chain states of each update is what
    # the fused axpy accumulates; its mean matches the ledger means
    np.testing.assert_allclose(st.heat.numpy(), e_T - e_0 - st.work.numpy(), atol=1e-12)
    w, q = st.mean_work_heat()
    assert w == pytest.approx(float(st.work.mean()), rel=1e-12)
    assert q == pytest.approx(float(st.heat.mean()), abs=1e-12)


@pytest.mark.parametrize("kw, msg", [
    (dict(step_mode="turbo"), "step_mode must be one of"),
    (dict(step_mode="fused", backend="moments"), "unsharded particle chains"),
    (dict(step_mode="compiled"), "compiles NeuralEnergy"),
])
def test_step_mode_bad_input(kw, msg):
    with pytest.raises(InputError, match=msg):
        md.train(md.HarmonicTrap(1.0, 1), Gaussian(5.0, 1.0), schedule=constant(1.0, 0.1).discretise(3),
                 theta0=[0.0], n_chains=10, n_replicas=1, **kw)


def test_fused_refuses_a_network():
    from mindiss.energies.neural import NeuralEnergy

    energy = NeuralEnergy.mlp(dim=1, hidden=(4,), gen=0)
    with pytest.raises(InputError, match="closed forms for HarmonicTrap and ExpFamily"):
        md.train(energy, torch.randn(20, 1), schedule=constant(0.1, 0.1).discretise(3), theta0=energy.theta0(),
                 n_chains=20, n_replicas=1, sampler="euler", chains=torch.randn(20, 1), step_mode="fused")


def test_fused_resume_continues(tmp_path):
    """A fused run stopped and resumed from its checkpoint ends where an uninterrupted fused run ends
    (theta and chains exactly; the ledger to rounding: the work is materialised at the checkpoint)."""
    torch.set_num_threads(1)
    kw = dict(schedule=optimal_harmonic(1.0, 1.0, 1.0).discretise(30), theta0=[0.0], n_chains=200, n_replicas=1,
              seed=2, step_mode="fused", keep_chains=True)
    full = md.train(md.HarmonicTrap(1.0, 1), Gaussian(5.0, 1.0), **kw)
    ck = tmp_path / "ck"
    calls = iter(range(10_000))
    with pytest.raises(md.Interrupted if hasattr(md, "Interrupted") else KeyboardInterrupt):
        md.train(md.HarmonicTrap(1.0, 1), Gaussian(5.0, 1.0), checkpoint=ck, stop=lambda: next(calls) == 12, **kw)
    res = md.train(md.HarmonicTrap(1.0, 1), Gaussian(5.0, 1.0), checkpoint=ck, resume=True, **kw)
    assert np.array_equal(res.thetas, full.thetas)
    assert torch.equal(res.final_chains, full.final_chains)
    np.testing.assert_allclose(res.chain_work, full.chain_work, rtol=1e-12, atol=1e-12)
