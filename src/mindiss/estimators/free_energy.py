"""Free-energy differences Delta F = F(theta_1) - F(theta_0) = -ln(Z_1 / Z_0), in kT, with errors.

* ``jarzynski``: Delta F = -ln <exp(-W)> from work done on chains that start in equilibrium.
* ``bar``: Bennett acceptance ratio from forward (0 -> 1) and reverse (1 -> 0) work (Crooks).
* ``thermodynamic_integration``: Delta F = int <d_theta E>_{p_theta} . dtheta along a path;
  ``thermodynamic_integration_sampled`` estimates the integrand with chains.
* ``ais``: annealed importance sampling on the linear path in theta: Jarzynski on the work of the
  Crooks-discretised switching protocol (``switching_work``), log weights = -W.

Conventions: kT = 1, F = -ln Z, work done on the chains is positive, so
ln Z_1 - ln Z_0 = -Delta F (``FreeEnergyEstimate.log_partition_ratio``). Estimates are float64;
every draw goes through the caller's ``gen``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ..errors import InputError, require_positive, require_positive_int
from ..backends.samplers import make_sampler


@dataclass(frozen=True)
class FreeEnergyEstimate:
    """Delta F = F(theta_1) - F(theta_0) in kT, its standard error and the estimator's diagnostics.

    ``n_samples``: work values (Jarzynski, AIS), n_F + n_R (BAR), path points x chains x steps
    (sampled TI) or path points (TI from given means).
    """

    delta_free_energy: float
    standard_error: float
    method: str
    n_samples: int
    diagnostics: dict = field(default_factory=dict)

    @property
    def delta_free_energy_se(self) -> float:
        """The standard error, named as the style guide's ``_se`` twin."""
        return self.standard_error

    @property
    def log_partition_ratio(self) -> float:
        """ln Z_1 - ln Z_0 = -Delta F."""
        return -self.delta_free_energy


# -- input checks ---------------------------------------------------------------------------
def _samples(name: str, values, min_size: int = 2) -> np.ndarray:
    if torch.is_tensor(values):
        values = values.detach().cpu()
    try:
        a = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be an array of numbers, got {type(values).__name__}") from None
    if a.ndim != 1:
        raise InputError(f"{name} must be one-dimensional (one value per chain), got shape {a.shape}")
    if a.size < min_size:
        raise InputError(f"{name} needs at least {min_size} samples, got {a.size}")
    bad = int(np.count_nonzero(~np.isfinite(a)))
    if bad:
        raise InputError(f"{name} has {bad} non-finite values (NaN or inf) out of {a.size}")
    return a


def _array(name: str, values) -> np.ndarray:
    if isinstance(values, (list, tuple)) and values and all(torch.is_tensor(v) for v in values):
        values = torch.stack([v.detach().cpu().to(torch.float64) for v in values])
    try:
        return np.asarray(torch.as_tensor(values, dtype=torch.float64).detach().cpu(), dtype=np.float64)
    except (TypeError, ValueError, RuntimeError):
        raise InputError(f"{name} must be an array of numbers, got {type(values).__name__}") from None


def _n_blocks(n_blocks, n: int):
    if n_blocks is None:
        return None
    if isinstance(n_blocks, bool) or not isinstance(n_blocks, (int, np.integer)) or not 2 <= n_blocks <= n:
        raise InputError(f"n_blocks must be None or an integer in [2, {n}] (the number of samples), got {n_blocks!r}")
    return int(n_blocks)


def _theta(name: str, energy, theta) -> torch.Tensor:
    try:
        th = torch.as_tensor(theta, dtype=torch.float64).detach().cpu().reshape(-1)
    except (TypeError, ValueError, RuntimeError):
        raise InputError(f"{name} must be a vector of numbers, got {theta!r}") from None
    if th.numel() != energy.n_params or not bool(torch.isfinite(th).all()):
        raise InputError(f"{name} must be {energy.n_params} finite numbers, got {th.tolist()}")
    msg = energy.check_theta(th)
    if msg:
        raise InputError(f"{name} = {th.tolist()} is outside the family's domain: {msg}")
    return th


