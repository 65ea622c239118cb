"""Property-based input fuzzing: every generated config or CLI call either runs or fails with a
named error and exit code 2 (3 for a run that diverges); never a traceback, never a partial file."""
import json
import math
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mindiss.app.config import SCHEMA

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                      HealthCheck.too_slow], derandomize=True)

garbage = st.one_of(st.text(max_size=6), st.booleans(), st.just(float("nan")), st.just(float("inf")),
                    st.floats(-1e6, 1e6), st.integers(-10**6, 10**6), st.lists(st.floats(-5, 5), max_size=3))

# Per-key generators that mostly stay cheap when valid (small chains, steps, dims).
VALUES = {
    "kind": st.one_of(st.sampled_from(["harmonic", "gaussian", "file", "optimal", "continuous", "smoothed",
                                       "prepared", "constant", "linear", "cosine", "exponential", "step"]),
                      garbage),
    "dim": st.one_of(st.integers(-2, 3), st.just(10**5), garbage),
    "n_chains": st.one_of(st.integers(-5, 300), garbage),
    "n_steps": st.one_of(st.integers(-3, 40), garbage),
    "n_replicas": st.one_of(st.integers(-1, 3), garbage),
    "sampler": st.one_of(st.sampled_from(["exact", "euler", "mala"]), garbage),
    "backend": st.one_of(st.sampled_from(["particles", "moments"]), garbage),
    "dtype": st.one_of(st.sampled_from(["float32", "float64"]), garbage),
    "device": st.one_of(st.sampled_from(["cpu", "cuda", "meta", "cpu:0"]), garbage),
    "path": st.one_of(st.sampled_from(["", "/nonexistent.npy", "/tmp"]), garbage),
    "term": st.one_of(st.sampled_from(["moments", "samples"]), garbage),
    "seed": st.one_of(st.integers(-3, 2**40), garbage),
    "record_every": st.one_of(st.integers(-1, 50), garbage),
    "checkpoint_every": st.one_of(st.integers(-1, 20), garbage),
    "final_error": st.one_of(st.floats(-0.5, 1.5), garbage),
}
number = st.one_of(st.floats(-3, 10), st.floats(1e-3, 1e3), st.sampled_from([0.0, -1.0, 1e-300, 1e300]), garbage)


def _toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v == math.inf else ("-inf" if v == -math.inf else repr(v)))
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(a) for a in v) + "]"
    return repr(v)


@st.composite
def configs(draw):
    tables = {}
    for table, keys in SCHEMA.items():
        if draw(st.booleans()):
            names = draw(st.lists(st.sampled_from(sorted(keys)), max_size=4, unique=True))
            tables[table] = {n: draw(VALUES.get(n, number)) for n in names}
    # always keep valid runs small
    dyn = tables.setdefault("dynamics", {})
    dyn.setdefault("n_chains", draw(st.integers(1, 200)))
    dyn.setdefault("n_steps", draw(st.integers(1, 30)))
    dyn.setdefault("n_replicas", draw(st.integers(1, 2)))
    if draw(st.integers(0, 9)) == 0:
        tables[draw(st.sampled_from(["extra", "Energy", "dynamic"]))] = {"a": 1}
    if draw(st.integers(0, 9)) == 0:
        tables.setdefault("energy", {})[draw(st.sampled_from(["foo", "varience", "Kind"]))] = 1
    lines = []
    for table, entries in tables.items():
        lines.append(f"[{table}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in entries.items()]
    return "\n".join(lines) + "\n"


def _no_partial_files(root: Path):
    assert not [p for p in root.rglob("*") if p.name.startswith(".") and p.name.endswith(".tmp")]


def _check_train_config(run_cli, text):
    root = Path(tempfile.mkdtemp())
    try:
        (root / "c.toml").write_text(text)
        out = root / "run"
        code, stdout, stderr = run_cli("train", root / "c.toml", "--out", out, "--json", "--quiet")
        assert code in (0, 2, 3), (code, stderr)
        if code == 0:
            res = json.loads(stdout)
            assert json.loads((out / "result.json").read_text()) == res
        elif code == 2:
            assert stderr.startswith("mindiss: error: ") and stdout == ""
            assert not out.exists(), f"bad input left files behind: {list(out.rglob('*'))}"
        else:
            assert "diverged at update" in stderr and not (out / "result.json").exists()
        _no_partial_files(root)
    finally:
        shutil.rmtree(root)


@settings(max_examples=300, **SETTINGS)
@given(text=configs())
def test_train_configs(run_cli, text):
    _check_train_config(run_cli, text)


@pytest.mark.slow
@settings(max_examples=1000, **{**SETTINGS, "derandomize": False})
@given(text=configs())
def test_train_configs_many(run_cli, text):
    _check_train_config(run_cli, text)


arg = st.one_of(st.floats(-5, 5).map(repr), st.integers(-3, 50).map(str), st.text(max_size=5),
                st.sampled_from(["nan", "inf", "-inf", "1,2", "0", "1e-300", "1e300", "", "1,,2"]))


@settings(max_examples=450, **SETTINGS)
@given(v=arg, m=arg, d=arg, a=arg, b=arg, temp=arg)
def test_bound_cli(run_cli, v, m, d, a, b, temp):
    code, out, err = run_cli("bound", "harmonic", "--variance", v, "--mobility", m, "--duration", d,
                             "--theta0", a, "--target", b, "--temperature-kelvin", temp, "--json")
    assert code in (0, 2), err
    if code == 0:
        res = json.loads(out)
        assert res["excess_work"] >= 0
    else:
        assert out == "" and err


@settings(max_examples=300, **SETTINGS)
@given(v=arg, m=arg, d=arg, steps=st.one_of(st.integers(-2, 60).map(str), st.text(max_size=3)),
       with_path=st.booleans(), a=arg, b=arg, fmt=st.sampled_from(["csv", "json", "xml"]))
def test_schedule_cli(run_cli, v, m, d, steps, with_path, a, b, fmt):
    root = Path(tempfile.mkdtemp())
    try:
        extra = ["--theta0", a, "--target", b] if with_path else []
        code, out, err = run_cli("schedule", "harmonic", "--variance", v, "--mobility", m, "--duration", d,
                                 "--steps", steps, *extra, "--format", fmt, "--out", root / "s.out")
        assert code in (0, 2), err
        if code == 2:
            assert not (root / "s.out").exists()
        _no_partial_files(root)
    finally:
        shutil.rmtree(root)
