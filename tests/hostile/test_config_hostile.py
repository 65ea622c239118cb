"""Hostile config input (issue 16, items 5 and 6; issue 17's --set): a config file or an override either
resolves to a valid config or is refused with an InputError / exit 2 whose every problem names its key
(or the file); never another exception, a traceback, an unbounded report or work before the refusal."""
import json
import re
import string
import tomllib

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mindiss.app import config as C
from mindiss.errors import InputError

GB = 10**9
TABLES = list(C.SCHEMA)
#: a problem line names a key path (table.key), a table ([name]) or, for the tail, counts the rest
NAMED = re.compile(r"(\b(energy|data|schedule|dynamics|output)\.(\w+|\"[^\n]*\")|\[[^\]]*\]|^\.\.\. and \d+ more problems)")


def check_refusal(exc: InputError) -> None:
    """Every line of a refusal names its key; at most MAX_PROBLEMS lines plus the count; bounded size."""
    text = str(exc)
    assert text.startswith("invalid config:\n  - "), text
    lines = text.split("\n  - ")[1:]
    assert 1 <= len(lines) <= C.MAX_PROBLEMS + 1
    for line in lines:
        assert NAMED.search(line), line
    assert len(text) < 400 * (C.MAX_PROBLEMS + 1)


def resolve_or_refuse(raw, available_memory) -> None:
    """The property: a valid config (that the writer round-trips) or a refusal naming keys; nothing else."""
    try:
        cfg = C.resolve(raw, available_memory=available_memory)
    except InputError as exc:
        check_refusal(exc)
        return
    assert C.resolve(tomllib.loads(C.to_toml(cfg)), available_memory=10**18) == cfg
    assert C.resolve(tomllib.loads(C.to_toml(cfg, comments=True)), available_memory=10**18) == cfg


# ------------------------------------------------------------------------------------ files

def _fails(run_cli, path, *words):
    code, out, err = run_cli("train", path, "--json")
    assert code == 2 and out == "" and err.startswith("mindiss: error: "), (code, err[:500])
    assert "Traceback" not in err and len(err) < 10_000
    for w in words:
        assert w in err, (w, err[:500])
    return err


def test_binary_garbage(run_cli, tmp_path):
    path = tmp_path / "garbage.toml"
    path.write_bytes(bytes(range(256)) * 8)
    _fails(run_cli, path, "garbage.toml", "not UTF-8")


def test_nul_bytes_and_bom(run_cli, tmp_path):
    (tmp_path / "nul.toml").write_bytes(b"[dynamics]\nseed = 1\x00\n")
    _fails(run_cli, tmp_path / "nul.toml", "not valid TOML")
    (tmp_path / "bom.toml").write_bytes("\ufeff[dynamics]\nseed = 1\n".encode())
    _fails(run_cli, tmp_path / "bom.toml", "not valid TOML")


@pytest.mark.parametrize("text", [
    "a = " + "[" * 5000 + "]" * 5000,                       # arrays
    "a = " + "{b = " * 5000 + "1" + "}" * 5000,             # inline tables
])
def test_nesting_5000_deep(run_cli, tmp_path, text):
    path = tmp_path / "deep.toml"
    path.write_text(text)
    _fails(run_cli, path, "deep.toml")


def test_dotted_table_5000_deep(run_cli, tmp_path):
    """[a.a.a...] parses (tomllib is iterative here): refused as an unknown table, the report short."""
    path = tmp_path / "dotted.toml"
    path.write_text("[" + ".".join(["a"] * 5000) + "]\nx = 1\n")
    _fails(run_cli, path, "[a]")


def test_deep_value_inside_a_known_key(run_cli, tmp_path):
    path = tmp_path / "v.toml"
    path.write_text("[energy]\ntheta0 = " + "[" * 300 + "1.0" + "]" * 300 + "\n")
    err = _fails(run_cli, path, "energy.theta0")
    assert len(err) < 1000


def test_oversized_file_refused_unread(run_cli, tmp_path, monkeypatch):
    """A 50 MB config of unknown keys is refused by its size, without being parsed."""
    path = tmp_path / "huge.toml"
    with path.open("w") as fh:
        fh.write("[energy]\n")
        line = "".join(f"unknown_{i} = 1\n" for i in range(1000))
        while fh.tell() < 50 * 2**20:
            fh.write(line)
    monkeypatch.setattr(C.tomllib, "loads", lambda *a, **k: pytest.fail("parsed an oversized config"))
    _fails(run_cli, path, "huge.toml", "at most 1048576 bytes")


