"""The true loss of neural energies: grid quadrature against closed-form Gaussians (exact, and its
convergence with the grid), grid draws, the GridQuadrature wrapper inside ``train`` (true loss at
every update, first law per chain), and AIS against the grid and against exact enumeration."""
from __future__ import annotations

import math

import pytest
import torch

import mindiss as md
from mindiss.data import toy as D
from mindiss.estimators import evaluate as ev
from mindiss.errors import InputError
from mindiss.energies.neural import NeuralEnergy
from mindiss.energies.rbm import GaussianBernoulliRBM

F64 = torch.float64
#: small tensors: one torch thread (conftest) avoids stalls when the 2 cores are shared
pytestmark = pytest.mark.usefixtures("one_thread")


def gen(seed):
    return torch.Generator().manual_seed(seed)


class HalfSquare(torch.nn.Module):
    """f(x) = |L x + c|^2 / 2: with the confinement k, E is the Gaussian of precision A = L^T L + k I."""

    def __init__(self, L, c):
        super().__init__()
        self.lin = torch.nn.Linear(L.shape[1], L.shape[0], dtype=F64)
        with torch.no_grad():
            self.lin.weight.copy_(L)
            self.lin.bias.copy_(c)

    def forward(self, x):
        return 0.5 * self.lin(x).square().sum(-1)


def gaussian_energy(dim=2, k=0.3):
    L = torch.tensor([[1.1, 0.4], [0.0, 0.7]], dtype=F64)[:dim, :dim]
    c = torch.tensor([0.5, -0.8], dtype=F64)[:dim]
    e = NeuralEnergy(HalfSquare(L, c), dim, confinement=k, dtype=F64)
    A = L.T @ L + k * torch.eye(dim, dtype=F64)
    b = L.T @ c
    # E = x^T A x / 2 + b . x + |c|^2 / 2  ->  ln Z = (d/2) ln 2 pi - ln det A / 2 + b^T A^-1 b / 2 - |c|^2 / 2
    log_z = (0.5 * dim * math.log(2 * math.pi) - 0.5 * float(torch.logdet(A))
             + 0.5 * float(b @ torch.linalg.solve(A, b)) - 0.5 * float(c @ c))
    mean = -torch.linalg.solve(A, b)
    return e, e.theta0(), log_z, mean, torch.linalg.inv(A)


@pytest.mark.parametrize("dim", [1, 2])
def test_grid_log_partition_matches_the_gaussian_closed_form(dim):
    e, theta, log_z, _, _ = gaussian_energy(dim)
    q = ev.grid_log_partition(e, theta, box=(-14.0, 14.0), n=257 if dim == 2 else 1025)
    assert q.log_partition == pytest.approx(log_z, rel=0, abs=1e-10)
    assert q.free_energy == -q.log_partition and q.converged(1e-8)
    data = torch.randn(500, dim, generator=gen(1), dtype=F64)
    res, q2 = ev.grid_nll(e, theta, data, box=(-14.0, 14.0), n=257)
    exact = float(e.energy(data, theta).mean()) + log_z
    assert res.nll == pytest.approx(exact, rel=0, abs=1e-8) and q2.n == 257
    assert res.nll_se == pytest.approx(float(e.energy(data, theta).std()) / math.sqrt(500), rel=1e-12)


def test_grid_log_partition_converges_with_grid_size_and_its_estimate_bounds_the_coarse_error():
    e, theta, log_z, _, _ = gaussian_energy(2)
    runs = ev.grid_convergence(e, theta, box=(-14.0, 14.0), ns=(17, 25, 33, 49, 65))
    errors = [abs(r.log_partition - log_z) for r in runs]
    assert all(b < a for a, b in zip(errors, errors[1:])), errors          # monotone convergence
    assert errors[0] > 1e-3 and errors[-1] < 1e-9                         # spectral: far faster than h^2
    for r in runs:
        assert abs(r.log_partition_coarse - log_z) <= r.error_estimate * (1 + 1e-6) + 1e-14


def test_a_box_too_small_is_flagged_by_the_boundary_mass():
    e, theta, log_z, _, _ = gaussian_energy(2)
    tight = ev.grid_log_partition(e, theta, box=(-2.0, 2.0), n=129)
    assert tight.boundary_mass > 1e-2 and not tight.converged(1e-6)
    assert tight.log_partition < log_z - 1e-3                              # the truncated integral is smaller


