"""``CompiledNeuralEnergy``: a ``NeuralEnergy`` whose per-update passes run as ``torch.compile``d
``torch.func`` graphs (``train(..., step_mode="compiled")``).

Passes per update of the eager path (``NeuralEnergy``): g_hat = one forward over data and chains
together plus one parameter backward; the work = one forward at theta_new plus one x-backward (the
move reuses grad_x); the heat = one forward at (theta_new, x_new). That forward at (theta_new,
x_new) is the chain half of the next update's g_hat, so here it also returns the chain term
E_rho[d_theta f] (one parameter backward), and the next g_hat adds only the data half:

    eager:     fwd(data + chains) + bwd_theta | fwd + bwd_x | fwd            (4 chain-sized forwards)
    compiled:  fwd(data) + bwd_theta          | fwd + bwd_x | fwd + bwd_theta (3 chain-sized forwards)

Each of the three functions (``_graphs``) is compiled once per energy, dtype and shape (chains and
data rows of the run; other shapes, e.g. a post-run AIS estimate, run eagerly). The random stream is
drawn eagerly by the sampler, as in the default path. Built for Euler-Maruyama moves: MALA's energy
evaluations of the proposal also pay the chain-term backward (correct, not faster).

What it guarantees (tests/test_compiled.py): the same update, the same random numbers, values equal
to the eager path's to float tolerance (compiled kernels round differently: ~1e-6 relative in float32,
~1e-12 in float64), so chains and theta are NOT bit-identical to ``step_mode="default"`` and drift
apart slowly by rounding; resume from a checkpoint is exact only within the compiled mode on the same
machine and torch build.
"""
from __future__ import annotations

import torch
from torch.func import functional_call, grad

from ..errors import InputError
from .neural import NeuralEnergy

F64 = torch.float64


def compile_available() -> str | None:
    """None if ``torch.compile`` can be used here, else why not."""
    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile"
    import importlib.util

    if importlib.util.find_spec("torch._dynamo") is None:  # pragma: no cover - depends on the torch build
        return f"torch {torch.__version__} has no torch._dynamo (torch.compile is unavailable)"
    return None


def compiled_problem(energy, backend: str, shards: int) -> str | None:
    """Why ``step_mode="compiled"`` cannot run this energy / backend (None: it can)."""
    if not isinstance(energy, NeuralEnergy):
        return (f"step_mode 'compiled' compiles NeuralEnergy networks, not {type(energy).__name__} (use "
                "step_mode 'fused' for HarmonicTrap / ExpFamily)")
    if backend != "particles" or shards != 1:
        return f"step_mode 'compiled' runs on unsharded particle chains, not backend {backend!r} with {shards} shard(s)"
    return compile_available()


def _graphs(module, names, shapes, sizes):
    """The three pure functions of an update, over flat parameters (compute dtype):

    * ``data_term(flat, buffers, data)`` = d_theta mean_data f;
    * ``f_and_chain_term(flat, buffers, x)`` = (f(x), d_theta mean_x f)   (heat, then the next g_hat);
    * ``f_and_grad_x(flat, buffers, x)`` = (f(x), grad_x f(x))            (work, then the move).
    """

    def f(flat, buffers, x):
        params = {n: p.view(s) for n, p, s in zip(names, torch.split(flat, sizes), shapes)}
        return functional_call(module, {**params, **buffers}, (x,)).reshape(x.shape[0])

    def data_term(flat, buffers, data):
        return grad(lambda p: f(p, buffers, data).mean())(flat)

    def f_and_chain_term(flat, buffers, x):
        def obj(p):
            e = f(p, buffers, x)
            return e.mean(), e
        g, e = grad(obj, has_aux=True)(flat)
        return e, g

    def f_and_grad_x(flat, buffers, x):
        def obj(z):
            e = f(flat, buffers, z)
            return e.sum(), e
        gx, e = grad(obj, has_aux=True)(x)
        return e, gx

    return data_term, f_and_chain_term, f_and_grad_x


