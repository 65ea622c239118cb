"""Data sets for neural EBMs: 2-D toy distributions, the 8x8 digits, and minibatches.

* ``toy(name, n, gen=...)``: iid draws (float64, shape (n, 2)) from five 2-D distributions generated
  by our own code, each scaled to lie within about [-3, 3]^2 with mode widths >= 0.1 (so a grid of
  spacing ~0.06 resolves any smooth model fitted to them):

  - ``moons``: two interleaved half circles (outer (cos t, sin t), inner (1 - cos t, 1/2 - sin t),
    t ~ U(0, pi), each with probability 1/2) plus N(0, 0.1^2) noise, centred at (1/2, 1/4), times 2;
  - ``rings``: three concentric circles of radii 0.75, 1.5, 2.25 chosen with probability
    proportional to the radius (uniform density along the arcs), radial N(0, 0.1^2) noise;
  - ``8gaussians``: an equal mixture of N(c_k, 0.2^2 I), c_k = 2 (cos 2 pi k/8, sin 2 pi k/8);
  - ``checkerboard``: uniform on the 8 dark unit squares of a 4 x 4 board on [-2, 2]^2;
  - ``pinwheel``: 5 arms, (1 + 0.3 r, 0.1 t) (r, t ~ N(0, 1)) rotated by 2 pi j/5 + exp(1 + 0.3 r) / 4,
    times 1.5.

* ``digits(gen=...)``: the 1,797 8x8 handwritten digits that scikit-learn ships inside its package
  (no download; ``pip install scikit-learn``), dequantised (pixel v in {0..16} -> (v + u)/17,
  u ~ U(0, 1)) and standardised per pixel with the training split's mean and standard deviation:
  a continuous density on R^64 whose log-likelihoods are in nats per image in the standardised
  space (``DigitsData.log_jacobian`` converts to (v + u)/17 space).

* minibatches of the data term: ``train(..., batch_size=B)`` (one implementation, in ``core.step``).

Any (n, d) tensor or array of samples can be passed to ``train`` directly; ``load`` validates one.
Every draw takes an explicit ``gen`` (a torch.Generator or an int seed); no global RNG.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..energies.base import Energy
from ..errors import InputError, require_positive_int

F64 = torch.float64
TOY = ("moons", "rings", "8gaussians", "checkerboard", "pinwheel")
KINDS = TOY + ("digits",)


def _generator(gen) -> torch.Generator:
    if isinstance(gen, int) and not isinstance(gen, bool):
        return torch.Generator().manual_seed(gen)
    if not isinstance(gen, torch.Generator):
        raise InputError(f"gen must be a torch.Generator or an int seed, got {gen!r}")
    return gen


def _uniform(n, gen):
    return torch.rand(n, dtype=F64, generator=gen)


def _normal(shape, gen):
    return torch.randn(shape, dtype=F64, generator=gen)


def _moons(n, gen):
    t = math.pi * _uniform(n, gen)
    inner = _uniform(n, gen) < 0.5
    x = torch.where(inner, 1.0 - torch.cos(t), torch.cos(t))
    y = torch.where(inner, 0.5 - torch.sin(t), torch.sin(t))
    pts = torch.stack([x, y], 1) + 0.1 * _normal((n, 2), gen)
    return 2.0 * (pts - torch.tensor([0.5, 0.25], dtype=F64))


def _rings(n, gen):
    radii = torch.tensor([0.75, 1.5, 2.25], dtype=F64)
    idx = torch.multinomial(radii / radii.sum(), n, replacement=True, generator=gen)
    phi = 2.0 * math.pi * _uniform(n, gen)
    r = radii[idx] + 0.1 * _normal(n, gen)
    return torch.stack([r * torch.cos(phi), r * torch.sin(phi)], 1)


def _eight_gaussians(n, gen):
    k = torch.randint(0, 8, (n,), generator=gen).to(F64)
    centres = 2.0 * torch.stack([torch.cos(2 * math.pi * k / 8), torch.sin(2 * math.pi * k / 8)], 1)
    return centres + 0.2 * _normal((n, 2), gen)


def _checkerboard(n, gen):
    x = 4.0 * _uniform(n, gen) - 2.0
    y = _uniform(n, gen) - 2.0 * torch.randint(0, 2, (n,), generator=gen).to(F64)
    y = y + torch.floor(x).remainder(2.0)
    return torch.stack([x, y], 1)


def _pinwheel(n, gen):
    arms, radial_std, tangential_std, rate = 5, 0.3, 0.1, 0.25
    feats = _normal((n, 2), gen) * torch.tensor([radial_std, tangential_std], dtype=F64)
    feats[:, 0] += 1.0
    arm = torch.randint(0, arms, (n,), generator=gen).to(F64)
    angle = 2.0 * math.pi * arm / arms + rate * torch.exp(feats[:, 0])
    c, s = torch.cos(angle), torch.sin(angle)
    x = c * feats[:, 0] - s * feats[:, 1]
    y = s * feats[:, 0] + c * feats[:, 1]
    return 1.5 * torch.stack([x, y], 1)


_TOY_MAKERS = {"moons": _moons, "rings": _rings, "8gaussians": _eight_gaussians,
               "checkerboard": _checkerboard, "pinwheel": _pinwheel}


def toy(name: str, n: int = 2000, *, gen) -> torch.Tensor:
    """n iid draws (float64, shape (n, 2)) of the 2-D toy distribution ``name`` (see the module
    docstring for each formula). ``gen``: a torch.Generator or an int seed."""
    if name not in _TOY_MAKERS:
        raise InputError(f"unknown toy data set {name!r}; choose one of {', '.join(TOY)}")
    n = require_positive_int("n", n)
    return _TOY_MAKERS[name](n, _generator(gen)).contiguous()


# ---------------------------------------------------------------------------- true densities

#: Gauss-Legendre order per panel of the 1-D quadratures below
_GL_ORDER = 16
#: panels of the moons' quadrature over the curve parameter (the converged check doubles them)
MOONS_PANELS = 8
#: grid points of the pinwheel's root search over the radial feature a (the check doubles them)
PINWHEEL_GRID = 1000


@dataclass(frozen=True)
class TrueLogDensity:
    """ln p(x) of a toy set's generating process (nats, float64, (n,)) and its numerical error:
    ``error_estimate`` = max |ln p at the working resolution - ln p at twice it| (0 where exact)."""

    log_density: torch.Tensor
    error_estimate: float
    method: str


def _gauss_legendre(a: float, b: float, panels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes and weights (float64) of the composite Gauss-Legendre rule on ``panels`` equal panels of [a, b]."""
    z, w = np.polynomial.legendre.leggauss(_GL_ORDER)
    edges = np.linspace(a, b, panels + 1)
    half, mid = 0.5 * np.diff(edges), 0.5 * (edges[1:] + edges[:-1])
    nodes = (mid[:, None] + half[:, None] * z[None, :]).reshape(-1)
    return torch.as_tensor(nodes, dtype=F64), torch.as_tensor((half[:, None] * w[None, :]).reshape(-1), dtype=F64)


