"""Run configuration: a TOML file with tables [energy], [data], [schedule], [dynamics], [output].

The schema is a set of pydantic v2 models: one model per table, the [energy], [data] and [schedule]
tables a union discriminated by ``kind`` (each kind has exactly its own keys), ``extra="forbid"``,
strict types and field constraints. Rules that join tables (a schedule that needs a harmonic
energy, the backend a network can use, ...) are checked once the tables are read, and so are the
limits of the machine (torch's 2^24 categories of the grid draws, the memory the run would need
against the memory available). Every problem is reported at once, each naming its key path (at
most ``MAX_PROBLEMS`` of them, then a count of the rest), before any work starts.

``resolve(raw) -> dict`` gives the resolved config as plain tables (every key of each table's kind,
defaults filled in, ``None`` for an optional key that is unset); ``build(cfg)`` turns it into the
keyword arguments of ``mindiss.train``; ``to_toml`` writes it with tomli-w, so that any string
(quotes, backslashes, newlines) reads back unchanged.
"""
from __future__ import annotations

import difflib
import math
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag, TypeAdapter, ValidationError

from .config_neural import GRID_N, build_neural, neural_fisher
from ..errors import InputError
from ..pairings import backend_problem

#: a config file larger than this is refused before it is read (a real config is a few kB)
MAX_CONFIG_BYTES = 1 << 20
#: problems listed in one report; the rest are counted
MAX_PROBLEMS = 20
#: largest seed: seed + 1 still fits torch.Generator.manual_seed
MAX_SEED = 2**63 - 2
#: the share of the available memory a run may plan on (the estimate is approximate; the rest is headroom)
MEMORY_FRACTION = 0.9
#: torch.multinomial draws from at most this many categories (the grid quadrature's equilibrium draws)
MAX_CATEGORIES = 2**24

SCHEDULE_KINDS = ("optimal", "continuous", "smoothed", "prepared", "constant", "linear", "cosine",
                  "exponential", "step", "natural_gradient", "friction")
ENERGY_KINDS = ("harmonic", "gaussian", "double_well", "quartic", "mlp", "rbm")
#: neural energies (neural.NeuralEnergy.mlp, rbm.GaussianBernoulliRBM): no closed-form moments
NEURAL_KINDS = ("mlp", "rbm")
#: mlp activations (neural.ACTIVATIONS)
ACTIVATIONS = ("silu", "tanh", "softplus", "gelu", "relu")
#: 2-D toy data sets (datasets.TOY) and the 8x8 digits (64-D, the training split)
TOY_DATA = ("moons", "rings", "8gaussians", "checkerboard", "pinwheel")
DATA_KINDS = ("gaussian", "file", "model") + TOY_DATA + ("digits",)
#: default theta_0 of the 1-D exponential families (E = theta . phi(x)) when energy.theta0 is not set
EXPFAMILY_THETA0 = {"double_well": [1.0, 0.0], "quartic": [1.0, 0.5]}
PRECONDITIONERS = ("none", "fisher-full", "fisher-diag", "fisher-lowrank", "fisher-exact", "friction-pilot",
                   "friction-exact", "adam")
#: the preconditioners a network can use (the others form P x P matrices or need closed forms)
NEURAL_PRECONDITIONERS = ("none", "fisher-diag", "fisher-lowrank", "adam")
BASELINES = ("constant", "linear", "cosine", "exponential", "step")
#: the rbm's largest hidden layer: 2^H states are summed for its exact ln Z only up to rbm.MAX_ENUMERATED_HIDDEN
MAX_RBM_HIDDEN = 10_000


# ----------------------------------------------------------------------------------------- the models

def _key(default: Any, doc: str, must: str | None = None, **constraints):
    """A config key: default, documentation (``--print-defaults``), and what it must be (the message)."""
    extra = {"must": must} if must else None
    if isinstance(default, list):
        value = list(default)
        return Field(default_factory=lambda: list(value), description=doc, json_schema_extra=extra, **constraints)
    return Field(default, description=doc, json_schema_extra=extra, **constraints)


def _listify(v):
    """A number where a list is expected means a list of one."""
    return v if isinstance(v, list) else [v]


