import os

import pytest

os.environ.setdefault("COLUMNS", "120")


@pytest.fixture
def run_cli():
    """Run the mindiss CLI in-process (typer's runner): returns (exit_code, stdout, stderr)."""
    from typer.testing import CliRunner

    from mindiss.app.cli import app

    runner = CliRunner()

    def call(*args):
        res = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
        return res.exit_code, res.stdout, res.stderr

    return call


@pytest.fixture
def plot_axes():
    """Plot an experiment's result headless; returns the figure's number of axes."""

    def count(module, result) -> int:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.figure import Figure

        fig = module.plot(result)
        assert isinstance(fig, Figure)
        n = len(fig.axes)
        plt.close(fig)
        return n

    return count


@pytest.fixture
def one_thread():
    """One intra-op torch thread: small tensors on 2 shared cores only gain contention from more."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
