"""An exact one-dimensional Fokker-Planck reference for any potential, usable as a chain backend.

``FokkerPlanck1D`` holds the chain density on a uniform grid x_i = lo + i h (i = 0..n-1) as
probability masses ``rho`` (sum 1; the density is ``rho / h``) and evolves it at fixed theta by

    d rho / dt = mu d/dx (rho dE/dx + d rho/dx)          (kT = 1, reflecting ends)

discretised by the Scharfetter-Gummel / square-root-approximation (SQRA) finite-volume
generator: rates between neighbouring points

    k_{i -> i+1} = (mu / h^2) exp(-(E_{i+1} - E_i) / 2),  k_{i+1 -> i} = (mu / h^2) exp(+(E_{i+1} - E_i) / 2),

which satisfy detailed balance with pi_i ∝ exp(-E_i): the discrete Boltzmann distribution is
stationary, mass is conserved and the scheme is O(h^2) consistent with the continuum equation.

Propagation is exact in time (no time-stepping error): by default by *uniformisation*,
exp(Q dt) = sum_k Poisson(k; lam dt) P^k with the stochastic matrix P = I + Q / lam
(lam = the largest exit rate), a sum of non-negative terms, so positivity holds exactly in
floating point; ``method="expm_multiply"`` uses ``scipy.sparse.linalg.expm_multiply`` instead
(an independent code path; the tests check that the two agree).

Backend interface (same names and semantics as ``chains.GaussianMoments``):
``mean_grad_theta``, ``apply_update`` (frozen-chain work, Crooks step a), ``move`` (heat and the
decrease of KL(rho || p_theta), step b), ``chain_mean``, ``mean_work``, ``mean_heat``,
``first_law_residual``, ``finite``, ``state_dict`` / ``load_state_dict``, ``kl_initial``,
``n_chains = inf``. On the grid, Identity 2 (theory.md section 2),

    W - Delta F_grid = KL(rho_T || pi_T) - KL(rho_0 || pi_0) + entropy_production,

holds exactly in discrete time (it telescopes), with F_grid = -ln sum_i h exp(-E_i)
(``free_energy_on_grid``) and the discrete KL (``kl``).
"""
from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import torch
from scipy.special import logsumexp, xlogy
from scipy.stats import poisson

from .chains import ChainBackend
from ..errors import InputError, require_positive

#: Poisson tail mass left out of the uniformisation sum (far below float64 resolution).
_TAIL = 1e-18
_CACHE_SIZE = 8
#: method="auto" uses uniformisation (positivity exact in floating point) up to this many expected
#: jumps per move (lam dt), the symmetric eigen-decomposition (cost independent of stiffness) above.
_UNIFORMIZATION_MAX = 3000.0


def sqra_rates(energy_on_grid, mobility: float, h: float):
    """(up, down) = ((mu / h^2) exp(-(E_{i+1} - E_i) / 2), (mu / h^2) exp(+(E_{i+1} - E_i) / 2)): the SQRA rates
    k_{i -> i+1}, k_{i+1 -> i} (length n - 1) for E on the grid; numpy arrays or torch tensors (autograd flows).

    The one SQRA generator of the library: ``FokkerPlanck1D`` and the optimiser's differentiable grid model
    (``optimal.models``) both build their generator from these rates."""
    xp = torch if isinstance(energy_on_grid, torch.Tensor) else np
    de = energy_on_grid[1:] - energy_on_grid[:-1]
    c = mobility / h**2
    return c * xp.exp(-0.5 * de), c * xp.exp(0.5 * de)


def sqra_generator_dense(energy_on_grid: torch.Tensor, mobility: float, h: float) -> torch.Tensor:
    """Q (dense torch, column convention d rho/dt = Q rho) from ``sqra_rates``: Q[i+1, i] = up_i,
    Q[i, i+1] = down_i, each column summing to zero (mass conserved)."""
    up, down = sqra_rates(energy_on_grid, mobility, h)
    zero = up.new_zeros(1)
    return torch.diag(up, -1) + torch.diag(down, 1) - torch.diag(torch.cat([up, zero]) + torch.cat([zero, down]))


