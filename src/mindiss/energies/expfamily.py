"""Exponential-family energies E_theta(x) = theta . phi(x) (natural parameters), with 1-D
quadrature for F, the Fisher information and exact equilibrium draws."""
from __future__ import annotations

import math

import numpy as _np
import torch

from .base import Capabilities, Energy
from ..errors import InputError, require_positive_int
from ..threads import single_thread


#: Energies more than this (kT) above the minimum are dropped from the quadrature interval:
#: the truncated mass is below exp(-_CUT) relative to the peak.
_CUT = 60.0
_GL_ORDER = 16
_GL_NODES, _GL_WEIGHTS = _np.polynomial.legendre.leggauss(_GL_ORDER)


def _gauss_legendre(a: float, b: float, panels: int) -> tuple[_np.ndarray, _np.ndarray]:
    """Nodes and weights of the composite Gauss-Legendre rule of order _GL_ORDER on ``panels``
    equal panels of [a, b]."""
    edges = _np.linspace(a, b, panels + 1)
    half = 0.5 * (edges[1:] - edges[:-1])
    mid = 0.5 * (edges[1:] + edges[:-1])
    nodes = (mid[:, None] + half[:, None] * _GL_NODES[None, :]).reshape(-1)
    return nodes, (half[:, None] * _GL_WEIGHTS[None, :]).reshape(-1)


