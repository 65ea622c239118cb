"""train(): streamed history, minibatches of the data term, the PCD objective without F, and the
batched free energy of the history (issue 9: memory that does not grow with updates; issue 8:
minibatches with an exact ledger)."""
import numpy as np
import pytest
import torch

import mindiss as md
from mindiss.errors import InputError
from mindiss.energies.expfamily import ExpFamily
from mindiss.rates.schedules import constant


def _double_well(n=2000, seed=3):
    energy = ExpFamily.tilted_double_well()
    gen = torch.Generator().manual_seed(seed)
    data = energy.sample_equilibrium(torch.tensor([1.5, 0.5], dtype=torch.float64), n, gen=gen,
                                     dtype=torch.float64)
    return energy, data


def test_history_file_matches_memory_history(tmp_path):
    """The streamed .npy history holds exactly the rows of the in-memory history; no partial file is
    left; the result maps it read-only."""
    energy, data = _double_well()
    kw = dict(schedule=constant(1.0, 0.2).discretise(40), theta0=[1.0, 0.0], n_chains=1000, n_replicas=2,
              sampler="euler", seed=5)
    mem = md.train(energy, data, **kw)
    path = tmp_path / "hist.npy"
    st = md.train(energy, data, history_file=path, **kw)
    assert np.array_equal(np.asarray(st.history.values), mem.history.values)
    assert st.history.columns == mem.history.columns
    assert st.thetas is None and mem.thetas is not None
    assert list(tmp_path.iterdir()) == [path]
    assert np.array_equal(np.load(path), mem.history.values)
    assert not st.history.values.flags.writeable


def test_history_file_resume_is_bit_identical(tmp_path):
    energy, data = _double_well()
    kw = dict(schedule=constant(1.0, 0.2).discretise(30), theta0=[1.0, 0.0], n_chains=500, n_replicas=1,
              sampler="euler", seed=2, record_every=3)
    ref = md.train(energy, data, **kw)
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] == 17

    ck, path = tmp_path / "ck.pt", tmp_path / "h.npy"
    with pytest.raises(KeyboardInterrupt):
        md.train(energy, data, checkpoint=ck, stop=stop, history_file=path, **kw)
    res = md.train(energy, data, checkpoint=ck, resume=True, history_file=path, **kw)
    assert np.array_equal(np.asarray(res.history.values), ref.history.values)
    assert res.work == ref.work


def test_history_file_needs_npy_suffix(tmp_path):
    energy, data = _double_well()
    with pytest.raises(InputError, match=r"\.npy"):
        md.train(energy, data, schedule=constant(1.0, 0.1).discretise(5), theta0=[1.0, 0.0], n_chains=100,
                 sampler="euler", history_file=tmp_path / "h.csv")


def test_batched_history_free_energy_matches_scalar_quadrature():
    """The history's F column (one batched quadrature after the run) equals F(theta) row by row."""
    energy, data = _double_well()
    res = md.train(energy, data, schedule=constant(2.0, 0.5).discretise(50), theta0=[1.0, 0.0], n_chains=1000,
                   n_replicas=1, sampler="euler", seed=1)
    h = res.history
    th = h.block("theta")
    f0 = energy.free_energy(torch.as_tensor(th[0]))
    for r in (0, 7, 23, 50):
        assert h["delta_free_energy"][r] == pytest.approx(energy.free_energy(torch.as_tensor(th[r])) - f0,
                                                          abs=1e-12)
    assert np.allclose(h["excess_work"], h["work"] - h["delta_free_energy"], atol=1e-14)
    # Identity 1 along the history (exact in discrete time for E linear in theta)
    resid = h["loss_true"] - h["loss_approx"] - h["excess_work"]
    assert np.abs(resid).max() < 1e-9


