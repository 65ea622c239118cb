"""The Pareto front: least excess work against final true loss (``optimal.pareto_front``), each schedule's
``dissipation_ratio`` to it, and ``optimal.schedule_for``.

Closed forms are checked against independent minimisations over the end points (the harmonic bound and the
learnable-variance bound of ``md.bounds``, minimised by scipy over the loss level set) and the numerical
front against the closed one. Property: no schedule, of any family or scale, on random problems, ends below
the front at its own final loss (the exact moments recursion and ``md.train`` on the moments backend).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize, minimize_scalar

import mindiss as md
from mindiss.rates import optimal
from mindiss.estimators.references import harmonic_discrete_path

S, MU, T, TH0, XBAR = 0.5, 1.3, 2.0, -0.4, 1.7
GAUSS = (-0.4, 0.5, 1.7, 1.2, 1.3, 2.0)



pytestmark = pytest.mark.usefixtures("one_thread")


def test_harmonic_front_matches_a_search_over_end_points():
    """2-D trap: min over the circle |theta_f - xbar| = r of bounds.harmonic(theta_0 -> theta_f) (angle search)."""
    th0, xbar = np.array([0.3, -1.0]), np.array([1.5, 0.8])
    problem = optimal.HarmonicProblem(0.7, 0.9, 1.6, th0, xbar)
    front = optimal.pareto_front(problem, n_points=9)
    assert front.kind == "harmonic" and front.exact and front.n_steps is None
    assert front.at(front.loss_min) == pytest.approx(md.bounds.harmonic(0.7, 0.9, 1.6, th0, xbar).excess_work)
    assert front.at(front.loss_start) == 0.0 and np.all(np.diff(front.excess_work) <= 0)
    for ell in front.losses[1:-1]:
        r = math.sqrt(2 * 0.7 * (ell - front.loss_min))

        def w(phi):
            end = xbar + r * np.array([math.cos(phi), math.sin(phi)])
            assert problem.loss(end) == pytest.approx(ell, rel=1e-12)
            return md.bounds.harmonic(0.7, 0.9, 1.6, th0, end).excess_work

        phis = np.linspace(-math.pi, math.pi, 73)
        i = int(np.argmin([w(p) for p in phis]))
        best = minimize_scalar(w, bounds=(phis[max(i - 1, 0)], phis[min(i + 1, 72)]), method="bounded",
                               options={"xatol": 1e-12})
        assert front.at(ell) == pytest.approx(best.fun, rel=1e-9)


def test_discrete_front_lies_above_and_converges():
    problem = optimal.HarmonicProblem(S, MU, T, TH0, XBAR)
    cont = optimal.pareto_front(problem, n_points=7)
    fronts = [optimal.pareto_front(problem, cont.losses, n_steps=n) for n in (1, 10, 1000)]
    for f in fronts:
        assert f.kind == "harmonic-discrete"
        assert np.all(f.excess_work >= cont.excess_work * (1 - 1e-14))
    assert np.all(fronts[0].excess_work >= fronts[1].excess_work) and np.all(fronts[1].excess_work >= fronts[2].excess_work)
    np.testing.assert_allclose(fronts[2].excess_work[:-1], cont.excess_work[:-1], rtol=2e-6)


def test_gaussian_front_matches_constrained_minimisation_over_end_points():
    """min over (a_f, s_f) with L(a_f, s_f) <= L of bounds.gaussian, by SLSQP from several starts."""
    problem = optimal.GaussianProblem(*GAUSS)
    a0, s0, xbar, vd, mu, T_ = GAUSS
    front = optimal.pareto_front(problem, n_points=6)
    assert front.at(front.loss_min) == pytest.approx(md.bounds.gaussian(*GAUSS).excess_work, rel=1e-14)
    assert front.at(front.loss_start) == 0.0
    for ell in front.losses[1:-1]:
        best = math.inf
        for a in (a0, 0.5 * (a0 + xbar), xbar):
            for ls in np.log([0.5, 1.0, 2.0]):
                r = minimize(lambda z: md.bounds.gaussian(a0, s0, z[0], math.exp(z[1]), mu, T_).excess_work, [a, ls],
                             method="SLSQP", options={"ftol": 1e-15, "maxiter": 500},
                             constraints=[{"type": "ineq", "fun": lambda z: ell - problem.loss(z[0], math.exp(z[1]))}])
                if r.success and problem.loss(r.x[0], math.exp(r.x[1])) <= ell + 1e-12:
                    best = min(best, r.fun)
        assert front.at(ell) == pytest.approx(best, rel=1e-6)


def test_numerical_front_matches_the_closed_form():
    """Problem1D on the exact moments model (n = 3): optimise_1d at each loss against the n-update front."""
    problem = optimal.HarmonicProblem(S, MU, T, TH0, XBAR)
    losses = problem.loss(XBAR) + np.array([0.0, 0.05, 0.6, 2.0])
    num = optimal.pareto_front(optimal.Problem1D(md.HarmonicTrap(S), md.data.Gaussian(XBAR, S), [TH0], T, MU, n_steps=3,
                                                 backend="moments"), losses)
    exact = optimal.pareto_front(problem, losses, n_steps=3)
    assert num.kind == "numerical-1d" and not num.exact and len(num.results) == 4
    np.testing.assert_allclose(num.excess_work, exact.excess_work, rtol=1e-8)
    assert num.at(losses[1]) == pytest.approx(exact.at(losses[1]), rel=1e-8)


# ---------------------------------------------------------------- no schedule beats the front

def lower_front(front, loss):
    """The front at the loss plus its rounding (64 eps |L|): near the least loss W*(L) falls like
    sqrt(L - L_min), so a rounded loss moves it by O(sqrt(eps)); this side of it is a strict lower bound."""
    return front.at(loss + 64 * np.finfo(float).eps * max(1.0, abs(loss)))


def _baseline(family, scale, T_, c0, cT):
    return md.schedules.BASELINES[family](scale, T_).scaled(1.0, impulse_start=c0, impulse_end=cT)


@settings(max_examples=60, deadline=None)
@given(s=st.floats(0.1, 5.0), mu=st.floats(0.1, 5.0), T_=st.floats(0.05, 10.0), th0=st.floats(-3, 3),
       xbar=st.floats(-3, 3), family=st.sampled_from(sorted(md.schedules.BASELINES)),
       log_scale=st.floats(-3, 2), c0=st.floats(0, 2), cT=st.floats(0, 2), n=st.integers(1, 60))
def test_no_harmonic_schedule_beats_the_front(s, mu, T_, th0, xbar, family, log_scale, c0, cT, n):
    sched = _baseline(family, 10.0**log_scale * s, T_, c0 * s, cT * s)
    with np.errstate(over="ignore", invalid="ignore"):
        path = harmonic_discrete_path(sched.discretise(n), s, mu, th0, xbar)
    if not np.all(np.isfinite(path["theta"])) or abs(path["theta"][-1, 0]) > 1e6:
        return
    problem = optimal.HarmonicProblem(s, mu, T_, th0, xbar)
    loss, work = problem.loss(path["theta"][-1]), path["work"][-1]
    slack = 1e-9 * max(work, 1e-300) + 1e-12
    front_n = optimal.pareto_front(problem, [loss], n_steps=n)
    front = optimal.pareto_front(problem, [loss])
    assert work >= lower_front(front_n, loss) - slack
    assert front_n.at(loss) >= front.at(loss) * (1 - 1e-12)
    assert optimal.dissipation_ratio((loss, work), front_n) >= 1 - 1e-6 or work < 1e-12


@settings(max_examples=40, deadline=None)
@given(s=st.floats(0.1, 5.0), mu=st.floats(0.1, 5.0), T_=st.floats(0.05, 10.0), delta=st.floats(-3, 3),
       n=st.integers(1, 30), log_size=st.floats(-6, -1), seed=st.integers(0, 2**16))
def test_perturbed_optimum_never_beats_the_front(s, mu, T_, delta, n, log_size, seed):
    """Near the optimum the ratio is 1 + O(perturbation^2): a sharp version of the property above."""
    disc = optimal.discrete_harmonic(n, variance=s, mobility=mu, duration=T_)
    rng = np.random.default_rng(seed)
    lr = disc.lr * (1.0 + 10.0**log_size * rng.standard_normal(n + 2))
    from dataclasses import replace

    path = harmonic_discrete_path(replace(disc, lr=lr), s, mu, 0.0, delta)
    problem = optimal.HarmonicProblem(s, mu, T_, 0.0, delta)
    loss, work = problem.loss(path["theta"][-1]), path["work"][-1]
    assert work >= lower_front(optimal.pareto_front(problem, [loss], n_steps=n), loss) * (1 - 1e-12) - 1e-15


def test_no_schedule_through_train_beats_the_front():
    """Seeded loop: random traps and Gaussians, schedules of every kind, run by md.train (moments backend)."""
    rng = np.random.default_rng(11)
    checked = 0
    for trial in range(24):
        n = int(rng.integers(2, 25))
        if trial % 2 == 0:       # harmonic trap, random baseline with random impulses
            s, mu, T_ = np.exp(rng.uniform(-1.5, 1.5, 3))
            th0, xbar = rng.uniform(-2, 2, 2)
            fam = sorted(md.schedules.BASELINES)[trial // 2 % 5]
            sched = _baseline(fam, s * np.exp(rng.uniform(-2, 1.5)), T_, *(s * rng.uniform(0, 1.5, 2)))
            try:
                res = md.train(md.HarmonicTrap(s), md.data.Gaussian(xbar, s), schedule=sched, theta0=[th0],
                               mobility=mu, n_steps=n, backend="moments")
            except md.DivergenceError:
                continue
            front = optimal.pareto_front(optimal.HarmonicProblem(s, mu, T_, th0, xbar), [res.final_loss], n_steps=n)
        else:                    # learnable variance: NG, Fisher-preconditioned SGD, random rates, wrong-target optimum
            a0, xbar = rng.uniform(-2, 2, 2)
            s0, vd, mu, T_ = np.exp(rng.uniform(-1, 1, 4))
            kind = trial // 2 % 4
            if kind == 0:
                sched = md.schedules.natural_gradient(T_, tau=float(np.exp(rng.uniform(-1, 1))), fisher="exact")
            elif kind == 1:
                sched = md.schedules.preconditioned(md.schedules.cosine(np.exp(rng.uniform(-2, 0.5)), T_),
                                                    "fisher-full")
            elif kind == 2:
                rates = np.exp(rng.uniform(-3, 0, (n + 2, 2))) * np.r_[1.0, np.full(n, T_ / n), 1.0][:, None]
                sched = optimal._unit_schedule("random", T_, optimal.PerUpdateDiagonal(rates * 0.3, T_), {})
            else:
                sched = optimal.gaussian_schedule(a0, s0, xbar + rng.normal(), vd * np.exp(rng.normal()), mu, T_)
            try:
                res = md.train(md.Gaussian(1), md.data.Gaussian(xbar, vd), schedule=sched,
                               theta0=md.Gaussian.natural(a0, s0), mobility=mu, n_steps=n, backend="moments")
            except md.DivergenceError:
                continue
            front = optimal.pareto_front(optimal.GaussianProblem(a0, s0, xbar, vd, mu, T_), [res.final_loss])
        assert res.excess_work >= lower_front(front, res.final_loss) * (1 - 1e-9) - 1e-12, (trial, res.excess_work)
        checked += 1
    assert checked >= 18


# ---------------------------------------------------------------- dissipation ratio

def test_dissipation_ratio_of_runs():
    problem = optimal.HarmonicProblem(S, MU, T, TH0, XBAR)
    n = 10
    front_n = optimal.pareto_front(problem, n_steps=n)

    def run(schedule):
        return md.train(md.HarmonicTrap(S), md.data.Gaussian(XBAR, S), schedule=schedule, theta0=[TH0], mobility=MU,
                        n_steps=n, backend="moments")

    best = run(optimal.discrete_harmonic(n, variance=S, mobility=MU, duration=T))
    assert optimal.dissipation_ratio(best, front_n) == pytest.approx(1.0, abs=1e-12)
    const = run(md.schedules.constant(0.4, T))
    ratio = optimal.dissipation_ratio(const, front_n)
    assert ratio > 1.1
    assert optimal.dissipation_ratio((const.final_loss, const.excess_work), front_n) == ratio
    assert optimal.dissipation_ratio((problem.loss(TH0), 0.5), front_n) == math.inf   # work, no progress
    assert optimal.dissipation_ratio((problem.loss(TH0) + 1.0, 0.0), front_n) == 1.0


def test_bad_points_and_fronts():
    problem = optimal.HarmonicProblem(S, MU, T, TH0, XBAR)
    front = optimal.pareto_front(problem, n_points=5)
    with pytest.raises(optimal.UnreachableLossError, match="unreachable"):
        front.at(front.loss_min - 0.1)
    with pytest.raises(optimal.UnreachableLossError, match="unreachable"):
        optimal.dissipation_ratio((front.loss_min - 0.1, 1.0), front)
    with pytest.raises(optimal.UnreachableLossError, match="unreachable"):
        optimal.pareto_front(problem, [front.loss_min - 1.0])
    with pytest.raises(optimal.UnreachableLossError, match="unreachable"):
        optimal.GaussianProblem(*GAUSS).excess_work(0.0)
    with pytest.raises(md.InputError, match="pair"):
        optimal.dissipation_ratio("nonsense", front)
    with pytest.raises(md.InputError, match="finite"):
        optimal.dissipation_ratio((math.nan, 1.0), front)
    with pytest.raises(md.InputError, match="HarmonicProblem"):
        optimal.pareto_front({"variance": 1.0})
    with pytest.raises(md.InputError, match="n_steps"):
        optimal.pareto_front(optimal.GaussianProblem(*GAUSS), n_steps=5)


@pytest.mark.parametrize("make,word", [
    (lambda: optimal.HarmonicProblem(0.0, 1.0, 1.0, 0.0, 1.0), "variance"),
    (lambda: optimal.HarmonicProblem(1.0, 1.0, 0.0, 0.0, 1.0), "duration"),
    (lambda: optimal.HarmonicProblem(1.0, 1.0, 1.0, [0.0, 1.0], 1.0), "same length"),
    (lambda: optimal.HarmonicProblem(1.0, 1.0, 1.0, 0.0, math.inf), "target"),
    (lambda: optimal.HarmonicProblem(1.0, 1.0, 1.0, 0.0, 1.0, data_variance=-2.0), "data_variance"),
    (lambda: optimal.GaussianProblem(0.0, -1.0, 1.0, 1.0, 1.0, 1.0), "variance0"),
    (lambda: optimal.GaussianProblem(0.0, 1.0, 1.0, 0.0, 1.0, 1.0), "data_variance"),
    (lambda: optimal.GaussianProblem(0.0, 1.0, 1.0, 1.0, 1.0, 0.0), "duration"),
    (lambda: optimal.GaussianProblem([0.0, 1.0], 1.0, 1.0, 1.0, 1.0, 1.0), "one dimension"),
    (lambda: optimal.Problem1D(md.HarmonicTrap(1.0), md.data.Gaussian(0.0, 1.0), [1.0], 0.0), "duration"),
])
def test_bad_problems_are_named(make, word):
    with pytest.raises(md.InputError, match=word):
        make()


# ---------------------------------------------------------------- schedule_for

def test_schedule_for_picks_the_exact_optimum_where_known():
    choice = optimal.schedule_for(md.HarmonicTrap(S), md.data.Gaussian(XBAR, S), theta0=[TH0], duration=T, mobility=MU)
    sched, kind = choice
    assert kind == "exact-harmonic" and "Schmiedl-Seifert" in choice.reason
    assert sched.impulse_end == pytest.approx(S / 2)
    a0, s0, xbar, vd, mu, T_ = GAUSS
    sched, kind = optimal.schedule_for(md.Gaussian(1), md.data.Gaussian(xbar, vd), theta0=md.Gaussian.natural(a0, s0),
                                       duration=T_, mobility=mu)
    assert kind == "exact-gaussian"
    res = md.train(md.Gaussian(1), md.data.Gaussian(xbar, vd), schedule=sched, theta0=md.Gaussian.natural(a0, s0),
                   mobility=mu, n_steps=100, backend="moments")
    assert res.excess_work == pytest.approx(md.bounds.gaussian(*GAUSS).excess_work, rel=1e-4)


def test_schedule_for_falls_back_to_numerical_then_natural_gradient():
    energy = md.ExpFamily.quartic()
    data = torch.linspace(-1.5, 1.5, 41, dtype=torch.float64).reshape(-1, 1)
    with pytest.raises(md.InputError, match="n_steps"):
        optimal.schedule_for(energy, data, theta0=[1.0, 0.5], duration=0.5)
    choice = optimal.schedule_for(energy, data, theta0=[1.0, 0.5], duration=0.5, n_steps=2, grid=(-3.0, 3.0, 31))
    assert choice.kind == "numerical-1d" and "numerically" in choice.reason
    assert choice.schedule.params["grid"] == (-3.0, 3.0, 31)
    energy2 = md.ExpFamily(lambda x: x.to(torch.float64) ** 2 / 2, dim=2)
    sched, kind = optimal.schedule_for(energy2, torch.zeros(5, 2), theta0=[1.0, 1.0], duration=1.0)
    assert kind == "natural-gradient" and sched.name.startswith("natural-gradient")
    with pytest.raises(md.InputError, match="natural parameters"):
        optimal.schedule_for(md.Gaussian(1), md.data.Gaussian(0.0, 1.0), theta0=[1.0, -1.0], duration=1.0)


# ---------------------------------------------------------------- no schedule below the numerical front



def _numerical_front_at(energy, data, theta0, T_, mu, n, loss):
    """The least W_ex of any n-update schedule whose final loss is at most ``loss`` (optimise_1d, moments)."""
    landing = optimal.optimise_1d(energy, data, theta0, duration=T_, mobility=mu, n_steps=n, backend="moments")
    if loss <= landing.loss_min + 1e-10 * max(1.0, abs(landing.loss_min)):
        return landing.excess_work
    return optimal.optimise_1d(energy, data, theta0, duration=T_, mobility=mu, n_steps=n, backend="moments",
                               target_loss=loss, init=landing).excess_work


@settings(max_examples=4, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**31 - 1))
def test_no_schedule_lies_below_the_numerical_front(seed):
    """Issue 19: every schedule the library builds (the exact optima ``gaussian_schedule`` and ``discrete_harmonic``,
    natural gradient, a random baseline family at a random scale) has W_ex >= the numerical front that
    ``optimise_1d`` calls optimal, at the schedule's own final loss (the restricted optimiser of earlier versions
    put ``gaussian_schedule`` 12 % below its front)."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 7))
    a0, xbar = rng.uniform(-1.5, 1.5, 2)
    s0, vd, mu, T_ = np.exp(rng.uniform(-0.7, 0.7, 4))
    fam = sorted(md.schedules.BASELINES)[int(rng.integers(0, len(md.schedules.BASELINES)))]
    runs = [("gaussian", optimal.gaussian_schedule(a0, s0, xbar, vd, mu, T_)),
            ("gaussian", md.schedules.natural_gradient(T_, tau="auto", fisher="exact")),
            ("gaussian", md.schedules.BASELINES[fam](float(np.exp(rng.uniform(-2, 1))), T_)),
            ("trap", optimal.discrete_harmonic(n, variance=s0, mobility=mu, duration=T_)),
            ("trap", md.schedules.optimal_harmonic(s0, mu, T_))]
    for kind, sched in runs:
        if kind == "gaussian":
            energy, data, theta0 = md.Gaussian(1), md.data.Gaussian(xbar, vd), md.Gaussian.natural(a0, s0)
        else:
            energy, data, theta0 = md.HarmonicTrap(s0), md.data.Gaussian(xbar, s0), [a0]
        try:
            res = md.train(energy, data, schedule=sched, theta0=theta0, mobility=mu, n_steps=n, backend="moments")
        except md.DivergenceError:
            continue
        best = _numerical_front_at(energy, data, theta0, T_, mu, n, res.final_loss)
        assert res.excess_work >= best * (1 - 1e-7) - 1e-10, (seed, sched.name, res.excess_work, best)