def _tau(v):
    """schedule.tau: 'auto', 'online' or a positive number (a number is kept as its text)."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        v = repr(float(v))
    if isinstance(v, str) and v not in ("auto", "online"):
        try:
            x = float(v)
        except ValueError:
            raise ValueError("not a number") from None
        if not (x > 0 and math.isfinite(x)):
            raise ValueError("not a positive number")
    return v


def _device(v):
    """dynamics.device: a torch device that exists on this machine."""
    if v == "cpu":
        return v
    import torch

    try:
        dev = torch.device(v)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError("not a torch device") from None
    if dev.type == "cpu" or (dev.type == "cuda" and torch.cuda.is_available()
                             and (dev.index or 0) < torch.cuda.device_count()):
        return v
    raise ValueError("not available")


Num = Annotated[float, Field(allow_inf_nan=False)]
PosNum = Annotated[float, Field(allow_inf_nan=False, gt=0)]
Floats = Annotated[list[Num], BeforeValidator(_listify), Field(min_length=1)]
PosFloats = Annotated[list[PosNum], BeforeValidator(_listify), Field(min_length=1)]
Hidden = Annotated[list[Annotated[int, Field(gt=0, le=100_000)]], BeforeValidator(_listify), Field(min_length=1)]
Tau = Annotated[str, BeforeValidator(_tau)]
Device = Annotated[str, BeforeValidator(lambda v: _device(v) if isinstance(v, str) else v)]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
SEED_MUST = "must be a non-negative integer (at most 2^63 - 2)"


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def _dim():
    return _key(1, "dimension d of x (follows data.kind for the named data sets, and for mlp / rbm the data "
                "file's columns)", "must be an integer in [1, 10000]", ge=1, le=10_000)


class HarmonicEnergy(_Table):
    """E = |x - theta|^2 / 2s: the centre theta is learned."""
    kind: Literal["harmonic"] = _key("harmonic", "harmonic")
    dim: int = _dim()
    variance: PosNum = _key(1.0, "the fixed variance s", "must be a positive number")
    theta0: Floats = _key([0.0], "initial centre theta_0 (number or list of d numbers)",
                          "must be a finite number or a list of finite numbers")


class GaussianEnergy(_Table):
    """E = (x - a)^2 / 2s: centre and variance learned."""
    kind: Literal["gaussian"] = "gaussian"
    dim: int = _dim()
    mean0: Floats = _key([0.0], "initial centre", "must be a finite number or a list of finite numbers")
    variance0: PosFloats = _key([1.0], "initial variance", "must be positive numbers")


class _Family(_Table):
    dim: int = _key(1, "dimension d of x (the family is 1-D)",
                    "must be 1 (the exponential families are one-dimensional)", ge=1, le=1)


class DoubleWellEnergy(_Family):
    """E = a (x^2 - 1)^2 + b x, theta = (a, b); 1-D."""
    kind: Literal["double_well"] = "double_well"
    theta0: Floats = _key(EXPFAMILY_THETA0["double_well"], "the 2 parameters (a, b) at the start",
                          "needs 2 numbers (the parameters (a, b))", min_length=2, max_length=2)


class QuarticEnergy(_Family):
    """E = k2 x^2 / 2 + k4 x^4 / 4; 1-D."""
    kind: Literal["quartic"] = "quartic"
    theta0: Floats = _key(EXPFAMILY_THETA0["quartic"], "the 2 parameters (k2, k4) at the start",
                          "needs 2 numbers (the parameters (k2, k4))", min_length=2, max_length=2)


class _NeuralEnergy(_Table):
    dim: int = _dim()
    theta0: Optional[Floats] = _key(None, "all the network's parameters at the start (default: the "
                                    "initialiser's, seeded by energy.init_seed)",
                                    "must be a list of finite numbers")
    init_seed: Seed = _key(0, "seed of the initial weights", SEED_MUST)


class MlpEnergy(_NeuralEnergy):
    """E = MLP(x) + k |x|^2 / 2, theta = the network's weights."""
    kind: Literal["mlp"] = "mlp"
    hidden: Hidden = _key([64, 64], "widths of the hidden layers", "must be positive integers (at most 100000)")
    activation: Literal[ACTIVATIONS] = _key("silu", "activation")
    confinement: PosNum = _key(0.1, "k of the quadratic wall k |x|^2 / 2 that makes Z finite",
                               "must be a positive number")


class RbmEnergy(_NeuralEnergy):
    """Gaussian-Bernoulli RBM, hidden units summed out."""
    kind: Literal["rbm"] = "rbm"
    hidden: Hidden = _key([16], "the number of hidden units (exact ln Z and equilibrium draws up to 20)",
                          f"must be one positive integer (the rbm's hidden units, at most {MAX_RBM_HIDDEN})",
                          max_length=1)
    sigma: PosNum = _key(1.0, "the fixed visible standard deviation", "must be a positive number")
    weight_std: PosNum = _key(0.01, "standard deviation of the initial weights W (visible biases start at the "
                              "data mean, hidden biases at 0)", "must be a positive number")


_TERM = ("data term of g_hat: exact moments, or samples drawn once")


class GaussianData(_Table):
    """exact moments of a Gaussian"""
    kind: Literal["gaussian"] = "gaussian"
    mean: Floats = _key([5.0], "data mean xbar", "must be a finite number or a list of finite numbers")
    variance: PosFloats = _key([1.0], "data variance", "must be positive numbers")
    term: Literal["moments", "samples"] = _key("moments", _TERM)


class FileData(_Table):
    """.npy / .csv samples"""
    kind: Literal["file"] = "file"
    path: str = _key(..., "path of the samples", "must name a .npy or .csv file", min_length=1)
    term: Literal["moments", "samples"] = _key("moments", _TERM)


class ModelData(_Table):
    """exact draws of the energy's own family at data.theta (1-D families)"""
    kind: Literal["model"] = "model"
    theta: Floats = _key([1.5, 0.5], "the parameters that generate the data",
                         "needs 2 numbers (the family's parameters)", min_length=2, max_length=2)
    n_samples: int = _key(20_000, "number of samples drawn (seeded by dynamics.seed)",
                          "must be a positive integer (at most 1e8)", gt=0, le=100_000_000)
    term: Literal["moments", "samples"] = _key("moments", _TERM)


class ToyData(_Table):
    """a 2-D toy set (datasets.toy)"""
    kind: Literal[TOY_DATA] = "moons"
    n: int = _key(2000, "number of samples", "must be a positive integer (at most 1e8)", gt=0, le=100_000_000)
    seed: Seed = _key(0, "seed of the draws", SEED_MUST)
    term: Literal["moments", "samples"] = _key("moments", _TERM)


class DigitsData(_Table):
    """the standardised 8x8 digits' training split, 64-D (datasets.digits)"""
    kind: Literal["digits"] = "digits"
    seed: Seed = _key(0, "seed of the dequantisation and split", SEED_MUST)
    term: Literal["moments", "samples"] = _key("moments", _TERM)


_SCALE_DOC = ("learning rate per unit time at t = 0 (baselines); with mlp / rbm, natural_gradient and friction: "
              "the factor on alpha(t) (1 = the design; networks want ~0.01-0.1)")
_TAU_DOC = ("relaxation time: auto (exact where known, else a pilot run), online (re-estimated every "
            "tau_refresh updates) or a number")
_TAU_MUST = "must be 'auto', 'online' or a positive number"


class OptimalSchedule(_Table):
    """the harmonic trap's optimum (exact impulses), its continuous limit, or with prepared chains"""
    kind: Literal["optimal", "continuous", "prepared"] = "optimal"


class SmoothedSchedule(_Table):
    """the continuous optimum with smoothed impulses"""
    kind: Literal["smoothed"] = "smoothed"
    smoothing: PosNum = _key(0.1, "width of the smoothed impulses", "must be a positive number")


class BaselineSchedule(_Table):
    """a baseline learning-rate schedule"""
    kind: Literal["constant", "linear", "cosine"] = "constant"
    scale: PosNum = _key(1.0, _SCALE_DOC, "must be a positive number")
    final_error: Optional[float] = _key(None, "tune scale so |theta_T - xbar| / |theta_0 - xbar| equals this "
                                        "(harmonic)", "must be a number in (0, 1)", gt=0, lt=1)
    preconditioner: Literal[PRECONDITIONERS] = _key("none", "learning-rate matrix applied to g_hat")


