"""Experiment 7: the energy floor of a training run, in joules.

The least heat a learner can dissipate while moving the harmonic trap's centre by Delta in time T,
from equilibrium chains, is W* k_B T_K with W* = Delta^2 / (2 s + mu T) (kT units) and T_K = 300 K:
``bounds.joules``. The floor is mapped against T for several Delta and against Delta for several T;
the optimal schedule run on the exact N -> infinity moments backend dissipates exactly that (up to
O(dt)); and the baseline schedules of ``dissipation_vs_duration``, tuned to the same final error,
are placed above the floor for their own endpoint, as a ratio and as excess joules.
"""
from __future__ import annotations

import math

import numpy as np

from ...estimators import bounds
from ...rates import schedules
from ...estimators.bounds import BOLTZMANN
from ...errors import InputError
from . import references as ref
from .base import Check, ExperimentResult, Table, no_progress
from .dissipation_vs_duration import (FAMILIES, FINAL_ERROR, OPT_TOL, STYLE, n_baseline, n_optimal, run_moments,
                                      tuned_baseline)

NAME = "energy_floor"
TITLE = "The energy floor"
CLAIM = ("At 300 K the least energy a training run can dissipate moving a parameter by Delta in time T is "
         "k_B T Delta^2 / (2 s + mu T) joules, about 2e-21 J per (standard deviation)^2 for a quench and "
         "falling as 1/T; the optimal schedule meets it, and the usual schedules, tuned to the same final "
         "error, spend about 1.1 times (T = tau) to several times (T = 100 tau) more.")
CAPTION = ("Energies in joules at 300 K (k_B = 1.380649e-23 J/K), harmonic trap with s = mu = 1 (tau = s/mu; "
           "Delta in units of sqrt(s)). (a) The floor W* k_B T against the duration for several distances "
           "(lines: closed form; markers: the optimal schedule measured on the exact N -> infinity moments "
           "backend); dotted: k_B T ln 2 for scale. (b) The floor against the distance for several durations "
           "(slope 2 on log axes); markers: measured. (c) Energy dissipated by each schedule at T = {tb:g} tau "
           "(baselines tuned to final error {eps:g}) divided by the floor for its own endpoint; the labels give "
           "the energy above that floor in joules.")

S, MU = 1.0, 1.0
TAU = S / MU
TEMPERATURE = 300.0                                   # kelvin
KT_J = BOLTZMANN * TEMPERATURE                        # joules per kT
DELTAS = (0.25, 0.5, 1.0, 2.0, 4.0)                   # panel (a): distances |xbar - theta_0|, units sqrt(s)
FLOOR_TS = (0.1, 1.0, 10.0, 100.0)                    # panel (b): durations, units of tau
BASE_TS = (1.0, 10.0, 100.0)                          # baselines are placed above the floor at these T
BAR_T = 10.0                                          # panel (c)
MEASURED_DELTAS = (0.5, 2.0, 4.0)                     # extra optimal runs at T = BAR_T (Delta = 1 at every BASE_T)


def floor_joules(T: float, delta: float) -> float:
    """W*(Delta, T) k_B T_K in joules, from the closed form of ``bounds.harmonic``."""
    return bounds.joules(bounds.harmonic(S, MU, T, distance=delta).excess_work, TEMPERATURE)


