"""Experiment 4: where the dissipation goes: final lag of the chains plus entropy production (Identity 2)."""
from __future__ import annotations

import math

import numpy as np

from ...estimators import bounds
from ... import data
from ...estimators import references as moments
from ...rates import schedules
from ...energies.base import HarmonicTrap
from ...errors import InputError
from ...core.train import train
from . import references as ref
from .base import Check, ExperimentResult, Table, no_progress

NAME = "dissipation_split"
TITLE = "Where the dissipation goes"
CLAIM = ("The excess work of every schedule splits exactly into the chains' final lag KL(rho_T || p_theta_T) "
         "and the entropy produced while they chase the model (Identity 2); the optimal schedule leaves "
         "two thirds of W* as final lag at T = tau, as the closed form says.")
CAPTION = ("Harmonic trap, s = mu = T = 1 (tau = 1), theta_0 = 0, xbar = 3, exact N -> infinity moments backend, "
           "equilibrium start (KL_0 = 0). Baselines are tuned so that |theta_T - xbar| = 0.1 |xbar - theta_0| "
           "(exponential with decay rate 1/T); 'continuous (w = 0)' is the optimal interior rate without its "
           "impulses, 'smoothed' spreads each impulse over a box of width w. (a) W_ex split into the final lag "
           "KL(rho_T || p_theta_T) and the total entropy production EP; the hatched bar is the closed-form "
           "continuous-time split of the optimum; black ticks: the bound W* for the endpoint each schedule "
           "reached; dashed line: W* for reaching xbar; 'err' under each bar is |theta_T - xbar| / |xbar - theta_0|. "
           "(b) Cumulative entropy production EP(t) (solid) and "
           "W_ex(t) (dashed): their vertical distance is the current lag KL(rho_t || p_theta_t); dotted: the "
           "optimum's closed form EP(t) = Delta^2 t / (mu (T + 2 tau)^2). (c) The current lag KL(rho_t || p_theta_t).")

S, MU, T, THETA0, TARGET = 1.0, 1.0, 1.0, 0.0, 3.0      # tau = 1, W* = 3 kT: KL_T = 2, EP = 1
FINAL_ERROR = 0.1
FALLBACK_SCALE = 2.0
SMOOTHING = 0.1
# exponential with decay 1 (not the default 3): with decay 3 the final error 0.1 is reached only by a ~50x scale
# that overshoots the target (W_ex ~ 80 kT), which would say nothing about the split
BASELINES = (("constant", {}), ("linear", {}), ("cosine", {}), ("exponential", {"decay": 1.0}), ("step", {}))
IDENTITY_TOL = 1e-12


def _schedules(n_steps, notes):
    """[(label, Schedule)] in display order."""
    out = [("optimal", schedules.optimal_harmonic(S, MU, T)),
           ("continuous (w = 0)", schedules.optimal_harmonic_continuous(S, MU, T, 0.0)),
           (f"smoothed (w = {SMOOTHING:g})", schedules.optimal_harmonic_continuous(S, MU, T, SMOOTHING))]
    for fam, kw in BASELINES:
        try:
            sched = schedules.tune_scale(fam, FINAL_ERROR, variance=S, mobility=MU, duration=T, n_steps=n_steps, **kw)
        except InputError:
            sched = schedules.BASELINES[fam](FALLBACK_SCALE, T, **kw)
            notes.append(f"{fam}: no scale reaches final error {FINAL_ERROR}; fixed scale {FALLBACK_SCALE} used")
        out.append((fam, sched))
    return out


def _split_run(energy, target, sched, n_steps):
    """A moments-backend run with KL(rho_t || p_theta_t) and the cumulative EP after every update."""
    rec = {}

    def observe(update, theta, chains):
        rec[update] = (energy.kl(chains.mean, chains.var, theta), chains.entropy_production)

    res = train(energy, target, schedule=sched, theta0=[THETA0], mobility=MU, n_steps=n_steps, backend="moments",
                observers=[observe])
    h = res.history
    upd = h["update"].astype(int)
    kl = np.array([res.kl_initial if k == 0 else rec[k][0] for k in upd])
    ep = np.array([0.0 if k == 0 else rec[k][1] for k in upd])
    w = h["excess_work"]
    return res, {"t": h["t"], "dt": h["dt"], "theta": h["theta_0"], "excess_work": w, "kl": kl, "ep": ep,
                 "residual": np.abs(w - (kl - res.kl_initial + ep))}


