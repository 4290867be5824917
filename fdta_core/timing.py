"""Where the time goes: each FDTA stage's wall time and images per second, per chunk.

Every node that makes or filters a faceset appends one :class:`StageTiming` to the faceset it hands on
(``FaceSet.timings``); the dataset writer adds its own and stores them all with the chunk (manifest table
``stages`` and ``chunk.json``), so a data set says what each of its chunks cost, stage by stage. The
runner and ``fdta report`` sum them into one per-stage table (:func:`stage_table`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class StageTiming:
    """One stage's run over one chunk: ``seconds`` of wall time for ``images`` images."""

    stage: str  # acg, align, stg, age, csim, write, ...
    node: str  # the node (or library call) that ran it, e.g. FDTASTGMixer
    seconds: float
    images: int
    chunk: str = ""  # the planned chunk's name ("" for a faceset without a plan)
    started: float = 0.0  # Unix time the stage started

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "images_per_s": round(self.images_per_s, 3)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StageTiming:
        return cls(
            str(d.get("stage", "")),
            str(d.get("node", "")),
            float(d.get("seconds", 0.0)),
            int(d.get("images", 0)),
            str(d.get("chunk", "") or ""),
            float(d.get("started", 0.0) or 0.0),
        )


class StageClock:
    """``clock = StageClock(); ...work...; out = clock.stamp(out, parent, "stg", "FDTASTGMixer", n)``."""

    def __init__(self) -> None:
        self.started = time.time()
        self._t0 = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self._t0

    def timing(self, stage: str, node: str, images: int, chunk: str = "") -> StageTiming:
        return StageTiming(stage, node, round(self.elapsed(), 6), int(images), chunk, round(self.started, 3))

    def stamp(self, out: Any, parent: Any, stage: str, node: str, images: int) -> Any:
        """Give ``out`` (a FaceSet) the timings of ``parent`` (the faceset it came from, or None) plus
        this stage's; returns ``out``."""
        from .plan import chunk_name

        stamp = getattr(out, "chunk", None)
        chunk = chunk_name(stamp.start, stamp.end) if stamp is not None else ""
        before = list(getattr(parent, "timings", []) or [])
        out.timings = [*before, self.timing(stage, node, images, chunk)]
        return out


#: the pipeline's order, for tables (unknown stages follow, alphabetically)
STAGE_ORDER = ("acg", "align", "stg", "age", "csim", "write")


def stage_table(timings: Iterable[StageTiming | Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per stage: chunks, images, seconds (summed over chunks), images/s and share of all stage time.

    Images/s is total images over total seconds (a slow chunk weighs by its time, as in the run)."""
    agg: dict[str, dict[str, Any]] = {}
    for t in timings:
        t = t if isinstance(t, StageTiming) else StageTiming.from_dict(t)
        a = agg.setdefault(
            t.stage, {"stage": t.stage, "nodes": set(), "chunks": set(), "images": 0, "seconds": 0.0}
        )
        a["nodes"].add(t.node)
        a["chunks"].add(t.chunk)
        a["images"] += t.images
        a["seconds"] += t.seconds
    total = sum(a["seconds"] for a in agg.values()) or 1.0
    order = {s: i for i, s in enumerate(STAGE_ORDER)}
    rows = []
    for name in sorted(agg, key=lambda s: (order.get(s, len(order)), s)):
        a = agg[name]
        rows.append(
            {
                "stage": name,
                "nodes": sorted(n for n in a["nodes"] if n),
                "chunks": len(a["chunks"]),
                "images": a["images"],
                "seconds": round(a["seconds"], 3),
                "images_per_s": round(a["images"] / a["seconds"], 2) if a["seconds"] > 0 else 0.0,
                "share": round(a["seconds"] / total, 4),
            }
        )
    return rows


def format_stage_table(rows: list[dict[str, Any]]) -> str:
    """The table as text (one line per stage and a total line)."""
    if not rows:
        return "per-stage time: no stage timings recorded yet"
    head = (
        f"{'stage':<8} {'node':<22} {'chunks':>6} {'images':>8} {'seconds':>10} {'images/s':>10} {'share':>6}"
    )
    lines = ["per-stage time (wall time of each stage, summed over chunks):", head, "-" * len(head)]
    for r in rows:
        node = ",".join(r["nodes"])[:22]
        lines.append(
            f"{r['stage']:<8} {node:<22} {r['chunks']:>6} {r['images']:>8} {r['seconds']:>10.2f} "
            f"{r['images_per_s']:>10.3g} {100 * r['share']:>5.1f}%"
        )
    lines.append(f"{'total':<8} {'':<22} {'':>6} {'':>8} {sum(r['seconds'] for r in rows):>10.2f}")
    return "\n".join(lines)


#: key of the dataset writer's UI output that carries the chunk's stage timings to the prompt history
STAGES_UI_KEY = "fdta_stages"


def timings_from_outputs(outputs: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The stage timings in a prompt's history outputs (``{node_id: {STAGES_UI_KEY: [...]}}``)."""
    out: list[dict[str, Any]] = []
    for v in (outputs or {}).values():
        if isinstance(v, Mapping):
            out.extend(d for d in v.get(STAGES_UI_KEY) or () if isinstance(d, Mapping))
    return out
