"""Contact sheet of all candidates: chosen one framed, rejections labelled, pages of equal size."""

from __future__ import annotations

import numpy as np

from fdta_core.acg import ACGSettings, FaceAnalysis, contact_sheet, run_acg
from fdta_core.acg.contact import BORDER, CAPTION, COLOURS, LABEL_W
from tests.acg_helpers import FakeSampler, RuleAnalyzer, good, make_plan


def result(n=3, candidates=3, retries=1):
    sampler = FakeSampler()

    def rule(j):
        if j.identity == 1:
            return FaceAnalysis(False)
        return good(j, score=0.5 + 0.1 * j.candidate)

    return run_acg(
        make_plan(n), sampler, 2, settings=ACGSettings(candidates=candidates, retries=retries, batch_size=4),
        analyzer=RuleAnalyzer(sampler, rule),
    )  # fmt: skip


def colour_at(sheet, x, y):
    return tuple(int(v) for v in sheet[y, x])


def test_layout_and_frames():
    res = result()
    tile = 64
    pages = contact_sheet(res, tile=tile, rows_per_page=8)
    assert pages.dtype == np.uint8 and pages.shape[0] == 1
    cell_w, cell_h = tile + 2 * BORDER, tile + 2 * BORDER + CAPTION
    # identity 1 failed twice (2 rounds x 3 candidates): the sheet is 6 candidates wide
    assert pages.shape[1:] == (3 * cell_h, LABEL_W + 6 * cell_w, 3)  # rows shrink to the 3 identities
    sheet = pages[0]
    # row 0: candidates 0 and 1 are runners-up, candidate 2 chosen (top-left pixel of each frame)
    assert colour_at(sheet, LABEL_W + 2 * cell_w + 1, 1) == COLOURS["chosen"]
    assert colour_at(sheet, LABEL_W + 1, 1) == COLOURS["runner_up"]
    # row 1: every candidate rejected (red frame)
    for col in range(6):
        assert colour_at(sheet, LABEL_W + col * cell_w + 1, cell_h + 1) == COLOURS["rejected"]
    # captions are drawn (non-background pixels below the tiles)
    cap = sheet[tile + 2 * BORDER : cell_h, LABEL_W : LABEL_W + cell_w]
    assert (cap != cap[0, 0]).any()


def test_pages_have_equal_size():
    res = result(n=5, retries=0)
    pages = contact_sheet(res, tile=48, rows_per_page=2)
    assert pages.shape[0] == 3
    assert len({p.shape for p in pages}) == 1
    # the last page has one identity row and blank space below it
    assert (pages[2][pages.shape[1] // 2 + 10 :] == pages[2][-1, -1]).all()