class ExponentialSchedule(BaselineSchedule):
    kind: Literal["exponential"] = "exponential"
    decay: PosNum = _key(3.0, "decay over the run", "must be a positive number")


class StepSchedule(BaselineSchedule):
    kind: Literal["step"] = "step"
    n_drops: int = _key(2, "number of drops", "must be a positive integer (at most 1000)", gt=0, le=1000)
    factor: PosNum = _key(0.3, "factor per drop", "must be a positive number")


class NaturalGradientSchedule(_Table):
    """alpha(t) times the inverse Fisher"""
    kind: Literal["natural_gradient"] = "natural_gradient"
    scale: PosNum = _key(1.0, _SCALE_DOC, "must be a positive number")
    fisher: Optional[Literal["full", "diag", "lowrank", "exact"]] = _key(
        None, "Fisher estimate from the chains (default full; mlp / rbm: diag, the default there, or lowrank)")
    tau: Tau = _key("auto", _TAU_DOC, _TAU_MUST)
    tau_refresh: int = _key(50, "with tau = online: updates between estimates", "must be a positive integer",
                            gt=0)


class FrictionSchedule(_Table):
    """alpha(t) times the inverse friction"""
    kind: Literal["friction"] = "friction"
    scale: PosNum = _key(1.0, _SCALE_DOC, "must be a positive number")
    tau: Tau = _key("auto", _TAU_DOC, _TAU_MUST)


class Dynamics(_Table):
    mobility: PosNum = _key(1.0, "chain mobility mu", "must be a positive number")
    duration: PosNum = _key(1.0, "training duration T", "must be a positive number")
    n_steps: int = _key(1000, "interior updates n (n + 2 updates with the impulses)", "must be an integer in [1, 1e8]",
                        ge=1, le=100_000_000)
    sampler: Optional[Literal["exact", "euler", "mala"]] = _key(None, "chain move (default exact; mlp / rbm on "
                                                                "particles: mala)")
    backend: Literal["particles", "moments", "fokker_planck"] = _key(
        "particles", "simulated chains, the exact N -> infinity moments (quadratic energies) or the exact 1-D "
        "Fokker-Planck density")
    n_chains: int = _key(100_000, "chains per replica", "must be an integer in [1, 1e8]", ge=1, le=100_000_000)
    n_replicas: int = _key(4, "independent replicas (errors); moments uses 1", "must be an integer in [1, 10000]",
                           ge=1, le=10_000)
    seed: Seed = _key(0, "seed of every generator", SEED_MUST)
    device: Device = _key("cpu", "torch device (cpu, cuda, cuda:1, ...)", "must be an available torch device")
    dtype: Literal["float32", "float64"] = _key("float32", "chain dtype (theta and ledger are float64)")
    batch_size: Optional[int] = _key(None, "data rows in the data term of each update (a fresh minibatch every "
                                     "update; non-quadratic energies; default: all the data)",
                                     "must be a positive integer (at most 1e8)", gt=0, le=100_000_000)


class Output(_Table):
    temperature_kelvin: PosNum = _key(300.0, "temperature for energy_joules", "must be a positive number")
    free_energy: Literal["auto", "exact", "ais", "ti", "jarzynski"] = _key(
        "auto", "Delta F: exact where known, else the estimator (auto = exact or ais)")
    record_every: int = _key(1, "history row every this many updates", "must be a positive integer", gt=0)
    checkpoint_every: int = _key(100, "with --out: checkpoint every this many updates (0: only at replica ends "
                                 "and on SIGINT/SIGTERM)", "must be a non-negative integer", ge=0)
    grid_box: Optional[Floats] = _key(None, "mlp / rbm in 1-D or 2-D: the box of the grid quadrature that gives "
                                      "ln Z (the true loss and Delta F at every record), [lo, hi] for every axis "
                                      "or [lo1, hi1, lo2, hi2] (default: the data range padded 1.5x joined with "
                                      "the initial model's extent, grown until its edge holds < 1e-6 of p_theta0)",
                                      "must be [lo, hi] or [lo1, hi1, lo2, hi2] with lo < hi")
    grid_n: Optional[int] = _key(None, f"mlp / rbm in 1-D or 2-D: grid points per axis (odd; default {GRID_N}; "
                                 "halved spacing where the quadrature's error estimate exceeds 1e-4; a 2-D grid "
                                 "has at most 4095 per axis: torch draws from at most 2^24 points)",
                                 "must be an odd integer in [5, 2^24)", ge=5, lt=MAX_CATEGORIES)


def _union(default: str, tags: dict[str, type]):
    """A union of table models discriminated by ``kind`` (``default`` when kind is absent)."""
    def tag(v):
        kind = v.get("kind", default) if isinstance(v, dict) else getattr(v, "kind", None)
        return kind if isinstance(kind, str) and kind in tags else None
    members = tuple(Annotated[m, Tag(k)] for k, m in tags.items())
    return Annotated[Union[members], Discriminator(tag)]


ENERGY_MODELS = {"harmonic": HarmonicEnergy, "gaussian": GaussianEnergy, "double_well": DoubleWellEnergy,
                 "quartic": QuarticEnergy, "mlp": MlpEnergy, "rbm": RbmEnergy}
DATA_MODELS = {"gaussian": GaussianData, "file": FileData, "model": ModelData,
               **{k: ToyData for k in TOY_DATA}, "digits": DigitsData}
SCHEDULE_MODELS = {"optimal": OptimalSchedule, "continuous": OptimalSchedule, "prepared": OptimalSchedule,
                   "smoothed": SmoothedSchedule, "constant": BaselineSchedule, "linear": BaselineSchedule,
                   "cosine": BaselineSchedule, "exponential": ExponentialSchedule, "step": StepSchedule,
                   "natural_gradient": NaturalGradientSchedule, "friction": FrictionSchedule}
#: table -> {kind: model} (one entry, kind None, for a table without kinds)
MODELS: dict[str, dict] = {"energy": ENERGY_MODELS, "data": DATA_MODELS, "schedule": SCHEDULE_MODELS,
                           "dynamics": {None: Dynamics}, "output": {None: Output}}
