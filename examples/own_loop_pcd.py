"""Plain-PyTorch persistent contrastive divergence (PCD) on two moons, with mindiss's two drop-ins.

* ``MinimalDissipation``: a torch optimizer whose learning rate follows the minimal-dissipation
  schedule alpha(t) (impulses at both ends) times a diagonal Fisher preconditioner estimated from
  per-chain parameter gradients of the persistent chains;
* ``WorkTracker``: per-chain work and heat of the loop (Crooks bookkeeping, kT = 1), the excess
  work W_ex = <W> - Delta F and the PCD bias measured as L - L_approx (true-loss change minus
  sum dtheta . g_hat; Identity 1: equal to W_ex up to O(|dtheta|^2) per update).

The energy is an MLP plus a confinement k |x|^2 / 2 (so Z exists); in two dimensions F = -ln Z is
a grid sum, so Delta F and the true loss L = E_data[E] - F are exact up to quadrature. Chains move
by MALA (p_theta exactly invariant, so W_ex >= 0 holds). The same loop runs with torch's SGD and
Adam at the same number of updates and the same chain moves, for comparison.

Run: ``python examples/own_loop_pcd.py`` (``--quick`` for the small CI setting).
"""
from __future__ import annotations

import math
import sys
import time

import torch
from torch import nn

from mindiss.adapters.optim import MinimalDissipation, plan
from mindiss.adapters.tracker import WorkTracker


def make_moons(n: int, *, gen: torch.Generator, noise: float = 0.1) -> torch.Tensor:
    """Two interleaved half circles plus Gaussian noise, centred: (n, 2) float32."""
    t = torch.rand(n, generator=gen) * math.pi
    upper = torch.arange(n) < n // 2
    x = torch.where(upper[:, None], torch.stack([t.cos(), t.sin()], 1),
                    torch.stack([1.0 - t.cos(), 0.5 - t.sin()], 1))
    x = x + noise * torch.randn(n, 2, generator=gen)
    return x - torch.tensor([0.5, 0.25])


class MoonsEnergy(nn.Module):
    """E_theta(x) = MLP_theta(x) + k |x|^2 / 2, shape (N, 2) -> (N,)."""

    def __init__(self, hidden: int = 64, confinement: float = 0.5, *, gen: torch.Generator):
        super().__init__()
        layers, fan_in = [], 2
        for width in (hidden, hidden, 1):
            lin = nn.utils.skip_init(nn.Linear, fan_in, width)   # initialised from gen, not the global RNG
            bound = 1.0 / math.sqrt(fan_in)
            with torch.no_grad():
                lin.weight.uniform_(-bound, bound, generator=gen)
                lin.bias.uniform_(-bound, bound, generator=gen)
            layers += [lin, nn.SiLU()]
            fan_in = width
        self.net = nn.Sequential(*layers[:-1])
        self.confinement = confinement

    def forward(self, x):
        return self.net(x).squeeze(-1) + 0.5 * self.confinement * (x * x).sum(-1)


def mala(energy, x, *, time: float, step: float, gen: torch.Generator):
    """Metropolis-adjusted Langevin moves (mobility 1, kT = 1) for chain time ``time`` in steps <= ``step``."""
    n_moves = math.ceil(time / step - 1e-9) if time > 0 else 0
    if n_moves == 0:
        return x
    h = time / n_moves

    def energy_grad(z):
        z = z.detach().requires_grad_(True)
        e = energy(z)
        (g,) = torch.autograd.grad(e.sum(), z)   # gradient in x only: parameter .grad untouched
        return e.detach(), g

    x = x.detach()
    e_x, g_x = energy_grad(x)
    for _ in range(n_moves):
        y = x - h * g_x + math.sqrt(2.0 * h) * torch.randn(x.shape, generator=gen)
        e_y, g_y = energy_grad(y)
        log_ratio = e_x - e_y + (((y - x + h * g_x) ** 2).sum(-1) - ((x - y + h * g_y) ** 2).sum(-1)) / (4.0 * h)
        accept = torch.log(torch.rand(x.shape[0], generator=gen)) < log_ratio
        x = torch.where(accept[:, None], y, x)
        e_x = torch.where(accept, e_y, e_x)
        g_x = torch.where(accept[:, None], g_y, g_x)
    return x


