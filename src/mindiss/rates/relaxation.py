"""Relaxation times and friction tensors from chain trajectories (theory.md section 4).

zeta_ij = int_0^inf < dE_i(x_t) dE_j(x_0) >_eq dt by the integrated autocorrelation of d_theta E
along a run of the chains at fixed theta (Sokal's automatic window), its diagonal alone for many
parameters, exact references from the generator, and tau = tr(I^-1 zeta) / P. Used by the
``Friction`` preconditioner and by ``tau="auto"`` schedules (``mindiss.preconditioners``).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import InputError, require_positive, require_positive_int


def _sokal_window(trace: torch.Tensor, L: int, c: float) -> tuple[np.ndarray, int]:
    """Normalised trace autocorrelation r and Sokal's window: the smallest W with W >= c tau_int(W)
    (tau_int(W) = 1/2 + sum_{l<=W} r(l), in steps), else the last lag."""
    r = (trace / trace[0]).numpy()
    window = L - 1
    acc = 0.5
    for w in range(1, L):
        acc += r[w]
        if w >= c * acc:
            window = w
            break
    return r, window


def _check_series(series: torch.Tensor) -> torch.Tensor:
    s = series.to(torch.float64)
    if s.ndim != 3 or s.shape[0] < 4:
        raise InputError(f"series must have shape (T >= 4, n, P), got {tuple(s.shape)}")
    return s


#: complex entries per FFT chunk of the autocorrelation estimators (16 bytes each: 256 MiB)
_FFT_CHUNK = 1 << 24


def integrated_autocorrelation(series: torch.Tensor, dt: float, *, c: float = 5.0, max_lag: int | None = None):
    """Friction tensor from per-chain time series of d_theta E at equilibrium.

    ``series``: (T, n, P) values of d_theta E at times 0, dt, 2 dt, ... for n independent chains.
    C(l) = < dG(t + l) dG(t)^T > (average over chains and time origins, dG = G - mean),
    zeta = dt [C(0) / 2 + sum_{l=1}^{W} (C(l) + C(l)^T) / 2]  (trapezoid rule of the integral),
    with Sokal's automatic window: the smallest W with W >= c tau_int(W), where
    tau_int(W) = 1/2 + sum_{l<=W} tr C(l) / tr C(0) (in steps).

    The cross-spectra are summed over chains in the frequency domain (chunks of chains), so memory
    is O(T P^2) for the lags plus O(T n P) for the series; time O(T n P^2). For large P use
    ``integrated_autocorrelation_diag`` (``Friction(max_dense_params=...)`` switches automatically).

    Returns (zeta (P, P), window W in steps, tau_int in time units, cov C(0)).
    """
    s = _check_series(series)
    T, n, P = s.shape
    d = s - s.mean(dim=(0, 1))
    L = T if max_lag is None else min(T, max_lag + 1)
    size = 1 << (2 * T - 1).bit_length()
    F = size // 2 + 1
    spec = torch.zeros((F, P, P), dtype=torch.complex128)
    step = max(1, _FFT_CHUNK // max(F * P, 1))
    for j in range(0, n, step):
        f = torch.fft.rfft(d[:, j:j + step], n=size, dim=0)                 # (F, chunk, P)
        # cross-spectrum for every pair (i, j), summed over chains: sum_n f_i conj(f_j)
        spec += torch.einsum("fni,fnj->fij", f, f.conj())
    cross = torch.fft.irfft(spec, n=size, dim=0)[:L]                          # (L, P, P)
    counts = torch.arange(T, T - L, -1, dtype=torch.float64).reshape(L, 1, 1)
    C = cross / (n * counts)                                                  # (L, P, P)
    trace = torch.diagonal(C, dim1=1, dim2=2).sum(-1)
    r, window = _sokal_window(trace, L, c)
    Cs = 0.5 * (C + C.transpose(1, 2))
    zeta = dt * (0.5 * Cs[0] + Cs[1:window + 1].sum(0))
    tau_int = float(dt * (0.5 + r[1:window + 1].sum()))
    return zeta, int(window), tau_int, C[0]


def autocovariance_diag(series: torch.Tensor, max_lag: int | None = None) -> torch.Tensor:
    """C_i(l) = mean over chains and time origins of dG_i(t + l) dG_i(t), dG = G - mean, for a (T, n, P)
    series of d_theta E; by FFT (zero-padded: no wrap-around) in chunks of parameters. Shape (L, P),
    L = min(T, max_lag + 1). Memory O(T n P), time O(T log T n P)."""
    s = _check_series(series)
    T, n, P = s.shape
    d = s - s.mean(dim=(0, 1))
    L = T if max_lag is None else min(T, max_lag + 1)
    size = 1 << (2 * T - 1).bit_length()
    step = max(1, _FFT_CHUNK // max((size // 2 + 1) * n, 1))
    C = torch.empty((P, L), dtype=torch.float64)
    for j in range(0, P, step):
        f = torch.fft.rfft(d[:, :, j:j + step].permute(2, 1, 0).contiguous(), n=size, dim=-1)  # (chunk, n, F)
        C[j:j + step] = torch.fft.irfft((f.real ** 2 + f.imag ** 2).sum(1), n=size, dim=-1)[:, :L]
    return C.T / (n * torch.arange(T, T - L, -1, dtype=torch.float64).reshape(L, 1))


def sokal_times(r: torch.Tensor, c: float = 5.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per column of a normalised autocorrelation r (L, P): tau_int(W) = 1/2 + sum_{l=1}^W r(l) (in steps)
    at Sokal's window, the smallest W with W >= c tau_int(W) (else the last lag). Returns (tau, W)."""
    L = r.shape[0]
    acc = 0.5 + torch.cumsum(r[1:], 0)                      # (L - 1, P): tau_int(W), W = 1..L-1
    lags = torch.arange(1, L, dtype=r.dtype)[:, None]
    ok = lags >= c * acc
    first = torch.where(ok.any(0), ok.to(torch.int64).argmax(0), torch.full_like(ok[0], L - 2, dtype=torch.int64))
    tau = acc.gather(0, first[None, :])[0]
    return tau, first + 1