def test_grid_quadrature_refines_its_spacing_until_the_estimate_meets_the_tolerance():
    L = torch.tensor([[6.0, 0.0], [0.0, 5.0]], dtype=F64)               # sd ~0.17-0.2: sharp for h = 0.875
    e0 = NeuralEnergy(HalfSquare(L, torch.zeros(2, dtype=F64)), 2, confinement=0.0, dtype=F64)
    theta = e0.theta0()
    exact = math.log(2 * math.pi) - 0.5 * math.log(36.0 * 25.0)
    coarse = ev.GridQuadrature(e0, box=(-14.0, 14.0), n=33)
    assert abs(-coarse.free_energy(theta) - exact) > 1e-3 and coarse.n_refined == 0
    fine = ev.GridQuadrature(e0, box=(-14.0, 14.0), n=33, refine_tol=1e-9, max_n=1025)
    assert -fine.free_energy(theta) == pytest.approx(exact, rel=0, abs=1e-9)
    assert fine.n_refined == 1 and fine.last.n > 33 and fine.last.error_estimate <= 1e-9


def test_grid_draws_have_the_gaussian_moments():
    e, theta, _, mean, cov = gaussian_energy(2)
    x = ev.grid_sample(e, theta, 40_000, box=((-14.0, 14.0), (-14.0, 14.0)), n_grid=257, gen=gen(2), dtype=F64)
    se = x.std(0) / math.sqrt(x.shape[0])
    assert bool(((x.mean(0) - mean).abs() <= 4 * se).all())
    var = ((x - mean) ** 2).mean(0)
    # grid draws carry the jitter's h^2/12 on top of the variance (h = 28/256)
    ref = torch.diagonal(cov) + (28.0 / 256) ** 2 / 12
    assert bool(((var - ref).abs() <= 5 * var * math.sqrt(2.0 / x.shape[0])).all()), (var, ref)


def test_bad_grid_input():
    e, theta, *_ = gaussian_energy(2)
    with pytest.raises(InputError, match="odd"):
        ev.grid_log_partition(e, theta, box=(-5, 5), n=64)
    with pytest.raises(InputError, match="finite intervals"):
        ev.grid_log_partition(e, theta, box=(5, -5), n=65)
    with pytest.raises(InputError, match="dimension 1 or 2"):
        ev.grid_log_partition(NeuralEnergy.mlp(3, (4,), gen=0), NeuralEnergy.mlp(3, (4,), gen=0).theta0(),
                              box=(-5, 5), n=65)


# -- the wrapper inside train ---------------------------------------------------------------------
def test_grid_quadrature_in_train_gives_the_exact_true_loss_of_a_gaussian_family():
    """A linear module f = w . x + b0 with confinement k is the Gaussian N(-w/k, I/k): the
    recorded true loss is checked against the closed form at every update; E is linear in
    theta, so Identity 1 holds to round-off, and the ledger closes per chain."""
    k = 0.8
    lin = torch.nn.Linear(2, 1, dtype=F64)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.3, -0.2]], dtype=F64))
        lin.bias.zero_()
    e = ev.GridQuadrature(NeuralEnergy(lin, 2, confinement=k, dtype=F64), box=(-12.0, 12.0), n=129)
    data = D.toy("8gaussians", 400, gen=3)
    res = md.train(e, data, schedule=md.schedules.constant(1.0, 0.5), theta0=e.theta0(), sampler="mala",
                   n_steps=20, n_chains=256, n_replicas=2, seed=4)
    assert res.free_energy_method == "exact" and e.n_evaluations > 0 and e.eval_seconds > 0
    h = res.history
    for row in range(len(h["update"])):
        theta = torch.tensor([h[f"theta_{i}"][row] for i in range(3)], dtype=F64)
        w = theta[:2]
        log_z = math.log(2 * math.pi / k) + float(w @ w) / (2 * k) - float(theta[2])
        exact = float(e.energy(data, theta).mean()) + log_z
        assert h["loss_true"][row] == pytest.approx(exact, rel=0, abs=1e-9)
    assert res.identity1_residual < 1e-9 and res.first_law_residual < 1e-10
    assert e.worst_error < 1e-9 and e.worst_boundary_mass < 1e-9
    assert res.sampler == "mala" and 0.5 < res.acceptance_rate <= 1.0


