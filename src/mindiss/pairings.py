"""Which backend, energy and sampler go together, stated once as data (no torch import: the config
checks these before anything heavy loads). ``core.contract``, the config schema, the optimiser and
the moments backend all ask ``backend_problem``."""
from __future__ import annotations


def backend_problem(backend: str, *, quadratic: bool, dim: int, sampler: str | None = None,
                    energy_name: str = "this energy") -> str | None:
    """What ``backend`` needs of an energy and a sampler, as data: the one statement of these rules
    (``core.contract``, the config and the optimiser all ask here). None if the pairing is fine.

    moments: a quadratic energy (its chain density stays Gaussian), moved by "exact" or "euler";
    fokker_planck: a one-dimensional energy, moved by the exact generator (no "euler")."""
    if backend == "moments":
        if not quadratic:
            return f"backend 'moments' needs a quadratic energy, not {energy_name}"
        if sampler is not None and sampler not in ("exact", "euler"):
            return f"backend 'moments' supports samplers 'exact' and 'euler', not {sampler!r}"
    if backend == "fokker_planck":
        if dim != 1:
            return f"backend 'fokker_planck' needs a one-dimensional energy, not dim={dim}"
        if sampler == "euler":
            return ("backend 'fokker_planck' evolves the exact Langevin density: use sampler 'exact' "
                    "(Euler-Maruyama's O(dt) bias has no grid representation)")
    return None
