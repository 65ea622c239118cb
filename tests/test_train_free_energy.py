"""train(free_energy=...): Delta F from the exact formula where one exists, else an estimator
with its error; the estimate is checked against quadrature on an energy that hides its F."""
import math

import pytest
import torch

import mindiss as md


class HiddenF(md.ExpFamily):
    """The tilted double well without its closed-form (quadrature) free energy or exact draws."""

    def __init__(self):
        base = md.ExpFamily.tilted_double_well()
        super().__init__(base.features, 1, base.names, grad_features=base.grad_features,
                         polynomial_coeffs=base.polynomial_coeffs, label="hidden")

    def free_energy(self, theta):
        raise NotImplementedError("hidden")


def _run(method, seed=0):
    energy = HiddenF()
    exact = md.ExpFamily.tilted_double_well()
    th0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    x0 = exact.sample_equilibrium(th0, 1024, gen=torch.Generator().manual_seed(seed), dtype=torch.float64)
    data = exact.sample_equilibrium(torch.tensor([1.5, 0.5], dtype=torch.float64), 4096,
                                    gen=torch.Generator().manual_seed(99), dtype=torch.float64)
    r = md.train(energy, data, schedule=md.schedules.constant(2.0, 0.5), theta0=th0, chains=x0, n_chains=1024,
                 n_steps=25, n_replicas=2, sampler="mala", dtype="float64", seed=seed, free_energy=method)
    truths = [exact.free_energy(torch.tensor(t, dtype=torch.float64)) - exact.free_energy(th0)
              for t in r.replica_theta_final]
    return r, sum(truths) / len(truths)


@pytest.mark.parametrize("method", ["auto", "ais"])
def test_estimated_delta_free_energy_matches_quadrature_within_its_error(method):
    r, truth = _run(method)
    assert r.free_energy_method.startswith("ais")
    assert r.delta_free_energy_se > 0
    assert abs(r.delta_free_energy - truth) < 4 * r.delta_free_energy_se + 1e-3, (r.delta_free_energy, truth)
    assert math.isfinite(r.excess_work) and math.isfinite(r.excess_work_se)
    assert r.excess_work == pytest.approx(r.work - r.delta_free_energy, abs=1e-12)


def test_exact_only_reports_none_and_nan():
    r, _ = _run("exact")
    assert math.isnan(r.delta_free_energy) and r.free_energy_method.startswith("none")


def test_closed_form_is_used_where_it_exists():
    r = md.train(md.Gaussian(1), md.data.Gaussian(mean=1.0, variance=0.5), schedule=md.schedules.constant(1.0, 1.0),
                 theta0=md.Gaussian.natural(0.0, 1.0), n_steps=10, backend="moments", free_energy="ais")
    assert r.free_energy_method == "exact" and r.delta_free_energy_se == 0.0


def test_unknown_free_energy_method_is_named():
    with pytest.raises(md.InputError, match="free_energy"):
        md.train(md.HarmonicTrap(), md.data.Gaussian(mean=1.0, variance=1.0), schedule=md.schedules.constant(1, 1),
                 theta0=[0.0], free_energy="magic")
