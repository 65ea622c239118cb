"""Hostile checkpoints (issue 16, classes 1 and 8): loading never runs code, damaged bytes are
refused, a crafted state is refused with a message, and the cost of checkpoints is linear in the
number of replicas."""
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mindiss as md
from mindiss.core import checkpoint as ckpt
from mindiss.errors import InputError

EXE = os.path.join(os.path.dirname(sys.executable), "mindiss")
#: the subprocesses import the mindiss under test (an absolute path, whatever their working directory)
ENV = {**os.environ, "PYTHONPATH": str(Path(md.__file__).resolve().parents[1])}
CONFIG = """
[energy]
variance = 0.5
[data]
mean = 1.0
[dynamics]
n_steps = 30
n_chains = 200
n_replicas = 2
seed = 4
[output]
checkpoint_every = 10
"""


class _Marker:
    """A pickle payload: unpickling it creates the file ``path`` (harmless stand-in for os.system)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _kw():
    return dict(schedule=md.schedules.optimal_harmonic(0.5, 1.0, 1.0), theta0=[0.0], n_steps=30, n_chains=200,
                n_replicas=2, seed=4)


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A checkpoint folder of a run stopped in its second replica, and the uninterrupted result."""
    root = tmp_path_factory.mktemp("ck")
    energy, data = md.HarmonicTrap(0.5), md.data.Gaussian(1.0, 0.5)
    ref = md.train(energy, data, **_kw())
    calls = []
    with pytest.raises(md.Interrupted):
        md.train(energy, data, **_kw(), checkpoint=root / "ck", checkpoint_every=10,
                 stop=lambda: calls.append(1) or len(calls) == 45)
    return root / "ck", ref


def _resume(ck):
    return md.train(md.HarmonicTrap(0.5), md.data.Gaussian(1.0, 0.5), **_kw(), checkpoint=ck, resume=True)


def test_intact_checkpoint_resumes_identically(interrupted, tmp_path):
    ck, ref = interrupted
    shutil.copytree(ck, tmp_path / "ck")
    res = _resume(tmp_path / "ck")
    assert json.dumps(res.to_dict(), sort_keys=True) == json.dumps(ref.to_dict(), sort_keys=True)


def test_payload_would_create_the_marker(tmp_path):
    """Control: the crafted payload does run code when unpickled (so the tests below can fail)."""
    marker = tmp_path / "control"
    pickle.loads(pickle.dumps({"run": _Marker(marker)}))
    assert marker.exists()


@pytest.mark.parametrize("where", ["old checkpoint.pt", "run.safetensors", "torch.save as run.safetensors"])
def test_crafted_pickle_never_runs_on_resume(tmp_path, where, run_cli):
    """Class 1: a pickle whose loading creates a marker file, placed at the old checkpoint.pt path or
    in the new checkpoint folder; ``train --resume`` exits 2 and the marker does not exist."""
    cfg = tmp_path / "run.toml"
    cfg.write_text(CONFIG)
    out = tmp_path / "run"
    out.mkdir()
    marker = tmp_path / "MARKER"
    payload = {"format": 1, "version": md.__version__, "completed": [], "run": _Marker(marker), "sampler": {}}
    if where == "old checkpoint.pt":
        (out / "checkpoint.pt").write_bytes(pickle.dumps(payload))
    else:
        (out / "checkpoint").mkdir()
        if where == "run.safetensors":
            (out / "checkpoint" / "run.safetensors").write_bytes(pickle.dumps(payload))
        else:
            torch.save(payload, out / "checkpoint" / "run.safetensors")
    code, _, err = run_cli("train", cfg, "--out", out, "--resume", "--quiet")   # in-process: code would run here
    assert code == 2, err
    assert not marker.exists()
    assert ("pickle" in err) if where == "old checkpoint.pt" else ("not a safetensors file" in err or "damaged" in err)
    assert not (out / "result.json").exists()