def _chains(energy, theta, x0, n_chains: int, gen) -> torch.Tensor:
    if not isinstance(gen, torch.Generator):
        raise InputError(f"gen must be a torch.Generator, got {type(gen).__name__}")
    if x0 is None:
        try:
            return energy.sample_equilibrium(theta, n_chains, gen=gen, dtype=torch.float64)
        except NotImplementedError:
            raise InputError(f"x0 is required: {type(energy).__name__} cannot draw exact equilibrium samples") from None
    x = torch.as_tensor(x0).detach().to(torch.float64).clone()
    if tuple(x.shape) != (n_chains, energy.dim) or not bool(torch.isfinite(x).all()):
        raise InputError(f"x0 must be finite with shape ({n_chains}, {energy.dim}), got {tuple(x.shape)}")
    return x


# -- work-based estimators ------------------------------------------------------------------
def jarzynski(work, *, n_blocks=None, bias_correct: bool = False) -> FreeEnergyEstimate:
    """Delta F = -ln <exp(-W)> = -(logsumexp(-W) - ln N), in kT (Jarzynski 1997).

    ``work``: (N,) work done on each chain by a protocol theta_0 -> theta_1, chains started in
    equilibrium at theta_0. With weights w_i = exp(-(W_i - min W)):

    * se_stat = s(w_bar) / w_bar (delta method on ln w_bar). s(w_bar) = std(w) / sqrt(N) for
      independent samples (``n_blocks=None``), or std(block means) / sqrt(B) over B contiguous
      blocks for a correlated sequence.
    * bias = E[estimate] - Delta F ~= Var(w_bar) / (2 <w>^2) = se_stat^2 / 2 > 0 to first order
      (Zuckerman & Woolf 2002; Gore, Ritort & Bustamante 2003): the estimate is too high.
      ``bias_correct=True`` subtracts it. ``standard_error = sqrt(se_stat^2 + bias^2)``.
    * ess = (sum w)^2 / sum w^2; bias ~= 1 / (2 ess) for independent samples.

    Valid regime: ess >> 1 and N >> exp(Var W) for Gaussian work. Beyond it the dominant low-work
    tail goes unsampled: se and bias come out too small and the error bar under-covers, through the
    skewness of exp(-W) more than through the bias (Gaussian W with sigma_W = 1 kT, N = 100: the
    1.96-sigma interval covers ~91 %; sigma_W = 0.5 kT, N = 300: ~95 %).
    """
    w_ = _samples("work", work)
    n = w_.size
    nb = _n_blocks(n_blocks, n)
    w_min = float(w_.min())
    w = np.exp(-(w_ - w_min))
    w_bar = float(w.mean())
    log_mean = math.log(w_bar) - w_min  # = logsumexp(-W) - ln N
    if nb is None:
        s_mean = float(w.std(ddof=1)) / math.sqrt(n)
    else:
        length = n // nb
        means = w[: nb * length].reshape(nb, length).mean(axis=1)
        s_mean = float(means.std(ddof=1)) / math.sqrt(nb)
    se = s_mean / w_bar
    bias = 0.5 * se * se
    ess = float(w.sum() ** 2 / (w * w).sum())
    delta_f = -log_mean - (bias if bias_correct else 0.0)
    diag = {"ess": ess, "ess_fraction": ess / n, "bias": bias, "bias_corrected": bool(bias_correct),
            "se_statistical": se, "n_blocks": nb if nb is not None else n, "mean_work": float(w_.mean()),
            "mean_dissipated_work": float(w_.mean()) + log_mean}
    return FreeEnergyEstimate(delta_f, math.hypot(se, bias), "jarzynski", n, diag)


