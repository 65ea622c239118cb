"""The options of ``train``, grouped by the concept a reader has to understand.

``train(energy, data, schedule=..., theta0=..., dynamics=Dynamics(...), ensemble=Ensemble(...), ...)``
or the same names flat (``train(..., mobility=1.0, n_chains=1000)``): every flat name belongs to
exactly one group (``GROUPS``). Values are checked by ``core.contract.check_contract``, not here.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Callable, Sequence

from ..errors import InputError


@dataclass(frozen=True)
class Dynamics:
    """How the chains move and how long: dx = -mu grad_x E dt + sqrt(2 mu) dW over ``duration``.

    ``n_steps``: interior updates of a continuous schedule (plus its impulses); ``sampler``: "exact"
    (OU, quadratic energies), "euler", "mala" or a Sampler; ``backend``: "particles", "moments"
    (exact N -> infinity, quadratic energies) or "fokker_planck" (exact 1-D density on a grid);
    ``dtype`` of particle chains (float32 / float64; theta and the ledger are always float64);
    ``seed``: a non-negative integer from which every replica's generators are spawned.
    ``step_mode``: "default" (the reference update), "fused" (HarmonicTrap / ExpFamily on particles:
    the per-chain work as one multiply-add, the heat from the first law; chains, theta and g_hat
    bit-identical to "default", work and heat equal up to float64 rounding: ``backends.fused``) or
    "compiled" (NeuralEnergy: ``torch.compile``d forward and gradients; same random stream, values
    equal to float tolerance, not bit-identical: ``energies.compiled``). Both are opt-in.
    """

    mobility: float = 1.0
    duration: float | None = None
    n_steps: int = 1000
    sampler: Any = "exact"
    backend: str = "particles"
    dtype: Any = "float32"
    device: Any = "cpu"
    seed: int = 0
    step_mode: str = "default"


@dataclass(frozen=True)
class Ensemble:
    """The persistent chains: ``n_chains`` per replica (default: the rows of ``chains`` if given,
    else 100,000), ``n_replicas`` independent runs for the errors (default 4 on particles, 1 on the
    exact backends), initial ``chains`` (None: exact equilibrium of p_theta0; a tensor of states;
    (mean, variance); a Fokker-Planck density), ``shards`` (chain blocks with their own generators,
    spread over torch.distributed ranks) and ``keep_chains`` (return the final states and per-chain work)."""

    n_chains: int | None = None
    n_replicas: int | None = None
    chains: Any = None
    shards: int | None = None
    keep_chains: bool = False


@dataclass(frozen=True)
class Estimation:
    """How g_hat, the learning-rate matrix and Delta F are estimated.

    ``preconditioner``: the learning-rate matrix P_k (None: the schedule's own, else scalar);
    ``data_term``: "moments" (quadratic energies: E_data[d_theta E] from the data's moments) or
    "samples"; ``batch_size``: minibatches of the data term (drawn with replacement by the replica's
    data generator); ``free_energy``: "auto", "exact", "ais", "ti" or "jarzynski";
    ``temperature_kelvin``: for the energies in joules only.
    """

    preconditioner: Any = None
    data_term: str = "moments"
    batch_size: int | None = None
    free_energy: str = "auto"
    temperature_kelvin: float = 300.0


@dataclass(frozen=True)
class Checkpointing:
    """``checkpoint``: a file written every ``checkpoint_every`` updates, after each replica and on a
    ``stop()`` request; ``resume`` continues bit-identically from it; ``on_start()`` runs once every
    input is validated, before the first update."""

    checkpoint: Any = None
    checkpoint_every: int = 0
    resume: bool = False
    stop: Callable[[], bool] | None = None
    on_start: Callable[[], None] | None = None


@dataclass(frozen=True)
class Output:
    """What is recorded: a history row every ``record_every`` updates (streamed to ``history_file``,
    a ``.npy``, if given), ``observers(update, theta, chains)`` after every update of replica 0, and a
    progress bar. ``keep_thetas``: keep theta after *every* update in memory and in checkpoints
    (``result.thetas``, ``result.protocol()``); None (default) keeps it while it is at most
    ``KEEP_THETAS_LIMIT`` floats ((n_updates + 1) x P), so a large network's run does not hold GBs."""

    record_every: int = 1
    history_file: Any = None
    keep_thetas: bool | None = None
    observers: Sequence[Callable] = ()
    progress: bool = False


#: keep_thetas=None keeps the per-update theta path up to this many floats (32 MB of float64)
KEEP_THETAS_LIMIT = 4_194_304

GROUPS = {"dynamics": Dynamics, "ensemble": Ensemble, "estimation": Estimation, "checkpointing": Checkpointing,
          "output": Output}
#: flat option name -> its group
OPTION_GROUP = {f.name: g for g, cls in GROUPS.items() for f in fields(cls)}


def group_options(groups: dict, flat: dict) -> dict:
    """{group name: dataclass} from the group objects given and the flat options (which override)."""
    unknown = sorted(set(flat) - set(OPTION_GROUP))
    if unknown:
        raise InputError(f"train() got unknown option(s) {', '.join(unknown)}; the options are "
                         + "; ".join(f"{g}: {', '.join(f.name for f in fields(c))}" for g, c in GROUPS.items()))
    out = {}
    for name, cls in GROUPS.items():
        given = groups.get(name)
        if given is None:
            given = cls()
        elif not isinstance(given, cls):
            raise InputError(f"{name} must be a mindiss.{cls.__name__}, got {type(given).__name__}")
        mine = {k: v for k, v in flat.items() if OPTION_GROUP[k] == name}
        out[name] = replace(given, **mine) if mine else given
    return out
