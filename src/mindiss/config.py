"""Run configuration: a TOML file with tables [energy], [data], [schedule], [dynamics], [output].

Every key has a default; every problem (unknown table or key, wrong type, out-of-range value,
unknown choice) is collected and reported at once, each naming the key, before any work starts.
"""
from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .config_neural import GRID_N, build_neural, neural_fisher
from .errors import InputError


@dataclass(frozen=True)
class Key:
    default: Any
    kind: str              # "float", "int", "str", "floats" (number or list of numbers), "ints", "bool"
    doc: str
    check: Callable[[Any], bool] | None = None
    expect: str = ""       # what check() wants, for the message
    choices: tuple = ()
    optional: bool = False  # may be absent (default None)


def _pos(v):
    return v > 0


def _nonneg(v):
    return v >= 0


def _device_ok(name: str) -> bool:
    import torch

    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        return False
    if dev.type == "cpu":
        return True
    if dev.type == "cuda":
        return torch.cuda.is_available() and (dev.index or 0) < torch.cuda.device_count()
    return False


SCHEDULE_KINDS = ("optimal", "continuous", "smoothed", "prepared", "constant", "linear", "cosine",
                  "exponential", "step", "natural_gradient", "friction")
ENERGY_KINDS = ("harmonic", "gaussian", "double_well", "quartic", "mlp", "rbm")
#: neural energies (neural.NeuralEnergy.mlp, rbm.GaussianBernoulliRBM): no closed-form moments
NEURAL_KINDS = ("mlp", "rbm")
#: kind-specific defaults of the neural energies' keys (None in SCHEMA: unset for the other kinds)
NEURAL_DEFAULTS = {"mlp": {"hidden": [64, 64], "activation": "silu", "confinement": 0.1, "init_seed": 0},
                   "rbm": {"hidden": [16], "init_seed": 0, "sigma": 1.0, "weight_std": 0.01}}
#: energy keys of the other kinds that a neural energy does not read
NOT_NEURAL_KEYS = ("variance", "mean0", "variance0")
#: mlp activations (neural.ACTIVATIONS)
ACTIVATIONS = ("silu", "tanh", "softplus", "gelu", "relu")
#: 2-D toy data sets (datasets.TOY) and the 8x8 digits (64-D, the training split)
TOY_DATA = ("moons", "rings", "8gaussians", "checkerboard", "pinwheel")
DATA_KINDS = ("gaussian", "file", "model") + TOY_DATA + ("digits",)
#: data keys of the gaussian / file / model kinds that the named data sets do not read
NOT_NAMED_DATA_KEYS = ("theta", "n_samples", "mean", "variance", "path")
#: default theta_0 of the 1-D exponential families (E = theta . phi(x)) when energy.theta0 is not set
EXPFAMILY_THETA0 = {"double_well": [1.0, 0.0], "quartic": [1.0, 0.5]}
PRECONDITIONERS = ("none", "fisher-full", "fisher-diag", "fisher-lowrank", "fisher-exact", "friction-pilot",
                   "friction-exact", "adam")


def _grid_box_ok(v) -> bool:
    return len(v) in (2, 4) and all(v[i] < v[i + 1] for i in range(0, len(v), 2))


def _tau_ok(v: str) -> bool:
    if v in ("auto", "online"):
        return True
    try:
        return float(v) > 0 and math.isfinite(float(v))
    except ValueError:
        return False