def integrated_autocorrelation_diag(series: torch.Tensor, dt: float, *, c: float = 5.0,
                                    max_lag: int | None = None):
    """The diagonal of ``integrated_autocorrelation`` without any P x P array: per parameter,
    zeta_ii = dt [C_ii(0) / 2 + sum_{l=1}^{W} C_ii(l)] = C_ii(0) tau_i (tau_i the integrated
    autocorrelation time of d_theta_i E), with the same window W (Sokal's rule on the trace, which
    only needs the diagonal), so it equals the dense estimate's diagonal. Memory O(T n P) (FFTs in
    chunks of parameters), time O(T log T n P).

    Returns (zeta_diag (P,), window W in steps, tau_int in time units, variances C_ii(0) (P,)).
    """
    C = autocovariance_diag(series, max_lag)
    r, window = _sokal_window(C.sum(1), C.shape[0], c)
    zeta = dt * (0.5 * C[0] + C[1:window + 1].sum(0))
    tau_int = float(dt * (0.5 + r[1:window + 1].sum()))
    return zeta, int(window), tau_int, C[0].clone()


def relaxation_time(fisher: torch.Tensor, friction: torch.Tensor) -> float:
    """tau = tr(I^-1 zeta) / P: the Fisher-weighted mean relaxation time (s / mu for the trap).
    Diagonal estimates (1-D tensors I_ii, zeta_ii) give mean_i zeta_ii / I_ii."""
    if fisher.ndim == 1 or friction.ndim == 1:
        fd = fisher if fisher.ndim == 1 else torch.diagonal(fisher)
        zd = friction if friction.ndim == 1 else torch.diagonal(friction)
        return float((zd.to(torch.float64) / fd.to(torch.float64)).mean())
    sol = torch.linalg.solve(fisher.to(torch.float64), friction.to(torch.float64))
    return float(torch.diagonal(sol).sum() / fisher.shape[0])


def friction_exact(energy, theta: torch.Tensor, mobility: float) -> torch.Tensor:
    """Closed-form zeta at equilibrium for the built-in Gaussian energies.

    HarmonicTrap: zeta = identity / mu. Gaussian (natural parameters l = (a/s, 1/s)): in (a, s)
    zeta = diag(1/mu, 1/(4 mu s)) per dimension, mapped by J = d(a, s)/d(l1, l2) as J^T zeta J.
    """
    from ..energies.base import Gaussian, HarmonicTrap

    mu = require_positive("mobility", mobility)
    if isinstance(energy, HarmonicTrap):
        return torch.eye(energy.dim, dtype=torch.float64, device=theta.device) / mu
    if isinstance(energy, Gaussian):
        a, s = energy.gaussian_params(theta)
        d = energy.dim
        z = torch.zeros(2 * d, 2 * d, dtype=torch.float64, device=theta.device)
        for j in range(d):
            J = torch.tensor([[float(s[j]), -float(a[j] * s[j])], [0.0, -float(s[j]) ** 2]], dtype=torch.float64)
            zj = J.T @ torch.diag(torch.tensor([1.0 / mu, 1.0 / (4.0 * mu * float(s[j]))], dtype=torch.float64)) @ J
            idx = [j, j + d]
            z[np.ix_(idx, idx)] = zj.to(theta.device)
        return z
    raise InputError(f"no closed-form friction tensor for {type(energy).__name__}; use estimate='pilot'")


