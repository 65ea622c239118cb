"""mindiss: minimal-dissipation learning for energy-based models (Hnybida & Verret, arXiv 2510.03137).

Conventions: kT = 1, energies in kT; Langevin dx = -mu grad_x E dt + sqrt(2 mu) dW; work done on
the chains by changing theta is positive; Delta E = W + Q per chain.

Names load on first use (a module ``__getattr__``), so ``import mindiss`` and ``mindiss --help``
do not import torch; ``import mindiss as md; md.train, md.HarmonicTrap, md.schedules`` work as before.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types

__version__ = "0.1.0"

#: public name -> (the module that defines it, the attribute; None: the module itself)
_NAMES = {
    "bounds": ("estimators.bounds", None), "data": ("data", None), "free_energy": ("estimators.free_energy", None),
    "moments": ("estimators.references", None), "optim": ("adapters.optim", None),
    "optimal": ("rates.optimal", None), "preconditioners": ("rates.preconditioners", None),
    "samplers": ("backends.samplers", None), "schedules": ("rates.schedules", None),
    "GaussianMoments": ("backends.chains", "GaussianMoments"), "ParticleChains": ("backends.chains", "ParticleChains"),
    "Energy": ("energies.base", "Energy"), "Gaussian": ("energies.base", "Gaussian"),
    "HarmonicTrap": ("energies.base", "HarmonicTrap"), "Capabilities": ("energies.base", "Capabilities"),
    "ExpFamily": ("energies.expfamily", "ExpFamily"), "NeuralEnergy": ("energies.neural", "NeuralEnergy"),
    "WorkTracker": ("adapters.tracker", "WorkTracker"),
    "DivergenceError": ("errors", "DivergenceError"), "InputError": ("errors", "InputError"),
    "MindissError": ("errors", "MindissError"),
    "MALA": ("backends.samplers", "MALA"), "EulerMaruyama": ("backends.samplers", "EulerMaruyama"),
    "ExactOU": ("backends.samplers", "ExactOU"),
    "History": ("core.results", "History"), "ThetaProtocol": ("core.results", "ThetaProtocol"),
    "TrainResult": ("core.results", "TrainResult"),
    "Interrupted": ("core.step", "Interrupted"), "replay": ("core.train", "replay"), "train": ("core.train", "train"),
    "Dynamics": ("core.options", "Dynamics"), "Ensemble": ("core.options", "Ensemble"),
    "Estimation": ("core.options", "Estimation"), "Checkpointing": ("core.options", "Checkpointing"),
    "Output": ("core.options", "Output"),
}

__all__ = [
    "bounds", "data", "free_energy", "moments", "optimal", "preconditioners", "samplers", "schedules",
    "NeuralEnergy", "optim", "WorkTracker",
    "Energy", "HarmonicTrap", "Gaussian", "ExpFamily", "ParticleChains", "GaussianMoments",
    "ExactOU", "EulerMaruyama", "MALA", "train", "Interrupted", "replay", "TrainResult", "History", "ThetaProtocol",
    "InputError", "DivergenceError", "MindissError", "__version__",
    "Dynamics", "Ensemble", "Estimation", "Checkpointing", "Output", "Capabilities",
]


def __getattr__(name: str):
    """Import the module behind a public name on first use (and any other submodule by its name)."""
    target = _NAMES.get(name)
    if target is None:
        if name.startswith("_") or importlib.util.find_spec(f"{__name__}.{name}") is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        target = (name, None)
    mod = importlib.import_module(f".{target[0]}", __name__)
    value = mod if target[1] is None else getattr(mod, target[1])
    if name == "train" and isinstance(value, types.ModuleType):
        value = value.train
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """Keeps ``mindiss.train`` the function: importing the submodule ``mindiss.train`` would otherwise
    bind the module to the package's ``train`` attribute (the eager package rebound it to the function)."""

    def __setattr__(self, name, value):
        if name == "train" and isinstance(value, types.ModuleType):
            value = value.train
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

from . import _aliases as _aliases  # old import paths, deprecated

_aliases.install()
