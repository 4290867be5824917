"""Join chunks (from one or many machines) into one insightface-layout ``train.rec``.

Identities are renumbered contiguously ``0..C-1`` in the order of their *original* identity id, so the
result does not depend on which machine wrote which chunk or on the order of the arguments. With
``renumber=True`` the inputs are independent data sets whose identity ids may overlap (Syn-MS1M and
Syn-MPIE both start at identity 0): labels run over the inputs in the order given, each input's identities
kept apart (in their own id order), and the merged identity id is the new label; the original id and input
are kept in each image's ``extra`` (``source_set``, ``source_identity``) and in ``merge.json``. Images get
keys ``1..N`` grouped by identity, identity records ``N+1..N+C``, the header at key 0. JPEG payloads
are copied, never re-encoded. The merged ``manifest.sqlite`` maps every new key/label to the original
identity, chunk and key (built with SQL, in constant memory). The output folder is written under a
temporary name and renamed into place when complete.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DatasetError
from ..fsutil import atomic_write_text, fsync_dir, swap_folder
from ..recordio import IRHeader, RecordReader, RecordWriter, pack, read_layout, read_property, unpack
from .manifest import (
    DROPPED_COLUMNS,
    IMAGE_COLUMNS,
    MANIFEST_NAME,
    STAGE_COLUMNS,
    ManifestWriter,
    image_row,
    read_identities,
)
from .writer import CHUNKS_DIR, list_chunks, read_missing

log = logging.getLogger(__name__)


@dataclass
class _Identity:
    identity: int
    source: int
    label: int
    first_key: int
    end_key: int
    group: int = 0


@dataclass
class _Source:
    path: Path
    name: str
    reader: RecordReader
    manifest: Path | None
    size: tuple[int, int]


@dataclass(frozen=True)
class MergedDataset:
    """``FDTA_DATASET`` handed on by the merge node: the merged folder (one ``train.rec``) and its counts."""

    path: str
    images: int
    classes: int
    renumbered: bool = False

    @property
    def dataset(self) -> str:
        return self.path

    def train_folder(self) -> str:
        return self.path


def expand_inputs(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Chunk/record folders named by ``paths``: a dataset folder (``chunks/``) stands for its committed
    chunks; a folder with ``train.rec`` stands for itself."""
    return [p for p, _ in _expand_grouped(paths)]


def _expand_grouped(paths: Sequence[str | os.PathLike]) -> list[tuple[Path, int]]:
    """Like :func:`expand_inputs`, each folder with the index of the argument it came from."""
    out: list[tuple[Path, int]] = []
    for group, raw in enumerate(paths):
        p = Path(raw)
        if (p / "train.rec").is_file():
            out.append((p, group))
        elif (p / CHUNKS_DIR).is_dir():
            chunks = list_chunks(p)
            if not chunks:
                raise DatasetError(f"{p / CHUNKS_DIR} holds no committed chunk")
            out.extend((Path(c.path), group) for c in chunks)
        else:
            raise DatasetError(
                f"{p} is neither a chunk/record folder (train.rec) nor a dataset folder (chunks/)",
                fix="pass chunk folders, dataset folders or merged outputs.",
            )
    if not out:
        raise DatasetError("nothing to merge", fix="pass at least one chunk or dataset folder.")
    seen: dict[Path, int] = {}
    for p, _ in out:
        r = p.resolve()
        if r in seen:
            raise DatasetError(f"{p} is given twice", fix="pass each chunk or dataset once.")
        seen[r] = 1
    return out


def _open_source(path: Path, index: int, group: int = 0) -> tuple[_Source, list[_Identity]]:
    reader = RecordReader(path / "train.rec")
    layout = read_layout(reader)
    if layout.kind != "insightface":
        raise DatasetError(
            f"{path} is in the {layout.kind} layout; merge needs the insightface layout (header + identity records)",
            fix="merge chunk folders or merged outputs, not shuffled (DALI) sets.",
        )
    try:
        c, h, w = read_property(path)
        size = (h, w)
    except DatasetError:
        size = (112, 112)
    manifest = path / MANIFEST_NAME
    idents: list[_Identity] = []
    if manifest.is_file():
        rows = read_identities(manifest)
        if len(rows) != layout.num_classes:
            raise DatasetError(f"{manifest}: {len(rows)} identities, the records hold {layout.num_classes}")
        for (label, identity, _chunk, s, e), (rs, re_) in zip(rows, layout.identity_ranges, strict=True):
            if (s, e) != (rs, re_):
                raise DatasetError(
                    f"{manifest}: identity {identity} covers keys [{s}, {e}), the records say [{rs}, {re_})"
                )
            idents.append(_Identity(identity, index, label, s, e, group))
    else:
        log.warning("%s has no %s: original identity ids are taken to be its labels", path, MANIFEST_NAME)
        for label, (s, e) in enumerate(layout.identity_ranges):
            idents.append(_Identity(label, index, label, s, e, group))
    src = _Source(path, path.name, reader, manifest if manifest.is_file() else None, size)
    return src, idents


