"""Hostile data files (issue 16, class 9): each problem named, exit 2, never a silently wrong value.

The reference for an accepted file is NumPy's own reading of the array that was written."""
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mindiss.data.base import as_dataset, load
from mindiss.errors import InputError


def _cfg(tmp_path, path):
    p = tmp_path / "run.toml"
    p.write_text(f'[data]\nkind = "file"\npath = "{path}"\n[dynamics]\nn_steps = 5\nn_chains = 100\n'
                 "n_replicas = 2\n")
    return p


@pytest.mark.parametrize("name,make,expect", [
    ("complex.npy", lambda p: np.save(p, np.array([[1 + 2j], [3 - 1j]])), "complex values"),
    ("structured.npy", lambda p: np.save(p, np.zeros(3, dtype=[("a", "f8"), ("b", "i4")])), "structured dtype"),
    ("strings.npy", lambda p: np.save(p, np.array([["a"], ["b"]])), "not numbers"),
    ("objects.npy", lambda p: np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True), "pickled"),
    ("garbage.npy", lambda p: p.write_bytes(os.urandom(64)), "not a NumPy .npy file"),
    ("huge.npy", lambda p: np.save(p, np.full((4, 1), 1e308)), "too large"),
    ("dir.npy", lambda p: p.mkdir(), "is a directory"),
    ("fifo.npy", lambda p: os.mkfifo(p), "FIFO"),
    ("loop.npy", lambda p: p.symlink_to(p), "symbolic-link loop"),
    ("dangling.npy", lambda p: p.symlink_to(p.parent / "gone.npy"), "dangling symbolic link"),
    ("missing.npy", lambda p: None, "does not exist"),
    ("empty.csv", lambda p: p.write_text(""), "shape"),
    ("text.csv", lambda p: p.write_text("1,2\nx,y\n"), "cannot read"),
    ("nan.csv", lambda p: p.write_text("1.0\nnan\n"), "NaN"),
    ("wrongdim.csv", lambda p: p.write_text("1,2\n3,4\n"), "dimension 2"),
    ("data.txt", lambda p: p.write_text("1\n"), ".npy or .csv"),
])
def test_bad_data_file_exits_2_naming_the_problem(tmp_path, run_cli, name, make, expect):
    """Each through the CLI in-process (a FIFO is never opened: opening it would hang)."""
    p = tmp_path / name
    make(p)
    code, out, err = run_cli("train", _cfg(tmp_path, p), "--quiet", "--json")
    assert code == 2, err
    assert expect in err and name in err or expect in err
    assert len(err.strip().splitlines()) == 1 and out == ""


def test_complex_in_memory_data_is_refused():
    """Before: the imaginary part was dropped silently."""
    with pytest.raises(InputError, match="complex"):
        as_dataset(np.array([[1 + 1j], [2.0]]), 1)
    with pytest.raises(InputError, match="complex"):
        as_dataset(torch.tensor([[1 + 1j], [2.0 + 0j]]), 1)


def test_finite_but_huge_data_is_bad_input_not_divergence(tmp_path, run_cli):
    """Before: 1e308 data was reported as a divergence (exit 3)."""
    p = tmp_path / "big.npy"
    np.save(p, np.array([[1e308], [-1e308], [0.0]]))
    code, _, err = run_cli("train", _cfg(tmp_path, p), "--quiet")
    assert code == 2 and "too large" in err and "diverged" not in err


_dtypes = st.one_of(hnp.floating_dtypes(), hnp.integer_dtypes(), hnp.unsigned_integer_dtypes(),
                    hnp.complex_number_dtypes(), hnp.boolean_dtypes(), hnp.byte_string_dtypes(max_len=3),
                    hnp.unicode_string_dtypes(max_len=3), hnp.datetime64_dtypes(), hnp.timedelta64_dtypes())


def _check_npy(path: Path, arr: np.ndarray) -> None:
    """Accepted: a finite float64 (n, 1) tensor equal to the real numbers written; else InputError."""
    try:
        ds = as_dataset(str(path), 1)
    except InputError:
        return
    assert arr.dtype.kind in "biuf" and arr.dtype.names is None
    ref = np.asarray(arr, dtype=np.float64).reshape(-1, 1)
    assert ds.samples.dtype == torch.float64
    assert np.array_equal(ds.samples.numpy(), ref)
    assert bool(torch.isfinite(ds.mean).all()) and bool(torch.isfinite(ds.variance).all())


def _arrays(max_side):
    return _dtypes.flatmap(lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=1, max_dims=3, max_side=max_side)))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arr=_arrays(5))
def test_generated_npy_files(tmp_path, arr):
    """Hypothesis over .npy files of every dtype and shape (NaN, inf, 1e308, complex, strings,
    dates): accepted exactly as written, or refused with InputError; nothing else."""
    p = tmp_path / "gen.npy"
    np.save(p, arr)
    _check_npy(p, arr)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=300), prefix=st.booleans())
def test_generated_bytes_as_npy_and_csv(tmp_path, raw, prefix):
    """Arbitrary bytes (optionally behind a valid .npy magic) as .npy and .csv: InputError or data."""
    for name in ("gen.npy", "gen.csv"):
        p = tmp_path / name
        p.write_bytes((b"\x93NUMPY\x01\x00" if prefix and name.endswith("npy") else b"") + raw)
        try:
            ds = as_dataset(str(p), 1)
        except InputError:
            continue
        assert ds.samples.dtype == torch.float64 and bool(torch.isfinite(ds.samples).all())


@pytest.mark.slow
@settings(max_examples=1200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arr=_arrays(40))
def test_generated_npy_files_many(tmp_path, arr):
    p = tmp_path / "gen.npy"
    np.save(p, arr)
    _check_npy(p, arr)


def test_load_never_opens_a_fifo(tmp_path):
    """The FIFO check happens before opening (opening a FIFO with no writer blocks forever)."""
    p = tmp_path / "f.npy"
    os.mkfifo(p)
    with pytest.raises(InputError, match="FIFO"):
        load(p)