def run(quick: bool = False, progress=no_progress) -> ExperimentResult:
    n_steps = 200 if quick else 1000
    dt = T / n_steps
    notes: list = []
    energy, target = HarmonicTrap(S), data.Gaussian(TARGET, S)
    bound = bounds.harmonic(S, MU, T, THETA0, TARGET)
    progress(0, 1)
    scheds = _schedules(n_steps, notes)
    total = len(scheds) + 1
    progress(1, total)

    runs, rows, checks = {}, [], []
    numbers = {"W_star": bound.excess_work, "kl_end_closed_form": bound.kl_end,
               "entropy_production_closed_form": bound.entropy_production}
    for i, (label, sched) in enumerate(scheds):
        res, c = _split_run(energy, target, sched, n_steps)
        ode = moments.solve_harmonic_continuous(sched, S, MU, THETA0, TARGET)
        ep_steps = np.diff(c["ep"])[c["dt"][1:] > 0]     # per chain move (impulses produce none)
        final_err = abs(res.theta_final[0] - TARGET) / abs(TARGET - THETA0)
        runs[label] = {**c, "kl_final": res.kl_final, "entropy_production": res.entropy_production,
                       "W_ex": res.excess_work, "bound": res.bound, "final_error": final_err,
                       "scale": sched.params.get("scale")}
        checks.append(Check(f"Identity 2, {label}: max over updates |W_ex - (KL_t - KL_0 + EP_t)|",
                            float(c["residual"].max()), 0.0, IDENTITY_TOL, "abs",
                            reference_name="0: exact in discrete time (exact OU moves); float64 round-off",
                            kind="identity"))
        checks.append(Check(f"entropy production >= 0, {label}", res.entropy_production, 0.0, 0.0, "ge",
                            reference_name="second law: 0", kind="law"))
        disc = sched.discretise(n_steps)
        led = ref.trap_ledger(disc.lr, disc.dt, S, MU, THETA0, TARGET)
        checks.append(Check(f"{label} (n = {n_steps}): entropy production = NumPy loop of the same rates",
                            res.entropy_production, float(led["entropy_production"][-1]), 1e-9, "rel",
                            reference_name="references.trap_ledger (lag KL decrease per exact OU move; no library "
                                           "code)", kind="independent"))
        if label == "optimal":
            kl_end, ep_end = ref.harmonic_split(S, MU, T, TARGET - THETA0)
            checks.append(Check(f"optimal (n = {n_steps}): final lag KL_T = closed form", res.kl_final,
                                kl_end, 1.5 * dt / (S / MU), "rel",
                                reference_name="k |xbar - m_T|^2 / 2 (references.harmonic_split); O(dt) tolerance "
                                               "1.5 dt/tau", kind="independent"))
            checks.append(Check(f"optimal (n = {n_steps}): entropy production = closed form", res.entropy_production,
                                ep_end, 1.5 * dt / (S / MU), "rel",
                                reference_name="Delta^2 T / (mu (T + 2 tau)^2) (references.harmonic_split); "
                                               "O(dt) tolerance 1.5 dt/tau", kind="independent"))
        else:
            checks.append(Check(f"{label} (n = {n_steps}): entropy production = continuous-time ODE",
                                res.entropy_production, ode["entropy_production"], 3.0 * dt / (S / MU), "rel",
                                reference_name="the library's adaptive ODE, int |dm/dt|^2 / mu dt; O(dt) tolerance "
                                               "3 dt/tau", kind="consistency"))
        key = label.split(" ")[0]
        numbers[f"W_ex_{key}"] = res.excess_work
        numbers[f"kl_final_{key}"] = res.kl_final
        numbers[f"entropy_production_{key}"] = res.entropy_production
        rows.append([label, sched.params.get("scale", math.nan), res.theta_final[0], final_err, res.excess_work,
                     res.kl_initial, res.kl_final, res.entropy_production, res.entropy_production / res.excess_work,
                     float(c["residual"].max()), float(ep_steps.min()), ode["work"], ode["kl_final"],
                     ode["entropy_production"], res.bound])
        progress(i + 2, total)
    rows.append(["optimal (closed form, continuous time)", math.nan, TARGET, 0.0, bound.excess_work, 0.0,
                 bound.kl_end, bound.entropy_production, bound.entropy_production / bound.excess_work, 0.0,
                 math.nan, bound.excess_work, bound.kl_end, bound.entropy_production, bound.excess_work])
    numbers["identity2_max_residual"] = max(float(r["residual"].max()) for r in runs.values())
    progress(total, total)
    return ExperimentResult(
        name=NAME,
        data={"runs": runs, "W_star": bound.excess_work, "closed": (bound.kl_end, bound.entropy_production),
              "ep_rate": (TARGET - THETA0) ** 2 / (MU * (T + 2 * S / MU) ** 2), "T": T, "n_steps": n_steps},
        tables=[Table("dissipation_split_schedules",
                      ["schedule", "scale", "theta_T", "final_error", "W_ex", "KL_0", "KL_T", "entropy_production",
                       "EP_fraction", "max_identity2_residual", "min_EP_per_move", "W_ex_ode", "KL_T_ode",
                       "EP_ode", "W_star_reached_endpoint"], rows)],
        checks=checks,
        numbers=numbers,
        parameters={"variance": S, "mobility": MU, "duration": T, "theta0": THETA0, "target": TARGET,
                    "n_steps": n_steps, "backend": "moments", "sampler": "exact", "baseline_final_error": FINAL_ERROR,
                    "smoothing": SMOOTHING},
        notes=notes,
    )


