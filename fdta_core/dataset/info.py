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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError
from ..imagecodec import check_jpeg
from ..recordio import IRHeader, Layout, RecordReader, read_layout, read_property, unpack
from .manifest import MANIFEST_NAME, open_manifest
from .writer import CHUNKS_DIR, list_chunks

log = logging.getLogger(__name__)

_MAX_LISTED = 50
_LABEL_LIMIT = 1 << 24


class _Report:
    """Collects readable problems; past ``max_listed`` errors only a count is kept."""

    def __init__(self, max_listed: int) -> None:
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self.more = 0
        self.max_listed = max_listed

    def error(self, text: str | None) -> None:
        if not text:
            return
        if len(self.errors) < self.max_listed:
            self.errors.append(text)
        else:
            self.more += 1

    def finish(self) -> tuple[list[str], list[str]]:
        if self.more:
            self.errors.append(f"... and {self.more} more error(s)")
            self.more = 0
        return self.errors, self.warnings


@dataclass
class ChunkSummary:
    """One chunk of a dataset folder as :func:`inspect` found it."""

    path: str
    images: int
    classes: int
    layout: str
    ok: bool


@dataclass
class InfoReport:
    """What :func:`inspect` found: counts, layout and every problem as a readable string.

    ``manifest_rows`` is ``None`` when no manifest was checked; ``chunks`` is ``None`` for a single
    record set and lists the chunks of a dataset folder.
    """

    path: str
    images: int = 0
    classes: int = 0
    layout: str = "plain"
    ok: bool = False
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    records: int = 0
    property: list[int] | None = None
    decoded: bool = True
    manifest_rows: int | None = None
    chunks: list[ChunkSummary] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form ``fdta rec info --json`` prints (``chunks`` only for a dataset folder)."""
        out = asdict(self)
        if self.chunks is None:
            del out["chunks"]
        else:
            del out["manifest_rows"]
        return out


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
) -> InfoReport:
    """Check a RecordIO set (or a dataset folder of chunks) and say what is wrong, never raise."""
    p = Path(path)
    if p.is_dir() and not (p / "train.rec").exists() and (p / CHUNKS_DIR).is_dir():
        return _inspect_dataset(p, decode=decode, workers=workers, progress=progress, max_listed=max_listed)
    report = _Report(max_listed)
    out = InfoReport(path=str(p), decoded=decode, errors=report.errors, warnings=report.warnings)
    try:
        rec, idx = resolve_rec(p)
        reader = RecordReader(rec, idx if idx.is_file() else None)
    except DatasetError as exc:
        report.error(str(exc))
        return _finish(out, report)
    if reader.idx_path is None:
        report.warnings.append(f"{idx} not found: keys are record positions (0, 1, ...)")
    with reader:
        out.records = len(reader.keys)
        structure = _check_structure(reader, report)
        if structure.layout is not None:
            out.layout = structure.layout.kind
            out.images = structure.layout.num_images
            out.classes = structure.layout.num_classes
        out.property = list(structure.prop) if structure.prop is not None else None
        labels = _scan(reader, structure, report, decode=decode, workers=workers, progress=progress)
        layout = structure.layout
        if layout is not None and layout.kind != "insightface":
            report.warnings.extend(_label_set_warnings(labels, structure.prop, reader.rec_path.parent))
        manifest = reader.rec_path.parent / MANIFEST_NAME
        if layout is not None and layout.kind == "insightface" and manifest.is_file():
            out.manifest_rows = _check_manifest(manifest, layout.image_keys, labels, report)
    return _finish(out, report)


def _finish(out: InfoReport, report: _Report) -> InfoReport:
    out.errors, out.warnings = report.finish()
    out.ok = not out.errors
    return out


@dataclass
class _Structure:
    """What the header, identity records and ``property`` say, read before the pass over the records.

    ``expected_label[key]`` is the class the identity records assign to image ``key`` (insightface only).
    """

    layout: Layout | None
    prop: tuple[int, int, int] | None
    expected_label: np.ndarray | None

    @property
    def image_keys(self) -> list[int]:
        return self.layout.image_keys if self.layout is not None else []


def _check_structure(reader: RecordReader, report: _Report) -> _Structure:
    """Layout (for insightface: the header and identity records only) and ``property``."""
    folder = reader.rec_path.parent
    try:
        layout = read_layout(reader)
    except DatasetError as exc:
        report.error(str(exc))
        layout = None
    prop = None
    if (folder / "property").is_file():
        try:
            prop = read_property(folder)
        except DatasetError as exc:
            report.error(str(exc))
    expected_label = None
    if layout is not None and layout.kind == "insightface":
        if prop is None:
            report.warnings.append(f"{folder / 'property'} is missing (rec2image and some tools expect it)")
        expected_label = _check_insightface(reader, layout, prop, folder, report)
    return _Structure(layout, prop, expected_label)


def _image_index(image_keys: list[int]) -> Callable[[int], int]:
    """``key -> position among the image keys`` (-1 for a non-image record), O(1) for contiguous keys."""
    n = len(image_keys)
    for first in (1, 0):
        if image_keys == list(range(first, n + first)):
            return lambda key, first=first: key - first if 0 <= key - first < n else -1
    position = {k: i for i, k in enumerate(image_keys)}
    return lambda key: position.get(key, -1)


def _framing_problem(rec: Path, key: int, off: int, expected: int) -> str | None:
    """A gap or an overlap between the record at ``off`` and the end of the previous one."""
    if off > expected:
        return f"{rec}: {off - expected} unindexed byte(s) at offset {expected} (before key {key})"
    if off < expected:
        return f"{rec}: key {key} at offset {off} overlaps the previous record (ends at {expected})"
    return None


def _tail_problem(rec: Path, size: int, end: int) -> str | None:
    """Bytes after the last indexed record, or an index that points past the file."""
    if end < size:
        return f"{rec}: {size - end} trailing byte(s) after the last indexed record (offset {end})"
    if end > size:
        return f"{rec}: the index points past the end of the file ({size} bytes)"
    return None


def _label_of(key: int, header: IRHeader, structure: _Structure) -> tuple[int | None, list[str]]:
    """The integer class an image record carries, and what is wrong with it."""
    if header.is_array and not header.label:
        return None, [f"key {key}: image record has an empty label array"]
    label = header.label[0] if header.is_array else header.label
    if not float(label).is_integer() or not 0 <= label < _LABEL_LIMIT:
        return None, [f"key {key}: label {label:g} is not an integer class id in 0..2^24"]
    problems = []
    cls = int(label)
    expected = structure.expected_label
    if expected is not None and expected[key] != cls:
        problems.append(
            f"key {key}: label {cls} disagrees with the identity record that covers it "
            f"(class {int(expected[key])})"
        )
    if structure.prop is not None and not 0 <= label < structure.prop[0]:
        problems.append(f"key {key}: label {cls} is outside 0..{structure.prop[0] - 1} (property)")
    return cls, problems


def _scan(
    reader: RecordReader,
    structure: _Structure,
    report: _Report,
    *,
    decode: bool,
    workers: int | None,
    progress: Callable[[int, int], None] | None,
) -> np.ndarray:
    """The one pass over every record in file order: framing and tiling, labels, JPEG payloads.

    Returns the label of each image key (in ``structure.image_keys`` order; -1 where unreadable).
    """
    rec = reader.rec_path
    index = _image_index(structure.image_keys)
    labels = np.full(len(structure.image_keys), -1, np.int64)
    prop = structure.prop
    size_expected = (prop[2], prop[1]) if prop is not None else None
    jobs: list[tuple[int, bytes]] = []
    pool = concurrent.futures.ThreadPoolExecutor(workers or os.cpu_count() or 1) if decode else None

    def flush() -> None:
        if pool is not None:
            results = list(pool.map(lambda kv: _jpeg_problem(kv[0], kv[1], True, size_expected), jobs))
        else:
            results = [_jpeg_problem(k, b, False, size_expected) for k, b in jobs]
        for problem in results:
            report.error(problem)
        jobs.clear()

    order = sorted(reader.keys, key=reader.offset)
    total = len(order)
    end = 0
    try:
        for done, key in enumerate(order, 1):
            if progress is not None and done % 1024 == 0:
                progress(done, total)
            off = reader.offset(key)
            report.error(_framing_problem(rec, key, off, end))
            try:
                record = reader.read(key)
            except DatasetError as exc:
                report.error(f"key {key}: {exc}")
                end = max(end, off + 1)
                continue
            end = reader._file().tell()
            i = index(key)
            if i < 0:
                continue
            try:
                header, payload = unpack(record)
            except DatasetError as exc:
                report.error(f"key {key}: {exc}")
                continue
            label, problems = _label_of(key, header, structure)
            for problem in problems:
                report.error(problem)
            if label is None:
                continue
            labels[i] = label
            jobs.append((key, payload))
            if len(jobs) >= 256:
                flush()
        flush()
    finally:
        if pool is not None:
            pool.shutdown()
    report.error(_tail_problem(rec, rec.stat().st_size, end))
    if progress is not None:
        progress(total, total)
    return labels


def _label_set_warnings(labels: np.ndarray, prop: tuple[int, int, int] | None, folder: Path) -> list[str]:
    """Gaps in the class ids of a set without identity records, and a ``property`` that disagrees."""
    valid = labels[labels >= 0]
    if not valid.size:
        return []
    out = []
    n_classes = int(valid.max()) + 1
    present = np.unique(valid)
    if present.size != n_classes:
        out.append(f"labels are not contiguous: {present.size} distinct labels, max {n_classes - 1}")
    if prop is not None and prop[0] != n_classes:
        out.append(f"{folder / 'property'} says {prop[0]} classes, the labels say {n_classes}")
    return out


def _check_insightface(
    reader: RecordReader, layout: Layout, prop: tuple[int, int, int] | None, folder: Path, report: _Report
) -> np.ndarray:
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


def _check_manifest(manifest: Path, keys: list[int], labels: np.ndarray, report: _Report) -> int | None:
    """Compare ``manifest.sqlite`` with the records; returns its number of image rows."""
    try:
        with open_manifest(manifest) as conn:
            rows = int(conn.execute("SELECT count(*) FROM images").fetchone()[0])
            if rows != len(keys):
                report.error(f"{manifest}: {rows} rows for {len(keys)} images")
                return rows
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
            return rows
    except DatasetError as exc:
        report.error(str(exc))
        return None


def _inspect_dataset(
    root: Path,
    *,
    decode: bool,
    workers: int | None,
    progress: Callable[[int, int], None] | None,
    max_listed: int,
) -> InfoReport:
    report = _Report(max_listed)
    chunks = list_chunks(root)
    out = InfoReport(
        path=str(root),
        layout="insightface",
        decoded=decode,
        chunks=[],
        errors=report.errors,
        warnings=report.warnings,
    )
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
        out.chunks.append(ChunkSummary(sub.path, sub.images, sub.classes, sub.layout, sub.ok))
        out.images += sub.images
        out.classes += sub.classes
        out.records += sub.records
        for e in sub.errors:
            report.error(f"chunk {info.name}: {e}")
        if sub.layout != "insightface":
            report.error(f"chunk {info.name}: layout {sub.layout}, expected insightface")
        if sub.images != info.images or sub.classes != info.classes:
            report.error(
                f"chunk {info.name}: chunk.json says {info.images} images / {info.classes} classes, "
                f"the records hold {sub.images} / {sub.classes}"
            )
        if progress is not None:
            progress(out.images, out.images)
    return _finish(out, report)