def _log_normal2(d2, var):
    """ln N(x; mu, var I_2) from d2 = |x - mu|^2."""
    return -0.5 * d2 / var - math.log(2.0 * math.pi * var)


def _logp_eight_gaussians(x):
    """ln (1/8) sum_k N(x; c_k, 0.2^2 I), c_k = 2 (cos 2 pi k/8, sin 2 pi k/8): exact."""
    k = torch.arange(8, dtype=F64)
    c = 2.0 * torch.stack([torch.cos(2 * math.pi * k / 8), torch.sin(2 * math.pi * k / 8)], 1)
    d2 = ((x[:, None, :] - c[None]) ** 2).sum(-1)
    return torch.logsumexp(_log_normal2(d2, 0.04), 1) - math.log(8.0)


def _logp_checkerboard(x):
    """ln p = -ln 8 on the 8 dark unit squares of [-2, 2]^2 (floor(x) + floor(y) even), -inf elsewhere: exact."""
    inside = (x.abs() <= 2.0).all(1) & ((torch.floor(x[:, 0]) + torch.floor(x[:, 1])).remainder(2.0) == 0)
    return torch.where(inside, torch.full_like(x[:, 0], -math.log(8.0)), torch.full_like(x[:, 0], -math.inf))


def _logp_rings(x):
    """ln p(x) = ln [sum_j w_j (N(r; r_j, 0.1^2) + N(-r; r_j, 0.1^2)) / (2 pi r)], r = |x|, w_j = r_j / sum r:
    exact (radial noise: the polar density over the Jacobian r; a negative draw r_j + noise lands at angle + pi)."""
    radii = torch.tensor([0.75, 1.5, 2.25], dtype=F64)
    logw = torch.log(radii / radii.sum())
    r = x.norm(dim=1).clamp_min(1e-300)[:, None]
    var = 0.01
    lg = -0.5 * math.log(2 * math.pi * var)
    terms = torch.cat([logw - 0.5 * (r - radii) ** 2 / var + lg, logw - 0.5 * (r + radii) ** 2 / var + lg], 1)
    return torch.logsumexp(terms, 1) - torch.log(2 * math.pi * r[:, 0])


