"""Old import paths (before the subpackage layout) kept for one release, deprecated.

``import mindiss.chains`` still works and warns; it is the module ``mindiss.backends.chains``.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

#: old module (under mindiss) -> its new place
MOVED = {
    "autocorrelation": "rates.relaxation",
    "backends": "backends.dispatch",
    "bench": "app.bench",
    "bounds": "estimators.bounds",
    "chains": "backends.chains",
    "checkpoint": "core.checkpoint",
    "cli": "app.cli",
    "config": "app.config",
    "config_neural": "app.config_neural",
    "data": "data.base",
    "datasets": "data.toy",
    "distributed": "backends.sharded",
    "energies": "energies.base",
    "evaluate": "estimators.evaluate",
    "experiments": "app.experiments",
    "expfamily": "energies.expfamily",
    "fokker_planck": "backends.fokker_planck",
    "free_energy": "estimators.free_energy",
    "ledger": "core.ledger",
    "moments": "estimators.references",
    "neural": "energies.neural",
    "optim": "adapters.optim",
    "optimal": "rates.optimal",
    "preconditioners": "rates.preconditioners",
    "rbm": "energies.rbm",
    "recipes": "rates.recipes",
    "replica": "core.state",
    "report": "app.report",
    "results": "core.results",
    "rundir": "app.rundir",
    "samplers": "backends.samplers",
    "schedules": "rates.schedules",
    "summary": "core.summary",
    "tracker": "adapters.tracker",
    "train": "core.train",
}


class _AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith("mindiss."):
            return None
        old = fullname[len("mindiss."):]
        for o, n in MOVED.items():
            if old == o or old.startswith(o + "."):
                if o == n.split(".")[0] and old == o:
                    return None   # the package of the same name (mindiss.backends, mindiss.data)
                return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        old = spec.name[len("mindiss."):]
        for o, n in MOVED.items():
            if old == o or old.startswith(o + "."):
                new = "mindiss." + n + old[len(o):]
                warnings.warn(f"mindiss.{old} moved to {new}; the old path goes in the next release",
                              DeprecationWarning, stacklevel=3)
                module = importlib.import_module(new)
                sys.modules[spec.name] = module
                return module
        raise ImportError(spec.name)

    def exec_module(self, module):
        pass

    def _new_name(self, fullname: str) -> str:
        old = fullname[len("mindiss."):]
        for o, n in MOVED.items():
            if old == o or old.startswith(o + "."):
                return "mindiss." + n + old[len(o):]
        raise ImportError(fullname)

    def get_code(self, fullname):
        """``python -m mindiss.cli`` (runpy): the code of the module's new place."""
        new = self._new_name(fullname)
        return compile(f"import runpy\nrunpy.run_module({new!r}, run_name='__main__', alter_sys=True)\n",
                       f"<mindiss alias {fullname}>", "exec")

    def is_package(self, fullname) -> bool:
        return importlib.util.find_spec(self._new_name(fullname)).submodule_search_locations is not None


def install() -> None:
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        sys.meta_path.append(_AliasFinder())
