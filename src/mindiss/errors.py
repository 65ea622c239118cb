"""Exceptions with messages that name the problem (the CLI maps InputError and OutputError to exit code 2,
DivergenceError to 3)."""
from __future__ import annotations


class MindissError(Exception):
    """Base class of every error mindiss raises on purpose."""


class InputError(MindissError, ValueError):
    """Bad input: a value, shape, key or combination that mindiss refuses before any work."""


class OutputError(MindissError, OSError):
    """An output could not be written (read-only folder, full disk, a directory in the way, a lock
    held by another run): the message names the path and the operating system's reason. The CLI
    maps it to exit code 2; nothing partial is left (writes are atomic)."""


class DivergenceError(MindissError, FloatingPointError):
    """A run produced a non-finite or out-of-domain quantity at a given update."""

    def __init__(self, update: int, quantity: str, cause: str):
        self.update, self.quantity, self.cause = update, quantity, cause
        super().__init__(f"diverged at update {update}: {quantity}. Likely cause: {cause}")


def require_positive(name: str, value) -> float:
    """Return float(value) or raise InputError naming `name` if it is not a finite number > 0."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a positive number, got {value!r}") from None
    if not (v > 0.0) or v == float("inf"):
        raise InputError(f"{name} must be positive and finite, got {value!r}")
    return v


def require_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int,)) and not (
        hasattr(value, "__index__")
    ):
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    v = int(value)
    if v <= 0:
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    return v
