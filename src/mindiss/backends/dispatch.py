"""The three chain backends of ``train`` and how a run starts on each.

* ``particles``: N simulated chains (``chains.ParticleChains``), any energy and sampler;
* ``moments``: the exact N -> infinity Gaussian density for quadratic energies
  (``chains.GaussianMoments``);
* ``fokker_planck``: the exact density of any 1-D energy on a grid
  (``fokker_planck.FokkerPlanck1D``), so W, Delta F, KL and entropy production carry no
  Monte-Carlo noise. Free energies on this backend are the grid's, F = -ln sum_i h exp(-E_i), so
  that Identity 2 holds exactly in discrete time (the grid's O(h^2) error is far below any
  other in a run).
"""
from __future__ import annotations

import copy
import math

import numpy as np
import torch

from .chains import GaussianMoments, ParticleChains
from ..errors import InputError

BACKENDS = ("particles", "moments", "fokker_planck")
DETERMINISTIC = ("moments", "fokker_planck")


def default_grid(energy, theta, data_samples=None) -> tuple:
    """A grid for the Fokker-Planck backend: the quadrature interval of p_theta0 (where the
    density has decayed by e^-60), joined with the data's range plus one unit on each side,
    widened by 10 %; spacing h <= 0.01. (Wider grids only add stiff boundary rates.)"""
    interval = None
    caps = energy.capabilities
    if caps.quadrature_interval:
        interval = energy.quadrature_interval(theta)
    elif caps.quadratic:
        c, v = energy.gaussian_params(theta)
        half = 11.0 * math.sqrt(float(v[0]))
        interval = (float(c[0]) - half, float(c[0]) + half)
    if interval is None:
        return (-8.0, 8.0, 1601)
    a, b = interval
    if data_samples is not None:
        a = min(a, float(data_samples.min()) - 1.0)
        b = max(b, float(data_samples.max()) + 1.0)
    w = b - a
    lo, hi = a - 0.05 * w, b + 0.05 * w
    n = int(min(max(math.ceil((hi - lo) / 0.01) + 1, 801), 8001))
    return (lo, hi, n)


def initial_chains(backend, energy, theta, chains, n_chains, gen, dtype, data_samples=None):
    """The chain state a replica starts from (see ``train``'s ``chains`` argument)."""
    if backend == "moments":
        if chains is None:
            return GaussianMoments.equilibrium(energy, theta)
        if isinstance(chains, tuple) and len(chains) == 2:
            return GaussianMoments(chains[0], chains[1], energy, theta)
        raise InputError("backend 'moments' takes chains=(mean, variance)")
    if backend == "fokker_planck":
        from .fokker_planck import FokkerPlanck1D

        if energy.dim != 1:
            raise InputError(f"backend 'fokker_planck' needs a one-dimensional energy, not dim={energy.dim}")
        if isinstance(chains, FokkerPlanck1D):
            return copy.deepcopy(chains)
        if chains is None:
            return FokkerPlanck1D(energy, theta, grid=default_grid(energy, theta, data_samples))
        if isinstance(chains, dict):
            unknown = set(chains) - {"grid", "density"}
            if unknown:
                raise InputError(f"backend 'fokker_planck' chains= keys are 'grid' and 'density', not {sorted(unknown)}")
            return FokkerPlanck1D(energy, theta, grid=chains.get("grid") or default_grid(energy, theta, data_samples),
                                  density=chains.get("density"))
        raise InputError("backend 'fokker_planck' takes chains=None, a FokkerPlanck1D or "
                         "{'grid': (lo, hi, n), 'density': values}")
    if chains is None:
        try:
            return ParticleChains.equilibrium(energy, theta, n_chains, gen=gen, dtype=dtype)
        except NotImplementedError as exc:
            raise InputError(f"{exc} (chains=None asks for exact equilibrium draws of p_theta0)") from None
    if isinstance(chains, tuple) and len(chains) == 2:  # draw N(mean, variance) exactly
        mean = torch.as_tensor(np.asarray(chains[0], float), dtype=torch.float64).reshape(-1).expand(energy.dim)
        var = torch.as_tensor(np.asarray(chains[1], float), dtype=torch.float64).reshape(-1).expand(energy.dim)
        if not bool((var > 0).all()):
            raise InputError("chain variance must be positive")
        z = torch.empty((n_chains, energy.dim), dtype=torch.float64).normal_(generator=gen)
        return ParticleChains((mean + var.sqrt() * z).to(dtype).to(theta.device), energy, theta)
    x = torch.as_tensor(chains)
    return ParticleChains(x.to(device=theta.device, dtype=dtype).clone(), energy, theta)


