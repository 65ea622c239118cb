"""Data: ``base`` (``Gaussian`` with exact moments, ``Dataset``, ``as_dataset``, file loading) and
``toy`` (2-D toy sets with their true densities, the digits).

May import: energies (toy sets' true densities), errors. Not core, rates or app.
"""
from .base import Dataset, Gaussian, as_dataset, load

__all__ = ["Dataset", "Gaussian", "as_dataset", "load"]