DEFAULT_KIND = {"energy": "harmonic", "data": "gaussian", "schedule": "optimal"}
_ADAPTERS = {t: TypeAdapter(_union(DEFAULT_KIND[t], m) if t in DEFAULT_KIND else m[None]) for t, m in MODELS.items()}


def _kinds_of(table: str, name: str) -> list:
    """The kinds of ``table`` that have the key ``name``."""
    return [k for k, m in MODELS[table].items() if name in m.model_fields]


def _doc(table: str, name: str) -> str:
    for m in MODELS[table].values():
        if name in m.model_fields:
            return m.model_fields[name].description or ""
    return ""


#: every key of every table (any kind) -> its documentation
SCHEMA: dict[str, dict[str, str]] = {t: {n: _doc(t, n) for m in ms.values() for n in m.model_fields}
                                     for t, ms in MODELS.items()}


# ----------------------------------------------------------------------------------------- problems

class _Problems:
    """Problems of a config: (keys involved, message thunk), formatted only for the first MAX_PROBLEMS."""

    def __init__(self):
        self.items: list = []       # the first MAX_PROBLEMS: (keys, message or a thunk making it)
        self.count = 0
        self.bad: set = set()       # keys whose value was refused (cross-table rules on them are skipped)

    def add(self, keys, message):
        self.count += 1
        if len(self.items) < MAX_PROBLEMS:
            self.items.append((tuple(keys), message))

    def cross(self, keys, message: str):
        if not self.bad.intersection(keys):
            self.add(keys, message)

    def raise_if_any(self):
        if not self.count:
            return
        shown = [m() if callable(m) else m for _, m in self.items]
        more = self.count - len(shown)
        tail = [f"... and {more} more problem{'s' if more > 1 else ''} (the first {MAX_PROBLEMS} are listed)"] \
            if more > 0 else []
        raise InputError("invalid config:\n  - " + "\n  - ".join(shown + tail))


def _short(v, limit: int = 60) -> str:
    """repr(v), cut to ``limit`` characters (a hostile value must not flood the report)."""
    try:
        text = repr(v)
    except RecursionError:
        text = "<too deeply nested>"
    return text if len(text) <= limit else text[:limit - 4] + " ..."


def _must(model, name: str, err: dict) -> str:
    """What key ``name`` of ``model`` must be, in words."""
    info = model.model_fields.get(name) if model is not None else None
    extra = (info.json_schema_extra or {}) if info is not None else {}
    if "must" in extra:
        return extra["must"]
    kind, ctx = err["type"], err.get("ctx", {})
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected', '').replace(chr(39), '')}"
    return {"string_type": "must be a string", "int_type": "must be an integer", "float_type": "must be a finite number",
            "finite_number": "must be a finite number"}.get(kind, err["msg"][0].lower() + err["msg"][1:])


def _table_problems(table: str, entries: dict, exc: ValidationError, problems: _Problems) -> set:
    """Add the problems of one table's validation errors; returns the top-level keys refused."""
    union = table in DEFAULT_KIND
    kind = entries.get("kind", DEFAULT_KIND[table]) if union else None
    model = MODELS[table].get(kind if union else None) if isinstance(kind, (str, type(None))) else None
    refused = set()
    for err in exc.errors(include_url=False):
        loc = err["loc"][1:] if union and err["type"] not in ("union_tag_invalid", "union_tag_not_found") \
            else err["loc"]
        if err["type"] in ("union_tag_invalid", "union_tag_not_found") or (union and model is None):
            refused.add("kind")
            problems.add([f"{table}.kind"], lambda kind=kind: f"{table}.kind must be one of "
                         f"{', '.join(MODELS[table])}, got {_short(kind)}")
            continue
        name = str(loc[0]) if loc else "?"
        refused.add(name)
        path = f"{table}.{name}"
        if err["type"] == "extra_forbidden":
            problems.add([path], lambda name=name, path=path: _unknown(table, name, path, kind))
        elif err["type"] == "missing":
            problems.add([path], lambda name=name, path=path, err=err:
                         f"{path} is required when {table}.kind = '{kind}': it {_must(model, name, err)}")
        else:
            value = entries.get(name)
            problems.add([path], lambda name=name, path=path, err=err, value=value:
                         f"{path} {_must(model, name, err)}, got {_short(value)}")
    return refused


def _path(table: str, key: str) -> str:
    """table.key, the key quoted as TOML quotes it where it is not a bare key (and cut if long)."""
    import json

    bare = re.fullmatch(r"[A-Za-z0-9_-]{1,40}", key)
    return f"{table}.{key}" if bare else f"{table}.{json.dumps(key[:40])}"


def _unknown(table: str, name: str, path: str, kind) -> str:
    """The message of a key that the table's kind does not have: another kind's key, or unknown."""
    other = _kinds_of(table, name) if table in DEFAULT_KIND else []
    if other:
        own = [n for n in MODELS[table][kind].model_fields]
        return (f"{path} applies to {table}.kind = {' or '.join(repr(k) for k in other)}, not '{kind}' "
                f"(its keys: {', '.join(own)})")
    allowed = list(MODELS[table][kind].model_fields) if kind in MODELS[table] else list(SCHEMA[table])
    near = difflib.get_close_matches(name, allowed, n=1)
    return f"unknown key {path}" + (f" (did you mean {table}.{near[0]}?)" if near else "") + \
        f" (allowed: {', '.join(allowed)})"


def _validate_table(table: str, entries: dict, problems: _Problems) -> tuple[dict, set]:
    """(the table's values, the keys given) validated by its model; refused keys are reported and left
    at their defaults, so the rules across tables still see a complete table."""
    adapter = _ADAPTERS[table]
    unknown = [k for k in entries if k not in SCHEMA[table]]      # no kind has them: refused without pydantic
    if unknown:
        kind = entries.get("kind", DEFAULT_KIND.get(table))
        kind = kind if isinstance(kind, str) and kind in MODELS[table] else None
        for k in unknown:
            problems.add([f"{table}.{k}"], lambda k=k, kind=kind: _unknown(table, str(k), _path(table, k), kind))
        entries = {k: v for k, v in entries.items() if k in SCHEMA[table]}
    try:
        model = adapter.validate_python(entries)
        return model.model_dump(), set(model.model_fields_set)
    except ValidationError as exc:
        refused = _table_problems(table, entries, exc, problems)
    problems.bad.update(f"{table}.{k}" for k in refused)
    kept = {k: v for k, v in entries.items() if k not in refused}
    if "kind" in refused:                 # an unknown kind: its other keys cannot be judged
        problems.bad.update(f"{table}.{k}" for k in entries)
        kept = {}
    try:
        model = adapter.validate_python(kept)
    except ValidationError:               # a required key was refused: the default kind's defaults
        kept = {}
        model = adapter.validate_python({})
    return model.model_dump(), set(kept)