def free_energy_grid(energy, half_width: float = 7.0, n: int = 141) -> float:
    """F = -ln int exp(-E) dx by a grid sum on [-half_width, half_width]^2 (float64)."""
    axis = torch.linspace(-half_width, half_width, n)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        e = energy(grid).to(torch.float64)
    h = float(axis[1] - axis[0])
    return float(-(torch.logsumexp(-e, 0) + 2.0 * math.log(h)))


def run(optimizer: str, *, n_steps: int = 100, n_chains: int = 512, duration: float = 4.0, seed: int = 0,
        lr: float | None = None, n_data: int = 1024, step: float = 0.02, burn_in: float = 4.0) -> dict:
    """One PCD run; ``optimizer`` in {"minimal-dissipation", "sgd", "adam"}; n_steps + 2 updates each."""
    gen = torch.Generator().manual_seed(seed)
    data = make_moons(n_data, gen=gen)
    model = MoonsEnergy(gen=gen)
    chains = torch.randn(n_chains, 2, generator=gen) / math.sqrt(model.confinement)
    chains = mala(model, chains, time=burn_in, step=step, gen=gen)       # equilibrium at theta_0
    tau = 1.0 / model.confinement          # relaxation time of the confining well: our guess for tau
    moves = plan(duration, n_steps, tau=tau).dt  # chain time after each update (0 after an impulse)
    if optimizer == "minimal-dissipation":
        # alpha(t) times a diagonal Fisher from per-chain gradients of the chains (step(chains=...)).
        # Far from linear response (a fresh MLP) the natural-gradient step needs lr < 1 and damping.
        opt = MinimalDissipation(model.parameters(), duration=duration, n_steps=n_steps, tau=tau,
                                 lr=0.03 if lr is None else lr, fisher="diag", relative_damping=1.0,
                                 energy=model, fisher_rows=256, gen=gen)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.1 if lr is None else lr)
    elif optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=0.003 if lr is None else lr)
    else:
        raise ValueError(f"unknown optimizer {optimizer!r}")

    tracker = WorkTracker(model, chains, data=data, free_energy_fn=lambda _: free_energy_grid(model))
    start = time.perf_counter()
    for k in range(len(moves)):
        opt.zero_grad()
        loss = model(data).mean() - model(chains).mean()     # the CD loss: its gradient is g_hat
        loss.backward()
        with tracker.update():                               # work: parameters change, chains frozen
            opt.step(chains=chains) if isinstance(opt, MinimalDissipation) else opt.step()
        chains = mala(model, chains, time=float(moves[k]), step=step, gen=gen)
        tracker.after_move(chains)                           # heat: chains move at fixed parameters
    seconds = time.perf_counter() - start
    report = tracker.report()
    with torch.no_grad():
        nll = float(model(data).to(torch.float64).mean()) - free_energy_grid(model)
    return {"optimizer": optimizer, "report": report, "nll": nll, "n_updates": len(moves), "seconds": seconds}


def main(quick: bool = False) -> list[dict]:
    kw = {"n_steps": 30, "n_chains": 256, "n_data": 512} if quick else {}
    results = [run(name, **kw) for name in ("minimal-dissipation", "sgd", "adam")]
    print(f"{'optimizer':<22}{'updates':>8}{'W_ex (kT)':>12}{'+-':>8}{'bias':>10}{'NLL':>9}{'first law':>11}{'s':>7}")
    for r in results:
        rep = r["report"]
        print(f"{r['optimizer']:<22}{r['n_updates']:>8}{rep.excess_work:>12.4f}{rep.excess_work_se:>8.4f}"
              f"{rep.bias:>10.4f}{r['nll']:>9.4f}{rep.first_law_residual:>11.1e}{r['seconds']:>7.2f}")
    return results


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
