"""Energies E_theta(x) in kT and what each provides, declared as data (``base.Capabilities``).

``base``: the ``Energy`` protocol, ``Capabilities``, the quadratic energies ``HarmonicTrap`` and
``Gaussian``; ``expfamily``: E = theta . phi(x) with 1-D quadrature; ``neural``: any torch module;
``rbm``: the Gaussian-Bernoulli RBM with its exact hidden sum.

May import: errors only (and torch, numpy). Everything else imports energies.
"""
from .base import LOG_2PI, Capabilities, DiagonalGaussianEnergy, Energy, Gaussian, HarmonicTrap

__all__ = ["LOG_2PI", "Capabilities", "DiagonalGaussianEnergy", "Energy", "Gaussian", "HarmonicTrap"]