def _logp_moons(x, panels=MOONS_PANELS):
    """ln p(x) = ln (1/2) sum_branch (1/pi) int_0^pi N(x; 2 (c_b(t) - (1/2, 1/4)), 0.2^2 I) dt, the curve
    c_outer = (cos t, sin t), c_inner = (1 - cos t, 1/2 - sin t): composite Gauss-Legendre over t."""
    t, w = _gauss_legendre(0.0, math.pi, panels)
    logw = torch.log(w / math.pi) - math.log(2.0)
    ct, st = torch.cos(t), torch.sin(t)
    outer = torch.stack([2 * (ct - 0.5), 2 * (st - 0.25)], 1)
    inner = torch.stack([2 * (0.5 - ct), 2 * (0.25 - st)], 1)
    mu = torch.cat([outer, inner])                        # (2M, 2)
    lw = torch.cat([logw, logw])
    out = torch.empty(x.shape[0], dtype=F64)
    for i in range(0, x.shape[0], 2048):
        d2 = torch.cdist(x[i:i + 2048], mu) ** 2
        out[i:i + 2048] = torch.logsumexp(_log_normal2(d2, 0.04) + lw, 1)
    return out


def _logp_pinwheel(x, grid=PINWHEEL_GRID):
    """ln p(x) by change of variables: x = 1.5 R(phi_j(a)) (a, b), a ~ N(1, 0.3^2), b ~ N(0, 0.1^2),
    phi_j(a) = 2 pi j / 5 + exp(a) / 4, arm j uniform. For each arm, every root a* of
    u(a) = (R(-phi_j(a)) x / 1.5)_1 - a on [1 - 8 (0.3), 1 + 8 (0.3)] (sign changes on ``grid`` points,
    refined by 50 bisections) gives b* = (R(-phi_j(a*)) x / 1.5)_2 and contributes
    N(a*) N(b*) / (2.25 |1 - phi'(a*) b*|), phi' = exp(a*) / 4."""
    a_grid = torch.linspace(1.0 - 2.4, 1.0 + 2.4, grid, dtype=F64)
    y = x / 1.5
    out = torch.full((x.shape[0],), -math.inf, dtype=F64)

    def rotated(a, j, yy):
        phi = 2 * math.pi * j / 5 + 0.25 * torch.exp(a)
        c, s = torch.cos(phi), torch.sin(phi)
        return c * yy[..., 0:1] + s * yy[..., 1:2], -s * yy[..., 0:1] + c * yy[..., 1:2]

    for i in range(0, x.shape[0], 256):
        yy = y[i:i + 256]
        terms = []
        for j in range(5):
            p1, _ = rotated(a_grid[None, :], j, yy)
            u = p1 - a_grid[None, :]                             # (n, grid)
            sign = (u[:, :-1] > 0) != (u[:, 1:] > 0)
            rows, cols = torch.nonzero(sign, as_tuple=True)
            if rows.numel() == 0:
                continue
            lo, hi = a_grid[cols].clone(), a_grid[cols + 1].clone()
            ylo = yy[rows]
            flo = u[rows, cols]
            for _ in range(50):
                mid = 0.5 * (lo + hi)
                fm = rotated(mid[:, None], j, ylo)[0][:, 0] - mid
                left = (fm > 0) == (flo > 0)
                lo, hi = torch.where(left, mid, lo), torch.where(left, hi, mid)
                flo = torch.where(left, fm, flo)
            a = 0.5 * (lo + hi)
            b = rotated(a[:, None], j, ylo)[1][:, 0]
            jac = 2.25 * (1.0 - 0.25 * torch.exp(a) * b).abs()
            lp = (-0.5 * ((a - 1.0) / 0.3) ** 2 - 0.5 * (b / 0.1) ** 2 - math.log(2 * math.pi * 0.03)
                  - torch.log(jac) - math.log(5.0))
            terms.append((rows, lp))
        if terms:
            rows = torch.cat([r for r, _ in terms])
            lp = torch.cat([v for _, v in terms])
            m = torch.full((yy.shape[0],), -math.inf, dtype=F64).scatter_reduce(0, rows, lp, "amax")
            s = torch.zeros(yy.shape[0], dtype=F64).index_add_(0, rows, torch.exp(lp - m[rows]))
            out[i:i + 256] = torch.where(torch.isfinite(m), m + torch.log(s), out[i:i + 256])
    return out


