"""The per-stage table of a run so far: the stage timings each done chunk's prompt reported (the
dataset writer's ``fdta_stages`` UI output, kept in the run manifest), summed per stage, plus the prompts'
own wall time (queue to history), which shows what the server spent outside the FDTA stages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..timing import format_stage_table, stage_table, timings_from_outputs


def run_stage_summary(manifest_path: str | Path) -> dict[str, Any]:
    """``{"stages": [...rows of stage_table...], "chunks_done": n, "prompt_seconds": s,
    "stage_seconds": t, "chunks_without_timings": k}`` for every done chunk of a run manifest file."""
    p = Path(manifest_path)
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError):
        data = {}
    timings: list[dict[str, Any]] = []
    done = missing = 0
    prompt_s = 0.0
    for rec in (data.get("chunks") or {}).values():
        if rec.get("state") != "done":
            continue
        done += 1
        t = timings_from_outputs(rec.get("outputs") or {})
        missing += not t
        timings.extend(t)
        if rec.get("started") and rec.get("finished"):
            prompt_s += float(rec["finished"]) - float(rec["started"])
    rows = stage_table(timings)
    return {
        "stages": rows,
        "chunks_done": done,
        "chunks_without_timings": missing,
        "prompt_seconds": round(prompt_s, 3),
        "stage_seconds": round(sum(r["seconds"] for r in rows), 3),
    }


def format_run_stages(summary: dict[str, Any]) -> str:
    """The summary as text: the stage table, then prompt wall time vs time inside the stages."""
    lines = [format_stage_table(summary["stages"])]
    ps, ss = summary["prompt_seconds"], summary["stage_seconds"]
    lines.append(
        f"{summary['chunks_done']} chunk(s) done; prompts took {ps:.2f} s end to end (queue to history), "
        f"{ss:.2f} s of it inside the FDTA stages" + (f" ({100 * ss / ps:.0f}%)" if ps > 0 else "")
    )
    if summary["chunks_without_timings"]:
        lines.append(
            f"{summary['chunks_without_timings']} done chunk(s) reported no stage timings (a workflow "
            "without FDTADatasetWriter, or written by an older FDTA)"
        )
    return "\n".join(lines)
