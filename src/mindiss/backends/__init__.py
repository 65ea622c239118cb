"""Chain backends: what moves the persistent chains and keeps their ledger.

One protocol (``chains.ChainBackend``), four implementations: ``ParticleChains`` (N simulated chains,
float64 per-chain work and heat), ``ShardedParticleChains`` (``sharded``: blocks over torch.distributed
ranks), ``GaussianMoments`` (exact N -> infinity for quadratic energies) and ``FokkerPlanck1D``
(``fokker_planck``: the exact 1-D density on a grid). ``samplers``: the chain moves (exact OU,
Euler-Maruyama, MALA). ``dispatch``: how each backend starts and its F / loss evaluations.

May import: energies, estimators.references (the OU moment map), errors. Not core, rates or app.
"""
from .chains import ChainBackend, GaussianMoments, ParticleChains
from .dispatch import (BACKENDS, DETERMINISTIC, data_mean_grad_theta, default_grid, free_energy,
                       free_energy_many, initial_chains, kl_and_entropy, loss, loss_many)

__all__ = ["ChainBackend", "GaussianMoments", "ParticleChains", "BACKENDS", "DETERMINISTIC",
           "data_mean_grad_theta", "default_grid", "free_energy", "free_energy_many", "initial_chains",
           "kl_and_entropy", "loss", "loss_many"]
