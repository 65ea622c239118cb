"""Experiment 6: work fluctuations of a replayed training run (Jarzynski, Var W = 2 <W>).

A training run (harmonic trap, s = mu = 1, T = tau, Delta = 2, particles with exact OU moves) records
its theta path; the path is replayed open-loop on fresh equilibrium chains, which removes the
feedback of the chains on theta. For a translated harmonic trap each chain's work is linear in the
chain's Gaussian positions, so W is exactly Gaussian; with Delta F = 0 Jarzynski's equality
<exp(-W)> = 1 then forces Var W = 2 <W>: W ~ N(W_ex, 2 W_ex). These hold in discrete time (exact OU
transitions) and for every protocol: the same relations are checked on baseline schedules (tuned to
the same final error, more dissipative).

Errors: ``chain_work`` holds replica 0's per-chain work only, so each estimate comes from several
independent replays (one replica each, different seeds); the standard error is taken across replays.
The mean work is compared with the moments-backend replay of the same recorded protocol (exact
N -> infinity, no Monte-Carlo noise).
"""
from __future__ import annotations

import math

import numpy as np

from ...estimators import bounds
from ... import data
from ...rates import schedules
from ...energies.base import HarmonicTrap
from ...errors import InputError
from ...core.results import ThetaProtocol
from ...core.train import replay, train
from . import references as ref
from .base import Check, ExperimentResult, Table, no_progress

NAME = "work_fluctuations"
TITLE = "Work fluctuations"
CLAIM = ("Replayed open-loop, a training run's per-chain work is Gaussian with Var W = 2 <W_ex> and obeys "
         "Jarzynski's equality <exp(-W)> = exp(-Delta F) = 1, for the optimal schedule and for any other.")
CAPTION = ("Harmonic trap, s = mu = 1, T = tau, Delta = 2; theta path recorded from one particle training run "
           "and replayed on fresh equilibrium chains (exact OU moves). (a) Per-chain work histograms (all replays "
           "pooled) with the predicted Gaussian N(W_ex, 2 W_ex), W_ex from the exact moments-backend replay of the "
           "same protocol. (b) Running Jarzynski estimate <exp(-W)> over the pooled chains; the band is "
           "1 +- one standard error of the lognormal prediction, sqrt((exp(2 W_ex) - 1)/N). (c) Var W against <W> "
           "(error bars: standard errors across replays) on the line Var W = 2 <W>; crosses are the exact "
           "moments-backend mean work.")

S, MU, T, THETA0, TARGET = 1.0, 1.0, 1.0, 0.0, 2.0   # tau = 1, Delta = 2
FINAL_ERROR = 0.01          # baselines: |theta_T - xbar| / |theta_0 - xbar|
BASELINE_FAMILIES = ("constant", "step")


def _size(quick: bool) -> dict:
    # many replays of <= 25,000 chains: a reliable SE from many replays, and tensors below torch's
    # intra-op parallel grain size (large tensors slow down badly when the cores are oversubscribed)
    if quick:
        return {"n_steps": 100, "n_chains": 10_000, "n_replays": 12}
    return {"n_steps": 400, "n_chains": 25_000, "n_replays": 24}


def _schedules(n_steps: int):
    """[(label, schedule, final error it was tuned to or None)], the optimum first."""
    out = [("optimal", schedules.optimal_harmonic(S, MU, T), None)]
    notes = []
    for family in BASELINE_FAMILIES:
        for err in (FINAL_ERROR, 0.05, 0.1):
            try:
                sched = schedules.tune_scale(family, err, variance=S, mobility=MU, duration=T, n_steps=n_steps,
                                             bracket=(0.1, 10.0))
            except InputError:
                notes.append(f"{family}: final error {err} not reachable in T = {T:g} tau")
                continue
            out.append((f"{family} (final error {err:g})", sched, err))
            break
    return out, notes


def _se(values) -> float:
    v = np.asarray(values, float)
    return float(v.std(ddof=1) / math.sqrt(len(v)))


