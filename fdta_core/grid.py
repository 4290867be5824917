"""The one grid renderer of FDTA: contact sheets and sample grids, tiles with captions, frames and marks.

Every picture that lays faces out in rows (the ACG candidate sheet, the CSIM filter's sheet, the STG
sheet, the report's sample grid) is a list of rows of :class:`Cell` drawn by :func:`render_grid`, with
Pillow for pixels and text, so the sheets share one look and one text renderer.

Layout: ``gap`` pixels around and between cells; a cell is a ``tile`` x ``tile`` image inside a frame of
``border`` pixels, with ``caption_height`` pixels of caption lines under it; an optional left column of
``label_width`` pixels carries one label per row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

Colour = tuple[int, int, int]
#: A caption line: text and its colour.
Line = tuple[str, Colour]

RED: Colour = (220, 40, 40)
GREEN: Colour = (40, 180, 60)
WHITE: Colour = (255, 255, 255)
BLACK: Colour = (0, 0, 0)
#: Vertical distance of caption / label lines.
LINE_HEIGHT = 12
ROW_LABEL_LINE_HEIGHT = 14


@dataclass
class Cell:
    """One grid cell. ``image`` is RGB uint8 (resized to the tile when its size differs); ``None`` leaves
    the tile empty. ``frame`` fills the ``border`` around the tile; ``crossed`` marks the tile rejected
    (a red frame and a red X drawn over the image)."""

    image: np.ndarray | None = None
    lines: Sequence[Line] = ()
    frame: Colour | None = None
    crossed: bool = False


@lru_cache(maxsize=1)
def _font() -> Any:
    from PIL import ImageFont

    return ImageFont.load_default()


def _tile_image(img: np.ndarray, tile: int) -> Any:
    from PIL import Image

    pil = Image.fromarray(np.ascontiguousarray(img, dtype=np.uint8)).convert("RGB")
    if pil.size != (tile, tile):
        pil = pil.resize((tile, tile), Image.BILINEAR)
    return pil


def render_grid(
    rows: Sequence[Sequence[Cell | None]],
    *,
    tile: int = 112,
    gap: int = 4,
    border: int = 0,
    caption_height: int = 0,
    background: Colour = (32, 32, 32),
    label_width: int = 0,
    row_labels: Sequence[Sequence[Line]] | None = None,
    n_rows: int | None = None,
    n_cols: int | None = None,
) -> np.ndarray:
    """Draw ``rows`` of cells as one H x W x 3 uint8 image.

    ``n_rows`` / ``n_cols`` reserve space for at least that many rows / columns (pages of equal size);
    by default the grid is as large as ``rows``. A ``None`` cell is left as background.
    """
    from PIL import Image, ImageDraw

    tile = int(tile)
    cell_w, cell_h = tile + 2 * border, tile + 2 * border + caption_height
    cols = max([len(r) for r in rows] + [n_cols or 0, 1])
    nrows = max(len(rows), n_rows or 0, 1)
    width = gap + label_width + cols * (cell_w + gap)
    height = gap + nrows * (cell_h + gap)
    canvas = Image.new("RGB", (width, height), tuple(background))
    draw = ImageDraw.Draw(canvas)
    font = _font()
    for r, row in enumerate(rows):
        y = gap + r * (cell_h + gap)
        if row_labels is not None and r < len(row_labels):
            for i, (text, colour) in enumerate(row_labels[r]):
                draw.text((gap + 6, y + 8 + ROW_LABEL_LINE_HEIGHT * i), text, fill=colour, font=font)
        for c, cell in enumerate(row):
            if cell is None:
                continue
            x = gap + label_width + c * (cell_w + gap)
            if cell.frame is not None and border:
                draw.rectangle([x, y, x + cell_w - 1, y + tile + 2 * border - 1], fill=cell.frame)
            tx, ty = x + border, y + border
            if cell.image is not None:
                canvas.paste(_tile_image(cell.image, tile), (tx, ty))
            if cell.crossed:
                draw.rectangle([tx + 1, ty + 1, tx + tile - 2, ty + tile - 2], outline=RED, width=3)
                draw.line([(tx + 4, ty + 4), (tx + tile - 5, ty + tile - 5)], fill=RED, width=2)
                draw.line([(tx + tile - 5, ty + 4), (tx + 4, ty + tile - 5)], fill=RED, width=2)
            for i, (text, colour) in enumerate(cell.lines):
                draw.text((x + 2, y + tile + 2 * border + 1 + LINE_HEIGHT * i), text, fill=colour, font=font)
    return np.asarray(canvas, dtype=np.uint8)
