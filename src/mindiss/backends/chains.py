"""Persistent chain ensembles with their thermodynamic ledger: the two backends of ``train``.

Both backends answer the same four calls of the canonical update (design.md):
``mean_grad_theta`` (E_rho[d_theta E]), ``apply_update`` (work with chains frozen, Crooks step a),
``move`` (chain move at fixed theta with its heat, step b) and ``chain_mean``.

* ``ParticleChains``: N simulated chains of fixed identity (no replay buffer, no restarts);
  float64 per-chain ``work``, ``heat`` and current ``energy``.
* ``GaussianMoments``: the exact N -> infinity limit for quadratic energies: the chain density
  stays N(mean, diag var); work, heat, KL(rho || p_theta) and entropy production in closed form.
"""
from __future__ import annotations

import math

import torch

from ..energies.base import Energy
from ..errors import InputError
from ..pairings import backend_problem
from ..estimators.references import ou_moments
from .samplers import EulerMaruyama, ExactOU, Sampler


class ChainBackend:
    """The protocol every chain backend implements (particles, sharded particles, moments, Fokker-Planck).

    The canonical update calls only these: ``mean_grad_theta(energy, theta)`` (E_rho[d_theta E]),
    ``grad_theta_stats(energy, theta, needs, rows, gen)`` (for a preconditioner),
    ``apply_update(energy, theta_old, theta_new)`` (work at frozen chains, Crooks step a),
    ``move(energy, theta, dt, mobility, sampler, gen)`` (heat at fixed theta, step b),
    ``chain_mean_list()``, ``mean_work_heat()``, ``finite()``, ``state_dict()`` / ``load_state_dict()``.
    What a backend is, is declared as data: ``particles`` (per-chain states and ledgers, Monte Carlo)
    and ``on_grid`` (a density on a grid whose quadrature gives F(theta) and the loss).
    """

    particles: bool = False
    on_grid: bool = False

    def chain_mean_list(self) -> list:
        """E_rho[x] as floats."""
        return self.chain_mean().tolist()

    def mean_work_heat(self) -> tuple[float, float]:
        """(mean work, mean heat) per chain, kT."""
        return self.mean_work(), self.mean_heat()


