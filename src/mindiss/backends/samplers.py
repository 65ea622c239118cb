"""Chain moves at fixed theta: dx = -mu grad_x E dt + sqrt(2 mu) dW.

Every sampler has one signature, ``step(energy, theta, x, *, dt, mobility, gen) -> x``
(x may be updated in place), and declares ``exact_for`` (the energies whose p_theta it leaves
exactly invariant) and ``weak_order``. Noise is always sqrt(2 mu dt) per unit; kT = 1.
"""
from __future__ import annotations

import math

import torch

from ..energies.base import Energy, HarmonicTrap
from ..errors import InputError


class Sampler:
    name: str = "sampler"
    exact_for: str = "none"
    weak_order: float = 1.0

    def __init__(self):
        self._noise: torch.Tensor | None = None

    def check(self, energy: Energy) -> None:
        """Refuse a sampler/energy pairing that cannot work (raised before any update)."""

    def noise(self, like: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Standard normal draws into a reused buffer shaped like x."""
        buf = self._noise
        if buf is None or buf.shape != like.shape or buf.dtype != like.dtype or buf.device != like.device:
            buf = self._noise = torch.empty_like(like)
        return buf.normal_(generator=gen)

    def step(self, energy, theta, x, *, dt: float, mobility: float, gen: torch.Generator):
        raise NotImplementedError

    def state_dict(self) -> dict:
        """Counters that a resumed run must continue from (the noise buffer is scratch)."""
        return {}

    def load_state_dict(self, sd: dict) -> None:
        pass


class ExactOU(Sampler):
    """Exact Ornstein-Uhlenbeck transition for diagonal quadratic energies.

    x' = c + (x - c) a + sqrt(v (1 - a^2)) xi with a = exp(-mu dt / v): leaves p_theta
    invariant for any dt (no discretisation bias).
    """

    name = "exact"
    exact_for = "diagonal quadratic energies (HarmonicTrap, Gaussian)"
    weak_order = math.inf

    def check(self, energy):
        if not energy.capabilities.quadratic:
            raise InputError(
                f"sampler 'exact' needs a quadratic energy; {type(energy).__name__} is not: "
                "use 'mala' or 'euler'"
            )

    def step(self, energy, theta, x, *, dt, mobility, gen):
        if isinstance(energy, HarmonicTrap):   # one variance for every coordinate, a host float
            s = energy.variance
            a = math.exp(-mobility * dt / s)
            if x.shape[-1] == 1:   # the centre as a host float too (the same numbers as the general path)
                return x.mul_(a).add_(float(theta) * (1.0 - a)).add_(self.noise(x, gen),
                                                                     alpha=math.sqrt(s * (1.0 - a * a)))
            return x.mul_(a).add_((theta * (1.0 - a)).to(x.dtype)).add_(self.noise(x, gen),
                                                                        alpha=math.sqrt(s * (1.0 - a * a)))
        c, v = energy.gaussian_params(theta)
        xi = self.noise(x, gen)
        if x.shape[-1] == 1:  # scalar coefficients in plain floats: fewer kernel launches
            cf, vf = float(c), float(v)
            a = math.exp(-mobility * dt / vf)
            return x.mul_(a).add_(cf * (1.0 - a)).add_(xi, alpha=math.sqrt(vf * (1.0 - a * a)))
        a = torch.exp(-mobility * dt / v)
        drift_to = (c * (1.0 - a)).to(x.dtype)
        sd = torch.sqrt(v * (1.0 - a * a)).to(x.dtype)
        return x.mul_(a.to(x.dtype)).add_(drift_to).addcmul_(xi, sd)


class EulerMaruyama(Sampler):
    """x' = x - mu dt grad_x E + sqrt(2 mu dt) xi. Weak order 1: p_theta is invariant only as dt -> 0.

    For the harmonic trap the stationary variance is s / (1 - mu dt / (2 s)), an O(dt) bias.
    """

    name = "euler"
    weak_order = 1.0

    def step(self, energy, theta, x, *, dt, mobility, gen):
        if isinstance(energy, HarmonicTrap):
            s = energy.variance
            # HarmonicTrap: x - mu dt (x - theta) / s = (1 - h) x + h theta, h = mu dt / s (fewer kernels)
            h = mobility * dt / s
            return x.mul_(1.0 - h).add_((theta * h).to(x.dtype)).add_(self.noise(x, gen),
                                                                      alpha=math.sqrt(2.0 * mobility * dt))
        g = energy.grad_x(x, theta)
        xi = self.noise(x, gen)
        return x.add_(g, alpha=-mobility * dt).add_(xi, alpha=math.sqrt(2.0 * mobility * dt))


class MALA(Sampler):
    """Metropolis-adjusted Langevin: an Euler-Maruyama proposal accepted with the
    Metropolis-Hastings ratio, so p_theta is exactly invariant for any dt.

    Counts ``n_accepted`` / ``n_proposed`` across calls for the acceptance rate.
    """

    name = "mala"
    exact_for = "every energy with a gradient"
    weak_order = 1.0

    def __init__(self):
        super().__init__()
        self.n_accepted = 0
        self.n_proposed = 0

    def state_dict(self):
        return {"n_accepted": self.n_accepted, "n_proposed": self.n_proposed}

    def load_state_dict(self, sd):
        self.n_accepted, self.n_proposed = int(sd["n_accepted"]), int(sd["n_proposed"])

    @property
    def acceptance_rate(self) -> float:
        return self.n_accepted / self.n_proposed if self.n_proposed else float("nan")

    def step(self, energy, theta, x, *, dt, mobility, gen):
        h = mobility * dt
        gx = energy.grad_x(x, theta)
        xi = self.noise(x, gen)
        y = x - h * gx + math.sqrt(2.0 * h) * xi
        gy = energy.grad_x(y, theta)
        ex, ey = energy.energy(x, theta), energy.energy(y, theta)
        x64, y64 = x.to(torch.float64), y.to(torch.float64)
        # log q(x | y) - log q(y | x) for the Gaussian proposal of variance 2h.
        fwd = ((y64 - x64 + h * gx.to(torch.float64)) ** 2).sum(-1)
        bwd = ((x64 - y64 + h * gy.to(torch.float64)) ** 2).sum(-1)
        log_ratio = ex - ey + (fwd - bwd) / (4.0 * h)
        u = torch.empty_like(log_ratio).uniform_(generator=gen)
        accept = torch.log(u) < log_ratio
        self.n_accepted += int(accept.sum())
        self.n_proposed += accept.numel()
        x[accept] = y[accept]
        return x


SAMPLERS = {"exact": ExactOU, "euler": EulerMaruyama, "mala": MALA}


def make_sampler(name: str | Sampler) -> Sampler:
    if isinstance(name, Sampler):
        return name
    try:
        return SAMPLERS[name]()
    except KeyError:
        raise InputError(f"unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}") from None
