"""Results of ``train``: the ``TrainResult`` dataclass, its per-update ``History`` and the
``ThetaProtocol`` that replays a recorded parameter path."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import InputError
from ..estimators import bounds as _bounds


@dataclass(frozen=True)
class ThetaProtocol:
    """A prescribed parameter path: update k sets theta to ``thetas[k + 1]`` (open-loop replay).

    ``thetas`` has shape (n_updates + 1, P) (row 0 is theta_0), ``dt`` the chain move after each
    update. Replaying a training run's recorded path on fresh chains removes the feedback of the
    chains on theta, so Jarzynski's equality holds exactly.
    """

    thetas: np.ndarray
    dt: np.ndarray

    @property
    def n_updates(self) -> int:
        return len(self.dt)

    @property
    def duration(self) -> float:
        return float(np.sum(self.dt))


@dataclass(frozen=True)
class History:
    """Per-update records (row 0: the initial state). Columns by name: ``history["work"]``."""

    columns: tuple
    values: np.ndarray

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self.values[:, self.columns.index(name)]
        except ValueError:
            raise KeyError(f"no column {name!r}; columns are {self.columns}") from None

    def block(self, prefix: str) -> np.ndarray:
        """All columns named prefix_0, prefix_1, ... as an array of shape (rows, n)."""
        idx = [i for i, c in enumerate(self.columns) if c.startswith(prefix + "_") and c[len(prefix) + 1:].isdigit()]
        return self.values[:, idx]

    def to_csv(self, path) -> None:
        from ..io import atomic_write_text

        lines = [",".join(self.columns)]
        lines += [",".join(repr(float(v)) for v in row) for row in self.values]
        atomic_write_text(path, "\n".join(lines) + "\n")


@dataclass(frozen=True)
class TrainResult:
    """Outcome of ``train``: thermodynamic ledger (kT), losses, residuals of the identities.

    Monte-Carlo figures are means over independent replicas; ``*_se`` is their standard error
    (0 for the deterministic moments backend, NaN for a single particle replica).
    """

    work: float
    work_se: float
    excess_work: float
    excess_work_se: float
    delta_free_energy: float
    loss_true_change: float
    loss_approx_change: float
    final_loss: float
    theta0: list
    theta_final: list
    theta_final_se: list
    n_updates: int
    n_chains: float
    n_replicas: int
    backend: str
    sampler: str
    duration: float
    bound: float | None
    identity1_residual: float       # max over replicas |(dL_true - dL_approx) - W_ex|
    first_law_residual: float       # max over chains |Delta E - W - Q|
    kl_initial: float | None        # moments backend: KL(rho_0 || p_theta_0)
    kl_final: float | None          # moments backend: KL(rho_T || p_theta_T)
    entropy_production: float | None
    acceptance_rate: float | None   # MALA only
    replica_excess_work: list
    replica_theta_final: list
    notes: list                     # caveats that qualify the figures (e.g. sampler bias)
    history: History
    thetas: np.ndarray              # theta after every update (row 0: theta_0), replica 0
    dts: np.ndarray
    temperature_kelvin: float = 300.0
    chain_work: np.ndarray | None = field(default=None, repr=False)   # per chain, replica 0
    preconditioner: dict | None = None   # the learning-rate matrix used (damping, window, ...), replica 0
    tau_estimates: list = field(default_factory=list)   # relaxation times the schedule used, replica 0
    delta_free_energy_se: float = 0.0   # error of an estimated Delta F (0 where exact)
    free_energy_method: str = "exact"   # exact / ais / ti / jarzynski / none (...)
    final_chains: torch.Tensor | None = field(default=None, repr=False)

    @property
    def energy_joules(self) -> float:
        """The dissipated energy W_ex k_B T in joules at ``temperature_kelvin``."""
        return _bounds.joules(self.excess_work, self.temperature_kelvin)

    @property
    def bias(self) -> float:
        """L(theta_T) - L_approx(T): the under-reporting of the approximate objective."""
        return self.loss_true_change - self.loss_approx_change

    def protocol(self) -> ThetaProtocol:
        """The recorded theta path (replica 0) as a prescribed protocol for ``replay``."""
        if self.thetas is None:
            raise InputError("this run did not keep theta after every update (a large network's path, or a "
                             "history_file run): train with keep_thetas=True to replay it")
        return ThetaProtocol(self.thetas.copy(), self.dts.copy())

    def to_dict(self) -> dict:
        keys = ["work", "work_se", "excess_work", "excess_work_se", "delta_free_energy",
                "loss_true_change", "loss_approx_change", "final_loss", "theta0", "theta_final",
                "n_updates", "n_chains", "n_replicas", "backend", "sampler", "duration", "bound",
                "identity1_residual", "first_law_residual", "kl_initial", "kl_final",
                "entropy_production", "acceptance_rate", "replica_excess_work",
                "theta_final_se", "replica_theta_final", "notes", "temperature_kelvin",
                "preconditioner", "tau_estimates", "delta_free_energy_se", "free_energy_method"]
        out = {k: getattr(self, k) for k in keys}
        out["energy_joules"] = self.energy_joules
        out["bias"] = self.bias

        def clean(v):
            if isinstance(v, float):
                return None if not math.isfinite(v) else v
            if isinstance(v, (list, tuple)):
                return [clean(a) for a in v]
            return v

        return {k: clean(v) for k, v in out.items()}
