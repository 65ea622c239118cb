"""The toy sets' true log-densities against independent references: normalisation on a grid, the
probability of a region against the generator's own draws, the closed-form entropy of 8 Gaussians,
a separately written NumPy quadrature for moons, and the convergence of the numerical integrals."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mindiss.data import toy as D
from mindiss.errors import InputError

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("one_thread")


def midpoint_grid(lo, hi, cells):
    """Cell centres of a cells x cells midpoint rule on [lo, hi]^2 and the cell area (cell edges on
    the integers when (hi - lo) / cells divides 1: exact for the checkerboard's squares)."""
    h = (hi - lo) / cells
    c = torch.linspace(lo + h / 2, hi - h / 2, cells, dtype=F64)
    return torch.stack(torch.meshgrid(c, c, indexing="ij"), -1).reshape(-1, 2), h * h


FAST = ["8gaussians", "rings", "moons", "checkerboard"]


@pytest.mark.parametrize("name", FAST + [pytest.param("pinwheel", marks=pytest.mark.slow)])
def test_true_density_integrates_to_one_and_matches_the_generators_region_probability(name):
    """int p = 1 on a midpoint grid over [-5, 5]^2 (the draws stay within ~[-4.5, 4.5]), and
    P(x1 > 0.3, x2 < 0.7) by the grid equals the fraction of 40,000 draws within 4 standard errors:
    the density is that of the generating code, not just some normalised density."""
    cells = 400 if name != "pinwheel" else 200
    pts, area = midpoint_grid(-5.0, 5.0, cells)
    p = torch.exp(D.true_log_density(name, pts).log_density)
    total = float(p.sum() * area)
    assert abs(total - 1.0) < (2e-3 if name == "rings" else 1e-3 if name == "pinwheel" else 1e-6), total
    region = (pts[:, 0] > 0.3) & (pts[:, 1] < 0.7)
    p_grid = float(p[region].sum() * area)
    x = D.toy(name, 40_000, gen=21)
    hit = ((x[:, 0] > 0.3) & (x[:, 1] < 0.7)).to(F64)
    se = math.sqrt(p_grid * (1 - p_grid) / x.shape[0])
    assert abs(float(hit.mean()) - p_grid) <= 4 * se + 2e-3 * (name == "rings"), (float(hit.mean()), p_grid)


def test_eight_gaussians_nll_on_its_own_draws_is_the_closed_form_entropy():
    """-E[ln p] over 200,000 own draws vs H = ln 8 + 1 + ln(2 pi 0.2^2) (eight components 7.7 sd
    apart: their overlap changes H by < 2e-4, far below the 4-SE tolerance of ~0.009)."""
    x = D.toy("8gaussians", 200_000, gen=3)
    lp = D.true_log_density("8gaussians", x).log_density
    entropy = math.log(8.0) + 1.0 + math.log(2 * math.pi * 0.04)
    se = float(lp.std()) / math.sqrt(lp.numel())
    assert abs(float(-lp.mean()) - entropy) <= 4 * se


def moons_density_numpy(points, n_t=20001):
    """Independent reference: p(y) = (1/2) sum_branch (1/pi) int_0^pi N(y; 2 (c(t) - (1/2, 1/4)), 0.04 I) dt
    by the trapezoid rule on n_t points in NumPy (written apart from the library's Gauss-Legendre)."""
    t = np.linspace(0.0, np.pi, n_t)
    w = np.full(n_t, np.pi / (n_t - 1))
    w[[0, -1]] /= 2
    out = []
    for y in np.asarray(points):
        total = 0.0
        for cx, cy in ((np.cos(t), np.sin(t)), (1 - np.cos(t), 0.5 - np.sin(t))):
            d2 = (y[0] - 2 * (cx - 0.5)) ** 2 + (y[1] - 2 * (cy - 0.25)) ** 2
            total += 0.5 / np.pi * np.sum(w * np.exp(-d2 / 0.08) / (2 * np.pi * 0.04))
        out.append(total)
    return np.array(out)


def test_moons_density_is_converged_and_matches_an_independent_quadrature():
    """Two resolutions (the library's and 4x its panels) agree to 1e-4 in ln p, on draws and on
    points off the data; and p matches a NumPy trapezoid rule over t to 1e-6 relative."""
    g = torch.Generator().manual_seed(5)
    x = torch.cat([D.toy("moons", 400, gen=4), 8 * torch.rand(100, 2, dtype=F64, generator=g) - 4])
    res = D.true_log_density("moons", x)
    assert res.error_estimate <= 1e-4
    fine = D._logp_moons(x, 4 * D.MOONS_PANELS)
    assert float((res.log_density - fine).abs().max()) <= 1e-4
    ref = moons_density_numpy(x[:40].numpy())
    assert np.allclose(np.exp(res.log_density[:40].numpy()), ref, rtol=1e-6, atol=0)


def test_checkerboard_and_rings_closed_forms():
    """Checkerboard: 1/8 on the dark squares, 0 on the light ones; rings: ln p at a point on the middle
    ring, by hand: w = 1.5/4.5, p = w N(0; 0, 0.01) / (2 pi 1.5) (the rings at 0.75 and 2.25 add exp(-28) ~ 1e-12 relative)."""
    lp = D.true_log_density("checkerboard", torch.tensor([[0.5, 0.5], [0.5, -0.5], [3.0, 0.5]], dtype=F64))
    assert lp.log_density[0] == -math.log(8.0) and lp.log_density[1] == -math.inf and lp.log_density[2] == -math.inf
    r = D.true_log_density("rings", torch.tensor([[0.0, 1.5]], dtype=F64)).log_density
    by_hand = math.log(1.5 / 4.5 / math.sqrt(2 * math.pi * 0.01) / (2 * math.pi * 1.5))
    assert abs(float(r) - by_hand) < 1e-10


def test_true_density_rejects_bad_input():
    with pytest.raises(InputError, match="unknown toy data set"):
        D.true_log_density("spirals", torch.zeros(3, 2))
    with pytest.raises(InputError, match="2-D"):
        D.true_log_density("moons", torch.zeros(3, 3))
    with pytest.raises(InputError, match="NaN"):
        D.true_log_density("moons", torch.tensor([[0.0, float("nan")]]))
