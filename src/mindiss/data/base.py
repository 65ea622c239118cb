"""Data for the positive phase: samples (tensor, array, .npy/.csv file) or a Gaussian with exact moments.

Every source is normalised to a ``Dataset`` with float64 ``mean`` and ``variance`` per dimension
(exact for ``Gaussian``, empirical 1/n moments for samples) and, for samples, the ``samples``.
For quadratic energies d_theta E is at most quadratic in x, so these moments give the data term
of g_hat exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError


@dataclass(frozen=True)
class Gaussian:
    """N(mean, diag(variance)): a data distribution with exact moments."""

    mean: tuple
    variance: tuple

    def __init__(self, mean=0.0, variance=1.0, dim: int | None = None):
        m = np.atleast_1d(np.asarray(mean, dtype=float))
        v = np.atleast_1d(np.asarray(variance, dtype=float))
        if dim is not None:
            m, v = np.broadcast_to(m, (dim,)), np.broadcast_to(v, (dim,))
        try:
            m, v = np.broadcast_arrays(m, v)
        except ValueError:
            raise InputError(f"data mean {m.tolist()} and variance {v.tolist()} have different lengths") from None
        if m.ndim != 1 or not np.all(np.isfinite(m)):
            raise InputError(f"data mean must be a finite vector, got {mean!r}")
        if not np.all(np.isfinite(v)) or np.any(v <= 0):
            raise InputError(f"data variance must be positive and finite, got {variance!r}")
        object.__setattr__(self, "mean", tuple(float(a) for a in m))
        object.__setattr__(self, "variance", tuple(float(a) for a in v))

    @property
    def dim(self) -> int:
        return len(self.mean)

    def sample(self, n: int, *, gen: torch.Generator) -> torch.Tensor:
        z = torch.empty((n, self.dim), dtype=torch.float64).normal_(generator=gen)
        return torch.tensor(self.mean) + torch.tensor(self.variance).sqrt() * z


@dataclass(frozen=True)
class Dataset:
    """Normalised data: per-dimension float64 moments and, when given as samples, the samples."""

    mean: torch.Tensor
    variance: torch.Tensor
    samples: torch.Tensor | None
    exact: bool  # moments are exact (a distribution), not empirical

    @property
    def dim(self) -> int:
        return self.mean.numel()


def _check_path(p: Path) -> None:
    """InputError unless ``p`` is a readable regular file, naming what it is instead."""
    import errno
    import stat

    try:
        st = p.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(f"data file {str(p)!r} is a symbolic-link loop") from None
        if exc.errno == errno.ENOENT:
            dangling = p.is_symlink()
            raise InputError(f"data file {str(p)!r} " + ("is a dangling symbolic link" if dangling
                                                          else "does not exist")) from None
        raise InputError(f"cannot read data file {str(p)!r}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"data file {str(p)!r} is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode)
                else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "not a regular file")
        raise InputError(f"data file {str(p)!r} is {kind}, not a regular file")


def _check_dtype(dtype, where: str) -> None:
    """Samples are real numbers: refuse complex, structured, string, object and other dtypes."""
    if dtype.names is not None or dtype.kind == "V":
        raise InputError(f"{where} has a structured dtype {dtype}: give a plain (n_samples, d) array of numbers")
    if dtype.kind == "c":
        raise InputError(f"{where} has complex values (dtype {dtype}): samples must be real numbers")
    if dtype.kind not in "biuf":
        raise InputError(f"{where} has dtype {dtype}, not numbers: samples must be real numbers")


def load(path) -> torch.Tensor:
    """Samples from a .npy or .csv file (rows = samples, columns = dimensions)."""
    p = Path(path)
    if str(path).strip() == "":
        raise InputError("data file path is empty")
    if p.suffix not in (".npy", ".csv"):
        raise InputError(f"data file {str(p)!r}: use a .npy or .csv file")
    _check_path(p)
    try:
        if p.suffix == ".npy":
            with open(p, "rb") as fh:
                if fh.read(6) != b"\x93NUMPY":
                    raise InputError(f"data file {str(p)!r} is not a NumPy .npy file (no .npy header)")
            try:
                arr = np.load(p, allow_pickle=False)
            except ValueError as exc:
                if "pickle" in str(exc):
                    raise InputError(f"data file {str(p)!r} holds Python objects (pickled data), which mindiss "
                                     "never loads: save the samples as a numeric array") from None
                raise
        else:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")   # an empty file is refused below, by its shape
                arr = np.loadtxt(p, delimiter=",", ndmin=2)
    except InputError:
        raise
    except Exception as exc:  # unreadable or malformed file
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"cannot read data file {str(p)!r}: {reason[:300]}") from None
    if not isinstance(arr, np.ndarray):
        raise InputError(f"data file {str(p)!r} does not hold one array")
    _check_dtype(arr.dtype, f"data file {str(p)!r}")
    return torch.as_tensor(np.asarray(arr, dtype=float))


def _check_magnitude(x: torch.Tensor) -> None:
    """InputError if the data's moments overflow float64 (finite data such as 1e308 whose square does not)."""
    m2 = (x * x).mean(0)
    if not bool(torch.isfinite(m2).all()) or not bool(torch.isfinite(x.mean(0)).all()):
        big = float(x.abs().max())
        raise InputError(f"data values are too large for float64 arithmetic (max |x| = {big:.3g}: the mean of x^2 "
                         "overflows); rescale the data")


def as_dataset(data, dim: int, *, device="cpu") -> Dataset:
    """Validate ``data`` (Gaussian, Dataset, tensor/array of shape (n, d) or (n,), or a file path)."""
    if isinstance(data, Dataset):
        ds = data
    elif isinstance(data, Gaussian):
        ds = Dataset(torch.tensor(data.mean, dtype=torch.float64),
                     torch.tensor(data.variance, dtype=torch.float64), None, True)
    else:
        if isinstance(data, (str, Path)):
            data = load(data)
        if torch.is_tensor(data) and (data.is_complex() or not (data.dtype.is_floating_point or data.dtype in (
                torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64))):
            raise InputError(f"data must hold real numbers, got a tensor of dtype {data.dtype}")
        if isinstance(data, np.ndarray):
            _check_dtype(data.dtype, "data")
        try:
            x = torch.as_tensor(np.asarray(data, dtype=float) if not torch.is_tensor(data) else data)
        except (TypeError, ValueError):
            raise InputError(f"data must be samples, a file path or md.data.Gaussian, got {type(data).__name__}") from None
        x = x.detach().to(torch.float64)
        if x.ndim == 1 and dim == 1:
            x = x[:, None]
        if x.ndim != 2 or x.shape[0] == 0:
            raise InputError(f"data must have shape (n_samples, {dim}), got {tuple(x.shape)}")
        if not bool(torch.isfinite(x).all()):
            bad = int((~torch.isfinite(x)).any(1).nonzero()[0])
            raise InputError(f"data contains NaN or infinite values (first at row {bad})")
        _check_magnitude(x)
        mean = x.mean(0)
        ds = Dataset(mean, ((x - mean) ** 2).mean(0), x, False)
    if ds.dim != dim:
        raise InputError(f"data has dimension {ds.dim} but the energy has dimension {dim}")
    if ds.samples is None:
        return Dataset(ds.mean.to(device), ds.variance.to(device), None, ds.exact)
    return Dataset(ds.mean.to(device), ds.variance.to(device), ds.samples.to(device), ds.exact)
