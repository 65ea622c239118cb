"""Gaussian-Bernoulli RBM as an energy of the visible units, hidden units summed out exactly.

Joint energy (visible v in R^D, hidden h in {0, 1}^H, fixed visible standard deviations sigma):

    E(v, h) = sum_i (v_i - b_i)^2 / (2 sigma_i^2) - c . h - (v / sigma)^T W h

The energy that ``train`` sees is the free energy of the visible units,

    E_theta(v) = -ln sum_h exp(-E(v, h)) = sum_i (v_i - b_i)^2 / (2 sigma_i^2)
                 - sum_j softplus(c_j + (W^T (v / sigma))_j),

with theta = (W (D x H, row-major), b (D), c (H)), float64. Its partition function is exact when
2^H is small enough to enumerate (integrating v out of each hidden configuration):

    ln Z = (D/2) ln 2 pi + sum_i ln sigma_i + logsumexp_h [c . h + (b / sigma)^T W h + |W h|^2 / 2]

and so is equilibrium sampling (h from that categorical law, then v ~ N(b + sigma W h, sigma^2)).
``brute_force_free_energy`` and ``brute_force_log_partition`` recompute both from the joint
energy by explicit enumeration (and quadrature over v for D <= 2): the independent reference.
"""
from __future__ import annotations

import torch

from .base import LOG_2PI, Capabilities, Energy
from ..errors import InputError, require_positive_int

F64 = torch.float64
#: largest hidden layer whose 2^H configurations are enumerated for ln Z and exact draws
MAX_ENUMERATED_HIDDEN = 20


def hidden_configurations(n_hidden: int, start: int = 0, stop: int | None = None) -> torch.Tensor:
    """Rows start..stop-1 of all 2^H binary vectors (bit j of the row index is h_j), float64."""
    stop = 2 ** n_hidden if stop is None else stop
    idx = torch.arange(start, stop, dtype=torch.int64)
    return ((idx[:, None] >> torch.arange(n_hidden, dtype=torch.int64)) & 1).to(F64)


