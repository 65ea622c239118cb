"""Learnable-variance Gaussian optimum and Schmiedl-Seifert stiffness change (theory.md section 6).

The closed forms of ``md.bounds.gaussian`` / ``md.bounds.schmiedl_seifert`` are checked against
references that share no code with them:

* direct minimisation (scipy BFGS) of the section-6 objective over the final chain moments (m, v);
* direct protocol optimisation: piecewise-constant parameters (a_k, s_k) on N equal pieces, the
  chains' moments moved by the exact OU transition, the work summed over the frozen-chain jumps
  (no Identity 2), minimised by L-BFGS over all 2N parameters. The optimum over N pieces converges
  to the continuous one as c2/N^2 + c4/N^4 + ... (measured ratios of successive differences 3.99),
  so two Richardson steps over N = 32, 64, 128 give the continuous limit (measured agreement
  <= 4e-9 relative; asserted 1e-6);
* the moment ODEs integrated (DOP853) under the closed-form protocol a(t), s(t), and its work by
  the first law; and the protocol replayed through ``md.train`` (moments backend).
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import quad, solve_ivp
from scipy.optimize import minimize

import mindiss as md
from mindiss.core.results import ThetaProtocol

#: (a0, s0, xbar, v_d, mu, T)
CASES = [(-0.4, 0.5, 1.7, 1.2, 1.3, 2.0), (0.3, 2.0, -1.0, 0.4, 0.8, 0.5), (1.0, 1.0, 1.0, 3.0, 1.0, 1.0),
         (0.0, 0.7, 2.5, 0.7, 2.0, 0.3)]


def kl_gauss(m, v, xbar, vd):
    return 0.5 * (v / vd + (m - xbar) ** 2 / vd - 1.0 - math.log(v / vd))


# ---------------------------------------------------------------- closed-form consistency

def test_reduces_to_harmonic_when_variance_is_right():
    """s0 = v_d: only the centre moves; theory.md 5.1 example W* = 1.225."""
    b = md.bounds.gaussian(-0.4, 0.5, 1.7, 0.5, mobility=1.3, duration=2.0)
    h = md.bounds.harmonic(0.5, 1.3, 2.0, theta0=-0.4, target=1.7)
    assert b.excess_work == pytest.approx(1.225, rel=1e-14) and b.variance_part == 0.0
    assert b.chain_mean_end[0] == pytest.approx(h.chain_mean_end[0], rel=1e-14)
    assert b.theta_after_start[0] == pytest.approx([h.theta_after_start[0], 0.5], rel=1e-14)
    assert b.theta_before_end[0] == pytest.approx([h.theta_before_end[0], 0.5], rel=1e-14)
    assert b.kl_end == pytest.approx(h.kl_end, rel=1e-13)
    assert b.entropy_production == pytest.approx(h.entropy_production, rel=1e-13)


@pytest.mark.parametrize("a0,s0,xbar,vd,mu,T", CASES)
def test_schmiedl_seifert_is_the_variance_part(a0, s0, xbar, vd, mu, T):
    """theory.md's literal c, W* and y formulas; W* - Delta F equals the Gaussian bound's variance part."""
    li, lf, u = 1.0 / s0, 1.0 / vd, mu * T
    ss = md.bounds.schmiedl_seifert(li, lf, T, mobility=mu)
    c = (-1 - lf * u + math.sqrt(1 + 2 * li * u + li * lf * u * u)) / (2 * u + lf * u * u)
    w = c * c * u / li + lf / (2 * li) * (1 + c * u) ** 2 - 0.5 - math.log(1 + c * u)
    assert ss.c == pytest.approx(c, rel=1e-12, abs=1e-15)
    assert ss.work == pytest.approx(w, rel=1e-12)
    assert ss.excess_work == pytest.approx(w - 0.5 * math.log(lf / li), rel=1e-10, abs=1e-15)
    b = md.bounds.gaussian(a0, s0, xbar, vd, mu, T)
    assert b.variance_part == pytest.approx(ss.excess_work, rel=1e-12, abs=1e-15)
    y = (vd * math.sqrt(s0) + math.sqrt(vd * vd * s0 + u * vd * (2 * vd + u))) / (2 * vd + u)
    assert b.chain_variance_end[0] == pytest.approx(y * y, rel=1e-13)
    assert ss.variance_end == pytest.approx(y * y, rel=1e-13)
    assert b.mean_part == pytest.approx((xbar - a0) ** 2 / (u + 2 * vd), rel=1e-14)
    assert b.excess_work == pytest.approx(b.kl_end + b.entropy_production, rel=1e-12)
    assert b.delta_free_energy == pytest.approx(-0.5 * math.log(vd / s0), rel=1e-14, abs=1e-16)
    # the stiffness protocol's jumps are those of the Gaussian path's variance
    assert 1.0 / ss.stiffness_after_start == pytest.approx(b.theta_after_start[0][1], rel=1e-12)
    assert 1.0 / ss.stiffness_before_end == pytest.approx(b.theta_before_end[0][1], rel=1e-12)


@pytest.mark.parametrize("li,lf,mu,T", [(1.0, 0.5, 1.0, 1.0), (0.3, 4.0, 2.0, 0.7), (5.0, 0.1, 0.5, 3.0)])
def test_schmiedl_seifert_protocol_solves_the_variance_ode(li, lf, mu, T):
    """dv/dt = 2 mu (1 - lambda*(t) v) from v = 1/lambda_i gives (1 + c mu t)^2 / lambda_i; work by quadrature."""
    ss = md.bounds.schmiedl_seifert(li, lf, T, mobility=mu)
    ts = np.linspace(0, T, 7)
    sol = solve_ivp(lambda t, v: 2 * mu * (1 - ss.stiffness(t) * v), (0, T), [1 / li], method="DOP853",
                    rtol=1e-13, atol=1e-14, t_eval=ts)
    np.testing.assert_allclose(sol.y[0], ss.chain_variance(ts), rtol=1e-10)
    # W = jumps + int dlambda/dt <x^2>/2 dt, dlambda/dt by central differences of the closed form
    h = 1e-5 * T
    dlam = lambda t: (ss.stiffness(t + h) - ss.stiffness(t - h)) / (2 * h)  # noqa: E731
    interior = quad(lambda t: dlam(t) * ss.chain_variance(t) / 2, h, T - h, epsabs=1e-13, epsrel=1e-12)[0]
    interior += (ss.stiffness(h) - ss.stiffness(0)) * ss.chain_variance(0) / 2  # the first/last h: O(h^2)
    interior += (ss.stiffness(T) - ss.stiffness(T - h)) * ss.chain_variance(T) / 2
    work = ss.jump_start / (2 * li) + interior + ss.jump_end * ss.variance_end / 2
    assert work == pytest.approx(ss.work, rel=1e-7, abs=1e-9)


# ---------------------------------------------------------------- reference 1: minimise over (m, v)

@pytest.mark.parametrize("a0,s0,xbar,vd,mu,T", CASES)
def test_section6_objective_minimised_numerically(a0, s0, xbar, vd, mu, T):
    b = md.bounds.gaussian(a0, s0, xbar, vd, mu, T)

    def objective(z):
        m, v = z[0], math.exp(z[1])
        return ((m - a0) ** 2 + (math.sqrt(v) - math.sqrt(s0)) ** 2) / (mu * T) + kl_gauss(m, v, xbar, vd)

    r = minimize(objective, [a0, math.log(s0)], method="BFGS", options={"gtol": 1e-12})
    assert r.fun == pytest.approx(b.excess_work, rel=1e-10)
    assert r.x[0] == pytest.approx(b.chain_mean_end[0], rel=1e-6, abs=1e-7)
    assert math.exp(r.x[1]) == pytest.approx(b.chain_variance_end[0], rel=1e-6)
    # the parts decouple: each is its own one-dimensional minimum
    mean = minimize(lambda z: (z[0] - a0) ** 2 / (mu * T) + (z[0] - xbar) ** 2 / (2 * vd), [a0],
                    method="BFGS", options={"gtol": 1e-12})
    assert mean.fun == pytest.approx(b.mean_part, rel=1e-10, abs=1e-14)
    var = minimize(lambda z: (math.exp(z[0] / 2) - math.sqrt(s0)) ** 2 / (mu * T) + kl_gauss(xbar, math.exp(z[0]), xbar, vd),
                   [math.log(s0)], method="BFGS", options={"gtol": 1e-12})
    assert var.fun == pytest.approx(b.variance_part, rel=1e-9, abs=1e-14)


# ---------------------------------------------------------------- reference 2: optimise the protocol

def piecewise_excess_work(params, n, a0, s0, xbar, vd, mu, T, centre_fixed=False):
    """W - Delta F of the protocol (a_k, s_k) held for T/n each, from equilibrium at (a0, s0), final jump to (xbar, v_d).

    Exact OU moments between jumps (linear recursions, solved by cumulative sums); each jump
    does work <E_new - E_old> = [((m - a')^2 + v)/s' - ((m - a)^2 + v)/s] / 2 at the current moments.
    """
    f64 = dict(dtype=torch.float64)
    h = T / n
    a = torch.full((n,), float(a0), **f64) if centre_fixed else params[:n]
    s = torch.exp(params if centre_fixed else params[n:])
    zero = torch.zeros(1, **f64)
    log_decay = torch.cat([zero, torch.cumsum(-mu * h / s, 0)])
    m = torch.exp(log_decay) * (a0 + torch.cat([zero, torch.cumsum(-torch.expm1(-mu * h / s) * a
                                                                    * torch.exp(-log_decay[1:]), 0)]))
    v = torch.exp(2 * log_decay) * (s0 + torch.cat([zero, torch.cumsum(-torch.expm1(-2 * mu * h / s) * s
                                                                       * torch.exp(-2 * log_decay[1:]), 0)]))
    a_old, s_old = torch.cat([torch.tensor([a0], **f64), a]), torch.cat([torch.tensor([s0], **f64), s])
    a_new, s_new = torch.cat([a, torch.tensor([xbar], **f64)]), torch.cat([s, torch.tensor([vd], **f64)])
    work = (((m - a_new) ** 2 + v) / s_new - ((m - a_old) ** 2 + v) / s_old).sum() / 2
    return work + 0.5 * math.log(vd / s0)


def optimise_protocol(n, a0, s0, xbar, vd, mu, T, centre_fixed=False):
    """L-BFGS over the piecewise protocol, started from parameters interpolated linearly (no closed form used)."""
    t = (np.arange(n) + 0.5) / n
    x0 = np.log(s0 + (vd - s0) * t)
    if not centre_fixed:
        x0 = np.concatenate([a0 + (xbar - a0) * t, x0])

    def fun(x):
        p = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        w = piecewise_excess_work(p, n, a0, s0, xbar, vd, mu, T, centre_fixed)
        w.backward()
        return w.item(), p.grad.numpy().copy()

    r = minimize(fun, x0, jac=True, method="L-BFGS-B", options={"maxiter": 5000, "maxcor": 50, "ftol": 1e-16,
                                                                 "gtol": 1e-12})
    return r.fun


def richardson(values):
    """Two Richardson steps for an error series in 1/N^2: values at N, 2N, 4N."""
    w1, w2, w4 = values
    r1, r2 = (4 * w2 - w1) / 3, (4 * w4 - w2) / 3
    return (16 * r2 - r1) / 15


@pytest.mark.parametrize("which", ["variance", "mean", "both"])
def test_protocol_optimisation_reaches_the_bound(which):
    if which == "variance":   # centre fixed, stiffness change only: Schmiedl-Seifert
        a0, s0, xbar, vd, mu, T = 0.0, 1.0, 0.0, 0.3, 0.7, 2.0
        ref = md.bounds.schmiedl_seifert(1 / s0, 1 / vd, T, mobility=mu).excess_work
        assert ref == pytest.approx(md.bounds.gaussian(a0, s0, xbar, vd, mu, T).variance_part, rel=1e-12)
    elif which == "mean":     # variance already right, but both parameters are free to move
        a0, s0, xbar, vd, mu, T = -0.4, 0.5, 1.7, 0.5, 1.3, 2.0
        ref = md.bounds.gaussian(a0, s0, xbar, vd, mu, T).mean_part
    else:
        a0, s0, xbar, vd, mu, T = -0.4, 0.5, 1.7, 1.2, 1.3, 2.0
        ref = md.bounds.gaussian(a0, s0, xbar, vd, mu, T).excess_work
    works = [optimise_protocol(n, a0, s0, xbar, vd, mu, T, centre_fixed=which == "variance") for n in (32, 64, 128)]
    assert all(w > ref for w in works)       # every piecewise protocol dissipates more
    assert richardson(works) == pytest.approx(ref, rel=1e-6)


# ---------------------------------------------------------------- reference 3: the protocol itself

@pytest.mark.parametrize("a0,s0,xbar,vd,mu,T", CASES)
def test_path_solves_moment_odes_and_its_work_is_the_bound(a0, s0, xbar, vd, mu, T):
    b = md.bounds.gaussian(a0, s0, xbar, vd, mu, T)

    def params(t):
        p = b.path(min(max(t, 0.0), T))
        return p.centre[0], p.variance[0]

    def rhs(t, y):
        a, s = params(t)
        return [mu * (a - y[0]) / s, 2 * mu * (1 - y[1] / s)]

    ts = np.linspace(0, T, 9)
    sol = solve_ivp(rhs, (0, T), [a0, s0], method="DOP853", rtol=1e-13, atol=1e-14, t_eval=ts)
    p = b.path(ts)
    np.testing.assert_allclose(sol.y[0], p.chain_mean[:, 0], rtol=1e-10, atol=1e-11)
    np.testing.assert_allclose(sol.y[1], p.chain_variance[:, 0], rtol=1e-10)
    np.testing.assert_allclose(np.sqrt(p.chain_variance[:, 0]), np.sqrt(s0) + (np.sqrt(b.chain_variance_end[0])
                                                                               - np.sqrt(s0)) * ts / T, rtol=1e-13)
    assert [p.centre[0, 0], p.variance[0, 0]] == pytest.approx(b.theta_after_start[0], rel=1e-13)
    assert [p.centre[-1, 0], p.variance[-1, 0]] == pytest.approx(b.theta_before_end[0], rel=1e-13)
    assert np.all(p.variance > 0)
    # first law along the path: W = <E>_T - <E>_0 - Q, heat rate <dE/dm> dm/dt + <dE/dv> dv/dt
    def heat_rate(t):
        q = b.path(t)
        m, v, a, s = q.chain_mean[0], q.chain_variance[0], q.centre[0], q.variance[0]
        return (m - a) / s * mu * (a - m) / s + mu * (1 - v / s) / s

    heat = quad(heat_rate, 0, T, epsabs=1e-14, epsrel=1e-13)[0]
    m_end, v_end = b.chain_mean_end[0], b.chain_variance_end[0]
    work = ((m_end - xbar) ** 2 + v_end) / (2 * vd) - 0.5 - heat
    assert work == pytest.approx(b.work, rel=1e-10, abs=1e-12)
    assert work + 0.5 * math.log(vd / s0) == pytest.approx(b.excess_work, rel=1e-10)


def test_replayed_through_train_reaches_the_bound():
    """The closed-form path sampled at mid-interval, replayed by ``md.train`` (moments backend), jumps included."""
    a0, s0, xbar, vd, mu, T = -0.4, 0.5, 1.7, 1.2, 1.3, 2.0
    b = md.bounds.gaussian(a0, s0, xbar, vd, mu, T)
    energy = md.Gaussian(dim=1)
    works = []
    for n in (40, 80, 160):
        dt = T / n
        p = b.path((np.arange(n) + 0.5) * dt)
        thetas = [energy.natural(a0, s0).numpy()] + [energy.natural(c, s).numpy() for c, s in zip(p.centre, p.variance)]
        thetas.append(energy.natural(xbar, vd).numpy())
        protocol = ThetaProtocol(np.array(thetas), np.concatenate([np.full(n, dt), [0.0]]))
        res = md.train(energy, md.data.Gaussian(xbar, vd), schedule=protocol, theta0=thetas[0], mobility=mu,
                       backend="moments")
        assert res.theta_final == pytest.approx(thetas[-1].tolist(), rel=1e-14)
        works.append(res.excess_work)
    assert all(w > b.excess_work for w in works)
    assert richardson(works) == pytest.approx(b.excess_work, rel=1e-6)


# ---------------------------------------------------------------- properties and bad input

finite = st.floats(-5, 5, allow_nan=False)
positive = st.floats(0.05, 20, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(finite, positive, finite, positive, positive, positive)
def test_bound_below_any_feasible_endpoint(a0, s0, xbar, vd, mu, T):
    b = md.bounds.gaussian(a0, s0, xbar, vd, mu, T)
    quench = kl_gauss(a0, s0, xbar, vd)                        # (m, v) = (a0, s0): everything left as lag
    slow = ((xbar - a0) ** 2 + (math.sqrt(vd) - math.sqrt(s0)) ** 2) / (mu * T)   # (m, v) = (xbar, v_d)
    assert 0 <= b.excess_work <= min(quench, slow) * (1 + 1e-12) + 1e-15
    assert b.mean_part >= 0 and b.variance_part >= 0
    assert b.excess_work == pytest.approx(b.kl_end + b.entropy_production, rel=1e-10, abs=1e-15)
    longer = md.bounds.gaussian(a0, s0, xbar, vd, mu, 2 * T)
    assert longer.excess_work <= b.excess_work * (1 + 1e-12) + 1e-15
    assert np.all(b.path(np.linspace(0, T, 5)).variance > 0)


def test_vector_input_adds_dimensions():
    one = [md.bounds.gaussian(a, s, x, v, 1.3, 2.0) for a, s, x, v in [(-0.4, 0.5, 1.7, 1.2), (1.0, 2.0, 0.0, 0.3)]]
    both = md.bounds.gaussian([-0.4, 1.0], [0.5, 2.0], [1.7, 0.0], [1.2, 0.3], 1.3, 2.0)
    assert both.excess_work == pytest.approx(one[0].excess_work + one[1].excess_work, rel=1e-14)
    assert both.theta_before_end == [one[0].theta_before_end[0], one[1].theta_before_end[0]]
    assert both.path([0.5, 1.0]).centre.shape == (2, 2)


@pytest.mark.parametrize("kwargs,word", [
    ({"variance0": -1.0}, "variance0"), ({"variance0": 0.0}, "variance0"), ({"data_variance": 0.0}, "data_variance"),
    ({"data_variance": float("inf")}, "data_variance"), ({"mobility": 0.0}, "mobility"), ({"duration": -1.0}, "duration"),
    ({"mean0": float("nan")}, "mean0"), ({"data_mean": "x"}, "data_mean"),
    ({"mean0": [0.0, 1.0], "data_mean": [0.0, 1.0, 2.0]}, "same length"),
])
def test_gaussian_bad_input(kwargs, word):
    args = {"mean0": 0.0, "variance0": 1.0, "data_mean": 1.0, "data_variance": 2.0, "mobility": 1.0, "duration": 1.0,
            **kwargs}
    with pytest.raises(md.InputError, match=word):
        md.bounds.gaussian(**args)


def test_path_outside_duration_and_schmiedl_seifert_bad_input():
    with pytest.raises(md.InputError, match="duration"):
        md.bounds.gaussian(0, 1, 1, 2, 1, 1).path(1.5)
    for kwargs, word in [({"stiffness_initial": 0}, "stiffness_initial"), ({"stiffness_final": -1}, "stiffness_final"),
                         ({"duration": 0}, "duration"), ({"mobility": float("nan")}, "mobility")]:
        args = {"stiffness_initial": 1.0, "stiffness_final": 2.0, "duration": 1.0, "mobility": 1.0, **kwargs}
        with pytest.raises(md.InputError, match=word):
            md.bounds.schmiedl_seifert(**args)


# ---------------------------------------------------------------- command line

GAUSS = ["bound", "gaussian", "--mean0", -0.4, "--variance0", 0.5, "--data-mean", 1.7, "--data-variance", 1.2,
         "--mobility", 1.3, "--duration", 2]


def test_cli_bound_gaussian_json(run_cli):
    code, out, _ = run_cli(*GAUSS, "--json")
    assert code == 0
    res = json.loads(out)
    b = md.bounds.gaussian(-0.4, 0.5, 1.7, 1.2, 1.3, 2.0)
    for key in ("excess_work", "mean_part", "variance_part", "chain_mean_end", "chain_variance_end",
                "impulse_start", "impulse_end", "theta_after_start", "theta_before_end", "energy_joules"):
        assert key in res
    assert res["excess_work"] == b.excess_work and res["mean_part"] == pytest.approx(2.1**2 / (2.6 + 2.4), rel=1e-14)
    assert res["impulse_start"] == b.impulse_start and res["chain_variance_end"] == b.chain_variance_end


def test_cli_bound_gaussian_table(run_cli):
    code, out, _ = run_cli(*GAUSS)
    assert code == 0 and "mean_part" in out and "variance_part" in out


@pytest.mark.parametrize("flag,value,word", [("--variance0", -1, "variance0"), ("--data-variance", 0, "data_variance"),
                                             ("--mobility", 0, "mobility"), ("--duration", -2, "duration"),
                                             ("--variance0", "nan", "variance0"), ("--mean0", "a", "mean0"),
                                             ("--data-mean", "1,2,3", "same length")])
def test_cli_bound_gaussian_bad_input_exit_2(run_cli, flag, value, word):
    args = list(GAUSS)
    args[args.index(flag) + 1] = value
    if flag == "--data-mean":  # two vectors of different lengths
        args[args.index("--mean0") + 1] = "0,1"
    code, out, err = run_cli(*args, "--json")
    assert code == 2 and out == ""
    assert word in err
