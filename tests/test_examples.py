"""The "use it in your own loop" examples and docs page run as tests."""
import importlib.util
import math
import re
import sys
import types
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
        assert rep.free_energy_method == "exact" and rep.bias == rep.excess_work
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


def test_torchebm_example_runs_with_torchebm():
    pytest.importorskip("torchebm", reason="torchebm is an optional extra (pip install torchebm); "
                                           "examples/own_loop_torchebm.py needs it")
    ex = _load("own_loop_torchebm")
    _check_results(ex.main(quick=True))


def test_torchebm_example_says_what_is_missing():
    if importlib.util.find_spec("torchebm") is not None:
        pytest.skip("torchebm is installed: the missing-extra message is not reachable")
    ex = _load("own_loop_torchebm")
    assert not ex.HAVE_TORCHEBM
    with pytest.raises(RuntimeError, match="pip install torchebm"):
        ex.main(quick=True)


def _torchebm_stub():
    """A stand-in with torchebm's documented interface (BaseModel, LangevinDynamics.sample,
    ContrastiveDivergence.compute_loss) to keep the example's glue code from rotting."""
    class BaseModel(torch.nn.Module):
        def __init__(self, *args, **kwargs):
            super().__init__()

    class LangevinDynamics:
        def __init__(self, model, step_size=1e-3, noise_scale=1.0):
            self.model, self.step_size, self.noise_scale = model, step_size, noise_scale

        @torch.no_grad()
        def sample(self, x=None, n_steps=1, **kwargs):
            h = self.step_size
            for _ in range(n_steps):
                with torch.enable_grad():
                    z = x.detach().requires_grad_(True)
                    (g,) = torch.autograd.grad(self.model(z).sum(), z)
                x = x - h * g + math.sqrt(2 * h) * self.noise_scale * torch.randn_like(x)
            return x

    class ContrastiveDivergence:
        def __init__(self, model, sampler, k_steps=1, persistent=False, **kwargs):
            self.model, self.sampler, self.k_steps = model, sampler, k_steps

        def compute_loss(self, x, pred_x):
            return torch.mean(self.model(x) - self.model(pred_x))

    mods = {name: types.ModuleType(name) for name in ("torchebm", "torchebm.core", "torchebm.samplers",
                                                      "torchebm.losses")}
    mods["torchebm.core"].BaseModel = BaseModel
    mods["torchebm.samplers"].LangevinDynamics = LangevinDynamics
    mods["torchebm.losses"].ContrastiveDivergence = ContrastiveDivergence
    return mods


def test_torchebm_example_glue_against_a_stub_of_its_interface(monkeypatch):
    for name, module in _torchebm_stub().items():
        monkeypatch.setitem(sys.modules, name, module)
    ex = _load("own_loop_torchebm")
    assert ex.HAVE_TORCHEBM
    for name in ("minimal-dissipation", "sgd"):
        r = ex.run(name, n_steps=10, n_chains=128, burn_in=1.0)
        assert r["n_updates"] == 12 and r["report"].first_law_residual < 1e-9
        assert r["report"].n_moves == 12 and math.isfinite(r["report"].excess_work)


def test_docs_own_loop_code_blocks_run():
    text = (ROOT / "docs" / "own_loop.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 2
    namespace: dict = {}
    exec(compile("\n".join(blocks), "docs/own_loop.md", "exec"), namespace)   # noqa: S102
    report, opt = namespace["report"], namespace["opt"]
    assert opt.updates_done == opt.n_updates == 52
    assert report.n_updates == 52 and report.first_law_residual < 1e-9
    assert report.free_energy_method == "jarzynski" and math.isfinite(report.excess_work)