def _logsumexp(a: np.ndarray) -> float:
    """ln sum_i exp(a_i), shifted by max a (scipy.special.logsumexp costs ~30x more per call)."""
    m = float(a.max())
    return m + math.log(float(np.exp(a - m).sum()))


def _log_fermi(z: np.ndarray) -> np.ndarray:
    """ln f(z), f(z) = 1 / (1 + e^z), without overflow."""
    return -np.logaddexp(0.0, z)


def bar(work_forward, work_reverse) -> FreeEnergyEstimate:
    """Delta F solving sum_i f(M + W_F,i - Delta F) = sum_j f(-M + W_R,j + Delta F), in kT.

    Bennett (1976) in Shirts et al. (PRL 91, 140601, 2003) form: f(z) = 1 / (1 + e^z),
    M = ln(n_F / n_R). ``work_forward``: work on chains started in equilibrium at theta_0 and
    driven to theta_1; ``work_reverse``: started at theta_1 and driven back to theta_0 (Crooks:
    P_F(W) / P_R(-W) = exp(W - Delta F)). Solved with brentq on ln sum f_F - ln sum f_R, which
    increases monotonically in Delta F. Asymptotic variance (Shirts et al. 2003; pymbar 'BAR'):

        se^2 = <f_F^2> / (n_F <f_F>^2) + <f_R^2> / (n_R <f_R>^2) - 1 / n_F - 1 / n_R

    with f_F = f(M + W_F - Delta F), f_R = f(-M + W_R + Delta F). Independent samples assumed.
    """
    from scipy.optimize import brentq  # lazy: scipy.optimize costs ~1 s at import

    wf, wr = _samples("work_forward", work_forward), _samples("work_reverse", work_reverse)
    nf, nr = wf.size, wr.size
    m = math.log(nf / nr)

    def g(df):
        return float(_logsumexp(_log_fermi(m + wf - df)) - _logsumexp(_log_fermi(-m + wr + df)))

    lo, hi = min(wf.min(), -wr.max()) - 1.0, max(wf.max(), -wr.min()) + 1.0
    width = hi - lo + 1.0
    for _ in range(200):
        if g(lo) < 0.0:
            break
        lo, width = lo - width, 2.0 * width
    for _ in range(200):
        if g(hi) > 0.0:
            break
        hi, width = hi + width, 2.0 * width
    delta_f = float(brentq(g, lo, hi, xtol=1e-13, rtol=4 * np.finfo(float).eps, maxiter=500))
    lf, lr = _log_fermi(m + wf - delta_f), _log_fermi(-m + wr + delta_f)
    ratio_f = math.exp(_logsumexp(2 * lf) + math.log(nf) - 2 * _logsumexp(lf))  # <f^2> / <f>^2
    ratio_r = math.exp(_logsumexp(2 * lr) + math.log(nr) - 2 * _logsumexp(lr))
    var = max(ratio_f / nf + ratio_r / nr - 1.0 / nf - 1.0 / nr, 0.0)
    jf = float(-(_logsumexp(-wf) - math.log(nf)))
    jr = float(_logsumexp(-wr) - math.log(nr))
    diag = {"n_forward": nf, "n_reverse": nr, "jarzynski_forward": jf, "jarzynski_reverse": jr,
            "mean_dissipated_work_forward": float(wf.mean()) - delta_f,
            "mean_dissipated_work_reverse": float(wr.mean()) + delta_f}
    return FreeEnergyEstimate(delta_f, math.sqrt(var), "bar", nf + nr, diag)


# -- thermodynamic integration --------------------------------------------------------------
def _trapezoid_weights(thetas: np.ndarray, idx: list[int]) -> np.ndarray:
    """c (K, P) with T = sum_k c_k . g_k = sum_segments (g_a + g_b)/2 . (theta_b - theta_a) on idx."""
    c = np.zeros_like(thetas)
    half = 0.5 * np.diff(thetas[idx], axis=0)
    c[idx[:-1]] += half
    c[idx[1:]] += half
    return c


