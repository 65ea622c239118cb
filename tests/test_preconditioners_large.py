"""Learning-rate matrices at large parameter counts P (neural energies): the diagonal friction
estimate against the dense one and the closed form, the low-rank Fisher's probabilistic-PCA damping
against the discarded spectrum of the sample covariance, and the bounded re-compressed EMA against
the dense EMA it approximates (exact where nothing is discarded)."""
from __future__ import annotations

import math

import pytest
import torch

import mindiss as md
from mindiss.rates import preconditioners as pc

F64 = torch.float64
#: small tensors: one torch thread (conftest) avoids stalls when the 2 cores are shared
pytestmark = pytest.mark.usefixtures("one_thread")


def gen(seed):
    return torch.Generator().manual_seed(seed)


def _ar1_series(T, n, P, seed):
    """(T, n, P) AR(1) series, component j with its own correlation a_j, components mixed so that
    the friction tensor has off-diagonal entries."""
    g = gen(seed)
    a = torch.linspace(0.2, 0.8, P, dtype=F64)
    mix = torch.eye(P, dtype=F64) + 0.3 * torch.randn(P, P, generator=g, dtype=F64)
    x = torch.empty(T, n, P, dtype=F64)
    x[0] = torch.randn(n, P, generator=g, dtype=F64)
    for t in range(1, T):
        x[t] = a * x[t - 1] + torch.sqrt(1 - a * a) * torch.randn(n, P, generator=g, dtype=F64)
    return x @ mix.T + 1.5


def _direct_lags(series, L):
    """C(l) = sum over chains and origins of dG(t + l) dG(t)^T / (n (T - l)) by explicit sums."""
    d = series - series.mean(dim=(0, 1))
    T, n, _ = d.shape
    return torch.stack([torch.einsum("tni,tnj->ij", d[l:], d[:T - l]) / (n * (T - l)) for l in range(L)])


# ---------------------------------------------------------------------------- friction