def true_log_density(name: str, x) -> TrueLogDensity:
    """ln p(x) of the toy set ``name``'s generating process (nats per sample, float64, shape (n,)).

    Exact for the mixtures (8gaussians, rings, checkerboard); moons by composite Gauss-Legendre
    quadrature over the curve parameter (``MOONS_PANELS`` panels of order 16), pinwheel by the change
    of variables with a root search over the radial feature (``PINWHEEL_GRID`` points); for these two
    ``error_estimate`` is the largest difference to the same computation at twice the resolution."""
    if name not in _TOY_MAKERS:
        raise InputError(f"unknown toy data set {name!r}; choose one of {', '.join(TOY)}")
    x = load(x, gen=0)
    if x.shape[1] != 2:
        raise InputError(f"the toy sets are 2-D: x must have shape (n, 2), got {tuple(x.shape)}")
    if name == "moons":
        lp, fine = _logp_moons(x), _logp_moons(x, 2 * MOONS_PANELS)
        return TrueLogDensity(lp, _max_gap(lp, fine), f"Gauss-Legendre over t, {MOONS_PANELS} x {_GL_ORDER} nodes")
    if name == "pinwheel":
        lp, fine = _logp_pinwheel(x), _logp_pinwheel(x, 2 * PINWHEEL_GRID)
        return TrueLogDensity(lp, _max_gap(lp, fine), f"change of variables, root search on {PINWHEEL_GRID} points")
    f = {"8gaussians": _logp_eight_gaussians, "rings": _logp_rings, "checkerboard": _logp_checkerboard}[name]
    return TrueLogDensity(f(x), 0.0, "exact")


def _max_gap(a, b) -> float:
    both = torch.isfinite(a) & torch.isfinite(b)
    if bool((torch.isfinite(a) != torch.isfinite(b)).any()):
        return math.inf
    return float((a[both] - b[both]).abs().max()) if bool(both.any()) else 0.0


