"""Numerically optimal 1-D schedules (``optimal.optimise_1d``), checked against closed forms and independent
optimisations.

* Harmonic trap, exact moments model: optimising over the theta path finds the exact n-update optimum
  ``discrete_harmonic`` (W_ex to 1e-9 relative, 1e-8 for n = 1, 3, 20 as issue 19 asks; the rates themselves)
  and, at a required final loss, the trade-off W*_n(L) = the n-update optimum over the covered distance
  |Delta| - sqrt(2 s (L - L_min)).
* Learnable-variance Gaussian of issue 19: within 1e-4 of the 20-update optimum that ``gaussian_schedule``
  realises (and not above it).
* Learnable-variance Gaussian: against a protocol-space optimisation that shares no code (piecewise-constant
  (a, s), exact OU moments, BFGS) at the same n; the continuum bound by Richardson extrapolation (slow).
* Fokker-Planck grid: the optimum reproduces in ``train(backend="fokker_planck")`` on the same grid (a
  different propagator: uniformisation vs matrix_exp) to 1e-10; its O(h^2) grid error, removed by one
  Richardson step over two grids, leaves it within 1e-4 of the closed form (grid error alone: 2.4e-3 at 81
  points, so the 1e-4 checks use the moments model or the extrapolation).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

import mindiss as md
from mindiss.rates import optimal

S, MU, T, TH0, XBAR = 0.5, 1.3, 2.0, -0.4, 1.7



pytestmark = pytest.mark.usefixtures("one_thread")


def trap(n, target_loss=None, **kwargs):
    kwargs.setdefault("backend", "moments")
    return optimal.optimise_1d(md.HarmonicTrap(S), md.data.Gaussian(XBAR, S), [TH0], duration=T, mobility=MU,
                               n_steps=n, target_loss=target_loss, **kwargs)


def trap_loss_min():
    return optimal.HarmonicProblem(S, MU, T, TH0, XBAR).loss(XBAR)


@pytest.mark.parametrize("n", [1, 3, 6])
def test_harmonic_recovers_the_exact_discrete_optimum(n):
    res = trap(n)
    exact = optimal.discrete_harmonic_excess_work(n, variance=S, mobility=MU, duration=T, distance=XBAR - TH0)
    assert res.converged and res.excess_work == pytest.approx(exact, rel=1e-9)
    assert res.theta_final == pytest.approx([XBAR], abs=1e-14) and res.final_loss == pytest.approx(res.loss_min)
    ref = optimal.discrete_harmonic(n, variance=S, mobility=MU, duration=T).lr
    lr = res.lr_diagonal[:, 0]
    # only the sum of the start impulse and the first interior update is fixed (same frozen chains)
    np.testing.assert_allclose(np.r_[lr[0] + lr[1], lr[2:]], np.r_[ref[0] + ref[1], ref[2:]], rtol=2e-5)
    run = md.train(md.HarmonicTrap(S), md.data.Gaussian(XBAR, S), **res.train_kwargs)
    assert run.excess_work == pytest.approx(res.excess_work, rel=1e-12)
    assert run.theta_final[0] == pytest.approx(XBAR, abs=1e-13)


@pytest.mark.parametrize("fraction", [0.3, 0.8])
def test_harmonic_trade_off_at_a_required_final_loss(fraction):
    """Landing at distance r = fraction |Delta| from xbar costs the n-update optimum over |Delta| - r."""
    n, delta = 4, XBAR - TH0
    r = fraction * delta
    target = trap_loss_min() + r * r / (2 * S)
    res = trap(n, target)
    exact = optimal.discrete_harmonic_excess_work(n, variance=S, mobility=MU, duration=T, distance=delta - r)
    assert res.converged and res.excess_work == pytest.approx(exact, rel=1e-8)
    assert res.final_loss == pytest.approx(target, abs=1e-12) and res.theta_final[0] == pytest.approx(XBAR - r)
    front = optimal.pareto_front(optimal.HarmonicProblem(S, MU, T, TH0, XBAR), [target], n_steps=n)
    assert front.at(target) == pytest.approx(exact, rel=1e-14)


@pytest.mark.parametrize("n", [1, 3, 20])
def test_trap_optimum_is_the_exact_discrete_one_to_1e8(n):
    """Issue 19: W_ex within 1e-8 of W*(n) = k Delta^2 / (2 + 2 n tanh(mu T / (2 n s))) (closed form derived apart)."""
    res = trap(n)
    w_n = (XBAR - TH0) ** 2 / S / (2 + 2 * n * math.tanh(MU * T / (2 * n * S)))
    assert abs(res.excess_work - w_n) <= 1e-8 * w_n
    assert res.theta_path[-1] == pytest.approx([XBAR], abs=1e-14) and res.theta_path.shape == (n + 3, 1)


def test_issue19_learnable_variance_case_reaches_the_20_update_optimum():
    """a0 = 0.3, s0 = 1.7, xbar = -1.1, v_d = 0.45, mu = 0.8, T = 2.3, n = 20: the restricted positive-diagonal
    class of earlier versions stopped at 1.0013; the path optimum is within 1e-4 of ``gaussian_schedule``'s
    0.88927 and not above it (the realised continuous optimum is one schedule of the layout)."""
    a0, s0, xbar, vd, mu, T_, n = 0.3, 1.7, -1.1, 0.45, 0.8, 2.3, 20
    res = optimal.optimise_1d(md.Gaussian(1), md.data.Gaussian(xbar, vd), md.Gaussian.natural(a0, s0), duration=T_,
                              mobility=mu, n_steps=n, backend="moments")
    ref = md.train(md.Gaussian(1), md.data.Gaussian(xbar, vd),
                   schedule=optimal.gaussian_schedule(a0, s0, xbar, vd, mu, T_), theta0=md.Gaussian.natural(a0, s0),
                   mobility=mu, n_steps=n, backend="moments").excess_work
    assert ref == pytest.approx(0.88927, abs=1e-5)
    assert res.converged and abs(res.excess_work / ref - 1) <= 1e-4 and res.excess_work <= ref * (1 + 1e-12)
    run = md.train(md.Gaussian(1), md.data.Gaussian(xbar, vd), **res.train_kwargs)
    assert run.excess_work == pytest.approx(res.excess_work, rel=1e-12)
    np.testing.assert_allclose(run.theta_final, md.Gaussian.natural(xbar, vd).numpy(), rtol=1e-12)


def test_already_at_the_target_loss_costs_nothing():
    res = trap(3, target_loss=optimal.HarmonicProblem(S, MU, T, TH0, XBAR).loss(TH0) + 0.1)
    assert res.excess_work == pytest.approx(0.0, abs=1e-12)


# ---------------------------------------------------------------- learnable variance

GAUSS = (-0.4, 0.5, 1.7, 1.2, 1.3, 2.0)   # (a0, s0, xbar, v_d, mu, T): the optimum has positive natural rates


def gaussian(n, **kwargs):
    a0, s0, xbar, vd, mu, T_ = GAUSS
    return optimal.optimise_1d(md.Gaussian(1), md.data.Gaussian(xbar, vd), md.Gaussian.natural(a0, s0), duration=T_,
                               mobility=mu, n_steps=n, backend="moments", **kwargs)


def protocol_optimum(n):
    """min over (a_k, s_k), k = 1..n, held during the n moves (then the jump to (xbar, v_d)) of the summed
    frozen-chain work minus Delta F; chain moments by the exact OU transition. No learning rates at all."""
    a0, s0, xbar, vd, mu, T_ = GAUSS
    dt = T_ / n

    def mean_energy(a, s, m, v):
        return ((m - a) ** 2 + v) / (2 * s)

    def excess(z):
        a, s = z[:n], np.exp(z[n:])
        m, v, ap, sp, w = a0, s0, a0, s0, 0.0
        for k in range(n):
            w += mean_energy(a[k], s[k], m, v) - mean_energy(ap, sp, m, v)
            e = math.exp(-mu * dt / s[k])
            m, v, ap, sp = a[k] + (m - a[k]) * e, s[k] + (v - s[k]) * e * e, a[k], s[k]
        w += mean_energy(xbar, vd, m, v) - mean_energy(ap, sp, m, v)
        return w + 0.5 * math.log(vd / s0)

    f = np.linspace(0, 1, n + 2)[1:-1]
    z0 = np.r_[a0 + f * (xbar - a0), np.log(s0 + f * (vd - s0))]
    res = minimize(excess, z0, method="BFGS", options={"gtol": 1e-11, "maxiter": 5000})
    return res.fun


def test_gaussian_matches_protocol_space_optimisation():
    n = 4
    res = gaussian(n)
    assert res.converged
    assert res.excess_work == pytest.approx(protocol_optimum(n), rel=1e-7)
    a0, s0, xbar, vd, mu, T_ = GAUSS
    assert res.excess_work >= md.bounds.gaussian(*GAUSS).excess_work
    run = md.train(md.Gaussian(1), md.data.Gaussian(xbar, vd), **res.train_kwargs)
    assert run.excess_work == pytest.approx(res.excess_work, rel=1e-12)
    np.testing.assert_allclose(run.theta_final, md.Gaussian.natural(xbar, vd).numpy(), rtol=1e-12)


@pytest.mark.slow
def test_gaussian_recovers_the_continuum_bound():
    """W_ex*(n) = W_ex* + c / n^2 + O(n^-4): one Richardson step over n = 10, 20 lands within 1e-4 (measured 3.6e-5)."""
    w10, w20 = gaussian(10).excess_work, gaussian(20).excess_work
    bound = md.bounds.gaussian(*GAUSS).excess_work
    assert (4 * w20 - w10) / 3 == pytest.approx(bound, rel=1e-4)
    assert w20 / bound - 1 == pytest.approx(0.25 * (w10 / bound - 1), rel=0.02)     # order 2


# ---------------------------------------------------------------- Fokker-Planck grid

def test_grid_optimum_runs_in_train_and_extrapolates_to_the_closed_form():
    n = 3
    exact = optimal.discrete_harmonic_excess_work(n, variance=S, mobility=MU, duration=T, distance=XBAR - TH0)
    works = {}
    for points in (41, 81):
        grid = (-4.5, 6.0, points)
        res = trap(n, backend="fokker_planck", grid=grid)
        assert res.converged and res.grid == grid
        works[points] = res.excess_work
        run = md.train(md.HarmonicTrap(S), md.data.Gaussian(XBAR, S), **res.train_kwargs)
        assert run.excess_work == pytest.approx(res.excess_work, rel=1e-10)
        assert run.final_loss == pytest.approx(res.final_loss, rel=1e-12)
    assert abs(works[81] / exact - 1) > 1e-3                             # the grid error is O(h^2), not 1e-4
    assert (4 * works[81] - works[41]) / 3 == pytest.approx(exact, rel=1e-4)


def _numpy_grid_protocol_optimum(samples, theta0, grid, n, T, mu, x0):
    """An independent reference (NumPy/SciPy only, no mindiss code): the double well E = a (x^2 - 1)^2 + b x on
    the grid, rho moved by scipy's expm of a separately written SQRA generator, W_ex of the theta path
    (theta_1..theta_n held during the moves, then the jump to the grid MLE) minimised by BFGS."""
    from scipy.linalg import expm
    from scipy.special import logsumexp

    lo, hi, m = grid
    x = np.linspace(lo, hi, m)
    h = (hi - lo) / (m - 1)
    phi = np.stack([(x * x - 1.0) ** 2, x], axis=1)
    dphi = np.array([np.mean((samples * samples - 1.0) ** 2), np.mean(samples)])

    def free(th):
        return -logsumexp(-phi @ th) - math.log(h)

    mle = minimize(lambda th: th @ dphi - free(th) if th[0] > 0 else 1e300, np.asarray(theta0, float),
                   method="Nelder-Mead", options={"xatol": 1e-13, "fatol": 1e-15, "maxiter": 20000}).x
    mle = minimize(lambda th: th @ dphi - free(th), mle, method="BFGS", options={"gtol": 1e-12}).x

    def gen(e):
        rate = mu / h**2
        up, down = rate * np.exp(-0.5 * np.diff(e)), rate * np.exp(0.5 * np.diff(e))
        q = np.zeros((m, m))
        q[np.arange(1, m), np.arange(m - 1)] = up
        q[np.arange(m - 1), np.arange(1, m)] = down
        q -= np.diag(q.sum(axis=0))
        return q

    dt = T / n

    def excess(z):
        path = z.reshape(n, 2)
        if np.any(path[:, 0] <= 0):
            return 1e6
        e_old = phi @ np.asarray(theta0, float)
        rho = np.exp(-e_old - logsumexp(-e_old))
        w = 0.0
        for th in path:
            e = phi @ th
            w += rho @ (e - e_old)
            rho = expm(gen(e) * dt) @ rho
            e_old = e
        w += rho @ (phi @ mle - e_old)
        return w - (free(mle) - free(np.asarray(theta0, float)))

    res = minimize(excess, x0, method="BFGS", options={"gtol": 1e-10, "maxiter": 4000})
    return res.fun, mle


def test_double_well_optimum_is_the_grid_optimum():
    """The double well on its grid: ``optimise_1d`` equals an independent NumPy protocol-space optimisation
    (started from a different path; finite-difference BFGS, so to 1e-6 and never below ours), reruns in ``train(backend="fokker_planck")`` to 1e-9, and the
    natural-gradient design dissipates more at its own (higher) final loss."""
    energy = md.ExpFamily.tilted_double_well()
    gen = torch.Generator().manual_seed(0)
    data = energy.sample_equilibrium(torch.tensor([2.0, 0.6], dtype=torch.float64), 400, gen=gen,
                                     dtype=torch.float64)
    grid, theta0, n = (-2.6, 2.6, 41), [1.0, 0.0], 3
    best = optimal.optimise_1d(energy, data, theta0, duration=1.0, n_steps=n, grid=grid)
    assert best.converged
    f = (np.arange(1, n + 1) / (n + 1))[:, None]
    start = (np.asarray(theta0) + f * (np.asarray(best.theta_mle) - np.asarray(theta0))).reshape(-1)
    ref, mle = _numpy_grid_protocol_optimum(data.reshape(-1).numpy(), theta0, grid, n, 1.0, 1.0, start)
    np.testing.assert_allclose(best.theta_mle, mle, rtol=1e-7)
    # the reference uses finite-difference BFGS (converges to ~5e-8 relative): never below, within 1e-6
    assert best.excess_work <= ref + 1e-12 and best.excess_work == pytest.approx(ref, rel=1e-6)
    run = md.train(energy, data, **best.train_kwargs)
    assert run.excess_work == pytest.approx(best.excess_work, rel=1e-9)
    assert run.final_loss == pytest.approx(best.loss_min, abs=1e-12)
    ng = md.train(energy, data, schedule=md.schedules.natural_gradient(1.0, tau="auto", fisher="full"),
                  theta0=theta0, n_steps=n, backend="fokker_planck", chains={"grid": grid})
    at_ng = optimal.optimise_1d(energy, data, theta0, duration=1.0, n_steps=n, grid=grid,
                                target_loss=ng.final_loss, init=best)
    assert at_ng.final_loss <= ng.final_loss + 1e-12
    assert ng.excess_work > at_ng.excess_work


# ---------------------------------------------------------------- bad problems

def test_unreachable_final_loss_is_a_named_error():
    with pytest.raises(optimal.UnreachableLossError, match="unreachable"):
        trap(2, target_loss=trap_loss_min() - 0.01)
    assert issubclass(optimal.UnreachableLossError, md.InputError)


@pytest.mark.parametrize("kwargs,word", [
    ({"duration": 0.0}, "duration"), ({"mobility": -1.0}, "mobility"), ({"n_steps": 0}, "n_steps"),
    ({"backend": "particles"}, "backend"), ({"grid": (1.0, -1.0, 10)}, "grid"), ({"grid": "wide"}, "grid"),
    ({"target_loss": math.inf}, "target_loss"),
])
def test_bad_input(kwargs, word):
    args = {"duration": T, "mobility": MU, "n_steps": 3, "backend": "fokker_planck", **kwargs}
    with pytest.raises(md.InputError, match=word):
        optimal.optimise_1d(md.HarmonicTrap(S), md.data.Gaussian(XBAR, S), [TH0], **args)


def test_bad_energy_for_the_model():
    with pytest.raises(md.InputError, match="one-dimensional"):
        optimal.optimise_1d(md.HarmonicTrap(S, dim=2), md.data.Gaussian([1.0, 1.0], S), [0.0, 0.0], duration=1.0,
                            n_steps=2)
    with pytest.raises(md.InputError, match="quadratic"):
        optimal.optimise_1d(md.ExpFamily.quartic(), np.ones((5, 1)), [1.0, 1.0], duration=1.0, n_steps=2,
                            backend="moments")
    with pytest.raises(md.InputError, match="samples"):
        optimal.optimise_1d(md.ExpFamily.quartic(), md.data.Gaussian(0.0, 1.0), [1.0, 1.0], duration=1.0, n_steps=2)
    with pytest.raises(md.InputError, match="variance must be positive"):
        optimal.optimise_1d(md.Gaussian(1), md.data.Gaussian(0.0, 1.0), md.Gaussian.natural(0.0, -1.0),
                            duration=1.0, n_steps=2)
