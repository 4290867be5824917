"""Payloads of the live run view: what a node tells the frontend's run panel after a step.

Plain JSON-able dicts built from core records. Sending them is the caller's business (a callback: in
ComfyUI ``nodes/_server.py`` forwards them through ``PromptServer.send_sync``), so ``fdta_core`` never
imports a server. Histograms use fixed bins (:data:`CSIM_BINS` over :data:`CSIM_RANGE`) so that the panel
can add up the chunks of a run.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

#: ``send(kind, payload)``: how a node hands an event to whoever shows it.
EventSink = Callable[[str, dict[str, Any]], None]

CSIM_RANGE = (-0.2, 1.0)
CSIM_BINS = 24


def csim_histogram_counts(csim: np.ndarray) -> list[int]:
    """Counts of finite CSIM values in :data:`CSIM_BINS` equal bins over :data:`CSIM_RANGE` (values
    outside are clipped into the end bins)."""
    v = np.asarray(csim, np.float64)
    v = np.clip(v[np.isfinite(v)], CSIM_RANGE[0], CSIM_RANGE[1])
    counts, _ = np.histogram(v, bins=CSIM_BINS, range=CSIM_RANGE)
    return [int(c) for c in counts]


def csim_event(stats: Any) -> dict[str, Any]:
    """What the CSIM filter did to this chunk (a :class:`fdta_core.faces.csim.CSIMStats`): images in,
    kept and dropped by reason, identities kept and dropped, and the CSIM histogram."""
    s = stats.summary()
    return {
        "images_in": s["images_in"],
        "images_kept": s["images_kept"],
        "dropped": {
            "csim": s["rejected_by_csim"],
            "leak": s["rejected_as_leak"],
            "identity": s["dropped_with_identity"],
        },
        "identities_in": s["identities_in"],
        "identities_kept": s["identities_kept"],
        "dropped_identities": list(s["dropped_identities"])[:50],
        "threshold": float(stats.threshold),
        "csim_mean": s["csim_mean"],
        "csim_std": s["csim_std"],
        "histogram": {"range": list(CSIM_RANGE), "counts": csim_histogram_counts(stats.csim)},
    }


def chunk_event(
    dataset: str | os.PathLike, info: Any, output_root: str | os.PathLike | None = None
) -> dict[str, Any]:
    """A chunk was committed (a :class:`fdta_core.dataset.writer.ChunkInfo`); paths relative to
    ``output_root`` when the data set lies inside it (what the panel's routes accept)."""
    path = Path(dataset).resolve()
    rel = str(path)
    if output_root is not None:
        root = Path(output_root).resolve()
        if path == root or root in path.parents:
            rel = path.relative_to(root).as_posix()
    return {
        "dataset": rel,
        "chunk": info.name,
        "start": int(info.start),
        "end": int(info.end),
        "images": int(info.images),
        "classes": int(info.classes),
        "seconds": float(info.seconds),
    }