# ---------------------------------------------------------------------------- digits

@dataclass(frozen=True)
class DigitsData:
    """The digits split into train / test (float64, shape (n, 64)), with the standardisation.

    x = ((v + u) / 17 - shift) / scale per pixel; ``log_jacobian`` = -sum_i ln scale_i is the
    log-density change from x to the (v + u)/17 space: ln p_unit = ln p_x + log_jacobian.
    ``labels_*`` are the digit classes (for plots only; nothing trains on them).
    """

    train: torch.Tensor
    test: torch.Tensor
    shift: torch.Tensor
    scale: torch.Tensor
    labels_train: torch.Tensor
    labels_test: torch.Tensor

    @property
    def log_jacobian(self) -> float:
        return float(-torch.log(self.scale).sum())

    def to_pixels(self, x) -> torch.Tensor:
        """Map states back to pixel intensities in [0, 1], shape (n, 8, 8) (clipped)."""
        x = torch.as_tensor(x, dtype=F64).reshape(-1, 64)
        return (x * self.scale + self.shift).clamp(0.0, 1.0).reshape(-1, 8, 8)


def _load_sklearn_digits():
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise InputError("the digits data set ships with scikit-learn, which is not installed: "
                         "pip install scikit-learn (or pip install 'mindiss[data]')") from None
    bunch = load_digits()
    return np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target, dtype=np.int64)


def digits(*, gen, test_fraction: float = 0.2, scale: str = "standard") -> DigitsData:
    """The 8x8 digits, dequantised with ``gen`` and split at random (by ``gen``) into train / test.

    ``scale``: "standard" (per-pixel standardisation with the training split's statistics; a pixel
    that is constant in the raw data keeps its dequantisation noise, of standard deviation
    1/(17 sqrt 12), scaled to 1) or "unit" ((v + u)/17 in (0, 1), no standardisation).
    """
    if not 0.0 < float(test_fraction) < 1.0:
        raise InputError(f"test_fraction must lie in (0, 1), got {test_fraction!r}")
    if scale not in ("standard", "unit"):
        raise InputError(f"scale must be 'standard' or 'unit', got {scale!r}")
    g = _generator(gen)
    pixels, labels = _load_sklearn_digits()
    v = torch.as_tensor(pixels)
    y = (v + torch.rand(v.shape, dtype=F64, generator=g)) / 17.0
    perm = torch.randperm(v.shape[0], generator=g)
    n_test = int(round(test_fraction * v.shape[0]))
    test_idx, train_idx = perm[:n_test], perm[n_test:]
    tr, te = y[train_idx], y[test_idx]
    if scale == "standard":
        shift, sd = tr.mean(0), tr.std(0)
    else:
        shift, sd = torch.zeros(64, dtype=F64), torch.ones(64, dtype=F64)
    lab = torch.as_tensor(labels)
    return DigitsData(((tr - shift) / sd).contiguous(), ((te - shift) / sd).contiguous(), shift, sd,
                      lab[train_idx], lab[test_idx])


def load(kind, n: int = 2000, *, gen) -> torch.Tensor:
    """Samples for ``train``: a toy set's n draws, the digits' training split, or a user's samples.

    ``kind``: a name in ``KINDS`` or a tensor / array of shape (n, d) (validated, returned float64)."""
    if isinstance(kind, str):
        if kind == "digits":
            return digits(gen=gen).train
        return toy(kind, n, gen=gen)
    try:
        x = torch.as_tensor(np.asarray(kind, dtype=float) if not torch.is_tensor(kind) else kind).to(F64)
    except (TypeError, ValueError):
        raise InputError(f"data must be a data set name ({', '.join(KINDS)}) or samples, "
                         f"got {type(kind).__name__}") from None
    if x.ndim != 2 or x.shape[0] < 1:
        raise InputError(f"samples must have shape (n_samples, d), got {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise InputError("samples contain NaN or infinite values")
    return x.contiguous()