def free_energy(energy, theta, state=None) -> float:
    """F(theta): the grid's on the Fokker-Planck backend, else the energy's closed form or NaN."""
    if state is not None and state.on_grid:
        return state.free_energy_on_grid(energy, theta)
    try:
        return energy.free_energy(theta)
    except NotImplementedError:
        return math.nan


def free_energy_many(energy, thetas: np.ndarray, state=None, device="cpu") -> np.ndarray:
    """F(theta_r) for each row of ``thetas`` (R, P): one batched quadrature where the energy has one
    (``free_energy_many``), else row by row; NaN where F is unknown."""
    thetas = np.asarray(thetas, dtype=float).reshape(len(thetas), -1)
    if energy.capabilities.free_energy_many and not (state is not None and state.on_grid):
        try:
            return np.asarray(energy.free_energy_many(thetas), dtype=float)
        except NotImplementedError:
            return np.full(len(thetas), math.nan)
    return np.array([free_energy(energy, torch.as_tensor(t, device=device), state) for t in thetas], dtype=float)


def loss_many(energy, data, thetas: np.ndarray, state, fe: np.ndarray, device="cpu") -> np.ndarray:
    """L(theta_r) = E_data[E_theta_r] - F(theta_r) for each row, given F (NaN where F is unknown)."""
    thetas = np.asarray(thetas, dtype=float).reshape(len(thetas), -1)
    fe = np.asarray(fe, dtype=float)
    caps, on_grid = energy.capabilities, state is not None and state.on_grid
    if caps.loss_many and caps.quadratic and not on_grid:
        return np.asarray(energy.loss_many(data.mean, data.variance, thetas), dtype=float)
    if caps.features and not caps.quadratic:
        mean_phi = data_mean_grad_theta(energy, data, None).cpu().numpy()   # E_data[E] = theta . E_data[phi]
        return thetas @ mean_phi - fe
    out = np.empty(len(thetas))
    for r, t in enumerate(thetas):
        if not math.isfinite(fe[r]) and not caps.quadratic:
            out[r] = math.nan
            continue
        out[r] = loss(energy, data, torch.as_tensor(t, device=device), state)
    return out


def data_mean_grad_theta(energy, data, theta) -> torch.Tensor:
    """E_data[d_theta E]. For E = theta . phi(x) it is E_data[phi], the same at every theta:
    computed once per data set (the data term is then free in the hot loop)."""
    if energy.capabilities.quadratic:
        return energy.expected_grad_theta(data.mean, data.variance, theta)
    if energy.capabilities.features:
        key = ("mean_phi", id(energy))
        cache = data.__dict__.setdefault("_cache", {})
        if key not in cache:
            cache[key] = energy.mean_grad_theta(data.samples, theta)
        return cache[key]
    return energy.mean_grad_theta(data.samples, theta)


def loss(energy, data, theta, state=None) -> float:
    """L(theta) = E_data[E_theta] - F(theta) where it is known exactly, else NaN."""
    caps = energy.capabilities
    if caps.quadratic and not (state is not None and state.on_grid):
        return energy.loss(data.mean, data.variance, theta)
    f = free_energy(energy, theta, state)
    if not math.isfinite(f):
        return math.nan
    if caps.quadratic:
        return energy.expected_energy(data.mean, data.variance, theta) - f
    if caps.features:   # E_data[E] = theta . E_data[phi]
        return float(data_mean_grad_theta(energy, data, theta) @ theta.to(torch.float64)) - f
    return float(energy.energy(data.samples, theta).mean()) - f


def kl_and_entropy(state, energy, theta):
    """(KL(rho_0 || p_0), KL(rho_T || p_T), entropy production) on the exact backends, else Nones."""
    if isinstance(state, GaussianMoments):
        return state.kl_initial, energy.kl(state.mean, state.var, theta), state.entropy_production
    if state.on_grid:
        return state.kl_initial, state.kl(energy, theta), state.entropy_production
    return None, None, None