class GaussianBernoulliRBM(Energy):
    """E_theta(v) = |(v - b) / sigma|^2 / 2 - sum_j softplus(c_j + (W^T (v / sigma))_j), in kT.

    ``sigma``: fixed visible standard deviations (a number or D numbers; not learned, so MALA's
    step size can be set once: standardise the data and keep sigma = 1). Energies, parameter
    gradients and ln Z are float64; ``grad_x`` follows x's dtype. ``free_energy`` (F = -ln Z) and
    ``sample_equilibrium`` are exact for n_hidden <= MAX_ENUMERATED_HIDDEN (2^H configurations).
    """

    capabilities = Capabilities(out_buffer=True)

    def __init__(self, n_visible: int, n_hidden: int, *, sigma=1.0, chunk: int = 1 << 14):
        self.dim = require_positive_int("n_visible", n_visible)
        self.n_hidden = require_positive_int("n_hidden", n_hidden)
        s = torch.as_tensor(sigma, dtype=F64).reshape(-1)
        if s.numel() == 1:
            s = s.expand(self.dim).clone()
        if s.numel() != self.dim or not bool(torch.isfinite(s).all() and (s > 0).all()):
            raise InputError(f"sigma must be a positive number or {self.dim} positive numbers, got {sigma!r}")
        self.sigma = s
        self.chunk = require_positive_int("chunk", chunk)
        self.n_params = self.dim * self.n_hidden + self.dim + self.n_hidden

    def __repr__(self):
        return f"GaussianBernoulliRBM(n_visible={self.dim}, n_hidden={self.n_hidden})"

    # -- parameters ------------------------------------------------------------------------
    def unpack(self, theta) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(W (D, H), b (D,), c (H,)) views of theta."""
        theta = torch.as_tensor(theta)
        if theta.ndim != 1 or theta.numel() != self.n_params:
            raise InputError(f"theta must have shape ({self.n_params},) for {self!r}, got {tuple(theta.shape)}")
        D, H = self.dim, self.n_hidden
        return theta[:D * H].view(D, H), theta[D * H:D * H + D], theta[D * H + D:]

    @staticmethod
    def pack(W, b, c) -> torch.Tensor:
        return torch.cat([torch.as_tensor(W, dtype=F64).reshape(-1), torch.as_tensor(b, dtype=F64).reshape(-1),
                          torch.as_tensor(c, dtype=F64).reshape(-1)])

    def init_theta(self, *, gen, weight_std: float = 0.01, data=None) -> torch.Tensor:
        """W ~ N(0, weight_std^2) from ``gen``, b = data mean (or 0), c = 0."""
        if isinstance(gen, int) and not isinstance(gen, bool):
            gen = torch.Generator().manual_seed(gen)
        W = weight_std * torch.randn(self.dim, self.n_hidden, dtype=F64, generator=gen)
        b = torch.zeros(self.dim, dtype=F64) if data is None else torch.as_tensor(data, dtype=F64).mean(0)
        return self.pack(W, b, torch.zeros(self.n_hidden, dtype=F64))

    def base_theta(self, theta) -> torch.Tensor:
        """theta with W = 0: independent units, ln Z in closed form (the AIS start)."""
        W, b, c = self.unpack(theta)
        return self.pack(torch.zeros_like(W), b, c)

    def log_partition_independent(self, theta) -> float:
        """ln Z at W = 0: (D/2) ln 2 pi + sum ln sigma + sum_j softplus(c_j) (W must be zero)."""
        W, b, c = self.unpack(theta)
        if bool((W != 0).any()):
            raise InputError("log_partition_independent needs W = 0 (use base_theta)")
        return float(0.5 * self.dim * LOG_2PI + torch.log(self.sigma).sum() + torch.nn.functional.softplus(c).sum())

    # -- the Energy protocol -----------------------------------------------------------------
    def _pre(self, x64, W, c):
        return c + (x64 / self.sigma) @ W

    def energy(self, x, theta, out=None):
        """E_theta(v) per row, float64, shape (N,)."""
        W, b, c = self.unpack(theta)
        x64 = x.to(F64)
        e = (((x64 - b) / self.sigma) ** 2).sum(-1) * 0.5 - torch.nn.functional.softplus(self._pre(x64, W, c)).sum(-1)
        return e if out is None else out.copy_(e)

    def grad_x(self, x, theta):
        """(v - b) / sigma^2 - (W sigmoid(c + W^T v / sigma)) / sigma, in x's dtype."""
        W, b, c = self.unpack(theta)
        x64 = x.to(F64)
        p = torch.sigmoid(self._pre(x64, W, c))
        return ((x64 - b) / self.sigma ** 2 - (p @ W.T) / self.sigma).to(x.dtype)

    def grad_theta(self, x, theta):
        """Per row: d_W = -(v / sigma) p^T, d_b = -(v - b) / sigma^2, d_c = -p, p = sigmoid(c + W^T v/sigma)."""
        W, b, c = self.unpack(theta)
        x64 = x.to(F64)
        p = torch.sigmoid(self._pre(x64, W, c))
        u = x64 / self.sigma
        dW = -(u[:, :, None] * p[:, None, :]).reshape(x64.shape[0], -1)
        return torch.cat([dW, -(x64 - b) / self.sigma ** 2, -p], dim=1)

    def mean_grad_theta(self, x, theta):
        """E_rows[d_theta E] without forming the (N, P) matrix."""
        W, b, c = self.unpack(theta)
        x64 = x.to(F64)
        p = torch.sigmoid(self._pre(x64, W, c))
        n = x64.shape[0]
        dW = -((x64 / self.sigma).T @ p) / n
        return torch.cat([dW.reshape(-1), -((x64 - b) / self.sigma ** 2).mean(0), -p.mean(0)])

    def check_theta(self, theta):
        if not bool(torch.isfinite(theta).all()):
            return f"{int((~torch.isfinite(theta)).sum())} RBM parameters are NaN or infinite"
        return None

    # -- exact partition function and draws (small H) ---------------------------------------
    def _require_enumerable(self, what: str):
        if self.n_hidden > MAX_ENUMERATED_HIDDEN:
            raise NotImplementedError(f"{what} enumerates 2^H hidden states: H = {self.n_hidden} exceeds "
                                      f"{MAX_ENUMERATED_HIDDEN}; use evaluate.ais_log_partition")

    def _hidden_log_weights(self, theta):
        """ln w(h) = c . h + (b / sigma)^T W h + |W h|^2 / 2 for all h, in chunks (generator)."""
        W, b, c = self.unpack(theta)
        bw = (b / self.sigma) @ W
        for start in range(0, 2 ** self.n_hidden, self.chunk):
            h = hidden_configurations(self.n_hidden, start, min(start + self.chunk, 2 ** self.n_hidden))
            wh = h @ W.T
            yield h, h @ (c + bw) + 0.5 * (wh * wh).sum(-1)

    def log_partition(self, theta) -> float:
        """ln Z_theta, exact by enumerating the 2^H hidden configurations (H <= 20)."""
        self._require_enumerable("log_partition")
        parts = torch.stack([torch.logsumexp(lw, 0) for _, lw in self._hidden_log_weights(theta)])
        return float(0.5 * self.dim * LOG_2PI + torch.log(self.sigma).sum() + torch.logsumexp(parts, 0))

    def free_energy(self, theta) -> float:
        """F = -ln Z_theta (exact, H <= 20)."""
        return -self.log_partition(theta)

    def sample_equilibrium(self, theta, n, *, gen, dtype=torch.float32):
        """Exact draws of p_theta(v): h from its marginal (enumerated), then v ~ N(b + sigma W h, sigma^2)."""
        self._require_enumerable("sample_equilibrium")
        n = require_positive_int("n", n)
        W, b, _ = self.unpack(theta)
        lw = torch.cat([lw for _, lw in self._hidden_log_weights(theta)])
        idx = torch.multinomial(torch.softmax(lw, 0), n, replacement=True, generator=gen)
        h = ((idx[:, None] >> torch.arange(self.n_hidden)) & 1).to(F64)      # bit j of the index is h_j
        z = torch.randn(n, self.dim, dtype=F64, generator=gen)
        return (b + self.sigma * (h @ W.T) + self.sigma * z).to(dtype)

    # -- references ----------------------------------------------------------------------------
    def joint_energy(self, v, h, theta) -> torch.Tensor:
        """E(v, h) for rows v (N, D) and h (N, H) (or broadcastable), float64."""
        W, b, c = self.unpack(theta)
        v64, h64 = torch.as_tensor(v, dtype=F64), torch.as_tensor(h, dtype=F64)
        return (0.5 * (((v64 - b) / self.sigma) ** 2).sum(-1) - (h64 * c).sum(-1)
                - ((v64 / self.sigma) @ W * h64).sum(-1))


