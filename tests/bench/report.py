"""The figures of a run: a table on the terminal and `bench-results.json` with every number."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Figure:
    key: str  # "1", "2", "4a", ...
    name: str
    value: float | None
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    ratio: float | None = None
    ratio_name: str = ""  # what the ratio is, e.g. "receiver / baseline"
    target: str = ""  # human-readable, e.g. ">= 60% of baseline"; empty for informative rows
    met: bool | None = None  # None: informative (no target), or not measured
    note: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0 or math.isnan(denominator):
        return None
    return numerator / denominator


def relative(
    figure: Figure, name: str, baseline: Figure | None, baseline_name: str, target: float, **detail: Any
) -> Figure:
    """`figure` measured against another figure of the same run (`None`: not run): met at `target`
    of it, with no failed responses."""
    value = baseline.value if baseline is not None else None
    share = ratio(figure.value, value)
    return Figure(
        figure.key,
        name,
        figure.value,
        figure.unit,
        value,
        baseline_name if baseline is not None else f"{baseline_name}: not run",
        share,
        "receiver / baseline",
        f">= {target:.0%} of {baseline_name}",
        None if share is None else share >= target and figure.detail["receiver"]["failures"] == 0,
        note=figure.note,
        detail=figure.detail | detail,
    )


def _num(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _met(figure: Figure) -> str:
    if figure.met is None:
        return "-" if figure.target else ""
    return "yes" if figure.met else "NO"


def table(figures: list[Figure]) -> str:
    header = ("#", "figure", "value", "baseline", "ratio", "target", "met")
    rows = [
        (
            f.key,
            f.name,
            f"{_num(f.value)} {f.unit}" if f.value is not None else (f.note or "-"),
            f"{_num(f.baseline)} ({f.baseline_name})" if f.baseline is not None else "-",
            f"{f.ratio:.2f}" if f.ratio is not None else "-",
            f.target or "-",
            _met(f),
        )
        for f in figures
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def _clean(value: Any) -> Any:
    """NaN and infinity are not JSON: they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write_json(path: Path, figures: list[Figure], meta: dict[str, Any]) -> None:
    body = meta | {"figures": [asdict(f) for f in figures]}
    path.write_text(json.dumps(_clean(body), indent=2) + "\n")