def _temp_and_old(out: Path) -> tuple[Path, Path]:
    return (out.with_name(f".{out.name}.tmp-{os.getpid()}"), out.with_name(f".{out.name}.old-{os.getpid()}"))


def fresh_temp_folder(out: Path) -> Path:
    """An empty temporary sibling of ``out`` (a leftover of this pid is removed) to build into, so
    that ``out`` only ever appears complete, through :func:`replace_folder`."""
    tmp, _ = _temp_and_old(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    return tmp


def replace_folder(tmp: Path, out: Path) -> None:
    """Put the finished folder ``tmp`` at ``out`` (:func:`~fdta_core.fsutil.swap_folder`); only an
    empty folder or an earlier output of these tools (``train.rec``/``rec2image.json``) is replaced."""
    if out.exists():
        if not out.is_dir():
            raise DatasetError(f"{out} exists and is not a folder")
        if any(out.iterdir()) and not (out / "train.rec").exists() and not (out / "rec2image.json").exists():
            raise DatasetError(
                f"{out} exists and holds other files; refusing to replace it",
                fix="choose a new output folder or remove it.",
            )
    swap_folder(tmp, out, old=_temp_and_old(out)[1])


def merge(
    out: str | os.PathLike,
    paths: Sequence[str | os.PathLike],
    *,
    renumber: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Merge chunks/datasets into ``out`` (``train.rec``, ``train.idx``, ``property``,
    ``manifest.sqlite``, ``merge.json``); returns a summary dict.

    ``renumber``: the arguments are independent sets (ids may overlap); labels run over them in the
    order given. Without it, identity ids must be unique over all inputs and set the order.
    """
    t0 = time.perf_counter()
    out = Path(out)
    grouped = _expand_grouped(paths)
    if not grouped:
        raise DatasetError("nothing to merge", fix="pass at least one chunk or dataset folder.")
    sources: list[_Source] = []
    idents: list[_Identity] = []
    try:
        for i, (folder, group) in enumerate(grouped):
            src, ids = _open_source(folder, i, group)
            sources.append(src)
            idents.extend(ids)
        sizes = {s.size for s in sources}
        if len(sizes) > 1:
            raise DatasetError(f"inputs have different image sizes {sorted(sizes)}; cannot merge")
        idents.sort(key=(lambda x: (x.group, x.identity)) if renumber else (lambda x: x.identity))
        for a, b in zip(idents, idents[1:], strict=False):
            if a.identity == b.identity and (a.group == b.group or not renumber):
                raise DatasetError(
                    f"identity {a.identity} appears in {sources[a.source].path} and {sources[b.source].path}",
                    fix=(
                        "merge each identity range once (remove the duplicate chunk)"
                        + (
                            "."
                            if renumber or a.group == b.group
                            else ", or pass --renumber (renumber=True) to merge independent data sets."
                        )
                    ),
                )
        n = sum(x.end_key - x.first_key for x in idents)
        c = len(idents)
        if n == 0:
            raise DatasetError("the inputs hold no images")
        if n + c + 1 >= 1 << 24:
            log.warning("%d records: keys beyond 2^24 are no longer exact as float32 labels", n + c + 1)
        with staged_folder(out) as tmp:
            inputs = _input_summary(paths, idents) if renumber else None
            _write_merged(tmp, sources, idents, n, c, progress, renumber=renumber, inputs=inputs)
            size = next(iter(sizes))
            atomic_write_text(tmp / "property", f"{c},{size[0]},{size[1]}")
            summary = {
                "images": n,
                "classes": c,
                "sources": [str(s.path) for s in sources],
                "identity_min": 0 if renumber else idents[0].identity,
                "identity_max": c - 1 if renumber else idents[-1].identity,
                "renumbered": bool(renumber),
                "created": time.time(),
                "seconds": round(time.perf_counter() - t0, 3),
            }
            if inputs is not None:
                summary["inputs"] = inputs
            atomic_write_text(tmp / "merge.json", json.dumps(summary, indent=1))
    finally:
        for s in sources:
            s.reader.close()
    summary["path"] = str(out)
    log.info("merged %d source(s) into %s: %d images, %d identities", len(sources), out, n, c)
    return summary


@contextlib.contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """A fresh temporary folder beside ``out``: it replaces ``out`` (fsynced, atomically) when the block
    finishes and is removed when the block fails, so ``out`` is never half-written."""
    tmp = fresh_temp_folder(out)
    try:
        yield tmp
        fsync_dir(tmp)
        replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _input_summary(paths: Sequence[str | os.PathLike], idents: list[_Identity]) -> list[dict[str, Any]]:
    """Per argument of a renumbered merge: its label range and the original identity ids it covered."""
    out = []
    for group, raw in enumerate(paths):
        labels = [lab for lab, x in enumerate(idents) if x.group == group]
        ids = [x.identity for x in idents if x.group == group]
        out.append(
            {
                "path": str(raw),
                "label_start": labels[0] if labels else None,
                "label_end": labels[-1] + 1 if labels else None,
                "identity_min": min(ids) if ids else None,
                "identity_max": max(ids) if ids else None,
                "classes": len(ids),
            }
        )
    return out


def _write_merged(
    tmp: Path,
    sources: list[_Source],
    idents: list[_Identity],
    n: int,
    c: int,
    progress: Callable[[int, int], None] | None,
    *,
    renumber: bool = False,
    inputs: list[dict[str, Any]] | None = None,
) -> None:
    manifest = ManifestWriter(tmp / MANIFEST_NAME)
    try:
        with RecordWriter(tmp / "train.rec", tmp / "train.idx") as w:
            w.write(0, pack(IRHeader(2, (float(n + 1), float(n + c + 1)), 0, 0)))
            key = 1
            bounds = []
            for label, ident in enumerate(idents):
                reader = sources[ident.source].reader
                first = key
                for k in range(ident.first_key, ident.end_key):
                    header, payload = unpack(reader.read(k))
                    w.write(key, pack(IRHeader(0, float(label), key, 0), payload))
                    key += 1
                bounds.append((first, key))
                manifest.add_identity(
                    label, label if renumber else ident.identity, sources[ident.source].name, first, key
                )
                if progress is not None:
                    progress(key - 1, n)
            for label, (s, e) in enumerate(bounds):
                w.write(n + 1 + label, pack(IRHeader(2, (float(s), float(e)), n + 1 + label, 0)))
        _merge_manifests(manifest, sources, idents, bounds, renumber=renumber)
        meta: dict[str, Any] = {"images": n, "classes": c, "merged_from": [str(s.path) for s in sources]}
        # planned identities without images stay on record, with why (an empty chunk is all of this)
        meta["missing"] = [
            {**m, "chunk": m.get("chunk", s.name)} for s in sources for m in read_missing(s.path)
        ]
        if renumber:
            meta.update(renumbered="1", inputs=inputs or [])
        manifest.set_meta(**meta)
        manifest.close()
    except BaseException:
        manifest.abort()
        raise


def _group_of(idents: list[_Identity], source: int) -> int:
    """The argument index (input set) that source folder ``source`` came from."""
    return next((x.group for x in idents if x.source == source), 0)


def _merge_manifests(
    manifest: ManifestWriter,
    sources: list[_Source],
    idents: list[_Identity],
    bounds: list[tuple[int, int]],
    *,
    renumber: bool = False,
) -> None:
    conn = manifest.conn
    conn.execute("COMMIT")
    conn.execute(
        "CREATE TEMP TABLE keymap (source INTEGER, old_label INTEGER, new_label INTEGER, shift INTEGER)"
    )
    conn.executemany(
        "INSERT INTO keymap VALUES (?, ?, ?, ?)",
        [(x.source, x.label, lab, bounds[lab][0] - x.first_key) for lab, x in enumerate(idents)],
    )
    cols = ", ".join(IMAGE_COLUMNS)
    rest = ", ".join(f"s.{col}" for col in IMAGE_COLUMNS[2:])
    if renumber:  # the new label is the identity; the original id and input go into ``extra``
        extra = "json_set(s.extra, '$.source_identity', s.identity, '$.source_set', ?)"
        rest = ", ".join(
            "m.new_label" if col == "identity" else extra if col == "extra" else f"s.{col}"
            for col in IMAGE_COLUMNS[2:]
        )
    for i, src in enumerate(sources):
        if src.manifest is None:
            conn.execute("BEGIN")
            rows = []
            for lab, x in enumerate(idents):
                if x.source != i:
                    continue
                for k in range(x.first_key, x.end_key):
                    ident = lab if renumber else x.identity
                    row = list(image_row(k + bounds[lab][0] - x.first_key, lab, ident, src.name, None))
                    row[4] = k
                    if renumber:
                        row[11] = json.dumps(
                            {"source_identity": x.identity, "source_set": x.group}, sort_keys=True
                        )
                    rows.append(tuple(row))
            manifest.add_images(rows)
            conn.execute("COMMIT")
            continue
        conn.execute("ATTACH DATABASE ? AS src", (str(src.manifest),))
        try:
            conn.execute("BEGIN")
            conn.execute(
                f"INSERT INTO images ({cols}) SELECT s.key + m.shift, m.new_label, {rest} "
                "FROM src.images s JOIN keymap m ON m.source = ? AND m.old_label = s.label",
                ((_group_of(idents, i), i) if renumber else (i,)),
            )
            has_dropped = conn.execute(
                "SELECT 1 FROM src.sqlite_master WHERE type='table' AND name='dropped'"
            ).fetchone()
            if has_dropped:  # what each source dropped stays on record (older manifests lack the table)
                # a dropped identity has no new label: it keeps its id, and a renumbered merge says which
                # input set that id belongs to
                dcols = ", ".join(DROPPED_COLUMNS)
                scols = dcols.replace("record", "json_set(record, '$.source_set', ?)") if renumber else dcols
                conn.execute(
                    f"INSERT INTO dropped ({dcols}) SELECT {scols} FROM src.dropped ORDER BY id",
                    (_group_of(idents, i),) if renumber else (),
                )
            has_stages = conn.execute(
                "SELECT 1 FROM src.sqlite_master WHERE type='table' AND name='stages'"
            ).fetchone()
            if has_stages:  # what each chunk's stages cost stays on record
                scols = ", ".join(STAGE_COLUMNS)
                conn.execute(f"INSERT INTO stages ({scols}) SELECT {scols} FROM src.stages ORDER BY id")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise DatasetError(f"{src.manifest}: cannot copy manifest rows ({exc})") from None
        finally:
            conn.execute("DETACH DATABASE src")
    expected = bounds[-1][1] - 1 if bounds else 0
    got = conn.execute("SELECT count(*) FROM images").fetchone()[0]
    if got != expected:
        raise DatasetError(
            f"merged manifest has {got} rows for {expected} images (a source manifest is incomplete)"
        )
    conn.execute("BEGIN")


def filter_dataset(
    src: str | os.PathLike,
    out: str | os.PathLike,
    drop_labels: Sequence[int],
    *,
    reason: str = "",
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Write ``src`` without the identities whose class label is in ``drop_labels``: labels renumbered
    ``0..C-1`` in their old order, JPEG payloads copied, the manifest rows of kept images carried over
    (their original identity id kept), written under a temporary name and renamed into place."""
    t0 = time.perf_counter()
    src, out = Path(src), Path(out)
    if out.resolve() == src.resolve():
        raise DatasetError(f"{out} is the input folder", fix="write the filtered set to a new folder.")
    source, idents = _open_source(src, 0)
    try:
        drop = {int(x) for x in drop_labels}
        unknown = drop - {x.label for x in idents}
        if unknown:
            raise DatasetError(f"{src} has no class label(s) {sorted(unknown)[:10]}")
        kept = [x for x in idents if x.label not in drop]
        n = sum(x.end_key - x.first_key for x in kept)
        c = len(kept)
        if n == 0:
            raise DatasetError(f"filtering {src} leaves no images", fix="nothing would be written.")
        with staged_folder(out) as tmp:
            _write_merged(tmp, [source], kept, n, c, progress)
            atomic_write_text(tmp / "property", f"{c},{source.size[0]},{source.size[1]}")
            summary = {
                "images": n,
                "classes": c,
                "source": str(src),
                "dropped_labels": sorted(drop),
                "reason": reason,
                "created": time.time(),
                "seconds": round(time.perf_counter() - t0, 3),
            }
            atomic_write_text(tmp / "filter.json", json.dumps(summary, indent=1))
    finally:
        source.reader.close()
    summary["path"] = str(out)
    return summary
