"""Experiment energy_floor (quick mode): checks pass and the joule figures are re-derived."""
import math

import pytest

import mindiss as md
from mindiss.app.experiments import energy_floor as exp

KT = 1.380649e-23 * 300.0


@pytest.fixture(scope="module")
def result():
    return exp.run(quick=True)


def _rows(result, name):
    return result.table(name)


def test_every_check_passes(result):
    assert result.checks
    failed = result.failed_checks()
    assert not failed, failed


def test_floor_is_w_star_times_kT_at_300K(result):
    assert result.numbers["kT_300K_J"] == pytest.approx(KT, rel=1e-15)
    assert result.numbers["floor_J_Delta1_T1"] == pytest.approx(KT / 3.0, rel=1e-12)
    assert result.numbers["floor_J_quench_Delta1"] == pytest.approx(KT / 2.0, rel=1e-12)
    assert result.numbers["landauer_kT_ln2_J"] == pytest.approx(KT * math.log(2.0), rel=1e-12)
    rows = _rows(result, "energy_floor_grid")
    assert rows
    for r in rows:
        w = r["Delta"] ** 2 / (2.0 + r["T_over_tau"])          # s = mu = 1
        assert r["W_star_kT"] == pytest.approx(w, rel=1e-12)
        assert r["floor_J"] == pytest.approx(w * KT, rel=1e-12)


def test_schedules_against_the_floor(result):
    rows = _rows(result, "energy_floor_schedules")
    assert {r["schedule"] for r in rows} == {"optimal", *exp.FAMILIES}
    for r in rows:
        T = r["T_over_tau"]
        assert r["energy_J"] == pytest.approx(r["W_ex_kT"] * KT, rel=1e-12)
        own = md.bounds.harmonic(1.0, 1.0, T, distance=1.0 - r["final_error"]).excess_work * KT
        assert r["floor_own_endpoint_J"] == pytest.approx(own, rel=1e-9)
        assert r["floor_target_J"] == pytest.approx(KT / (2.0 + T), rel=1e-12)
        assert r["energy_J"] >= own
        assert r["excess_over_floor_J"] == pytest.approx(r["energy_J"] - own, rel=1e-6, abs=1e-35)
        if r["schedule"] == "optimal":
            n = exp.n_optimal(T, quick=True)
            assert abs(r["energy_J"] / r["floor_target_J"] - 1.0) <= 0.15 * T / n
        else:
            assert r["final_error"] == pytest.approx(exp.FINAL_ERROR, rel=1e-8)
            assert r["energy_over_floor"] > 1.05
    for fam in exp.FAMILIES:
        assert result.numbers[f"ratio_{fam}_T10"] > 1.2


def test_plot_returns_a_figure(result, plot_axes):
    assert plot_axes(exp, result) == 3
