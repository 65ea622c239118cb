"""The true loss of a neural EBM: ln Z by quadrature on a 2-D grid, or by AIS, and the NLL.

* ``grid_log_partition(energy, theta, box=..., n=...)``: ln Z = ln int exp(-E_theta(x)) dx by the
  trapezoid rule on an n x n grid over ``box`` (d = 1 or 2). For a smooth density that has decayed
  at the box edge the rule converges faster than any power of the spacing h, so the difference to
  the same rule at spacing 2h (every other point), ``error_estimate``, bounds the error of the
  coarse value and grossly over-estimates that of the fine one; ``boundary_mass`` (the probability
  on the outer 5 % band of the box) flags a box that is too small. ``converged(tol)`` checks both.
* ``GridQuadrature(energy, box=..., n=...)``: the same energy with ``free_energy`` by that
  quadrature, so ``train`` records the exact true loss L(theta), Delta F and the excess work
  W_ex = <W> - Delta F at every recorded update, and Identity 1's residual at the end. The seconds
  spent in quadrature are counted (``eval_seconds``) so that training time can exclude them.
* ``grid_sample``: draws from p_theta on the grid (a grid point by its weight plus a uniform jitter
  within its cell): chains that start in equilibrium up to O(h).
* ``ais_log_partition``: ln Z with its standard error by annealed importance sampling
  (``mindiss.free_energy.ais``) on the linear path in theta from a tractable base: for a
  ``NeuralEnergy`` the network with its last linear layer zeroed (E = k |x|^2 / 2, k the
  confinement; then the path is the geometric path exp(-k|x|^2/2 - beta f(x))); for a
  ``GaussianBernoulliRBM`` the same RBM with W = 0. Base draws are exact.
* ``nll(energy, theta, data, log_partition)``: L = E_data[E_theta] + ln Z per sample, with its error.

Units: nats (kT) per sample; F = -ln Z.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import torch

from ..energies.base import Energy
from ..errors import InputError, require_positive, require_positive_int

F64 = torch.float64


# ---------------------------------------------------------------------------- grid quadrature

def _box(box, dim):
    if dim not in (1, 2):
        raise InputError(f"grid quadrature needs an energy of dimension 1 or 2, not {dim}")
    try:
        b = [(float(lo), float(hi)) for lo, hi in ([box] * dim if _is_pair(box) else box)]
    except (TypeError, ValueError):
        raise InputError(f"box must be (lo, hi) or one (lo, hi) per dimension, got {box!r}") from None
    if len(b) != dim or any(not (math.isfinite(lo) and math.isfinite(hi) and hi > lo) for lo, hi in b):
        raise InputError(f"box must be {dim} finite intervals (lo < hi), got {box!r}")
    return tuple(b)


def _is_pair(box):
    return len(box) == 2 and all(isinstance(v, (int, float)) for v in box)


@dataclass(frozen=True)
class GridLogPartition:
    """ln Z of p_theta by the trapezoid rule, with its convergence diagnostics (nats)."""

    log_partition: float          # at spacing h (n points per axis)
    log_partition_coarse: float   # at spacing 2h (every other point)
    error_estimate: float         # |fine - coarse|: an upper estimate of the coarse value's error
    boundary_mass: float          # probability on the outer 5 % band of the box (truncation flag)
    n: int
    box: tuple
    spacing: tuple

    @property
    def free_energy(self) -> float:
        """F = -ln Z."""
        return -self.log_partition

    def converged(self, tol: float = 1e-6) -> bool:
        return self.error_estimate <= tol and self.boundary_mass <= tol


def grid_points(box, n: int, dim: int):
    """(points (n^dim, dim) float64, log trapezoid weights (n^dim,), axes, spacings)."""
    b = _box(box, dim)
    n = require_positive_int("n", n)
    if n < 5 or n % 2 == 0:
        raise InputError(f"n must be odd and >= 5 (the coarse rule uses every other point), got {n}")
    axes = [torch.linspace(lo, hi, n, dtype=F64) for lo, hi in b]
    hs = tuple((hi - lo) / (n - 1) for lo, hi in b)
    logw1 = []
    for h in hs:
        w = torch.full((n,), h, dtype=F64)
        w[0] = w[-1] = 0.5 * h
        logw1.append(torch.log(w))
    if dim == 1:
        return axes[0][:, None], logw1[0], axes, hs
    mesh = torch.stack(torch.meshgrid(axes[0], axes[1], indexing="ij"), -1).reshape(-1, 2)
    logw = (logw1[0][:, None] + logw1[1][None, :]).reshape(-1)
    return mesh, logw, axes, hs


def _energies(energy, theta, points, chunk=1 << 16, dtype=F64):
    theta = torch.as_tensor(theta, dtype=F64)
    return torch.cat([energy.energy(points[i:i + chunk].to(dtype), theta) for i in range(0, points.shape[0], chunk)])


def grid_log_partition(energy: Energy, theta, *, box, n: int = 257, dtype=F64) -> GridLogPartition:
    """ln Z_theta = ln int exp(-E_theta(x)) dx by the trapezoid rule on an n (x n) grid over ``box``.

    ``dtype``: of the grid points handed to the energy (a NeuralEnergy computes in it; float32 is
    ~4x faster for MLPs, with ln Z errors ~1e-7); weights and sums are float64."""
    dim = energy.dim
    pts, logw, _, hs = grid_points(box, n, dim)
    e = _energies(energy, theta, pts, dtype=dtype)
    if not bool(torch.isfinite(e).all()):
        raise InputError("the energy is not finite everywhere on the grid")
    fine = float(torch.logsumexp(-e + logw, 0))
    shape = (n,) * dim
    sub = (slice(None, None, 2),) * dim
    e_c = (-e).reshape(shape)[sub].reshape(-1)
    m = (n + 1) // 2
    wc = []
    for h in hs:
        w = torch.full((m,), 2 * h, dtype=F64)
        w[0] = w[-1] = h
        wc.append(torch.log(w))
    logw_c = wc[0] if dim == 1 else (wc[0][:, None] + wc[1][None, :]).reshape(-1)
    coarse = float(torch.logsumexp(e_c + logw_c, 0))
    band = max(1, int(math.ceil(0.05 * (n - 1))))
    idx = torch.arange(n)
    edge1 = (idx < band) | (idx >= n - band)
    edge = edge1 if dim == 1 else (edge1[:, None] | edge1[None, :]).reshape(-1)
    p = torch.softmax(-e + logw, 0)
    return GridLogPartition(fine, coarse, abs(fine - coarse), float(p[edge].sum()), n, _box(box, dim), hs)


def grid_convergence(energy: Energy, theta, *, box, ns=(33, 65, 129, 257)) -> list[GridLogPartition]:
    """``grid_log_partition`` at each n (for a convergence table / plot)."""
    return [grid_log_partition(energy, theta, box=box, n=k) for k in ns]


def grid_sample(energy: Energy, theta, n: int, *, box, n_grid: int = 257, gen, dtype=torch.float32,
                grid_dtype=F64):
    """n draws of p_theta up to the grid's resolution: a grid point with probability proportional
    to its trapezoid weight times exp(-E), plus a uniform jitter of +-h/2 per axis (clipped to the box)."""
    n = require_positive_int("n", n)
    pts, logw, _, hs = grid_points(box, n_grid, energy.dim)
    p = torch.softmax(-_energies(energy, theta, pts, dtype=grid_dtype) + logw, 0)
    idx = torch.multinomial(p, n, replacement=True, generator=gen)
    h = torch.tensor(hs, dtype=F64)
    x = pts[idx] + (torch.rand(n, energy.dim, dtype=F64, generator=gen) - 0.5) * h
    lo = torch.tensor([b[0] for b in _box(box, energy.dim)], dtype=F64)
    hi = torch.tensor([b[1] for b in _box(box, energy.dim)], dtype=F64)
    return torch.maximum(torch.minimum(x, hi), lo).to(dtype)


# ---------------------------------------------------------------------------- energy wrappers

class EnergyWrapper(Energy):
    """Delegates the Energy protocol (and any other attribute) to ``inner``; subclasses override."""

    def __init__(self, inner: Energy):
        self.inner = inner
        self.dim, self.n_params = inner.dim, inner.n_params
        # the inner energy's fast paths stay (methods delegate), but not its quadratic closed forms:
        # a wrapper changes F (grid quadrature) or the data term
        self.capabilities = replace(inner.capabilities, quadratic=False, grad_theta_from_mean=False, loss_many=False,
                                    out_buffer=True)   # energy / delta_energy below take out= either way
        self._out = inner.capabilities.out_buffer

    def __getattr__(self, name):
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def energy(self, x, theta, out=None):
        if self._out:
            return self.inner.energy(x, theta, out=out)
        e = self.inner.energy(x, theta)
        return e if out is None else out.copy_(e)

    def grad_x(self, x, theta):
        return self.inner.grad_x(x, theta)

    def grad_theta(self, x, theta):
        return self.inner.grad_theta(x, theta)

    def mean_grad_theta(self, x, theta):
        return self.inner.mean_grad_theta(x, theta)

    def delta_energy(self, x, theta_old, theta_new, out=None):
        if self._out:
            return self.inner.delta_energy(x, theta_old, theta_new, out=out)
        w = self.inner.delta_energy(x, theta_old, theta_new)
        return w if out is None else out.copy_(w)

    def free_energy(self, theta):
        return self.inner.free_energy(theta)

    def fisher(self, theta):
        return self.inner.fisher(theta)

    def check_theta(self, theta):
        return self.inner.check_theta(theta)

    def sample_equilibrium(self, theta, n, *, gen, dtype=torch.float32):
        return self.inner.sample_equilibrium(theta, n, gen=gen, dtype=dtype)


class GridQuadrature(EnergyWrapper):
    """``energy`` with F(theta) = -ln Z by ``grid_log_partition`` (d = 1, 2) and exact grid draws.

    With it, ``train`` reports the true loss, Delta F and W_ex at every recorded update and the
    residual of Identity 1. ``eval_seconds`` accumulates the time spent in quadrature (subtract it
    from a training run's wall time); ``last`` is the latest ``GridLogPartition`` (its
    ``error_estimate`` and ``boundary_mass``); ``worst_error`` / ``worst_boundary_mass`` the
    largest seen. The latest value is cached per theta tensor (train asks twice per record).

    ``refine_tol``: while the error estimate exceeds it, the spacing is halved (n -> 2n - 1, up to
    ``max_n``), so a model that grows sharp features is still integrated to that tolerance;
    ``n_refined`` counts the evaluations that needed it.
    """

    def __init__(self, energy: Energy, *, box, n: int = 257, dtype=F64, refine_tol: float | None = None,
                 max_n: int = 1025):
        super().__init__(energy)
        self.box = _box(box, energy.dim)
        grid_points(self.box, n, energy.dim)    # validates n
        self.n, self.grid_dtype = n, dtype
        self.refine_tol = None if refine_tol is None else require_positive("refine_tol", refine_tol)
        self.max_n = require_positive_int("max_n", max_n)
        self.n_refined = 0
        self.eval_seconds = 0.0
        self.n_evaluations = 0
        self.last: GridLogPartition | None = None
        self.worst_error = 0.0
        self.worst_boundary_mass = 0.0
        self._key = None

    def __repr__(self):
        return f"GridQuadrature({self.inner!r}, box={self.box}, n={self.n}, dtype={self.grid_dtype})"

    def log_partition(self, theta) -> GridLogPartition:
        theta = torch.as_tensor(theta)
        key = (theta, theta._version)
        if self._key is not None and self._key[0] is theta and self._key[1] == theta._version:
            return self.last
        start = time.perf_counter()
        res = grid_log_partition(self.inner, theta.detach(), box=self.box, n=self.n, dtype=self.grid_dtype)
        if self.refine_tol is not None and res.error_estimate > self.refine_tol and 2 * res.n - 1 <= self.max_n:
            self.n_refined += 1
            while res.error_estimate > self.refine_tol and 2 * res.n - 1 <= self.max_n:
                res = grid_log_partition(self.inner, theta.detach(), box=self.box, n=2 * res.n - 1,
                                         dtype=self.grid_dtype)
        self.eval_seconds += time.perf_counter() - start
        self.n_evaluations += 1
        self.last, self._key = res, key
        self.worst_error = max(self.worst_error, res.error_estimate)
        self.worst_boundary_mass = max(self.worst_boundary_mass, res.boundary_mass)
        return res

    def free_energy(self, theta) -> float:
        """F(theta) = -ln Z by the trapezoid rule on the grid."""
        return self.log_partition(theta).free_energy

    def sample_equilibrium(self, theta, n, *, gen, dtype=torch.float32):
        """``grid_sample`` at theta (equilibrium up to the grid's resolution)."""
        return grid_sample(self.inner, theta, n, box=self.box, n_grid=self.n, gen=gen, dtype=dtype,
                           grid_dtype=self.grid_dtype)


# ---------------------------------------------------------------------------- AIS

@dataclass(frozen=True)
class LogPartitionEstimate:
    """ln Z_theta with its standard error (nats) and how it was obtained."""

    log_partition: float
    log_partition_se: float
    method: str
    log_partition_base: float
    diagnostics: dict = field(default_factory=dict)

    @property
    def free_energy(self) -> float:
        return -self.log_partition


def tractable_base(energy: Energy, theta) -> tuple[torch.Tensor, float, object]:
    """(theta_base, ln Z at theta_base, sampler gen -> n -> exact draws) for AIS.

    GaussianBernoulliRBM: W = 0. NeuralEnergy with confinement k > 0 whose output is the last
    ``torch.nn.Linear`` layer: that layer zeroed, so E_base = k |x|^2 / 2 and ln Z_base =
    (d/2) ln(2 pi / k); checked on probe points (f_base must vanish)."""
    from ..energies.neural import NeuralEnergy
    from ..energies.rbm import GaussianBernoulliRBM

    theta = torch.as_tensor(theta, dtype=F64)
    if isinstance(energy, EnergyWrapper):
        return tractable_base(energy.inner, theta)
    if isinstance(energy, GaussianBernoulliRBM):
        base = energy.base_theta(theta)
        return base, energy.log_partition_independent(base), \
            lambda n, gen: energy.sample_equilibrium(base, n, gen=gen, dtype=F64)
    if isinstance(energy, NeuralEnergy):
        k = energy.confinement
        if not k > 0:
            raise InputError("AIS from the confinement Gaussian needs a NeuralEnergy with confinement > 0")
        linears = [m for m in energy.module.modules() if isinstance(m, torch.nn.Linear)]
        if not linears:
            raise InputError(f"module {energy.label} has no torch.nn.Linear layer to zero for the AIS base")
        last = {id(p) for p in linears[-1].parameters()}
        mask = torch.cat([torch.full((p.numel(),), id(p) in last) for p in energy.module.parameters()])
        base = theta.clone()
        base[mask] = 0.0
        probe = torch.linspace(-3.0, 3.0, 8 * energy.dim, dtype=F64).reshape(8, energy.dim)
        f = energy.energy(probe, base) - 0.5 * k * (probe ** 2).sum(-1)
        if float(f.abs().max()) > 1e-12:
            raise InputError(f"module {energy.label}: zeroing its last Linear layer does not make f vanish "
                             "(its output is not that layer's): no tractable AIS base")

        def draw(n, gen):
            return torch.randn(n, energy.dim, dtype=F64, generator=gen) / math.sqrt(k)

        return base, 0.5 * energy.dim * math.log(2.0 * math.pi / k), draw
    raise InputError(f"no tractable AIS base for {type(energy).__name__}: use a NeuralEnergy with confinement "
                     "or a GaussianBernoulliRBM")


def ais_log_partition(energy: Energy, theta, *, gen, n_chains: int = 512, n_intermediate: int = 500,
                      n_mcmc: int = 1, dt: float = 0.01, mobility: float = 1.0,
                      sampler="mala") -> LogPartitionEstimate:
    """ln Z_theta = ln Z_base - Delta F, Delta F = F(theta) - F(base) by ``free_energy.ais`` on the
    linear path from ``tractable_base`` (exact base draws); the error is AIS's (Jarzynski
    delta method, bias included), ESS and acceptance rate in ``diagnostics``."""
    from .free_energy import ais

    require_positive("dt", dt)
    base, log_z_base, draw = tractable_base(energy, theta)
    x0 = draw(require_positive_int("n_chains", n_chains), gen)
    est = ais(energy, base, torch.as_tensor(theta, dtype=F64), n_chains=n_chains, n_intermediate=n_intermediate,
              n_mcmc=n_mcmc, dt=dt, mobility=mobility, gen=gen, sampler=sampler, x0=x0)
    d = est.diagnostics
    return LogPartitionEstimate(log_z_base - est.delta_free_energy, est.standard_error, "ais", log_z_base,
                                {"ess": d["ess"], "ess_fraction": d["ess_fraction"], "bias": d["bias"],
                                 "acceptance_rate": d["acceptance_rate"], "n_chains": n_chains,
                                 "n_intermediate": n_intermediate, "n_mcmc": n_mcmc, "dt": dt})


# ---------------------------------------------------------------------------- NLL

@dataclass(frozen=True)
class NLL:
    """L = E_data[E_theta] + ln Z in nats per sample, its standard error (data spread and ln Z
    error combined) and the ln Z it used."""

    nll: float
    nll_se: float
    log_partition: float
    log_partition_se: float
    mean_energy: float


def nll(energy: Energy, theta, data, log_partition) -> NLL:
    """L = mean_i E_theta(x_i) + ln Z; ``log_partition`` a number, a ``GridLogPartition`` or a
    ``LogPartitionEstimate`` (its error is combined in quadrature with the data's std / sqrt(n))."""
    x = torch.as_tensor(data, dtype=F64)
    e = _energies(energy, theta, x.reshape(x.shape[0], -1))
    if isinstance(log_partition, GridLogPartition):
        lz, lz_se = log_partition.log_partition, 0.0
    elif isinstance(log_partition, LogPartitionEstimate):
        lz, lz_se = log_partition.log_partition, log_partition.log_partition_se
    else:
        lz, lz_se = float(log_partition), 0.0
    mean_e = float(e.mean())
    se_e = float(e.std()) / math.sqrt(e.numel()) if e.numel() > 1 else math.nan
    return NLL(mean_e + lz, math.hypot(se_e, lz_se), lz, lz_se, mean_e)


def grid_nll(energy: Energy, theta, data, *, box, n: int = 257) -> tuple[NLL, GridLogPartition]:
    """The exact NLL of a 1-D / 2-D energy on ``data``: (``nll`` with ln Z by quadrature, the quadrature)."""
    q = grid_log_partition(energy, theta, box=box, n=n)
    return nll(energy, theta, data, q), q


# ---------------------------------------------------------------------------- bidirectional AIS

@dataclass(frozen=True)
class AISBounds:
    """ln Z_theta from forward AIS (base -> theta) and, with draws at theta, reverse AIS (theta -> base).

    With W_F the forward work and W_R the reverse work (kT), Delta F = F_theta - F_base = -(ln Z -
    ln Z_base), the second law <W_F> >= Delta F >= -<W_R> gives (Grosse, Ghahramani & Adams 2015,
    bidirectional Monte Carlo)

        lower = ln Z_base - <W_F>  <=  ln Z  <=  ln Z_base + <W_R> = upper

    in expectation (each with its standard error over chains, std / sqrt(N)). ``log_partition`` is
    forward AIS's (Jarzynski on W_F, ``free_energy.jarzynski``); ``log_partition_bar`` Bennett's from
    both directions (``free_energy.bar``). The upper bound holds only if the reverse chains start in
    equilibrium at theta (exact for an RBM's ``sample_equilibrium``; approximate for chains run
    with MCMC): NaN without them.
    """

    log_partition: float
    log_partition_se: float
    lower: float
    lower_se: float
    upper: float
    upper_se: float
    log_partition_bar: float
    log_partition_bar_se: float
    log_partition_base: float
    work_forward: torch.Tensor
    work_reverse: torch.Tensor | None
    diagnostics: dict = field(default_factory=dict)

    def estimate(self) -> LogPartitionEstimate:
        """The forward AIS value as a ``LogPartitionEstimate`` (for ``nll``)."""
        return LogPartitionEstimate(self.log_partition, self.log_partition_se, "ais", self.log_partition_base,
                                    dict(self.diagnostics))


def _mean_se(w: torch.Tensor) -> tuple[float, float]:
    return float(w.mean()), float(w.std()) / math.sqrt(w.numel())


def ais_bounds(energy: Energy, theta, *, gen, n_chains: int = 256, n_intermediate: int = 500, n_mcmc: int = 1,
               dt: float = 0.01, mobility: float = 1.0, sampler="mala", x_reverse=None) -> AISBounds:
    """Forward AIS from ``tractable_base`` to theta and, given ``x_reverse`` ((M, d) draws of p_theta),
    reverse AIS on the same linear path back to the base: ``AISBounds`` (stochastic lower / upper
    bounds on ln Z from the second law, AIS and BAR estimates). Same path, sampler and steps both ways."""
    from ..backends.samplers import make_sampler
    from .free_energy import bar, jarzynski, switching_work

    require_positive("dt", dt)
    sampler = make_sampler(sampler)
    theta = torch.as_tensor(theta, dtype=F64)
    base, log_z_base, draw = tractable_base(energy, theta)
    n_chains = require_positive_int("n_chains", n_chains)
    if n_chains < 2:
        raise InputError(f"n_chains must be >= 2 (the error comes from the spread of the weights), got {n_chains}")
    kw = dict(n_intermediate=n_intermediate, n_mcmc=n_mcmc, dt=dt, mobility=mobility, gen=gen, sampler=sampler)
    wf = switching_work(energy, base, theta, n_chains=n_chains, x0=draw(n_chains, gen), **kw)
    fwd = jarzynski(wf)
    lower, lower_se = _mean_se(wf)
    lower = log_z_base - lower
    upper = upper_se = lz_bar = lz_bar_se = math.nan
    wr = None
    if x_reverse is not None:
        x = torch.as_tensor(x_reverse).detach().to(F64)
        if x.ndim != 2 or x.shape[1] != energy.dim or x.shape[0] < 2 or not bool(torch.isfinite(x).all()):
            raise InputError(f"x_reverse must be finite draws of shape (M >= 2, {energy.dim}), got {tuple(x.shape)}")
        wr = switching_work(energy, theta, base, n_chains=x.shape[0], x0=x, **kw)
        m, upper_se = _mean_se(wr)
        upper = log_z_base + m
        b = bar(wf, wr)
        lz_bar, lz_bar_se = log_z_base - b.delta_free_energy, b.standard_error
    d = fwd.diagnostics
    diag = {"ess": d["ess"], "ess_fraction": d["ess_fraction"], "bias": d["bias"], "n_chains": n_chains,
            "n_reverse": 0 if wr is None else int(wr.numel()), "n_intermediate": n_intermediate, "n_mcmc": n_mcmc,
            "dt": dt, "acceptance_rate": getattr(sampler, "acceptance_rate", math.nan)}
    return AISBounds(log_z_base - fwd.delta_free_energy, fwd.standard_error, lower, lower_se, upper, upper_se,
                     lz_bar, lz_bar_se, log_z_base, wf, wr, diag)
