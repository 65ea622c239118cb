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

#: public name -> the submodule that defines it (a submodule itself where the name is the module's)
_NAMES = {
    "bounds": "bounds", "data": "data", "free_energy": "free_energy", "moments": "moments", "optim": "optim",
    "optimal": "optimal", "preconditioners": "preconditioners", "samplers": "samplers", "schedules": "schedules",
    "GaussianMoments": "chains", "ParticleChains": "chains",
    "Energy": "energies", "Gaussian": "energies", "HarmonicTrap": "energies",
    "ExpFamily": "expfamily", "NeuralEnergy": "neural", "WorkTracker": "tracker",
    "DivergenceError": "errors", "InputError": "errors", "MindissError": "errors",
    "MALA": "samplers", "EulerMaruyama": "samplers", "ExactOU": "samplers",
    "History": "results", "ThetaProtocol": "results", "TrainResult": "results",
    "Interrupted": "train", "replay": "train", "train": "train",
    "Dynamics": "core.options", "Ensemble": "core.options", "Estimation": "core.options",
    "Checkpointing": "core.options", "Output": "core.options", "Capabilities": "energies",
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
    """Import the submodule behind a public name on first use (and any other submodule by its name)."""
    module = _NAMES.get(name)
    if module is None:
        if name.startswith("_") or importlib.util.find_spec(f"{__name__}.{name}") is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        module = name
    mod = importlib.import_module(f".{module}", __name__)
    value = mod if module == name and name != "train" else getattr(mod, name)
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
