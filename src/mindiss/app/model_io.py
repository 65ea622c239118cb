"""Keep and use a trained network: the model files of a run directory, summaries instead of one
column per weight, the held-out NLL of a 2-D toy run against its data's true density, and the
density + samples figure.

Files (written by ``mindiss train --out DIR`` for mlp / rbm energies, before result.json):

    DIR/model.safetensors   ``theta`` (float64, (P,): replica 0's final parameters), ``chains``
                            (replica 0's final chain states, (N, d)), and the module's parameters by
                            name (``module.<name>``, mlp only) for a plain ``load_state_dict``
    DIR/model.json          how to rebuild the energy (``[energy]`` of the config, d, P), the chain
                            dynamics (sampler, mobility, dt) and the data set's name
    DIR/figures/density.png model density exp(-E) on the grid, data and samples (2-D runs)

Loading reads JSON and safetensors only (no pickle): nothing in a run directory can run code.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError

F64 = torch.float64
FORMAT = "mindiss-model"
VERSION = 1
#: held-out draws of a toy set for test_nll (seed: data.seed + HELD_OUT_SEED_OFFSET)
N_HELD_OUT = 5000
HELD_OUT_SEED_OFFSET = 1_000_003
NEURAL = ("mlp", "rbm")


# ---------------------------------------------------------------------------- summaries

def _inner(energy):
    """The network under any wrappers (GridQuadrature)."""
    while energy is not None and "inner" in energy.__dict__:
        energy = energy.__dict__["inner"]
    return energy


def parameter_blocks(energy) -> list[tuple[str, int, int]]:
    """[(name, start, stop)] of theta's slices: the module's parameter tensors (mlp) or W, b, c (rbm)."""
    inner = _inner(energy)
    if hasattr(inner, "_names"):
        out, start = [], 0
        for name, size in zip(inner._names, inner._sizes):
            out.append((name, start, start + size))
            start += size
        return out
    if hasattr(inner, "n_hidden"):
        d, h = inner.dim, inner.n_hidden
        return [("W", 0, d * h), ("b", d * h, d * h + d), ("c", d * h + d, d * h + d + h)]
    return [("theta", 0, inner.n_params)]


def summary_of(theta, blocks) -> dict:
    """|theta| and the norm of each parameter block ``norm_<name>`` (float)."""
    th = np.asarray(theta, dtype=np.float64)
    out = {"theta_norm": float(np.linalg.norm(th))}
    for name, a, b in blocks:
        out[f"norm_{name}"] = float(np.linalg.norm(th[a:b]))
    return out


def history_summary(history, energy):
    """The history with the theta_i columns replaced by theta_norm, update_norm (|theta_k - theta at
    the previous record|; 0 in row 0) and one norm per parameter block; every other column kept."""
    from ..core.results import History

    cols = list(history.columns)
    idx = [i for i, c in enumerate(cols) if c.startswith("theta_") and c[6:].isdigit()]
    if not idx:
        return history
    values = np.asarray(history.values)
    thetas = values[:, idx]
    blocks = parameter_blocks(energy)
    rows = [summary_of(th, blocks) for th in thetas]
    step = np.zeros(len(thetas))
    if len(thetas) > 1:
        step[1:] = np.linalg.norm(np.diff(thetas, axis=0), axis=1)
    names = list(rows[0])
    new = np.column_stack([[r[n] for r in rows] for n in names] + [step])
    first = idx[0]
    keep = [i for i in range(len(cols)) if i not in set(idx)]
    before = [i for i in keep if i < first]
    after = [i for i in keep if i > first]
    out_cols = tuple([cols[i] for i in before] + names + ["update_norm"] + [cols[i] for i in after])
    out_vals = np.column_stack([values[:, before], new, values[:, after]])
    return History(out_cols, out_vals)


def result_dict(res, energy, evaluation: dict | None = None) -> dict:
    """``res.to_dict()``; for networks the weights (theta0, theta_final and their per-replica forms)
    are replaced by ``theta_summary`` (norms; the weights are in model.safetensors)."""
    out = res.to_dict()
    inner = _inner(energy)
    if inner is not None and type(inner).__name__ in ("NeuralEnergy", "GaussianBernoulliRBM"):
        blocks = parameter_blocks(inner)
        for key in ("theta0", "theta_final", "theta_final_se", "replica_theta_final"):
            out.pop(key, None)
        finals = [summary_of(th, blocks) for th in res.replica_theta_final]
        out["theta_summary"] = {"n_params": int(inner.n_params), "weights_file": "model.safetensors",
                                "theta0": summary_of(res.theta0, blocks), "replica_final": finals}
    if evaluation:
        out.update(evaluation)
    return out


# ---------------------------------------------------------------------------- held-out NLL

def evaluate_toy(cfg: dict, energy, res) -> dict:
    """test_nll (grid quadrature, per replica and their mean) and true_density_nll on N_HELD_OUT fresh
    draws of the toy set (seed data.seed + HELD_OUT_SEED_OFFSET), their gap with its standard error
    (paired over the draws, replica 0; the replica spread in ``test_nll_se``), and the quadratures'
    error estimates. Empty for other data."""
    from ..data import toy as D
    from ..estimators.evaluate import GridQuadrature, nll

    name = cfg["data"]["kind"]
    grid = energy
    while grid is not None and not isinstance(grid, GridQuadrature):
        grid = grid.__dict__.get("inner")
    if name not in D.TOY or grid is None:
        return {}
    x = D.toy(name, N_HELD_OUT, gen=cfg["data"]["seed"] + HELD_OUT_SEED_OFFSET)
    true = D.true_log_density(name, x)
    per, errs, edges = [], [], []
    diff0 = None
    for theta in res.replica_theta_final:
        th = torch.tensor(theta, dtype=F64)
        q = grid.log_partition(th)
        n = nll(grid.inner, th, x, q)
        per.append(n.nll)
        errs.append(q.error_estimate)
        edges.append(q.boundary_mass)
        if diff0 is None:
            e = grid.inner.energy(x.to(grid.grid_dtype), th).to(F64)
            diff0 = e + q.log_partition + true.log_density
    test = float(np.mean(per))
    test_se = float(np.std(per, ddof=1) / math.sqrt(len(per))) if len(per) > 1 else math.nan
    tnll = float(-true.log_density.mean())
    out = {"test_nll": test, "test_nll_se": test_se, "replica_test_nll": per,
           "true_density_nll": tnll,
           "true_density_nll_se": float(true.log_density.std() / math.sqrt(x.shape[0])),
           "test_nll_gap": test - tnll,
           "test_nll_gap_se": float(diff0.std() / math.sqrt(x.shape[0])),
           "test_nll_quadrature_error": float(max(errs)), "test_nll_boundary_mass": float(max(edges)),
           "true_density_error": true.error_estimate, "true_density_method": true.method,
           "n_held_out": N_HELD_OUT, "held_out_seed": cfg["data"]["seed"] + HELD_OUT_SEED_OFFSET}
    if not math.isfinite(out["test_nll_gap_se"]):
        out["test_nll_gap_se"] = None
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}


# ---------------------------------------------------------------------------- model files

def save_model(path, cfg: dict, energy, res) -> None:
    """model.safetensors + model.json in run directory ``path`` (replica 0's final theta and chains)."""
    from safetensors.torch import save

    from ..io import atomic_write_bytes, atomic_write_text

    inner = _inner(energy)
    theta = torch.tensor(res.replica_theta_final[0], dtype=F64)
    tensors = {"theta": theta.contiguous()}
    if res.final_chains is not None:
        tensors["chains"] = torch.as_tensor(res.final_chains).detach().cpu().contiguous()
    if hasattr(inner, "module_at"):
        for name, p in inner.module_at(theta).state_dict().items():
            tensors[f"module.{name}"] = p.detach().cpu().contiguous()
    dyn = cfg["dynamics"]
    dts = np.asarray(res.dts, float)
    meta = {"format": FORMAT, "version": VERSION, "energy": {k: v for k, v in cfg["energy"].items()
                                                             if k != "theta0"},
            "dim": int(inner.dim), "n_params": int(inner.n_params), "label": repr(inner),
            "sampler": "mala" if dyn["sampler"] == "exact" else dyn["sampler"], "mobility": dyn["mobility"],
            "dt": float(dts[dts > 0][-1]) if (dts > 0).any() else 0.01,
            "data": cfg["data"]["kind"], "data_seed": cfg["data"].get("seed"),
            "chains": "replica 0's final chain states" if "chains" in tensors else None,
            "box": [list(b) for b in getattr(_grid(energy), "box", ())] or None}
    buf = save(tensors, metadata={"format": FORMAT})
    atomic_write_bytes(Path(path) / "model.safetensors", buf)
    atomic_write_text(Path(path) / "model.json", json.dumps(meta, indent=2, sort_keys=True) + "\n")


def _grid(energy):
    from ..estimators.evaluate import GridQuadrature

    while energy is not None and not isinstance(energy, GridQuadrature):
        energy = energy.__dict__.get("inner")
    return energy


class Model:
    """A trained network loaded from a run directory: ``energy``, ``theta``, kept ``chains`` (or None),
    and ``meta`` (model.json)."""

    def __init__(self, energy, theta, chains, meta):
        self.energy, self.theta, self.chains, self.meta = energy, theta, chains, meta


def load_model(run_dir) -> Model:
    """Rebuild the energy from model.json and load theta (and the chains) from model.safetensors."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"RUN_DIR {str(run_dir)!r} is not a directory")
    jp, wp = run_dir / "model.json", run_dir / "model.safetensors"
    if not (jp.is_file() and wp.is_file()):
        raise InputError(f"{str(run_dir)!r} holds no trained model (model.json and model.safetensors): "
                         "train an mlp or rbm energy with mindiss train --out DIR")
    try:
        meta = json.loads(jp.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {jp}: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise InputError(f"{jp} is not a {FORMAT} file of version {VERSION}")
    try:
        tensors = load_file(str(wp))
    except (OSError, SafetensorError, ValueError) as exc:
        raise InputError(f"cannot read {wp}: {exc}") from None
    energy = build_energy(meta)
    theta = tensors.get("theta")
    if theta is None or theta.dtype != F64 or tuple(theta.shape) != (energy.n_params,):
        raise InputError(f"{wp}: 'theta' must be float64 of shape ({energy.n_params},)")
    chains = tensors.get("chains")
    if chains is not None and (chains.ndim != 2 or chains.shape[1] != energy.dim):
        raise InputError(f"{wp}: 'chains' must have shape (N, {energy.dim})")
    return Model(energy, theta, chains, meta)


def build_energy(meta: dict):
    """The energy of model.json's ``energy`` table (mlp: the architecture; rbm: hidden units, sigma)."""
    from ..energies.neural import NeuralEnergy
    from ..energies.rbm import GaussianBernoulliRBM

    e, d = meta.get("energy", {}), meta.get("dim")
    try:
        if e.get("kind") == "mlp":
            return NeuralEnergy.mlp(int(d), [int(h) for h in e["hidden"]], str(e["activation"]),
                                    float(e["confinement"]), gen=0)
        if e.get("kind") == "rbm":
            return GaussianBernoulliRBM(int(d), int(e["hidden"][0]), sigma=e["sigma"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"model.json's energy table is incomplete or invalid: {exc}") from None
    raise InputError(f"model.json: energy kind {e.get('kind')!r} is not a network (mlp or rbm)")


# ---------------------------------------------------------------------------- figure

def write_density_figure(path, energy, theta, data, samples, *, box=None, n: int = 201) -> None:
    """figures/density.png: exp(-E_theta) on an n x n grid over ``box`` (default: the data range
    padded by 20 %), with the data and the samples beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import io as _io

    import matplotlib.pyplot as plt

    from ..io import atomic_write_bytes

    data = np.asarray(data, dtype=float)
    samples = np.asarray(samples, dtype=float)
    if box is None:
        lo, hi = data.min(0), data.max(0)
        pad = 0.2 * (hi - lo)
        box = [(lo[0] - pad[0], hi[0] + pad[0]), (lo[1] - pad[1], hi[1] + pad[1])]
    gx = torch.linspace(box[0][0], box[0][1], n, dtype=F64)
    gy = torch.linspace(box[1][0], box[1][1], n, dtype=F64)
    pts = torch.stack(torch.meshgrid(gx, gy, indexing="ij"), -1).reshape(-1, 2)
    inner = _inner(energy)
    e = inner.energy(pts.to(torch.float32), torch.as_tensor(theta, dtype=F64)).reshape(n, n)
    dens = torch.exp(-(e - e.min())).numpy()
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.3))
    ext = [box[0][0], box[0][1], box[1][0], box[1][1]]
    axes[0].imshow(dens.T, origin="lower", extent=ext, aspect="equal", cmap="viridis")
    axes[0].set_title("model density exp(-E) (unnormalised)")
    for ax, pts_, title in ((axes[1], data, f"data ({len(data)} draws)"),
                            (axes[2], samples, f"model samples: the {len(samples)} kept chains")):
        ax.scatter(pts_[:, 0], pts_[:, 1], s=2, alpha=0.4)
        ax.set_xlim(*box[0])
        ax.set_ylim(*box[1])
        ax.set_aspect("equal")
        ax.set_title(title)
    for ax in axes:
        ax.set_xlabel("x1")
        ax.set_ylabel("x2")
    fig.tight_layout()
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    atomic_write_bytes(Path(path) / "figures" / "density.png", buf.getvalue())


# ---------------------------------------------------------------------------- the run directory hook

def write_run_model(path, cfg: dict, energy, res, data) -> dict:
    """What ``RunDir.write_result`` adds for networks: the model files, the density figure (2-D) and
    the toy evaluation; returns the evaluation's fields for result.json ({} for other energies)."""
    if cfg["energy"]["kind"] not in NEURAL:
        return {}
    save_model(path, cfg, energy, res)
    inner = _inner(energy)
    if inner.dim == 2 and res.final_chains is not None and torch.is_tensor(data):
        write_density_figure(path, energy, res.replica_theta_final[0], data.cpu(), res.final_chains)
    return evaluate_toy(cfg, energy, res)