# ----------------------------------------------------------------------------------------- resolve

def dyn_backend(cfg: dict) -> str:
    return cfg["dynamics"]["backend"]


def resolve(raw: dict, *, available_memory: int | None = None) -> dict:
    """Defaults filled in and every key validated; raises InputError listing all problems (each naming its key).

    ``available_memory`` (bytes): what the run may use; default: psutil's available memory (and the
    CUDA device's free memory for a cuda device)."""
    if not isinstance(raw, dict):
        raise InputError("config must be a table of tables")
    problems = _Problems()
    for table in raw:
        if table not in MODELS:
            problems.add([f"[{table}]"], lambda table=table: _unknown_table(table))
    out, given = {}, {}
    for table in MODELS:
        entries = raw.get(table, {})
        if not isinstance(entries, dict):
            problems.add([f"[{table}]"], f"[{table}] must be a table, got {_short(entries)}")
            problems.bad.add(f"{table}.kind")
            entries = {}
        out[table], given[table] = _validate_table(table, entries, problems)
    _cross_rules(out, given, problems)
    if not problems.count:
        _machine_limits(out, problems, available_memory)
    problems.raise_if_any()
    return out


def _unknown_table(table) -> str:
    near = difflib.get_close_matches(str(table), list(MODELS), n=1)
    name = table if re.fullmatch(r"[A-Za-z0-9_-]{1,40}", table) else __import__("json").dumps(table[:40])
    return (f"unknown table [{name}]" + (f" (did you mean [{near[0]}]?)" if near else "")
            + f" (allowed: {', '.join(MODELS)})")


def _kinds(kinds) -> str:
    return " or ".join(f"'{k}'" for k in kinds)


def _cross_rules(out: dict, given: dict, problems: _Problems) -> None:
    """Rules that join tables, and the defaults that depend on another table (filled in ``out``)."""
    e, d, s, dyn, o = (out[t] for t in ("energy", "data", "schedule", "dynamics", "output"))
    kind, neural = e["kind"], e["kind"] in NEURAL_KINDS
    family = kind in EXPFAMILY_THETA0
    cross = problems.cross
    if s["kind"] in ("optimal", "continuous", "smoothed", "prepared") and kind != "harmonic":
        cross(["schedule.kind", "energy.kind"], f"schedule.kind = '{s['kind']}' needs energy.kind = 'harmonic'")
    if s["kind"] == "prepared" and d["kind"] != "gaussian":
        cross(["schedule.kind", "data.kind"],
              "schedule.kind = 'prepared' needs data.kind = 'gaussian' (the preparation needs the target)")
    if s.get("final_error") is not None and kind != "harmonic":
        cross(["schedule.final_error", "energy.kind"], "schedule.final_error needs energy.kind = 'harmonic'")
    if d["kind"] == "model" and not family:
        cross(["data.kind", "energy.kind"], "data.kind = 'model' needs a 1-D family energy (double_well or quartic)")
    if s.get("preconditioner") == "friction-exact" and (family or neural) and dyn["backend"] != "fokker_planck":
        cross(["schedule.preconditioner", "energy.kind", "dynamics.backend"],
              f"schedule.preconditioner = 'friction-exact' with energy.kind = '{kind}' needs dynamics.backend = "
              "'fokker_planck' (the exact friction tensor of a non-quadratic energy comes from the grid generator); "
              "use 'friction-pilot' on particles")
    problem = backend_problem(dyn["backend"], quadratic=not (family or neural), dim=e.get("dim") or 1,
                              energy_name=f"'{kind}'")   # the library's one statement of the backend rules
    if problem and dyn["backend"] == "moments":
        cross(["dynamics.backend", "energy.kind"], problem.replace("backend 'moments'", "dynamics.backend = 'moments'"))
    for table, name in (("energy", "theta0"), ("energy", "mean0"), ("energy", "variance0"), ("data", "mean"),
                        ("data", "variance")):
        v = out[table].get(name)
        if name == "theta0" and (family or neural):
            continue
        if isinstance(v, list) and len(v) not in (1, e["dim"]):
            cross([f"{table}.{name}", "energy.dim"], f"{table}.{name} has {len(v)} entries but energy.dim = {e['dim']}")
    # the neural energies: cross-table defaults and what they can run
    if "sampler" not in given["dynamics"]:
        dyn["sampler"] = "mala" if neural and dyn["backend"] != "fokker_planck" else "exact"
    if s["kind"] == "natural_gradient" and "fisher" not in given["schedule"]:
        s["fisher"] = "diag" if neural else "full"
    if neural:
        if dyn["sampler"] == "exact" and dyn["backend"] != "fokker_planck":
            cross(["dynamics.sampler", "energy.kind"],
                  f"dynamics.sampler = 'exact' needs a quadratic energy (or backend 'fokker_planck'); energy.kind "
                  f"= '{kind}' needs 'mala' or 'euler'")
        if s["kind"] == "natural_gradient" and s["fisher"] not in ("diag", "lowrank"):
            cross(["schedule.fisher", "energy.kind"],
                  f"schedule.fisher = '{s['fisher']}' with energy.kind = '{kind}': use 'diag' or 'lowrank' (a full "
                  "Fisher is a P x P matrix of the network's P parameters, and there is no closed form)")
        if s["kind"] == "friction" and dyn["backend"] != "particles":
            cross(["schedule.kind", "dynamics.backend", "energy.kind"],
                  f"schedule.kind = 'friction' with energy.kind = '{kind}' needs dynamics.backend = 'particles' "
                  "(its relaxation times come from per-chain gradients)")
        if s["kind"] in ("natural_gradient", "friction") and s["tau"] == "online":
            cross(["schedule.tau", "energy.kind"],
                  f"schedule.tau = 'online' with energy.kind = '{kind}': use 'auto' (a diagonal pilot run on a "
                  "clone of the initial chains) or a number")
        if s.get("preconditioner", "none") not in NEURAL_PRECONDITIONERS:
            cross(["schedule.preconditioner", "energy.kind"],
                  f"schedule.preconditioner = '{s['preconditioner']}' with energy.kind = '{kind}': use "
                  f"{', '.join(NEURAL_PRECONDITIONERS)} (the others form P x P matrices or need closed forms)")
        if kind == "rbm" and e["hidden"][0] > MAX_RBM_HIDDEN:
            cross(["energy.hidden"], f"energy.hidden of an 'rbm' must be at most {MAX_RBM_HIDDEN}, got {e['hidden'][0]}")
    for name in ("grid_box", "grid_n"):
        if name in given["output"] and not neural:
            cross([f"output.{name}", "energy.kind"],
                  f"output.{name} applies to energy.kind = {_kinds(NEURAL_KINDS)}, not '{kind}'")
    box = o["grid_box"]
    if box is not None and not (len(box) in (2, 4) and all(box[i] < box[i + 1] for i in range(0, len(box), 2))):
        cross(["output.grid_box"], f"output.grid_box must be [lo, hi] or [lo1, hi1, lo2, hi2] with lo < hi, got "
              f"{_short(box)}")
    if o["grid_n"] is not None and o["grid_n"] % 2 == 0:
        cross(["output.grid_n"], f"output.grid_n must be odd (the coarse rule uses every other point), got {o['grid_n']}")
    if dyn["batch_size"] is not None and kind in ("harmonic", "gaussian"):
        cross(["dynamics.batch_size", "energy.kind"],
              f"dynamics.batch_size needs a non-quadratic energy (double_well, quartic, mlp, rbm): the data term "
              f"of '{kind}' is the exact data moments, with nothing to batch")
    if d["kind"] in TOY_DATA + ("digits",):
        ddim = 64 if d["kind"] == "digits" else 2
        if "dim" in given["energy"] and e["dim"] != ddim:
            cross(["energy.dim", "data.kind"], f"energy.dim = {e['dim']} but data.kind = '{d['kind']}' is "
                  f"{ddim}-dimensional (leave energy.dim out: it follows the data)")
        e["dim"] = ddim
    elif neural and d["kind"] == "file" and "dim" not in given["energy"]:
        e["dim"] = None          # follows the file's columns (build)
    if dyn["backend"] == "fokker_planck" and e["dim"] != 1:
        cross(["dynamics.backend", "energy.dim", "data.kind"], "dynamics.backend = 'fokker_planck' needs energy.dim = 1")
    if neural and e["dim"] == 2 and o["grid_n"] is not None and o["grid_n"] ** 2 > MAX_CATEGORIES:
        cross(["output.grid_n"], f"output.grid_n = {o['grid_n']}: a 2-D grid of {o['grid_n']}^2 = {o['grid_n'] ** 2} "
              f"points exceeds torch's limit of 2^24 = {MAX_CATEGORIES} categories for the equilibrium draws; "
              f"use at most {max_grid_n(2)}")


