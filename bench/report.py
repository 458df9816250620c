"""Figures, ratios and the table: what a phase reports, and how the run prints it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (nan if empty)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def ms(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:.1f}"


def num(value: float, digits: int = 0) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.{digits}f}"


@dataclass(frozen=True)
class Target:
    """`ratio <op> bound`: e.g. Target(">=", 2.0) for "tasksvc at least twice the baseline"."""

    op: str
    bound: float
    unit: str = "x"

    def met(self, value: float) -> bool | None:
        if math.isnan(value):
            return None
        return value >= self.bound if self.op == ">=" else value <= self.bound

    def __str__(self) -> str:
        sign = "≥" if self.op == ">=" else "≤"
        return f"{sign} {self.bound:g}{'x' if self.unit == 'x' else ' ' + self.unit}"


@dataclass(frozen=True)
class Row:
    """One line of the table: tasksvc's figure, the baseline's, their ratio and the target."""

    figure: str
    tasksvc: str
    baseline: str = ""
    ratio: float = math.nan  # tasksvc / baseline (or the checked value when there is no baseline)
    target: Target | None = None
    ratio_text: str = ""  # shown instead of the ratio, when set

    @property
    def met(self) -> bool | None:
        return self.target.met(self.ratio) if self.target is not None else None

    def cells(self) -> list[str]:
        if self.ratio_text:
            ratio = self.ratio_text
        elif math.isnan(self.ratio):
            ratio = ""
        else:
            ratio = f"{self.ratio:.2f}x"
        met = {True: "yes", False: "NO", None: ""}[self.met]
        return [self.figure, self.tasksvc, self.baseline, ratio, str(self.target or ""), met]


@dataclass
class PhaseResult:
    name: str
    rows: list[Row]
    raw: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "rows": [{**asdict(r), "target": str(r.target or ""), "met": r.met} for r in self.rows],
            "raw": self.raw,
            "notes": self.notes,
        }


HEADER = ["figure", "tasksvc", "baseline", "ratio", "target", "met"]


def table(results: Sequence[PhaseResult]) -> str:
    """Ratio rows first (the figures the SPEC judges), then the detail rows, in phase order."""
    rows = [r for p in results for r in p.rows]
    judged = [r for r in rows if r.target is not None]
    detail = [r for r in rows if r.target is None]
    lines = [HEADER, *[r.cells() for r in judged]]
    if detail:
        lines += [["", "", "", "", "", ""], *[r.cells() for r in detail]]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]
    out = []
    for i, line in enumerate(lines):
        out.append(
            "  ".join(
                cell.ljust(w) if j == 0 else cell.rjust(w) for j, (cell, w) in enumerate(zip(line, widths, strict=True))
            ).rstrip()
        )
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    notes = [f"- {n}" for p in results for n in p.notes]
    return "\n".join(out + (["", *notes] if notes else []))
