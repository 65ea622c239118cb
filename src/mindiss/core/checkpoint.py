"""Checkpoints of a training run: everything a resumed run needs to finish bit-identically, in a
format whose loading cannot run code.

A checkpoint is a folder::

    CK/run.safetensors              the replica in progress (theta, chains, ledgers, history so far,
                                    generator states, preconditioner state, sampler counters);
                                    rewritten at every checkpoint
    CK/replica-000000.safetensors   the summary of each finished replica, written once when it ends

Every file is a safetensors file (tensors as raw bytes; its header is JSON) whose metadata holds the
rest of the state as JSON (numbers, strings, lists, None), the format number, the mindiss version,
a fingerprint of the run's inputs and a sha256 of the whole file. Loading parses JSON and raw
tensor bytes only: no pickle, no object is constructed from the file. The integrity hash is checked
first, then the format, version and fingerprint, before any tensor is built. ``save`` refuses, with
the key's path, anything that is not a tensor, an array or plain data ("checkpoint state, not
objects"). Files are written atomically (``io.atomic_write_bytes``); a finished replica's file is
never rewritten, so the cost of the checkpoints of a run is linear in its number of replicas.

The older format, one pickle file (``checkpoint.pt``), is never opened: a pickle can run code.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..errors import InputError
from ..io import atomic_write_bytes, remove_stale_tmp

FORMAT = 2
RUN_FILE = "run.safetensors"
_REPLICA_RE = re.compile(r"^replica-(\d{6})\.safetensors$")
#: the digest field in a file's metadata: written as zeros, hashed, then replaced by the digest
_HASH_KEY = "sha256"
_ZERO = "0" * 64
#: a safetensors header larger than this is not ours (ours are a few kB plus the JSON state)
MAX_HEADER = 1 << 30


def replica_file(i: int) -> str:
    return f"replica-{i:06d}.safetensors"


def fingerprint(*parts) -> str:
    """sha256 over the run's inputs (arrays by their bytes, everything else by repr)."""
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, torch.Tensor):
            p = p.detach().cpu().numpy()
        if isinstance(p, np.ndarray):
            h.update(str(p.dtype).encode() + str(p.shape).encode() + np.ascontiguousarray(p).tobytes())
        else:
            h.update(repr(p).encode())
        h.update(b"|")
    return h.hexdigest()


# ------------------------------------------------------------------ state <-> (JSON, tensors)