def test_loss_approx_change_column_finite_without_free_energy():
    """A neural energy has no F: the true-loss columns are NaN but the accumulated PCD objective
    change sum_k dtheta . g_hat is recorded, and ends at result.loss_approx_change."""
    energy = md.NeuralEnergy.mlp(dim=2, hidden=(8,), confinement=0.5, gen=0)
    data = torch.randn(300, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    res = md.train(energy, data, schedule=constant(0.05, 0.1).discretise(10), theta0=energy.theta0(),
                   n_chains=200, n_replicas=1, sampler="euler", seed=0, free_energy="exact",
                   chains=torch.randn(200, 2, generator=torch.Generator().manual_seed(1)))
    col = res.history["loss_approx_change"]
    assert np.isfinite(col).all() and col[0] == 0.0
    assert col[-1] == pytest.approx(res.loss_approx_change, rel=1e-12, abs=1e-15)
    assert np.isnan(res.history["loss_true"]).all()


def test_minibatch_data_term_ledger_exact_and_resume_bit_identical(tmp_path):
    energy, data = _double_well(n=5000)
    kw = dict(schedule=constant(1.0, 0.3).discretise(30), theta0=[1.0, 0.0], n_chains=800, n_replicas=2,
              sampler="euler", seed=4, batch_size=64, keep_chains=True)
    a = md.train(energy, data, **kw)
    b = md.train(energy, data, **kw)
    assert a.work == b.work and a.theta_final == b.theta_final    # the data generator is seeded
    full = md.train(energy, data, **{**kw, "batch_size": None})
    assert a.theta_final != full.theta_final                     # minibatches change the trajectory
    assert a.first_law_residual < 1e-9                            # the ledger stays exact per chain
    assert any("minibatch" in n for n in a.notes)                  # Identity 1 holds only on average
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] == 11

    ck = tmp_path / "ck.pt"
    with pytest.raises(KeyboardInterrupt):
        md.train(energy, data, checkpoint=ck, stop=stop, **kw)
    c = md.train(energy, data, checkpoint=ck, resume=True, **kw)
    assert c.work == a.work and c.theta_final == a.theta_final
    assert np.array_equal(c.history.values, a.history.values)


@pytest.mark.parametrize("bad", [0, -3, 2.5])
def test_batch_size_must_be_positive_int(bad):
    energy, data = _double_well()
    with pytest.raises(InputError, match="batch_size"):
        md.train(energy, data, schedule=constant(1.0, 0.1).discretise(5), theta0=[1.0, 0.0], n_chains=100,
                 sampler="euler", batch_size=bad)


def test_batch_size_needs_samples():
    with pytest.raises(InputError, match="batch_size needs data samples"):
        md.train(md.HarmonicTrap(1.0), md.data.Gaussian(1.0, 1.0), schedule=constant(1.0, 1.0).discretise(5),
                 theta0=[0.0], backend="moments", batch_size=10)


def test_keep_thetas_auto_drops_a_large_path_and_protocol_says_why(monkeypatch):
    """keep_thetas=None keeps theta after every update only while (n_updates + 1) x P is under the limit;
    the recorded history rows and the final theta are the same either way; protocol() names the option."""
    from mindiss.core import contract

    energy, data = _double_well(400)
    kw = dict(schedule=constant(1.0, 0.2).discretise(10), theta0=[1.0, 0.0], n_chains=200, n_replicas=1,
              sampler="euler", seed=5)
    kept = md.train(energy, data, **kw)
    assert kept.thetas.shape == (13, 2)   # 10 interior updates and the two impulse slots
    monkeypatch.setattr(contract, "KEEP_THETAS_LIMIT", 25)   # 13 x 2 = 26 floats: over the limit
    dropped = md.train(energy, data, **kw)
    assert dropped.thetas is None
    np.testing.assert_array_equal(dropped.history.values, kept.history.values)
    assert dropped.theta_final == kept.theta_final
    with pytest.raises(InputError, match="keep_thetas=True"):
        dropped.protocol()
    forced = md.train(energy, data, keep_thetas=True, **kw)
    np.testing.assert_array_equal(forced.thetas, kept.thetas)
    assert md.train(energy, data, keep_thetas=False, **{**kw}).thetas is None
    with pytest.raises(InputError, match="keep_thetas must be True, False or None"):
        md.train(energy, data, keep_thetas="yes", **kw)
