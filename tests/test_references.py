"""The report's independent references (``experiments/references.py``): they import nothing from mindiss, and
they agree with the library where both compute the same thing (so a check that uses them can fail only when
the library is wrong or the reference is, never by shared code)."""
from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest

import mindiss as md
from mindiss.app.experiments import references as ref

pytestmark = pytest.mark.usefixtures("one_thread")


def test_imports_nothing_from_the_library():
    tree = ast.parse(Path(ref.__file__).read_text())
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "a relative import would reach the library"
            names.append(node.module)
    assert set(names) <= {"__future__", "math", "numpy"}, names


def test_closed_forms_match_the_library():
    s, mu, T, th0, xbar = 0.5, 1.3, 2.0, -0.4, 1.7
    assert ref.harmonic_bound(s, mu, T, xbar - th0) == pytest.approx(1.225, rel=1e-14)   # theory.md 5.1
    for n in (1, 3, 20):
        assert ref.discrete_harmonic_bound(n, s, mu, T, xbar - th0) == pytest.approx(
            md.optimal.discrete_harmonic_excess_work(n, variance=s, mobility=mu, duration=T, distance=xbar - th0),
            rel=1e-14)
    case = (0.3, 1.7, -1.1, 0.45, 0.8, 2.3)
    assert ref.gaussian_bound(*case) == pytest.approx(md.bounds.gaussian(*case).excess_work, rel=1e-12)
    kl, ep = ref.harmonic_split(s, mu, T, xbar - th0)
    b = md.bounds.harmonic(s, mu, T, th0, xbar)
    assert (kl, ep) == pytest.approx((b.kl_end, b.entropy_production), rel=1e-13)
    assert kl + ep == pytest.approx(1.225, rel=1e-14)


def test_trap_ledger_matches_train_and_the_exact_optimum():
    s, mu, T, th0, xbar, n = 0.5, 1.3, 2.0, -0.4, 1.7, 7
    disc = md.optimal.discrete_harmonic(n, variance=s, mobility=mu, duration=T)
    led = ref.trap_ledger(disc.lr, disc.dt, s, mu, th0, xbar)
    assert led["excess_work"] == pytest.approx(ref.discrete_harmonic_bound(n, s, mu, T, xbar - th0), rel=1e-12)
    assert led["theta_final"] == pytest.approx(xbar, abs=1e-13)
    # Identity 1 in the reference itself: L - L_approx = W_ex at every update (natural parameter)
    np.testing.assert_allclose(led["loss_true"] - led["loss_approx"], led["work"], atol=1e-13)
    res = md.train(md.HarmonicTrap(s), md.data.Gaussian(xbar, s), schedule=disc, theta0=[th0], mobility=mu,
                   n_steps=n, backend="moments")
    assert res.excess_work == pytest.approx(led["excess_work"], rel=1e-12)
    assert res.entropy_production == pytest.approx(led["entropy_production"][-1], rel=1e-12)


def test_particles_and_crooks_on_a_known_protocol():
    """W of the NumPy particle simulator is N(W_ex, 2 W_ex) (Delta F = 0); Crooks' Fermi statistic agrees
    forward and reversed within 4 standard errors."""
    s, mu = 1.0, 1.0
    path = np.r_[0.0, np.linspace(0.3, 1.7, 15), 2.0]
    dt = np.r_[0.0, np.full(14, 1.0 / 14), 0.0]
    w_ex = ref.trap_path_work(path, dt, s, mu)
    w = ref.trap_particles(path, dt, s, mu, 200_000, seed=1)
    assert w.mean() == pytest.approx(w_ex, abs=4 * w.std() / math.sqrt(w.size))
    assert w.var() == pytest.approx(2 * w_ex, rel=0.02)
    rpath, rdt = ref.reversed_protocol(path, dt)
    wr = ref.trap_particles(rpath, rdt, s, mu, 200_000, seed=2)
    f, fr = ref.fermi_mean(w), ref.fermi_mean(wr)
    se = math.sqrt(np.var(0.5 * (1 - np.tanh(0.5 * w))) / w.size + np.var(0.5 * (1 - np.tanh(0.5 * wr))) / wr.size)
    assert abs(f - fr) <= 4 * se
    assert ref.fermi_mean(w) != pytest.approx(ref.fermi_mean(-w), abs=10 * se)   # the statistic can fail
