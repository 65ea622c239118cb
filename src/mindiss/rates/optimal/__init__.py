"""Optimal schedules: exact where a closed form exists, numerical otherwise (theory.md sections 3, 4 and 6, kT = 1).

* ``discrete``: ``discrete_harmonic``, the exactly optimal n-update schedule on the harmonic trap (the
  chains move by exact OU transitions between updates), and its excess work
  ``discrete_harmonic_excess_work``: W_ex* (n) = k |Delta|^2 / (2 + 2 n tanh(mu T / (2 n s))).
* ``gaussian``: ``gaussian_schedule``, the learnable-variance optimum (``bounds.gaussian``) realised as a
  schedule whose learning-rate matrix is built, update by update, from the chain statistics and the data
  moments (``OptimalGaussianMatrix``).
* ``numerical`` (with its differentiable forward models in ``models``): ``optimise_1d``, the optimal
  n-update schedule for a 1-D energy on its model: W_ex minimised over the theta path itself (every
  schedule of the canonical layout, whatever its learning-rate matrices), the end point chosen on the
  required final true loss, by L-BFGS-B / SLSQP and Newton steps with gradients from autograd through a
  torch Fokker-Planck propagation (the library's one SQRA generator, ``fokker_planck.sqra_rates``, exp(Q dt)
  by ``torch.linalg.matrix_exp``) or, for Gaussian energies, through the exact moment recursion; the signed
  per-update learning-rate matrices that realise it (``PerUpdateMatrix``) are derived afterwards.
* ``pareto``: ``pareto_front`` / ``dissipation_ratio``: least W_ex against final true loss (closed forms for
  the trap and the learnable-variance Gaussian, numerical for 1-D) and each schedule's W_ex relative to it.
* ``choose``: ``schedule_for``, the best schedule the library can give for an energy and data, and which kind.
* ``common``: ``UnreachableLossError`` and the canonical layout shared by the matrix-carried schedules
  (``PerUpdateMatrix``, ``PerUpdateDiagonal``).
"""
from .choose import ScheduleChoice, schedule_for
from .common import PerUpdateDiagonal, PerUpdateMatrix, UnreachableLossError, _layout, _unit_schedule
from .discrete import _decay, discrete_harmonic, discrete_harmonic_excess_work
from .gaussian import OptimalGaussianMatrix, _ou_inverse, gaussian_schedule
from .models import _GridModel, _MomentsModel, _true_loss
from .numerical import Optimal1D, _end_point_guess, _mle, optimise_1d
from .pareto import (GaussianProblem, HarmonicProblem, ParetoFront, Problem1D, _vector, dissipation_ratio,
                     pareto_front)

__all__ = [
    "discrete_harmonic", "discrete_harmonic_excess_work",
    "UnreachableLossError", "PerUpdateDiagonal",
    "OptimalGaussianMatrix", "gaussian_schedule",
    "Optimal1D", "PerUpdateMatrix", "optimise_1d",
    "HarmonicProblem", "GaussianProblem", "Problem1D", "ParetoFront", "pareto_front", "dissipation_ratio",
    "ScheduleChoice", "schedule_for",
    # private helpers, still reachable as ``optimal._name`` (tests build schedules with ``_unit_schedule``)
    "_decay", "_layout", "_unit_schedule", "_ou_inverse", "_GridModel", "_MomentsModel",
    "_true_loss", "_mle", "_end_point_guess", "_vector",
]