def relaxation_time_exact(energy, theta: torch.Tensor, mobility: float) -> float:
    """tau = tr(I^-1 zeta) / P from the closed forms (s / mu for the harmonic trap)."""
    return relaxation_time(energy.fisher(theta), friction_exact(energy, theta, mobility))


# ---------------------------------------------------------------------------- pilot runs

def pilot_series(energy, theta, x: torch.Tensor, sampler, *, dt: float, mobility: float, n_steps: int,
                 gen: torch.Generator, rows: int = 1024, dtype=torch.float64) -> torch.Tensor:
    """d_theta E along ``n_steps`` sampler moves of a clone of (up to ``rows``) chains at fixed theta,
    shape (n_steps + 1, rows, P) in ``dtype`` on the CPU (float32 halves a network's memory).

    The persistent chains are not touched (the clone has its own generator), so the ledger and
    the training trajectory do not depend on whether a pilot ran."""
    n = x.shape[0]
    if n > rows:
        idx = torch.randperm(n, generator=gen, device=gen.device)[:rows].to(x.device)
        y = x[idx].clone()
    else:
        y = x.clone()
    out = torch.empty((n_steps + 1, y.shape[0], energy.n_params), dtype=dtype)
    out[0] = energy.grad_theta(y, theta).to(dtype).cpu()
    for k in range(n_steps):
        y = sampler.step(energy, theta, y, dt=dt, mobility=mobility, gen=gen)
        out[k + 1] = energy.grad_theta(y, theta).to(dtype).cpu()
    return out


def pilot_friction(energy, theta, x, sampler, *, dt, mobility, gen, rows=1024, min_steps=200,
                   max_steps=20_000, c=5.0, diagonal: bool = False):
    """Friction, window and tau_int from pilot runs, doubling the run length until it spans at
    least 20 windows (Sokal's rule of thumb for a reliable integrated autocorrelation).

    ``diagonal``: return diag(zeta) and the variances (P,) (``integrated_autocorrelation_diag``)
    instead of the P x P tensors; "form" in the result says which."""
    estimator = integrated_autocorrelation_diag if diagonal else integrated_autocorrelation
    steps = min_steps
    while True:
        series = pilot_series(energy, theta, x, sampler, dt=dt, mobility=mobility, n_steps=steps, gen=gen,
                              rows=rows)
        zeta, window, tau_int, cov0 = estimator(series, dt, c=c)
        if steps >= 20 * window or steps >= max_steps:
            return {"friction": zeta, "window": window, "tau_int": tau_int, "fisher": cov0,
                    "pilot_steps": steps, "pilot_chains": series.shape[1], "pilot_dt": dt,
                    "form": "diagonal" if diagonal else "dense"}
        steps = min(max_steps, 2 * steps)


# ---------------------------------------------------------------------------- preconditioners