def test_mlp_on_moons_keeps_the_first_law_per_chain_and_reports_the_identity_residual():
    e = ev.GridQuadrature(NeuralEnergy.mlp(2, (16, 16), "silu", 0.5, gen=5), box=(-10.0, 10.0), n=101,
                          dtype=torch.float32)
    theta0 = e.theta0()
    chains = e.sample_equilibrium(theta0, 256, gen=gen(6))
    data = D.toy("moons", 400, gen=7)
    res = md.train(e, data, schedule=md.schedules.constant(0.5 / 0.2, 30 * 0.2), theta0=theta0, chains=chains,
                   sampler="mala", n_steps=30, n_chains=256, n_replicas=2, seed=8, keep_chains=True)
    assert res.first_law_residual < 1e-9                   # Delta E = W + Q per chain, every chain
    h = res.history
    assert h["loss_true"][-1] < h["loss_true"][0]          # it learns
    gap = h["loss_true"] - h["loss_approx"]
    resid = gap - h["excess_work"]
    assert abs(resid[0]) < 1e-12
    # the network is not linear in theta: Identity 1 leaves an O(|dtheta|^2) residual, small next to W_ex here
    assert abs(resid[-1]) < 0.5 * abs(h["excess_work"][-1]) + 1e-3
    assert e.worst_error < 1e-4 and e.worst_boundary_mass < 1e-4


def test_grid_quadrature_caches_per_theta_and_draws_equilibrium_starts():
    e0, theta, log_z, _, _ = gaussian_energy(2)
    e = ev.GridQuadrature(e0, box=(-14.0, 14.0), n=129)
    assert e.free_energy(theta) == pytest.approx(-log_z, abs=1e-9)
    e.free_energy(theta)
    assert e.n_evaluations == 1                              # the same tensor: cached
    theta.add_(0.0)                                          # an in-place change invalidates
    e.free_energy(theta)
    assert e.n_evaluations == 2
    x = e.sample_equilibrium(theta, 100, gen=gen(9))
    assert x.shape == (100, 2) and x.dtype == torch.float32
    assert "GridQuadrature" in repr(e) and e.confinement == pytest.approx(0.3)


# -- AIS -------------------------------------------------------------------------------------------
def test_ais_log_partition_of_an_mlp_agrees_with_the_grid():
    e = NeuralEnergy.mlp(2, (16, 16), "silu", 0.5, gen=10, dtype=F64)
    theta = e.theta0() * 2.0                                  # a non-trivial f
    grid = ev.grid_log_partition(e, theta, box=(-10.0, 10.0), n=201)
    est = ev.ais_log_partition(e, theta, gen=gen(11), n_chains=256, n_intermediate=200, dt=0.05)
    assert est.method == "ais" and est.log_partition_base == pytest.approx(math.log(2 * math.pi / 0.5))
    assert abs(est.log_partition - grid.log_partition) <= 4 * est.log_partition_se + 0.01, (est, grid)
    assert est.diagnostics["ess_fraction"] > 0.3 and est.free_energy == -est.log_partition
    nll = ev.nll(e, theta, torch.zeros(4, 2, dtype=F64), est)
    assert nll.log_partition_se == est.log_partition_se and nll.nll_se >= est.log_partition_se


def test_ais_log_partition_of_an_rbm_agrees_with_exact_enumeration():
    rbm = GaussianBernoulliRBM(6, 5)
    theta = rbm.init_theta(gen=12, weight_std=0.5)
    est = ev.ais_log_partition(rbm, theta, gen=gen(13), n_chains=256, n_intermediate=200, dt=0.1)
    exact = rbm.log_partition(theta)
    assert abs(est.log_partition - exact) <= 4 * est.log_partition_se + 0.01, (est.log_partition, exact)
    assert est.log_partition_base == pytest.approx(rbm.log_partition(rbm.base_theta(theta)), abs=1e-12)


def test_ais_base_refuses_energies_without_a_tractable_one():
    with pytest.raises(InputError, match="confinement > 0"):
        ev.tractable_base(NeuralEnergy.mlp(2, (4,), confinement=0.0, gen=0), NeuralEnergy.mlp(2, (4,), gen=0).theta0())
    tail = torch.nn.Sequential(torch.nn.Linear(2, 1, dtype=F64), torch.nn.Softplus())
    e = NeuralEnergy(tail, 2, confinement=1.0, dtype=F64)
    with pytest.raises(InputError, match="does not make f vanish"):
        ev.tractable_base(e, e.theta0())
    with pytest.raises(InputError, match="no tractable AIS base"):
        ev.tractable_base(md.HarmonicTrap(1.0, 2), torch.zeros(2, dtype=F64))


