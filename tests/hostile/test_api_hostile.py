"""Hostile inputs to the Python API (issue 16, class 11): each is refused by the contract check
with an InputError (a ValueError) that names the argument, before any update runs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import mindiss as md
from mindiss.errors import InputError
from mindiss.rates.schedules import DiscreteSchedule

TRAP = md.HarmonicTrap(1.0, 1)
DATA = md.data.Gaussian(1.0, 1.0)
SCHED = md.schedules.constant(1.0, 1.0)


def _train(**kw):
    base = dict(schedule=SCHED, theta0=[0.0], n_steps=3, n_chains=16, n_replicas=1)
    base.update(kw)
    return md.train(TRAP, DATA, **base)


@pytest.mark.parametrize("seed", [-1, "x", 1.5, True, None])
def test_bad_seed_names_seed(seed):
    with pytest.raises(InputError, match="seed"):
        _train(seed=seed)


@pytest.mark.parametrize("device", ["nonsense", "meta", "cuda:99"] + ([] if torch.cuda.is_available() else ["cuda"]))
def test_bad_device_names_device(device):
    with pytest.raises(InputError, match="device"):
        _train(device=device)


def _discrete(lr, dt):
    n = len(dt)
    return DiscreteSchedule(lr=np.asarray(lr, float), dt=np.asarray(dt, float), t=np.zeros(n),
                            is_impulse=np.zeros(n, bool), duration=float(np.sum(np.abs(dt))))


@pytest.mark.parametrize("lr,dt,word", [([0.1, -0.1], [0.1, 0.1], "negative learning rate"),
                                        ([0.1, 0.1], [0.1, -0.1], "negative chain-move length"),
                                        ([0.1], [0.1, 0.1], "one per update"),
                                        ([np.nan, 0.1], [0.1, 0.1], "finite")])
def test_bad_discrete_schedule_is_refused(lr, dt, word):
    with pytest.raises(InputError, match=word):
        _train(schedule=_discrete(lr, dt))


def test_chains_and_n_chains_must_agree_and_n_chains_follows_chains():
    with pytest.raises(InputError, match="7 initial states but n_chains=100"):
        _train(chains=torch.zeros(7, 1), n_chains=100)
    res = md.train(TRAP, DATA, schedule=SCHED, theta0=[0.0], n_steps=3, chains=torch.zeros(7, 1), n_replicas=1)
    assert res.n_chains == 7


def test_data_with_autograd_history_is_used_as_values():
    x = torch.randn(64, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a = md.train(TRAP, x.clone().requires_grad_(True), schedule=SCHED, theta0=[0.0], n_steps=3, n_chains=16,
                 n_replicas=1, seed=2)
    b = md.train(TRAP, x, schedule=SCHED, theta0=[0.0], n_steps=3, n_chains=16, n_replicas=1, seed=2)
    assert a.work == b.work and a.theta_final == b.theta_final


def test_module_returning_nan_is_refused_for_that_reason():
    class Nan(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return x.sum(-1) * float("nan") + self.w

    with pytest.raises(InputError, match="NaN or infinite energies"):
        md.NeuralEnergy(Nan(), 2, confinement=1.0)


def test_unknown_option_names_it_and_the_groups():
    with pytest.raises(InputError, match="unknown option.*bogus.*dynamics: mobility"):
        _train(bogus=3)


def test_group_objects_and_flat_options_agree():
    """The grouped form and the flat form are the same run (sanity check of the option plumbing)."""
    flat = _train(seed=4, mobility=2.0)
    grouped = md.train(TRAP, DATA, schedule=SCHED, theta0=[0.0],
                       dynamics=md.Dynamics(n_steps=3, seed=4, mobility=2.0),
                       ensemble=md.Ensemble(n_chains=16, n_replicas=1))
    assert flat.work == grouped.work and flat.theta_final == grouped.theta_final