def run(quick: bool = False, progress=no_progress) -> ExperimentResult:
    total = 1 + len(BASE_TS) * (1 + len(FAMILIES)) + len(MEASURED_DELTAS)
    done = 0
    # ---- the floor on grids (closed form) and the unit check
    t_grid = np.logspace(-2, 3, 26 if quick else 51)
    d_grid = np.logspace(np.log10(0.1), np.log10(10.0), 21 if quick else 41)
    floor_t = {dl: np.array([floor_joules(T, dl) for T in t_grid]) for dl in DELTAS}
    floor_d = {T: np.array([floor_joules(T, dl) for dl in d_grid]) for T in FLOOR_TS}
    w_t = {dl: bounds.harmonic_excess_work(S, MU, t_grid, dl) for dl in DELTAS}
    w_d = {T: bounds.harmonic_excess_work(S, MU, T, d_grid) for T in FLOOR_TS}
    # the library's floor (bounds.harmonic + bounds.joules) against the closed form written apart
    # (references.harmonic_bound x k_B x 300 K); the former self-comparison W* k_B 300 K = W* k_B 300 K is gone
    ref_t = {dl: np.array([ref.joules(ref.harmonic_bound(S, MU, T, dl), TEMPERATURE) for T in t_grid]) for dl in DELTAS}
    ref_d = {T: np.array([ref.joules(ref.harmonic_bound(S, MU, T, dl), TEMPERATURE) for dl in d_grid])
             for T in FLOOR_TS}
    ref_dev = max(max(float(np.max(np.abs(floor_t[dl] / ref_t[dl] - 1.0))) for dl in DELTAS),
                  max(float(np.max(np.abs(floor_d[T] / ref_d[T] - 1.0))) for T in FLOOR_TS))
    checks = [
        Check(f"floor on the whole grid ({len(t_grid) * len(DELTAS) + len(d_grid) * len(FLOOR_TS)} points) = "
              "closed form written apart: max relative deviation", ref_dev, 0.0, 1e-12, "abs",
              reference_name="references.harmonic_bound x 1.380649e-23 J/K x 300 K (no library code)",
              kind="independent"),
    ]
    done += 1
    progress(done, total)

    # ---- measured: optimal schedule (moments backend) and the tuned baselines
    rows, meas_t, meas_d, gaps = [], [], [], []
    opt_checks = []
    bars = {}
    own_ref: dict = {}          # per family: (T, energy / own-endpoint floor from references)
    for T in BASE_TS:
        n = n_optimal(T, quick)
        res = run_moments(schedules.optimal_harmonic(S, MU, T), T, n, target=1.0)
        fl = floor_joules(T, 1.0)
        meas_t.append((T, res.energy_joules))
        opt_checks.append(Check(f"optimal schedule dissipates the floor (Delta = 1, T/tau = {T:g}, n = {n}) (J)",
                                res.energy_joules, ref.joules(ref.harmonic_bound(S, MU, T, 1.0), TEMPERATURE),
                                OPT_TOL * (T / n) / TAU, "rel",
                                reference_name=f"floor W* k_B 300 K (references); O(dt) tolerance {OPT_TOL:g} dt/tau",
                                kind="independent"))
        fl_end = bounds.joules(res.bound, TEMPERATURE)
        rows.append([T, "optimal", float(abs(res.theta_final[0] - 1.0)), res.excess_work, res.energy_joules, fl_end,
                     fl, res.energy_joules / fl_end, res.energy_joules - fl_end])
        if T == BAR_T:
            bars["optimal"] = (res.energy_joules / fl_end, res.energy_joules - fl_end)
        done += 1
        progress(done, total)
        nb = n_baseline(T, quick)
        for fam in FAMILIES:
            try:
                sched = tuned_baseline(fam, T, nb)
            except InputError as exc:
                gaps.append(f"{fam} at T/tau = {T:g}: {exc}")
                rows.append([T, fam, math.nan, math.nan, math.nan, math.nan, fl, math.nan, math.nan])
            else:
                r = run_moments(sched, T, nb, target=1.0)
                fl_end = bounds.joules(r.bound, TEMPERATURE)
                rows.append([T, fam, float(abs(r.theta_final[0] - 1.0)), r.excess_work, r.energy_joules, fl_end, fl,
                             r.energy_joules / fl_end, r.energy_joules - fl_end])
                own_ref.setdefault(fam, []).append(
                    (T, r.energy_joules / ref.joules(ref.harmonic_bound(S, MU, T, r.theta_final[0]), TEMPERATURE)))
                if T == BAR_T:
                    bars[fam] = (r.energy_joules / fl_end, r.energy_joules - fl_end)
            done += 1
            progress(done, total)
    for dl in MEASURED_DELTAS:
        n = n_optimal(BAR_T, quick)
        res = run_moments(schedules.optimal_harmonic(S, MU, BAR_T), BAR_T, n, target=dl)
        meas_d.append((dl, res.energy_joules))
        opt_checks.append(Check(f"optimal schedule dissipates the floor (Delta = {dl:g}, T/tau = {BAR_T:g}, n = {n}) "
                                "(J)", res.energy_joules, ref.joules(ref.harmonic_bound(S, MU, BAR_T, dl), TEMPERATURE),
                                OPT_TOL * (BAR_T / n) / TAU, "rel",
                                reference_name=f"floor W* k_B 300 K (references); O(dt) tolerance {OPT_TOL:g} dt/tau",
                                kind="independent"))
        done += 1
        progress(done, total)
    meas_d.append((1.0, dict(meas_t)[BAR_T]))
    checks += opt_checks

    for fam in FAMILIES:
        ratios = [r for r in own_ref.get(fam, []) if math.isfinite(r[1])]
        if not ratios:
            continue
        T_min, r_min = min(ratios, key=lambda x: x[1])
        checks.append(Check(f"{fam}: energy >= floor for its own endpoint at T/tau = "
                            f"{', '.join(f'{r[0]:g}' for r in ratios)} (min ratio, at T/tau = {T_min:g})",
                            r_min, 1.0, 1e-9, "ge",
                            reference_name="W*(theta_0 -> theta_T) k_B 300 K (references.harmonic_bound); exact for "
                                           "any protocol from equilibrium chains, tolerance: rounding",
                            kind="independent"))

    landauer = KT_J * math.log(2.0)
    numbers = {"kT_300K_J": KT_J, "landauer_kT_ln2_J": landauer,
               "floor_J_quench_Delta1": bounds.joules(0.5 / S, TEMPERATURE)}
    for T in FLOOR_TS:
        numbers[f"floor_J_Delta1_T{T:g}".replace(".", "p")] = floor_joules(T, 1.0)
    numbers["floor_J_d1e9_each_1sd_T100"] = bounds.joules(bounds.harmonic_excess_work(S, MU, 100.0, math.sqrt(1e9)),
                                                          TEMPERATURE)
    for name, (ratio, excess) in bars.items():
        if name != "optimal":
            numbers[f"ratio_{name}_T{BAR_T:g}"] = ratio
            numbers[f"excess_J_{name}_T{BAR_T:g}"] = excess
    notes = [f"Baselines are tuned to final error |theta_T - xbar| / Delta = {FINAL_ERROR:g} (as in "
             f"dissipation_vs_duration) and compared with the floor for the endpoint they reach, "
             f"(1 - {FINAL_ERROR:g})^2 times the floor for the target.",
             "floor_J_d1e9_each_1sd_T100: the same closed form for a 10^9-dimensional trap whose centre moves one "
             "standard deviation along every axis in T = 100 tau (the floor adds over independent directions)."]
    if gaps:
        notes.append("tune_scale found no scale for: " + "; ".join(gaps) + " (left as gaps).")
    progress(total, total)
    return ExperimentResult(
        name=NAME,
        data={"t_grid": t_grid, "d_grid": d_grid, "floor_t": floor_t, "floor_d": floor_d, "meas_t": meas_t,
              "meas_d": meas_d, "bars": bars, "landauer": landauer, "final_error": FINAL_ERROR},
        tables=[
            Table("energy_floor_grid", ["T_over_tau", "Delta", "W_star_kT", "floor_J"],
                  [[float(T), float(dl), float(w_t[dl][i]), float(floor_t[dl][i])]
                   for dl in DELTAS for i, T in enumerate(t_grid)]),
            Table("energy_floor_schedules", ["T_over_tau", "schedule", "final_error", "W_ex_kT", "energy_J",
                                             "floor_own_endpoint_J", "floor_target_J", "energy_over_floor",
                                             "excess_over_floor_J"], rows),
        ],
        checks=checks,
        numbers=numbers,
        parameters={"variance": S, "mobility": MU, "temperature_kelvin": TEMPERATURE, "boltzmann_J_per_K": BOLTZMANN,
                    "deltas": list(DELTAS), "floor_T_over_tau": list(FLOOR_TS), "baseline_T_over_tau": list(BASE_TS),
                    "bar_T_over_tau": BAR_T, "final_error": FINAL_ERROR, "backend": "moments"},
        notes=notes,
    )