@pytest.mark.parametrize("pos", ["first", "header", "middle", "last"])
def test_flipped_byte_is_refused(interrupted, tmp_path, pos):
    """Class 1 (integrity): one flipped byte anywhere in a checkpoint file is refused (exit 2 from the
    CLI, InputError from the API); before, flipped bytes resumed with a different result."""
    ck, _ = interrupted
    shutil.copytree(ck, tmp_path / "ck")
    f = tmp_path / "ck" / "run.safetensors"
    raw = bytearray(f.read_bytes())
    n = int.from_bytes(raw[:8], "little")
    i = {"first": 0, "header": 8 + n // 2, "middle": 8 + n + (len(raw) - 8 - n) // 2, "last": len(raw) - 1}[pos]
    raw[i] ^= 0x01
    f.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="damaged|not a safetensors|truncated|header|metadata|integrity"):
        _resume(tmp_path / "ck")


def test_flipped_replica_file_is_refused_from_the_cli(tmp_path, run_cli):
    cfg = tmp_path / "run.toml"
    cfg.write_text(CONFIG)
    out = tmp_path / "run"
    code, _, err = run_cli("train", cfg, "--out", out, "--quiet")
    assert code == 0, err
    (out / "result.json").unlink()
    f = out / "checkpoint" / "replica-000001.safetensors"
    raw = bytearray(f.read_bytes())
    raw[-3] ^= 0x40
    f.write_bytes(bytes(raw))
    code, _, err = run_cli("train", cfg, "--out", out, "--resume", "--quiet")
    assert code == 2 and "damaged" in err and "replica-000001" in err
    assert not (out / "result.json").exists()


def _mutations():
    return st.one_of(
        st.tuples(st.just("flip"), st.integers(0, 10**9), st.integers(1, 255)),
        st.tuples(st.just("truncate"), st.integers(0, 10**9), st.just(0)),
        st.tuples(st.just("insert"), st.integers(0, 10**9), st.integers(0, 255)),
        st.tuples(st.just("delete"), st.integers(0, 10**9), st.integers(1, 64)),
    )


def _mutate(raw: bytes, m) -> bytes:
    kind, i, v = m
    if not raw and kind != "insert":
        return raw
    i = i % (len(raw) + (kind == "insert"))
    if kind == "flip":
        b = bytearray(raw)
        b[i] ^= v
        return bytes(b)
    if kind == "truncate":
        return raw[:i]
    if kind == "insert":
        return raw[:i] + bytes([v]) + raw[i:]
    return raw[:i] + raw[i + v:]


def _refused_or_identical(raw, original, fp):
    try:
        head, state = ckpt.loads(raw, "run.safetensors", fp)
    except InputError:
        return
    # accepted only if the bytes carry the same content (e.g. a deletion beyond the end)
    assert raw == original


def _ck_bytes(ck):
    raw = (ck / "run.safetensors").read_bytes()
    fp = json.loads(ckpt._header(raw, "x")[0]["mindiss"])["fingerprint"]
    return raw, fp


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(m=_mutations())
def test_mutated_checkpoint_bytes_are_refused(interrupted, m):
    """Hypothesis over checkpoint bytes (in-process): every flip, truncation, insertion or deletion
    is refused with InputError (no other exception, nothing built from the damaged file)."""
    raw, fp = _ck_bytes(interrupted[0])
    _refused_or_identical(_mutate(raw, m), raw, fp)


@pytest.mark.slow
@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ms=st.lists(_mutations(), min_size=1, max_size=4))
def test_mutated_checkpoint_bytes_are_refused_many(interrupted, ms):
    raw, fp = _ck_bytes(interrupted[0])
    bad = raw
    for m in ms:
        bad = _mutate(bad, m)
    _refused_or_identical(bad, raw, fp)


@settings(max_examples=100, deadline=None)
@given(raw=st.binary(max_size=600))
def test_arbitrary_bytes_are_refused(raw):
    with pytest.raises(InputError):
        ckpt.loads(raw, "x.safetensors", None)


def _recrafted(ck, tmp_path, edit):
    """A checkpoint whose state is edited and re-signed with a valid hash (an attacker can do that:
    the hash guards against damage, the structure check against crafted content)."""
    shutil.copytree(ck, tmp_path / "ck")
    f = tmp_path / "ck" / "run.safetensors"
    head, state = ckpt.loads(f.read_bytes(), "run", None)
    edit(state)
    f.write_bytes(ckpt.dumps(state, {k: v for k, v in head.items() if k != "state"}))
    return tmp_path / "ck"


