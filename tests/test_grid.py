"""The one grid renderer (fdta_core.grid.render_grid): layout arithmetic, frames, captions, marks."""

from __future__ import annotations

import numpy as np

from fdta_core.grid import RED, Cell, render_grid


def _img(v: int, size: int = 20) -> np.ndarray:
    return np.full((size, size, 3), v, np.uint8)


def test_layout_places_tiles_and_reserves_rows_and_columns():
    rows = [[Cell(_img(10)), Cell(_img(20))], [None, Cell(_img(30))]]
    out = render_grid(rows, tile=20, gap=3, background=(1, 2, 3), n_rows=3, n_cols=4)
    assert out.shape == (3 + 3 * (20 + 3), 3 + 4 * (20 + 3), 3) and out.dtype == np.uint8
    assert (out[3:23, 3:23] == 10).all() and (out[3:23, 26:46] == 20).all()
    assert (out[26:46, 26:46] == 30).all()
    assert (out[26:46, 3:23] == (1, 2, 3)).all()  # the None cell stays background


def test_tiles_are_resized_to_the_tile_size():
    big = np.zeros((64, 64, 3), np.uint8)
    big[:, 32:] = 200
    out = render_grid([[Cell(big)]], tile=16, gap=0)
    assert out.shape == (16, 16, 3)
    assert out[8, 2, 0] < 20 and out[8, 13, 0] > 180


def test_frame_caption_mark_and_row_labels():
    rows = [[Cell(_img(100), [("kept", (0, 255, 0))], frame=(0, 0, 255)), Cell(_img(100), crossed=True)]]
    out = render_grid(
        rows,
        tile=40,
        gap=0,
        border=3,
        caption_height=14,
        background=(0, 0, 0),
        label_width=50,
        row_labels=[[("row", (255, 255, 255))]],
    )
    cell_w = 40 + 6
    assert out.shape == (40 + 6 + 14, 50 + 2 * cell_w, 3)
    assert tuple(out[1, 50 + 1]) == (0, 0, 255)  # frame of the first cell
    assert (out[3:43, 53:93] == 100).all()  # its tile is untouched
    caption = out[46:60, 50 : 50 + cell_w]
    assert (caption[..., 1] > 100).any() and (caption[..., 0] == 0).all()  # green text on black
    crossed = out[3:43, 50 + cell_w + 3 : 50 + cell_w + 43]
    assert tuple(crossed[1, 1]) == RED and tuple(crossed[20, 20]) == RED  # frame and the X's centre
    assert (out[:, :50] > 128).all(-1).any()  # the row label is drawn in the label column
