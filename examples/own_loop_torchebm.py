"""The two-moons PCD loop of ``own_loop_pcd.py`` with torchebm's pieces: its model base class, its
Langevin sampler and its contrastive-divergence loss, plus mindiss's ``MinimalDissipation`` and
``WorkTracker``; compared with torch's SGD and Adam (torchebm's usual optimizers) at the same
number of updates and the same chain moves.

torchebm is an optional extra (``pip install torchebm``); without it this module still imports
and ``main()`` raises ``RuntimeError`` saying so.

Two things to know when tracking work with torchebm:

* the ledger is per chain, so chains must keep their identity: this loop holds the persistent
  chains itself and hands them to torchebm's sampler (PCD with buffer size = number of chains
  and no re-initialisation; torchebm's replay buffer draws random buffer entries, which would
  mix chains between updates);
* torchebm's ``LangevinDynamics`` is the unadjusted (Euler-Maruyama) step
  x' = x - h grad E + sqrt(2 h) xi with mobility 1 and kT = noise_scale^2 = 1; it does not leave
  p_theta exactly invariant, so work and heat carry an O(h) bias (theory.md section 2). It draws
  noise from torch's global generator, which this example seeds.

Run: ``python examples/own_loop_torchebm.py`` (``--quick`` for the CI setting).
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from own_loop_pcd import MoonsEnergy, free_energy_grid, make_moons  # noqa: E402

from mindiss.optim import MinimalDissipation, plan  # noqa: E402
from mindiss.tracker import WorkTracker  # noqa: E402

try:  # optional extra
    from torchebm.losses import ContrastiveDivergence
    from torchebm.samplers import LangevinDynamics
    try:
        from torchebm.core import BaseModel as _TorchEBMBase            # current releases
    except ImportError:
        from torchebm.core import BaseEnergyFunction as _TorchEBMBase   # older releases
    HAVE_TORCHEBM = True
except ImportError:
    HAVE_TORCHEBM = False

MISSING = "torchebm is not installed: this example needs the optional extra (pip install torchebm)"


def _model_class():
    class TorchEBMMoons(_TorchEBMBase):
        """torchebm model wrapping the MLP + confinement energy of own_loop_pcd (E: (N, 2) -> (N,))."""

        def __init__(self, *, gen):
            super().__init__()
            self.energy = MoonsEnergy(gen=gen)

        def forward(self, x):
            return self.energy(x)

    return TorchEBMMoons


def _cd_loss(model, sampler, k_steps):
    """torchebm's ContrastiveDivergence (used for its loss E_data[E] - E_chains[E]); keyword names vary."""
    for kw in ({"model": model}, {"energy_function": model}):
        try:
            return ContrastiveDivergence(sampler=sampler, k_steps=k_steps, persistent=True, **kw)
        except TypeError:
            continue
    return None


def _move(sampler, chains, n_steps):
    """n_steps torchebm Langevin steps from the given chain states (chain identity kept)."""
    if n_steps == 0:
        return chains
    sample = getattr(sampler, "sample", None) or sampler.sample_chain
    out = sample(x=chains, n_steps=n_steps)
    return (out[0] if isinstance(out, tuple) else out).detach().to(chains.dtype)


def run(optimizer: str, *, n_steps: int = 100, n_chains: int = 512, duration: float = 4.0, seed: int = 0,
        lr: float | None = None, n_data: int | None = None, step: float = 0.01, burn_in: float = 4.0) -> dict:
    """One PCD run with torchebm's sampler and loss; optimizer in {"minimal-dissipation", "sgd", "adam"}.

    torchebm's CD loss pairs data and chain samples row by row (mean(E(x) - E(x'))), so the data
    batch has as many rows as there are chains (``n_data`` defaults to ``n_chains``)."""
    if not HAVE_TORCHEBM:
        raise RuntimeError(MISSING)
    n_data = n_chains if n_data is None else n_data
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)                         # torchebm's sampler draws from the global generator
    data = make_moons(n_data, gen=gen)
    model = _model_class()(gen=gen)
    sampler = LangevinDynamics(model, step_size=step, noise_scale=1.0)
    tau = 1.0 / model.energy.confinement
    moves = plan(duration, n_steps, tau=tau).dt
    k_steps = max(1, round(float(moves[1]) / step))
    cd = _cd_loss(model, sampler, k_steps)
    chains = torch.randn(n_chains, 2, generator=gen) / math.sqrt(model.energy.confinement)
    chains = _move(sampler, chains, round(burn_in / step))                 # near equilibrium at theta_0
    if optimizer == "minimal-dissipation":
        opt = MinimalDissipation(model.parameters(), duration=duration, n_steps=n_steps, tau=tau,
                                 lr=0.03 if lr is None else lr, fisher="diag", relative_damping=1.0,
                                 energy=model, fisher_rows=256, gen=gen)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.1 if lr is None else lr)
    elif optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=0.003 if lr is None else lr)
    else:
        raise ValueError(f"unknown optimizer {optimizer!r}")

    tracker = WorkTracker(model, chains, free_energy_fn=lambda _: free_energy_grid(model))
    start = time.perf_counter()
    for k in range(len(moves)):
        opt.zero_grad()
        if cd is not None and hasattr(cd, "compute_loss") and data.shape[0] == chains.shape[0]:
            loss = cd.compute_loss(data, chains)                          # torchebm: mean(E(x) - E(x'))
        else:
            loss = model(data).mean() - model(chains).mean()              # E_data[E] - E_chains[E]
        loss.backward()
        with tracker.update():
            opt.step(chains=chains) if isinstance(opt, MinimalDissipation) else opt.step()
        chains = _move(sampler, chains, k_steps if moves[k] > 0 else 0)
        tracker.after_move(chains)
    seconds = time.perf_counter() - start
    report = tracker.report()
    with torch.no_grad():
        nll = float(model(data).to(torch.float64).mean()) - free_energy_grid(model)
    return {"optimizer": optimizer, "report": report, "nll": nll, "n_updates": len(moves), "seconds": seconds}


def main(quick: bool = False) -> list[dict]:
    if not HAVE_TORCHEBM:
        raise RuntimeError(MISSING)
    kw = {"n_steps": 30, "n_chains": 256} if quick else {}
    results = [run(name, **kw) for name in ("minimal-dissipation", "sgd", "adam")]
    print(f"{'optimizer':<22}{'updates':>8}{'W_ex (kT)':>12}{'+-':>8}{'NLL':>9}{'first law':>11}{'s':>7}")
    for r in results:
        rep = r["report"]
        print(f"{r['optimizer']:<22}{r['n_updates']:>8}{rep.excess_work:>12.4f}{rep.excess_work_se:>8.4f}"
              f"{r['nll']:>9.4f}{rep.first_law_residual:>11.1e}{r['seconds']:>7.2f}")
    return results


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
