"""mindiss: minimal-dissipation learning for energy-based models (Hnybida & Verret, arXiv 2510.03137).

Conventions: kT = 1, energies in kT; Langevin dx = -mu grad_x E dt + sqrt(2 mu) dW; work done on
the chains by changing theta is positive; Delta E = W + Q per chain.
"""
from . import bounds, data, free_energy, moments, optim, optimal, preconditioners, samplers, schedules
from .chains import GaussianMoments, ParticleChains
from .energies import Energy, Gaussian, HarmonicTrap
from .expfamily import ExpFamily
from .neural import NeuralEnergy
from .tracker import WorkTracker
from .errors import DivergenceError, InputError, MindissError
from .samplers import MALA, EulerMaruyama, ExactOU
from .results import History, ThetaProtocol, TrainResult
from .train import Interrupted, replay, train
from .core.options import Checkpointing, Dynamics, Ensemble, Estimation, Output
from .energies import Capabilities

__version__ = "0.1.0"

__all__ = [
    "bounds", "data", "free_energy", "moments", "optimal", "preconditioners", "samplers", "schedules",
    "NeuralEnergy", "optim", "WorkTracker",
    "Energy", "HarmonicTrap", "Gaussian", "ExpFamily", "ParticleChains", "GaussianMoments",
    "ExactOU", "EulerMaruyama", "MALA", "train", "Interrupted", "replay", "TrainResult", "History", "ThetaProtocol",
    "InputError", "DivergenceError", "MindissError", "__version__",
    "Dynamics", "Ensemble", "Estimation", "Checkpointing", "Output", "Capabilities",
]