SCHEMA: dict[str, dict[str, Key]] = {
    "energy": {
        "kind": Key("harmonic", "str", "harmonic (E = |x - theta|^2 / 2s, centre learned), gaussian "
                    "(centre and variance learned), double_well (E = a (x^2 - 1)^2 + b x, theta = (a, b); 1-D), "
                    "quartic (E = k2 x^2 / 2 + k4 x^4 / 4; 1-D), mlp (E = MLP(x) + k |x|^2 / 2, theta = the "
                    "network's weights) or rbm (Gaussian-Bernoulli RBM, hidden units summed out)",
                    choices=ENERGY_KINDS),
        "dim": Key(1, "int", "dimension d of x (follows data.kind for the named data sets, and for mlp / rbm "
                   "the data file's columns)", lambda v: 0 < v <= 10_000, "an integer in [1, 10000]"),
        "variance": Key(1.0, "float", "harmonic: the fixed variance s", _pos, "a positive number"),
        "theta0": Key(0.0, "floats", "harmonic: initial centre theta_0 (number or list of d numbers); "
                      "double_well / quartic: the 2 parameters (default (1, 0) / (1, 0.5)); mlp / rbm: all "
                      "the parameters (default: the initialiser's, seeded by energy.init_seed)"),
        "mean0": Key(0.0, "floats", "gaussian: initial centre"),
        "variance0": Key(1.0, "floats", "gaussian: initial variance", lambda v: all(a > 0 for a in v),
                         "positive numbers"),
        "hidden": Key(None, "ints", "mlp: widths of the hidden layers (default [64, 64]); rbm: the number of "
                      "hidden units (default 16; exact ln Z and equilibrium draws up to 20)",
                      lambda v: all(0 < a <= 100_000 for a in v), "positive integers (at most 100000)",
                      optional=True),
        "activation": Key(None, "str", "mlp: activation (default silu)", choices=ACTIVATIONS, optional=True),
        "confinement": Key(None, "float", "mlp: k of the quadratic wall k |x|^2 / 2 that makes Z finite "
                           "(default 0.1)", _pos, "a positive number", optional=True),
        "init_seed": Key(None, "int", "mlp / rbm: seed of the initial weights (default 0); mlp with d > 2 "
                         "starts with its output layer at zero, so p_theta0 = N(0, 1/k) is drawn exactly",
                         _nonneg, "a non-negative integer", optional=True),
        "sigma": Key(None, "float", "rbm: the fixed visible standard deviation (default 1)", _pos,
                     "a positive number", optional=True),
        "weight_std": Key(None, "float", "rbm: standard deviation of the initial weights W (default 0.01; "
                          "visible biases start at the data mean, hidden biases at 0)", _pos,
                          "a positive number", optional=True),
    },
    "data": {
        "kind": Key("gaussian", "str", "gaussian (exact moments), file (.npy / .csv samples), model "
                    "(exact draws of the energy's own family at data.theta; 1-D families), a 2-D toy set "
                    "(moons, rings, 8gaussians, checkerboard, pinwheel; datasets.toy) or digits (the "
                    "standardised 8x8 digits' training split, 64-D; datasets.digits)", choices=DATA_KINDS),
        "n": Key(None, "int", "toy sets: number of samples (default 2000)", lambda v: 0 < v <= 100_000_000,
                 "a positive integer (at most 1e8)", optional=True),
        "seed": Key(None, "int", "toy sets / digits: seed of the draws (digits: dequantisation and split; "
                    "default 0)", _nonneg, "a non-negative integer", optional=True),
        "theta": Key([1.5, 0.5], "floats", "model: the parameters that generate the data"),
        "n_samples": Key(20_000, "int", "model: number of samples drawn (seeded by dynamics.seed)", _pos,
                         "a positive integer"),
        "mean": Key(5.0, "floats", "gaussian: data mean xbar"),
        "variance": Key(1.0, "floats", "gaussian: data variance", lambda v: all(a > 0 for a in v),
                        "positive numbers"),
        "path": Key("", "str", "file: path of the samples"),
        "term": Key("moments", "str", "data term of g_hat: exact moments, or samples drawn once",
                    choices=("moments", "samples")),
    },
    "schedule": {
        "kind": Key("optimal", "str", "learning-rate schedule", choices=SCHEDULE_KINDS),
        "scale": Key(1.0, "float", "baselines: learning rate per unit time at t = 0; natural_gradient / friction "
                     "with mlp / rbm: the factor on alpha(t) (1 = the design; networks want ~0.01-0.1)", _pos,
                     "a positive number"),
        "final_error": Key(None, "float", "baselines: tune scale so |theta_T - xbar| / |theta_0 - xbar| "
                           "equals this (harmonic)", lambda v: 0 < v < 1, "a number in (0, 1)", optional=True),
        "smoothing": Key(0.1, "float", "smoothed: width of the smoothed impulses", _pos, "a positive number"),
        "decay": Key(3.0, "float", "exponential: decay over the run", _pos, "a positive number"),
        "n_drops": Key(2, "int", "step: number of drops", _pos, "a positive integer"),
        "factor": Key(0.3, "float", "step: factor per drop", _pos, "a positive number"),
        "fisher": Key("full", "str", "natural_gradient: Fisher estimate from the chains (mlp / rbm: diag, the "
                      "default there, or lowrank)",
                      choices=("full", "diag", "lowrank", "exact")),
        "tau": Key("auto", "str", "natural_gradient / friction: relaxation time: auto (exact where known, else "
                   "a pilot run), online (re-estimated every tau_refresh updates) or a number", _tau_ok,
                   "'auto', 'online' or a positive number"),
        "tau_refresh": Key(50, "int", "natural_gradient with tau = online: updates between estimates", _pos,
                           "a positive integer"),
        "preconditioner": Key("none", "str", "baselines: learning-rate matrix applied to g_hat",
                              choices=PRECONDITIONERS),
    },
    "dynamics": {
        "mobility": Key(1.0, "float", "chain mobility mu", _pos, "a positive number"),
        "duration": Key(1.0, "float", "training duration T", _pos, "a positive number"),
        "n_steps": Key(1000, "int", "interior updates n (n + 2 updates with the impulses)",
                       lambda v: 0 < v <= 100_000_000, "an integer in [1, 1e8]"),
        "sampler": Key("exact", "str", "chain move (mlp / rbm on particles: default mala)",
                       choices=("exact", "euler", "mala")),
        "backend": Key("particles", "str", "simulated chains, the exact N -> infinity moments (quadratic "
                       "energies) or the exact 1-D Fokker-Planck density", choices=("particles", "moments",
                                                                                     "fokker_planck")),
        "n_chains": Key(100_000, "int", "chains per replica", lambda v: 0 < v <= 100_000_000,
                        "an integer in [1, 1e8]"),
        "n_replicas": Key(4, "int", "independent replicas (errors); moments uses 1", lambda v: 0 < v <= 10_000,
                          "an integer in [1, 10000]"),
        "seed": Key(0, "int", "seed of every generator", _nonneg, "a non-negative integer"),
        "device": Key("cpu", "str", "torch device (cpu, cuda, cuda:1, ...)", lambda v: _device_ok(v),
                      "an available torch device"),
        "dtype": Key("float32", "str", "chain dtype (theta and ledger are float64)", choices=("float32", "float64")),
        "batch_size": Key(None, "int", "data rows in the data term of each update (a fresh minibatch every "
                          "update; non-quadratic energies; default: all the data)", _pos, "a positive integer",
                          optional=True),
    },
    "output": {
        "temperature_kelvin": Key(300.0, "float", "temperature for energy_joules", _pos, "a positive number"),
        "free_energy": Key("auto", "str", "Delta F: exact where known, else the estimator (auto = exact or ais)",
                           choices=("auto", "exact", "ais", "ti", "jarzynski")),
        "record_every": Key(1, "int", "history row every this many updates", _pos, "a positive integer"),
        "checkpoint_every": Key(100, "int", "with --out: checkpoint every this many updates (0: only at "
                                "replica ends and on SIGINT/SIGTERM)", _nonneg, "a non-negative integer"),
        "grid_box": Key(None, "floats", "mlp / rbm in 1-D or 2-D: the box of the grid quadrature that gives "
                        "ln Z (the true loss and Delta F at every record), [lo, hi] for every axis or [lo1, hi1, "
                        "lo2, hi2] (default: the data range padded 1.5x joined with the initial model's extent, "
                        "grown until its edge holds < 1e-6 of p_theta0)", _grid_box_ok,
                        "[lo, hi] or [lo1, hi1, lo2, hi2] with lo < hi", optional=True),
        "grid_n": Key(None, "int", f"mlp / rbm in 1-D or 2-D: grid points per axis (odd; default {GRID_N}; "
                      "halved spacing where the quadrature's error estimate exceeds 1e-4)",
                      lambda v: 5 <= v <= 4097 and v % 2 == 1, "an odd integer in [5, 4097]", optional=True),
    },
}


