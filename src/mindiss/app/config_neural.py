"""The neural part of a ``mindiss train`` config: mlp / rbm energies built from ``[energy]``, the
grid quadrature that gives them a true loss in 1-D and 2-D, and the recipes' Fisher settings.
``config.build`` calls ``build_neural``; ``grid_note`` qualifies a result with the quadrature error."""
from __future__ import annotations

from ..errors import InputError

#: grid points per axis of the quadrature that gives a 1-D / 2-D network its true loss
GRID_N = 257


class _Neural:
    """An mlp / rbm energy built from a config: the energy handed to train (grid quadrature in 1-D and
    2-D where ln Z is not exact), theta_0, the chains' start, and what the alpha(t) recipes need."""

    def __init__(self, energy, inner, theta0, chains, draw):
        self.energy, self.inner, self.theta0, self.chains, self.draw = energy, inner, theta0, chains, draw

    def recipe(self, cfg: dict):
        """(schedule, preconditioner, note) of schedule.kind natural_gradient / friction: ``recipes``'s
        natural-diag / natural-lowrank / friction-diag with scale = the factor on alpha(t). tau = 'auto':
        ``recipes.diagonal_relaxation`` on a clone of (64 of) the initial chains before the run."""
        import torch

        from ..rates import recipes
        from ..backends.samplers import make_sampler

        s, dyn = cfg["schedule"], cfg["dynamics"]
        T, n_steps = dyn["duration"], dyn["n_steps"]
        name = {"diag": "natural-diag", "lowrank": "natural-lowrank"}[s["fisher"]] \
            if s["kind"] == "natural_gradient" else "friction-diag"
        tau, relaxation = None, None
        if s["tau"] == "auto":
            gen = torch.Generator().manual_seed((dyn["seed"] * 7919 + 3) % (2**63))
            x = self.draw(64, gen)
            sampler = make_sampler("mala" if dyn["sampler"] == "exact" else dyn["sampler"])  # exact: the grid backend
            relaxation = recipes.diagonal_relaxation(self.inner, self.theta0, x, sampler,
                                                     dt=T / n_steps, mobility=dyn["mobility"], gen=gen, rows=64,
                                                     n_steps=100)
        else:
            tau = float(s["tau"])
        r = recipes.recipe(name, scale=s["scale"], duration=T, tau=tau, relaxation=relaxation)
        how = (f"a diagonal pilot run ({relaxation['rows']} chains x {relaxation['n_steps']} moves at theta_0)"
               if relaxation is not None else "schedule.tau")
        return r.schedule, r.preconditioner, (f"{name}: alpha(t) x {s['scale']:g} with tau = "
                                              f"{r.schedule.params['tau']:.4g} from {how}")


def neural_fisher(name: str):
    """The Fisher estimates of ``recipes`` for networks (moving average 0.9; damping 1e-3 x the mean
    diagonal for diag, 1 x for lowrank, rank 128), for schedule.preconditioner with mlp / rbm."""
    from ..rates.preconditioners import Fisher, make_preconditioner

    if name == "fisher-diag":
        return Fisher("diag", ema=0.9, relative_damping=1e-3)
    if name == "fisher-lowrank":
        return Fisher("lowrank", ema=0.9, relative_damping=1.0, rank=128, max_blocks=2)
    return make_preconditioner(name)


def _data_range(data):
    """(lo, hi) per axis of samples, or mean -+ 4 sd of a distribution (float64 tensors)."""
    import torch

    if hasattr(data, "mean") and not hasattr(data, "shape"):
        m, sd = torch.tensor(data.mean, dtype=torch.float64), torch.tensor(data.variance, dtype=torch.float64).sqrt()
        return m - 4 * sd, m + 4 * sd
    x = data.to(torch.float64)
    return x.min(0).values, x.max(0).values


def _auto_box(energy, theta0, data, reach, n: int, dtype):
    """The data range padded 1.5x around its centre, joined with the initial model's extent ``reach``
    ((lo, hi) per axis), grown 1.5x until its outer band holds < 1e-6 of p_theta0 (at most 8 times)."""
    import torch

    from ..estimators.evaluate import grid_log_partition

    lo, hi = _data_range(data)
    c, h = (lo + hi) / 2, ((hi - lo) / 2).clamp_min(1e-3)
    a = torch.minimum(c - 1.5 * h, reach[0])
    b = torch.maximum(c + 1.5 * h, reach[1])
    for _ in range(8):
        box = [(float(p), float(q)) for p, q in zip(a, b)]
        if grid_log_partition(energy, theta0, box=box, n=n, dtype=dtype).boundary_mass <= 1e-6:
            break
        c, h = (a + b) / 2, (b - a) / 2
        a, b = c - 1.5 * h, c + 1.5 * h
    return box