def thermodynamic_integration(thetas, mean_grad_theta, *, se=None) -> FreeEnergyEstimate:
    """Delta F = int_path <d_theta E>_{p_theta} . dtheta (since dF/dtheta = <d_theta E>), in kT.

    ``thetas`` (K, P): path points, theta_0 first, K >= 2. ``mean_grad_theta`` (K, P): g_k =
    <d_theta E> at theta_k, or (B, K, P): B independent replicas (e.g. chain groups) of g.
    Trapezoid T_h = sum_k (g_k + g_{k+1}) / 2 . (theta_{k+1} - theta_k); T_2h the same on every
    other point. With K odd and equal steps the estimate is Simpson's S = (4 T_h - T_2h) / 3,
    otherwise T_h; ``diagnostics['discretisation_error'] = |T_h - T_2h| / 3`` (the error of T_h,
    an upper estimate for S; it also holds noise from a sampled integrand; not in standard_error).
    Both rules are linear, Delta F = sum_k c_k . g_k, so with per-point errors ``se`` (K, P):
    se^2 = sum_{k,p} c_kp^2 se_kp^2 (points and components independent); with replicas:
    se = std of the B per-replica integrals / sqrt(B) (keeps all correlations, B - 1 dof).
    Without either, standard_error is NaN (unknown).
    """
    th, g = _array("thetas", thetas), _array("mean_grad_theta", mean_grad_theta)
    scalar = th.ndim == 1  # a one-parameter path given as (K,): g (K,) or (B, K), se (K,)
    if scalar:
        th, g = th[:, None], g[..., None]
    if th.ndim != 2 or th.shape[0] < 2 or not np.all(np.isfinite(th)):
        raise InputError(f"thetas must be a finite (K, P) array with K >= 2 path points, got shape {th.shape}")
    if g.shape[-2:] != th.shape or g.ndim not in (2, 3) or not np.all(np.isfinite(g)):
        raise InputError(f"mean_grad_theta must be finite with shape {th.shape} or (B, *{th.shape}), got {g.shape}")
    k = th.shape[0]
    fine = _trapezoid_weights(th, list(range(k)))
    coarse_idx = list(range(0, k, 2)) + ([k - 1] if (k - 1) % 2 else [])
    coarse = _trapezoid_weights(th, coarse_idx)
    steps = np.diff(th, axis=0)
    simpson = k % 2 == 1 and k >= 3 and np.allclose(steps, steps[0], rtol=1e-9, atol=1e-12 * np.abs(th).max())
    c = (4.0 * fine - coarse) / 3.0 if simpson else fine
    g_mean = g if g.ndim == 2 else g.mean(axis=0)
    t_h, t_2h = float(np.sum(fine * g_mean)), float(np.sum(coarse * g_mean))
    delta_f = float(np.sum(c * g_mean))
    diag = {"rule": "simpson" if simpson else "trapezoid", "trapezoid": t_h,
            "discretisation_error": abs(t_h - t_2h) / 3.0 if k >= 3 else float("nan"), "n_points": k}
    if g.ndim == 3:
        if se is not None:
            raise InputError("se must be None when mean_grad_theta holds replicas (B, K, P): their spread is the error")
        b = g.shape[0]
        if b < 2:
            raise InputError(f"mean_grad_theta needs at least 2 replicas along its first axis, got {b}")
        per_rep = np.einsum("kp,bkp->b", c, g)
        err = float(per_rep.std(ddof=1)) / math.sqrt(b)
        diag.update(n_blocks=b, dof=b - 1)
    elif se is None:
        err = float("nan")
    else:
        s = _array("se", se)
        s = s[..., None] if scalar else s
        if s.shape != g.shape or not np.all(np.isfinite(s)) or np.any(s < 0):
            raise InputError(f"se must be finite and >= 0 with the shape of mean_grad_theta {g.shape}, "
                             f"got shape {np.shape(se)}")
        err = float(math.sqrt(np.sum((c * s) ** 2)))
    return FreeEnergyEstimate(delta_f, err, "thermodynamic_integration", k, diag)