def check_states(x: torch.Tensor, energy: Energy) -> None:
    """InputError unless ``x`` is a finite (n_chains, energy.dim) tensor of initial chain states."""
    if x.ndim != 2 or x.shape[1] != energy.dim:
        raise InputError(f"chain states must have shape (n_chains, {energy.dim}), got {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise InputError("initial chain states contain NaN or infinite values")


class ParticleChains(ChainBackend):
    """N persistent chains x (N, d) with float64 ledgers ``work`` and ``heat`` (kT per chain).

    First law per chain: E_{theta_T}(x_T) - E_{theta_0}(x_0) = work + heat.
    """

    particles = True   # simulated chains (per-chain states and ledgers), not a density

    def __init__(self, x: torch.Tensor, energy: Energy, theta: torch.Tensor):
        check_states(x, energy)
        self.x = x
        caps = energy.capabilities
        # Energies that accept a float64 output buffer are evaluated in place (no allocation).
        self._out = caps.out_buffer
        self.energy_start = energy.energy(x, theta)
        self.energy_now = self.energy_start.clone()
        # work and heat are the two rows of one (2, N) ledger: both means from one reduction per record
        self._ledger = self.energy_now.new_zeros((2, self.energy_now.shape[0]))
        self.work, self.heat = self._ledger[0], self._ledger[1]
        self._scratch = torch.empty_like(self.energy_now)
        self._mean: torch.Tensor | None = None   # the chain mean of the states ``_mean_of`` at ``_mean_version``
        self._mean_of, self._mean_version, self._mean_list = None, -1, None
        # E = theta . phi(x): phi of the current states is computed once per move and shared by
        # g_hat, the work of the next update and the heat (one feature pass per update, not three)
        # (stored transposed, (P, N): the reductions over chains run along contiguous rows)
        self._from_energy = caps.work_from_energy
        self._from_mean = caps.quadratic and caps.grad_theta_from_mean
        self._phi_fn = energy.phi_t if caps.features else None
        self._phi = energy.phi_t(x) if caps.features else None
        self._phi_nt = None if self._phi is None else self._phi.t()   # (N, P) view for the mat-vecs

    @classmethod
    def equilibrium(cls, energy, theta, n_chains: int, *, gen, dtype=torch.float32):
        """Chains drawn exactly from p_theta (built-in energies)."""
        return cls(energy.sample_equilibrium(theta, n_chains, gen=gen, dtype=dtype), energy, theta)

    @property
    def n_chains(self) -> int:
        return self.x.shape[0]

    def head(self, n: int) -> torch.Tensor:
        """The first ``n`` chain states."""
        return self.x[:n]

    def chain_mean(self) -> torch.Tensor:
        """E_rho[x], float64 (d,): one float64 sum over the chains and a division, computed once per move
        and shared by the history row and the next g_hat (torch's CPU ``mean(dtype=float64)`` is this
        same sum followed by the same division: the same numbers, without a second pass over the chains)."""
        if self._mean is None or self._mean_of is not self.x or self._mean_version != self.x._version:
            self._mean = self.x.sum(0, dtype=torch.float64).div_(self.x.shape[0])
            self._mean_of, self._mean_version, self._mean_list = self.x, self.x._version, None
        return self._mean

    def chain_mean_list(self) -> list:
        """chain_mean() as floats, cached until the chains move."""
        mean = self.chain_mean()
        if self._mean_list is None:
            self._mean_list = mean.tolist()
        return self._mean_list

    def mean_grad_theta(self, energy, theta):
        if self._from_mean:
            # Shares one reduction with chain_mean (harmonic: d_theta E is linear in x).
            return energy.expected_grad_theta(self.chain_mean(), None, theta)
        if self._phi is not None:
            return self._phi.mean(1)
        return energy.mean_grad_theta(self.x, theta)

    def grad_theta_stats(self, energy, theta, needs: str, rows: int = 0, gen=None):
        """d_theta E statistics for a preconditioner: the mean over all chains plus per-chain
        gradients of all chains ("samples") or of a random subsample of ``rows`` ("subsample")."""
        from ..rates.preconditioners import GradStats

        if needs == "samples" or (needs == "subsample" and rows >= self.n_chains):
            g = energy.grad_theta(self.x, theta).to(torch.float64)
            return GradStats(g.mean(0), samples=g)
        mean = self.mean_grad_theta(energy, theta)
        if needs == "subsample":
            # rows drawn with replacement: O(rows), not a permutation of all N chains
            idx = torch.randint(self.n_chains, (rows,), generator=gen, device=gen.device).to(self.x.device)
            return GradStats(mean, samples=energy.grad_theta(self.x[idx], theta).to(torch.float64))
        return GradStats(mean)

    def apply_update(self, energy, theta_old, theta_new) -> torch.Tensor:
        """Crooks step (a): W_i += E_{theta_new}(x_i) - E_{theta_old}(x_i) at frozen chains. Returns this
        update's per-chain work (a buffer reused by the next call: copy it to keep it). ``WorkTracker``
        books a user's loop through this same method."""
        if self._from_energy:   # W_i = E_new(x_i) - E_old(x_i), E_old being the stored energy_now
            e_new = energy.energy_and_grad_x(self.x, theta_new)
            w = torch.sub(e_new, self.energy_now, out=self._scratch)
            self.work.add_(w)
            self.energy_now = e_new
            return w
        if self._phi is not None:   # W_i = phi(x_i) . (theta_new - theta_old), exactly
            w = torch.mv(self._phi_nt, theta_new - theta_old, out=self._scratch)   # theta is float64
            self.work.add_(w)
            self.energy_now.add_(w)
            return w
        w = (energy.delta_energy(self.x, theta_old, theta_new, out=self._scratch) if self._out
             else energy.delta_energy(self.x, theta_old, theta_new))
        self.work.add_(w)
        self.energy_now.add_(w)
        return w

    def move(self, energy, theta, dt, mobility, sampler: Sampler, gen) -> None:
        """Crooks step (b): the sampler moves the chains at fixed theta; heat as in ``observe_move``."""
        self.observe_move(energy, theta, sampler.step(energy, theta, self.x, dt=dt, mobility=mobility, gen=gen))

    def observe_move(self, energy, theta, x_new: torch.Tensor) -> None:
        """The chains are now ``x_new`` (moved at fixed theta): Q_i += E_theta(x_new,i) - E_theta(x_old,i).
        ``WorkTracker`` books a user's own sampler's moves through this same method."""
        self.x = x_new
        self._mean = None
        if self._phi is not None:
            self._phi_fn(self.x, out=self._phi)
            e_new = torch.mv(self._phi_nt, theta, out=self._scratch)
        else:
            e_new = (energy.energy(self.x, theta, out=self._scratch) if self._out
                     else energy.energy(self.x, theta))
        self.heat.add_(torch.sub(e_new, self.energy_now, out=self.energy_now))   # Q_i += E(x_new) - E(x_old)
        if e_new is self._scratch:
            self._scratch = self.energy_now  # the old buffer becomes scratch
        self.energy_now = e_new

    def mean_work(self) -> float:
        return self.work.sum().item() / self.work.shape[0]

    def mean_heat(self) -> float:
        return self.heat.sum().item() / self.heat.shape[0]

    def mean_work_heat(self) -> tuple[float, float]:
        """(mean work, mean heat) per chain from one reduction over the ledger."""
        w, h = self._ledger.sum(1).tolist()
        n = self._ledger.shape[1]
        return w / n, h / n

    def restart(self, energy, theta, x: torch.Tensor) -> None:
        """New systems in every slot (a replay buffer relabelled the chains): states ``x`` at theta, their
        energies recomputed; the ledger of the old systems is the caller's (``Ledger.reassign``)."""
        self.x = x
        self._mean = None
        self.energy_now = energy.energy(x, theta).to(torch.float64)
        if self._phi_fn is not None:
            self._phi = self._phi_fn(x)
            self._phi_nt = self._phi.t()
        self._scratch = torch.empty_like(self.energy_now)

    def first_law_residual(self, energy, theta) -> float:
        """max_i |E_{theta}(x_i) - E_{theta_0}(x_i,0) - W_i - Q_i|, energies recomputed afresh."""
        if self._out:   # in the scratch buffer: no N-sized temporaries at 1e7 chains
            e = energy.energy(self.x, theta, out=self._scratch)
            return float(e.sub_(self.energy_start).sub_(self.work).sub_(self.heat).abs_().max())
        delta = energy.energy(self.x, theta) - self.energy_start
        return float((delta - self.work - self.heat).abs().max())

    def finite(self) -> bool:
        return bool(torch.isfinite(self.energy_now).all())

    _STATE = ("x", "energy_start", "energy_now", "work", "heat")

    def state_dict(self) -> dict:
        return {k: getattr(self, k).clone() for k in self._STATE}

    def load_state_dict(self, sd: dict) -> None:
        for k in self._STATE:
            setattr(self, k, sd[k].clone())
        self._ledger = torch.stack([self.work, self.heat])
        self.work, self.heat = self._ledger[0], self._ledger[1]
        self._scratch = torch.empty_like(self.energy_now)
        self._mean = None
        if self._phi_fn is not None:
            self._phi = self._phi_fn(self.x)
            self._phi_nt = self._phi.t()


class GaussianMoments(ChainBackend):
    """Exact N -> infinity chains for quadratic energies: rho_t = N(mean, diag var), float64.

    Moves: exact OU (``ExactOU``) or the Euler-Maruyama moment map
    m' = m - mu dt (m - c)/v, var' = (1 - mu dt / v)^2 var + 2 mu dt (``EulerMaruyama``).
    Tracks Identity 2: W_ex = KL(rho_T || p_T) - KL(rho_0 || p_0) + entropy_production, where a
    move at fixed theta produces KL(rho || p_theta) - KL(rho' || p_theta) >= 0.
    """

    n_chains = math.inf

    def __init__(self, mean, var, energy: Energy, theta):
        problem = backend_problem("moments", quadratic=energy.capabilities.quadratic, dim=energy.dim,
                                  energy_name=type(energy).__name__)
        if problem:
            raise InputError(problem)
        self.mean = torch.as_tensor(mean, dtype=torch.float64, device=theta.device).reshape(energy.dim).clone()
        self.var = torch.as_tensor(var, dtype=torch.float64, device=theta.device).reshape(energy.dim).clone()
        if not bool((self.var > 0).all()):
            raise InputError("initial chain variance must be positive")
        self.work = 0.0
        self.heat = 0.0
        self.entropy_production = 0.0
        self.energy_start = energy.expected_energy(self.mean, self.var, theta)
        self.kl_initial = energy.kl(self.mean, self.var, theta)

    @classmethod
    def equilibrium(cls, energy, theta):
        c, v = energy.gaussian_params(theta)
        return cls(c, v, energy, theta)

    def chain_mean(self):
        return self.mean

    def mean_grad_theta(self, energy, theta):
        return energy.expected_grad_theta(self.mean, self.var, theta)

    def grad_theta_stats(self, energy, theta, needs: str, rows: int = 0, gen=None):
        """The exact mean and covariance of d_theta E under N(mean, var) (no sampling)."""
        from ..rates.preconditioners import GradStats

        return GradStats(energy.expected_grad_theta(self.mean, self.var, theta),
                         cov=energy.cov_grad_theta(self.mean, self.var, theta))

    def apply_update(self, energy, theta_old, theta_new) -> None:
        self.work += energy.expected_delta_energy(self.mean, self.var, theta_old, theta_new)

    def move(self, energy, theta, dt, mobility, sampler: Sampler, gen=None) -> None:
        c, v = energy.gaussian_params(theta)
        e_old, kl_old = energy.expected_energy(self.mean, self.var, theta), energy.kl(self.mean, self.var, theta)
        if isinstance(sampler, ExactOU):
            self.mean, self.var = ou_moments(self.mean, self.var, c, v, mobility, dt)
        elif isinstance(sampler, EulerMaruyama):
            r = 1.0 - mobility * dt / v
            self.mean, self.var = c + (self.mean - c) * r, r * r * self.var + 2.0 * mobility * dt
        else:
            raise InputError(f"backend 'moments' supports samplers 'exact' and 'euler', not {sampler.name!r}")
        self.heat += energy.expected_energy(self.mean, self.var, theta) - e_old
        self.entropy_production += kl_old - energy.kl(self.mean, self.var, theta)

    def mean_work(self) -> float:
        return self.work

    def mean_heat(self) -> float:
        return self.heat

    def first_law_residual(self, energy, theta) -> float:
        return abs(energy.expected_energy(self.mean, self.var, theta) - self.energy_start - self.work - self.heat)

    def finite(self) -> bool:
        return bool(torch.isfinite(self.mean).all() and torch.isfinite(self.var).all())

    _STATE = ("mean", "var", "work", "heat", "entropy_production", "energy_start", "kl_initial")

    def state_dict(self) -> dict:
        return {k: getattr(self, k) for k in self._STATE}

    def load_state_dict(self, sd: dict) -> None:
        for k in self._STATE:
            setattr(self, k, sd[k])
