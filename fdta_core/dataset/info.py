"""``rec info``: counts, layout and an integrity check of every record of a RecordIO set.

Checks, each reported as a readable string naming the file, key and offset:

* the ``.idx`` parses, its offsets fall on record boundaries and the records tile the ``.rec`` (no gap,
  no overlap, no trailing bytes, no truncated last record);
* every record has the magic, a sane header and (for images) integer labels in range;
* every image payload is a JPEG (SOI/EOI markers; a full decode unless ``decode=False``) of the size
  in ``property``;
* insightface layout: header label ``[N+1, N+C+1]``, keys ``1..N`` all present, identity ranges tile
  ``1..N`` in order and agree with the image labels, ``property`` says ``C``;
* a ``manifest.sqlite`` beside the records has one row per image with the same label.

A dataset folder of chunks is checked chunk by chunk (plus overlaps between chunks).
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError
from ..imagecodec import check_jpeg
from ..recordio import RecordReader, read_layout, read_property, unpack
from .manifest import MANIFEST_NAME, open_manifest
from .writer import CHUNKS_DIR, list_chunks

log = logging.getLogger(__name__)

_MAX_LISTED = 50
_LABEL_LIMIT = 1 << 24


class _Report:
    def __init__(self, max_listed: int) -> None:
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self.more = 0
        self.max_listed = max_listed

    def error(self, text: str) -> None:
        if len(self.errors) < self.max_listed:
            self.errors.append(text)
        else:
            self.more += 1


def resolve_rec(path: str | os.PathLike) -> tuple[Path, Path]:
    """``(rec, idx)`` for a folder holding ``train.rec`` or a ``.rec`` file."""
    p = Path(path)
    rec = p / "train.rec" if p.is_dir() else p
    if not rec.is_file():
        raise DatasetError(
            f"{rec} not found", fix="pass a folder holding train.rec/train.idx, or a .rec file."
        )
    return rec, rec.with_suffix(".idx")


def inspect(
    path: str | os.PathLike,
    *,
    decode: bool = True,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    max_listed: int = _MAX_LISTED,
) -> dict[str, Any]:
    """Check a RecordIO set (or a dataset folder of chunks); returns a JSON-able dict.

    Keys: ``path``, ``images``, ``classes``, ``layout`` (``insightface``/``dali``/``plain``), ``ok``,
    ``errors`` (readable strings), ``warnings``, ``records``, ``property``, ``decoded``, ``manifest_rows``.
    """
    p = Path(path)
    if p.is_dir() and not (p / "train.rec").exists() and (p / CHUNKS_DIR).is_dir():
        return _inspect_dataset(p, decode=decode, workers=workers, progress=progress, max_listed=max_listed)
    report = _Report(max_listed)
    out: dict[str, Any] = {
        "path": str(p),
        "images": 0,
        "classes": 0,
        "layout": "plain",
        "ok": False,
        "errors": report.errors,
        "warnings": report.warnings,
        "records": 0,
        "property": None,
        "decoded": decode,
        "manifest_rows": None,
    }
    try:
        rec, idx = resolve_rec(p)
        reader = RecordReader(rec, idx if idx.is_file() else None)
    except DatasetError as exc:
        report.error(str(exc))
        return _finish(out, report)
    if reader.idx_path is None:
        report.warnings.append(f"{idx} not found: keys are record positions (0, 1, ...)")
    with reader:
        _check(reader, out, report, decode=decode, workers=workers, progress=progress)
    return _finish(out, report)


def _finish(out: dict[str, Any], report: _Report) -> dict[str, Any]:
    if report.more:
        report.errors.append(f"... and {report.more} more error(s)")
    out["ok"] = not report.errors
    return out


def _check(
    reader: RecordReader,
    out: dict[str, Any],
    report: _Report,
    *,
    decode: bool,
    workers: int | None,
    progress: Callable[[int, int], None] | None,
) -> None:
    rec = reader.rec_path
    size = rec.stat().st_size
    out["records"] = len(reader.keys)
    folder = rec.parent
    # ---- layout (reads only the header and identity records for the insightface layout)
    try:
        layout = read_layout(reader)
    except DatasetError as exc:
        report.error(str(exc))
        layout = None
    prop = None
    if (folder / "property").is_file():
        try:
            prop = read_property(folder)
            out["property"] = list(prop)
        except DatasetError as exc:
            report.error(str(exc))
    expected_label: np.ndarray | None = None
    image_keys: list[int] = []
    if layout is not None:
        out["layout"] = layout.kind
        out["images"] = layout.num_images
        out["classes"] = layout.num_classes
        image_keys = layout.image_keys
        if layout.kind == "insightface":
            if prop is None:
                report.warnings.append(
                    f"{folder / 'property'} is missing (rec2image and some tools expect it)"
                )
            expected_label = _check_insightface(reader, layout, prop, folder, report)
    n_img = len(image_keys)
    if image_keys == list(range(1, n_img + 1)):
        first = 1
        position = None
    elif image_keys == list(range(n_img)):
        first = 0
        position = None
    else:
        first = 0
        position = {k: i for i, k in enumerate(image_keys)}
    labels = np.full(n_img, -1, np.int64)
    size_expected = (prop[2], prop[1]) if prop is not None else None
    jobs: list[tuple[int, bytes]] = []
    pool = concurrent.futures.ThreadPoolExecutor(workers or os.cpu_count() or 1) if decode else None

    def flush() -> None:
        if not jobs:
            return
        if pool is not None:
            results = list(pool.map(lambda kv: _jpeg_problem(kv[0], kv[1], True, size_expected), jobs))
        else:
            results = [_jpeg_problem(k, b, False, size_expected) for k, b in jobs]
        for problem in results:
            if problem:
                report.error(problem)
        jobs.clear()

    # ---- one pass over every record in file order: framing, tiling, then image checks
    order = sorted(reader.keys, key=reader.offset)
    total = len(order)
    expected_next = 0
    try:
        for done, key in enumerate(order, 1):
            if progress is not None and done % 1024 == 0:
                progress(done, total)
            off = reader.offset(key)
            if off > expected_next:
                report.error(
                    f"{rec}: {off - expected_next} unindexed byte(s) at offset {expected_next} (before key {key})"
                )
            elif off < expected_next:
                report.error(
                    f"{rec}: key {key} at offset {off} overlaps the previous record (ends at {expected_next})"
                )
            try:
                record = reader.read(key)
            except DatasetError as exc:
                report.error(f"key {key}: {exc}")
                expected_next = max(expected_next, off + 1)
                continue
            expected_next = reader._file().tell()
            if position is None:
                i = key - first
                if not 0 <= i < n_img:
                    continue
            else:
                i = position.get(key, -1)
                if i < 0:
                    continue
            try:
                header, payload = unpack(record)
            except DatasetError as exc:
                report.error(f"key {key}: {exc}")
                continue
            if header.is_array and not header.label:
                report.error(f"key {key}: image record has an empty label array")
                continue
            label = header.label[0] if header.is_array else header.label
            if not float(label).is_integer() or not 0 <= label < _LABEL_LIMIT:
                report.error(f"key {key}: label {label:g} is not an integer class id in 0..2^24")
                continue
            labels[i] = int(label)
            if expected_label is not None and expected_label[key] != labels[i]:
                report.error(
                    f"key {key}: label {int(label)} disagrees with the identity record that covers it "
                    f"(class {int(expected_label[key])})"
                )
            if prop is not None and not 0 <= label < prop[0]:
                report.error(f"key {key}: label {int(label)} is outside 0..{prop[0] - 1} (property)")
            jobs.append((key, payload))
            if len(jobs) >= 256:
                flush()
        flush()
    finally:
        if pool is not None:
            pool.shutdown()
    if expected_next < size:
        report.error(
            f"{rec}: {size - expected_next} trailing byte(s) after the last indexed record (offset {expected_next})"
        )
    elif expected_next > size:
        report.error(f"{rec}: the index points past the end of the file ({size} bytes)")
    if progress is not None:
        progress(total, total)
    if layout is None:
        return
    if layout.kind != "insightface" and labels.size:
        valid = labels[labels >= 0]
        if valid.size:
            present = np.unique(valid)
            if present.size != int(valid.max()) + 1:
                report.warnings.append(
                    f"labels are not contiguous: {present.size} distinct labels, max {int(valid.max())}"
                )
            if prop is not None and prop[0] != int(valid.max()) + 1:
                report.warnings.append(
                    f"{folder / 'property'} says {prop[0]} classes, the labels say {int(valid.max()) + 1}"
                )
    manifest = folder / MANIFEST_NAME
    if manifest.is_file() and layout.kind == "insightface":
        _check_manifest(manifest, image_keys, labels, out, report)


def _check_insightface(reader: RecordReader, layout, prop, folder: Path, report: _Report) -> np.ndarray:
    """Header/identity-record structure; returns the class each image key must carry (index = key)."""
    rec = reader.rec_path
    n, c = layout.num_images, layout.num_classes
    extra = [k for k in reader.keys if not 0 <= k <= n + c]
    if extra:
        report.error(f"{rec}: {len(extra)} key(s) outside 0..{n + c} (first {extra[0]})")
    missing = [k for k in layout.image_keys if k not in reader]
    if missing:
        report.error(f"{len(missing)} image key(s) listed by the header are absent (first {missing[0]})")
    pos = 1
    expected = np.full(n + 1, -1, np.int64)
    for i, (s, e) in enumerate(layout.identity_ranges):
        if s != pos:
            report.error(f"identity record {n + 1 + i}: range [{s}, {e}) should start at key {pos}")
        if e <= s:
            report.error(f"identity record {n + 1 + i}: empty or reversed range [{s}, {e})")
        lo, hi = max(s, 1), min(max(e, s), n + 1)
        expected[lo:hi] = i
        pos = max(pos, e)
    if pos != n + 1 and c:
        report.error(f"identity ranges end at key {pos}, the header says images end at key {n + 1}")
    if prop is not None and prop[0] != c:
        report.error(f"{folder / 'property'} says {prop[0]} classes, the header says {c}")
    return expected


def _jpeg_problem(key: int, payload: bytes, decode: bool, size: tuple[int, int] | None) -> str | None:
    try:
        got = check_jpeg(payload, decode=decode, where=f"key {key}")
    except DatasetError as exc:
        return str(exc)
    if got is not None and size is not None and tuple(got) != size:
        return f"key {key}: image is {got[0]}x{got[1]}, property says {size[0]}x{size[1]}"
    return None


def _check_manifest(
    manifest: Path, keys: list[int], labels: np.ndarray, out: dict[str, Any], report: _Report
) -> None:
    try:
        with open_manifest(manifest) as conn:
            rows = conn.execute("SELECT count(*) FROM images").fetchone()[0]
            out["manifest_rows"] = int(rows)
            if rows != len(keys):
                report.error(f"{manifest}: {rows} rows for {len(keys)} images")
                return
            want = dict(zip(keys, labels.tolist(), strict=True))
            bad = 0
            for key, label in conn.execute("SELECT key, label FROM images ORDER BY key"):
                if want.get(key, None) != label:
                    bad += 1
                    if bad == 1:
                        report.error(
                            f"{manifest}: row for key {key} says label {label}, the record says {want.get(key)}"
                        )
            if bad > 1:
                report.error(f"{manifest}: {bad} rows disagree with the records")
    except DatasetError as exc:
        report.error(str(exc))


def _inspect_dataset(
    root: Path,
    *,
    decode: bool,
    workers: int | None,
    progress: Callable[[int, int], None] | None,
    max_listed: int,
) -> dict[str, Any]:
    report = _Report(max_listed)
    chunks = list_chunks(root)
    out: dict[str, Any] = {
        "path": str(root),
        "images": 0,
        "classes": 0,
        "layout": "insightface",
        "ok": False,
        "errors": report.errors,
        "warnings": report.warnings,
        "records": 0,
        "property": None,
        "decoded": decode,
        "chunks": [],
    }
    if not chunks:
        report.error(f"{root / CHUNKS_DIR} holds no committed chunk")
    unfinished = [e.name for e in (root / CHUNKS_DIR).iterdir() if e.name.startswith((".tmp-", ".old-"))]
    if unfinished:
        report.warnings.append(f"unfinished writes (not part of the set): {', '.join(unfinished)}")
    prev = None
    for info in chunks:
        if prev is not None and info.start < prev.end:
            report.error(f"chunk {info.name} overlaps chunk {prev.name}")
        prev = info
        sub = inspect(info.path, decode=decode, workers=workers, max_listed=max_listed)
        out["chunks"].append({k: sub[k] for k in ("path", "images", "classes", "layout", "ok")})
        out["images"] += sub["images"]
        out["classes"] += sub["classes"]
        out["records"] += sub["records"]
        for e in sub["errors"]:
            report.error(f"chunk {info.name}: {e}")
        if sub["layout"] != "insightface":
            report.error(f"chunk {info.name}: layout {sub['layout']}, expected insightface")
        if sub["images"] != info.images or sub["classes"] != info.classes:
            report.error(
                f"chunk {info.name}: chunk.json says {info.images} images / {info.classes} classes, "
                f"the records hold {sub['images']} / {sub['classes']}"
            )
        if progress is not None:
            progress(out["images"], out["images"])
    return _finish(out, report)
