"""Checkpoints of a training run: everything a resumed run needs to finish bit-identically.

A checkpoint holds theta, the chains and their ledgers, the history so far, the position in the
schedule, every generator state and the summaries of finished replicas, tagged with the mindiss
version and a fingerprint of the run's inputs. Files are written atomically; a checkpoint from
another configuration or version is refused. Checkpoints are pickles: load only your own.
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..errors import InputError
from ..io import atomic_write_bytes

FORMAT = 1


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


def save(path, payload: dict, run_fingerprint: str) -> None:
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "version": __version__, "fingerprint": run_fingerprint, **payload}, buf)
    atomic_write_bytes(path, buf.getvalue())


def load(path, run_fingerprint: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"no checkpoint to resume from at {str(p)!r}")
    try:
        ck = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise InputError(f"checkpoint {str(p)!r} is unreadable: {exc}") from None
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise InputError(f"checkpoint {str(p)!r} is not a mindiss checkpoint of format {FORMAT}")
    if ck.get("version") != __version__:
        raise InputError(f"checkpoint {str(p)!r} was written by mindiss {ck.get('version')}, this is "
                         f"{__version__}: start the run afresh")
    if ck.get("fingerprint") != run_fingerprint:
        raise InputError(f"checkpoint {str(p)!r} belongs to a different configuration (inputs changed "
                         "since it was written): start afresh or restore the original config")
    return ck
