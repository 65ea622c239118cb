"""The "use it in your own loop" examples and docs page run as tests."""
import importlib.util
import math
import re
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]



pytestmark = pytest.mark.usefixtures("one_thread")


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_example_{name}", ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check_results(results):
    assert [r["optimizer"] for r in results] == ["minimal-dissipation", "sgd", "adam"]
    for r in results:
        rep = r["report"]
        assert r["n_updates"] == 32 and rep.n_updates == 32 and rep.n_moves == 32   # same number of updates
        assert rep.free_energy_method == "exact" and rep.bias_reason == "measured"   # bias measured, not copied
        assert rep.first_law_residual < 1e-9
        assert math.isfinite(r["nll"]) and math.isfinite(rep.excess_work_se)
    return {r["optimizer"]: r for r in results}


def test_plain_pytorch_pcd_on_moons():
    ex = _load("own_loop_pcd")
    moons = ex.make_moons(400, gen=torch.Generator().manual_seed(0))
    assert moons.shape == (400, 2) and abs(float(moons.mean())) < 0.1
    by_name = _check_results(ex.main(quick=True))
    # MALA keeps p_theta invariant and the chains start in equilibrium: second law within errors
    for r in by_name.values():
        assert r["report"].excess_work > -4 * r["report"].excess_work_se - 1e-3


def test_torchebm_example_runs_torchebms_pcd_with_its_buffer():
    pytest.importorskip("torchebm", reason="torchebm is in the test extra; examples/own_loop_torchebm.py needs it")
    ex = _load("own_loop_torchebm")
    out = ex.main(quick=True)
    rep = out["report"]
    # torchebm jitters int(0.05 * 128) = 6 start points per update: 30 updates restart 180 chains
    assert rep.n_restarts == 30 * 6 and rep.n_updates == 30 and rep.n_moves == 30
    assert rep.first_law_residual < 1e-4 and math.isfinite(out["nll"]) and rep.bias_reason == "measured"


def test_torchebm_example_says_what_is_missing():
    if importlib.util.find_spec("torchebm") is not None:
        pytest.skip("torchebm is installed: the missing-extra message is not reachable")
    ex = _load("own_loop_torchebm")
    assert not ex.HAVE_TORCHEBM
    with pytest.raises(RuntimeError, match="pip install torchebm"):
        ex.main(quick=True)


def test_docs_own_loop_code_blocks_run():
    text = (ROOT / "docs" / "own_loop.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 2
    namespace: dict = {}
    exec(compile("\n".join(blocks), "docs/own_loop.md", "exec"), namespace)   # noqa: S102
    report, sched = namespace["report"], namespace["sched"]
    assert sched.last_epoch == sched.n_updates == 200
    assert report.n_updates == 200 and report.first_law_residual < 1e-9
    assert report.free_energy_method.startswith("jarzynski") and math.isfinite(report.excess_work)
