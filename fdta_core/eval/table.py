"""The accuracy table in the layout of FDTA's Table 1, with the published rows beside the model's.

Columns are LFW, CFP-FP, CPLFW, AgeDB, CALFW and their average; a benchmark result goes into a column by
its ``.bin`` file name (``lfw``, ``cfp_fp``, ``cplfw``, ``agedb_30``, ``calfw``, case-insensitive).
The published rows (DESIGN 5.7) are data, with their sources, in ``data/published_table1.json``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from .verification import VerificationResult

#: Benchmark file stem -> column header, in the column order of FDTA Table 1.
TABLE1_COLUMNS: dict[str, str] = {
    "lfw": "LFW",
    "cfp_fp": "CFP-FP",
    "cplfw": "CPLFW",
    "agedb_30": "AgeDB",
    "calfw": "CALFW",
}


@dataclass
class TableRow:
    """One row: accuracy in percent per column (``None`` where the benchmark was not run)."""

    name: str
    values: list[float | None]
    average: float | None
    source: str = ""


@dataclass
class PaperTable:
    """The model's row, the published rows and the benchmarks that have no column."""

    model: TableRow
    published: list[TableRow]
    extra: list[VerificationResult] = field(default_factory=list)
    title: str = ""
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        def row(r: TableRow) -> dict[str, Any]:
            return {
                "name": r.name,
                **dict(zip(TABLE1_COLUMNS, r.values, strict=True)),
                "average": r.average,
                **({"source": r.source} if r.source else {}),
            }

        return {
            "columns": [*TABLE1_COLUMNS, "average"],
            "model": row(self.model),
            "published": [row(r) for r in self.published],
            "other_benchmarks": {r.name: round(100 * r.accuracy_mean, 2) for r in self.extra},
        }


def published_rows() -> tuple[list[TableRow], str, str]:
    """The published rows of FDTA Table 1 with their sources, and the table's title and note."""
    text = resources.files(__package__).joinpath("data", "published_table1.json").read_text(encoding="utf-8")
    data = json.loads(text)
    assert data["columns"] == list(TABLE1_COLUMNS), "published_table1.json columns are out of order"
    rows = [
        TableRow(r["name"], [float(v) for v in r["values"]], float(r["average"]), r["source"])
        for r in data["rows"]
    ]
    return rows, data.get("title", ""), data.get("note", "")


def column_of(name: str) -> str | None:
    """The Table 1 column key of a benchmark named by its file stem, or ``None``."""
    key = name.strip().lower()
    return key if key in TABLE1_COLUMNS else None


def paper_table(results: Sequence[VerificationResult], model_name: str = "this model") -> PaperTable:
    """Place ``results`` into Table 1's columns; the average is given only when all five were run."""
    by_col: dict[str, float] = {}
    extra: list[VerificationResult] = []
    for r in results:
        col = column_of(r.name)
        if col is None or col in by_col:
            extra.append(r)
        else:
            by_col[col] = round(100 * r.accuracy_mean, 2)
    values = [by_col.get(c) for c in TABLE1_COLUMNS]
    average = round(sum(values) / len(values), 2) if all(v is not None for v in values) else None
    published, title, note = published_rows()
    return PaperTable(TableRow(model_name, values, average), published, extra, title, note)


def format_paper_table(table: PaperTable) -> str:
    """Fixed-width text: the header, the model's row, a rule, the published rows, then notes."""
    names = [table.model.name, *(r.name for r in table.published)]
    w = max(18, *(len(n) + 2 for n in names))
    head = f"{'train set':<{w}}" + "".join(f"{h:>8}" for h in TABLE1_COLUMNS.values()) + f"{'avg':>8}"

    def fmt(r: TableRow) -> str:
        cells = [f"{v:8.2f}" if v is not None else f"{'-':>8}" for v in r.values]
        avg = f"{r.average:8.2f}" if r.average is not None else f"{'-':>8}"
        return f"{r.name:<{w}}" + "".join(cells) + avg

    lines = [head, fmt(table.model), "-" * len(head), *(fmt(r) for r in table.published)]
    missing = [
        TABLE1_COLUMNS[c] for c, v in zip(TABLE1_COLUMNS, table.model.values, strict=True) if v is None
    ]
    if missing:
        lines.append(f"(not run: {', '.join(missing)}; the average needs all five)")
    for r in table.extra:
        lines.append(f"{r.name}: {100 * r.accuracy_mean:.2f} (no column in Table 1)")
    if table.title:
        lines.append(f"published rows: {table.title}")
    return "\n".join(lines)