class CompiledNeuralEnergy(NeuralEnergy):
    """The same energy as ``base`` (same module, parameters, confinement, dtype), its update passes
    compiled (module docstring). Built by ``CompiledNeuralEnergy.of(base)``; ``backend`` is
    ``torch.compile``'s ("inductor"; "aot_eager" traces the same graphs without code generation; None
    runs the same torch.func graphs uncompiled: the pass structure without the compiler, for tests)."""

    def __init__(self, *args, **kwargs):   # pragma: no cover - use .of(base)
        raise TypeError("use CompiledNeuralEnergy.of(neural_energy)")

    @classmethod
    def of(cls, base: NeuralEnergy, backend: str | None = "inductor") -> "CompiledNeuralEnergy":
        if not isinstance(base, NeuralEnergy):
            raise InputError(f"CompiledNeuralEnergy wraps a NeuralEnergy, not {type(base).__name__}")
        if isinstance(base, CompiledNeuralEnergy):
            return base
        # the compiled graphs live on the base energy: repeated train() calls reuse them
        cache = base.__dict__.setdefault("_compiled_graphs", {})
        if backend not in cache:
            graphs = _graphs(base.module, base._names, base._shapes, base._sizes)
            cache[backend] = graphs if backend is None else tuple(torch.compile(g, backend=backend, dynamic=False)
                                                                  for g in graphs)
        out = cls.__new__(cls)
        out.__dict__.update({k: v for k, v in base.__dict__.items() if k not in ("_cache", "_grad_x_cache")})
        out._cache = []
        out._grad_x_cache = None
        out._chain_term = None
        out._rows: set = set()
        out._graph_fns = cache[backend]
        out.backend = backend
        return out

    def __repr__(self):
        return super().__repr__()   # the same energy (checkpoint fingerprints carry step_mode apart)

    def _flat(self, theta, cdt):
        for th, version, dt, flat in self._flat_cache:
            if th is theta and version == theta._version and dt == cdt:
                return flat
        flat = theta.detach().to(cdt)
        self._flat_cache = [(theta, theta._version, cdt, flat)] + self._flat_cache[:2]
        return flat

    _flat_cache: list = []

    def _compiled_rows(self, n: int) -> bool:
        return n in self._rows

    def energy(self, x, theta, out=None):
        """E_theta(x), float64 (N,); on the run's chain shape also the chain term d_theta mean f(x),
        kept for the next ``grad_hat`` on these same tensors (objects and versions)."""
        if not self._compiled_rows(x.shape[0]):
            return super().energy(x, theta, out=out)
        cdt = self.dtype or x.dtype
        xc = x.detach().to(cdt)
        f, g = self._graph_fns[1](self._flat(theta, cdt), self._buffers_for(cdt, theta.device), xc)
        self._chain_term = (x, x._version, theta, theta._version, g)
        e = f.detach().to(F64)
        if self.confinement:
            e = e.add_(x.to(F64).square().sum(-1), alpha=0.5 * self.confinement)
        return out.copy_(e) if out is not None else e

    def energy_and_grad_x(self, x, theta):
        if not self._compiled_rows(x.shape[0]):
            return super().energy_and_grad_x(x, theta)
        cdt = self.dtype or x.dtype
        f, g = self._graph_fns[2](self._flat(theta, cdt), self._buffers_for(cdt, theta.device), x.detach().to(cdt))
        g = g.to(x.dtype)
        if self.confinement:
            g = g.add_(x, alpha=self.confinement)
        e = f.detach().to(F64)
        if self.confinement:
            e = e.add_(x.to(F64).square().sum(-1), alpha=0.5 * self.confinement)
        self._grad_x_cache = (x, x._version, theta, theta._version, g)
        return e

    def grad_hat(self, data, x, theta):
        """g_hat = d_theta mean f(data) - d_theta mean f(x), float64 (P,): the data half compiled, the
        chain half from the heat's pass when it was on these tensors, else compiled here."""
        theta = self._as_theta(theta)
        self._rows.update((x.shape[0], data.shape[0]))
        cdt = self.dtype or x.dtype
        flat, bufs = self._flat(theta, cdt), self._buffers_for(cdt, theta.device)
        hit, self._chain_term = self._chain_term, None
        if hit is not None and hit[0] is x and hit[1] == x._version and hit[2] is theta and hit[3] == theta._version:
            chain = hit[4]
        else:
            chain = self._graph_fns[1](flat, bufs, x.detach().to(cdt))[1]
        return (self._graph_fns[0](flat, bufs, data.detach().to(cdt)) - chain).to(F64)