def diagonal_relaxation(energy, theta, x, sampler, *, dt: float, mobility: float, gen: torch.Generator,
                        rows: int = 64, n_steps: int = 100, c: float = 5.0) -> dict:
    """Diagonal Fisher I_ii, integrated autocorrelation times tau_i of d_theta_i E and zeta_ii = I_ii tau_i
    along a pilot run of ``n_steps`` sampler moves of a clone of (up to) ``rows`` chains at fixed theta.

    tau_i (time units) = dt [1/2 + sum_{l=1}^{W_i} r_i(l)], r_i the autocorrelation of component i
    (``autocovariance_diag``, lags up to half the run), W_i Sokal's window per parameter (``sokal_times``),
    clipped to [dt / 2, n_steps dt / 5]. The persistent chains are not touched (``pilot_series``; its
    series in float32). Returns {"fisher_diag", "tau", "friction_diag", "tau_mean", "window_mean",
    "rows", "n_steps", "dt"}.
    """
    dt, mobility = require_positive("dt", dt), require_positive("mobility", mobility)
    rows, n_steps = require_positive_int("rows", rows), require_positive_int("n_steps", n_steps)
    if n_steps < 8:
        raise InputError(f"n_steps must be >= 8 for an autocorrelation time, got {n_steps}")
    theta = torch.as_tensor(theta, dtype=torch.float64)
    series = pilot_series(energy, theta, x, sampler, dt=dt, mobility=mobility, n_steps=n_steps, gen=gen, rows=rows,
                          dtype=torch.float32)
    acf = autocovariance_diag(series, max_lag=max(series.shape[0] // 2, 2) - 1)
    var = acf[0].clamp_min(1e-300)
    tau_steps, window = sokal_times(acf / var, c)
    tau = (dt * tau_steps).clamp(min=0.5 * dt, max=n_steps * dt / 5.0)
    fisher = acf[0]
    return {"fisher_diag": fisher, "tau": tau, "friction_diag": fisher * tau,
            "tau_mean": float(tau.mean()), "window_mean": float(window.to(torch.float64).mean()),
            "rows": int(series.shape[1]), "n_steps": n_steps, "dt": dt}


def estimate_tau(energy, theta, x, *, sampler="mala", dt: float, mobility: float = 1.0, gen,
                 rows: int = 64, n_steps: int = 100) -> float:
    """tau = tr(I^-1 zeta) / P with diagonal I and zeta = mean_i tau_i (``diagonal_relaxation``), in time
    units: the relaxation time that alpha(t) needs, from a pilot run on a clone of the chains ``x``."""
    from ..backends.samplers import make_sampler

    return diagonal_relaxation(energy, theta, x, make_sampler(sampler), dt=dt, mobility=mobility, gen=gen,
                               rows=rows, n_steps=n_steps)["tau_mean"]


# ---------------------------------------------------------------------------- tau from the training chains

def exponential_tail(r: torch.Tensor) -> torch.Tensor:
    """sum_{l >= L} r(l) for each column of an autocorrelation r (L, P) whose tail decays as one
    exponential: with rho = (r(L - 1) / r(h))^(1 / (L - 1 - h)), h = (L - 1) // 2, the tail is
    r(L - 1) rho / (1 - rho) (rho clipped to [0, 0.99]; 0 where r(L - 1) <= 0 or r(h) <= 0)."""
    L = r.shape[0]
    h = (L - 1) // 2
    last, mid = r[L - 1], r[h]
    ok = (last > 0) & (mid > 0)
    rho = torch.where(ok, (last.clamp_min(1e-300) / mid.clamp_min(1e-300)) ** (1.0 / (L - 1 - h)),
                      torch.zeros_like(last)).clamp(0.0, 0.99)
    return torch.where(ok, last * rho / (1.0 - rho), torch.zeros_like(last))


class ChainRelaxation:
    """Relaxation times from the training run's own chains, updated online: no pilot run, no clone.

    The persistent chains move by the interior step dt between updates, so the per-chain gradients
    d_theta E that an update already has (or, when the preconditioner does not ask for them, those of
    ``rows`` chains of fixed identity) form a time series along the run. At each recorded update k
    (the chains moved by dt since the last record) the rows are centred across chains at that
    update, d_k = G_k - mean_chains G_k (removing the drift of the mean that the changes of theta
    cause), and lagged products are accumulated with exponential forgetting (factor 1 - 1/``memory``
    per record):

        S_p(l) = sum_k w_k sum_i d_{k,i,p} d_{k-l,i,p},  n(l) = sum_k w_k (rows per pair),  l = 0..L-1,
        C_p(l) = S_p(l) / n(l),   r_p(l) = C_p(l) / C_p(0),
        tau_p = dt [1/2 + sum_{l=1}^{W_p} r_p(l)]   (Sokal's window W_p, ``sokal_times``, clipped to
                                                     [dt / 2, (L - 1) dt]),
        tau = mean_p tau_p  (= tr(I^-1 zeta) / P for diagonal I and zeta: the estimator of
                            ``diagonal_relaxation``, on the training trajectory instead of a pilot).

    For E linear in theta (exponential families, the harmonic trap) d_theta E does not depend on
    theta, so theta's changes only shift the mean (removed by the centring) and the estimate is that
    of the chains' dynamics; for a network, d_theta E(x; theta_k) changes with theta too, which lowers
    the measured correlation by O(|theta_k - theta_{k-l}|). Where Sokal's window does not close
    within the L lags kept (a slow mode, e.g. hopping between wells), the sum is continued by its
    exponential tail (``exponential_tail``); the report says for which fraction of the parameters the
    window closed (``converged``). tau_p is clipped to [dt / 2, ``max_tau_steps`` dt].

    Error: the rows are split into ``groups`` groups with their own sums; tau per group, standard
    error = their standard deviation / sqrt(groups) (``tau_se``).

    Cost per record: O(L rows P') time and memory (P' the tracked parameters: all, or a random subset
    of ``params`` for the mean tau; 64 x 64 x 256 float32 products: ~4 ms on one core), plus
    O(L P') per ``estimate``. ``tau0``: the value before two records exist (default: the
    interior chain step dt, the shortest time the run resolves) and until ``min_records`` records exist.
    """

    def __init__(self, *, lags: int = 64, rows: int = 64, params: int | None = 256, memory: float = 100.0,
                 groups: int = 8, tau0: float | None = None, c: float = 5.0, max_tau_steps: float = 1000.0,
                 min_records: int = 8):
        self.lags = require_positive_int("lags", lags)
        if self.lags < 3:
            raise InputError(f"lags must be >= 3, got {lags}")
        self.rows = require_positive_int("rows", rows)
        self.params = None if params is None else require_positive_int("params", params)
        self.memory = require_positive("memory", memory)
        self.groups = require_positive_int("groups", groups)
        self.tau0 = None if tau0 is None else require_positive("tau0", tau0)
        self.c = float(c)
        self.max_tau_steps = require_positive("max_tau_steps", max_tau_steps)
        self.min_records = max(3, require_positive_int("min_records", min_records))
        self.dt = None
        self.chain_idx = self.param_idx = None
        self.buffer = None          # (lags, rows, P') float32 ring of centred records, newest at self.head
        self.head = -1
        self.n_records = 0
        self.S = None               # (groups, lags, P') float64 lagged sums
        self.n = None               # (lags,) float64 weights
        self.elapsed = 0.0          # chain time since the last record
        self.last_k = None
        self.resets = 0

    def __repr__(self):   # settings only: part of a run's fingerprint (checkpoints)
        return (f"ChainRelaxation(lags={self.lags}, rows={self.rows}, params={self.params}, memory={self.memory}, "
                f"groups={self.groups}, tau0={self.tau0}, c={self.c}, max_tau_steps={self.max_tau_steps}, "
                f"min_records={self.min_records})")

    # -- state ---------------------------------------------------------------------------------
    def start(self, ctx) -> None:
        """Fix the chains and parameters followed (``ctx.gen``) and register on ``ctx`` as its tau source."""
        n, P = ctx.state.n_chains, int(ctx.theta.numel())
        self.dt = float(ctx.dt)
        if self.chain_idx is None:
            rows = min(self.rows, n)
            rows -= rows % min(self.groups, rows)    # equal groups of consecutive rows
            self.chain_idx = torch.randperm(n, generator=ctx.gen, device=ctx.gen.device)[:rows].cpu()
            self.param_idx = (None if self.params is None or self.params >= P else
                              torch.randperm(P, generator=ctx.gen, device=ctx.gen.device)[:self.params].sort().values.cpu())
        ctx.chain_relaxation = self

    def state_dict(self) -> dict:
        return dict(self.__dict__)

    def load_state_dict(self, sd: dict) -> None:
        self.__dict__.update(sd)

    def _rows(self, stats, ctx) -> torch.Tensor:
        """Per-chain d_theta E of the followed chains and parameters, (rows, P')."""
        if stats is not None and stats.samples is not None and stats.samples.shape[0] == ctx.state.n_chains:
            g = stats.samples[self.chain_idx.to(stats.samples.device)]
        else:
            x = ctx.state.x
            g = ctx.energy.grad_theta(x[self.chain_idx.to(x.device)], ctx.theta)
        if self.param_idx is not None:
            g = g[:, self.param_idx.to(g.device)]
        return g.to(torch.float64).cpu()

    def observe(self, stats, ctx) -> None:
        """Record update ``ctx.k`` if the chains moved by dt since the last record."""
        k = int(ctx.k)
        if self.last_k is not None:   # without the run's layout: every update moved the chains by dt
            self.elapsed += (float(np.sum(ctx.dts[self.last_k:k])) if ctx.dts is not None
                             else self.dt * (k - self.last_k))
        if self.last_k is not None and self.elapsed <= 0.0:
            self.last_k = k
            return                     # same chain states as the last record (an impulse)
        if self.last_k is not None and not math.isclose(self.elapsed, self.dt, rel_tol=1e-6):
            self.resets += 1           # the spacing changed: lags in updates no longer mean lags in time
            self.head, self.n_records = -1, 0
            if self.S is not None:
                self.S.zero_()
                self.n.zero_()
        self.last_k, self.elapsed = k, 0.0
        g = self._rows(stats, ctx)
        d = g - g.mean(0)
        rows, P = d.shape
        L, G = self.lags, min(self.groups, rows)
        if self.buffer is None or self.buffer.shape[1:] != d.shape:
            self.buffer = torch.zeros((L, rows, P), dtype=torch.float32)
            self.S = torch.zeros((G, L, P), dtype=torch.float64)
            self.n = torch.zeros(L, dtype=torch.float64)
        forget = 1.0 - 1.0 / self.memory
        self.S.mul_(forget)
        self.n.mul_(forget)
        self.head = (self.head + 1) % L
        d32 = d.to(torch.float32)
        self.buffer[self.head] = d32
        valid = min(self.n_records + 1, L)
        pos = (self.head - torch.arange(valid)) % L                 # ring position of lag 0, 1, ..
        # every lag at once: products with the whole ring, summed within each group of rows (float32:
        # a float64 reduction costs 5x more), then reordered by lag on the small (L, G, P') result
        prods = (self.buffer * d32).reshape(L, G, rows // G, P).sum(2)[pos]
        self.S[:, :valid] += prods.transpose(0, 1).to(torch.float64)
        self.n[:valid] += 1.0
        self.n_records += 1

    # -- estimates -------------------------------------------------------------------------------
    def _times(self, S: torch.Tensor, n: torch.Tensor):
        avail = int((n > 0).sum())
        C = S[:avail] / n[:avail, None]
        r = C / C[0].clamp_min(1e-300)
        tau_steps, window = sokal_times(r, self.c)
        open_ = window >= avail - 1          # Sokal's window did not close within the lags kept
        if bool(open_.any()) and avail >= 8:
            tau_steps = tau_steps + torch.where(open_, exponential_tail(r), torch.zeros_like(tau_steps))
        tau = (self.dt * tau_steps).clamp(min=0.5 * self.dt, max=self.max_tau_steps * self.dt)
        return tau, window, avail

    def estimate(self, se: bool = True) -> dict | None:
        """{"tau", "tau_se", "tau_p", "records", "lags_used", "converged", "groups"} (time units) or
        None before ``min_records`` records; ``se=False`` skips the per-group estimates (tau_se NaN)."""
        if self.S is None or self.n_records < self.min_records:
            return None
        tau_p, window, avail = self._times(self.S.sum(0), self.n)
        G = self.S.shape[0]
        err = math.nan
        if se and G > 1:
            per_group = torch.stack([self._times(self.S[j], self.n)[0].mean() for j in range(G)])
            err = float(per_group.std(unbiased=True) / math.sqrt(G))
        return {"tau": float(tau_p.mean()), "tau_se": err, "tau_p": tau_p, "records": self.n_records,
                "lags_used": avail, "converged": float((window < avail - 1).to(torch.float64).mean()), "groups": G}

    def tau(self) -> tuple[float, str]:
        """(tau, how) for ``PreconditionContext.relaxation_time``: the current estimate, else tau0 (or dt)."""
        est = self.estimate(se=False)
        if est is None:
            t0 = self.tau0 if self.tau0 is not None else self.dt
            return float(t0), f"training chains: none recorded yet, tau0 = {t0:.4g}"
        return est["tau"], (f"training chains ({len(self.chain_idx)} chains, {est['records']} records, "
                            f"{est['lags_used']} lags, window converged for {100 * est['converged']:.0f}% "
                            "of parameters)")

    def report(self) -> dict:
        est = self.estimate()
        out = {"method": "training chains", "rows": 0 if self.chain_idx is None else len(self.chain_idx),
               "lags": self.lags, "memory": self.memory, "resets": self.resets, "records": self.n_records}
        if est is not None:
            out.update(tau=est["tau"], tau_se=est["tau_se"], converged=est["converged"])
        return out