def test_a_megabyte_of_unknown_keys_gives_a_short_report(run_cli, tmp_path):
    path = tmp_path / "keys.toml"
    body = "".join(f"k{i} = {i}\n" for i in range(90_000))
    path.write_text("[energy]\n" + body[: C.MAX_CONFIG_BYTES - 100])
    err = _fails(run_cli, path, "energy.k0", "more problems")
    assert err.count("\n  - ") == C.MAX_PROBLEMS + 1


@pytest.mark.parametrize("make", ["missing", "directory", "fifo"])
def test_config_path_that_is_not_a_file(run_cli, tmp_path, make):
    import os

    path = tmp_path / "cfg"
    if make == "directory":
        path.mkdir()
    elif make == "fifo":
        os.mkfifo(path)          # reading it would block: refused as not a regular file
    _fails(run_cli, path, str(path))


@pytest.mark.parametrize("key,value,word", [
    ("dynamics.seed", "99999999999999999999", "dynamics.seed"),
    ("dynamics.n_steps", "1e8", "dynamics.n_steps"),                 # a float where an integer is needed
    ("dynamics.n_chains", "-0", "dynamics.n_chains"),
    ("dynamics.mobility", "inf", "dynamics.mobility"),
    ("dynamics.mobility", "nan", "dynamics.mobility"),
    ("dynamics.duration", "1979-05-27T07:32:00Z", "dynamics.duration"),
    ("dynamics.device", '"cuda:99"', "dynamics.device"),
    ("dynamics.device", '"meta"', "dynamics.device"),
    ("energy.variance", "{a = 1}", "energy.variance"),
    ("data.mean", '"' + "x" * 100_000 + '"', "data.mean"),
    ("output.grid_n", "4097", "output.grid_n"),
])
def test_odd_values_through_set(run_cli, tmp_path, key, value, word):
    extra = ["--set", "energy.kind=mlp", "--set", "data.kind=moons", "--set", "schedule.kind=constant"] \
        if key.startswith("output.grid") else []
    code, out, err = run_cli("train", "--set", f"{key}={value}", *extra, "--out", tmp_path / "o")
    assert code == 2 and word in err and out == "" and len(err) < 2000, err[:500]
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------ machine limits

@pytest.mark.parametrize("sets,word", [
    (["dynamics.n_chains=100000000"], "dynamics.n_chains"),
    (["dynamics.n_steps=100000000"], "dynamics.n_steps"),
    (["energy.kind=mlp", "energy.hidden=[100000, 100000]", "data.kind=moons", "schedule.kind=constant"],
     "energy.hidden"),
])
def test_memory_refused_before_any_work(run_cli, tmp_path, monkeypatch, sets, word):
    """With 4 GB available the run is refused at validation: the key, the estimate and the memory named,
    nothing built (C.build never runs) and no run directory made."""
    monkeypatch.setattr(C, "_available_memory", lambda device: (4 * GB, None))
    monkeypatch.setattr(C, "build", lambda cfg: pytest.fail("built a run that cannot fit"))
    args = [a for s in sets for a in ("--set", s)]
    code, out, err = run_cli("train", *args, "--out", tmp_path / "o")
    assert code == 2 and out == "", err
    assert f"{word}: this run would need about" in err and "4 GB is available" in err
    assert not (tmp_path / "o").exists()


def test_schedule_steps_capped(run_cli):
    for steps in ("99999999999999999999", "100000000", str(10**6 + 1)):
        code, out, err = run_cli("schedule", "harmonic", "--variance", 1, "--mobility", 1, "--duration", 1,
                                 "--steps", steps)
        assert code == 2 and "--steps" in err and out == "", err


def test_bench_repeats_capped(run_cli):
    for repeats in ("99999999999999999999", "1000000", "-1"):
        code, out, err = run_cli("bench", "--repeats", repeats)
        assert code == 2 and "--repeats" in err and out == "", err