def sample_grad_theta_path(energy, thetas, *, n_chains, n_steps, dt, mobility=1.0, gen, sampler="mala",
                           n_blocks=None, n_burn=None, x0=None) -> torch.Tensor:
    """g_bk = mean over the chains of group b and n_steps moves at theta_k of d_theta E, (B, K, P) float64.

    At each theta_k: n_burn moves (default n_steps // 4, discarded), then n_steps moves with
    d_theta E recorded after each. Chains start from exact draws of p_theta_0 (or ``x0``) and are
    carried from theta_{k-1} to theta_k. The n_chains chains are split into B = n_blocks contiguous
    groups (default: one chain per group; the last n_chains mod B chains are unused); groups are
    independent, so their paths are replicas.
    """
    arr = _array("thetas", thetas)
    arr = arr[:, None] if arr.ndim == 1 and energy.n_params == 1 else arr
    if arr.ndim != 2 or arr.shape[0] < 2:
        raise InputError(f"thetas must have shape (K, {energy.n_params}) with K >= 2 points, got {arr.shape}")
    th = torch.stack([_theta(f"thetas[{i}]", energy, t) for i, t in enumerate(arr)])
    n_chains, n_steps = require_positive_int("n_chains", n_chains), require_positive_int("n_steps", n_steps)
    if n_chains < 2:
        raise InputError(f"n_chains must be >= 2 (the error comes from the spread between chains), got {n_chains}")
    dt, mobility = require_positive("dt", dt), require_positive("mobility", mobility)
    nb = n_chains if n_blocks is None else _n_blocks(n_blocks, n_chains)
    n_burn = n_steps // 4 if n_burn is None else n_burn
    if isinstance(n_burn, bool) or not isinstance(n_burn, int) or n_burn < 0:
        raise InputError(f"n_burn must be an integer >= 0, got {n_burn!r}")
    s = make_sampler(sampler)
    s.check(energy)
    x = _chains(energy, th[0], x0, n_chains, gen)
    length = n_chains // nb
    out = torch.empty((nb, th.shape[0], energy.n_params), dtype=torch.float64)
    for k, theta in enumerate(th):
        for _ in range(n_burn):
            x = s.step(energy, theta, x, dt=dt, mobility=mobility, gen=gen)
        acc = torch.zeros((n_chains, energy.n_params), dtype=torch.float64)
        for _ in range(n_steps):
            x = s.step(energy, theta, x, dt=dt, mobility=mobility, gen=gen)
            acc += energy.grad_theta(x, theta).to(torch.float64)
        out[:, k] = acc[: nb * length].reshape(nb, length, -1).mean(dim=1) / n_steps
    if not bool(torch.isfinite(out).all()):
        raise InputError(f"the chains diverged (non-finite d_theta E): reduce dt = {dt}")
    return out


def thermodynamic_integration_sampled(energy, thetas, *, n_chains, n_steps, dt, mobility=1.0, gen,
                                      sampler="mala", n_blocks=None, n_burn=None, x0=None) -> FreeEnergyEstimate:
    """Delta F = int <d_theta E> . dtheta with the integrand from chains (``sample_grad_theta_path``)
    and the error from the spread of the independent chain groups (``thermodynamic_integration``)."""
    s = make_sampler(sampler)
    g = sample_grad_theta_path(energy, thetas, n_chains=n_chains, n_steps=n_steps, dt=dt, mobility=mobility,
                               gen=gen, sampler=s, n_blocks=n_blocks, n_burn=n_burn, x0=x0)
    est = thermodynamic_integration(_array("thetas", thetas).reshape(g.shape[1:]), g)
    diag = dict(est.diagnostics, acceptance_rate=getattr(s, "acceptance_rate", float("nan")))
    return replace(est, n_samples=n_chains * n_steps * g.shape[1], diagnostics=diag)