@pytest.mark.parametrize("name,edit", [
    ("theta shape", lambda s: s["run"].__setitem__("theta", torch.zeros(3, dtype=torch.float64))),
    ("missing key", lambda s: s["run"].pop("gen")),
    ("number for tensor", lambda s: s["run"]["chains"].__setitem__("x", 1.0)),
    ("string for number", lambda s: s["run"].__setitem__("k", "ten")),
    ("chains of other size", lambda s: s["run"]["chains"].__setitem__("work", torch.zeros(7, dtype=torch.float64))),
    ("bad generator state", lambda s: s["run"].__setitem__("gen", torch.zeros(3, dtype=torch.uint8))),
])
def test_crafted_state_with_valid_hash_is_refused(interrupted, tmp_path, name, edit):
    ck = _recrafted(interrupted[0], tmp_path, edit)
    with pytest.raises(InputError, match="checkpoint state"):
        _resume(ck)


def test_save_refuses_objects_naming_the_key(tmp_path):
    """'Checkpoint state, not objects': a non-data value is refused at save time with its key path."""
    with pytest.raises(InputError, match=r"state\.run\.pre\.energy .*function"):
        ckpt.dumps({"run": {"pre": {"energy": lambda x: x}}}, {"format": 2})


def test_roundtrip_of_plain_data_is_exact():
    """Sanity check: dumps/loads return equal values and types (tensors, arrays, numpy scalars,
    tuples, non-string keys, NaN, -0.0, big ints, History)."""
    import numpy as np

    state = {"a": torch.arange(5, dtype=torch.float32), "b": np.linspace(0, 1, 4), "c": np.float64(2.5),
             "d": (1, "x", None), "e": {3: [1.0, float("nan")]}, "f": -0.0, "g": 2**70, "h": True,
             "i": md.History(("t", "w"), np.ones((2, 2))), "j": torch.Generator().manual_seed(3).get_state(),
             "k": torch.zeros(0, 3, dtype=torch.float64)}
    head, back = ckpt.loads(ckpt.dumps(state, {"format": ckpt.FORMAT, "version": md.__version__}), "x", None)
    assert torch.equal(back["a"], state["a"]) and back["a"].dtype == torch.float32
    assert isinstance(back["b"], np.ndarray) and np.array_equal(back["b"], state["b"])
    assert type(back["c"]) is np.float64 and back["c"] == 2.5
    assert back["d"] == (1, "x", None) and back["e"][3][0] == 1.0 and back["e"][3][1] != back["e"][3][1]
    assert str(back["f"]) == "-0.0" and back["g"] == 2**70 and back["h"] is True
    assert back["i"].columns == ("t", "w") and np.array_equal(back["i"].values, np.ones((2, 2)))
    assert torch.equal(back["j"], state["j"]) and back["k"].shape == (0, 3)


def test_checkpoint_cost_is_linear_in_replicas(monkeypatch, tmp_path):
    """Class 8: the bytes written per replica end do not grow with the number of finished replicas
    (before, every replica end rewrote all earlier summaries: quadratic). 3,000 replicas through
    ``Writer.save`` with a real summary; the last save writes as many bytes as the second."""
    energy, data = md.HarmonicTrap(0.5), md.data.Gaussian(1.0, 0.5)
    calls = []
    with pytest.raises(md.Interrupted):
        md.train(energy, data, **{**_kw(), "n_replicas": 3}, checkpoint=tmp_path / "one",
                 stop=lambda: calls.append(1) or len(calls) == 70)
    summary = ckpt.load(tmp_path / "one", None)["completed"][1]   # a non-history replica's summary
    written = []
    real = ckpt.atomic_write_bytes
    monkeypatch.setattr(ckpt, "atomic_write_bytes", lambda p, d: (written.append(len(d)), real(p, d)))
    w = ckpt.Writer(tmp_path / "many", "f" * 64, fresh=True)
    completed, per_save = [], []
    for i in range(3000):
        completed.append(summary)
        n0 = sum(written)
        w.save({"completed": completed, "run": None, "sampler": {}})
        per_save.append(sum(written) - n0)
    assert len(written) == 3000
    assert max(per_save) <= per_save[1] + 16   # the index in the header grows by a digit at most
    assert len(ckpt.load(tmp_path / "many", "f" * 64)["completed"]) == 3000