class FokkerPlanck1D(ChainBackend):
    """The chain density of a 1-D energy on a uniform grid, propagated exactly (N -> infinity).

    ``grid = (lo, hi, n_points)``: x_i = lo + i (hi - lo) / (n_points - 1), both ends included,
    reflecting boundaries (choose the range so that the density is negligible at the ends).
    ``density``: None (p_theta on the grid) or an array of n_points non-negative values
    proportional to the initial density (numpy or torch); it is normalised to unit mass.
    """

    n_chains = math.inf
    on_grid = True   # F(theta) and the loss by quadrature on the grid (free_energy_on_grid)

    def __init__(self, energy, theta, grid=(-8.0, 8.0, 1601), density=None,
                 method: str = "auto"):
        if energy.dim != 1:
            raise InputError(f"FokkerPlanck1D needs a one-dimensional energy, not dim={energy.dim}")
        try:
            lo, hi, n = grid
            lo, hi, n = float(lo), float(hi), int(n)
        except (TypeError, ValueError):
            raise InputError(f"grid must be (lo, hi, n_points), got {grid!r}") from None
        if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo) or n < 3:
            raise InputError(f"grid needs finite lo < hi and n_points >= 3, got {grid!r}")
        if method not in ("uniformization", "expm_multiply", "eigh", "auto"):
            raise InputError(f"method must be 'auto', 'uniformization', 'eigh' or 'expm_multiply', got {method!r}")
        self.method = method
        self.grid = (lo, hi, n)
        self.x = np.linspace(lo, hi, n)
        self.h = (hi - lo) / (n - 1)
        theta = torch.as_tensor(theta, dtype=torch.float64)
        self._device = theta.device
        self._xg = torch.as_tensor(self.x, dtype=torch.float64, device=self._device).reshape(n, 1)
        self._cache: OrderedDict = OrderedDict()
        if density is None:
            e = self._energy(energy, theta)
            rho = np.exp(-(e - e.min()))
        else:
            rho = (density.detach().cpu().numpy() if isinstance(density, torch.Tensor)
                   else np.asarray(density)).astype(np.float64).reshape(-1)
            if rho.shape != (n,):
                raise InputError(f"density must have {n} values (one per grid point), got shape {rho.shape}")
            if not np.all(np.isfinite(rho)) or np.any(rho < 0) or not rho.sum() > 0:
                raise InputError("density must be finite, non-negative and not all zero")
        self.rho = rho / rho.sum()
        self.work = 0.0
        self.heat = 0.0
        self.entropy_production = 0.0
        self.energy_start = self._mean_energy(energy, theta)
        self.kl_initial = self.kl(energy, theta)

    @classmethod
    def equilibrium(cls, energy, theta, grid=(-8.0, 8.0, 1601), **kwargs):
        return cls(energy, theta, grid=grid, **kwargs)

    # ------------------------------------------------------------------ grid quantities

    def _energy(self, energy, theta) -> np.ndarray:
        """E_theta(x_i) on the grid, float64 numpy (n,)."""
        return energy.energy(self._xg, theta).detach().cpu().numpy().astype(np.float64).reshape(-1)

    def _mean_energy(self, energy, theta) -> float:
        return float(self.rho @ self._energy(energy, theta))

    @property
    def density(self) -> np.ndarray:
        """rho / h: the density per unit length at the grid points."""
        return self.rho / self.h

    def boltzmann(self, energy, theta) -> np.ndarray:
        """pi_i = exp(-E_i) / sum_j exp(-E_j): the discrete equilibrium masses."""
        e = self._energy(energy, theta)
        return np.exp(-e - logsumexp(-e))

    def free_energy_on_grid(self, energy, theta) -> float:
        """F_grid = -ln sum_i h exp(-E_theta(x_i)) (trapezoid/Riemann quadrature of Z)."""
        return float(-logsumexp(-self._energy(energy, theta)) - math.log(self.h))

    def kl(self, energy, theta) -> float:
        """KL(rho || pi_theta) on the grid, sum_i rho_i ln(rho_i / pi_i)."""
        e = self._energy(energy, theta)
        log_pi = -e - logsumexp(-e)
        return float(np.sum(xlogy(self.rho, self.rho)) - self.rho @ log_pi)

    def moments(self) -> tuple[float, float]:
        """(mean, variance) of the grid density."""
        m = float(self.rho @ self.x)
        return m, float(self.rho @ (self.x - m) ** 2)

    # ------------------------------------------------------------------ backend interface

    def chain_mean(self) -> torch.Tensor:
        return torch.tensor([float(self.rho @ self.x)], dtype=torch.float64, device=self._device)

    def mean_grad_theta(self, energy, theta) -> torch.Tensor:
        """sum_i rho_i d_theta E(x_i), shape (P,)."""
        g = energy.grad_theta(self._xg, theta).to(torch.float64)
        w = torch.as_tensor(self.rho, dtype=torch.float64, device=g.device)
        return w @ g.reshape(len(self.rho), -1)

    def grad_theta_stats(self, energy, theta, needs: str = "cov", rows: int = 0, gen=None):
        """The exact mean and covariance of d_theta E under the grid density."""
        from ..rates.preconditioners import GradStats

        g = energy.grad_theta(self._xg, theta).to(torch.float64).reshape(len(self.rho), -1)
        w = torch.as_tensor(self.rho, dtype=torch.float64, device=g.device)
        mean = w @ g
        c = g - mean
        return GradStats(mean, cov=(c * w[:, None]).T @ c)

    def friction_exact(self, energy, theta, mobility: float) -> dict:
        """zeta_ij = int_0^inf <dE_i(x_t) dE_j(x_0)>_eq dt = sum_x pi f_i [(-Q^T)^-1 f_j] exactly on
        the grid (f = d_theta E centred under pi, Q the SQRA generator), with the grid Fisher."""
        from scipy.sparse.linalg import spsolve

        e = self._energy(energy, theta)
        pi = np.exp(-e - logsumexp(-e))
        f = energy.grad_theta(self._xg, theta).to(torch.float64).reshape(len(pi), -1).cpu().numpy()
        f = f - pi @ f
        A = (-self.generator(energy, theta, mobility).T).tolil()
        # -Q^T is singular (constants); pin u_0 = 0: the dropped equation is implied by the others.
        A[0, :] = 0.0
        A[0, 0] = 1.0
        rhs = f.copy()
        rhs[0] = 0.0
        u = spsolve(A.tocsc(), rhs).reshape(len(pi), -1)
        zeta = (f * pi[:, None]).T @ u
        zeta = 0.5 * (zeta + zeta.T)
        fisher = (f * pi[:, None]).T @ f
        dev = self._device
        return {"friction": torch.as_tensor(zeta, dtype=torch.float64, device=dev),
                "fisher": torch.as_tensor(fisher, dtype=torch.float64, device=dev)}

    def apply_update(self, energy, theta_old, theta_new) -> None:
        """work += sum_i rho_i (E_new(x_i) - E_old(x_i)), chains frozen (the energy's exact
        difference ``delta_energy`` where it has one)."""
        d = energy.delta_energy(self._xg, theta_old, theta_new).detach().cpu().numpy().astype(np.float64)
        self.work += float(self.rho @ d.reshape(-1))

    def move(self, energy, theta, dt, mobility, sampler=None, gen=None) -> None:
        """Propagate rho exactly for dt at fixed theta; heat += change of <E>, entropy
        production += decrease of KL(rho || pi_theta). ``sampler``/``gen`` are not used (the
        move is the exact generator); an Euler-Maruyama sampler is refused since its O(dt)
        bias cannot be represented."""
        if sampler is not None and sampler.name == "euler":
            raise InputError("the Fokker-Planck backend represents exact Langevin moves, not Euler-Maruyama")
        dt = float(dt)
        if dt < 0 or not math.isfinite(dt):
            raise InputError(f"dt must be finite and >= 0, got {dt!r}")
        if dt == 0:
            return
        mobility = require_positive("mobility", mobility)
        op = self._operator(energy, theta, mobility, dt)
        self._last = (energy, theta, mobility, dt)
        e, log_pi = op["energy"], op["log_pi"]
        e_old = float(self.rho @ e)
        kl_old = float(np.sum(xlogy(self.rho, self.rho)) - self.rho @ log_pi)
        self.rho = self._propagate(op, self.rho)
        self.heat += float(self.rho @ e) - e_old
        self.entropy_production += kl_old - float(np.sum(xlogy(self.rho, self.rho)) - self.rho @ log_pi)

    def mean_work(self) -> float:
        return self.work

    def mean_heat(self) -> float:
        return self.heat

    def first_law_residual(self, energy, theta) -> float:
        return abs(self._mean_energy(energy, theta) - self.energy_start - self.work - self.heat)

    def finite(self) -> bool:
        return bool(np.all(np.isfinite(self.rho)) and math.isfinite(self.work) and math.isfinite(self.heat))

    _STATE = ("rho", "work", "heat", "entropy_production", "energy_start", "kl_initial")

    def state_dict(self) -> dict:
        return {k: (v.copy() if isinstance(v, np.ndarray) else v)
                for k, v in ((k, getattr(self, k)) for k in self._STATE)}

    def load_state_dict(self, sd: dict) -> None:
        for k in self._STATE:
            v = sd[k]
            setattr(self, k, np.array(v, dtype=np.float64) if k == "rho" else float(v))

    # ------------------------------------------------------------------ the generator

    def rates(self, energy, theta, mobility: float):
        """(up, down): k_{i -> i+1} and k_{i+1 -> i}, each of length n - 1."""
        e = self._energy(energy, theta)
        return self._rates(e, mobility)

    def _rates(self, e, mobility):
        return sqra_rates(e, mobility, self.h)

    def generator(self, energy, theta, mobility: float):
        """The SQRA generator Q (scipy sparse, column convention d rho/dt = Q rho)."""
        from scipy.sparse import diags

        up, down = self._rates(self._energy(energy, theta), mobility)
        out = np.zeros(len(self.x))
        out[:-1] += up
        out[1:] += down
        # Q[i+1, i] = up_i (mass i -> i+1), Q[i, i+1] = down_i (mass i+1 -> i).
        return diags([up, -out, down], [-1, 0, 1], format="csr")

    def _operator(self, energy, theta, mobility, dt):
        key = (torch.as_tensor(theta).detach().cpu().numpy().tobytes(), float(mobility), float(dt), self.method)
        op = self._cache.get(key)
        if op is not None:
            self._cache.move_to_end(key)
            return op
        e = self._energy(energy, theta)
        if not np.all(np.isfinite(e)):
            raise InputError("the energy is not finite on the grid")
        up, down = self._rates(e, mobility)
        out = np.zeros(len(self.x))
        out[:-1] += up
        out[1:] += down
        op = {"energy": e, "log_pi": -e - logsumexp(-e)}
        lam = float(out.max())
        method = self.method
        if method == "auto":
            # uniformisation costs ~ lam dt x n per move, the eigen-decomposition ~ n^2 once per theta
            method = "uniformization" if lam * dt <= max(_UNIFORMIZATION_MAX, 2.0 * len(self.x)) else "eigh"
        op["method"] = method
        if method == "eigh":
            # Detailed balance: S = D^-1/2 Q D^1/2 (D = diag pi) is symmetric tridiagonal with
            # off-diagonal sqrt(up_i down_i); exp(Q dt) = D^1/2 V exp(L dt) V^T D^-1/2, exact in time.
            from scipy.linalg import eigh_tridiagonal

            lam_s, vec = eigh_tridiagonal(-out, np.sqrt(up * down))
            half = 0.5 * (op["log_pi"] - op["log_pi"].max())
            op.update(vec=vec, decay=np.exp(np.minimum(lam_s, 0.0) * dt), sqrt_pi=np.exp(half))
        elif method == "uniformization":
            lt = lam * dt
            k_max = int(math.ceil(lt + 8.0 * math.sqrt(lt) + 40.0))
            while poisson.logsf(k_max, lt) > math.log(_TAIL):
                k_max = int(k_max * 1.2) + 10
            w = poisson.pmf(np.arange(k_max + 1), lt)
            first = int(np.argmax(w > 0))
            op.update(stay=1.0 - out / lam, up=up / lam, down=down / lam,
                      weights=w / w.sum(), first=first)
        else:
            op["Q"] = self.generator(energy, theta, mobility) * dt
        self._cache[key] = op
        while len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return op

    def _propagate(self, op, rho):
        if op.get("method") == "eigh":
            vec, sp = op["vec"], op["sqrt_pi"]
            with np.errstate(divide="ignore", invalid="ignore"):
                y = np.where(sp > 0, rho / sp, 0.0)
            out = sp * (vec @ (op["decay"] * (vec.T @ y)))
            # round-off can leave entries of order -1e-17 where the density vanishes
            out = np.maximum(out, 0.0)
            total = out.sum()
            if abs(total - 1.0) < 1e-9:
                return out / total
            # rho carries mass where pi is tiny: the D^-1/2 scaling lost precision; fall back
            op = dict(op, method="expm_multiply", Q=self.generator(self._last[0], self._last[1],
                                                                  self._last[2]) * self._last[3])
        if op.get("method") == "expm_multiply":
            from scipy.sparse.linalg import expm_multiply

            return expm_multiply(op["Q"], rho)
        stay, up, down, w = op["stay"], op["up"], op["down"], op["weights"]
        v = rho.copy()
        acc = np.zeros_like(rho)
        nxt = np.empty_like(rho)
        for k in range(len(w)):
            if k >= op["first"]:
                acc += w[k] * v
            if k + 1 == len(w):
                break
            # v <- P v, P = I + Q / lam: every coefficient is >= 0.
            np.multiply(stay, v, out=nxt)
            nxt[1:] += up * v[:-1]
            nxt[:-1] += down * v[1:]
            v, nxt = nxt, v
        return acc