def _coerce(kind: str, value):
    """Return (ok, value) with ints accepted as floats; lists of numbers for 'floats'."""
    num = (int, float)
    if kind == "float":
        return (isinstance(value, num) and not isinstance(value, bool) and math.isfinite(value)), float(value) if isinstance(value, num) else value
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool), value
    if kind == "str":
        return isinstance(value, str), value
    if kind == "bool":
        return isinstance(value, bool), value
    if kind == "floats":
        vals = value if isinstance(value, list) else [value]
        ok = bool(vals) and all(isinstance(a, num) and not isinstance(a, bool) and math.isfinite(a) for a in vals)
        return ok, [float(a) for a in vals] if ok else value
    if kind == "ints":
        vals = value if isinstance(value, list) else [value]
        ok = bool(vals) and all(isinstance(a, int) and not isinstance(a, bool) for a in vals)
        return ok, list(vals) if ok else value
    raise AssertionError(kind)


_EXPECT = {"float": "a finite number", "int": "an integer", "str": "a string", "bool": "true or false",
           "floats": "a finite number or a list of finite numbers", "ints": "an integer or a list of integers"}


def dyn_backend(cfg: dict) -> str:
    return cfg["dynamics"]["backend"]


def resolve(raw: dict) -> dict:
    """Defaults filled in and every key validated; raises InputError listing all problems."""
    problems = []
    out = {t: {k: key.default if key.default is None else _coerce(key.kind, key.default)[1]
               for k, key in keys.items()} for t, keys in SCHEMA.items()}
    if not isinstance(raw, dict):
        raise InputError("config must be a table of tables")
    for table, entries in raw.items():
        if table not in SCHEMA:
            problems.append(f"unknown table [{table}] (allowed: {', '.join(SCHEMA)})")
            continue
        if not isinstance(entries, dict):
            problems.append(f"[{table}] must be a table")
            continue
        for name, value in entries.items():
            key = SCHEMA[table].get(name)
            if key is None:
                problems.append(f"unknown key {table}.{name} (allowed: {', '.join(SCHEMA[table])})")
                continue
            ok, val = _coerce(key.kind, value)
            if not ok:
                problems.append(f"{table}.{name} must be {_EXPECT[key.kind]}, got {value!r}")
            elif key.choices and val not in key.choices:
                problems.append(f"{table}.{name} must be one of {', '.join(key.choices)}, got {value!r}")
            elif key.check is not None and not key.check(val):
                problems.append(f"{table}.{name} must be {key.expect}, got {value!r}")
            else:
                out[table][name] = val
    e, d = out["energy"], out["data"]
    given = {t: set(raw[t]) if isinstance(raw.get(t), dict) else set() for t in SCHEMA}
    neural = e["kind"] in NEURAL_KINDS
    problems += _neural_checks(out, given)
    if d["kind"] == "file" and not d["path"]:
        problems.append("data.path must name a .npy or .csv file when data.kind = 'file'")
    if out["schedule"]["kind"] in ("optimal", "continuous", "smoothed", "prepared") and e["kind"] != "harmonic":
        problems.append(f"schedule.kind = '{out['schedule']['kind']}' needs energy.kind = 'harmonic'")
    if out["schedule"]["kind"] == "prepared" and d["kind"] != "gaussian":
        problems.append("schedule.kind = 'prepared' needs data.kind = 'gaussian' (the preparation needs the target)")
    family = e["kind"] in EXPFAMILY_THETA0
    if family and e["dim"] != 1:
        problems.append(f"energy.kind = '{e['kind']}' is one-dimensional: energy.dim must be 1")
    if d["kind"] == "model" and not family:
        problems.append("data.kind = 'model' needs a 1-D family energy (double_well or quartic)")
    if family and "theta0" in raw.get("energy", {}) and len(out["energy"]["theta0"]) != 2:
        problems.append(f"energy.theta0 of '{e['kind']}' needs 2 numbers, got {out['energy']['theta0']!r}")
    if d["kind"] == "model" and len(d["theta"]) != 2:
        problems.append(f"data.theta needs 2 numbers, got {d['theta']!r}")
    if dyn_backend(out) == "moments" and (family or neural):
        problems.append(f"dynamics.backend = 'moments' needs a quadratic energy, not '{e['kind']}'")
    if dyn_backend(out) == "fokker_planck" and e["dim"] != 1:
        problems.append("dynamics.backend = 'fokker_planck' needs energy.dim = 1")
    for table, name in ((("energy", "theta0"),) if not (family or neural) else ()) + (("energy", "mean0"),
                        ("energy", "variance0"), ("data", "mean"), ("data", "variance")):
        v = out[table][name]
        if isinstance(v, list) and len(v) not in (1, e["dim"]):
            problems.append(f"{table}.{name} has {len(v)} entries but energy.dim = {e['dim']}")
    if neural and d["kind"] == "file" and "dim" not in given["energy"]:
        e["dim"] = None          # follows the file's columns (build)
    if problems:
        raise InputError("invalid config:\n  - " + "\n  - ".join(problems))
    return out