def test_dense_friction_equals_direct_lag_sums_and_the_diagonal_form_its_diagonal():
    s, dt = _ar1_series(T=96, n=24, P=5, seed=1), 0.1
    zeta, window, tau_int, cov0 = pc.integrated_autocorrelation(s, dt)
    C = _direct_lags(s, window + 1)
    Cs = 0.5 * (C + C.transpose(1, 2))
    ref = dt * (0.5 * Cs[0] + Cs[1:].sum(0))
    torch.testing.assert_close(zeta, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(cov0, C[0], rtol=1e-10, atol=1e-12)
    assert zeta[0, 1] != pytest.approx(0.0, abs=1e-3)              # the mixing makes it non-diagonal
    zd, wd, td, var = pc.integrated_autocorrelation_diag(s, dt)
    assert (wd, td) == (window, pytest.approx(tau_int, rel=1e-12))
    torch.testing.assert_close(zd, torch.diagonal(zeta), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(var, torch.diagonal(cov0), rtol=1e-10, atol=1e-12)
    # tau = tr(I^-1 zeta) / P for diagonal I and zeta: mean_i zeta_ii / I_ii
    assert pc.relaxation_time(var, zd) == pytest.approx(float((zd / var).mean()), rel=1e-14)


def _trap_context(dim, seed, *, s=0.5, mu=2.0, dt=0.25, n=256):
    trap = md.HarmonicTrap(variance=s, dim=dim)
    th = torch.zeros(dim, dtype=F64)
    x = trap.sample_equilibrium(th, n, gen=gen(seed), dtype=F64)
    return pc.PreconditionContext(trap, th, md.ParticleChains(x, trap, th), md.ExactOU(), mu, dt, gen(seed + 1))


def test_friction_pilot_is_dense_below_the_threshold_and_its_diagonal_above():
    dense, diag = pc.Friction(pilot_chains=128), pc.Friction(pilot_chains=128, max_dense_params=1)
    dense.start(_trap_context(3, seed=2))
    diag.start(_trap_context(3, seed=2))                           # same generators: the same pilot series
    assert dense.report()["form"] == "dense" and dense.zeta.shape == (3, 3)
    assert diag.report()["form"] == "diagonal (P > max_dense_params)" and diag.zeta.shape == (3,)
    torch.testing.assert_close(diag.zeta, torch.diagonal(dense.zeta), rtol=1e-10, atol=1e-12)
    assert len(diag.report()["friction"]) == 3
    g = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    torch.testing.assert_close(diag.apply(g), diag.tau * g / diag.zeta, rtol=1e-14, atol=0)
    with pytest.raises(md.InputError, match="max_dense_params"):
        pc.Friction(max_dense_params=0)


def test_friction_pilot_with_many_parameters_is_diagonal_and_matches_the_closed_form():
    """P = 600 > 128 (the default threshold): a dense pilot would hold (lags, P, P) arrays (~4.7 GB);
    the diagonal one matches the exact discrete-time friction of the trap, zeta_ii = (1/s) dt
    (1 + a) / (2 (1 - a)) with a = exp(-mu dt / s) (-> 1/mu as dt -> 0), and tau = its value / I_ii."""
    P, s, mu, dt = 600, 0.5, 2.0, 0.25
    fr = pc.Friction(pilot_chains=64)
    fr.start(_trap_context(P, seed=3, s=s, mu=mu, dt=dt, n=64))
    rep = fr.report()
    assert rep["form"] == "diagonal (P > max_dense_params)" and fr.zeta.shape == (P,)
    a = math.exp(-mu * dt / s)
    tau_discrete = dt * (1 + a) / (2 * (1 - a))
    zeta = fr.zeta.numpy()
    assert abs(zeta.mean() / (tau_discrete / s) - 1) < 0.03, zeta.mean()
    assert abs(zeta / (tau_discrete / s) - 1).max() < 0.3
    assert fr.tau == pytest.approx(tau_discrete, rel=0.03)
    assert abs(tau_discrete / (s / mu) - 1) < 0.1                  # and close to the continuous s / mu


# ---------------------------------------------------------------------------- low-rank Fisher

def _spectrum_samples(P, N, seed):
    """N samples of a P-dim Gaussian with covariance Q diag(lam) Q^T, lam = 4 * 0.6^k + 0.05."""
    g = gen(seed)
    Q, _ = torch.linalg.qr(torch.randn(P, P, generator=g, dtype=F64))
    lam = 4.0 * 0.6 ** torch.arange(P, dtype=F64) + 0.05
    return (torch.randn(N, P, generator=g, dtype=F64) * lam.sqrt()) @ Q.T, Q @ torch.diag(lam) @ Q.T


@pytest.mark.parametrize("N", [2000, 40])     # N > P: P x P side; N < P: N x N Gram (rank-deficient S)
def test_lowrank_auto_damping_is_the_mean_discarded_eigenvalue_and_beats_the_old_choice(N):
    P, r = 60, 8
    X, true_cov = _spectrum_samples(P, N, seed=4)
    c = X - X.mean(0)
    S = c.T @ c / N                                               # the low-rank Fisher's sample covariance
    ev = torch.linalg.eigvalsh(S).flip(0)
    f = pc.Fisher("lowrank", rank=r)
    f.observe(pc.GradStats(X.mean(0), samples=X), None)
    rep = f.report()
    assert rep["kept_rank"] == r and rep["solver"] == "woodbury" and rep["damping_rule"] == "mean discarded eigenvalue"
    assert f.damping == pytest.approx(float(ev[r:].mean()), rel=1e-10)
    assert rep["damping"] == f.damping == rep["discarded_mean"]
    # the kept part is the top-r eigen-part of S
    top = torch.linalg.eigh(S)[1][:, -r:]
    torch.testing.assert_close(f.matrix() - f.damping * torch.eye(P, dtype=F64),
                               top @ torch.diag(ev[:r].flip(0)) @ top.T, rtol=0, atol=1e-10 * float(ev[0]))
    old = pc.Fisher("lowrank", rank=r, damping=1e-3 * float(torch.diagonal(S).mean()))   # the old "auto"
    old.observe(pc.GradStats(X.mean(0), samples=X), None)
    g = torch.randn(P, generator=gen(5), dtype=F64)
    refs = [true_cov] + ([S] if N > P else [])
    for ref in refs:
        exact = torch.linalg.solve(ref, g)
        err_new = float((f.apply(g) - exact).norm() / exact.norm())
        err_old = float((old.apply(g) - exact).norm() / exact.norm())
        assert err_new < 0.5 and err_old > 10 * err_new, (err_new, err_old)


def test_lowrank_ema_without_compression_is_the_exact_ema_and_woodbury_the_dense_solve():
    P, r = 60, 20
    f = pc.Fisher("lowrank", rank=r, ema=0.5)
    g = gen(6)
    acc, blocks = torch.zeros(P, P, dtype=F64), []
    for k in range(3):                                            # 5 + 5 + 5 columns <= rank 20
        X = torch.randn(5, P, generator=g, dtype=F64) * (1 + k)
        c = X - X.mean(0)
        acc = 0.5 * acc + 0.5 * c.T @ c / 5
        f.observe(pc.GradStats(X.mean(0), samples=X), None)
        blocks.append(c)
    dense = acc / (1 - 0.5 ** 3)
    assert f.report()["kept_rank"] == 15 and f.discarded_mean == 0.0
    assert f.report()["damping_rule"] == "relative"                # nothing discarded: the old relative value
    assert f.damping == pytest.approx(1e-3 * float(torch.diagonal(dense).mean()), rel=1e-12)
    torch.testing.assert_close(f.matrix(), dense + f.damping * torch.eye(P, dtype=F64), rtol=1e-12, atol=1e-14)
    b = torch.randn(P, generator=g, dtype=F64)
    torch.testing.assert_close(f.apply(b), torch.linalg.solve(f.matrix(), b), rtol=1e-8, atol=1e-10)


def test_lowrank_ema_compression_is_lossless_within_the_rank_and_bounded_beyond_it():
    P, r, beta = 200, 8, 0.8
    g = gen(7)
    basis = torch.linalg.qr(torch.randn(P, 6, generator=g, dtype=F64))[0]
    f = pc.Fisher("lowrank", rank=r, ema=beta, damping=1e-2)
    acc = torch.zeros(P, P, dtype=F64)
    for k in range(10):                                           # 8-row blocks in a fixed 6-dim subspace
        X = torch.randn(8, 6, generator=g, dtype=F64) @ basis.T
        c = X - X.mean(0)
        acc = beta * acc + (1 - beta) * c.T @ c / 8
        f.observe(pc.GradStats(X.mean(0), samples=X), None)
    dense = acc / (1 - beta ** 10)
    assert f.estimate.shape[1] <= r
    torch.testing.assert_close(f.matrix(), dense + 1e-2 * torch.eye(P, dtype=F64), rtol=0,
                               atol=1e-10 * float(dense.abs().max()))
    assert f.discarded_mean < 1e-12 * float(torch.diagonal(dense).mean())
    b = torch.randn(P, generator=g, dtype=F64)
    torch.testing.assert_close(f.apply(b), torch.linalg.solve(f.matrix(), b), rtol=1e-8, atol=1e-10)

    # full-rank blocks: the factor stays at rank r (memory O(P r)), the discarded mass is exactly the
    # rest of the dense EMA's trace, and the kept part captures most of the top-r eigenvalue mass
    f = pc.Fisher("lowrank", rank=16, ema=0.9)
    scales = (1.0 + torch.arange(P, dtype=F64)) ** -1.0
    acc = torch.zeros(P, P, dtype=F64)
    for k in range(30):
        X = torch.randn(16, P, generator=g, dtype=F64) * scales
        c = X - X.mean(0)
        acc = 0.9 * acc + 0.1 * c.T @ c / 16
        f.observe(pc.GradStats(X.mean(0), samples=X), None)
        assert f.estimate.shape == (P, 16)
    dense = acc / (1 - 0.9 ** 30)
    kept = float((f.estimate * f.estimate).sum()) / (1 - 0.9 ** 30)
    q = f.estimate.shape[1]
    assert kept + f.discarded_mean * (P - q) == pytest.approx(float(torch.diagonal(dense).sum()), rel=1e-10)
    ev = torch.linalg.eigvalsh(dense).flip(0)
    assert kept <= float(ev[:16].sum()) * (1 + 1e-10) and kept > 0.98 * float(ev[:16].sum())
    assert f.damping == f.discarded_mean
    b = torch.randn(P, generator=g, dtype=F64)
    torch.testing.assert_close(f.apply(b), torch.linalg.solve(f.matrix(), b), rtol=1e-8, atol=1e-10)


def test_lowrank_zero_damping_is_the_pseudo_inverse_on_the_kept_span():
    P, r = 40, 6
    X, _ = _spectrum_samples(P, 200, seed=8)
    f = pc.Fisher("lowrank", rank=r, damping=0.0)
    f.observe(pc.GradStats(X.mean(0), samples=X), None)
    b = torch.randn(P, generator=gen(9), dtype=F64)
    torch.testing.assert_close(f.apply(b), torch.linalg.pinv(f.matrix(), hermitian=True) @ b, rtol=1e-8, atol=1e-10)


def test_lowrank_blocks_dropped_by_max_blocks_leave_a_weighted_mean():
    """rank >= P keeps raw blocks; once max_blocks drops old ones, the kept EMA weights are
    normalised to sum to one (before, they summed to (1 - beta^k) / (1 - beta^n) < 1)."""
    P, beta = 4, 0.5
    g = gen(10)
    blocks = [torch.randn(50, P, generator=g, dtype=F64) * (k + 1) for k in range(4)]
    f = pc.Fisher("lowrank", rank=50, ema=beta, max_blocks=2, damping=0.0)
    for X in blocks:
        f.observe(pc.GradStats(X.mean(0), samples=X), None)
    cov = [(X - X.mean(0)).T @ (X - X.mean(0)) / 50 for X in blocks]
    torch.testing.assert_close(f.matrix(), (beta * cov[2] + cov[3]) / (1 + beta), rtol=1e-12, atol=1e-14)
