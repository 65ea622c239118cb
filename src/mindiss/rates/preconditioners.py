"""Learning-rate matrices (theory.md section 4): theta_new = theta - lr_k P_k g_hat.

Everything is estimated from the same persistent chains that give g_hat:

* Fisher information  I(theta) = Cov_chains[d_theta E]  (full, diagonal, or low-rank plus
  damping, never forming P x P: conjugate gradient on the gradient blocks for rank >= P, a
  re-compressed rank-r factor with Woodbury's solve and a probabilistic-PCA damping for rank < P);
* friction tensor     zeta_ij = int_0^inf < dE_i(x_t) dE_j(x_0) >_eq dt  (integrated
  autocorrelation along a pilot run of a clone of the chains, window chosen automatically;
  only its diagonal above ``Friction(max_dense_params=...)`` parameters);
* relaxation time     tau = tr(I^-1 zeta) / P  (for the harmonic trap exactly s / mu).

A preconditioner answers ``needs`` (which chain statistics it wants), ``observe(stats, ...)``
once per update and ``apply(g)`` -> P g. Its ``report()`` goes into ``TrainResult.preconditioner``.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch

from .relaxation import (friction_exact, integrated_autocorrelation, integrated_autocorrelation_diag,
                              pilot_friction, pilot_series, relaxation_time, relaxation_time_exact)
from ..errors import InputError, require_positive, require_positive_int

#: the estimators of ``autocorrelation`` are part of this module's interface too
__all__ = ["GradStats", "fisher_from_samples", "conjugate_gradient", "lowrank_fisher_matvec", "woodbury_solve",
           "top_factor", "Preconditioner", "Fisher", "Friction", "Adam", "make_preconditioner",
           "PreconditionContext", "friction_exact", "integrated_autocorrelation", "integrated_autocorrelation_diag",
           "pilot_friction", "pilot_series", "relaxation_time", "relaxation_time_exact"]


@dataclass
class GradStats:
    """Chain statistics of d_theta E at one update.

    ``mean``: E_rho[d_theta E] (P,). ``samples``: per-chain d_theta E (n, P) float64 (particles;
    possibly a subsample), or None. ``cov``: the exact Cov_rho[d_theta E] (P, P) where the backend
    knows the density (moments, Fokker-Planck), else None.
    """

    mean: torch.Tensor
    samples: torch.Tensor | None = None
    cov: torch.Tensor | None = None


# ---------------------------------------------------------------------------- pure estimators

def fisher_from_samples(samples: torch.Tensor) -> torch.Tensor:
    """I = (1 / (n - 1)) sum_i (G_i - Gbar)(G_i - Gbar)^T for per-chain gradients G (n, P)."""
    g = samples.to(torch.float64)
    c = g - g.mean(0)
    return c.T @ c / max(g.shape[0] - 1, 1)


def conjugate_gradient(matvec, b: torch.Tensor, *, tol: float = 1e-10, max_iter: int = 500):
    """Solve A x = b for symmetric positive definite A given only v -> A v.

    Returns (x, iterations, relative residual |b - A x| / |b|)."""
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rs = float(r @ r)
    bnorm = math.sqrt(float(b @ b)) or 1.0
    it = 0
    while it < max_iter and math.sqrt(rs) > tol * bnorm:
        ap = matvec(p)
        alpha = rs / float(p @ ap)
        x += alpha * p
        r -= alpha * ap
        rs_new = float(r @ r)
        p = r + (rs_new / rs) * p
        rs = rs_new
        it += 1
    return x, it, math.sqrt(rs) / bnorm


def lowrank_fisher_matvec(blocks, damping: float):
    """v -> (sum_b w_b C_b^T C_b / n_b + damping) v for centred gradient blocks C_b (n_b, P) with
    weights w_b: the Fisher (or its moving average) applied without forming a P x P matrix."""

    def matvec(v):
        out = damping * v
        for w, c in blocks:
            out = out + (w / c.shape[0]) * (c.T @ (c @ v))
        return out

    return matvec


def woodbury_solve(blocks, damping: float, g: torch.Tensor) -> torch.Tensor:
    """(lambda + C^T C)^-1 g with C the stacked blocks sqrt(w_b / n_b) C_b (r x P, r < P), by the
    Woodbury identity: (g - C^T (lambda + C C^T)^-1 C g) / lambda; an r x r solve, no P x P matrix."""
    C = torch.cat([math.sqrt(w / b.shape[0]) * b for w, b in blocks]).to(g.dtype)
    small = C @ C.T
    small.diagonal().add_(damping)
    return (g - C.T @ torch.linalg.solve(small, C @ g)) / damping


class Preconditioner:
    """Base class. Subclasses set ``needs`` in {"samples", "subsample", "cov", "none"}."""

    name = "identity"
    needs = "none"
    rows = 0            # for needs == "subsample": how many chains

    def fresh(self) -> "Preconditioner":
        """A clean copy for one replica (estimates are per replica)."""
        return copy.deepcopy(self)

    def start(self, ctx) -> None:
        """Called once per replica before the first update (ctx: see ``train._PreContext``)."""

    def observe(self, stats: GradStats, ctx) -> None:
        """New chain statistics at the current update."""

    def apply(self, g: torch.Tensor) -> torch.Tensor:
        return g

    def report(self) -> dict:
        return {"name": self.name}

    #: attributes that ``start()`` rebuilds from the run's inputs: never part of a checkpoint
    #: (a checkpoint holds tensors and plain data, not objects such as the energy)
    rebuilt = ("energy",)

    def state_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in self.rebuilt}

    def load_state_dict(self, sd: dict) -> None:
        self.__dict__.update({k: v for k, v in sd.items()
                              if k not in self.rebuilt and not callable(getattr(type(self), k, None))})


def _damping_value(damping, matrix_scale: float, relative: float) -> float:
    if damping == "auto":
        return relative * max(matrix_scale, 1e-300)
    return float(damping)


def top_factor(M: torch.Tensor, rank: int, gram: torch.Tensor | None = None):
    """The best rank-``rank`` factor of M M^T for M (P, m): A (P, q), q <= rank, with A A^T the top-q
    eigen-part of M M^T (columns of A orthogonal, |a_j|^2 = lambda_j), the dropped eigenvalue mass
    tr(M M^T) - tr(A A^T) and A^T A (q, q). Nothing is dropped when m <= rank (A = M, exact).
    Otherwise one eigendecomposition of the smaller Gram matrix (m x m, or P x P when m > P;
    ``gram`` = M^T M if already known): time O(P m^2), memory O(P m). Eigenvalues below
    max(m, P) * eps * lambda_max (round-off) are dropped with the rest.

    Returns (A, dropped mass, A^T A)."""
    P, m = M.shape
    if m <= rank:
        return M, 0.0, (M.T @ M if gram is None else gram)
    small_side = m <= P
    if small_side:
        gram = M.T @ M if gram is None else gram
        lam, V = torch.linalg.eigh(gram)
    else:
        lam, V = torch.linalg.eigh(M @ M.T)
    lam, V = lam.flip(0).clamp_min(0.0), V.flip(1)
    tiny = max(m, P) * torch.finfo(lam.dtype).eps * float(lam[0])
    q = int((lam[:rank] > tiny).sum())
    Vq = V[:, :q]
    if small_side:
        A = M @ Vq
        gram_a = Vq.T @ gram @ Vq                      # = A^T A (diag(lambda) up to round-off)
    else:
        A = Vq * lam[:q].sqrt()
        gram_a = A.T @ A
    return A, float(lam[q:].sum()), 0.5 * (gram_a + gram_a.T)


class Fisher(Preconditioner):
    """P = (I + lambda)^-1 with I the Fisher information of the model family, estimated from the
    persistent chains (Cov_chains[d_theta E]) or taken in closed form (``kind="exact"``).

    ``kind``: "full" (P x P solve; small P), "diag" (elementwise), "lowrank" (see below),
    "exact" (``energy.fisher(theta)``). ``route``: "samples" (per-chain gradients from the update
    loop) or, for kind "diag" on a network of Linear layers, "layers" (the same column variances from
    one forward and backward over the chains, ``kfac.diagonal_fisher``: no (N, P) array; equal up to
    round-off, so opt-in).
    ``damping``: a number or "auto" (``relative_damping`` times the mean diagonal of I; low-rank
    with rank < P: see below; the value used is reported). ``ema``: exponential moving average of
    the estimate across updates (bias-corrected as in Adam).

    Low rank: the centred gradients of ``rows`` chains per update (a random subsample; default
    ``rank``) feed the estimate; the P x P matrix is never formed.

    * ``rank >= P``: the last ``max_blocks`` gradient blocks are kept with their EMA weights
      (normalised to sum to one) and (I + lambda)^-1 g is solved by conjugate gradient (exact for
      that estimate).
    * ``rank < P``: the (EMA) estimate is kept as a rank-``rank`` factor: after each update the old
      factor and the new block are re-compressed to their top-``rank`` eigen-subspace
      (``top_factor``; time O(P (rank + rows)^2), memory O(P (rank + rows)); ``max_blocks`` does
      not apply), and the solve is Woodbury's (a rank x rank system). The eigenvalue mass that the
      compressions drop is tracked (an EMA as the estimate), so with tr the trace of the full (EMA)
      estimate and lambda_1..q the kept eigenvalues, ``damping="auto"`` is
      lambda = max((tr - sum_j lambda_j) / (P - q), relative_damping x tr / P): the mean discarded
      eigenvalue, i.e. the isotropic variance of the maximum-likelihood low-rank-plus-isotropic
      (probabilistic PCA) fit, so directions outside the kept span get the variance the estimate
      saw there on average rather than a tiny lambda (which multiplies them by 1 / lambda); the
      old relative value is the floor (it applies when nothing was discarded, e.g. ema = 0 and
      rows <= rank). ``damping=0`` then gives the pseudo-inverse on the kept span.
    """

    def __init__(self, kind: str = "full", *, damping="auto", relative_damping: float | None = None,
                 ema: float = 0.0, rank: int = 256, cg_tol: float = 1e-8, cg_max_iter: int = 500,
                 max_blocks: int = 8, rows: int | None = None, route: str = "samples"):
        if kind not in ("full", "diag", "lowrank", "exact"):
            raise InputError(f"Fisher kind must be 'full', 'diag', 'lowrank' or 'exact', got {kind!r}")
        if route not in ("samples", "layers") or (route == "layers" and kind != "diag"):
            raise InputError(f"Fisher route must be 'samples', or 'layers' with kind 'diag', got {route!r} "
                             f"with kind {kind!r}")
        self.route = route
        if damping != "auto":
            if not (isinstance(damping, (int, float)) and math.isfinite(damping) and damping >= 0):
                raise InputError(f"damping must be 'auto' or a number >= 0, got {damping!r}")
        if not (0.0 <= ema < 1.0):
            raise InputError(f"ema must lie in [0, 1), got {ema!r}")
        self.kind, self.damping_spec, self.ema = kind, damping, float(ema)
        self.relative_damping = (relative_damping if relative_damping is not None
                                 else (1e-3 if kind == "lowrank" else 1e-10))
        self.rank = require_positive_int("rank", rank)
        self.cg_tol, self.cg_max_iter, self.max_blocks = cg_tol, cg_max_iter, max_blocks
        self.name = f"fisher-{kind}"
        self.needs = {"full": "samples", "diag": "samples", "lowrank": "subsample", "exact": "none"}[kind]
        if route == "layers":    # the network's layer statistics, read from the chains by ``kfac.diagonal_fisher``
            self.needs = "none"
        self.rows = self.rank if rows is None else require_positive_int("rows", rows)
        # full: (P, P); diag: (P,); lowrank, rank >= P: list of (weight, block);
        # lowrank, rank < P: factor F (P, q) with I_lowrank = F F^T / corr (corr: the EMA's bias correction)
        self.estimate = None
        self.n_seen = 0
        self.damping = 0.0
        self.cg_iterations = []
        self.theta = None
        self.energy = None
        self.compressed = False       # lowrank with rank < P: the factor form
        self._corr = 1.0
        self._trace = 0.0             # un-corrected EMA trace of the full estimate
        self._dropped = 0.0           # un-corrected EMA of the eigenvalue mass dropped by compressions
        self._gram = None             # F^T F (q, q)
        self._chol = None             # Cholesky factor of F^T F + corr damping (q, q)
        self.discarded_mean = 0.0
        self.damping_rule = "given" if damping != "auto" else "relative"

    def start(self, ctx) -> None:
        self.energy = ctx.energy

    def observe(self, stats: GradStats, ctx) -> None:
        self.theta = getattr(ctx, "theta", None)
        if self.kind == "exact":
            return
        beta = self.ema
        self.n_seen += 1
        if self.kind == "lowrank":
            if stats.samples is None:
                raise InputError("the low-rank Fisher needs per-chain gradients (particle backend)")
            c = stats.samples - stats.samples.mean(0)
            if self.rank < c.shape[1]:
                self._observe_factor(c)
                return
            # raw EMA weights (1 - beta) beta^j, bias-corrected by 1 - beta^n as for full/diag
            raw = [] if self.estimate is None or beta == 0 else [(w * beta, b) for w, b in self._raw]
            raw.append((1.0 - beta, c))
            self._raw = [(w, b) for w, b in raw if w > 1e-3 * (1.0 - beta)][-self.max_blocks:]
            corr = 1.0 - beta ** self.n_seen if beta else 1.0
            if len(self._raw) < len(raw):   # blocks dropped: normalise by the weights kept (a weighted mean)
                corr = sum(w for w, _ in self._raw)
            self.estimate = [(w / corr, b) for w, b in self._raw]
            scale = sum(w * float((b * b).sum()) / b.shape[0] for w, b in self.estimate) / c.shape[1]
            self.damping = _damping_value(self.damping_spec, scale, self.relative_damping)
            return
        if self.kind == "diag":   # column variances only: O(N P), never the P x P covariance
            if self.route == "layers":
                from .kfac import diagonal_fisher   # kfac imports this module

                new = diagonal_fisher(self.energy, ctx.state.x, ctx.theta)
            elif stats.cov is not None:
                new = torch.diagonal(stats.cov).clone()
            else:
                c = stats.samples - stats.samples.mean(0)
                new = (c * c).sum(0) / max(c.shape[0] - 1, 1)
        else:
            new = stats.cov if stats.cov is not None else fisher_from_samples(stats.samples)
        if self.estimate is None or beta == 0:
            self._acc = (1.0 - beta) * new
        else:
            self._acc = beta * self._acc + (1.0 - beta) * new
        self.estimate = self._acc / (1.0 - beta ** self.n_seen)
        diag = self.estimate if self.kind == "diag" else torch.diagonal(self.estimate)
        self.damping = _damping_value(self.damping_spec, float(diag.mean()), self.relative_damping)

    def _observe_factor(self, c: torch.Tensor) -> None:
        """Low rank, rank < P: fold the centred block c (n, P) into the rank-``rank`` EMA factor."""
        beta = self.ema
        n, P = c.shape
        new = c.T * math.sqrt((1.0 - beta) / n)             # (P, n): new new^T = (1 - beta) c^T c / n
        mass = (1.0 - beta) * float((c * c).sum()) / n
        if self.estimate is None or beta == 0:
            M, self._trace, self._dropped = new, mass, 0.0
            gram = new.T @ new if n <= P else None
        else:
            old = self.estimate * math.sqrt(beta)
            new = new.to(old.dtype)
            M = torch.cat([old, new], 1)
            self._trace = beta * self._trace + mass
            self._dropped *= beta
            gram = None
            if M.shape[1] <= P:     # M^T M by blocks; the old factor's own Gram is kept from the last update
                cross = old.T @ new
                gram = torch.cat([torch.cat([beta * self._gram, cross], 1), torch.cat([cross.T, new.T @ new], 1)])
        self.estimate, dropped, self._gram = top_factor(M, self.rank, gram)
        self._dropped += dropped
        self.compressed = True
        self._corr = corr = 1.0 - beta ** self.n_seen if beta else 1.0
        q = self.estimate.shape[1]
        trace = self._trace / corr
        self.discarded_mean = max(self._dropped / corr, 0.0) / (P - q)
        floor = self.relative_damping * max(trace / P, 1e-300)
        if self.damping_spec == "auto":
            self.damping = max(self.discarded_mean, floor)
            self.damping_rule = "mean discarded eigenvalue" if self.discarded_mean >= floor else "relative"
        else:
            self.damping = float(self.damping_spec)
        self._chol = None
        if self.damping > 0:                                 # F^T F + corr lambda (Woodbury, see apply)
            K = self._gram.clone()
            K.diagonal().add_(corr * self.damping)
            self._chol = torch.linalg.cholesky(K)

    def matrix(self) -> torch.Tensor:
        """The current (damped) Fisher estimate as a dense matrix (small P; for tests and reports)."""
        if self.kind == "exact":
            return self.energy.fisher(self.theta)
        if self.kind == "diag":
            return torch.diag(self.estimate + self.damping)
        if self.kind == "full":
            return self.estimate + self.damping * torch.eye(self.estimate.shape[0], dtype=torch.float64,
                                                            device=self.estimate.device)
        if self.compressed:
            F = self.estimate.cpu()
            return self.damping * torch.eye(F.shape[0], dtype=torch.float64) + F @ F.T / self._corr
        P = self.estimate[0][1].shape[1]
        out = self.damping * torch.eye(P, dtype=torch.float64)
        for w, b in self.estimate:
            out = out + w * (b.T @ b).cpu() / b.shape[0]
        return out

    def apply(self, g):
        if self.kind == "exact":
            return torch.linalg.solve(self.energy.fisher(self.theta).to(g.device), g)
        if self.kind == "diag":
            return g / (self.estimate + self.damping)
        if self.kind == "full":
            return torch.linalg.solve(self.matrix().to(g.device), g)
        if self.compressed:               # I = F F^T / corr
            F = self.estimate.to(device=g.device, dtype=g.dtype)
            if self._chol is not None:    # Woodbury: (lambda + F F^T / corr)^-1 g = (g - F (corr lambda + F^T F)^-1 F^T g) / lambda
                y = torch.cholesky_solve((F.T @ g).unsqueeze(1), self._chol.to(device=g.device, dtype=g.dtype))
                return (g - F @ y.squeeze(1)) / self.damping
            B = torch.linalg.pinv(F)      # damping 0: (F F^T / corr)^+ g = corr B^T B g on the kept span
            return self._corr * (B.T @ (B @ g))
        P = g.shape[0]
        r = sum(b.shape[0] for _, b in self.estimate)
        if r < P and self.damping > 0:
            return woodbury_solve(self.estimate, self.damping, g)
        x, it, _ = conjugate_gradient(lowrank_fisher_matvec(self.estimate, self.damping), g,
                                      tol=self.cg_tol, max_iter=self.cg_max_iter)
        self.cg_iterations.append(it)
        return x

    def report(self) -> dict:
        out = {"name": self.name, "damping": self.damping, "ema": self.ema}
        if self.kind == "lowrank" and self.compressed:
            out.update(rank=self.rank, solver="woodbury", cg_iterations_mean=0.0, form="factor (rank < P)",
                       kept_rank=int(self.estimate.shape[1]), rows=self.rows,
                       discarded_mean=self.discarded_mean, damping_rule=self.damping_rule)
        elif self.kind == "lowrank":
            out.update(rank=self.rank, solver="cg" if self.cg_iterations else "woodbury",
                       cg_iterations_mean=float(np.mean(self.cg_iterations)) if self.cg_iterations else 0.0)
        return out


class Friction(Preconditioner):
    """P = tau zeta^-1: preconditioning by the friction tensor (Sivak-Crooks metric) instead of
    the Fisher information, scaled by the relaxation time tau = tr(I^-1 zeta) / P so that it
    equals I^-1 for the harmonic trap (where zeta = I tau).

    ``estimate``: "pilot" (integrated autocorrelation of d_theta E along a pilot run of a clone
    of the chains at the current theta, window chosen automatically; refreshed every ``refresh``
    updates, 0 = only at the start) or "exact" (closed forms for the built-in Gaussian energies,
    the Fokker-Planck generator for 1-D energies on that backend).

    ``max_dense_params``: the largest parameter count P for which the pilot estimates the full
    P x P tensor: memory about 65 T P^2 bytes and time O(T n P^2) for T pilot steps of n chains
    (P = 512, T = 201, n = 64: 3.7 GB and 16 s on one core), hence the default 128. Above it the
    pilot estimates the diagonal only, zeta_ii = Var[d_theta_i E] tau_i with tau_i the integrated
    autocorrelation time of d_theta_i E (the dense estimate's diagonal, same window; memory
    O(T n P), no P x P array), and P = tau diag(zeta)^-1 with tau = mean_i tau_i;
    ``report()["form"]`` says which form was used ("dense" or "diagonal (P > max_dense_params)").
    Neural energies (P ~ 10^3 - 10^4) take the diagonal form. ``None``: always dense. The pilot
    series itself holds (T, n, P) float64 values: lower ``pilot_chains`` for very large P.
    """

    name = "friction"

    def __init__(self, estimate: str = "pilot", *, refresh: int = 0, pilot_chains: int = 1024,
                 pilot_dt: float | None = None, damping: float = 0.0, max_dense_params: int | None = 128):
        if estimate not in ("pilot", "exact"):
            raise InputError(f"friction estimate must be 'pilot' or 'exact', got {estimate!r}")
        self.estimate_kind = estimate
        self.refresh = int(refresh)
        self.pilot_chains = require_positive_int("pilot_chains", pilot_chains)
        self.pilot_dt = pilot_dt
        self.damping = float(damping)
        self.max_dense_params = (None if max_dense_params is None
                                 else require_positive_int("max_dense_params", max_dense_params))
        self.zeta = None
        self.tau = None
        self.info: dict = {}
        self.updates = 0
        self.name = f"friction-{estimate}"

    def start(self, ctx) -> None:
        self._estimate(ctx)

    def _estimate(self, ctx) -> None:
        est = ctx.friction(self.estimate_kind, self.pilot_chains, self.pilot_dt,
                           max_dense_params=self.max_dense_params)
        self.zeta, self.tau = est["friction"], est["tau"]
        self.info = {k: v for k, v in est.items() if k not in ("friction", "fisher")}

    def observe(self, stats, ctx) -> None:
        self.updates += 1
        if self.refresh and self.updates % self.refresh == 0:
            self._estimate(ctx)

    def apply(self, g):
        z = self.zeta.to(g.device)
        if z.ndim == 1:                 # diagonal form (P > max_dense_params)
            return self.tau * g / (z + self.damping)
        if self.damping:
            z = z + self.damping * torch.eye(z.shape[0], dtype=z.dtype, device=z.device)
        return self.tau * torch.linalg.solve(z, g)

    def report(self) -> dict:
        out = {"name": self.name, "tau": self.tau, "friction": self.zeta.tolist(), **self.info}
        out.setdefault("form", "dense")
        return out


class Adam(Preconditioner):
    """Adam's step direction on the PCD gradient (Kingma & Ba): m = b1 m + (1 - b1) g,
    v = b2 v + (1 - b2) g^2, P g = m_hat / (sqrt(v_hat) + eps) with bias-corrected m_hat, v_hat.
    Not a matrix (it is non-linear in g) but it plugs into the same update:
    theta_new = theta - lr_k P g, so Adam runs through the one loop with any scalar schedule."""

    name = "adam"

    def __init__(self, betas=(0.9, 0.999), eps: float = 1e-8):
        b1, b2 = float(betas[0]), float(betas[1])
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise InputError(f"Adam betas must lie in [0, 1), got {betas!r}")
        self.b1, self.b2, self.eps = b1, b2, require_positive("eps", eps)
        self.m = self.v = None
        self.t = 0

    def apply(self, g):
        if self.m is None:
            self.m, self.v = torch.zeros_like(g), torch.zeros_like(g)
        self.t += 1
        self.m = self.b1 * self.m + (1.0 - self.b1) * g
        self.v = self.b2 * self.v + (1.0 - self.b2) * g * g
        m_hat = self.m / (1.0 - self.b1 ** self.t)
        v_hat = self.v / (1.0 - self.b2 ** self.t)
        return m_hat / (v_hat.sqrt() + self.eps)

    def report(self) -> dict:
        return {"name": self.name, "betas": [self.b1, self.b2], "eps": self.eps}


def make_preconditioner(spec) -> Preconditioner | None:
    """None, a Preconditioner, or a name: "fisher" / "fisher-full", "fisher-diag", "fisher-lowrank",
    "fisher-exact", "fisher-diag-layers" (``Fisher("diag", route="layers")``), "fisher-kfac"
    (``kfac.KFACFisher``), "friction" / "friction-pilot", "friction-exact"."""
    if spec is None or isinstance(spec, Preconditioner):
        return spec
    if isinstance(spec, str):
        name = spec.lower()
        if name in ("fisher", "fisher-full"):
            return Fisher("full")
        if name in ("friction", "friction-pilot"):
            return Friction("pilot")
        if name == "friction-exact":
            return Friction("exact")
        if name == "adam":
            return Adam()
        if name == "fisher-diag-layers":
            return Fisher("diag", route="layers")
        if name == "fisher-kfac":
            from .kfac import KFACFisher   # kfac imports this module's base class

            return KFACFisher()
        if name.startswith("fisher-"):
            return Fisher(name[len("fisher-"):])
    raise InputError(f"unknown preconditioner {spec!r}; use a Preconditioner or one of 'fisher-full', "
                     "'fisher-diag', 'fisher-lowrank', 'fisher-exact', 'fisher-kfac', 'friction-pilot', "
                     "'friction-exact', 'adam'")


class PreconditionContext:
    """What a preconditioner may look at during one replica: the energy, the current theta, the
    chain backend, the sampler and the interior step. ``gen`` is a generator of its own (derived
    from the replica seed) so that pilot runs and subsamples never perturb the chains' stream."""

    def __init__(self, energy, theta, state, sampler, mobility: float, dt: float, gen: torch.Generator,
                 dts=None):
        self.energy, self.theta, self.state, self.sampler = energy, theta, state, sampler
        self.mobility, self.dt, self.gen = mobility, dt, gen
        #: the run's layout: chain-move length after each update, the current update index and
        #: the per-update scalar learning rates (set by ``train`` before each update)
        self.dts = None if dts is None else np.asarray(dts, float)
        self.k = 0
        self.lrs = None
        #: a ``relaxation.ChainRelaxation`` registered by the preconditioner: tau from the training
        #: chains instead of a pilot run (see ``relaxation_time``)
        self.chain_relaxation = None

    def friction(self, kind: str = "pilot", rows: int = 1024, dt: float | None = None, *,
                 max_dense_params: int | None = None) -> dict:
        """{"friction", "fisher", "tau", "method", "form", ...} at the current theta.

        ``max_dense_params``: a pilot run with more parameters than this estimates only the
        diagonals (1-D "friction" and "fisher", form "diagonal (P > max_dense_params)")."""
        energy, theta, mu = self.energy, self.theta, self.mobility
        if kind == "pilot" and self.state.particles:
            x = self.state.x
            step = float(dt or self.dt)
            if not step > 0:
                raise InputError("a pilot run needs a positive chain step (pilot_dt)")
            diagonal = max_dense_params is not None and int(theta.numel()) > max_dense_params
            est = pilot_friction(energy, theta, x, self.sampler, dt=step, mobility=mu, gen=self.gen, rows=rows,
                                 diagonal=diagonal)
            est["form"] = "diagonal (P > max_dense_params)" if diagonal else "dense"
            est["method"] = f"pilot ({est['pilot_chains']} chains x {est['pilot_steps']} steps, window " \
                            f"{est['window']} steps{', diagonal' if diagonal else ''})"
        else:
            if self.state.on_grid:
                est = self.state.friction_exact(energy, theta, mu)
                est["method"] = "exact (Fokker-Planck generator)"
            else:
                est = {"friction": friction_exact(energy, theta, mu), "fisher": energy.fisher(theta),
                       "method": "exact (closed form)"}
            est.setdefault("form", "dense")
        est["tau"] = relaxation_time(est["fisher"], est["friction"])
        return est

    def relaxation_time(self, rows: int = 1024, max_dense_params: int | None = 128) -> tuple[float, str]:
        """tau = tr(I^-1 zeta) / P: exact where the backend or the energy knows it, else pilot (diagonal
        I and zeta, tau = mean_i tau_i, above ``max_dense_params`` parameters; see ``Friction``), or from
        the training chains themselves where a ``ChainRelaxation`` is registered (``chain_relaxation``)."""
        if self.chain_relaxation is not None:
            return self.chain_relaxation.tau()
        try:
            if not self.state.particles:
                est = self.friction("exact")
                return est["tau"], est["method"]
            return relaxation_time_exact(self.energy, self.theta, self.mobility), "exact (closed form)"
        except (InputError, NotImplementedError):
            est = self.friction("pilot", rows, max_dense_params=max_dense_params)
            return est["tau"], est["method"]