def test_largest_seed_runs(run_cli):
    code, out, err = run_cli("train", "--set", f"dynamics.seed={C.MAX_SEED}", "--set", "dynamics.n_chains=64",
                             "--set", "dynamics.n_steps=5", "--set", "dynamics.n_replicas=2", "--json")
    assert code == 0, err
    assert json.loads(out)["n_updates"] == 7


# ------------------------------------------------------------------------------------ property-based

CHOICES = sorted({c for ms in C.MODELS.values() for m in ms.values() for f in m.model_fields.values()
                  for c in C._choices(f.annotation)} | set(C.DATA_KINDS) | set(C.SCHEDULE_KINDS))
scalars = st.one_of(
    st.integers(-3, 300), st.integers(-2**70, 2**70), st.sampled_from([0, 1, 2, 4095, 4097, 10**8, 10**9]),
    st.floats(allow_nan=True, allow_infinity=True), st.floats(1e-3, 10), st.booleans(),
    st.sampled_from(CHOICES), st.text(max_size=8), st.sampled_from(["auto", "online", "0.5", "-1", "cpu", "cuda"]),
)
values = st.one_of(scalars, st.lists(scalars, max_size=4), st.dictionaries(st.text(max_size=3), scalars, max_size=2),
                   st.recursive(scalars, lambda c: st.lists(c, max_size=2), max_leaves=6))


