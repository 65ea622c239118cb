"""``FusedParticleChains``: the particle ledger with fewer passes over the chains (``train(step_mode="fused")``).

For the energies whose parameter dependence is carried by a few chain statistics T(x):

* ``HarmonicTrap``: E_theta(x) = (|x|^2 - 2 theta . x + |theta|^2) / (2 s), T = (x, |x|^2);
* ``ExpFamily``: E_theta(x) = theta . phi(x), T = phi (kept transposed, (P, N), as ``ParticleChains`` does),

the update's ledger needs, per chain, only the work, and that is one multiply-add per update:

    trap:      W_i += c_k . x_i + d_k,  c_k = (theta_k - theta_{k+1}) / s,  d_k = -c_k . (theta_k + theta_{k+1}) / 2
    ExpFamily: W_i += phi(x_i) . (theta_{k+1} - theta_k)

(d_k is the same for every chain: it is summed once on the host). The heat is not accumulated per
update: by the first law per chain, Q_i = E_theta(x_i) - E_theta0(x_i,0) - W_i, evaluated when it is
read; its mean at a history row comes from the chain means of T (E_rho[E_theta] = theta . E_rho[T]
(+ |theta|^2 / (2 s))), and so does the mean work (sum_k of c_k . E_rho[x] + d_k, or
(theta_{k+1} - theta_k) . E_rho[phi]). Per update the default ledger makes ~8 passes over the chains
(energy, differences, two ledger rows, energy_now); this makes one (work) plus, for the trap, one
float64 sum of squares per history row.

What it guarantees (tests/test_fused.py): the chains, the random stream, theta and the g_hat of every
update are bit-identical to the default ``ParticleChains`` path (the same tensor operations in the
same order produce them); the per-chain work and heat and the history's mean work and heat equal
the default's up to float64 rounding (a different order of additions: relative differences ~1e-13,
never bit-identical). The first law holds by construction here, so ``first_law_residual`` is a
rounding-level sanity check, not an independent one. Checkpoints save the same keys; a resumed run
continues with the work materialised as one tensor (same values up to rounding).
"""
from __future__ import annotations

import torch

from ..energies.base import HarmonicTrap
from .chains import ParticleChains, check_states

F64 = torch.float64


def fused_problem(energy, backend: str, shards: int) -> str | None:
    """Why ``step_mode="fused"`` cannot run this energy / backend (None: it can)."""
    if backend != "particles" or shards != 1:
        return f"step_mode 'fused' runs on unsharded particle chains, not backend {backend!r} with {shards} shard(s)"
    if isinstance(energy, HarmonicTrap) or energy.capabilities.features:
        return None
    return (f"step_mode 'fused' has closed forms for HarmonicTrap and ExpFamily energies (E = theta . phi(x)), "
            f"not {type(energy).__name__}: use step_mode 'default' (or 'compiled' for a NeuralEnergy)")