def max_grid_n(dim: int) -> int:
    """The largest odd n with n^dim <= 2^24 (torch.multinomial's categories: the grid's equilibrium draws)."""
    n = int(round(MAX_CATEGORIES ** (1.0 / dim)))
    while n ** dim > MAX_CATEGORIES:
        n -= 1
    return n if n % 2 == 1 else n - 1


# ----------------------------------------------------------------------------------------- memory

def n_params(e: dict, dim: int) -> int:
    """P, the number of parameters of the resolved [energy] table at dimension ``dim``."""
    if e["kind"] == "mlp":
        widths = [dim, *e["hidden"], 1]
        return sum((a + 1) * b for a, b in zip(widths, widths[1:]))
    if e["kind"] == "rbm":
        return dim * e["hidden"][0] + dim + e["hidden"][0]
    return {"harmonic": dim, "gaussian": 2 * dim}.get(e["kind"], 2)


def memory_estimate(cfg: dict) -> dict[str, tuple[int, str]]:
    """Bytes a run of the resolved config holds at its peak, by part: {part: (bytes, key that sets it)}.

    chains: N (64 + 12 d b) bytes (state, gradient, noise, proposal in the chain dtype's b bytes; float64
    work and heat), plus 16 b per hidden unit per chain for a network's activations and their
    gradients (calibrated on ``mindiss bench``: 8.9 kB per chain measured for the 2-64-64-1 MLP,
    8.3 kB estimated), plus N P b for per-chain scores where a Fisher / friction matrix is estimated;
    minibatch: batch_size rows (indices, float64 rows, their network activations); history: replica 0's rows (n / record_every + 2) x (P + d + 11) float64 and its theta path
    (n + 3) x P float64; data: the samples drawn (float64, twice); grid: the 2-D / 1-D quadrature at
    its finest spacing ((2 grid_n - 1)^d points, (d + 6) float64 each)."""
    e, d, s, dyn, o = (cfg[t] for t in ("energy", "data", "schedule", "dynamics", "output"))
    dim = e["dim"] or 1
    b = 4 if dyn["dtype"] == "float32" else 8
    p = n_params(e, dim)
    hidden = sum(e["hidden"]) if e["kind"] in NEURAL_KINDS else 0
    parts = {}
    if dyn["backend"] == "particles":
        scores = s["kind"] in ("natural_gradient", "friction") or s.get("preconditioner", "none").startswith(
            ("fisher", "friction"))
        per_chain = 64 + 12 * dim * b + 16 * b * hidden + (p * b if scores else 0)
        parts["chains"] = (dyn["n_chains"] * per_chain, "energy.hidden" if per_chain > 100_000 else "dynamics.n_chains")
    n_updates = dyn["n_steps"] + 2
    rows = n_updates // o["record_every"] + 2
    parts["history"] = (8 * (rows * (p + dim + 11) + (n_updates + 1) * (p + 6)),
                        "energy.hidden" if hidden and p > rows else "dynamics.n_steps")
    parts["parameters"] = (8 * 8 * p, "energy.hidden" if hidden else "energy.dim")
    n_data = {"model": d.get("n_samples"), "digits": 1_500}.get(d["kind"], d.get("n") or 0)
    parts["data"] = (16 * dim * (n_data or 0), "data.n_samples" if d["kind"] == "model" else "data.n")
    if dyn["batch_size"]:
        parts["minibatch"] = (dyn["batch_size"] * (3 * 8 * dim + 8 + 16 * b * hidden), "dynamics.batch_size")
    if e["kind"] in NEURAL_KINDS and (e["dim"] or 1) <= 2:
        n_fine = 2 * (o["grid_n"] or GRID_N) - 1
        parts["grid"] = (n_fine ** dim * 8 * (dim + 6) + (1 << 16) * max(hidden, 1) * 8 * 4, "output.grid_n")
    return parts


