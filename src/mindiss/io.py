"""Atomic file output: write to a temporary file in the same folder, then rename.

A temporary file is named ``.NAME.XXXXXXXX.tmp`` beside its target. A process killed between
writing and renaming (SIGKILL cannot be caught) leaves one behind; ``remove_stale_tmp`` removes
them, and the run directory calls it under its lock when a run starts or resumes.
An operating-system error (read-only folder, full disk, a directory in the way) is raised as
``OutputError`` naming the path and the OS's reason; the target is then unchanged.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

from .errors import OutputError

_TMP_RE = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def os_reason(exc: OSError) -> str:
    """The OS's words for ``exc`` ("Permission denied", "No space left on device", ...)."""
    return exc.strerror or str(exc) or type(exc).__name__


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one, never a part."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"cannot write {str(path)!r}: it is a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OutputError(f"cannot write {str(path)!r}: {os_reason(exc)}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, OutputError):
            raise OutputError(f"cannot write {str(path)!r}: {os_reason(exc)}") from None
        raise


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def remove_stale_tmp(folder) -> list[str]:
    """Remove the temporary files that interrupted atomic writes left in ``folder`` (not recursive);
    returns their names. Call it only while no other process writes there (under the run's lock)."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        p = Path(folder) / name
        if _TMP_RE.match(name) and p.is_file() and not p.is_symlink():
            try:
                p.unlink()
                removed.append(name)
            except OSError:
                pass
    return removed