# -- annealed importance sampling -----------------------------------------------------------
def switching_work(energy, theta_start, theta_end, *, n_chains, n_intermediate, n_mcmc=1, dt, mobility=1.0,
                   gen, sampler="mala", x0=None) -> torch.Tensor:
    """W = sum_{j=1}^{J+1} [E_{theta_j}(x_{j-1}) - E_{theta_{j-1}}(x_{j-1})] per chain, (N,) float64, kT.

    theta_j = theta_start + j / (J + 1) (theta_end - theta_start), J = n_intermediate. Crooks
    split: each parameter update at frozen chains adds its energy change to W, then n_mcmc sampler
    moves at theta_j (j = 1..J) take x_{j-1} to x_j. Chains start from exact draws of
    p_theta_start (or ``x0``, which must be such draws for Jarzynski / AIS to hold).
    """
    th0, th1 = _theta("theta_start", energy, theta_start), _theta("theta_end", energy, theta_end)
    n_chains = require_positive_int("n_chains", n_chains)
    n_int = n_intermediate
    if isinstance(n_int, bool) or not isinstance(n_int, int) or n_int < 0:
        raise InputError(f"n_intermediate must be an integer >= 0, got {n_intermediate!r}")
    n_mcmc = require_positive_int("n_mcmc", n_mcmc)
    dt, mobility = require_positive("dt", dt), require_positive("mobility", mobility)
    s = make_sampler(sampler)
    s.check(energy)
    x = _chains(energy, th0, x0, n_chains, gen)
    work = torch.zeros(n_chains, dtype=torch.float64)
    old = th0
    for j in range(1, n_int + 2):
        new = th0 + (j / (n_int + 1)) * (th1 - th0)
        work += energy.delta_energy(x, old, new).to(torch.float64)
        if j <= n_int:
            for _ in range(n_mcmc):
                x = s.step(energy, new, x, dt=dt, mobility=mobility, gen=gen)
        old = new
    if not bool(torch.isfinite(work).all()):
        raise InputError(f"the chains diverged (non-finite work): reduce dt = {dt}")
    return work


def ais(energy, theta_start, theta_end, *, n_chains, n_intermediate, n_mcmc=1, dt, mobility=1.0, gen,
        sampler="mala", x0=None) -> FreeEnergyEstimate:
    """Delta F = F(theta_end) - F(theta_start) = -ln mean_i exp(-W_i), W from ``switching_work``.

    AIS (Neal 2001) on p_j ~ exp(-E_{theta_j}), theta_j linear in j (for energies linear in
    theta this is the geometric path (1 - beta) E_0 + beta E_1); log importance weights = -W.
    ln Z_end - ln Z_start = -Delta F is ``log_partition_ratio`` (also in diagnostics). Error,
    bias and ess as in ``jarzynski`` (the chains are independent).
    """
    if require_positive_int("n_chains", n_chains) < 2:
        raise InputError(f"n_chains must be >= 2 (the error comes from the spread of the weights), got {n_chains}")
    s = make_sampler(sampler)
    work = switching_work(energy, theta_start, theta_end, n_chains=n_chains, n_intermediate=n_intermediate,
                          n_mcmc=n_mcmc, dt=dt, mobility=mobility, gen=gen, sampler=s, x0=x0)
    est = jarzynski(work)
    diag = dict(est.diagnostics, log_partition_ratio=-est.delta_free_energy, n_intermediate=n_intermediate,
                n_mcmc=n_mcmc, acceptance_rate=getattr(s, "acceptance_rate", float("nan")))
    return replace(est, method="ais", diagnostics=diag)
