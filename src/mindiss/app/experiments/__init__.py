"""The reproduction's experiments, one module each, in report order.

Each module: NAME, TITLE, CLAIM, CAPTION, run(quick, progress) -> ExperimentResult, plot(result).
"""
from __future__ import annotations

import importlib

from .base import CHECK_KINDS, Check, ExperimentResult, Table

ORDER = (
    "optimal_schedule",
    "dissipation_vs_duration",
    "bias_identity",
    "dissipation_split",
    "unknown_targets",
    "work_fluctuations",
    "energy_floor",
    "natural_gradient",
    "exact_optima",
    "neural_recipes",
    "neural_digits",
)


def available() -> list[str]:
    """Experiment names whose module exists, in report order."""
    names = []
    for name in ORDER:
        try:
            importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            continue
        names.append(name)
    return names


def get(name: str):
    if name not in ORDER:
        raise KeyError(name)
    return importlib.import_module(f"{__name__}.{name}")


__all__ = ["ORDER", "available", "get", "CHECK_KINDS", "Check", "ExperimentResult", "Table"]