def _kinds(kinds) -> str:
    return " or ".join(f"'{k}'" for k in kinds)


def _neural_checks(out: dict, given: dict) -> list:
    """Keys of the neural energies, the named data sets, minibatches and the grid quadrature: which
    apply to which kind; kind-specific defaults filled in (keys that do not apply are set to None,
    so a resolved config written with ``to_toml`` reads back unchanged)."""
    problems = []
    e, d, s, dyn, o = (out[t] for t in ("energy", "data", "schedule", "dynamics", "output"))
    kind = e["kind"]
    neural = kind in NEURAL_KINDS
    for name in ("hidden", "activation", "confinement", "init_seed", "sigma", "weight_std"):
        kinds = [k for k, dflt in NEURAL_DEFAULTS.items() if name in dflt]
        if name in given["energy"] and kind not in kinds:
            problems.append(f"energy.{name} applies to energy.kind = {_kinds(kinds)}, not '{kind}'")
    if neural:
        for name in NOT_NEURAL_KEYS:
            if name in given["energy"]:
                problems.append(f"energy.{name} does not apply to energy.kind = '{kind}' (its keys: kind, dim, "
                                f"theta0, {', '.join(NEURAL_DEFAULTS[kind])})")
            e[name] = None
        for name, value in NEURAL_DEFAULTS[kind].items():
            if name not in given["energy"]:
                e[name] = list(value) if isinstance(value, list) else value
        if "theta0" not in given["energy"]:
            e["theta0"] = None
        if kind == "rbm" and e["hidden"] is not None and len(e["hidden"]) != 1:
            problems.append(f"energy.hidden of an 'rbm' is one number (its hidden units), got {e['hidden']!r}")
        if kind == "rbm" and e["hidden"] is not None and e["hidden"][0] > 10_000:
            problems.append(f"energy.hidden of an 'rbm' must be at most 10000, got {e['hidden'][0]}")
        grid = dyn["backend"] == "fokker_planck"     # moves the density exactly: sampler 'exact'
        if "sampler" not in given["dynamics"]:
            dyn["sampler"] = "exact" if grid else "mala"
        elif dyn["sampler"] == "exact" and not grid:
            problems.append(f"dynamics.sampler = 'exact' needs a quadratic energy (or backend 'fokker_planck'); "
                            f"energy.kind = '{kind}' needs 'mala' or 'euler'")
        if s["kind"] == "natural_gradient":
            if "fisher" not in given["schedule"]:
                s["fisher"] = "diag"
            elif s["fisher"] not in ("diag", "lowrank"):
                problems.append(f"schedule.fisher = '{s['fisher']}' with energy.kind = '{kind}': use 'diag' or "
                                "'lowrank' (a full Fisher is a P x P matrix of the network's P parameters, and "
                                "there is no closed form)")
        if s["kind"] == "friction" and dyn["backend"] != "particles":
            problems.append(f"schedule.kind = 'friction' with energy.kind = '{kind}' needs dynamics.backend = "
                            "'particles' (its relaxation times come from per-chain gradients)")
        if s["kind"] in ("natural_gradient", "friction") and s["tau"] == "online":
            problems.append(f"schedule.tau = 'online' with energy.kind = '{kind}': use 'auto' (a diagonal pilot "
                            "run on a clone of the initial chains) or a number")
        if s["preconditioner"] not in ("none", "fisher-diag", "fisher-lowrank", "adam"):
            problems.append(f"schedule.preconditioner = '{s['preconditioner']}' with energy.kind = '{kind}': use "
                            "none, fisher-diag, fisher-lowrank or adam (the others form P x P matrices or need "
                            "closed forms)")
    for name in ("grid_box", "grid_n"):
        if name in given["output"] and not neural:
            problems.append(f"output.{name} applies to energy.kind = {_kinds(NEURAL_KINDS)}, not '{kind}'")
    if dyn["batch_size"] is not None and kind in ("harmonic", "gaussian"):
        problems.append(f"dynamics.batch_size needs a non-quadratic energy (double_well, quartic, mlp, rbm): the "
                        f"data term of '{kind}' is the exact data moments, with nothing to batch")
    named = d["kind"] in TOY_DATA + ("digits",)
    if "n" in given["data"] and d["kind"] not in TOY_DATA:
        problems.append(f"data.n applies to the toy sets ({', '.join(TOY_DATA)}), not data.kind = '{d['kind']}'")
    if "seed" in given["data"] and not named:
        problems.append(f"data.seed applies to the toy sets and digits, not data.kind = '{d['kind']}' (its draws "
                        "use dynamics.seed)")
    if named:
        for name in NOT_NAMED_DATA_KEYS:
            if name in given["data"]:
                problems.append(f"data.{name} does not apply to data.kind = '{d['kind']}'")
            d[name] = None
        if d["kind"] in TOY_DATA and "n" not in given["data"]:
            d["n"] = 2000
        if "seed" not in given["data"]:
            d["seed"] = 0
        ddim = 64 if d["kind"] == "digits" else 2
        if "dim" in given["energy"] and e["dim"] != ddim:
            problems.append(f"energy.dim = {e['dim']} but data.kind = '{d['kind']}' is {ddim}-dimensional (leave "
                            "energy.dim out: it follows the data)")
        e["dim"] = ddim
    return problems


