"""Neural energies: E_theta(x) = f_theta(x) + k |x|^2 / 2 for any torch module f, in kT.

theta is the module's parameters flattened in ``torch.nn.utils.parameters_to_vector`` order
(float64, shape (P,)). The module is evaluated functionally (``torch.func.functional_call``) at
parameters unflattened from theta, so training never writes into the user's module.
"""
from __future__ import annotations

import copy
import math

import torch
from torch.func import functional_call, grad, vmap

from .base import Capabilities, Energy
from ..errors import InputError, require_positive_int

F64 = torch.float64
ACTIVATIONS = {"silu": torch.nn.SiLU, "tanh": torch.nn.Tanh, "softplus": torch.nn.Softplus,
               "gelu": torch.nn.GELU, "relu": torch.nn.ReLU}
#: Layers that make a row's output random or dependent on the batch while in training mode.
_ROW_COUPLED = (torch.nn.modules.dropout._DropoutNd, torch.nn.modules.batchnorm._BatchNorm)


class NeuralEnergy(Energy):
    """E_theta(x) = f_theta(x) + confinement |x|^2 / 2, f a ``torch.nn.Module`` (N, d) -> (N,) or (N, 1).

    ``confinement`` k >= 0 adds a quadratic wall so that Z_theta = int exp(-E) dx exists for any
    bounded-below-at-infinity f that grows slower than k |x|^2 / 2 (e.g. an MLP with bounded or
    linearly growing activations); k = 0 leaves normalisability to the module.

    ``dtype``: the compute dtype of the module (parameters are cast to it); None follows the dtype
    of x (float32 chains -> float32, float64 data or chains -> float64). Outputs follow the
    protocol: energies and parameter gradients float64, ``grad_x`` in x's dtype.

    f must act row by row (no BatchNorm / Dropout in training mode: call ``module.eval()``) and be
    ``torch.func.vmap``-able. F, the Fisher information and exact equilibrium draws are unknown:
    pass initial chain states to ``train`` (e.g. Gaussian draws). Not linear in theta, not Gaussian.
    """

    # work and the move's gradient from one forward/backward; g_hat in one backward over data and chains
    capabilities = Capabilities(work_from_energy=True, fused_g_hat=True, out_buffer=True)

    def __init__(self, module, dim: int, *, confinement: float = 0.0, dtype=None, label: str | None = None,
                 chunk_size: int = 4096):
        if not isinstance(module, torch.nn.Module):
            raise InputError(f"module must be a torch.nn.Module mapping x (N, d) to energies (N,), "
                             f"got {type(module).__name__}")
        self.dim = require_positive_int("dim", dim)
        try:
            k = float(confinement)
        except (TypeError, ValueError):
            raise InputError(f"confinement must be a number >= 0, got {confinement!r}") from None
        if not (0.0 <= k < math.inf):
            raise InputError(f"confinement must be finite and >= 0, got {confinement!r}")
        if dtype not in (None, torch.float32, F64):
            raise InputError(f"dtype must be None, torch.float32 or torch.float64, got {dtype!r}")
        self.module, self.confinement, self.dtype = module, k, dtype
        self.chunk_size = require_positive_int("chunk_size", chunk_size)
        self.label = label or type(module).__name__
        named = dict(module.named_parameters())
        self._names = list(named)
        self._shapes = [p.shape for p in named.values()]
        self._sizes = [p.numel() for p in named.values()]
        self.n_params = sum(self._sizes)
        if self.n_params == 0:
            raise InputError(f"module {self.label} has no parameters: there is nothing to learn")
        self._buffers: dict = {}   # (dtype, device) -> floating buffers cast once
        self._cache: list = []     # [(theta, version, dtype, params + buffers)], most recent first
        self._check_module()

    def __repr__(self):
        return (f"NeuralEnergy({self.label}, dim={self.dim}, n_params={self.n_params}, "
                f"confinement={self.confinement:g})")

    def _check_module(self):
        stochastic = [type(m).__name__ for m in self.module.modules() if m.training and isinstance(m, _ROW_COUPLED)]
        if stochastic:
            raise InputError(f"module {self.label} has {', '.join(stochastic)} in training mode (random or mixing "
                             "rows: one chain's energy would depend on the others): call module.eval()")
        like = next(self.module.parameters())
        cdt = self.dtype or (like.dtype if like.dtype in (torch.float32, F64) else torch.float32)
        x = torch.linspace(-1.0, 1.0, 2 * self.dim, dtype=cdt, device=like.device).reshape(2, self.dim)
        try:
            with torch.no_grad():
                params = self._params(self.theta0(), cdt)
                out = functional_call(self.module, params, (x,))
                one = functional_call(self.module, params, (x[:1],))
        except Exception as exc:  # a module that cannot run on (N, dim) inputs is an input problem
            raise InputError(f"module {self.label} failed on a probe input of shape (2, {self.dim}): {exc}") from None
        if not torch.is_tensor(out) or tuple(out.shape) not in ((2,), (2, 1)):
            shape = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
            raise InputError(f"module {self.label} must map x (N, {self.dim}) to energies (N,) or (N, 1); "
                             f"got {shape} for N = 2")
        if not bool(torch.isfinite(out).all()):
            raise InputError(f"module {self.label} returns NaN or infinite energies on a probe input of shape "
                             f"(2, {self.dim}) (values {out.reshape(-1).tolist()}): check its parameters")
        if not torch.allclose(out.reshape(-1)[:1], torch.as_tensor(one).reshape(-1), rtol=1e-4, atol=1e-5):
            raise InputError(f"module {self.label} mixes rows (the energy of one chain depends on the others): "
                             "energies must be computed row by row")

    # -- parameters <-> theta -------------------------------------------------------------
    def theta0(self) -> torch.Tensor:
        """The module's current parameters as theta (float64, shape (P,)): pass it as ``theta0``."""
        vec = torch.nn.utils.parameters_to_vector(self.module.parameters())
        return vec.detach().to(F64).clone()

    def module_at(self, theta) -> torch.nn.Module:
        """A copy of the module with its parameters set to theta (the user's module is untouched)."""
        theta = self._as_theta(theta)
        out = copy.deepcopy(self.module)
        like = next(out.parameters())
        with torch.no_grad():
            torch.nn.utils.vector_to_parameters(theta.to(dtype=like.dtype, device=like.device), out.parameters())
        return out

    def _as_theta(self, theta) -> torch.Tensor:
        theta = torch.as_tensor(theta)
        if theta.ndim != 1 or theta.numel() != self.n_params:
            raise InputError(f"theta must have shape ({self.n_params},) for {self!r}, got {tuple(theta.shape)}")
        return theta

    def _unflatten(self, flat: torch.Tensor) -> dict:
        parts = torch.split(flat, self._sizes)
        return {n: p.view(s) for n, p, s in zip(self._names, parts, self._shapes)}

    def _buffers_for(self, dtype, device) -> dict:
        key = (dtype, device)
        if key not in self._buffers:
            self._buffers[key] = {n: (b.detach().to(device=device, dtype=dtype) if b.is_floating_point()
                                      else b.detach().to(device)) for n, b in self.module.named_buffers()}
        return self._buffers[key]

    def _params(self, theta: torch.Tensor, dtype) -> dict:
        """Parameters and buffers at theta in ``dtype``, cached per theta object and version.

        The cache holds a reference to theta, so a freed tensor's address is never mistaken for it;
        an in-place change of theta bumps its version and invalidates the entry."""
        for th, version, dt, params in self._cache:
            if th is theta and version == theta._version and dt == dtype:
                return params
        self._as_theta(theta)
        params = {**self._unflatten(theta.detach().to(dtype)), **self._buffers_for(dtype, theta.device)}
        self._cache = [(theta, theta._version, dtype, params)] + self._cache[:3]
        return params

    def _f(self, params, x):
        """f_theta(x) in the compute dtype, shape (N,)."""
        return functional_call(self.module, params, (x,)).reshape(x.shape[0])

    # -- the Energy protocol --------------------------------------------------------------
    def energy(self, x, theta, out=None):
        """E_theta(x) = f_theta(x) + k |x|^2 / 2 per chain, float64, shape (N,) (no autograd graph)."""
        cdt = self.dtype or x.dtype
        with torch.no_grad():
            e = self._f(self._params(theta, cdt), x.to(cdt)).to(F64)
            if self.confinement:
                e = e.add_(x.to(F64).square().sum(-1), alpha=0.5 * self.confinement)
        if out is not None:
            return out.copy_(e)
        return e

    # (capabilities.work_from_energy: ParticleChains computes the work as E_theta_new(x) minus its
    # stored E_theta(x) with ``energy_and_grad_x``: one forward instead of two, and the chain move
    # reuses its gradient)

    def energy_and_grad_x(self, x, theta):
        """E_theta(x) (float64, (N,)) and grad_x E from one forward and one backward; the gradient is
        kept for the next ``grad_x(x, theta)`` on the same tensors (same objects and versions), which
        is the chain move that follows the frozen-chain work of an update."""
        f, g = self._f_and_grad_x(x, theta)
        e = f.detach().to(F64)
        if self.confinement:
            e = e.add_(x.to(F64).square().sum(-1), alpha=0.5 * self.confinement)
        self._grad_x_cache = (x, x._version, theta, theta._version, g)
        return e

    def _f_and_grad_x(self, x, theta):
        """(f_theta(x) in the compute dtype, grad_x E = grad_x f + k x in x's dtype): one backward."""
        cdt = self.dtype or x.dtype
        params = self._params(theta, cdt)
        with torch.enable_grad():
            xr = x.detach().to(cdt).requires_grad_(True)
            f = self._f(params, xr)
            (g,) = torch.autograd.grad(f.sum(), xr)
        g = g.to(x.dtype)
        if self.confinement:
            g = g.add_(x, alpha=self.confinement)
        return f, g

    def grad_x(self, x, theta):
        """grad_x E = grad_x f_theta(x) + k x, shape (N, d) in x's dtype (one backward, no graph kept)."""
        hit = getattr(self, "_grad_x_cache", None)
        if hit is not None:
            self._grad_x_cache = None
            if hit[0] is x and hit[1] == x._version and hit[2] is theta and hit[3] == theta._version:
                return hit[4]
        return self._f_and_grad_x(x, theta)[1]

    def grad_theta(self, x, theta, chunk_size: int | None = None):
        """d_theta E per sample, float64, shape (N, P), by vmap(grad) over chunks of ``chunk_size`` rows.

        Memory: the (N, P) float64 output plus one chunk's per-sample gradients in the compute dtype."""
        cdt = self.dtype or x.dtype
        params = self._params(theta, cdt)
        names = self._names
        pnames = set(names)
        fixed = {n: v for n, v in params.items() if n not in pnames}

        def one(p, xi):
            return functional_call(self.module, {**p, **fixed}, (xi.unsqueeze(0),)).sum()

        per_sample = vmap(grad(one), in_dims=(None, 0))
        p_only = {n: params[n] for n in names}
        n_rows, step = x.shape[0], chunk_size or self.chunk_size
        out = torch.empty((n_rows, self.n_params), dtype=F64, device=x.device)
        for i in range(0, n_rows, step):
            xc = x[i:i + step].detach().to(cdt)
            gs = per_sample(p_only, xc)
            col = 0
            for n, size in zip(names, self._sizes):
                out[i:i + xc.shape[0], col:col + size] = gs[n].reshape(xc.shape[0], size)
                col += size
        return out

    def mean_grad_theta(self, x, theta, chunk_size: int = 65536):
        """E_rho[d_theta E] over the rows of x, float64, shape (P,): one backward of the mean energy
        per ``chunk_size`` rows (no per-sample gradients)."""
        theta = self._as_theta(theta)
        cdt = self.dtype or x.dtype
        total = torch.zeros(self.n_params, dtype=F64, device=theta.device)
        with torch.enable_grad():
            flat = theta.detach().to(cdt).requires_grad_(True)
            params = {**self._unflatten(flat), **self._buffers_for(cdt, theta.device)}
            for i in range(0, x.shape[0], chunk_size):
                (g,) = torch.autograd.grad(self._f(params, x[i:i + chunk_size].detach().to(cdt)).sum(), flat,
                                           allow_unused=True)
                if g is not None:
                    total += g.to(F64)
        return total / x.shape[0]

    def grad_hat(self, data, x, theta):
        """g_hat = E_data[d_theta E] - E_chains[d_theta E] (float64, (P,)) from one backward of
        mean f(data) - mean f(x) (the confinement does not depend on theta); ``data`` in the chains'
        dtype. The update loop uses it when no preconditioner needs the chain statistics alone."""
        theta = self._as_theta(theta)
        cdt = self.dtype or x.dtype
        with torch.enable_grad():
            flat = theta.detach().to(cdt).requires_grad_(True)
            params = {**self._unflatten(flat), **self._buffers_for(cdt, theta.device)}
            both = torch.cat([data.detach().to(cdt), x.detach().to(cdt)])
            f = self._f(params, both)
            n = data.shape[0]
            objective = f[:n].mean() - f[n:].mean()
            (g,) = torch.autograd.grad(objective, flat, allow_unused=True)
        return torch.zeros(self.n_params, dtype=F64, device=theta.device) if g is None else g.to(F64)

    def delta_energy(self, x, theta_old, theta_new, out=None):
        """W = E_{theta_new}(x) - E_{theta_old}(x) per chain (chains frozen), float64; the
        confinement does not depend on theta and cancels."""
        cdt = self.dtype or x.dtype
        with torch.no_grad():
            xc = x.to(cdt)
            w = self._f(self._params(theta_new, cdt), xc).to(F64) - self._f(self._params(theta_old, cdt), xc).to(F64)
        if out is not None:
            return out.copy_(w)
        return w

    def check_theta(self, theta):
        if theta.numel() != self.n_params:
            return f"theta has {theta.numel()} entries, the module {self.n_params} parameters"
        if not bool(torch.isfinite(theta).all()):
            bad = int((~torch.isfinite(theta)).sum())
            return f"{bad} of the {self.n_params} network parameters are NaN or infinite"
        return None

    def sample_equilibrium(self, theta, n, *, gen, dtype=torch.float32):
        raise NotImplementedError(
            f"{self!r} cannot draw exact equilibrium samples (Z_theta is unknown): pass initial chain "
            f"states to train(), e.g. chains=torch.randn(n_chains, {self.dim}, generator=gen) or "
            "chains=(mean, variance) for a Gaussian start")

    # -- built-in ---------------------------------------------------------------------------
    @classmethod
    def mlp(cls, dim: int = 2, hidden=(64, 64), activation: str = "silu", confinement: float = 0.1, *,
            gen, dtype=None) -> "NeuralEnergy":
        """f = MLP dim -> hidden... -> 1 with ``activation``; weights and biases ~ U(-1/sqrt(fan_in),
        1/sqrt(fan_in)) (torch's Linear default) drawn from ``gen`` (a torch.Generator or an int seed).
        2-64-64-1 has 4,417 parameters."""
        dim = require_positive_int("dim", dim)
        widths = [require_positive_int("hidden width", h) for h in hidden]
        if activation not in ACTIVATIONS:
            raise InputError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
        if isinstance(gen, int) and not isinstance(gen, bool):
            gen = torch.Generator().manual_seed(gen)
        if not isinstance(gen, torch.Generator):
            raise InputError(f"gen must be a torch.Generator or an int seed, got {gen!r}")
        layers, fan_in = [], dim
        for width in [*widths, 1]:
            lin = torch.nn.utils.skip_init(torch.nn.Linear, fan_in, width)  # no draw from the global RNG
            bound = 1.0 / math.sqrt(fan_in)
            with torch.no_grad():
                lin.weight.uniform_(-bound, bound, generator=gen)
                lin.bias.uniform_(-bound, bound, generator=gen)
            layers += [lin, ACTIVATIONS[activation]()]
            fan_in = width
        module = torch.nn.Sequential(*layers[:-1])
        label = f"mlp({'-'.join(str(w) for w in [dim, *widths, 1])}, {activation})"
        return cls(module, dim, confinement=confinement, dtype=dtype, label=label)