def _encode(obj, where: str, tensors: dict):
    """Plain-data JSON for ``obj``; tensors and arrays go to ``tensors`` under generated keys.

    Allowed: None, bool, int, float, str, list, tuple, dict, numpy scalars, torch tensors, numpy
    arrays of numbers and ``results.History``. Anything else raises InputError naming ``where``.
    """
    from .results import History

    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, np.generic):
        if obj.dtype.kind not in "biuf":
            raise InputError(f"checkpoint state {where} is a numpy {obj.dtype} scalar: only numbers can be saved")
        return {"$t": "np", "dtype": obj.dtype.str, "v": obj.item()}
    if isinstance(obj, int):
        return obj if type(obj) is int else int(obj)
    if isinstance(obj, float):
        return obj if type(obj) is float else float(obj)
    if isinstance(obj, torch.Tensor):
        if obj.is_complex() or obj.layout != torch.strided or obj.is_quantized:
            raise InputError(f"checkpoint state {where} is a {obj.dtype} {obj.layout} tensor: not saveable")
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().to("cpu").contiguous().clone()
        return {"$t": "tensor", "k": key}
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "biuf" or obj.dtype.byteorder == ">":
            raise InputError(f"checkpoint state {where} is an array of dtype {obj.dtype}: only native "
                             "numeric arrays can be saved")
        key = f"t{len(tensors)}"
        tensors[key] = torch.from_numpy(np.array(obj, copy=True, order="C"))
        return {"$t": "ndarray", "k": key}
    if isinstance(obj, History):
        return {"$t": "History", "columns": list(obj.columns),
                "values": _encode(np.asarray(obj.values), f"{where}.values", tensors)}
    if isinstance(obj, list):
        return [_encode(v, f"{where}[{i}]", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, tuple):
        return {"$t": "tuple", "items": [_encode(v, f"{where}[{i}]", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, dict):
        if all(type(k) is str and not k.startswith("$") for k in obj):
            return {k: _encode(v, f"{where}.{k}", tensors) for k, v in obj.items()}
        return {"$t": "dict", "items": [[_encode(k, f"{where} (a key)", tensors), _encode(v, f"{where}[{k!r}]", tensors)]
                                        for k, v in obj.items()]}
    raise InputError(f"checkpoint state {where} is a {type(obj).__module__}.{type(obj).__qualname__}: a "
                     "checkpoint holds tensors, arrays and plain data only (numbers, strings, lists, dicts, None)")


def _decode(obj, tensors: dict, where: str):
    """The inverse of ``_encode`` (builds only plain data, tensors, arrays and History)."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, list):
        return [_decode(v, tensors, where) for v in obj]
    if not isinstance(obj, dict):
        raise InputError(f"checkpoint {where} holds a malformed value")
    tag = obj.get("$t")
    if tag is None:
        return {k: _decode(v, tensors, where) for k, v in obj.items()}
    if tag in ("tensor", "ndarray"):
        key = obj.get("k")
        if key not in tensors:
            raise InputError(f"checkpoint {where} refers to a tensor {key!r} it does not hold")
        t = tensors[key]
        return t if tag == "tensor" else t.numpy()
    if tag == "np":
        try:
            return np.dtype(str(obj["dtype"])).type(obj["v"])
        except (TypeError, ValueError, KeyError):
            raise InputError(f"checkpoint {where} holds a malformed number") from None
    if tag == "tuple":
        return tuple(_decode(v, tensors, where) for v in obj.get("items", []))
    if tag == "dict":
        out = {}
        for pair in obj.get("items", []):
            if not (isinstance(pair, list) and len(pair) == 2):
                raise InputError(f"checkpoint {where} holds a malformed mapping")
            k = _decode(pair[0], tensors, where)
            try:
                out[k] = _decode(pair[1], tensors, where)
            except TypeError:
                raise InputError(f"checkpoint {where} holds a malformed mapping key") from None
        return out
    if tag == "History":
        from .results import History

        values = _decode(obj.get("values"), tensors, where)
        if not isinstance(values, np.ndarray) or values.ndim != 2:
            raise InputError(f"checkpoint {where} holds a malformed history")
        return History(tuple(obj.get("columns", [])), values)
    raise InputError(f"checkpoint {where} holds an unknown value tag {tag!r}")


def dumps(state, header: dict) -> bytes:
    """One checkpoint file: ``state`` (plain data + tensors) and ``header`` (plain strings/numbers)."""
    from safetensors.torch import save as _st_save

    tensors: dict = {}
    body = _encode(state, "state", tensors)
    meta = {_HASH_KEY: _ZERO, "mindiss": json.dumps({**header, "state": body}, allow_nan=True)}
    raw = _st_save(tensors, metadata=meta)
    needle = f'"{_HASH_KEY}":"{_ZERO}"'.encode()
    n = int.from_bytes(raw[:8], "little")
    assert raw.count(needle, 8, 8 + n) == 1, "the digest field must occur once in the header"
    digest = hashlib.sha256(raw).hexdigest().encode()
    return raw.replace(needle, f'"{_HASH_KEY}":"'.encode() + digest + b'"', 1)


def _header(raw: bytes, name: str) -> tuple[dict, int]:
    """(metadata, header length) of a safetensors file, checked for shape only."""
    if len(raw) < 8:
        raise InputError(f"checkpoint file {name} is truncated ({len(raw)} bytes)")
    n = int.from_bytes(raw[:8], "little")
    if n > min(MAX_HEADER, len(raw) - 8) or n < 2:
        raise InputError(f"checkpoint file {name} is not a safetensors file (header length {n} does not fit "
                         f"its {len(raw)} bytes)")
    try:
        head = json.loads(raw[8:8 + n])
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise InputError(f"checkpoint file {name} has a damaged header (not JSON)") from None
    meta = head.get("__metadata__") if isinstance(head, dict) else None
    if not isinstance(meta, dict) or not isinstance(meta.get("mindiss"), str):
        raise InputError(f"checkpoint file {name} is not a mindiss checkpoint (no mindiss metadata)")
    return meta, n


def loads(raw: bytes, name: str, run_fingerprint: str | None) -> tuple[dict, object]:
    """(header, state) of one checkpoint file; refuses damaged, foreign, other-version or
    other-configuration files before building any tensor."""
    meta, n = _header(raw, name)
    digest = meta.get(_HASH_KEY)
    if not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
        raise InputError(f"checkpoint file {name} has no integrity hash")
    needle = f'"{_HASH_KEY}":"{digest}"'.encode()
    if raw.count(needle, 8, 8 + n) != 1:
        raise InputError(f"checkpoint file {name} is damaged (its integrity hash does not match its bytes)")
    zeroed = raw.replace(needle, f'"{_HASH_KEY}":"{_ZERO}"'.encode(), 1)
    if hashlib.sha256(zeroed).hexdigest() != digest:
        raise InputError(f"checkpoint file {name} is damaged (its integrity hash does not match its bytes): "
                         "it is not loaded")
    try:
        header = json.loads(meta["mindiss"])
    except (ValueError, RecursionError):
        raise InputError(f"checkpoint file {name} has damaged metadata") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise InputError(f"checkpoint file {name} is not a mindiss checkpoint of format {FORMAT}")
    if header.get("version") != __version__:
        raise InputError(f"checkpoint file {name} was written by mindiss {header.get('version')}, this is "
                         f"{__version__}: start the run afresh")
    if run_fingerprint is not None and header.get("fingerprint") != run_fingerprint:
        raise InputError(f"checkpoint file {name} belongs to a different configuration (inputs changed "
                         "since it was written): start afresh or restore the original config")
    from safetensors import SafetensorError
    from safetensors.torch import load as _st_load

    try:
        tensors = _st_load(raw)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise InputError(f"checkpoint file {name} has damaged tensors: {exc}") from None
    return header, _decode(header.get("state"), tensors, name)


# ------------------------------------------------------------------ the checkpoint folder

def _refuse_legacy(p: Path) -> None:
    if p.is_file() or (p.exists() and not p.is_dir()):
        raise InputError(f"{str(p)!r} is a file, not a mindiss checkpoint folder. Checkpoints of older mindiss "
                         "versions were pickles, which can run code when loaded, so mindiss never opens them: "
                         "start the run afresh (mindiss train ... --overwrite)")


def exists(path) -> bool:
    """Whether ``path`` holds a checkpoint (new format) to resume from."""
    p = Path(path)
    return p.is_dir() and ((p / RUN_FILE).is_file() or any(_REPLICA_RE.match(n) for n in os.listdir(p)))


def describe(path) -> str | None:
    """A one-line description of what the checkpoint at ``path`` holds, or None if there is none."""
    p = Path(path)
    try:
        if not exists(p):
            return None
        done = sum(1 for n in os.listdir(p) if _REPLICA_RE.match(n))
        if (p / RUN_FILE).is_file():
            meta, _ = _header((p / RUN_FILE).read_bytes(), RUN_FILE)
            head = json.loads(meta["mindiss"])
            if head.get("n_completed") == done and head.get("update") is not None:
                return f"replica {head['replica']} at update {head['update']}, after {done} finished replica(s)"
        return f"{done} finished replica(s)"
    except (OSError, InputError, ValueError, KeyError, TypeError):
        return "a checkpoint that cannot be read"


def load(path, run_fingerprint: str | None) -> dict:
    """{"completed": [summaries], "run": state of the replica in progress or None, "sampler": counters}
    (``run_fingerprint`` None: any configuration, for inspection)."""
    p = Path(path)
    _refuse_legacy(p)
    if not exists(p):
        raise InputError(f"no checkpoint to resume from at {str(p)!r}")
    try:
        names = os.listdir(p)
    except OSError as exc:
        raise InputError(f"cannot read the checkpoint folder {str(p)!r}: {exc.strerror or exc}") from None
    indices = sorted(int(m.group(1)) for m in map(_REPLICA_RE.match, names) if m)
    if indices != list(range(len(indices))):
        missing = sorted(set(range(max(indices) + 1)) - set(indices))
        raise InputError(f"checkpoint {str(p)!r} is incomplete: {replica_file(missing[0])} is missing")

    def read(name):
        try:
            raw = (p / name).read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read checkpoint file {str(p / name)!r}: {exc.strerror or exc}") from None
        return loads(raw, str(p / name), run_fingerprint)

    completed, sampler = [], {}
    for i in indices:
        head, state = read(replica_file(i))
        if head.get("kind") != "replica" or head.get("index") != i or not isinstance(state, dict):
            raise InputError(f"checkpoint file {replica_file(i)} in {str(p)!r} does not hold replica {i}")
        completed.append(state["summary"])
        sampler = state["sampler"]
    run = None
    if (p / RUN_FILE).is_file():
        head, state = read(RUN_FILE)
        if head.get("kind") != "run" or not isinstance(state, dict):
            raise InputError(f"checkpoint file {RUN_FILE} in {str(p)!r} is not a run state")
        n = head.get("n_completed")
        if n == len(completed):
            run, sampler = state["run"], state["sampler"]
        elif not isinstance(n, int) or n > len(completed):
            raise InputError(f"checkpoint {str(p)!r} is incomplete: {RUN_FILE} follows {n} finished replicas, "
                             f"the folder holds {len(completed)}")
        # n < len(completed): the replica in run.safetensors finished after it was written (stale)
    if run is not None and run.get("replica") != len(completed):
        raise InputError(f"checkpoint {str(p)!r} is inconsistent: its run state is for replica "
                         f"{run.get('replica')} after {len(completed)} finished replicas")
    return {"completed": completed, "run": run, "sampler": sampler}


class Writer:
    """Writes the checkpoint folder of one run: each finished replica once, the run state each time.

    ``fresh``: a new run; the first save discards any earlier checkpoint in the folder.
    ``n_done``: replicas already on disk (a resumed run)."""

    def __init__(self, path, run_fingerprint: str, *, fresh: bool, n_done: int = 0):
        self.path, self.fp, self.fresh, self.n_written = Path(path), run_fingerprint, fresh, n_done
        _refuse_legacy(self.path)

    def _header(self, kind: str, **extra) -> dict:
        return {"format": FORMAT, "version": __version__, "fingerprint": self.fp, "kind": kind, **extra}

    def _start(self) -> None:
        p = self.path
        _refuse_legacy(p)
        p.mkdir(parents=True, exist_ok=True)
        if self.fresh:
            for name in os.listdir(p):
                if name == RUN_FILE or _REPLICA_RE.match(name):
                    (p / name).unlink()
        remove_stale_tmp(p)
        self.fresh = False

    def save(self, payload: dict) -> None:
        """``payload``: {"completed": [summaries], "run": state dict or None, "sampler": counters}."""
        if self.fresh or not self.path.is_dir():
            self._start()
        completed, sampler = payload["completed"], payload["sampler"]
        for i in range(self.n_written, len(completed)):
            data = dumps({"summary": completed[i], "sampler": sampler}, self._header("replica", index=i))
            atomic_write_bytes(self.path / replica_file(i), data)
            self.n_written = i + 1
        run = payload["run"]
        if run is not None:
            head = self._header("run", n_completed=len(completed), replica=run.get("replica"), update=run.get("k"))
            atomic_write_bytes(self.path / RUN_FILE, dumps({"run": run, "sampler": sampler}, head))


def save(path, payload: dict, run_fingerprint: str) -> None:
    """Write ``payload`` as a complete checkpoint folder at ``path`` (replacing any earlier one)."""
    Writer(path, run_fingerprint, fresh=True).save(payload)


def _check_like(value, template, where: str) -> None:
    """Refuse a loaded state whose structure differs from the fresh state ``template`` of this run:
    dicts with other keys, a tensor/array of another dtype or number of dimensions, a number
    where a tensor belongs. (None in the template accepts anything: state that starts empty.)"""
    if template is None:
        return
    if isinstance(template, (torch.Tensor, np.ndarray)):
        if type(value) is not type(template) or value.dtype != template.dtype or value.ndim != template.ndim \
                or (value.ndim > 1 and value.shape[1:] != template.shape[1:]):
            raise InputError(f"checkpoint state {where} does not fit this run (expected a {template.dtype} "
                             f"{type(template).__name__} of shape {tuple(template.shape)})")
        if isinstance(template, torch.Tensor) and value.shape != template.shape:
            raise InputError(f"checkpoint state {where} has shape {tuple(value.shape)}, this run needs "
                             f"{tuple(template.shape)}")
        return
    if isinstance(template, dict):
        # state created lazily (a preconditioner's running sums) may add private keys
        if not isinstance(value, dict) or not set(template) <= set(value) \
                or any(not (isinstance(k, str) and k.startswith("_")) for k in set(value) - set(template)):
            raise InputError(f"checkpoint state {where} does not fit this run (expected the keys "
                             f"{sorted(map(str, template))})")
        for k in template:
            _check_like(value[k], template[k], f"{where}.{k}")
        return
    if isinstance(template, bool) or not isinstance(template, (int, float)):
        if isinstance(template, (list, tuple)) and not isinstance(value, (list, tuple)):
            raise InputError(f"checkpoint state {where} does not fit this run (expected a list)")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"checkpoint state {where} does not fit this run (expected a number, got "
                         f"{type(value).__name__})")


def restore(obj, state, where: str) -> None:
    """``obj.load_state_dict(state)`` after checking ``state`` against ``obj``'s own fresh state;
    a state that does not fit (a damaged or crafted checkpoint) is an InputError, never a crash."""
    _check_like(state, obj.state_dict(), where)
    try:
        obj.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as exc:
        raise InputError(f"checkpoint state {where} does not fit this run: {exc}") from None
