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


def load(path) -> torch.Tensor:
    """Samples from a .npy or .csv file (rows = samples, columns = dimensions)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"data file {str(p)!r} does not exist")
    try:
        if p.suffix == ".npy":
            arr = np.load(p, allow_pickle=False)
        elif p.suffix == ".csv":
            arr = np.loadtxt(p, delimiter=",", ndmin=2)
        else:
            raise InputError(f"data file {str(p)!r}: use a .npy or .csv file")
    except InputError:
        raise
    except Exception as exc:  # unreadable or malformed file
        raise InputError(f"cannot read data file {str(p)!r}: {exc}") from None
    return torch.as_tensor(np.asarray(arr, dtype=float))


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
        try:
            x = torch.as_tensor(np.asarray(data, dtype=float) if not torch.is_tensor(data) else data)
        except (TypeError, ValueError):
            raise InputError(f"data must be samples, a file path or md.data.Gaussian, got {type(data).__name__}") from None
        x = x.to(torch.float64)
        if x.ndim == 1 and dim == 1:
            x = x[:, None]
        if x.ndim != 2 or x.shape[0] == 0:
            raise InputError(f"data must have shape (n_samples, {dim}), got {tuple(x.shape)}")
        if not bool(torch.isfinite(x).all()):
            bad = int((~torch.isfinite(x)).any(1).nonzero()[0])
            raise InputError(f"data contains NaN or infinite values (first at row {bad})")
        mean = x.mean(0)
        ds = Dataset(mean, ((x - mean) ** 2).mean(0), x, False)
    if ds.dim != dim:
        raise InputError(f"data has dimension {ds.dim} but the energy has dimension {dim}")
    if ds.samples is None:
        return Dataset(ds.mean.to(device), ds.variance.to(device), None, ds.exact)
    return Dataset(ds.mean.to(device), ds.variance.to(device), ds.samples.to(device), ds.exact)
