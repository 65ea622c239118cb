"""What a finished run reports: per-replica summaries, Delta F estimates and the ``TrainResult``
(means over replicas with standard errors, caveats in ``notes``)."""
from __future__ import annotations

import math

import numpy as np
import torch

from .. import backends as _backends
from ..estimators import bounds as _bounds
from ..backends.dispatch import DETERMINISTIC
from ..energies.base import HarmonicTrap
from .ledger import delta_free_energy
from .results import History, TrainResult


def _estimate_free_energy(out: dict, run, method, sampler, mobility, dts, seed) -> None:
    """Fill Delta F (and its error) through the one Delta F dispatch (``ledger.delta_free_energy``);
    the exact value, where one exists, is the backend's (closed form, quadrature or the grid)."""
    st = run.state
    gen = torch.Generator().manual_seed((seed * 31 + 17) % (2**63))
    dt = min(float(np.max(dts)) if len(dts) else 0.01, 0.01) or 0.01
    # an exact value, where the backend has one, beats any estimator the run asked for
    exact_known = math.isfinite(out["delta_free_energy"])
    est = delta_free_energy(run.energy, run.theta0.cpu(), run.theta.cpu(), method="exact" if exact_known else method,
                            exact=out["delta_free_energy"], work=st.work.cpu() if st.particles else None,
                            x0=None if run.x0 is None else run.x0.cpu(), gen=gen, dt=dt, mobility=mobility)
    out["free_energy_method"] = est.method
    if math.isfinite(est.delta_free_energy):
        out["delta_free_energy"] = est.delta_free_energy
        out["delta_free_energy_se"] = est.delta_free_energy_se
    else:
        out["delta_free_energy_se"] = 0.0


def _finish(run, energy, keep: bool, keep_chains: bool) -> dict:
    """The compact summary of a finished replica (all that the result needs)."""
    st, theta = run.state, run.theta
    exact = not st.particles   # (sharded chains gather .x only when kept)
    out = {"work": st.mean_work(), "delta_free_energy": _backends.free_energy(energy, theta, st) - run.fe0,
           "loss0": run.loss0, "loss_true_change": _backends.loss(energy, run.data, theta, st) - run.loss0,
           "loss_approx_change": run.loss_approx, "first_law": st.first_law_residual(energy, theta),
           "theta_final": theta.cpu().numpy().copy(), "moments": exact,
           "preconditioner": None if run.pre is None else run.pre.report(),
           "taus": [{"update": k, "tau": t, "method": m} for k, t, m in run.taus]}
    if keep:
        kl0, kl1, ep = _backends.kl_and_entropy(st, energy, theta)
        out.update(history=History(_columns(energy), _history_values(run)), thetas=run.thetas,
                   kl_initial=kl0, kl_final=kl1, entropy_production=ep,
                   chain_work=st.work.cpu().numpy().copy() if keep_chains and not exact else None,
                   final_chains=st.x.cpu().clone() if keep_chains and not exact else None)
    return out


def _history_values(run) -> np.ndarray:
    """The recorded rows; a streamed history is moved into place atomically and mapped read-only."""
    if run.history_file is None:
        return run.rows[: run.n_rows]
    import os

    from .state import partial_path

    run.rows.flush()
    run.rows = None
    os.replace(partial_path(run.history_file), run.history_file)
    return np.load(run.history_file, mmap_mode="r")


def _columns(energy) -> tuple:
    return ("update", "t", "lr", "dt", *[f"theta_{i}" for i in range(energy.n_params)],
            *[f"chain_mean_{i}" for i in range(energy.dim)], "work", "heat", "delta_free_energy",
            "excess_work", "loss_true", "loss_approx", "loss_approx_change")


def _mean_se(values):
    v = np.asarray(values, float)
    if len(v) < 2:
        return float(v[0]), math.nan
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v)))


