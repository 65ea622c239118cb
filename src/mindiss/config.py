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

from .errors import InputError


@dataclass(frozen=True)
class Key:
    default: Any
    kind: str              # "float", "int", "str", "floats" (number or list of numbers), "bool"
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
                  "exponential", "step")

SCHEMA: dict[str, dict[str, Key]] = {
    "energy": {
        "kind": Key("harmonic", "str", "harmonic (E = |x - theta|^2 / 2s, centre learned) or gaussian "
                    "(centre and variance learned)", choices=("harmonic", "gaussian")),
        "dim": Key(1, "int", "dimension d of x", lambda v: 0 < v <= 10_000, "an integer in [1, 10000]"),
        "variance": Key(1.0, "float", "harmonic: the fixed variance s", _pos, "a positive number"),
        "theta0": Key(0.0, "floats", "harmonic: initial centre theta_0 (number or list of d numbers)"),
        "mean0": Key(0.0, "floats", "gaussian: initial centre"),
        "variance0": Key(1.0, "floats", "gaussian: initial variance", lambda v: all(a > 0 for a in v),
                         "positive numbers"),
    },
    "data": {
        "kind": Key("gaussian", "str", "gaussian (exact moments) or file (.npy / .csv samples)",
                    choices=("gaussian", "file")),
        "mean": Key(5.0, "floats", "gaussian: data mean xbar"),
        "variance": Key(1.0, "floats", "gaussian: data variance", lambda v: all(a > 0 for a in v),
                        "positive numbers"),
        "path": Key("", "str", "file: path of the samples"),
        "term": Key("moments", "str", "data term of g_hat: exact moments, or samples drawn once",
                    choices=("moments", "samples")),
    },
    "schedule": {
        "kind": Key("optimal", "str", "learning-rate schedule", choices=SCHEDULE_KINDS),
        "scale": Key(1.0, "float", "baselines: learning rate per unit time at t = 0", _pos, "a positive number"),
        "final_error": Key(None, "float", "baselines: tune scale so |theta_T - xbar| / |theta_0 - xbar| "
                           "equals this (harmonic)", lambda v: 0 < v < 1, "a number in (0, 1)", optional=True),
        "smoothing": Key(0.1, "float", "smoothed: width of the smoothed impulses", _pos, "a positive number"),
        "decay": Key(3.0, "float", "exponential: decay over the run", _pos, "a positive number"),
        "n_drops": Key(2, "int", "step: number of drops", _pos, "a positive integer"),
        "factor": Key(0.3, "float", "step: factor per drop", _pos, "a positive number"),
    },
    "dynamics": {
        "mobility": Key(1.0, "float", "chain mobility mu", _pos, "a positive number"),
        "duration": Key(1.0, "float", "training duration T", _pos, "a positive number"),
        "n_steps": Key(1000, "int", "interior updates n (n + 2 updates with the impulses)",
                       lambda v: 0 < v <= 100_000_000, "an integer in [1, 1e8]"),
        "sampler": Key("exact", "str", "chain move", choices=("exact", "euler", "mala")),
        "backend": Key("particles", "str", "simulated chains or the exact N -> infinity moments",
                       choices=("particles", "moments")),
        "n_chains": Key(100_000, "int", "chains per replica", lambda v: 0 < v <= 100_000_000,
                        "an integer in [1, 1e8]"),
        "n_replicas": Key(4, "int", "independent replicas (errors); moments uses 1", lambda v: 0 < v <= 10_000,
                          "an integer in [1, 10000]"),
        "seed": Key(0, "int", "seed of every generator", _nonneg, "a non-negative integer"),
        "device": Key("cpu", "str", "torch device (cpu, cuda, cuda:1, ...)", lambda v: _device_ok(v),
                      "an available torch device"),
        "dtype": Key("float32", "str", "chain dtype (theta and ledger are float64)", choices=("float32", "float64")),
    },
    "output": {
        "temperature_kelvin": Key(300.0, "float", "temperature for energy_joules", _pos, "a positive number"),
        "record_every": Key(1, "int", "history row every this many updates", _pos, "a positive integer"),
        "checkpoint_every": Key(100, "int", "with --out: checkpoint every this many updates (0: only at "
                                "replica ends and on SIGINT/SIGTERM)", _nonneg, "a non-negative integer"),
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
    raise AssertionError(kind)


_EXPECT = {"float": "a finite number", "int": "an integer", "str": "a string", "bool": "true or false",
           "floats": "a finite number or a list of finite numbers"}


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
    if d["kind"] == "file" and not d["path"]:
        problems.append("data.path must name a .npy or .csv file when data.kind = 'file'")
    if out["schedule"]["kind"] in ("optimal", "continuous", "smoothed", "prepared") and e["kind"] != "harmonic":
        problems.append(f"schedule.kind = '{out['schedule']['kind']}' needs energy.kind = 'harmonic'")
    if out["schedule"]["kind"] == "prepared" and d["kind"] != "gaussian":
        problems.append("schedule.kind = 'prepared' needs data.kind = 'gaussian' (the preparation needs the target)")
    for table, name in (("energy", "theta0"), ("energy", "mean0"), ("energy", "variance0"),
                        ("data", "mean"), ("data", "variance")):
        v = out[table][name]
        if isinstance(v, list) and len(v) not in (1, e["dim"]):
            problems.append(f"{table}.{name} has {len(v)} entries but energy.dim = {e['dim']}")
    if problems:
        raise InputError("invalid config:\n  - " + "\n  - ".join(problems))
    return out


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


def build(cfg: dict) -> dict:
    """Objects for ``train`` from a resolved config: keyword arguments of ``mindiss.train``."""
    from . import data as _data
    from . import schedules as S
    from .energies import Gaussian, HarmonicTrap

    e, d, s, dyn, out = (cfg[t] for t in ("energy", "data", "schedule", "dynamics", "output"))
    dim, mu, T = e["dim"], dyn["mobility"], dyn["duration"]
    if e["kind"] == "harmonic":
        energy = HarmonicTrap(e["variance"], dim)
        theta0 = (e["theta0"] * dim) if len(e["theta0"]) == 1 else e["theta0"]
    else:
        energy = Gaussian(dim)
        theta0 = Gaussian.natural(e["mean0"] * (dim if len(e["mean0"]) == 1 else 1),
                                  e["variance0"] * (dim if len(e["variance0"]) == 1 else 1)).tolist()
    data = _data.Gaussian(d["mean"], d["variance"], dim=dim) if d["kind"] == "gaussian" else _data.load(d["path"])
    chains = None
    kind = s["kind"]
    if kind == "optimal":
        schedule = S.optimal_harmonic(energy.variance, mu, T)
    elif kind in ("continuous", "smoothed"):
        schedule = S.optimal_harmonic_continuous(energy.variance, mu, T, s["smoothing"] if kind == "smoothed" else 0.0)
    elif kind == "prepared":
        schedule = S.optimal_harmonic_prepared(energy.variance, mu, T)
        chains = (S.prepared_chain_mean(theta0, list(data.mean), energy.variance, mu, T), energy.variance)
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
    backend = dyn["backend"]
    return dict(energy=energy, data=data, schedule=schedule, theta0=theta0, mobility=mu,
                n_steps=dyn["n_steps"], n_chains=dyn["n_chains"],
                n_replicas=1 if backend == "moments" else dyn["n_replicas"], sampler=dyn["sampler"],
                backend=backend, seed=dyn["seed"], dtype=dyn["dtype"], device=dyn["device"],
                chains=chains, data_term=d["term"], record_every=out["record_every"],
                checkpoint_every=out["checkpoint_every"],
                temperature_kelvin=out["temperature_kelvin"])
