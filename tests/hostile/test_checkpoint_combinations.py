"""Class 2 of issue 16: every run the config accepts can be checkpointed and resumed.

For each energy x schedule x learning-rate matrix that ``config.resolve`` accepts (the
preconditioner key only changes the baselines; natural_gradient runs each Fisher kind), a tiny run
is interrupted in its second replica (after mid-run checkpoints in the first), resumed, and its
result compared with an uninterrupted run of the same config: equal JSON, byte for byte. The
reference is the uninterrupted run, computed independently of any checkpoint.
"""
import itertools
import json

import pytest

import mindiss as md
from mindiss.core import checkpoint as ckpt
from mindiss.app import config as C
from mindiss.errors import InputError

BASELINES = ("constant", "linear", "cosine", "exponential", "step")


def _combos():
    out = []
    for e in C.ENERGY_KINDS:
        for s in C.SCHEDULE_KINDS:
            variants = ([("preconditioner", p) for p in C.PRECONDITIONERS] if s in BASELINES else
                        [("fisher", f) for f in ("full", "diag", "lowrank", "exact")] if s == "natural_gradient"
                        else [(None, None)])
            for key, val in variants:
                raw = _raw(e, s, key, val)
                try:
                    C.build(C.resolve(raw))
                except InputError:
                    continue
                out.append((e, s, key, val))
    return out


def _raw(e, s, key, val):
    raw = {"energy": {"kind": e}, "schedule": {"kind": s},
           "dynamics": {"n_steps": 4, "n_chains": 24, "n_replicas": 2, "seed": 5}}
    if key is not None:
        raw["schedule"][key] = val
    if s in BASELINES:
        raw["schedule"]["scale"] = 0.05    # small steps: the tiny runs must finish, not diverge
    if e in ("harmonic", "gaussian"):
        raw["data"] = {"mean": 0.5}
    if e in ("double_well", "quartic"):
        raw["data"] = {"kind": "model", "n_samples": 64}
        raw["dynamics"]["sampler"] = "mala"   # the exact OU move is for quadratic energies only
    if e in ("mlp", "rbm"):
        raw["data"] = {"kind": "moons", "n": 64}
        raw["energy"]["hidden"] = [3]
        if e == "mlp":
            raw["output"] = {"grid_n": 33}
    return raw


COMBOS = _combos()
#: the default suite: the double well (the reported failure) with each learning-rate matrix, and
#: every energy with a scalar rate, a Fisher-diag matrix, natural_gradient and friction
#: (the full matrix runs with -m slow)
QUICK = [c for c in COMBOS if (c[0] == "double_well" and c[1] == "constant")
         or (c[1] == "constant" and c[3] in ("none", "fisher-diag"))
         or (c[1] in ("natural_gradient", "friction") and c[3] in (None, "diag"))]


def _outcome(fn):
    """("ok", the result as JSON) or ("diverged", the message): a diverging run must diverge the same way."""
    try:
        return "ok", json.dumps(fn().to_dict(), sort_keys=True)
    except md.DivergenceError as exc:
        return "diverged", str(exc)


def _resume_matches(tmp_path, e, s, key, val):
    kw = C.build(C.resolve(_raw(e, s, key, val)))
    kw.pop("checkpoint_every"), kw.pop("notes")
    try:
        ref = _outcome(lambda: md.train(**kw))
    except InputError as exc:   # refused before any update, with a message: nothing to checkpoint
        pytest.skip(f"train refuses this combination: {exc}")
    ck = tmp_path / "ck"
    calls = []
    # stop during replica 1, after checkpoints in replica 0 (a diverging run: at its third update)
    stop_at = json.loads(ref[1])["n_updates"] + 3 if ref[0] == "ok" else 3
    try:
        md.train(**kw, checkpoint=ck, checkpoint_every=2, stop=lambda: calls.append(1) or len(calls) == stop_at)
    except md.Interrupted:
        pass
    except md.DivergenceError as exc:   # diverged before the stop: as the uninterrupted run did
        assert ref == ("diverged", str(exc))
        return
    assert ckpt.load(ck, None)["run"]["replica"] == (1 if ref[0] == "ok" else 0)
    assert _outcome(lambda: md.train(**kw, checkpoint=ck, resume=True)) == ref


@pytest.mark.parametrize("e,s,key,val", QUICK, ids=["-".join(str(a) for a in c if a) for c in QUICK])
def test_checkpoint_resume_quick(tmp_path, e, s, key, val, one_thread):
    _resume_matches(tmp_path, e, s, key, val)


@pytest.mark.slow
@pytest.mark.parametrize("e,s,key,val", [c for c in COMBOS if c not in QUICK],
                         ids=["-".join(str(a) for a in c if a) for c in COMBOS if c not in QUICK])
def test_checkpoint_resume_every_combination(tmp_path, e, s, key, val, one_thread):
    _resume_matches(tmp_path, e, s, key, val)


def test_the_matrix_is_complete():
    """Sanity check (by construction): every energy kind appears, and the reported failure
    (double well + Fisher diag) is in the default suite."""
    assert {c[0] for c in COMBOS} == set(C.ENERGY_KINDS)
    assert ("double_well", "constant", "preconditioner", "fisher-diag") in QUICK
    assert ("double_well", "natural_gradient", "fisher", "diag") in QUICK