def _notes(energy, sampler, dts, mobility, n_replicas, deterministic) -> list:
    """Caveats that qualify the reported figures; printed by the CLI and kept in result.json."""
    notes = []
    dt = float(np.max(dts)) if len(dts) else 0.0
    if sampler.name == "euler":
        ratio = ""
        if isinstance(energy, HarmonicTrap):
            h = mobility * dt / energy.variance
            ratio = f"; on this trap the stationary variance is s / (1 - mu dt / 2s) = {1 / (1 - h / 2):.6g} s"
        notes.append("Euler-Maruyama does not leave p_theta invariant: work, heat and Jarzynski carry an "
                     f"O(dt) bias (mu dt = {mobility * dt:.3g}){ratio}.")
    if sampler.name == "mala":
        notes.append("MALA keeps p_theta exactly invariant but its dynamics are O(dt): the mean work of a "
                     f"driven run is biased at O(dt) (mu dt = {mobility * dt:.3g}); acceptance rate "
                     f"{sampler.acceptance_rate:.3f}.")
    if not deterministic and n_replicas < 2:
        notes.append("one replica: no error estimate (theta noise is shared by all chains; use n_replicas >= 2).")
    return notes


def _summarise(runs, energy, theta0, dts, total_time, backend, sampler, n_chains, mobility, temperature_kelvin,
               equilibrium_start) -> TrainResult:
    works = [r["work"] for r in runs]
    dfe = [r["delta_free_energy"] for r in runs]
    excess = [w - f for w, f in zip(works, dfe)]
    dl_true = [r["loss_true_change"] for r in runs]
    dl_approx = [r["loss_approx_change"] for r in runs]
    ident = [abs(a - b - e) for a, b, e in zip(dl_true, dl_approx, excess)]
    deterministic = backend in DETERMINISTIC
    work, work_se = _mean_se(works)
    ex, ex_se = _mean_se(excess)
    if deterministic:
        work_se = ex_se = 0.0
    finals = np.asarray([r["theta_final"] for r in runs])
    theta_final = finals.mean(axis=0)
    theta_final_se = (finals.std(axis=0, ddof=1) / math.sqrt(len(finals)) if len(finals) > 1
                      else np.full(finals.shape[1], 0.0 if deterministic else math.nan))
    bound = None
    if isinstance(energy, HarmonicTrap) and equilibrium_start:
        bound = _bounds.harmonic(energy.variance, mobility, total_time,
                                 theta0.cpu().numpy(), theta_final).excess_work
    r0 = runs[0]
    return TrainResult(
        work=work, work_se=work_se, excess_work=ex, excess_work_se=ex_se,
        delta_free_energy=float(np.mean(dfe)), loss_true_change=float(np.mean(dl_true)),
        loss_approx_change=float(np.mean(dl_approx)),
        final_loss=float(np.mean([r["loss0"] for r in runs]) + np.mean(dl_true)),
        theta0=theta0.cpu().tolist(), theta_final=theta_final.tolist(),
        theta_final_se=theta_final_se.tolist(), n_updates=len(dts),
        n_chains=math.inf if r0["moments"] else n_chains, n_replicas=len(runs), backend=backend,
        sampler=sampler.name, duration=total_time, bound=bound,
        identity1_residual=float(max(ident)), first_law_residual=float(max(r["first_law"] for r in runs)),
        kl_initial=r0["kl_initial"], kl_final=r0["kl_final"], entropy_production=r0["entropy_production"],
        acceptance_rate=sampler.acceptance_rate if sampler.name == "mala" and backend == "particles" else None,
        replica_excess_work=[float(e) for e in excess], replica_theta_final=finals.tolist(),
        notes=(_notes(energy, sampler, dts, mobility, len(runs), deterministic) if backend != "fokker_planck" else
               ["Fokker-Planck backend: the chain density moves by the exact generator on the grid (the "
                "sampler is not used); errors are the grid's O(h^2)."]), history=r0["history"],
        thetas=r0["thetas"], dts=np.asarray(dts, float), temperature_kelvin=temperature_kelvin,
        chain_work=r0["chain_work"], final_chains=r0["final_chains"],
        preconditioner=r0["preconditioner"], tau_estimates=r0["taus"],
        delta_free_energy_se=float(math.sqrt(np.mean([r.get("delta_free_energy_se", 0.0) ** 2 for r in runs])
                                             / len(runs))),
        free_energy_method=r0.get("free_energy_method", "exact"),
    )