def plot(result: ExperimentResult):
    import matplotlib.pyplot as plt

    d = result.data
    runs = d["runs"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.2), gridspec_kw={"width_ratios": [1.5, 1, 1]})
    ax = axes[0]
    labels = list(runs)
    kl = [runs[k]["kl_final"] for k in labels]
    ep = [runs[k]["entropy_production"] for k in labels]
    x = np.arange(len(labels), dtype=float)
    x[1:] += 1.0                       # room for the closed-form bar next to the optimum
    ax.bar(x, kl, color="C0", width=0.8, label="final lag KL(rho_T || p_theta_T)")
    ax.bar(x, ep, bottom=kl, color="C1", width=0.8, label="entropy production EP")
    kl_c, ep_c = d["closed"]
    ax.bar([1.0], [kl_c], color="C0", width=0.8, hatch="//", edgecolor="white", alpha=0.7)
    ax.bar([1.0], [ep_c], bottom=[kl_c], color="C1", width=0.8, hatch="//", edgecolor="white", alpha=0.7)
    ax.hlines([runs[k]["bound"] for k in labels], x - 0.4, x + 0.4, colors="k", lw=2,
              label="W* for the endpoint reached")
    ax.axhline(d["W_star"], color="k", ls="--", lw=0.9, label=f"W* = {d['W_star']:.3g} kT (reach xbar)")
    for xi, k in zip(x, labels):
        total = runs[k]["kl_final"] + runs[k]["entropy_production"]
        ax.text(xi, max(total, runs[k]["bound"]) + 0.04, f"{total:.2f}", ha="center", va="bottom", fontsize=7.5,
                bbox=dict(facecolor="white", edgecolor="none", pad=0.5))
    ticks = np.r_[x[0], 1.0, x[1:]]
    names = [f"{k}\nerr {runs[k]['final_error']:.2g}" for k in labels]
    ax.set_xticks(ticks, [names[0], "optimal\nclosed form", *names[1:]], rotation=40, ha="right", fontsize=8)
    ax.set_ylabel("excess work W_ex  (kT)")
    ax.set_ylim(0, 1.22 * max(max(a + b for a, b in zip(kl, ep)), d["W_star"]))
    ax.set_title(f"(a) W_ex = KL_T + EP  (n = {d['n_steps']}, N -> infinity)")
    ax.legend(fontsize=7.5, loc="upper left", ncol=2)

    show = [k for k in labels if k.split(" ")[0] in ("optimal", "continuous", "constant", "cosine")]
    ax = axes[1]
    for i, k in enumerate(show):
        r = runs[k]
        color = f"C{[0, 2, 3, 4][i % 4]}"
        ax.plot(r["t"], r["ep"], color=color, lw=3.0 if i == 0 else 1.8, label=f"EP(t), {k}")
        ax.plot(r["t"], r["excess_work"], color=color, lw=1.0, ls="--", label=f"W_ex(t), {k}")
    tt = np.linspace(0, d["T"], 50)
    ax.plot(tt, d["ep_rate"] * tt, "k:", lw=1.2, label="closed form EP(t), optimum")
    ax.set_xlabel("t  (units of tau = s/mu)")
    ax.set_ylabel("kT")
    ax.set_title("(b) cumulative entropy production")
    ax.legend(fontsize=7, loc="upper left")

    ax = axes[2]
    for i, k in enumerate(show):
        r = runs[k]
        ax.plot(r["t"], r["kl"], color=f"C{[0, 2, 3, 4][i % 4]}", lw=1.5, label=k)
    ax.set_xlabel("t  (units of tau)")
    ax.set_ylabel("KL(rho_t || p_theta_t)  (kT)")
    ax.set_title("(c) current lag of the chains")
    ax.legend(fontsize=7.5, loc="upper left")
    fig.tight_layout()
    return fig