def _good(table: str, key: str) -> list:
    """Values that some kind accepts for this key: the models' defaults, their choices, small variants."""
    out = []
    for m in C.MODELS[table].values():
        f = m.model_fields.get(key)
        if f is None:
            continue
        out += list(C._choices(f.annotation))
        d = f.get_default(call_default_factory=True)
        if d is not None and d is not ...:
            out.append(d)
            if isinstance(d, (int, float)) and not isinstance(d, bool):
                out += [type(d)(2 * d + 1), type(d)(max(d // 2 if isinstance(d, int) else d / 2, 1))]
    small = {"n_chains": [16, 64], "n_steps": [3, 10], "n_replicas": [1, 2], "hidden": [[4], [8, 8], 3],
             "grid_n": [33, 4095, 4097], "n": [50, 200], "n_samples": [50], "path": ["x.npy", 'a"b\\c'],
             "grid_box": [[-4.0, 4.0], [-3, 3, -2, 2]], "batch_size": [8], "dim": [1, 2, 3],
             "final_error": [0.1], "tau": ["auto", "online", "0.5", 2.0]}
    return out + small.get(key, [])


#: valid configs of each family, mutated by ``mutated_configs``
TEMPLATES = [
    {},
    {"energy": {"kind": "gaussian", "dim": 2}, "schedule": {"kind": "constant"}, "data": {"mean": [1.0, 2.0]}},
    {"energy": {"kind": "double_well"}, "data": {"kind": "model"}, "schedule": {"kind": "natural_gradient"},
     "dynamics": {"backend": "fokker_planck"}},
    {"energy": {"kind": "quartic"}, "data": {"kind": "model"}, "schedule": {"kind": "step"},
     "dynamics": {"sampler": "mala"}},
    {"energy": {"kind": "mlp", "hidden": [8]}, "data": {"kind": "moons"}, "schedule": {"kind": "cosine"}},
    {"energy": {"kind": "rbm"}, "data": {"kind": "digits"}, "schedule": {"kind": "friction"}},
    {"energy": {"kind": "mlp"}, "data": {"kind": "file", "path": "x.npy"}, "schedule": {"kind": "exponential"},
     "output": {"grid_n": 101}},
]


@st.composite
def mutated_configs(draw):
    """A valid template with 1-3 keys set to values some kind accepts (or, 1 in 5, to anything)."""
    raw = {t: dict(v) for t, v in draw(st.sampled_from(TEMPLATES)).items()}
    for _ in range(draw(st.integers(1, 3))):
        table = draw(st.sampled_from(TABLES))
        kind = raw.get(table, {}).get("kind", C.DEFAULT_KIND.get(table))
        own = [k for k in C.MODELS[table][kind].model_fields if k != "kind"] if draw(st.integers(0, 3)) else []
        key = draw(st.sampled_from(own or sorted(C.SCHEMA[table])))
        good = _good(table, key)
        raw.setdefault(table, {})[key] = draw(st.sampled_from(good) if good and draw(st.integers(0, 4))
                                              else values)
    dyn = raw.setdefault("dynamics", {})
    for key, small in (("n_chains", 64), ("n_steps", 10)):
        dyn.setdefault(key, small)
    return raw


@st.composite
def raw_configs(draw):
    if draw(st.booleans()):
        return draw(mutated_configs())
    raw = {}
    for table in TABLES:
        if draw(st.integers(0, 3)) == 0:
            continue
        entries = {}
        names = sorted(C.SCHEMA[table])
        if table in C.DEFAULT_KIND:
            kind = draw(st.one_of(st.sampled_from(sorted(C.MODELS[table])), scalars) if draw(st.integers(0, 9)) == 0
                        else st.sampled_from(sorted(C.MODELS[table])))
            entries["kind"] = kind
            if isinstance(kind, str) and kind in C.MODELS[table] and draw(st.integers(0, 5)):
                names = [n for n in C.MODELS[table][kind].model_fields if n != "kind"] or names
        for k in draw(st.lists(st.sampled_from(names), max_size=4, unique=True)):
            good = _good(table, k)
            entries[k] = draw(st.sampled_from(good) if good and draw(st.integers(0, 4)) else values)
        if draw(st.integers(0, 14)) == 0:
            entries[draw(st.text(string.ascii_letters + "_", min_size=1, max_size=6))] = draw(values)
        raw[table] = entries
    dyn = raw.setdefault("dynamics", {})      # valid runs stay small (the memory check sees the rest)
    for key, small in (("n_chains", 64), ("n_steps", 10)):
        dyn.setdefault(key, small)
    if draw(st.integers(0, 19)) == 0:
        raw[draw(st.sampled_from(["Energy", "dynamic", "x"]))] = draw(st.one_of(values, st.just({"a": 1})))
    if draw(st.integers(0, 19)) == 0:
        raw[draw(st.sampled_from(TABLES))] = draw(scalars)
    return raw


memory = st.sampled_from([10**18, 2 * GB])
SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.filter_too_much])


@settings(max_examples=300, **SETTINGS)
@given(raw=raw_configs(), available=memory)
def test_generated_configs(raw, available):
    resolve_or_refuse(raw, available)


@pytest.mark.slow
@settings(max_examples=1500, **SETTINGS)
@given(raw=raw_configs(), available=memory)
def test_generated_configs_many(raw, available):
    resolve_or_refuse(raw, available)


def _toml_text(raw) -> str | None:
    try:
        return tomli_w.dumps(raw)
    except (TypeError, ValueError):       # e.g. a NaN key or a non-table at the top: not writable as TOML
        return None


@settings(max_examples=150, **SETTINGS)
@given(raw=raw_configs())
def test_generated_files_through_the_reader(tmp_path_factory, raw):
    """The same property through the file reader (the TOML text written by tomli-w)."""
    text = _toml_text(raw)
    if text is None:
        return
    path = tmp_path_factory.mktemp("c") / "c.toml"
    path.write_text(text)
    try:
        cfg = C.resolve(C.read_raw(path), available_memory=10**18)
    except InputError as exc:
        check_refusal(exc)
        return
    assert C.resolve(tomllib.loads(C.to_toml(cfg)), available_memory=10**18) == cfg


override_text = st.one_of(
    st.builds(lambda t, k, v: f"{t}.{k}={v}", st.sampled_from(TABLES + ["dynamic", ""]),
              st.one_of(st.sampled_from(sorted({k for ks in C.SCHEMA.values() for k in ks})), st.text(max_size=4)),
              st.one_of(st.sampled_from(["1", "-1", "0.5", "nan", "inf", "true", '"x"', "[1, 2]", "{a = 1}", "[[[",
                                         "cosine", "mlp", "99999999999999999999", '"\\\\"', "1979-05-27"]),
                        st.text(max_size=8))),
    st.text(max_size=12),
)


@settings(max_examples=200, **SETTINGS)
@given(sets=st.lists(override_text, max_size=3))
def test_generated_overrides(sets):
    """--set TABLE.KEY=VALUE as the CLI applies them: a valid config or a refusal naming the key."""
    try:
        raw = C.apply_overrides({}, sets)
    except InputError as exc:
        assert str(exc).startswith("--set ")
        return
    resolve_or_refuse(raw, 10**18)