def _available_memory(device: str) -> tuple[int, int | None]:
    """(host bytes available, device bytes free or None for the cpu)."""
    import psutil

    host = int(psutil.virtual_memory().available)
    if device == "cpu" or device.startswith("cpu"):
        return host, None
    import torch

    return host, int(torch.cuda.mem_get_info(torch.device(device))[0])


def _gb(n: float) -> str:
    return f"{n / 1e9:.3g} GB" if n >= 1e8 else f"{n / 1e6:.3g} MB"


def _machine_limits(cfg: dict, problems: _Problems, available_memory: int | None) -> None:
    """Refuse a run whose ``memory_estimate`` exceeds MEMORY_FRACTION of the available memory, naming the
    key of its largest part, the estimate and what is available."""
    parts = memory_estimate(cfg)
    device = cfg["dynamics"]["device"]
    if available_memory is not None:
        pools = {"memory": (available_memory, list(parts))}
    else:
        host, dev = _available_memory(device)
        on_device = [k for k in ("chains", "grid") if k in parts] if dev is not None else []
        pools = {"memory": (host, [k for k in parts if k not in on_device])}
        if dev is not None:
            pools[f"{device} memory"] = (dev, on_device)
    for pool, (avail, names) in pools.items():
        need = sum(parts[k][0] for k in names)
        if need > MEMORY_FRACTION * avail:
            big = max(names, key=lambda k: parts[k][0])
            key = parts[big][1]
            detail = ", ".join(f"{k} {_gb(parts[k][0])}" for k in names if parts[k][0] >= 1e6)
            problems.add([key], f"{key}: this run would need about {_gb(need)} of {pool} ({detail}) but "
                         f"{_gb(avail)} is available (a run may plan on {MEMORY_FRACTION:.0%} of it); lower {key}" + (
                             " or raise output.record_every" if key == "dynamics.n_steps" else ""))


# ----------------------------------------------------------------------------------------- files

def parse_override(text: str) -> tuple[str, str, Any]:
    """'table.key=value' -> (table, key, value); value read as a TOML value, else as a bare string."""
    if "=" not in text:
        raise InputError(f"--set {_short(text)}: expected TABLE.KEY=VALUE")
    path, value = text.split("=", 1)
    path = path.strip()
    if path.count(".") != 1 or not all(path.split(".")):
        raise InputError(f"--set {_short(text)}: the key must be TABLE.KEY (e.g. dynamics.seed), got {_short(path)}")
    table, key = path.split(".")
    if "\n" in value or "\r" in value or not value.strip():
        raise InputError(f"--set {path}: {_short(value)} is not a one-line TOML value")
    try:
        parsed = tomllib.loads(f"v = {value.strip()}")["v"]
    except (tomllib.TOMLDecodeError, RecursionError):
        parsed = value.strip()      # a bare word: the string itself (e.g. schedule.kind=cosine)
    return table, key, parsed


def apply_overrides(raw: dict, overrides) -> dict:
    """``raw`` with each 'table.key=value' of ``overrides`` set (validated later, with the rest)."""
    raw = {t: dict(v) if isinstance(v, dict) else v for t, v in raw.items()}
    for text in overrides or ():
        table, key, value = parse_override(text)
        entries = raw.setdefault(table, {})
        if not isinstance(entries, dict):
            raise InputError(f"--set {table}.{key}: [{table}] in the config file is not a table")
        entries[key] = value
    return raw