def brute_force_free_energy(rbm: GaussianBernoulliRBM, theta, v) -> torch.Tensor:
    """-ln sum_h exp(-E(v, h)) by explicit enumeration of h for every row of v (small H only)."""
    if rbm.n_hidden > 16:
        raise InputError("brute_force_free_energy enumerates 2^H states per row: keep H <= 16")
    v64 = torch.as_tensor(v, dtype=F64)
    h = hidden_configurations(rbm.n_hidden)                          # (K, H)
    e = rbm.joint_energy(v64[:, None, :], h[None, :, :], theta)      # (N, K)
    return -torch.logsumexp(-e, dim=1)


def brute_force_log_partition(rbm: GaussianBernoulliRBM, theta, *, half_width: float = 12.0,
                              n: int = 801) -> float:
    """ln Z = ln int sum_h exp(-E(v, h)) dv by enumeration of h and the trapezoid rule over v on
    [-half_width, half_width]^D (centred on b), D <= 2: independent of the closed form."""
    if rbm.dim > 2:
        raise InputError("brute_force_log_partition integrates over v on a grid: keep n_visible <= 2")
    _, b, _ = rbm.unpack(theta)
    axes = [torch.linspace(float(bi) - half_width, float(bi) + half_width, n, dtype=F64) for bi in b]
    h = axes[0][1] - axes[0][0]
    mesh = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, rbm.dim)
    log_w = torch.zeros(mesh.shape[0], dtype=F64)
    for ax_i, ax in enumerate(axes):
        wt = torch.full((n,), float(h), dtype=F64)
        wt[0] = wt[-1] = 0.5 * float(h)
        idx = torch.arange(mesh.shape[0]) // (n ** (rbm.dim - 1 - ax_i)) % n
        log_w = log_w + torch.log(wt[idx])
    f = brute_force_free_energy(rbm, theta, mesh)
    return float(torch.logsumexp(-f + log_w, 0))