# -- bidirectional AIS ------------------------------------------------------------------------------
def test_ais_bounds_bracket_the_exact_log_partition_of_an_rbm():
    """Second law both ways around the exact enumeration: lower <= ln Z <= upper (reverse chains from
    exact draws), strictly apart (the protocol dissipates), AIS and BAR within 4 SE of ln Z."""
    rbm = GaussianBernoulliRBM(6, 5)
    theta = rbm.init_theta(gen=12, weight_std=0.5)
    exact = rbm.log_partition(theta)
    x = rbm.sample_equilibrium(theta, 256, gen=gen(14), dtype=F64)
    b = ev.ais_bounds(rbm, theta, gen=gen(15), n_chains=256, n_intermediate=50, dt=0.1, x_reverse=x)
    assert b.lower + 4 * b.lower_se < exact < b.upper - 4 * b.upper_se, (b.lower, exact, b.upper)
    assert abs(b.log_partition - exact) <= 4 * b.log_partition_se, (b.log_partition, exact)
    assert abs(b.log_partition_bar - exact) <= 4 * b.log_partition_bar_se, (b.log_partition_bar, exact)
    assert b.lower <= b.log_partition                    # Jensen on the same weights
    assert b.work_reverse.shape == (256,) and 0.0 < b.diagnostics["acceptance_rate"] <= 1.0
    est = b.estimate()
    assert (est.log_partition, est.log_partition_se) == (b.log_partition, b.log_partition_se)


def test_ais_bounds_without_reverse_draws_and_bad_input():
    rbm = GaussianBernoulliRBM(3, 2)
    theta = rbm.init_theta(gen=1, weight_std=0.5)
    b = ev.ais_bounds(rbm, theta, gen=gen(2), n_chains=16, n_intermediate=5, dt=0.1)
    assert math.isnan(b.upper) and math.isnan(b.log_partition_bar) and b.work_reverse is None
    with pytest.raises(InputError, match="x_reverse"):
        ev.ais_bounds(rbm, theta, gen=gen(2), n_chains=16, n_intermediate=5, dt=0.1, x_reverse=torch.zeros(4, 2))
    with pytest.raises(InputError, match="n_chains"):
        ev.ais_bounds(rbm, theta, gen=gen(2), n_chains=1, n_intermediate=5, dt=0.1)


def test_ais_bounds_of_a_64d_network_with_a_closed_form():
    """f(x) = w . x + c (one Linear layer, the AIS base zeroes it): E = f + k |x|^2 / 2 is the Gaussian
    N(-w / k, 1 / k), ln Z = (d/2) ln(2 pi / k) + |w|^2 / (2k) - c, derived here by completing the square.
    Forward and reverse AIS (reverse chains: exact draws of that Gaussian) bracket it; AIS and BAR agree."""
    d, k = 64, 1.0
    lin = torch.nn.Linear(d, 1, dtype=F64)
    with torch.no_grad():
        lin.weight.copy_(0.25 * torch.randn(1, d, generator=gen(3), dtype=F64))
        lin.bias.fill_(0.3)
    e = NeuralEnergy(lin, d, confinement=k, dtype=F64)
    theta = e.theta0()
    w = lin.weight.detach().reshape(-1)
    exact = 0.5 * d * math.log(2 * math.pi / k) + float(w @ w) / (2 * k) - 0.3
    x = -w / k + torch.randn(256, d, generator=gen(4), dtype=F64) / math.sqrt(k)
    b = ev.ais_bounds(e, theta, gen=gen(5), n_chains=256, n_intermediate=30, dt=0.2, x_reverse=x)
    assert b.lower + 4 * b.lower_se < exact < b.upper - 4 * b.upper_se, (b.lower, exact, b.upper)
    assert abs(b.log_partition - exact) <= 4 * b.log_partition_se, (b.log_partition, exact)
    assert abs(b.log_partition_bar - exact) <= 4 * b.log_partition_bar_se, (b.log_partition_bar, exact)