class FusedParticleChains(ParticleChains):
    """N persistent chains with the per-chain work as one multiply-add per update and the heat from
    the first law (module docstring). Same protocol as ``ParticleChains``."""

    def __init__(self, x: torch.Tensor, energy, theta: torch.Tensor):
        check_states(x, energy)
        self.x = x
        self._energy = energy
        self._trap = isinstance(energy, HarmonicTrap)
        self._out = energy.capabilities.out_buffer
        self.energy_start = energy.energy(x, theta).to(F64)
        self._mean_e0 = float(self.energy_start.sum()) / x.shape[0]
        self._work = torch.zeros_like(self.energy_start)   # the per-chain part; + self._offset
        self._offset = 0.0                                  # sum_k d_k (trap), shared by every chain
        self._mean_work = 0.0
        self._theta = theta
        self._mean = None
        self._mean_of, self._mean_version, self._mean_list = None, -1, None
        self._phi_mean = None
        self._x64_buf = self._x64_now = self._sq = None
        if self._trap:
            self._s = energy.variance
            self._phi_fn = self._phi = self._phi_nt = None
        else:
            self._phi_fn = energy.phi_t
            self._phi = energy.phi_t(x)
            self._phi_nt = self._phi.t()

    # -- statistics shared with the default path (same operations: same bits) --------------
    def mean_grad_theta(self, energy, theta):
        if self._trap:
            return energy.expected_grad_theta(self.chain_mean(), None, theta)
        return self._phi_means()

    def _x64(self) -> torch.Tensor:
        """The current states in float64, copied once per move (the history row's sum of squares and
        the next update's work read the same copy; mixed-dtype kernels are ~2.5x slower than a copy)."""
        if self._x64_now is None:
            if self.x.dtype == F64:
                self._x64_now = self.x
            else:
                if self._x64_buf is None or self._x64_buf.shape != self.x.shape:
                    self._x64_buf = torch.empty(self.x.shape, dtype=F64, device=self.x.device)
                self._x64_now = self._x64_buf.copy_(self.x)
        return self._x64_now

    def _phi_means(self) -> torch.Tensor:
        if self._phi_mean is None:
            self._phi_mean = self._phi.mean(1)
        return self._phi_mean

    # -- the ledger ---------------------------------------------------------------------
    def apply_update(self, energy, theta_old, theta_new) -> None:
        """W_i += c . x_i + d (trap) or phi(x_i) . (theta_new - theta_old), chains frozen; the mean from
        the chain means of T (which g_hat has just computed for these same states)."""
        if self._trap:
            old, new = theta_old.tolist(), theta_new.tolist()
            s = self._s
            c = [(a - b) / s for a, b in zip(old, new)]
            d = -sum(ci * (a + b) for ci, a, b in zip(c, old, new)) / 2.0
            if len(c) == 1:
                self._work.add_(self._x64().reshape(-1), alpha=c[0])
            else:
                self._work.addmv_(self._x64(), theta_old.new_tensor(c))
            self._offset += d
            m = self.chain_mean_list()
            self._mean_work += sum(ci * mi for ci, mi in zip(c, m)) + d
        else:
            step = theta_new - theta_old
            self._work.addmv_(self._phi_nt, step)
            self._mean_work += float(step @ self._phi_means())
        self._theta = theta_new

    def observe_move(self, energy, theta, x_new: torch.Tensor) -> None:
        """The chains are now ``x_new`` (moved at fixed theta); the heat follows from the first law."""
        self.x = x_new
        self._mean = None
        self._phi_mean = None
        self._x64_now = None
        self._theta = theta
        if self._phi_fn is not None:
            self._phi_fn(self.x, out=self._phi)

    def _mean_energy(self) -> float:
        """E_rho[E_theta] of the current states at the current theta, from the chain means of T."""
        if self._trap:
            n = self.x.shape[0]
            xs = self._x64().reshape(-1)
            if self._sq is None or self._sq.shape != xs.shape:
                self._sq = torch.empty_like(xs)
            # (an element-wise square and a sum: BLAS dot threads badly on small vectors, ~70x slower here)
            sq = float(torch.mul(xs, xs, out=self._sq).sum())
            th = self._theta.tolist()
            m = self.chain_mean_list()
            return (sq / n - 2.0 * sum(a * b for a, b in zip(th, m)) + sum(a * a for a in th)) / (2.0 * self._s)
        return float(self._theta @ self._phi_means())

    def mean_work(self) -> float:
        return self._mean_work

    def mean_heat(self) -> float:
        return self._mean_energy() - self._mean_e0 - self._mean_work

    def mean_work_heat(self) -> tuple[float, float]:
        w = self._mean_work
        return w, self._mean_energy() - self._mean_e0 - w

    # -- per-chain views (materialised when read) ----------------------------------------
    @property
    def work(self) -> torch.Tensor:
        return self._work + self._offset

    @property
    def energy_now(self) -> torch.Tensor:
        if self._phi is not None:
            return torch.mv(self._phi_nt, self._theta)
        return self._energy.energy(self.x, self._theta).to(F64)

    @property
    def heat(self) -> torch.Tensor:
        """Q_i = E_theta(x_i) - E_theta0(x_i,0) - W_i (the first law, per chain)."""
        return self.energy_now - self.energy_start - self.work

    def first_law_residual(self, energy, theta) -> float:
        """max_i |E_theta(x_i) - E_theta0(x_i,0) - W_i - Q_i| with E recomputed by the energy (a sanity
        check here: Q is defined by the first law)."""
        e = energy.energy(self.x, theta).to(F64)
        return float((e - self.energy_start - self.work - self.heat).abs().max())

    def finite(self) -> bool:
        return bool(torch.isfinite(self.energy_now).all()) and bool(torch.isfinite(self._work).all())

    def restart(self, energy, theta, x) -> None:
        raise NotImplementedError("FusedParticleChains does not restart chains (train never relabels them)")

    def state_dict(self) -> dict:
        return {"x": self.x.clone(), "energy_start": self.energy_start.clone(), "energy_now": self.energy_now,
                "work": self.work, "heat": self.heat}

    def load_state_dict(self, sd: dict) -> None:
        self.x = sd["x"].clone()
        self.energy_start = sd["energy_start"].clone()
        self._mean_e0 = float(self.energy_start.sum()) / self.x.shape[0]
        self._work = sd["work"].clone()
        self._offset = 0.0
        self._mean_work = float(self._work.sum()) / self._work.shape[0]
        self._mean = None
        self._phi_mean = None
        self._x64_now = None
        if self._phi_fn is not None:
            self._phi = self._phi_fn(self.x)
            self._phi_nt = self._phi.t()
        # theta is restored by the caller (run.theta); the next apply_update / observe_move sets it here