def load(path) -> dict:
    """Read and validate a TOML config file."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"config file {str(p)!r} does not exist")
    try:
        raw = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"config file {str(p)!r} is not valid TOML: {exc}") from None
    return resolve(raw)


def _toml_value(v) -> str:
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(a) for a in v) + "]"
    return repr(v)


def to_toml(cfg: dict, comments: bool = False) -> str:
    """A config as TOML text (with each key's documentation as a comment when asked)."""
    lines = []
    for table, keys in SCHEMA.items():
        lines.append(f"[{table}]")
        for name, key in keys.items():
            v = cfg[table][name]
            doc = key.doc + (f" ({' | '.join(key.choices)})" if key.choices else "")
            if v is None:
                lines.append(f"# {name} = ...  # {doc}" if comments else f"# {name} unset")
            else:
                lines.append(f"{name} = {_toml_value(v)}" + (f"  # {doc}" if comments else ""))
        lines.append("")
    return "\n".join(lines)


def defaults() -> dict:
    return resolve({})


def _load_data(d: dict, dim, energy, seed: int):
    """The data of a resolved [data] table: a distribution or samples (float64, (n, d))."""
    from . import data as _data
    from . import datasets
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
    from . import schedules as S

    from .energies import Gaussian, HarmonicTrap
    from .expfamily import ExpFamily

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
            theta0 = e["theta0"] if len(e["theta0"]) == 2 else EXPFAMILY_THETA0[e["kind"]]
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
        extra = {"exponential": {"decay": s["decay"]},
                 "step": {"n_drops": s["n_drops"], "factor": s["factor"]}}.get(kind, {})
        if s["final_error"] is not None:
            if e["kind"] != "harmonic":
                raise InputError("schedule.final_error needs energy.kind = 'harmonic'")
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