def _log_sum_exp_rows(log_w: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """ln sum_j exp(log_w_j - e_rj) per row r, in place in ``e`` (no (R, M) temporaries)."""
    shift = e.min(dim=1, keepdim=True).values
    return e.sub_(shift).neg_().add_(log_w).exp_().sum(dim=1).log_().sub_(shift.reshape(-1))


class ExpFamily(Energy):
    """Exponential-family energy E_theta(x) = theta . phi(x), linear in theta (natural parameters).

    ``features``: callable x (N, d) float64 -> phi (N, P); each row of phi must depend only on
    the same row of x (per-sample features). d_theta E = phi(x), so g_hat depends on theta only
    through the chains and Identity 1 is exact in discrete time.

    ``grad_features``: optional callable x (N, d) -> d phi / d x, shape (N, P, d); without it
    ``grad_x`` uses torch.autograd. ``polynomial_coeffs``: optional (P, D + 1) array, row p the
    coefficients of phi_p as a polynomial in x (1-D, increasing powers); when given,
    ``check_theta`` decides normalisability exactly (the leading coefficient of theta . phi must
    sit at an even degree and be > 0).

    In 1-D the free energy, Fisher information and exact equilibrium draws come from numerical
    quadrature (composite Gauss-Legendre, panels doubled until converged, on an interval that
    grows until exp(-E) has decayed by exp(-60) at both ends). In d > 1 they raise
    NotImplementedError (quadrature on a line only; use AIS / thermodynamic integration).
    """


    def __init__(self, features, dim: int = 1, names=None, *, grad_features=None, polynomial_coeffs=None,
                 label: str | None = None, features_into=None):
        if not callable(features):
            raise InputError(f"features must be a callable x (N, d) -> phi (N, P), got {type(features).__name__}")
        if grad_features is not None and not callable(grad_features):
            raise InputError("grad_features must be a callable x (N, d) -> dphi/dx (N, P, d)")
        self.features = features
        self.grad_features = grad_features
        self.features_into = features_into
        self.dim = require_positive_int("dim", dim)
        try:
            probe = features(torch.zeros((2, self.dim), dtype=torch.float64))
        except Exception as exc:  # a features function that cannot run is an input problem
            raise InputError(f"features failed on a probe input of shape (2, {self.dim}): {exc}") from None
        probe = torch.as_tensor(probe)
        if probe.ndim != 2 or probe.shape[0] != 2:
            raise InputError(f"features must return shape (N, P) for x of shape (N, d); got {tuple(probe.shape)} "
                             f"for N = 2")
        self.n_params = int(probe.shape[1])
        if names is None:
            names = tuple(f"theta_{i}" for i in range(self.n_params))
        names = tuple(str(n) for n in names)
        if len(names) != self.n_params:
            raise InputError(f"names has {len(names)} entries but features give {self.n_params} parameters")
        self.names = names
        self.polynomial_coeffs = None
        self._dpoly = None
        if polynomial_coeffs is not None:
            if self.dim != 1:
                raise InputError("polynomial_coeffs describe 1-D features only")
            c = _np.atleast_2d(_np.asarray(polynomial_coeffs, dtype=float))
            if c.shape[0] != self.n_params or not _np.all(_np.isfinite(c)):
                raise InputError(f"polynomial_coeffs must be a finite ({self.n_params}, degree + 1) array, "
                                 f"got shape {c.shape}")
            self.polynomial_coeffs = c
        # 1-D polynomial features: grad_x by Horner from the coefficients (python floats, no float64 pass)
        self._dpoly = self.polynomial_coeffs
        if self._dpoly is not None:
            self._poly_degree = self._dpoly.shape[1] - 1
            # per power j >= 1 (highest first) the (parameter, coefficient) pairs that contribute to it
            self._poly_terms = [(j, [(p, float(v)) for p, v in enumerate(self._dpoly[:, j]) if v != 0.0])
                                for j in range(self._poly_degree, 0, -1)]
            self._poly_terms = [(j, t) for j, t in self._poly_terms if t]
        self.label = label or getattr(features, "__qualname__", type(features).__name__)
        self._cache: dict = {}
        # E = theta . phi(x): phi_t shares one feature pass; in 1-D, F by batched quadrature
        self.capabilities = Capabilities(linear_in_theta=True, features=True, free_energy_many=self.dim == 1,
                                         quadrature_interval=self.dim == 1, out_buffer=True)

    def __repr__(self):
        return f"ExpFamily({self.label}, dim={self.dim}, names={self.names})"

    # -- built-ins ------------------------------------------------------------------------
    @classmethod
    def polynomial(cls, degree: int) -> "ExpFamily":
        """phi = (x, x^2, ..., x^degree) in 1-D: E = sum_k theta_k x^k. Normalisable iff the highest
        non-zero coefficient is at an even degree and positive (so ``degree`` >= 2)."""
        n = require_positive_int("degree", degree)
        powers = torch.arange(1, n + 1, dtype=torch.float64)

        def features(x):
            return x.to(torch.float64) ** powers.to(x.device)

        def grad_features(x):
            x64 = x.to(torch.float64)
            p = powers.to(x.device)
            return (p * x64 ** (p - 1.0)).unsqueeze(-1)

        coeffs = _np.zeros((n, n + 1))
        coeffs[_np.arange(n), _np.arange(1, n + 1)] = 1.0
        return cls(features, 1, tuple(f"x^{k}" for k in range(1, n + 1)), grad_features=grad_features,
                   polynomial_coeffs=coeffs, label=f"polynomial(degree={n})")

    @classmethod
    def tilted_double_well(cls) -> "ExpFamily":
        """E = a (x^2 - 1)^2 + b x, theta = (a, b), phi = ((x^2 - 1)^2, x). Needs a > 0."""

        def features(x):
            x64 = x.to(torch.float64)
            return torch.cat([(x64 * x64 - 1.0) ** 2, x64], dim=-1)

        def grad_features(x):
            x64 = x.to(torch.float64)
            return torch.stack([4.0 * x64 * (x64 * x64 - 1.0), torch.ones_like(x64)], dim=1)

        def features_into(x, out):
            out[1].copy_(x.reshape(-1))
            return torch.mul(out[1], out[1], out=out[0]).sub_(1.0).square_()

        coeffs = [[1.0, 0.0, -2.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0, 0.0]]
        return cls(features, 1, ("a", "b"), grad_features=grad_features, polynomial_coeffs=coeffs,
                   label="tilted_double_well", features_into=features_into)

    @classmethod
    def quartic(cls) -> "ExpFamily":
        """E = theta_0 x^2 / 2 + theta_1 x^4 / 4, phi = (x^2 / 2, x^4 / 4). Needs theta_1 > 0, or
        theta_1 = 0 and theta_0 > 0."""

        def features(x):
            x2 = x.to(torch.float64) ** 2
            return torch.cat([0.5 * x2, 0.25 * x2 * x2], dim=-1)

        def grad_features(x):
            x64 = x.to(torch.float64)
            return torch.stack([x64, x64 ** 3], dim=1)

        def features_into(x, out):
            out[0].copy_(x.reshape(-1)).square_()
            torch.mul(out[0], out[0], out=out[1]).mul_(0.25)
            return out[0].mul_(0.5)

        coeffs = [[0.0, 0.0, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.25]]
        return cls(features, 1, ("k2", "k4"), grad_features=grad_features, polynomial_coeffs=coeffs,
                   label="quartic", features_into=features_into)

    # -- the Energy protocol --------------------------------------------------------------
    def phi(self, x: torch.Tensor) -> torch.Tensor:
        """phi(x), float64, shape (N, P)."""
        out = torch.as_tensor(self.features(x.to(torch.float64)))
        return out.to(torch.float64)

    def phi_t(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """phi(x) transposed, float64, shape (P, N): the layout in which the per-update reductions
        over chains are contiguous. Filled in place into ``out`` where the family can."""
        if out is not None and self.features_into is not None:
            self.features_into(x, out)
            return out
        phi_t = self.phi(x).T
        return out.copy_(phi_t) if out is not None else phi_t.contiguous()

    def energy(self, x, theta, out=None):
        phi = self.phi(x)
        theta = theta.to(device=phi.device, dtype=torch.float64)
        if out is not None:
            return torch.mv(phi, theta, out=out)
        return phi @ theta

    def grad_x(self, x, theta):
        if self._dpoly is not None:
            return self._grad_x_horner(x, theta)
        theta64 = theta.to(device=x.device, dtype=torch.float64)
        if self.grad_features is not None:
            jac = torch.as_tensor(self.grad_features(x.to(torch.float64))).to(torch.float64)
            return torch.einsum("npd,p->nd", jac, theta64).to(x.dtype)
        with torch.enable_grad():
            x64 = x.detach().to(torch.float64).requires_grad_(True)
            e = torch.as_tensor(self.features(x64)).to(torch.float64) @ theta64
            (g,) = torch.autograd.grad(e.sum(), x64, create_graph=False)
        return g.to(x.dtype)

    def _grad_x_horner(self, x, theta):
        """dE/dx = sum_k k c_k x^(k-1), c = theta @ polynomial_coeffs, by Horner's scheme in the
        chains' dtype (the move needs no float64; the ledger's energies stay float64)."""
        th = theta.tolist() if isinstance(theta, torch.Tensor) else list(theta)
        d = [0.0] * self._poly_degree     # coefficients of dE/dx, increasing powers
        for j, terms in self._poly_terms:
            d[j - 1] = j * sum(th[p] * v for p, v in terms)
        top = len(d) - 1
        while top > 0 and d[top] == 0.0:
            top -= 1
        if top == 0:
            return torch.full_like(x, d[0] if d else 0.0)
        out = torch.mul(x, d[top])
        for k in range(top - 1, 0, -1):
            if d[k] != 0.0:
                out.add_(d[k])
            out.mul_(x)
        return out.add_(d[0]) if d[0] != 0.0 else out

    def grad_theta(self, x, theta):
        return self.phi(x)

    def mean_grad_theta(self, x, theta):
        return self.phi(x).mean(0)

    def delta_energy(self, x, theta_old, theta_new, out=None):
        """W = phi(x) . (theta_new - theta_old): the exact difference (E is linear in theta)."""
        phi = self.phi(x)
        step = (theta_new - theta_old).to(device=phi.device, dtype=torch.float64)
        if out is not None:
            return torch.mv(phi, step, out=out)
        return phi @ step

    def check_theta(self, theta):
        if self.polynomial_coeffs is None:
            return None
        # plain floats: this runs once per update in train (a NumPy round trip costs more than the math)
        th = ((theta if theta.ndim == 1 else theta.reshape(-1)).tolist() if isinstance(theta, torch.Tensor)
              else _np.asarray(theta, dtype=float).reshape(-1).tolist())
        if len(th) != self.n_params:
            return f"theta has {len(th)} entries, the family {self.n_params}"
        deg = 0   # the highest power of x in E_theta(x) = sum_p theta_p phi_p(x), increasing powers
        lead = 0.0
        for j, terms in self._poly_terms:
            c = sum(th[p] * v for p, v in terms)
            if c != 0.0:
                deg, lead = j, c
                break
        if deg == 0:
            return "E_theta(x) is constant in x: exp(-E) is not normalisable"
        if deg % 2 == 1:
            return (f"the leading term of E_theta(x) has odd degree {deg} (coefficient {lead:.6g}): E -> -infinity "
                    "on one side, exp(-E) is not normalisable")
        if lead <= 0:
            return (f"the leading coefficient of E_theta(x) (degree {deg}) is {lead:.6g} <= 0: exp(-E) is not "
                    "normalisable")
        return None

    # -- quadrature (1-D) -----------------------------------------------------------------
    def _require_line(self, what: str):
        if self.dim != 1:
            raise NotImplementedError(
                f"ExpFamily.{what} uses quadrature on the real line and is available for dim = 1 only "
                f"(this family has dim = {self.dim}); pass initial chain states / use a Monte-Carlo estimate")

    def _energy_np(self, x: _np.ndarray, theta64: torch.Tensor) -> _np.ndarray:
        xt = torch.as_tensor(x, dtype=torch.float64).reshape(-1, 1)
        with torch.no_grad():
            return (self.phi(xt) @ theta64).numpy()

    def _interval(self, theta64: torch.Tensor) -> tuple[float, float]:
        """[a, b] outside which E - min E > _CUT; raises InputError if exp(-E) is not normalisable."""
        L = 4.0
        if self.polynomial_coeffs is not None:  # every critical point lies inside the Cauchy bound of E'
            poly = theta64.numpy() @ self.polynomial_coeffs
            d = poly[1:] * _np.arange(1, poly.size)
            nz = _np.nonzero(d)[0]
            if nz.size and nz[-1] > 0:
                lead = nz[-1]
                L = max(L, 2.0 * (1.0 + float(_np.max(_np.abs(d[:lead]) / abs(d[lead])))))
        m = 4001
        with _np.errstate(all="ignore"):
            for _ in range(80):
                x = _np.linspace(-L, L, m)
                e = self._energy_np(x, theta64)
                if _np.isnan(e).any() or _np.isneginf(e).any():
                    break
                emin = float(_np.min(e))
                if e[0] - emin > _CUT and e[-1] - emin > _CUT:
                    break
                L *= 2.0
            else:
                e = None
            if e is None or _np.isnan(e).any() or _np.isneginf(e).any() or not (e[0] - emin > _CUT
                                                                              and e[-1] - emin > _CUT):
                raise InputError(
                    f"exp(-E_theta) is not normalisable for theta = {theta64.tolist()}: E does not grow to "
                    f"+infinity at both ends of the real line (Z diverges)")
            a, b = x[0], x[-1]
            for _ in range(6):  # zoom onto the region that carries the mass
                inside = _np.nonzero(e - emin <= _CUT)[0]
                lo, hi = max(inside[0] - 1, 0), min(inside[-1] + 1, m - 1)
                a_new, b_new = x[lo], x[hi]
                if b_new - a_new > 0.5 * (b - a):
                    a, b = a_new, b_new
                    break
                a, b = a_new, b_new
                x = _np.linspace(a, b, m)
                e = self._energy_np(x, theta64)
                emin = min(emin, float(_np.min(e)))
        return float(a), float(b)

    def quadrature_interval(self, theta) -> tuple[float, float]:
        """(a, b): the interval of p_theta's quadrature, where exp(-E) has decayed by e^-60 (1-D)."""
        return self._quadrature(theta)[4]

    def _quadrature(self, theta):
        """(nodes, normalised weights p_i, phi at the nodes, F, interval) for p_theta, cached per theta."""
        self._require_line("quadrature")
        theta64 = torch.as_tensor(theta, dtype=torch.float64).detach().cpu().reshape(-1)
        if theta64.numel() != self.n_params:
            raise InputError(f"theta has {theta64.numel()} entries but {self!r} has {self.n_params} parameters")
        if not bool(torch.isfinite(theta64).all()):
            raise InputError(f"theta must be finite, got {theta64.tolist()}")
        key = theta64.numpy().tobytes()
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        msg = self.check_theta(theta64)
        if msg:
            raise InputError(f"Z_theta diverges for theta = {theta64.tolist()}: {msg}")
        a, b = self._interval(theta64)
        prev = None
        panels = 32
        while True:
            nodes, gw = _gauss_legendre(a, b, panels)
            with torch.no_grad():
                phi = self.phi(torch.as_tensor(nodes, dtype=torch.float64).reshape(-1, 1)).numpy()
            e = phi @ theta64.numpy()
            shift = float(_np.min(e))
            w = gw * _np.exp(-(e - shift))
            total = float(w.sum())
            log_z = math.log(total) - shift
            if prev is not None and abs(log_z - prev) < 1e-13 * max(1.0, abs(log_z)):
                break
            if panels >= 2**15:
                raise InputError(f"quadrature of Z_theta did not converge for theta = {theta64.tolist()}")
            prev = log_z
            panels *= 2
        res = (nodes, w / total, phi, -log_z, (a, b))
        if len(self._cache) >= 16:
            self._cache.pop(next(iter(self._cache)))
        self._cache[key] = res
        return res

    def free_energy(self, theta) -> float:
        """F(theta) = -ln int exp(-theta . phi(x)) dx by quadrature (1-D); InputError if Z diverges."""
        self._require_line("free_energy")
        return float(self._quadrature(theta)[3])

    @single_thread()
    def free_energy_many(self, thetas) -> _np.ndarray:
        """F(theta_r) = -ln int exp(-theta_r . phi(x)) dx for every row of ``thetas`` (R, P) (1-D): the
        same composite Gauss-Legendre rule as ``free_energy``, on one interval holding every row's mass
        (exp(-E) decayed by exp(-60) at both ends), panels doubled until every row has converged."""
        self._require_line("free_energy")
        th = _np.asarray(thetas, dtype=float).reshape(-1, self.n_params)
        if len(th) <= 2:
            return _np.array([self.free_energy(torch.as_tensor(t)) for t in th], dtype=float)
        for t in th:
            msg = self.check_theta(t)
            if msg:
                raise InputError(f"Z_theta diverges for theta = {t.tolist()}: {msg}")
        a, b = self._interval_many(th)
        th_t = torch.as_tensor(th)
        prev, panels = None, 4   # (R x nodes) is the cost: start coarse, double until converged
        while True:
            nodes, gw = _gauss_legendre(a, b, panels)
            log_gw = torch.as_tensor(_np.log(gw))
            with torch.no_grad():
                phi_t = self.phi(torch.as_tensor(nodes, dtype=torch.float64).reshape(-1, 1)).T
                step = max(1, int(2e7 // nodes.size))   # rows per block: R x M stays ~160 MB at most
                log_z = torch.cat([_log_sum_exp_rows(log_gw, th_t[lo:lo + step] @ phi_t)
                                   for lo in range(0, len(th), step)]).numpy()
            if prev is not None and _np.all(_np.abs(log_z - prev) < 1e-13 * _np.maximum(1.0, _np.abs(log_z))):
                return -log_z
            if panels >= 2**15:
                raise InputError("quadrature of Z_theta did not converge for a batch of thetas")
            prev, panels = log_z, panels * 2

    def _interval_many(self, th: _np.ndarray) -> tuple[float, float]:
        """One [a, b] outside which E_theta_r - min E_theta_r > _CUT for every row."""
        L = 4.0
        if self.polynomial_coeffs is not None:   # Cauchy bound of E' over all rows
            poly = th @ self.polynomial_coeffs
            d = _np.abs(poly[:, 1:] * _np.arange(1, poly.shape[1]))
            nonzero = d != 0
            lead = d.shape[1] - 1 - nonzero[:, ::-1].argmax(axis=1)     # last non-zero coefficient per row
            rows = _np.nonzero(nonzero.any(axis=1) & (lead > 0))[0]
            if rows.size:
                below = _np.arange(d.shape[1])[None, :] < lead[rows, None]
                ratio = _np.where(below, d[rows], 0.0) / d[rows, lead[rows]][:, None]
                L = max(L, 2.0 * (1.0 + float(ratio.max())))
        m = 1001   # only brackets the mass: the panel doubling below resolves it
        th_t = torch.as_tensor(th)
        for _ in range(80):
            x = _np.linspace(-L, L, m)
            with torch.no_grad():
                e = th_t @ self.phi(torch.as_tensor(x, dtype=torch.float64).reshape(-1, 1)).T
            e = e.sub_(e.min(dim=1, keepdim=True).values)
            if bool(torch.isnan(e[:, [0, -1]]).any()):
                break
            if bool((e[:, 0] > _CUT).all()) and bool((e[:, -1] > _CUT).all()):
                inside = (e <= _CUT).any(dim=0).nonzero().reshape(-1)   # grid points inside some row's mass
                return float(x[max(int(inside[0]) - 1, 0)]), float(x[min(int(inside[-1]) + 1, m - 1)])
            L *= 2.0
        raise InputError("exp(-E_theta) is not normalisable for a theta of the batch: E does not grow to "
                         "+infinity at both ends of the real line (Z diverges)")

    def expected_phi(self, theta) -> torch.Tensor:
        """E_{p_theta}[phi] = dF/dtheta by quadrature (1-D), shape (P,)."""
        self._require_line("expected_phi")
        _, p, phi, _, _ = self._quadrature(theta)
        return torch.as_tensor(p @ phi, dtype=torch.float64)

    def fisher(self, theta):
        """I(theta) = Cov_{p_theta}[phi] by quadrature (1-D), shape (P, P)."""
        self._require_line("fisher")
        _, p, phi, _, _ = self._quadrature(theta)
        c = phi - p @ phi
        dev = theta.device if torch.is_tensor(theta) else "cpu"
        return torch.as_tensor((c * p[:, None]).T @ c, dtype=torch.float64, device=dev)

    def sample_equilibrium(self, theta, n, *, gen, dtype=torch.float32, grid: int = 200_001):
        """Exact-up-to-grid draws from p_theta (1-D): inverse CDF of the density on a uniform grid of
        ``grid`` points over the quadrature interval, density linear within each cell."""
        self._require_line("sample_equilibrium")
        n = require_positive_int("n", n)
        theta64 = torch.as_tensor(theta, dtype=torch.float64).detach().cpu().reshape(-1)
        a, b = self._quadrature(theta64)[4]
        x = _np.linspace(a, b, grid)
        e = self._energy_np(x, theta64)
        dens = _np.exp(-(e - e.min()))
        h = x[1] - x[0]
        cdf = _np.concatenate([[0.0], _np.cumsum(0.5 * h * (dens[1:] + dens[:-1]))])
        u = torch.empty(n, dtype=torch.float64, device=gen.device).uniform_(generator=gen).cpu().numpy() * cdf[-1]
        i = _np.clip(_np.searchsorted(cdf, u, side="right") - 1, 0, grid - 2)
        p0, p1 = dens[i], dens[i + 1]
        r = (u - cdf[i]) / h
        # Solve (p1 - p0) t^2 / 2 + p0 t = r for t in [0, 1] (stable root).
        disc = _np.maximum(p0 * p0 + 2.0 * (p1 - p0) * r, 0.0)
        denom = p0 + _np.sqrt(disc)
        with _np.errstate(divide="ignore", invalid="ignore"):
            t = _np.where(denom > 0, 2.0 * r / denom, 0.5)
        t = _np.clip(t, 0.0, 1.0)
        out = torch.as_tensor(x[i] + t * h, dtype=torch.float64).reshape(n, 1)
        dev = theta.device if torch.is_tensor(theta) else "cpu"
        return out.to(device=dev, dtype=dtype)
