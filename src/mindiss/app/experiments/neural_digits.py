"""Experiment: an MLP energy and a Gaussian-Bernoulli RBM trained on the 8x8 digits; held-out NLL with
its AIS error, second-law bounds on ln Z, and sample grids.

Data: ``datasets.digits`` (1,797 images, dequantised, 20 % held out, standardised per pixel with the
training split's statistics; 64-D). NLL in nats per image in that standardised space; adding the
split's ``log_jacobian`` gives the NLL of the (v + u)/17 pixel space.

Models, both trained here by ``train`` (persistent MALA chains, one move per update, Adam with a
cosine schedule unless stated):

* MLP: E = MLP(64-128-128-1, SiLU)(x) + k |x|^2 / 2, k = 1, its last layer zeroed at theta_0 so that
  p_theta0 = N(0, 1/k) and the chains start in exact equilibrium. ln Z has no closed form: AIS from
  that Gaussian (the last layer scaled from 0 to 1: the geometric path) with R independent runs at two
  numbers of intermediate distributions J1 < J2, and reverse AIS (theta -> base) from the persistent
  chains after extra MALA moves at the final theta (approximate equilibrium draws).
* RBM: 64 visible, 16 hidden, sigma = 1 (sigma is not learned: with standardised data it is the
  data's own per-pixel scale), two recipes (Adam-cosine and SGD-constant). ln Z is exact by
  enumeration of the 2^16 hidden states; AIS (R runs, forward from W = 0) and reverse AIS from exact
  draws (``sample_equilibrium``) are compared with it.

Second law (bidirectional Monte Carlo, ``evaluate.ais_bounds``): ln Z_base - <W_F> <= ln Z <=
ln Z_base + <W_R>; for the RBM the reverse chains are exact draws, so both bounds are rigorous in
expectation, and the exact ln Z must lie between them.

Runtime on one torch thread (measured on the shared 2-core machine at load 4-5): quick mode 36 s CPU
(65 s wall), full mode 127 s CPU (237 s wall); the MLP's training and AIS dominate.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch

from ...backends.samplers import MALA
from ...core.train import train
from ...data import toy as datasets
from ...energies.neural import NeuralEnergy
from ...energies.rbm import GaussianBernoulliRBM
from ...estimators import evaluate
from ...estimators.free_energy import bar, jarzynski
from ...rates import recipes
from ...rates import schedules as S
from ...rates.preconditioners import Adam
from ...threads import single_thread
from .base import Check, ExperimentResult, Table, no_progress

NAME = "neural_digits"
TITLE = "Digits: MLP and RBM energies, held-out NLL by AIS"
CLAIM = ("An MLP energy (64-128-128-1) and a Gaussian-Bernoulli RBM (16 hidden units), trained with persistent "
         "MALA chains on the 8x8 digits, get held-out NLLs with an AIS error bar; their samples are shown beside "
         "held-out digits with their distances to the nearest training digit. For "
         "the RBM, AIS and BAR agree with the exact ln Z (enumeration of the 2^16 hidden states) and the exact value "
         "lies between the second-law bounds of forward and reverse AIS; for the MLP, AIS at two path lengths and "
         "BAR agree within their errors and lie between the forward bound and the (approximate) reverse bound.")
CAPTION = ("8x8 digits (standardised; shown de-standardised in [0, 1]). Top: (a) 64 held-out test digits; (b) MLP "
           "samples: the persistent chains after training plus extra MALA moves at the final theta; (c) RBM "
           "(better recipe by exact held-out NLL): exact draws of p_theta(v), whose per-pixel Gaussian noise has "
           "the data's own scale (sigma = 1); (d) E[v | h] = b + sigma W h for h ~ p(h | v) of each of those "
           "draws (so h is an exact draw of its marginal). Bottom: "
           "(e) RBM ln Z by AIS (R independent runs, +-1 SE), pooled AIS (error: the larger of the delta method's "
           "and the spread of the runs), BAR and the second-law bounds, as "
           "differences from the exact ln Z (enumeration); (f) the same for the MLP at two numbers of "
           "intermediate distributions, as differences from the pooled AIS ln Z at the larger one (no exact "
           "value exists); (g) distance of each sample and each test digit to its nearest training digit. "
           "Everything is trained and evaluated inside the report (no stored weights).")

DATA_SEED = 20251003
MLP_HIDDEN, MLP_CONFINEMENT, MLP_STEP, MLP_LR, MLP_INIT_SEED = (128, 128), 1.0, 0.1, 1e-3, 0
RBM_SIGMA, RBM_STEP, RBM_WEIGHT_STD, RBM_INIT_SEED = 1.0, 0.1, 0.1, 11
#: per-update learning rates of the RBM's two recipes
RBM_RECIPES = {"adam-cosine": 3e-3, "sgd-constant": 1e-2}
SETTINGS = {
    True: dict(rbm_hidden=16, mlp_updates=1000, rbm_updates=400, n_chains=512, extra_moves=100, ais_runs=2,
               ais_chains=128, mlp_intermediate=(100, 300), rbm_intermediate=300, n_quality=360),
    False: dict(rbm_hidden=16, mlp_updates=2000, rbm_updates=2000, n_chains=512, extra_moves=300, ais_runs=4,
                ais_chains=128, mlp_intermediate=(400, 1200), rbm_intermediate=1000, n_quality=360),
}
#: a check of a mean against a bound or another estimate allows this many combined standard errors
N_SE = 4.0


def _mlp_energy() -> NeuralEnergy:
    """The network with its last layer zeroed: f = 0 at theta_0, p_theta0 = N(0, 1/k) exactly."""
    e = NeuralEnergy.mlp(64, MLP_HIDDEN, "silu", MLP_CONFINEMENT, gen=MLP_INIT_SEED)
    last = [m for m in e.module.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
    return e


def _schedule(name: str, lr: float, n_updates: int, dt: float):
    """(schedule, preconditioner) of a recipe at per-update learning rate ``lr`` (rate per unit time lr/dt)."""
    T = n_updates * dt
    if name == "adam-cosine":
        return S.cosine(lr / dt, T), Adam()
    r = recipes.recipe(name, scale=lr / dt, duration=T)
    return r.schedule, r.preconditioner


def _pooled(runs, reverse: bool):
    """ln Z from all runs' work pooled: AIS (Jarzynski on the pooled weights), the second-law bounds and BAR,
    each with its error. The AIS error stated is the larger of the pooled estimator's (delta method) and the
    spread of the R run estimates / sqrt(R): the delta method under-covers when the weights are skewed."""
    wf = torch.cat([r.work_forward for r in runs])
    base = runs[0].log_partition_base
    j = jarzynski(wf)
    spread = (float(np.std([r.log_partition for r in runs], ddof=1) / math.sqrt(len(runs)))
              if len(runs) > 1 else math.nan)
    out = dict(log_partition=base - j.delta_free_energy, log_partition_se=max(j.standard_error, spread)
               if math.isfinite(spread) else j.standard_error, delta_method_se=j.standard_error, spread_se=spread,
               lower=base - float(wf.mean()), lower_se=float(wf.std()) / math.sqrt(wf.numel()),
               ess_fraction=j.diagnostics["ess_fraction"], n_chains=int(wf.numel()),
               upper=math.nan, upper_se=math.nan, bar=math.nan, bar_se=math.nan)
    if reverse:
        wr = torch.cat([r.work_reverse for r in runs])
        b = bar(wf, wr)
        out.update(upper=base + float(wr.mean()), upper_se=float(wr.std()) / math.sqrt(wr.numel()),
                   bar=base - b.delta_free_energy, bar_se=b.standard_error)
    return out


def _ais_runs(energy, theta, cfg, n_intermediate, dt, seed, reverse_draws):
    """R independent ``ais_bounds`` runs; run r reverses from block r of ``reverse_draws`` (None: forward only)."""
    runs, R, C = [], cfg["ais_runs"], cfg["ais_chains"]
    for r in range(R):
        x = None if reverse_draws is None else reverse_draws[r * C:(r + 1) * C]
        runs.append(evaluate.ais_bounds(energy, theta, gen=torch.Generator().manual_seed(seed + r), n_chains=C,
                                        n_intermediate=n_intermediate, dt=dt, x_reverse=x))
    return runs


def _nn_distance(x, ref, chunk=512):
    """Euclidean distance of each row of x to its nearest row of ref (standardised space)."""
    x, ref = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(ref, dtype=torch.float64)
    return torch.cat([torch.cdist(x[i:i + chunk], ref).min(1).values for i in range(0, x.shape[0], chunk)]).numpy()


def _mlp(dd, cfg):
    e = _mlp_energy()
    theta0 = e.theta0()
    n = cfg["mlp_updates"]
    gen = torch.Generator().manual_seed(5)
    chains0 = torch.randn(cfg["n_chains"], 64, generator=gen) / math.sqrt(MLP_CONFINEMENT)
    sched, pre = _schedule("adam-cosine", MLP_LR, n, MLP_STEP)
    start = time.perf_counter()
    res = train(e, dd.train, schedule=sched, preconditioner=pre, theta0=theta0, chains=chains0, sampler="mala",
                n_steps=n, duration=n * MLP_STEP, n_chains=cfg["n_chains"], n_replicas=1, seed=1,
                free_energy="exact", record_every=n, keep_chains=True)
    seconds = time.perf_counter() - start
    theta = torch.as_tensor(res.replica_theta_final[0], dtype=torch.float64)
    # extra moves at the final theta: the chains catch up with the last updates (the samples shown and
    # the reverse-AIS start, approximately in equilibrium)
    mala, x = MALA(), res.final_chains.clone()
    g = torch.Generator().manual_seed(7)
    for _ in range(cfg["extra_moves"]):
        x = mala.step(e, theta, x, dt=MLP_STEP, mobility=1.0, gen=g)
    J2 = cfg["mlp_intermediate"][-1]
    ais = {J: _ais_runs(e, theta, cfg, J, MLP_STEP, 100 + 10 * i, x.to(torch.float64) if J == J2 else None)
           for i, J in enumerate(cfg["mlp_intermediate"])}     # reverse runs (and BAR) at the largest J only
    pooled = {J: _pooled(runs, J == J2) for J, runs in ais.items()}
    lz = evaluate.LogPartitionEstimate(pooled[J2]["log_partition"], pooled[J2]["log_partition_se"], "ais",
                                       ais[J2][0].log_partition_base)
    return {"energy": e, "theta": theta, "res": res, "seconds": seconds, "samples": x, "ais": ais, "pooled": pooled,
            "nll": evaluate.nll(e, theta, dd.test, lz), "nll_train": evaluate.nll(e, theta, dd.train, lz),
            "extra_acceptance": mala.acceptance_rate}


def _rbm(dd, cfg, name, lr):
    rbm = GaussianBernoulliRBM(64, cfg["rbm_hidden"], sigma=RBM_SIGMA)
    theta0 = rbm.init_theta(gen=RBM_INIT_SEED, data=dd.train, weight_std=RBM_WEIGHT_STD)
    n = cfg["rbm_updates"]
    sched, pre = _schedule(name, lr, n, RBM_STEP)
    start = time.perf_counter()
    res = train(rbm, dd.train, schedule=sched, preconditioner=pre, theta0=theta0, sampler="mala", n_steps=n,
                duration=n * RBM_STEP, n_chains=cfg["n_chains"], n_replicas=1, seed=21, free_energy="exact",
                record_every=n, keep_chains=True)    # each record enumerates 2^16 states: first and last only
    seconds = time.perf_counter() - start
    theta = torch.as_tensor(res.replica_theta_final[0], dtype=torch.float64)
    exact = rbm.log_partition(theta)
    gen = torch.Generator().manual_seed(41)
    draws = rbm.sample_equilibrium(theta, cfg["ais_runs"] * cfg["ais_chains"], gen=gen, dtype=torch.float64)
    runs = _ais_runs(rbm, theta, cfg, cfg["rbm_intermediate"], RBM_STEP, 300, draws)
    pooled = _pooled(runs, True)
    lz = evaluate.LogPartitionEstimate(pooled["log_partition"], pooled["log_partition_se"], "ais",
                                       runs[0].log_partition_base)
    # exact draws v for the figure, then h ~ p(h | v) (an exact draw of p(h)) and E[v | h] = b + sigma W h
    W, b, c = rbm.unpack(theta)
    shown = rbm.sample_equilibrium(theta, 64, gen=torch.Generator().manual_seed(43), dtype=torch.float64)
    p_h = torch.sigmoid(c + (shown / RBM_SIGMA) @ W)
    h = (torch.rand(p_h.shape, generator=torch.Generator().manual_seed(44), dtype=torch.float64) < p_h).double()
    return {"energy": rbm, "theta": theta, "res": res, "seconds": seconds, "exact": exact, "runs": runs,
            "pooled": pooled, "nll_exact": evaluate.nll(rbm, theta, dd.test, exact),
            "nll_ais": evaluate.nll(rbm, theta, dd.test, lz), "nll_train": evaluate.nll(rbm, theta, dd.train, exact),
            "nll_initial": evaluate.nll(rbm, theta0, dd.test, rbm.log_partition(theta0)).nll,
            "samples": draws, "shown": shown, "shown_mean": b + RBM_SIGMA * (h @ W.T), "lr": lr}


def run(quick: bool = False, progress=no_progress, *, settings: dict | None = None) -> ExperimentResult:
    """The section; ``settings`` replaces ``SETTINGS[quick]`` (the tests' tiny configuration)."""
    cfg = dict(SETTINGS[bool(quick)] if settings is None else settings)
    total = 1 + len(RBM_RECIPES)
    dd = datasets.digits(gen=DATA_SEED)
    with single_thread():
        rbms = {}
        for i, (name, lr) in enumerate(RBM_RECIPES.items()):
            rbms[name] = _rbm(dd, cfg, name, lr)
            progress(i + 1, total)
        mlp = _mlp(dd, cfg)
        progress(total, total)
        quality = _quality(dd, mlp, rbms, cfg)
    return _result(dd, mlp, rbms, quality, cfg)


def _quality(dd, mlp, rbms, cfg):
    """Nearest-training-digit distances of n samples and of the n first test digits (standardised space)."""
    n = min(cfg["n_quality"], dd.test.shape[0])
    out = {"test": _nn_distance(dd.test[:n], dd.train), "mlp": _nn_distance(mlp["samples"][:n], dd.train)}
    for name, r in rbms.items():
        out[f"rbm {name}"] = _nn_distance(r["samples"][:n], dd.train)
    return out


def _paired(energy_a, theta_a, lz_a, lz_a_se, energy_b, theta_b, lz_b, lz_b_se, x):
    """NLL_a - NLL_b on the same images x: mean of E_a(x) - E_b(x) + ln Z_a - ln Z_b, with the paired
    standard error std(E_a - E_b) / sqrt(n) combined with the two ln Z errors."""
    d = (energy_a.energy(x, theta_a) - energy_b.energy(x, theta_b)).to(torch.float64)
    se = float(d.std()) / math.sqrt(d.numel())
    return float(d.mean()) + lz_a - lz_b, math.sqrt(se ** 2 + lz_a_se ** 2 + lz_b_se ** 2)


def _result(dd, mlp, rbms, quality, cfg) -> ExperimentResult:
    checks, numbers, notes, rows, ais_rows = [], {}, [], [], []
    jac = dd.log_jacobian
    best = min(rbms, key=lambda n: rbms[n]["nll_exact"].nll)
    for name, r in rbms.items():
        p, ex = r["pooled"], r["exact"]
        tag = f"RBM {name}"
        rows.append(["rbm", name, r["res"].n_updates, r["seconds"], r["nll_exact"].nll, r["nll_exact"].nll_se,
                     r["nll_ais"].nll, r["nll_ais"].nll_se, r["nll_exact"].nll + jac, r["nll_train"].nll,
                     ex, p["log_partition"], p["log_partition_se"], p["delta_method_se"], p["spread_se"], p["lower"],
                     p["upper"], p["bar"], p["bar_se"], p["ess_fraction"], r["res"].acceptance_rate])
        for i, run_ in enumerate(r["runs"]):
            ais_rows.append(["rbm", name, cfg["rbm_intermediate"], i, run_.log_partition, run_.log_partition_se,
                             run_.lower, run_.upper, run_.log_partition_bar, run_.diagnostics["ess_fraction"], ex])
        key = f"rbm_{name}"
        numbers.update({f"{key}_heldout_nll_exact": r["nll_exact"].nll,
                        f"{key}_heldout_nll_exact_se": r["nll_exact"].nll_se,
                        f"{key}_heldout_nll_ais": r["nll_ais"].nll, f"{key}_heldout_nll_ais_se": r["nll_ais"].nll_se,
                        f"{key}_log_z_exact": ex, f"{key}_log_z_ais": p["log_partition"],
                        f"{key}_log_z_ais_se": p["log_partition_se"]})
        checks += [
            Check(f"digits: {tag}: pooled AIS ln Z vs exact enumeration of 2^{cfg['rbm_hidden']} hidden states",
                  p["log_partition"], ex, N_SE, "se", se=p["log_partition_se"], reference_name="exact enumeration",
                  kind="independent"),
            Check(f"digits: {tag}: BAR ln Z (forward + reverse from exact draws) vs exact enumeration",
                  p["bar"], ex, N_SE, "se", se=p["bar_se"], reference_name="exact enumeration", kind="independent"),
            Check(f"digits: {tag}: second law, forward: ln Z_base - <W_F> <= exact ln Z",
                  p["lower"], ex, N_SE * p["lower_se"], "le", reference_name="exact ln Z (enumeration)", kind="law"),
            Check(f"digits: {tag}: second law, reverse: ln Z_base + <W_R> >= exact ln Z",
                  p["upper"], ex, N_SE * p["upper_se"], "ge", reference_name="exact ln Z (enumeration)", kind="law"),
            Check(f"digits: {tag}: first law per chain", r["res"].first_law_residual, 0.0, 1e-8, "abs",
                  reference_name="Delta E = W + Q", kind="identity"),
        ]
    Js = cfg["mlp_intermediate"]
    J1, J2 = Js[0], Js[-1]
    P1, P2 = mlp["pooled"][J1], mlp["pooled"][J2]
    for J in Js:
        p = mlp["pooled"][J]
        for i, run_ in enumerate(mlp["ais"][J]):
            ais_rows.append(["mlp", "adam-cosine", J, i, run_.log_partition, run_.log_partition_se, run_.lower,
                             run_.upper, run_.log_partition_bar, run_.diagnostics["ess_fraction"], math.nan])
    rows.append(["mlp", "adam-cosine", mlp["res"].n_updates, mlp["seconds"], math.nan, math.nan, mlp["nll"].nll,
                 mlp["nll"].nll_se, mlp["nll"].nll + jac, mlp["nll_train"].nll, math.nan, P2["log_partition"],
                 P2["log_partition_se"], P2["delta_method_se"], P2["spread_se"], P2["lower"], P2["upper"], P2["bar"],
                 P2["bar_se"], P2["ess_fraction"], mlp["res"].acceptance_rate])
    numbers.update({"mlp_heldout_nll_ais": mlp["nll"].nll, "mlp_heldout_nll_ais_se": mlp["nll"].nll_se,
                    "mlp_log_z_ais": P2["log_partition"], "mlp_log_z_ais_se": P2["log_partition_se"],
                    "mlp_log_z_ais_j1": P1["log_partition"], "mlp_log_z_ais_j1_se": P1["log_partition_se"]})
    checks += [
        Check(f"digits: MLP: pooled AIS ln Z at J = {J1} vs J = {J2} intermediate distributions", P1["log_partition"],
              P2["log_partition"], N_SE, "se", se=math.hypot(P1["log_partition_se"], P2["log_partition_se"]),
              reference_name=f"AIS at J = {J2}", kind="consistency"),
        Check(f"digits: MLP: BAR ln Z (forward + reverse, J = {J2}) vs forward AIS", P2["bar"], P2["log_partition"],
              N_SE, "se", se=math.hypot(P2["bar_se"], P2["log_partition_se"]), reference_name="forward AIS",
              kind="consistency"),
        Check(f"digits: MLP: second law, forward at J = {J1}: ln Z_base - <W_F> <= AIS ln Z (J = {J2})",
              P1["lower"], P2["log_partition"], N_SE * math.hypot(P1["lower_se"], P2["log_partition_se"]), "le",
              reference_name=f"AIS ln Z at J = {J2}", kind="law"),
        Check(f"digits: MLP: second law, reverse at J = {J2} (chains after extra moves): AIS ln Z <= "
              "ln Z_base + <W_R>", P2["upper"], P2["log_partition"],
              N_SE * math.hypot(P2["upper_se"], P2["log_partition_se"]), "ge", reference_name="forward AIS ln Z",
              kind="law"),
        Check("digits: MLP: first law per chain", mlp["res"].first_law_residual, 0.0, 1e-8, "abs",
              reference_name="Delta E = W + Q", kind="identity"),
    ]
    # sample quality against held-out digits: samples are as close to the training digits as test digits
    # are (within 1.5x, median), and not copies of them (at least half the test digits' distance)
    med_test = float(np.median(quality["test"]))
    qrows = [["test digits", med_test, 1.0]]
    for model in [k for k in quality if k != "test"]:
        med = float(np.median(quality[model]))
        qrows.append([model, med, med / med_test])
        numbers[f"nn_distance_ratio_{model.replace(' ', '_')}"] = med / med_test
    m_mlp = float(np.median(quality["mlp"]))
    m_rbm = float(np.median(quality[f"rbm {best}"]))
    checks += [
        Check("digits: MLP samples' median distance to the nearest training digit <= 1.5 x the test digits'",
              m_mlp, 1.5 * med_test, 0.0, "le", reference_name="held-out digits x 1.5", kind="independent"),
        Check("digits: MLP samples are not training copies: median nearest-training distance >= 0.5 x the test "
              "digits'", m_mlp, 0.5 * med_test, 0.0, "ge", reference_name="held-out digits x 0.5", kind="independent"),
    ]
    notes.append(
        f"Held-out NLL (nats per image, standardised space; {dd.test.shape[0]} test digits): MLP "
        f"{mlp['nll'].nll:.2f} +- {mlp['nll'].nll_se:.2f} (ln Z by pooled AIS, J = {J2}, "
        f"{P2['n_chains']} chains, error {P2['log_partition_se']:.3f} = the larger of the delta method's "
        f"{P2['delta_method_se']:.3f} and the spread of {cfg['ais_runs']} runs, {P2['spread_se']:.3f}); RBM "
        + ", ".join(
            f"{n} {r['nll_exact'].nll:.2f} +- {r['nll_exact'].nll_se:.2f} (exact ln Z; AIS {r['nll_ais'].nll:.2f} +- "
            f"{r['nll_ais'].nll_se:.2f}; at theta_0 {r['nll_initial']:.2f})" for n, r in rbms.items())
        + f". The +- on the exact values is the test set's sampling error alone. Add {jac:.2f} for the NLL of the "
        "(v + u)/17 pixel space.")
    rb = rbms[best]
    x = dd.test
    for other in [n for n in rbms if n != best]:
        ro = rbms[other]
        dlt, dse = _paired(ro["energy"], ro["theta"], ro["exact"], 0.0, rb["energy"], rb["theta"], rb["exact"], 0.0, x)
        numbers[f"rbm_nll_{other}_minus_{best}"], numbers[f"rbm_nll_{other}_minus_{best}_se"] = dlt, dse
        notes.append(f"RBM recipes, paired over the test digits (exact ln Z): NLL({other}) - NLL({best}) = "
                     f"{dlt:.3f} +- {dse:.3f} nats.")
    dlt, dse = _paired(mlp["energy"], mlp["theta"], P2["log_partition"], P2["log_partition_se"], rb["energy"],
                       rb["theta"], rb["exact"], 0.0, x)
    numbers["mlp_minus_rbm_nll"], numbers["mlp_minus_rbm_nll_se"] = dlt, dse
    notes.append(f"MLP against the better RBM ({best}), paired over the test digits (MLP ln Z by AIS, its error "
                 f"included): NLL(MLP) - NLL(RBM) = {dlt:.2f} +- {dse:.2f} nats per image.")
    notes.append(f"MLP: {mlp['res'].n_updates} updates in {mlp['seconds']:.0f} s (one core), acceptance "
                 f"{mlp['res'].acceptance_rate:.2f} in training, {mlp['extra_acceptance']:.2f} in the "
                 f"{cfg['extra_moves']} extra moves. Its reverse-AIS start is the chains after those moves, "
                 "approximately (not exactly) in equilibrium, so its upper bound is approximate.")
    notes.append("Sample quality (median distance to the nearest training digit, standardised space; ratio to the "
                 "test digits'): " + ", ".join(f"{m} {d:.2f} ({q:.2f})" for m, d, q in qrows) + ".")
    tables = [
        Table("neural_digits_nll", ["model", "recipe", "n_updates", "seconds", "heldout_nll_exact",
                                    "heldout_nll_exact_se", "heldout_nll_ais", "heldout_nll_ais_se",
                                    "heldout_nll_pixel_space", "train_nll", "log_z_exact", "log_z_ais", "log_z_ais_se",
                                    "log_z_ais_delta_method_se", "log_z_ais_spread_se", "log_z_lower", "log_z_upper",
                                    "log_z_bar", "log_z_bar_se", "ais_ess_fraction", "acceptance"], rows),
        Table("neural_digits_ais_runs", ["model", "recipe", "n_intermediate", "run", "log_z", "log_z_se", "lower",
                                         "upper", "bar", "ess_fraction", "log_z_exact"], ais_rows),
        Table("neural_digits_quality", ["samples", "median_nn_distance", "ratio_to_test"], qrows),
    ]
    params = dict(cfg, data_seed=DATA_SEED, mlp_hidden=list(MLP_HIDDEN), mlp_confinement=MLP_CONFINEMENT,
                  mlp_step=MLP_STEP, mlp_lr=MLP_LR, rbm_sigma=RBM_SIGMA, rbm_step=RBM_STEP,
                  rbm_recipes=RBM_RECIPES, rbm_weight_std=RBM_WEIGHT_STD)
    params["mlp_intermediate"] = list(Js)
    numbers = {k: float(v) for k, v in numbers.items() if math.isfinite(v)}
    return ExperimentResult(name=NAME, data={"digits": dd, "mlp": mlp, "rbms": rbms, "best_rbm": best,
                                             "quality": quality, "cfg": cfg},
                            tables=tables, checks=checks, numbers=numbers, parameters=params, notes=notes)


def _mosaic(images, k=8):
    """k x k tiles of 8x8 images with a 1-pixel white gap."""
    imgs = np.asarray(images)[: k * k]
    out = np.zeros((k * 9 - 1, k * 9 - 1))
    for i, im in enumerate(imgs):
        r, c = divmod(i, k)
        out[r * 9:r * 9 + 8, c * 9:c * 9 + 8] = im
    return out


def _ais_panel(ax, entries, ref, title):
    """entries: [(label, value, se, marker, color)] drawn as value - ref."""
    entries = [e for e in entries if math.isfinite(e[1])]
    for i, (label, v, se, marker, color) in enumerate(entries):
        ax.errorbar(v - ref, i, xerr=se if math.isfinite(se) else None, fmt=marker, color=color, capsize=2)
    ax.set_yticks(range(len(entries)), [e[0] for e in entries], fontsize=6)
    ax.axvline(0.0, color="0.5", lw=0.8)
    ax.invert_yaxis()
    ax.set_title(title, fontsize=8)
    ax.tick_params(labelsize=6)


def plot(result: ExperimentResult):
    import matplotlib.pyplot as plt

    d = result.data
    dd, mlp, rbms, best, quality, cfg = d["digits"], d["mlp"], d["rbms"], d["best_rbm"], d["quality"], d["cfg"]
    fig = plt.figure(figsize=(16, 10))
    gs = fig.add_gridspec(2, 4, height_ratios=[1.15, 0.85])
    r = rbms[best]
    panels = [("(a) held-out test digits", dd.test),
              (f"(b) MLP samples: NLL {mlp['nll'].nll:.1f} +- {mlp['nll'].nll_se:.1f} (AIS)", mlp["samples"]),
              (f"(c) RBM {best}: exact draws, NLL {r['nll_exact'].nll:.1f} (exact)", r["shown"]),
              (f"(d) RBM {best}: E[v | h] of those draws", r["shown_mean"])]
    for i, (title, x) in enumerate(panels):
        ax = fig.add_subplot(gs[0, i])
        ax.imshow(_mosaic(dd.to_pixels(x[:64]).numpy()), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    entries = []
    for k, (name, rr) in enumerate(rbms.items()):
        c = f"C{k}"
        entries += [(f"{name}: AIS run {i}", run_.log_partition, run_.log_partition_se, "o", c)
                    for i, run_ in enumerate(rr["runs"])]
        p = rr["pooled"]
        entries += [(f"{name}: AIS pooled", p["log_partition"], p["log_partition_se"], "s", c),
                    (f"{name}: BAR", p["bar"], p["bar_se"], "D", c),
                    (f"{name}: lower ln Z_0 - <W_F>", p["lower"], p["lower_se"], ">", c),
                    (f"{name}: upper ln Z_0 + <W_R>", p["upper"], p["upper_se"], "<", c)]
    ax = fig.add_subplot(gs[1, 0])
    # each recipe against its own exact ln Z
    shifted = []
    for name, rr in rbms.items():
        shifted += [(lab, v - rr["exact"], se, m, c) for (lab, v, se, m, c) in entries if lab.startswith(name)]
    _ais_panel(ax, shifted, 0.0, f"(e) RBM: ln Z - exact ln Z (J = {cfg['rbm_intermediate']})")
    ax.set_xlabel("nats", fontsize=7)
    Js = cfg["mlp_intermediate"]
    ref = mlp["pooled"][Js[-1]]["log_partition"]
    entries = []
    for k, J in enumerate(Js):
        c = f"C{k + 2}"
        entries += [(f"J={J}: AIS run {i}", run_.log_partition, run_.log_partition_se, "o", c)
                    for i, run_ in enumerate(mlp["ais"][J])]
        p = mlp["pooled"][J]
        entries += [(f"J={J}: AIS pooled", p["log_partition"], p["log_partition_se"], "s", c),
                    (f"J={J}: BAR", p["bar"], p["bar_se"], "D", c),
                    (f"J={J}: lower", p["lower"], p["lower_se"], ">", c),
                    (f"J={J}: upper (approx.)", p["upper"], p["upper_se"], "<", c)]
    ax = fig.add_subplot(gs[1, 1])
    _ais_panel(ax, entries, ref, f"(f) MLP: ln Z - pooled AIS at J = {Js[-1]} ({ref:.2f})")
    ax.set_xlabel("nats", fontsize=7)
    ax = fig.add_subplot(gs[1, 2:])
    bins = np.linspace(0.0, max(float(np.percentile(v, 99)) for v in quality.values()), 40)
    for k, (label, v) in enumerate(quality.items()):
        ax.hist(v, bins=bins, histtype="step", lw=1.5 if label == "test" else 1.0,
                color="k" if label == "test" else f"C{k}", label=f"{label} (median {np.median(v):.2f})")
    ax.set(xlabel="distance to the nearest training digit (standardised space)", ylabel="count",
           title="(g) nearest-training-digit distance")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
