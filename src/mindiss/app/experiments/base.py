"""What an experiment returns: data for its figure, tables, key numbers and checks.

An experiment module defines ``NAME``, ``TITLE``, ``CLAIM``, ``CAPTION``,
``run(quick: bool, progress) -> ExperimentResult`` (numbers only, no plotting) and
``plot(result) -> matplotlib.figure.Figure`` (kept separate). ``progress(done, total)`` reports
progress; call it as work completes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable


#: What a check tests (issue 19), in the order the report lists them.
CHECK_KINDS = {
    "independent": "independent reference: code or data from outside this library, or a separately derived "
                   "formula implemented apart from the library code it checks (experiments/references.py "
                   "imports nothing from mindiss)",
    "law": "physical law: Jarzynski, Crooks, the second law, fluctuation-dissipation",
    "identity": "identity: holds by construction of the ledger or the dynamics (a sanity check)",
    "consistency": "consistency: two library code paths agree",
    "tuner": "tuner: an optimiser or root finder of the library hit its own target",
}
#: The kinds that test the library against something outside it.
EXTERNAL_KINDS = ("independent", "law")


@dataclass(frozen=True)
class Check:
    """A measured number against its reference, with a stated tolerance and a declared kind.

    ``mode``: "abs" |m - r| <= tol; "rel" |m - r| <= tol |r|; "se" |m - r| <= tol * se
    (tol standard errors); "ge" m >= r - tol; "le" m <= r + tol.
    ``kind``: what the reference is (``CHECK_KINDS``): "independent", "law", "identity", "consistency"
    or "tuner"; required.
    """

    name: str
    measured: float
    reference: float
    tolerance: float
    mode: str = "rel"
    se: float | None = None
    reference_name: str = ""
    kind: str | None = None

    def __post_init__(self):
        if self.kind not in CHECK_KINDS:
            raise ValueError(f"check {self.name!r} must declare its kind, one of {', '.join(CHECK_KINDS)}; "
                             f"got {self.kind!r}")
        if self.mode not in ("abs", "rel", "se", "ge", "le"):
            raise ValueError(f"unknown check mode {self.mode!r}")
        if self.mode == "se" and not (self.se is not None and self.se > 0):
            raise ValueError(f"check {self.name!r} in mode 'se' needs a positive standard error")

    @property
    def deviation(self) -> float:
        return self.measured - self.reference

    @property
    def passed(self) -> bool:
        return bool(self._passed())

    def _passed(self):
        m, r, tol = self.measured, self.reference, self.tolerance
        if not (math.isfinite(m) and math.isfinite(r)):
            return False
        if self.mode == "abs":
            return abs(m - r) <= tol
        if self.mode == "rel":
            return abs(m - r) <= tol * abs(r)
        if self.mode == "se":
            return abs(m - r) <= tol * self.se
        if self.mode == "ge":
            return m >= r - tol
        return m <= r + tol

    def describe_tolerance(self) -> str:
        return {"abs": f"|diff| <= {self.tolerance:.1e}", "rel": f"rel. diff <= {self.tolerance:.1e}",
                "se": f"|diff| <= {self.tolerance:g} SE", "ge": f"measured >= reference - {self.tolerance:.1e}",
                "le": f"measured <= reference + {self.tolerance:.1e}"}[self.mode]

    def to_dict(self) -> dict:
        return {"name": self.name, "measured": _num(self.measured), "reference": _num(self.reference),
                "reference_name": self.reference_name, "tolerance": self.tolerance, "mode": self.mode,
                "se": _num(self.se) if self.se is not None else None, "passed": self.passed,
                "criterion": self.describe_tolerance(), "kind": self.kind}


@dataclass(frozen=True)
class Table:
    """A table of the report (also written as tables/<name>.csv)."""

    name: str
    columns: list
    rows: list

    def to_dict(self) -> dict:
        return {"name": self.name, "columns": list(self.columns),
                "rows": [[_num(v) if isinstance(v, float) else v for v in row] for row in self.rows]}


@dataclass
class ExperimentResult:
    name: str
    data: dict                       # arrays for the figure (not serialised)
    tables: list = field(default_factory=list)
    checks: list = field(default_factory=list)
    numbers: dict = field(default_factory=dict)   # key figures; an error estimate as key + "_se"
    parameters: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def kind_counts(self) -> dict:
        """{kind: number of checks} over ``CHECK_KINDS`` (zeros included)."""
        return count_kinds(c.kind for c in self.checks)

    def failed_checks(self) -> list:
        """(name, measured, reference, se) of every failing check."""
        return [(c.name, c.measured, c.reference, c.se) for c in self.checks if not c.passed]

    def table(self, name: str, key=None):
        """Rows of the table ``name`` as dicts; keyed by column ``key`` when given."""
        (table,) = [t for t in self.tables if t.name == name]
        rows = [dict(zip(table.columns, row)) for row in table.rows]
        return {r[key]: r for r in rows} if key is not None else rows


def count_kinds(kinds) -> dict:
    """{kind: count} over ``CHECK_KINDS``, zeros included."""
    out = dict.fromkeys(CHECK_KINDS, 0)
    for k in kinds:
        out[k] += 1
    return out


def external_share(counts: dict) -> float:
    """(independent + law) / all checks of a section; NaN without checks."""
    total = sum(counts.values())
    return sum(counts[k] for k in EXTERNAL_KINDS) / total if total else math.nan


def _num(v):
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


Progress = Callable[[int, int], None]


def no_progress(done: int, total: int) -> None:
    """The default progress callback: does nothing."""