def plot(result: ExperimentResult):
    import matplotlib.pyplot as plt

    d = result.data
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    ax = axes[0]
    for i, (dl, fl) in enumerate(d["floor_t"].items()):
        ax.plot(d["t_grid"], fl, color=f"C{i}", lw=1.5, label=f"Delta = {dl:g} sqrt(s)")
    ts, js = zip(*d["meas_t"])
    ax.plot(ts, js, "o", color="k", ms=6, mfc="none", label="optimal schedule, measured (Delta = 1)")
    ax.axhline(d["landauer"], color="gray", ls=":", lw=1.4, label="k_B T ln 2 (for scale)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("duration T  (units of tau = s/mu)")
    ax.set_ylabel("minimal dissipated energy  (J, at 300 K)")
    ax.set_title("(a) energy floor vs duration")
    ax.legend(fontsize=8, loc="lower left")

    ax = axes[1]
    for i, (T, fl) in enumerate(d["floor_d"].items()):
        ax.plot(d["d_grid"], fl, color=f"C{i}", lw=1.5, label=f"T = {T:g} tau")
    dls, js = zip(*d["meas_d"])
    ax.plot(dls, js, "s", color="k", ms=6, mfc="none", label="optimal schedule, measured (T = 10 tau)")
    ax.axhline(d["landauer"], color="gray", ls=":", lw=1.4, label="k_B T ln 2 (for scale)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("distance Delta = |xbar - theta_0|  (units of sqrt(s))")
    ax.set_ylabel("minimal dissipated energy  (J, at 300 K)")
    ax.set_title("(b) energy floor vs distance")
    ax.legend(fontsize=8, loc="lower right")

    ax = axes[2]
    names = list(d["bars"])
    ratios = [d["bars"][k][0] for k in names]
    colors = [STYLE[k][0] for k in names]
    pos = np.arange(len(names))
    ax.bar(pos, ratios, color=colors, alpha=0.8)
    for p, k in zip(pos, names):
        r, ex = d["bars"][k]
        ax.annotate(f"+{ex:.2g} J", (p, r), xytext=(0, 3), textcoords="offset points", ha="center", fontsize=8)
    ax.axhline(1.0, color="k", lw=0.8, ls="--", label="floor for the schedule's own endpoint")
    ax.set_xticks(pos)
    ax.set_xticklabels(names, rotation=20)
    ax.set_ylim(0, 1.15 * max(ratios))
    ax.set_ylabel("dissipated energy / floor  (J / J)")
    ax.set_title(f"(c) schedules above the floor, T = {BAR_T:g} tau\n(baselines at final error {d['final_error']:g})")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


CAPTION = CAPTION.format(tb=BAR_T, eps=FINAL_ERROR)
