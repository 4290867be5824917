"""Contact sheet of every ACG candidate: one row per identity, the chosen one framed, rejections labelled.

A person tuning tolerances needs to see *why* candidates were dropped, so each tile carries its
candidate name (``a<attempt>c<candidate>``), detection score and the first rejection reason, and each
row starts with the planned gender/age and the outcome. Large chunks are split into pages of
``rows_per_page`` identities; every page has the same size so the pages form one ComfyUI IMAGE batch.
"""

from __future__ import annotations

import numpy as np

from ..grid import Cell, render_grid
from .engine import ACGResult, CandidateRecord

#: Frame colours by status.
COLOURS = {
    "chosen": (40, 200, 70),
    "unchecked": (120, 160, 255),
    "runner_up": (240, 170, 30),
    "rejected": (220, 50, 50),
    "pending": (128, 128, 128),
}
BORDER = 4
CAPTION = 26
LABEL_W = 150
BG = (24, 24, 24)
FG = (235, 235, 235)


def _caption(rec: CandidateRecord) -> tuple[str, str]:
    a = rec.analysis
    line1 = rec.job.name + ("" if a is None or not a.detected else f" det {a.det_score:.2f}")
    if rec.status == "chosen":
        line2 = "CHOSEN"
    elif rec.status == "unchecked":
        line2 = "kept (unchecked)"
    elif rec.reasons:
        line2 = rec.reasons[0].short + (f" +{len(rec.reasons) - 1}" if len(rec.reasons) > 1 else "")
    else:
        line2 = rec.status
    return line1, line2


def contact_sheet(result: ACGResult, *, tile: int = 128, rows_per_page: int = 16) -> np.ndarray:
    """Render the candidates of ``result`` as uint8 pages [P, H, W, 3]."""
    tile = max(32, int(tile))
    plan = result.plan
    rows_per_page = max(1, min(int(rows_per_page), len(plan)))
    per_slot = [result.records_of(s) for s in range(len(plan))]
    cols = max([len(r) for r in per_slot] + [1])
    pages = []
    n_pages = max(1, -(-len(plan) // rows_per_page))
    for p in range(n_pages):
        rows: list[list[Cell | None]] = []
        labels: list[list[tuple[str, tuple[int, int, int]]]] = []
        for slot in range(p * rows_per_page, min(len(plan), (p + 1) * rows_per_page)):
            spec = plan.identities[slot]
            if slot in result.chosen:
                outcome, colour = "ok", COLOURS["chosen" if result.checked else "unchecked"]
            else:
                outcome, colour = "FAILED", COLOURS["rejected"]
            age = spec.age if spec.age is not None else "?"
            labels.append(
                [(f"identity {spec.index}", FG), (f"{spec.gender or '?'}, {age}", FG), (outcome, colour)]
            )
            row: list[Cell | None] = []
            for rec in per_slot[slot]:
                frame = COLOURS.get(rec.status, COLOURS["pending"])
                l1, l2 = _caption(rec)
                row.append(Cell(rec.thumbnail, [(l1, FG), (l2, frame)], frame=frame))
            rows.append(row)
        pages.append(
            render_grid(
                rows,
                tile=tile,
                gap=0,
                border=BORDER,
                caption_height=CAPTION,
                background=BG,
                label_width=LABEL_W,
                row_labels=labels,
                n_rows=rows_per_page,
                n_cols=cols,
            )
        )
    return np.stack(pages)