def build_neural(cfg: dict, data) -> _Neural:
    import math

    import torch

    from ..data.base import as_dataset
    from ..estimators.evaluate import GridQuadrature
    from ..energies.neural import NeuralEnergy
    from ..energies.rbm import MAX_ENUMERATED_HIDDEN, GaussianBernoulliRBM

    e, dyn, out = cfg["energy"], cfg["dynamics"], cfg["output"]
    f64 = torch.float64
    if e["dim"] is not None:
        dim = e["dim"]
    else:                                   # a data file: its columns
        dim = 1 if getattr(data, "ndim", 2) == 1 else int(data.shape[1])
    ds = as_dataset(data, dim)              # validates shape and values before anything is built
    if e["kind"] == "mlp":
        k = e["confinement"]
        inner = NeuralEnergy.mlp(dim, e["hidden"], e["activation"], k, gen=e["init_seed"])
        if dim > 2 and e["theta0"] is None:   # f = 0 at theta_0: p_theta0 = N(0, 1/k), drawn exactly
            last = [m for m in inner.module.modules() if isinstance(m, torch.nn.Linear)][-1]
            with torch.no_grad():
                last.weight.zero_()
                last.bias.zero_()
        theta0 = inner.theta0()
        exact = False
        start = (torch.zeros(dim, dtype=f64), torch.full((dim,), 1.0 / k, dtype=f64))
        reach = (torch.full((dim,), -6.0 / math.sqrt(k), dtype=f64), torch.full((dim,), 6.0 / math.sqrt(k), dtype=f64))
    else:
        inner = GaussianBernoulliRBM(dim, e["hidden"][0], sigma=e["sigma"])
        theta0 = inner.init_theta(gen=e["init_seed"], weight_std=e["weight_std"],
                                  data=ds.mean[None, :] if ds.samples is None else ds.samples)
        exact = inner.n_hidden <= MAX_ENUMERATED_HIDDEN
        b = inner.unpack(theta0)[1]
        start = (b.clone(), inner.sigma ** 2)   # the W = 0 equilibrium (W is small at theta_0)
        reach = (b - 6 * inner.sigma, b + 6 * inner.sigma)
    if e["theta0"] is not None:
        if len(e["theta0"]) != inner.n_params:
            raise InputError(f"energy.theta0 of this '{e['kind']}' needs {inner.n_params} numbers (all its "
                             f"parameters), got {len(e['theta0'])}; leave it out to use the initialiser's")
        theta0 = torch.tensor(e["theta0"], dtype=f64)
    quadrature = not exact and dim <= 2
    if not quadrature and (out["grid_box"] is not None or out["grid_n"] is not None):
        raise InputError("output.grid_box / grid_n apply where the true loss comes from grid quadrature (an mlp, or "
                         f"an rbm with more than {MAX_ENUMERATED_HIDDEN} hidden units, of dimension <= 2), not to "
                         f"this {dim}-dimensional '{e['kind']}'")

    def gaussian_draws(n, gen):
        return (start[0] + start[1].sqrt() * torch.randn(n, dim, dtype=f64, generator=gen)).to(torch.float32)

    if quadrature:
        n = out["grid_n"] or GRID_N
        if n ** dim > 2**24:                # torch.multinomial's categories (the grid's equilibrium draws)
            raise InputError(f"output.grid_n = {n}: a {dim}-D grid of {n ** dim} points exceeds torch's limit of "
                             f"2^24 categories for the equilibrium draws; use at most 4095")
        gdt = torch.float32 if dyn["dtype"] == "float32" and e["kind"] == "mlp" else f64
        if out["grid_box"] is None:
            box = _auto_box(inner, theta0, data, reach, n, gdt)
        else:
            gb = out["grid_box"]
            if len(gb) == 4 and dim == 1:
                raise InputError("output.grid_box of a 1-D energy is [lo, hi]")
            box = [(gb[0], gb[1])] * dim if len(gb) == 2 else [(gb[0], gb[1]), (gb[2], gb[3])]
        energy = GridQuadrature(inner, box=box, n=n, dtype=gdt, refine_tol=1e-4, max_n=2 * n - 1)
        return _Neural(energy, inner, theta0, None, lambda m, gen: energy.sample_equilibrium(theta0, m, gen=gen))
    if exact:                               # an rbm with 2^H enumerable: exact ln Z and draws
        return _Neural(inner, inner, theta0, None, lambda m, gen: inner.sample_equilibrium(theta0, m, gen=gen))
    # no exact ln Z: Delta F by train's estimator (free_energy = auto: AIS from the initial chains)
    return _Neural(inner, inner, theta0, (start[0].tolist(), start[1].tolist()), gaussian_draws)


def grid_note(energy, theta) -> str | None:
    """A note on the grid quadrature behind the true loss, evaluated at ``theta`` (the CLI passes
    replica 0's final theta, so the note is the same after --resume), or None where there is none."""
    import torch

    from ..estimators.evaluate import GridQuadrature

    while energy is not None and not isinstance(energy, GridQuadrature):
        energy = energy.__dict__.get("inner")
    if energy is None:
        return None
    try:
        q = energy.log_partition(torch.as_tensor(theta, dtype=torch.float64))
    except InputError as exc:
        return f"grid quadrature at the final theta (replica 0) failed: {exc}"
    box = " x ".join(f"[{lo:.4g}, {hi:.4g}]" for lo, hi in q.box)
    note = (f"true loss and Delta F by grid quadrature over {box} ({q.n} points per axis); at the final theta "
            f"(replica 0): error estimate {q.error_estimate:.1e}, probability on the box edge {q.boundary_mass:.1e}")
    if max(q.error_estimate, q.boundary_mass) > 1e-3:
        note += " - NOT converged: widen output.grid_box or raise output.grid_n"
    return note
