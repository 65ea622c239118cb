"""torchebm's own persistent contrastive divergence with mindiss's two drop-ins.

* torchebm's ``PersistentContrastiveDivergence`` with its replay buffer (``buffer_size`` = the
  batch, torchebm's default exploration noise ``new_sample_ratio = 0.05``) and its
  ``LangevinDynamics`` sampler; the energy regulariser is switched off (``energy_reg_weight=0``)
  so that the loss is the CD loss E_data[E] - E_chains[E] whose gradient is g_hat;
* ``mindiss.tracker.follow_replay_buffer``: a WorkTracker over the buffer slots. It follows chain
  identity through the buffer; the start points that torchebm jitters match no buffer state, so
  those chains are restarted: they leave the ledger and re-enter as new systems, and the report
  counts them (``n_restarts``);
* ``mindiss.optim.MinimalDissipationLR(opt, total_updates)``: the two-line scheduler.

torchebm's ``LangevinDynamics`` is unadjusted (Euler-Maruyama), so work and heat carry an O(h) bias
(theory.md section 2). torchebm is in the test extra; without it ``main()`` raises RuntimeError.

Run: ``python examples/own_loop_torchebm.py`` (``--quick`` for the CI setting).
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from own_loop_pcd import MoonsEnergy, free_energy_grid, make_moons  # noqa: E402

from mindiss.adapters.optim import MinimalDissipationLR  # noqa: E402
from mindiss.adapters.tracker import follow_replay_buffer  # noqa: E402

try:  # optional extra
    from torchebm.core import BaseModel
    from torchebm.losses import PersistentContrastiveDivergence
    from torchebm.samplers import LangevinDynamics
    HAVE_TORCHEBM = True
except ImportError:
    HAVE_TORCHEBM = False

MISSING = "torchebm is not installed: this example needs the optional extra (pip install torchebm)"


def run(*, updates: int = 200, batch: int = 256, lr: float = 3e-3, seed: int = 0, k_steps: int = 10,
        step: float = 0.01) -> dict:
    """One torchebm PCD run with the follower and the scheduler; returns the report and the test NLL."""
    if not HAVE_TORCHEBM:
        raise RuntimeError(MISSING)

    class Moons(BaseModel):
        def __init__(self, gen):
            super().__init__()
            self.energy = MoonsEnergy(gen=gen)

        def forward(self, x):
            return self.energy(x)

    gen = torch.Generator().manual_seed(seed)
    data = make_moons(4096, gen=gen)
    model = Moons(gen)
    sampler = LangevinDynamics(model, step_size=step, noise_scale=1.0)
    pcd = PersistentContrastiveDivergence(model, sampler, k_steps=k_steps, buffer_size=batch, init_steps=200,
                                          energy_reg_weight=0.0)
    tracker = follow_replay_buffer(model, pcd, data=data[:1024])
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = MinimalDissipationLR(opt, total_updates=updates)
    for _ in range(updates):
        x = data[torch.randint(0, data.shape[0], (batch,), generator=gen)]
        loss, _ = pcd(x, generator=gen)               # chain move through torchebm's buffer (heat)
        opt.zero_grad()
        loss.backward()
        with tracker.update():                        # work on every buffer slot
            opt.step()
        sched.step()
    report = tracker.report("jarzynski")
    with torch.no_grad():
        nll = float(model(data).to(torch.float64).mean()) - free_energy_grid(model)
    return {"report": report, "nll": nll, "updates": updates}


def main(quick: bool = False) -> dict:
    out = run(updates=30, batch=128) if quick else run()
    rep = out["report"]
    print("\n".join(rep.lines()))
    print(f"test NLL {out['nll']:.4f} nats; restarted chains {rep.n_restarts}")
    return out


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
