"""``rec shuffle`` (DALI layout) and ``rec2image`` (a folder per identity)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError
from ..recordio import IRHeader, RecordReader, RecordWriter, pack, read_layout, unpack
from .info import resolve_rec
from .merge import staged_folder

log = logging.getLogger(__name__)


def shuffle(
    path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Write the images of ``path`` in the DALI layout: no header or identity records, scalar labels,
    records in a seeded random order under new keys ``0..N-1``.

    Like arcface_torch's ``scripts/shuffle_rec.py``: the image keys are permuted with
    ``numpy.random.RandomState(seed).shuffle``; records with a scalar label are copied byte for byte,
    array-labelled images get their first label as a scalar.
    """
    rec, idx = resolve_rec(path)
    out = Path(out)
    with RecordReader(rec, idx if idx.is_file() else None) as reader:
        layout = read_layout(reader)
        keys = np.asarray(layout.image_keys, dtype=np.int64)
        np.random.RandomState(int(seed)).shuffle(keys)
        with staged_folder(out) as tmp, RecordWriter(tmp / "train.rec", tmp / "train.idx") as w:
            for new_key, key in enumerate(keys.tolist()):
                record = reader.read(key)
                header, payload = unpack(record)
                if header.is_array:
                    if not header.label:
                        raise DatasetError(f"{rec}: record {key} has an empty label array")
                    record = pack(IRHeader(0, float(header.label[0]), header.id, header.id2), payload)
                w.write(new_key, record)
                if progress is not None and (new_key + 1) % 1024 == 0:
                    progress(new_key + 1, len(keys))
    if progress is not None:
        progress(len(keys), len(keys))
    return {"path": str(out), "images": int(len(keys)), "classes": layout.num_classes, "seed": int(seed)}


def rec2image(
    path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Extract every image to ``out/<label>/<key>.jpg`` (the stored JPEG bytes, not re-encoded), one
    folder per identity as insightface's ``rec2image`` does."""
    rec, idx = resolve_rec(path)
    out = Path(out)
    made: set[int] = set()
    with staged_folder(out) as tmp, RecordReader(rec, idx if idx.is_file() else None) as reader:
        layout = read_layout(reader)
        total = layout.num_images
        for i, key in enumerate(layout.image_keys):
            header, payload = unpack(reader.read(key))
            label = header.label[0] if header.is_array else header.label
            label = int(label)
            folder = tmp / str(label)
            if label not in made:
                folder.mkdir()
                made.add(label)
            (folder / f"{key}.jpg").write_bytes(payload)
            if progress is not None and (i + 1) % 1024 == 0:
                progress(i + 1, total)
        summary = {"source": str(rec), "images": total, "classes": len(made), "layout": layout.kind}
        (tmp / "rec2image.json").write_text(json.dumps(summary, indent=1))
    summary["path"] = str(out)
    return summary
