"""Data sets: the toy distributions' formulas, seeding and the global RNG; the digits (skipped
without scikit-learn, a clear error when it is absent); minibatches of the data term."""
from __future__ import annotations

import math
import sys

import pytest
import torch

import mindiss as md
from mindiss.data import toy as D
from mindiss.errors import InputError
from mindiss.energies.neural import NeuralEnergy

F64 = torch.float64
#: small tensors: one torch thread (conftest) avoids stalls when the 2 cores are shared
pytestmark = pytest.mark.usefixtures("one_thread")


def se_bound(values, reference, k=4.0):
    """|mean - reference| <= k standard errors of the mean."""
    v = torch.as_tensor(values, dtype=F64)
    return abs(float(v.mean()) - reference) <= k * float(v.std()) / math.sqrt(v.numel())


@pytest.mark.parametrize("name", D.TOY)
def test_toy_sets_are_seeded_float64_and_leave_the_global_rng_alone(name):
    state = torch.get_rng_state()
    a = D.toy(name, 3000, gen=5)
    assert torch.equal(torch.get_rng_state(), state)
    assert a.shape == (3000, 2) and a.dtype == F64 and bool(torch.isfinite(a).all())
    assert torch.equal(a, D.toy(name, 3000, gen=torch.Generator().manual_seed(5)))
    assert not torch.equal(a, D.toy(name, 3000, gen=6))
    assert float(a.abs().max()) < 4.5          # the documented scale: within about [-3, 3]^2


def test_eight_gaussians_rings_moons_and_checkerboard_follow_their_formulas():
    n = 20_000
    x = D.toy("8gaussians", n, gen=1)
    k = torch.arange(8, dtype=F64)
    centres = 2.0 * torch.stack([torch.cos(2 * math.pi * k / 8), torch.sin(2 * math.pi * k / 8)], 1)
    d2 = torch.cdist(x, centres).min(1).values ** 2
    assert se_bound(d2, 2 * 0.2 ** 2)                               # E|x - c|^2 = 2 sigma^2
    r = D.toy("rings", n, gen=2).norm(dim=1)
    radii = torch.tensor([0.75, 1.5, 2.25], dtype=F64)
    resid = (r[:, None] - radii).abs().min(1).values
    assert se_bound(resid ** 2, 0.1 ** 2, k=5.0)                    # radial noise sd 0.1 (rings well apart)
    share = ((r - 2.25).abs() < 0.375).to(F64)
    assert se_bound(share, 2.25 / 4.5)                              # P(ring) proportional to its radius
    m = D.toy("moons", n, gen=3) / 2.0 + torch.tensor([0.5, 0.25], dtype=F64)
    outer = (m - torch.tensor([0.0, 0.0], dtype=F64)).norm(dim=1)
    inner = (m - torch.tensor([1.0, 0.5], dtype=F64)).norm(dim=1)
    near = torch.minimum((outer - 1).abs(), (inner - 1).abs())
    assert float((near < 0.4).to(F64).mean()) > 0.99                # on one of the two unit half circles
    c = D.toy("checkerboard", n, gen=4)
    cells = torch.floor(c).to(torch.int64)
    assert bool(((cells[:, 0] + cells[:, 1]) % 2 == 0).all())       # only the dark squares
    assert se_bound(c[:, 0], 0.0) and float(c.abs().max()) <= 2.0


def test_bad_toy_input_is_refused():
    with pytest.raises(InputError, match="unknown toy data set"):
        D.toy("spirals", 10, gen=0)
    with pytest.raises(InputError, match="n must be a positive integer"):
        D.toy("moons", 0, gen=0)
    with pytest.raises(InputError, match="gen must be a torch.Generator or an int seed"):
        D.toy("moons", 10, gen=None)


def test_load_validates_user_samples():
    x = D.load([[0.0, 1.0], [2.0, 3.0]], gen=0)
    assert x.dtype == F64 and x.shape == (2, 2)
    assert torch.equal(D.load("moons", 50, gen=3), D.toy("moons", 50, gen=3))
    for bad, match in (([1.0, 2.0], r"shape \(n_samples, d\)"), ([[math.nan, 0.0]], "NaN"),
                       ({"a": 1}, "data set name")):
        with pytest.raises(InputError, match=match):
            D.load(bad, gen=0)


def test_digits_absent_sklearn_is_a_clear_input_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)     # import fails as if not installed
    with pytest.raises(InputError, match="pip install scikit-learn"):
        D.digits(gen=0)


def test_digits_split_standardisation_and_pixels():
    pytest.importorskip("sklearn")
    dd = D.digits(gen=3)
    assert dd.train.shape == (1438, 64) and dd.test.shape == (359, 64) and dd.train.dtype == F64
    torch.testing.assert_close(dd.train.mean(0), torch.zeros(64, dtype=F64), rtol=0, atol=1e-12)
    torch.testing.assert_close(dd.train.std(0), torch.ones(64, dtype=F64), rtol=0, atol=1e-12)
    assert dd.log_jacobian == pytest.approx(-float(torch.log(dd.scale).sum()))
    px = dd.to_pixels(dd.test)
    assert px.shape == (359, 8, 8) and float(px.min()) >= 0.0 and float(px.max()) <= 1.0
    # (v + u)/17 lies strictly inside (v/17, (v + 1)/17): the dequantisation is within one level
    from sklearn.datasets import load_digits

    raw = torch.as_tensor(load_digits().data, dtype=F64)
    unit = D.digits(gen=3, scale="unit")
    assert float(unit.train.min()) > 0.0 and float(unit.train.max()) < 1.0
    levels = torch.floor(torch.cat([unit.train, unit.test]) * 17.0).sort(0).values
    assert torch.equal(levels, raw.sort(0).values)                  # same multiset of levels per pixel
    assert torch.equal(dd.train, D.digits(gen=3).train) and not torch.equal(dd.train, D.digits(gen=4).train)
    assert set(dd.labels_train.tolist()) == set(range(10))
    with pytest.raises(InputError, match="test_fraction"):
        D.digits(gen=0, test_fraction=1.5)


# -- minibatches --------------------------------------------------------------------------------
def small_mlp(seed=0):
    return NeuralEnergy.mlp(2, (8,), "tanh", 0.5, gen=seed)


def test_minibatched_network_training_keeps_the_ledger_exact():
    """The one minibatch path (train(batch_size=...)): g_hat changes, the per-chain ledger stays exact
    (the first law per chain, recomputed from fresh energies, is an independent check of the ledger)."""
    e = small_mlp(1)
    data = D.toy("moons", 64, gen=2)
    chains = torch.randn(64, 2, generator=torch.Generator().manual_seed(3))
    kw = dict(schedule=md.schedules.constant(0.5, 0.4), theta0=e.theta0(), chains=chains, sampler="mala",
              n_steps=20, n_chains=64, n_replicas=1, seed=1, free_energy="exact")
    res = md.train(e, data, batch_size=16, **kw)
    assert res.first_law_residual < 1e-10
    full = md.train(e, data, **kw)
    assert abs(res.thetas[-1] - full.thetas[-1]).max() > 1e-6      # the batches changed the trajectory
    assert not hasattr(D, "Minibatches")                            # one minibatch path
