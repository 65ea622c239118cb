import os

import pytest

os.environ.setdefault("COLUMNS", "120")


@pytest.fixture
def run_cli():
    """Run the mindiss CLI in-process (typer's runner): returns (exit_code, stdout, stderr)."""
    from typer.testing import CliRunner

    from mindiss.cli import app

    runner = CliRunner()

    def call(*args):
        res = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
        return res.exit_code, res.stdout, res.stderr

    return call
