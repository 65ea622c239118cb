"""train(step_mode="compiled") (energies/compiled.py): the compiled passes agree with the eager
NeuralEnergy to float tolerance, and count one chain forward fewer per update."""
import numpy as np
import pytest
import torch

import mindiss as md
from mindiss.energies.compiled import CompiledNeuralEnergy, compile_available
from mindiss.energies.neural import NeuralEnergy
from mindiss.rates.schedules import constant

pytestmark = pytest.mark.skipif(compile_available() is not None, reason=str(compile_available()))


def _problem(n=64, dtype=torch.float64):
    energy = NeuralEnergy.mlp(dim=2, hidden=(8,), confinement=0.1, gen=0)
    gen = torch.Generator().manual_seed(3)
    data = torch.randn(n, 2, generator=gen, dtype=torch.float64) + 1.0
    x0 = torch.randn(n, 2, generator=gen, dtype=dtype)
    return energy, data, x0


def _agree(backend, dtype, rtol):
    energy, data, x0 = _problem(dtype=dtype)
    comp = CompiledNeuralEnergy.of(energy, backend=backend)
    theta = energy.theta0()
    x = x0.clone()
    d = data.to(dtype)
    # g_hat before (compiled chain half) and after an energy() call on the same tensors (reused half)
    g_eager = energy.grad_hat(d, x, theta)
    np.testing.assert_allclose(comp.grad_hat(d, x, theta).numpy(), g_eager.numpy(), rtol=rtol, atol=rtol * 1e-2)
    np.testing.assert_allclose(comp.energy(x, theta).numpy(), energy.energy(x, theta).numpy(), rtol=rtol)
    np.testing.assert_allclose(comp.grad_hat(d, x, theta).numpy(), g_eager.numpy(), rtol=rtol, atol=rtol * 1e-2)
    e_c, e_e = comp.energy_and_grad_x(x, theta), energy.energy_and_grad_x(x, theta)
    np.testing.assert_allclose(e_c.numpy(), e_e.numpy(), rtol=rtol)
    np.testing.assert_allclose(comp.grad_x(x, theta).numpy(), energy.grad_x(x, theta).numpy(), rtol=rtol,
                               atol=rtol * 1e-2)
    # a short run: the same random stream, the same algorithm
    kw = dict(schedule=constant(0.5, 0.1).discretise(10), theta0=theta, n_chains=x0.shape[0], n_replicas=1,
              sampler="euler", chains=x0, free_energy="exact", dtype=dtype, keep_chains=True)
    a = md.train(energy, data, **kw)
    md_energy_run = md.train(comp, data, **kw)   # a CompiledNeuralEnergy is an energy in its own right
    np.testing.assert_allclose(md_energy_run.thetas, a.thetas, rtol=rtol, atol=rtol * 1e-2)
    np.testing.assert_allclose(md_energy_run.chain_work, a.chain_work, rtol=rtol, atol=rtol * 1e-2)
    if backend != "inductor":
        return
    b = md.train(energy, data, step_mode="compiled", **kw)   # train's own wrapping (inductor)
    np.testing.assert_allclose(b.thetas, a.thetas, rtol=rtol, atol=rtol * 1e-2)
    np.testing.assert_allclose(b.final_chains.numpy(), a.final_chains.numpy(), rtol=rtol, atol=rtol * 1e-2)
    assert b.work == pytest.approx(a.work, rel=rtol * 10, abs=rtol * 1e-2)


def test_compiled_graphs_agree_with_eager_uncompiled():
    """The torch.func graphs and the reuse of the heat's pass (uncompiled: fast) against the eager energy."""
    torch.set_num_threads(1)
    _agree(None, torch.float64, 1e-10)
    _agree(None, torch.float32, 1e-5)


@pytest.mark.slow
def test_compiled_inductor_agrees_with_eager():
    """The inductor-compiled path (what step_mode="compiled" runs) to float tolerance, float32 and float64."""
    torch.set_num_threads(1)
    _agree("inductor", torch.float64, 1e-9)
    _agree("inductor", torch.float32, 2e-4)


def test_compiled_counts_one_chain_forward_fewer():
    """Per update the eager path runs 4 chain-sized forwards (data + chains, work, heat), the compiled
    path 3 (the heat's pass returns the next g_hat's chain half): counted with a forward hook on the
    graphs run uncompiled (a compiled graph runs no module hooks)."""
    torch.set_num_threads(1)
    energy, data, x0 = _problem(n=32)
    rows = []
    energy.module.register_forward_hook(lambda m, inp, out: rows.append(inp[0].shape[0]))
    kw = dict(schedule=constant(0.5, 0.1).discretise(6), theta0=energy.theta0(), n_chains=32, n_replicas=1,
              sampler="euler", chains=x0, free_energy="exact")
    rows.clear()
    md.train(energy, data, **kw)
    eager = sum(rows)
    comp = CompiledNeuralEnergy.of(energy, backend=None)   # the same graphs, uncompiled: the hook sees them
    rows.clear()
    md.train(comp, data, **kw)
    compiled = sum(rows)
    n_updates = len(kw["schedule"].lr)
    # eager: 4 x 32 rows per update (+ start); compiled: 3 x 32 (+ start, + one chain half at update 1)
    assert eager - compiled == pytest.approx(32 * (n_updates - 1), abs=32 * 2)


def test_compiled_refuses_other_energies():
    from mindiss.data.base import Gaussian
    from mindiss.errors import InputError

    with pytest.raises(InputError, match="compiles NeuralEnergy"):
        md.train(md.HarmonicTrap(1.0, 1), Gaussian(5.0, 1.0), schedule=constant(1.0, 0.1).discretise(3),
                 theta0=[0.0], n_chains=10, step_mode="compiled")