def read_raw(path) -> dict:
    """The TOML tables of a config file, refused with a message naming the file when they cannot be read."""
    p = Path(path)
    name = repr(str(p))
    try:
        if not p.exists():
            raise InputError(f"config file {name} does not exist")
        if not p.is_file():
            raise InputError(f"config file {name} is not a regular file")
        size = p.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise InputError(f"config file {name} is {size} bytes; a config is at most {MAX_CONFIG_BYTES} bytes "
                             "(1 MiB)")
        with p.open("rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise InputError(f"config file {name} cannot be read: {exc.strerror or exc}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise InputError(f"config file {name} is larger than {MAX_CONFIG_BYTES} bytes (1 MiB)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"config file {name} is not UTF-8 text (byte {exc.start}: {data[exc.start:exc.start + 1]!r})") \
            from None
    return loads_raw(text, name)


def loads_raw(text: str, name: str = "<text>") -> dict:
    """tomllib.loads with its failures as InputError (bad TOML, nesting too deep)."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"config file {name} is not valid TOML: {exc}") from None
    except RecursionError:
        raise InputError(f"config file {name} is nested too deeply to read") from None


def load(path, overrides=None) -> dict:
    """Read and validate a TOML config file (with ``overrides``: 'table.key=value' strings applied first)."""
    return resolve(apply_overrides(read_raw(path), overrides))


def defaults() -> dict:
    return resolve({})


def _choices(annotation) -> tuple:
    """The values of a Literal annotation (also inside Optional), else ()."""
    if get_origin(annotation) is Literal:
        return get_args(annotation)
    return next((c for c in map(_choices, get_args(annotation)) if c), ())


def _dumps_value(name: str, v) -> str:
    """``name = value`` on one line, every scalar written by tomli-w (arrays joined inline)."""
    import tomli_w

    def one(a) -> str:
        return tomli_w.dumps({"v": a}).strip()[4:]

    return f"{name} = " + ("[" + ", ".join(map(one, v)) + "]" if isinstance(v, list) else one(v))


def to_toml(cfg: dict, comments: bool = False) -> str:
    """A resolved config as TOML text written by tomli-w (with comments: each key's documentation, the
    kinds a table may take and the keys of the other kinds)."""
    import tomli_w

    if not comments:
        return tomli_w.dumps({t: {k: v for k, v in tbl.items() if v is not None} for t, tbl in cfg.items()})
    lines = []
    for table, tbl in cfg.items():
        lines.append(f"[{table}]")
        models = MODELS[table]
        model = models.get(tbl.get("kind")) if table in DEFAULT_KIND else models[None]
        for name, v in tbl.items():
            info = model.model_fields[name]
            doc = info.description or ""
            if name == "kind":
                doc = "one of " + " | ".join(models) + "; " + "; ".join(
                    f"{k}: {(m.__doc__ or '').strip()}" for k, m in models.items() if m.__doc__ and k == tbl["kind"])
            elif _choices(info.annotation):
                doc += f" ({' | '.join(_choices(info.annotation))})"
            if v is None:
                lines.append(f"# {name} = ...  # {doc} (unset)")
            else:
                lines.append(f"{_dumps_value(name, v)}  # {doc}")
        if table in DEFAULT_KIND:
            others = [n for n in SCHEMA[table] if n not in tbl]
            for n in others:
                lines.append(f"# {n}: for {table}.kind = {' | '.join(_kinds_of(table, n))}: {SCHEMA[table][n]}")
        lines.append("")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------- build

def _load_data(d: dict, dim, energy, seed: int):
    """The data of a resolved [data] table: a distribution or samples (float64, (n, d))."""
    from .. import data as _data
    from ..data import toy as datasets
    import torch

    if d["kind"] == "gaussian":
        return _data.Gaussian(d["mean"], d["variance"], dim=dim)
    if d["kind"] == "model":
        gen = torch.Generator().manual_seed(seed + 1)
        return energy.sample_equilibrium(torch.tensor(d["theta"], dtype=torch.float64), d["n_samples"], gen=gen,
                                         dtype=torch.float64)
    if d["kind"] == "digits":
        return datasets.digits(gen=d["seed"]).train
    if d["kind"] in TOY_DATA:
        return datasets.toy(d["kind"], d["n"], gen=d["seed"])
    return _data.load(d["path"])


def build(cfg: dict) -> dict:
    """Objects for ``train`` from a resolved config: keyword arguments of ``mindiss.train``, and
    ``notes`` (lines for the result's notes; pop it before calling train)."""
    from ..rates import schedules as S

    from ..energies.base import Gaussian, HarmonicTrap
    from ..energies.expfamily import ExpFamily

    e, d, s, dyn, out = (cfg[t] for t in ("energy", "data", "schedule", "dynamics", "output"))
    dim, mu, T = e["dim"], dyn["mobility"], dyn["duration"]
    chains = None
    neural = None
    notes = []
    if e["kind"] in NEURAL_KINDS:
        data = _load_data(d, dim, None, dyn["seed"])
        neural = build_neural(cfg, data)
        energy, theta0, chains = neural.energy, neural.theta0, neural.chains
    else:
        if e["kind"] == "harmonic":
            energy = HarmonicTrap(e["variance"], dim)
            theta0 = (e["theta0"] * dim) if len(e["theta0"]) == 1 else e["theta0"]
        elif e["kind"] in EXPFAMILY_THETA0:
            energy = ExpFamily.tilted_double_well() if e["kind"] == "double_well" else ExpFamily.quartic()
            theta0 = e["theta0"]
        else:
            energy = Gaussian(dim)
            theta0 = Gaussian.natural(e["mean0"] * (dim if len(e["mean0"]) == 1 else 1),
                                      e["variance0"] * (dim if len(e["variance0"]) == 1 else 1)).tolist()
        data = _load_data(d, dim, energy, dyn["seed"])
    kind = s["kind"]
    preconditioner = None
    if neural is not None and kind in ("natural_gradient", "friction"):
        schedule, preconditioner, note = neural.recipe(cfg)
        notes.append(note)
    elif kind == "optimal":
        schedule = S.optimal_harmonic(energy.variance, mu, T)
    elif kind in ("continuous", "smoothed"):
        schedule = S.optimal_harmonic_continuous(energy.variance, mu, T, s["smoothing"] if kind == "smoothed" else 0.0)
    elif kind == "prepared":
        schedule = S.optimal_harmonic_prepared(energy.variance, mu, T)
        chains = (S.prepared_chain_mean(theta0, list(data.mean), energy.variance, mu, T), energy.variance)
    elif kind in ("natural_gradient", "friction"):
        tau = s["tau"] if s["tau"] in ("auto", "online") else float(s["tau"])
        if kind == "natural_gradient":
            schedule = S.natural_gradient(T, tau=tau, fisher=s["fisher"], tau_refresh=s["tau_refresh"])
        else:
            schedule = S.friction(T, tau="auto" if tau == "online" else tau,
                                  estimate="exact" if dyn["backend"] != "particles" else "pilot")
    else:
        extra = {"exponential": {"decay": s.get("decay")},
                 "step": {"n_drops": s.get("n_drops"), "factor": s.get("factor")}}.get(kind, {})
        if s["final_error"] is not None:
            schedule = S.tune_scale(kind, s["final_error"], variance=energy.variance, mobility=mu,
                                    duration=T, n_steps=dyn["n_steps"], **extra)
        else:
            schedule = S.BASELINES[kind](s["scale"], T, **extra)
        if s["preconditioner"] != "none":
            schedule = S.preconditioned(schedule, s["preconditioner"] if neural is None
                                        else neural_fisher(s["preconditioner"]))
    backend = dyn["backend"]
    return dict(energy=energy, data=data, schedule=schedule, theta0=theta0, mobility=mu,
                n_steps=dyn["n_steps"], n_chains=dyn["n_chains"],
                n_replicas=1 if backend in ("moments", "fokker_planck") else dyn["n_replicas"],
                sampler=dyn["sampler"], free_energy=out["free_energy"],
                backend=backend, seed=dyn["seed"], dtype=dyn["dtype"], device=dyn["device"],
                chains=chains, data_term=d["term"], record_every=out["record_every"],
                checkpoint_every=out["checkpoint_every"],
                temperature_kelvin=out["temperature_kelvin"],
                **({"preconditioner": preconditioner} if preconditioner is not None else {}),
                **({"batch_size": dyn["batch_size"]} if dyn["batch_size"] else {}), notes=notes)