def run(quick: bool = False, progress=no_progress) -> ExperimentResult:
    size = _size(quick)
    n_steps, n_chains, n_rep = size["n_steps"], size["n_chains"], size["n_replays"]
    energy, target = HarmonicTrap(S), data.Gaussian(TARGET, S)
    protocols, notes = _schedules(n_steps)
    total = len(protocols) * (n_rep + 2)
    done = 0
    checks, rows, per = [], [], {}
    for p_idx, (label, sched, err) in enumerate(protocols):
        trained = train(energy, target, schedule=sched, theta0=[THETA0], mobility=MU, n_steps=n_steps,
                        n_chains=n_chains, n_replicas=1, seed=100 + p_idx)
        protocol = trained.protocol()
        exact = replay(energy, target, protocol, mobility=MU, backend="moments")
        done += 1
        progress(done, total)
        w_exact = exact.excess_work
        means, variances, jarz, pooled = [], [], [], []
        for r in range(n_rep):
            rep = replay(energy, target, protocol, mobility=MU, n_chains=n_chains, n_replicas=1,
                         keep_chains=True, seed=10_000 * (p_idx + 1) + r)
            w = np.asarray(rep.chain_work, float)
            means.append(w.mean())
            variances.append(w.var(ddof=1))
            jarz.append(np.exp(-w).mean())
            pooled.append(w)
            done += 1
            progress(done, total)
        # Crooks (Delta F = 0): <1/(1 + e^W)> is the same forward and for the time-reversed protocol, whose
        # chains start in equilibrium at theta_T; half as many reversed replays (the statistic is bounded)
        rev_thetas, rev_dt = ref.reversed_protocol(protocol.thetas[:, 0], protocol.dt)
        reverse = ThetaProtocol(thetas=rev_thetas.reshape(-1, 1), dt=rev_dt)
        fermi_f = [ref.fermi_mean(w) for w in pooled]
        fermi_r = []
        for r in range(max(n_rep // 2, 2)):
            rep = replay(energy, target, reverse, mobility=MU, n_chains=n_chains, n_replicas=1,
                         keep_chains=True, seed=20_000 * (p_idx + 1) + r)
            fermi_r.append(ref.fermi_mean(np.asarray(rep.chain_work, float)))
        crooks_f, crooks_r = float(np.mean(fermi_f)), float(np.mean(fermi_r))
        crooks_se = math.sqrt(_se(fermi_f) ** 2 + _se(fermi_r) ** 2)
        w_ref = ref.trap_path_work(protocol.thetas[:, 0], protocol.dt, S, MU)
        pooled = np.concatenate(pooled)
        mean, var, jz = float(np.mean(means)), float(np.mean(variances)), float(np.mean(jarz))
        mean_se, var_se, jz_se = _se(means), _se(variances), _se(jarz)
        theta_T = float(protocol.thetas[-1, 0])
        w_star = bounds.harmonic(S, MU, T, THETA0, theta_T).excess_work
        z = (pooled - pooled.mean()) / pooled.std()
        skew, kurt = float(np.mean(z**3)), float(np.mean(z**4) - 3.0)
        per[label] = {"work": pooled, "w_exact": w_exact, "jarzynski_running": _running_mean(np.exp(-pooled)),
                      "theta_T": theta_T, "thetas": protocol.thetas, "dts": protocol.dt}
        rows.append([label, sched.params.get("scale", float("nan")), theta_T, w_star, w_exact, mean, mean_se,
                     var, var_se, 2 * w_exact, jz, jz_se, skew, kurt])
        tag = label.split(" ")[0]
        checks += [
            Check(f"{tag}: mean work <W> = moments-backend replay", mean, w_exact, 4.0, "se", se=mean_se,
                  reference_name="moments backend (exact N -> infinity) replay of the same protocol",
                  kind="consistency"),
            Check(f"{tag}: moments-backend replay <W> = NumPy recursion of the recorded path", w_exact, w_ref, 1e-10,
                  "rel", reference_name="references.trap_path_work (no library code)", kind="independent"),
            Check(f"{tag}: Var W = 2 <W_ex>", var, 2.0 * w_exact, 4.0, "se", se=var_se,
                  reference_name="2 x exact mean work (Gaussian work + Jarzynski, Delta F = 0)", kind="law"),
            Check(f"{tag}: Jarzynski <exp(-W)> = exp(-Delta F)", jz, 1.0, 4.0, "se", se=jz_se,
                  reference_name="exp(-Delta F) = 1 (Z independent of theta)", kind="law"),
            Check(f"{tag}: Crooks: <1/(1+e^W)> forward = reversed protocol", crooks_f, crooks_r, 4.0, "se",
                  se=crooks_se, reference_name="P_F(W) e^-W = P_R(-W), Delta F = 0; reversed replays from "
                  "equilibrium at theta_T", kind="law"),
        ]
        per[label].update(mean=mean, mean_se=mean_se, var=var, var_se=var_se, jz=jz, jz_se=jz_se)
    opt = per["optimal"]
    numbers = {"W_ex_optimal_exact": opt["w_exact"], "mean_W_optimal": opt["mean"], "mean_W_optimal_se": opt["mean_se"],
               "var_W_optimal": opt["var"], "var_W_optimal_se": opt["var_se"],
               "jarzynski_optimal": opt["jz"], "jarzynski_optimal_se": opt["jz_se"],
               "W_star_optimal": bounds.harmonic(S, MU, T, THETA0, TARGET).excess_work}
    for label, d in per.items():
        if label == "optimal":
            continue
        tag = label.split(" ")[0]
        numbers.update({f"W_ex_{tag}_exact": d["w_exact"], f"mean_W_{tag}": d["mean"], f"mean_W_{tag}_se": d["mean_se"],
                        f"var_W_{tag}": d["var"], f"var_W_{tag}_se": d["var_se"],
                        f"jarzynski_{tag}": d["jz"], f"jarzynski_{tag}_se": d["jz_se"]})
    progress(total, total)
    return ExperimentResult(
        name=NAME,
        data={"per": per, "n_chains": n_chains, "n_replays": n_rep},
        tables=[Table("work_fluctuations_summary",
                      ["protocol", "scale", "theta_T", "W_star_reached", "W_ex_moments", "mean_W", "mean_W_se",
                       "var_W", "var_W_se", "two_W_ex", "jarzynski", "jarzynski_se", "skewness",
                       "excess_kurtosis"], rows)],
        checks=checks,
        numbers=numbers,
        parameters={"variance": S, "mobility": MU, "duration": T, "theta0": THETA0, "target": TARGET,
                    "sampler": "exact", **size, "baseline_final_error": FINAL_ERROR},
        notes=notes + ["Standard errors across independent replays of the recorded protocol (one replica each): "
                       "chain_work holds replica 0's per-chain work only.",
                       "exp(-W) is lognormal (sigma^2 = 2 W_ex): its replay means are skewed and their SE is itself "
                       "uncertain; the Jarzynski check uses 4 SE like the others."],
    )


def _running_mean(values: np.ndarray, n_points: int = 200):
    """(n, mean of the first n values) at log-spaced n."""
    csum = np.cumsum(values)
    n = np.unique(np.geomspace(1, len(values), n_points).astype(int))
    return n, csum[n - 1] / n


def plot(result: ExperimentResult):
    import matplotlib.pyplot as plt

    per = result.data["per"]
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8), gridspec_kw={"width_ratios": [1.25, 1.1, 0.85]})
    ax = axes[0]
    for i, (label, d) in enumerate(per.items()):
        color = f"C{i}"
        w = d["work"]
        lo, hi = np.percentile(w, [0.001, 99.999])
        edges = np.linspace(lo, hi, 80)
        ax.hist(w, bins=edges, density=True, histtype="step", color=color, lw=1.3,
                label=f"{label}: <W> = {d['mean']:.3f}, Var W = {d['var']:.3f}")
        x = np.linspace(lo, hi, 400)
        m, v = d["w_exact"], 2.0 * d["w_exact"]
        ax.plot(x, np.exp(-(x - m) ** 2 / (2 * v)) / math.sqrt(2 * math.pi * v), color=color, ls="--", lw=1,
                label=f"N(W_ex, 2 W_ex), W_ex = {m:.3f} (moments)")
    ax.set_yscale("log")
    ax.set_ylim(bottom=1e-6)
    ax.set_xlabel("per-chain work W  (kT)")
    ax.set_ylabel("probability density  (1/kT)")
    ax.set_title(f"(a) work distributions ({result.data['n_replays']} replays x {result.data['n_chains']:,} chains)")
    ax.legend(fontsize=7, loc="lower center")
    ax = axes[1]
    for i, (label, d) in enumerate(per.items()):
        color = f"C{i}"
        n, est = d["jarzynski_running"]
        ax.plot(n, est, color=color, lw=1.2, label=f"{label}: {d['jz']:.4f} +- {d['jz_se']:.4f}")
        band = np.sqrt(np.expm1(2.0 * d["w_exact"]) / n)
        ax.plot(n, 1 + band, color=color, lw=0.6, ls=":")
        ax.plot(n, 1 - band, color=color, lw=0.6, ls=":")
    ax.axhline(1.0, color="k", lw=0.8, ls="--", label="exp(-Delta F) = 1")
    ax.set_xscale("log")
    ax.set_ylim(0.0, 2.0)
    ax.set_xlabel("number of chains N (pooled over replays)")
    ax.set_ylabel("running estimate <exp(-W)>_N  (dimensionless)")
    ax.set_title("(b) Jarzynski estimate vs number of chains\n(dotted: 1 +- predicted standard error)")
    ax.legend(fontsize=7, loc="upper right")
    ax = axes[2]
    lo = min(d["w_exact"] for d in per.values())
    hi = max(d["w_exact"] for d in per.values())
    x = np.linspace(0.9 * lo, 1.1 * hi, 10)
    ax.plot(x, 2 * x, color="gray", lw=1, ls="--", label="Var W = 2 <W>")
    for i, (label, d) in enumerate(per.items()):
        ax.errorbar(d["mean"], d["var"], xerr=d["mean_se"], yerr=d["var_se"], fmt="o", color=f"C{i}", ms=5,
                    capsize=3, label=f"{label} (replays)")
        ax.plot(d["w_exact"], 2 * d["w_exact"], "x", color=f"C{i}", ms=8)
    ax.plot([], [], "x", color="k", label="moments backend (exact)")
    ax.set_xlabel("mean work <W> = W_ex  (kT)")
    ax.set_ylabel("work variance Var W  (kT^2)")
    ax.set_title("(c) fluctuation-dissipation: Var W = 2 W_ex")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig
