"""Streaming, crash-safe writing of facesets as dataset *chunks*.

One ComfyUI prompt writes one chunk: an identity range ``[start, end)`` stored as a complete
insightface-layout set of its own::

    <dataset>/
      chunks/
        000000000-000000100/      committed chunk (identities 0..99)
          train.rec train.idx     images at keys 1..N (labels 0..C-1 local to the chunk), identity
                                  records N+1..N+C, header at key 0 (written last)
          property                "C,112,112"
          manifest.sqlite         one row per image (original identity ids, provenance)
          chunk.json              range, counts, identity list (local label -> original identity)
        .tmp-<name>-<host>-<pid>/ a chunk being written (never looks complete)
      dataset.json                index of committed chunks (rebuilt from the folder after each commit)

A chunk is written into its ``.tmp-*`` folder, every file is fsynced, then the folder is renamed to its
final name, so a killed writer leaves no chunk that looks complete.

A chunk already on disk is never replaced silently: only a chunk of the same run (same spec hash and run
seed, e.g. a re-run after a crash) or a write with ``overwrite=True`` replaces it (``.old-*`` swap,
recovered on the next run if killed between the renames), and the replacement is recorded in the new
chunk's ``chunk.json`` (``replaced``), its manifest and ``dataset.json``. A refused or failed write
leaves no folder behind that it created.

JPEG encoding (plus RecordIO framing and hashing) runs in a thread pool: the encoders release the GIL,
so all cores are used. At most ``max_pending`` batches are in flight, so memory does not depend on the
number of faces written.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError, InputError
from ..faceset import FACE_SIZE, ChunkStamp, FaceSet, Provenance
from ..fsutil import atomic_write_text, fsync_dir, swap_folder
from ..imagecodec import JPEG_QUALITY, jpeg_encoder
from ..plan import CHUNK_NAME_DIGITS
from ..plan import chunk_name as chunk_name
from ..recordio import IRHeader, RecordWriter, encode_scalar_records, pack
from ..timing import StageTiming
from .manifest import MANIFEST_NAME, ManifestWriter, image_row

log = logging.getLogger(__name__)

CHUNKS_DIR = "chunks"
CHUNK_META = "chunk.json"
DATASET_INDEX = "dataset.json"
_D = CHUNK_NAME_DIGITS
#: float32 labels are exact below 2^24 identities (DESIGN 5.2).
MAX_IDENTITIES = 1 << 24
_NAME_RE = re.compile(rf"^(\d{{{_D},}})-(\d{{{_D},}})$")
_TMP_RE = re.compile(rf"^\.(tmp|old)-(\d{{{_D},}}-\d{{{_D},}})-(.+)-(\d+)$")
_UINT8 = np.dtype(np.uint8)
_FDATASYNC = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync
_HOST = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "host"
#: Temporary chunk folders owned by live writers of this process (never cleaned up as stale).
_ACTIVE: set[str] = set()


def parse_chunk_name(name: str) -> tuple[int, int] | None:
    m = _NAME_RE.match(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


@dataclass
class ChunkInfo:
    """What ``chunk.json`` records about a committed chunk."""

    name: str
    start: int
    end: int
    images: int
    classes: int
    identities: list[int]
    quality: int = JPEG_QUALITY
    jpeg_backend: str = ""
    image_size: list[int] = field(default_factory=lambda: [FACE_SIZE, FACE_SIZE])
    created: float = 0.0
    host: str = ""
    seconds: float = 0.0
    #: the run that made the chunk (empty / None when the faceset was not planned by an FDTA spec)
    spec_hash: str = ""
    run_seed: int | None = None
    #: earlier copies this chunk replaced, newest last: what made them and why they were replaced
    replaced: list[dict[str, Any]] = field(default_factory=list)
    #: wall time and images/s of every stage that made the chunk, the writer last (fdta_core.timing)
    stages: list[dict[str, Any]] = field(default_factory=list)
    #: planned identities of the range that have no images, each with why (stage, reason counts, detail,
    #: the round that last tried it); empty when every planned identity was written
    missing: list[dict[str, Any]] = field(default_factory=list)
    #: repair rounds that added identities to this chunk, oldest first (see ``ChunkStamp.repair``)
    repairs: list[dict[str, Any]] = field(default_factory=list)
    path: str = ""

    @property
    def stamp(self) -> ChunkStamp:
        return ChunkStamp(self.start, self.end, self.spec_hash, self.run_seed)

    def made_by(self) -> str:
        """A short description of what made the chunk (for messages)."""
        run = (
            f"spec {self.spec_hash}, run seed {self.run_seed}"
            if self.spec_hash and self.run_seed is not None
            else "no recorded run (spec/seed unknown)"
        )
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.created)) if self.created else "?"
        return (
            f"{self.images} images of {self.classes} identities, {run}, written {when} on {self.host or '?'}"
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("path")
        return d

    @classmethod
    def load(cls, folder: str | os.PathLike) -> ChunkInfo:
        p = Path(folder) / CHUNK_META
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
            info = cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "path"})
        except FileNotFoundError:
            raise DatasetError(f"{p} not found: {folder} is not a committed chunk") from None
        except (ValueError, TypeError) as exc:
            raise DatasetError(f"{p} is not a valid chunk description ({exc})") from None
        info.path = str(Path(folder))
        return info


@dataclass(frozen=True)
class DatasetChunk:
    """``FDTA_DATASET``: what the dataset writer hands on, the data set root and the chunk it committed."""

    dataset: str
    chunk: ChunkInfo

    @property
    def path(self) -> str:
        """The committed chunk folder (holds its own ``train.rec``)."""
        return self.chunk.path

    def train_folder(self) -> str:
        """What to train on: the data set root, never the one chunk this prompt wrote. The trainer reads
        the root's merged ``train.rec`` if it has one, else every committed chunk (labelled as merge
        would: :class:`fdta_core.train.data.ChunkedFaceDataset`)."""
        return self.dataset


# ---------------------------------------------------------------------------- dataset folder
def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError, AttributeError):
        return True
    return True


def recover(dataset: str | os.PathLike) -> list[str]:
    """Clean up after writers killed on this host; returns what was done (for the log).

    * ``.tmp-*`` of a dead writer: removed (the chunk was never committed);
    * ``.old-*`` of a dead writer: if the new chunk is in place the old copy is removed, otherwise the
      old copy is renamed back (the previous committed chunk is restored).
    Folders of other hosts or of live writers are left alone.
    """
    chunks = Path(dataset) / CHUNKS_DIR
    done: list[str] = []
    if not chunks.is_dir():
        return done
    for entry in sorted(chunks.iterdir()):
        m = _TMP_RE.match(entry.name)
        if not m or not entry.is_dir():
            continue
        kind, name, host, pid = m.group(1), m.group(2), m.group(3), int(m.group(4))
        if host != _HOST or str(entry) in _ACTIVE:
            continue
        if pid != os.getpid() and _pid_alive(pid):
            continue
        final = chunks / name
        if kind == "tmp":
            shutil.rmtree(entry, ignore_errors=True)
            done.append(f"removed unfinished chunk {entry.name}")
        elif final.exists():
            shutil.rmtree(entry, ignore_errors=True)
            done.append(f"removed replaced copy {entry.name}")
        else:
            os.replace(entry, final)
            done.append(f"restored committed chunk {name} from {entry.name}")
    if done:
        fsync_dir(chunks)
        for line in done:
            log.warning("dataset %s: %s", dataset, line)
    return done


def list_chunks(dataset: str | os.PathLike) -> list[ChunkInfo]:
    """Committed chunks of a dataset folder, in identity order (the folder is the source of truth)."""
    chunks = Path(dataset) / CHUNKS_DIR
    if not chunks.is_dir():
        return []
    out = []
    for entry in sorted(chunks.iterdir()):
        if parse_chunk_name(entry.name) is None or not entry.is_dir():
            continue
        if not (entry / CHUNK_META).is_file():
            log.warning("%s has no %s; ignored (not a committed chunk)", entry, CHUNK_META)
            continue
        out.append(ChunkInfo.load(entry))
    return out


@contextlib.contextmanager
def _dataset_lock(dataset: Path):
    """An advisory lock on ``<dataset>/.lock`` (POSIX; a no-op elsewhere) around index updates."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(dataset / ".lock", "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def update_index(dataset: str | os.PathLike) -> dict[str, Any]:
    """Rewrite ``dataset.json`` from the committed chunk folders (atomically, under a lock)."""
    root = Path(dataset)
    with _dataset_lock(root):
        infos = list_chunks(root)
        index = {
            "format": "fdta-dataset-1",
            "chunks": [
                {
                    "name": c.name,
                    "start": c.start,
                    "end": c.end,
                    "images": c.images,
                    "classes": c.classes,
                    "missing": len(c.missing),
                }  # fmt: skip
                for c in infos
            ],
            "images": sum(c.images for c in infos),
            "classes": sum(c.classes for c in infos),
            # every replacement of a chunk on disk, as recorded by the chunk that replaced it
            "replacements": [{"chunk": c.name, **r} for c in infos for r in c.replaced],
            # planned identities without images, and why (never left out silently)
            "missing": [{"chunk": c.name, **m} for c in infos for m in c.missing],
            "repairs": [{"chunk": c.name, **r} for c in infos for r in c.repairs],
            "updated": time.time(),
        }
        atomic_write_text(root / DATASET_INDEX, json.dumps(index, indent=1))
    return index


def _os_error(exc: OSError | sqlite3.Error, what: str, where: Path) -> DatasetError:
    if isinstance(exc, sqlite3.Error):  # SQLite says "disk I/O error" / "database or disk is full"
        return DatasetError(
            f"the provenance manifest could not be written while {what} in {where} ({exc}: the disk is full, "
            "a file size limit was hit, or the device failed); nothing was committed for this chunk and "
            "committed chunks are untouched",
            fix="free disk space (or choose another output folder) and run the prompt again.",
        )
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        why = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "the disk quota is exhausted",
               errno.EFBIG: "a file hit the size limit (ulimit -f / filesystem)"}[exc.errno]  # fmt: skip
        return DatasetError(
            f"{why} while {what} in {where}; nothing was committed for this chunk and committed chunks are "
            "untouched",
            fix="free disk space (or choose another output folder, or raise the file size limit) and run "
            "the prompt again.",
        )
    if isinstance(exc, PermissionError) or exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return DatasetError(
            f"cannot write in {where} while {what} ({exc.strerror})",
            fix="choose an output folder you can write to.",
        )
    return DatasetError(f"{what} in {where} failed: {exc}")


# ---------------------------------------------------------------------------- what may be written
def _run_text(stamp: ChunkStamp | None) -> str:
    if stamp is None or not stamp.spec_hash or stamp.run_seed is None:
        return "a faceset without a planned run (spec/seed unknown)"
    return f"spec {stamp.spec_hash}, run seed {stamp.run_seed}"


def check_chunk_slot(
    dataset: str | os.PathLike,
    start: int,
    end: int,
    *,
    stamp: ChunkStamp | None = None,
    overwrite: bool = False,
) -> ChunkInfo | None:
    """Refuse a chunk ``[start, end)`` that would overlap another chunk of ``dataset`` or silently replace
    one; return the committed chunk it will replace (None when the slot is free). Touches nothing.

    A chunk of the same range is replaced only when ``stamp`` comes from the same run (same spec hash and
    run seed: a re-run after a crash) or when ``overwrite`` is set.
    """
    root = Path(dataset)
    name = chunk_name(start, end)
    chunks = root / CHUNKS_DIR
    same: ChunkInfo | None = None
    for other in list_chunks(root):
        if other.name == name:
            same = other
        elif other.start < end and start < other.end:
            raise InputError(
                f"chunk {name} (identities {start}..{end - 1}) overlaps committed chunk {other.name} in "
                f"{chunks} ({other.made_by()})",
                where="identity range",
                fix="write chunks with disjoint identity ranges (set identity_start/identity_count on "
                "FDTAAttributeSpec), choose another output_name, or delete the overlapping chunk folder.",
            )
    if same is None or overwrite:
        return same
    if stamp is not None and stamp.same_run(same.stamp):
        return same
    raise InputError(
        f"chunk {name} already exists in {chunks} ({same.made_by()}); this write comes from "
        f"{_run_text(stamp)}, so replacing it would lose those images. Nothing was written",
        where="overwrite",
        fix="set the dataset writer's 'overwrite' input to true to replace it (the replacement is "
        "recorded in the data set), or choose another output_name or identity range.",
    )


def check_repair_base(
    dataset: str | os.PathLike, name: str, stamp: ChunkStamp | None, on_disk: ChunkInfo | None
) -> ChunkInfo:
    """The committed chunk a repair round adds to (refused unless the same run wrote it)."""
    assert stamp is not None
    chunks = Path(dataset) / CHUNKS_DIR
    if on_disk is None:
        raise InputError(
            f"repair round {stamp.repair} of chunk {name}: the chunk is not written in {chunks}, so there is "
            "nothing to add the regenerated identities to",
            where="repair",
            fix="write the chunk first (FDTAAttributeSpec.repair empty), then repair what it is missing.",
        )
    if not stamp.same_run(on_disk.stamp):
        raise InputError(
            f"repair round {stamp.repair} comes from {_run_text(stamp)}, but chunk {name} in {chunks} was "
            f"written by {on_disk.made_by()}; identities of two runs would be mixed",
            where="repair",
            fix="repair with the spec and seed that wrote the chunk.",
        )
    return on_disk


def _make_dirs(path: Path) -> list[Path]:
    """``mkdir -p path``; returns the folders it created, deepest first (for cleanup after a failure)."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    path.mkdir(parents=True, exist_ok=True)
    return missing


# ---------------------------------------------------------------------------- the writer
def _encode_batch(
    encode: Callable[[np.ndarray], bytes],
    chunk: str,
    items: list[tuple[int, int, np.ndarray]],
    meta: list[tuple[int, int, int, Provenance | None]],
    buffers: collections.deque,
) -> tuple[bytearray, int, list[int], list[tuple]]:
    """One batch, in a worker thread: JPEG, SHA-256, the manifest rows and the RecordIO framing.

    The records are framed into a buffer from ``buffers`` (a new one when none is free), which the
    feeding thread writes in one call and gives back: no fresh pages per batch. Returns
    ``(buffer, nbytes, sizes, rows)``. Everything per face happens here, so the thread that feeds the
    writer only queues faces and writes whole batches (its Python would otherwise hold the GIL while
    the encoders wait for it)."""
    records, rows = [], []
    sha256 = hashlib.sha256
    for (key, label, image), (_key, _label, identity, prov) in zip(items, meta, strict=True):
        jpeg = encode(image)
        records.append((float(label), key, jpeg))
        rows.append(
            image_row(
                key, label, identity, chunk, prov, jpeg_bytes=len(jpeg), sha256=sha256(jpeg).hexdigest()
            )
        )
    try:
        buf = buffers.pop()
    except IndexError:
        buf = None
    buf, nbytes, sizes = encode_scalar_records(records, buf)
    return buf, nbytes, sizes, rows


#: Faces per encoder job: larger batches mean fewer hand-offs between the feeding thread and the encoders
#: (futures, GIL switches, one write per file per batch). ``bench/bench_writer.py`` on 2 quiet cores,
#: 20,000 faces, the limit encoded in batches of the same size: 32 -> 0.64 of the JPEG-encode limit,
#: 128 -> 0.66. In flight: ``max_pending`` batches of references to the caller's faces (2 workers:
#: 6 x 128 x 37 KB = 29 MB), nothing copied.
BATCH_SIZE = 128


def direct_io_default() -> bool:
    """Whether chunks are written past the page cache by default: yes, unless ``FDTA_DIRECT_IO`` is
    ``0``/``false``/``no``/``off`` (an escape hatch for a file system that takes ``O_DIRECT`` but is slow
    with it; one that refuses it falls back by itself)."""
    return os.environ.get("FDTA_DIRECT_IO", "1").strip().lower() not in ("0", "false", "no", "off")


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover
        return max(1, os.cpu_count() or 1)


class ChunkWriter:
    """Write one chunk (identities ``[start, end)``) of a dataset, streaming.

    ``add(image, identity, provenance)`` takes one aligned 112x112 RGB uint8 face; images of one
    identity must be contiguous. ``commit()`` makes the chunk visible atomically; leaving the ``with``
    block with an exception (or calling ``abort()``) removes everything written for it, including the
    dataset folders it created. ``stamp`` (the planned run) and ``overwrite`` decide whether a chunk of
    the same range on disk may be replaced (:func:`check_chunk_slot`); that is checked before anything
    is created. ``direct_io`` writes ``train.rec`` past the page cache where the file system allows it
    (``O_DIRECT``; see ``recordio._RecFile``): the same bytes for less CPU a face. Default: on, unless
    the environment sets ``FDTA_DIRECT_IO=0`` (:func:`direct_io_default`).
    """

    def __init__(
        self,
        dataset: str | os.PathLike,
        start: int,
        end: int,
        *,
        quality: int = JPEG_QUALITY,
        workers: int | None = None,
        batch_size: int = BATCH_SIZE,
        max_pending: int | None = None,
        jpeg_backend: str = "auto",
        image_size: tuple[int, int] = (FACE_SIZE, FACE_SIZE),
        progress: Callable[[int, int], None] | None = None,
        total: int | None = None,
        stamp: ChunkStamp | None = None,
        overwrite: bool = False,
        sync_every: int = 16 << 20,
        stages: Iterable[StageTiming] = (),
        node: str = "ChunkWriter",
        direct_io: bool | None = None,
    ) -> None:
        self._closed = False
        self._made: list[Path] = []
        start, end = int(start), int(end)
        if start < 0 or end <= start:
            raise InputError(
                f"identity range [{start}, {end}) is empty or negative",
                where="identity range",
                fix="identity_start must be >= 0 and identity_count >= 1.",
            )
        if end > MAX_IDENTITIES:
            raise InputError(
                f"identity {end - 1} is beyond 2^24: float32 labels would no longer be exact",
                where="identity range",
            )
        if stamp is not None and (stamp.start, stamp.end) != (start, end):
            raise InputError(
                f"the faceset was planned for identities {stamp.start}..{stamp.end - 1}, not {start}..{end - 1}",
                where="identity range",
                fix="leave the writer's identity range at its defaults so it follows the plan.",
            )
        self.stamp = stamp
        self.stages = list(stages)  # the upstream stages' timings, stored with the chunk
        self.node = node
        self._wall0 = time.time()
        self.overwrite = bool(overwrite)
        self.root = Path(dataset)
        self.start, self.end = start, end
        self.name = chunk_name(start, end)
        self.quality = int(quality)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self._shape = (*self.image_size, 3)
        self.backend, self._encode = jpeg_encoder(jpeg_backend, self.quality)
        self.workers = int(workers or default_workers())
        self.batch_size = max(1, int(batch_size))
        self.max_pending = int(max_pending or 2 * self.workers + 2)
        self.progress = progress
        self.total = total
        self._t0 = time.perf_counter()
        chunks = self.root / CHUNKS_DIR
        self.tmp = chunks / f".tmp-{self.name}-{_HOST}-{os.getpid()}"
        if chunks.is_dir():
            recover(self.root)
        # refused before anything is created: a refused write leaves no folder behind
        self.repair = int(stamp.repair) if stamp is not None else 0
        # a repair round adds to the chunk of its own run (checked next), never replaces another run's
        self.replaces = check_chunk_slot(
            self.root, start, end, stamp=stamp, overwrite=self.overwrite or bool(self.repair)
        )
        self.base = check_repair_base(self.root, self.name, stamp, self.replaces) if self.repair else None
        try:
            self._made = _make_dirs(chunks)
        except (OSError, sqlite3.Error) as exc:
            self._cleanup()
            raise _os_error(exc, "creating the dataset folder", chunks) from None
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        try:
            self.tmp.mkdir()
            _ACTIVE.add(str(self.tmp))
            if direct_io is None:
                direct_io = direct_io_default()
            self._rec = RecordWriter(self.tmp / "train.rec", self.tmp / "train.idx", direct=direct_io)
            self._manifest = ManifestWriter(self.tmp / MANIFEST_NAME)
            self._base_dropped = 0
        except (OSError, sqlite3.Error) as exc:
            rec = getattr(self, "_rec", None)
            if rec is not None:  # its descriptor would hold the removed file's space until exit
                with contextlib.suppress(Exception):
                    rec.close(fsync=False)
            self._cleanup()
            raise _os_error(exc, f"starting chunk {self.name}", self.tmp) from None
        self._pool = concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix="fdta-jpeg")
        # durability: train.rec is fdatasynced every sync_every bytes while writing (see _background_sync)
        self._sync_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="fdta-sync")
        self._sync: concurrent.futures.Future | None = None
        self._synced = 0
        self.sync_every = int(sync_every)
        self._pending: collections.deque = collections.deque()
        self._buffers: collections.deque = collections.deque()  # framing buffers, reused (_encode_batch)
        self._batch: list[tuple[int, int, np.ndarray]] = []
        self._batch_meta: list[tuple[int, int, int, Provenance | None]] = []
        self._identities: list[int] = []  # local label -> original identity
        self._idset: set[int] = set()
        self._first_key: list[int] = []
        self._next_key = 1
        self._written = 0
        self._base_ids: frozenset[int] = frozenset()
        self._skipped: set[int] = set()  # identities a repair round brought that the chunk already holds
        if self.base is not None:
            self._copy_base(self.base)

    def _copy_base(self, base: ChunkInfo) -> None:
        """Repair mode: start from the committed chunk, its records and manifest rows copied unchanged
        (same keys and labels), so the repaired identities follow them and nothing of it is lost."""
        from ..recordio import RecordReader
        from .manifest import read_identities

        folder = Path(base.path)
        try:
            rows = read_identities(folder / MANIFEST_NAME)
            with RecordReader(folder / "train.rec", folder / "train.idx") as reader:
                for key in range(1, base.images + 1):
                    self._rec.write(key, reader.read(key))
            self._manifest.copy_from(folder / MANIFEST_NAME)
        except (OSError, sqlite3.Error) as exc:
            self._fail(_os_error(exc, f"copying chunk {self.name} for repair round {self.repair}", self.tmp))
        for _label, identity, _chunk, first_key, _end_key in rows:
            self._identities.append(int(identity))
            self._idset.add(int(identity))
            self._first_key.append(int(first_key))
        self._next_key = base.images + 1
        self._base_dropped = self._manifest.dropped_count()
        self._base_ids = frozenset(int(i) for i in base.identities)

    # -------------------------------------------------------------- adding
    def add(
        self, image: np.ndarray, identity: int, provenance: Provenance | None = None, *, copy: bool = False
    ) -> int:
        """Queue one face; returns its record key. Raises :class:`InputError` for a bad image/label.

        The array is referenced (not copied) until its batch is encoded; pass ``copy=True`` when the
        caller reuses the buffer for the next face.
        """
        if self._closed:
            raise DatasetError(f"chunk {self.name} is already committed or aborted")
        key = self._next_key
        # the common case in a few cheap tests (this runs once per face); the messages on the slow path
        if (
            type(image) is not np.ndarray
            or image.shape != self._shape
            or image.dtype != _UINT8
            or type(identity) is not int
            or not self.start <= identity < self.end
            or (provenance is not None and provenance.identity != identity)
        ):
            identity = self._check_face(key, image, identity, provenance)
        if self._base_ids and identity in self._base_ids:
            # a repair round never replaces what the chunk holds: a round queued again after a crash
            # (its first copy committed, the run manifest not yet updated) adds nothing twice
            self._skipped.add(identity)
            return 0
        if not self._identities or self._identities[-1] != identity:
            if identity in self._idset:
                self._fail(
                    InputError(
                        f"images of identity {identity} are not contiguous",
                        where=f"chunk {self.name}, image {key - 1} (identity {identity})",
                        fix="group the images by identity (FaceSet.sorted_by_identity()).",
                    )
                )
            self._identities.append(identity)
            self._first_key.append(key)
            self._idset.add(identity)
        label = len(self._identities) - 1
        self._batch.append((key, label, np.array(image, copy=True) if copy else np.ascontiguousarray(image)))
        self._batch_meta.append((key, label, identity, provenance))
        self._next_key += 1
        if len(self._batch) >= self.batch_size:
            self._submit()
        return key

    def _check_face(self, key: int, image: Any, identity: Any, provenance: Provenance | None) -> int:
        """The full checks of :meth:`add`, with messages; returns the identity as an int."""
        where = f"chunk {self.name}, image {key - 1} (identity {identity})"
        h, w = self.image_size
        if not isinstance(image, np.ndarray):
            self._fail(InputError(f"expected a numpy array, got {type(image).__name__}", where=where))
        if image.shape != (h, w, 3):
            self._fail(
                InputError(
                    f"image has shape {list(image.shape)}, expected [{h}, {w}, 3] (an aligned RGB face)",
                    where=where,
                    fix="align the faces first (FDTAAlignFaces).",
                )
            )
        if image.dtype != np.uint8:
            self._fail(
                InputError(
                    f"image has dtype {image.dtype}, expected uint8 (0..255)",
                    where=where,
                    fix="convert float images in [0, 1] with fdta_core.faceset.image_to_uint8.",
                )
            )
        try:
            identity = int(identity)
        except (TypeError, ValueError):
            self._fail(InputError(f"identity {identity!r} is not an integer", where=where))
        if not self.start <= identity < self.end:
            self._fail(
                InputError(
                    f"identity {identity} is outside the chunk's range {self.start}..{self.end - 1}",
                    where=where,
                    fix="set the chunk's identity range to cover every label of the faceset.",
                )
            )
        if provenance is not None and int(provenance.identity) != identity:
            self._fail(InputError(f"provenance says identity {provenance.identity}", where=where))
        return identity

    def add_faceset(self, faceset: FaceSet) -> None:
        """Add every image of a faceset, grouped by identity (stable within an identity), and record
        what the pipeline dropped on the way (``faceset.dropped``) in the manifest."""
        images, labels, prov = faceset.images, faceset.labels, faceset.provenance
        for i in np.argsort(labels, kind="stable").tolist():  # views, no copy of the faceset
            self.add(images[i], int(labels[i]), prov[i])
        self.add_dropped(faceset.dropped)

    def add_dropped(self, records) -> None:
        """Record :class:`~fdta_core.faceset.Dropped` records (identities and images left out upstream)."""
        records = list(records)
        if not records:
            return
        outside = [d.identity for d in records if not self.start <= int(d.identity) < self.end]
        if outside:
            self._fail(
                InputError(
                    f"dropped records of identities {outside[:5]} lie outside chunk {self.name}",
                    where="faceset.dropped",
                )
            )
        if self.repair:  # which round dropped it: the chunk's missing list reports the latest round
            records = [
                dataclasses.replace(d, record={**d.record, "repair_round": self.repair}) for d in records
            ]
        self._manifest.add_dropped(self.name, records)

    def _submit(self) -> None:
        if not self._batch:
            return
        fut = self._pool.submit(
            _encode_batch, self._encode, self.name, self._batch, self._batch_meta, self._buffers
        )
        self._pending.append((fut, self._batch_meta))
        self._batch, self._batch_meta = [], []
        while len(self._pending) >= self.max_pending:
            self._drain_one()

    def _drain_one(self) -> None:
        fut, meta = self._pending.popleft()
        try:
            buf, nbytes, sizes, rows = fut.result()
        except Exception as exc:
            self._fail(
                DatasetError(f"encoding JPEG failed in chunk {self.name}: {type(exc).__name__}: {exc}")
            )
        try:
            with memoryview(buf) as view:
                self._rec.write_joined([m[0] for m in meta], sizes, view[:nbytes])
            self._manifest.add_images(rows)
        except (OSError, sqlite3.Error) as exc:
            self._fail(_os_error(exc, f"writing chunk {self.name}", self.tmp))
        self._buffers.append(buf)
        self._written += len(meta)
        if self._rec.offset - self._synced >= self.sync_every:
            self._background_sync()
        if self.progress is not None:
            self.progress(self._written, max(self.total or 0, self._written))

    def _background_sync(self) -> None:
        """Start an ``fdatasync`` of ``train.rec`` in the background (one at a time): the disk writes
        overlap the encoding instead of all landing in the commit's fsync."""
        if self._sync is not None and not self._sync.done():
            return
        self._synced = self._rec.offset
        self._sync = self._sync_pool.submit(_FDATASYNC, self._rec.flush_for_sync())

    def _wait_sync(self) -> None:
        if self._sync is not None:
            self._sync.result()  # an I/O error here is the commit's to report
            self._sync = None

    # -------------------------------------------------------------- finishing
    def commit(self) -> ChunkInfo:
        """Finish the records, fsync, and rename the chunk into place (replacing an older copy)."""
        if self._closed:
            raise DatasetError(f"chunk {self.name} is already committed or aborted")
        try:
            self._submit()
            while self._pending:
                self._drain_one()
            n = self._next_key - 1
            c = len(self._identities)
            if n == 0 and self.stamp is None:
                # a planned chunk may be empty (every identity rejected: its dropped records say why);
                # an unplanned faceset without images has no range to write
                self._fail(
                    InputError(
                        f"no images to write for chunk {self.name}",
                        where="faceset",
                        fix="the faceset is empty (did a filter drop every image?); nothing was written.",
                    )
                )
            bounds = [*self._first_key, n + 1]
            try:
                for label in range(c):
                    self._rec.write(
                        n + 1 + label,
                        pack(IRHeader(2, (float(bounds[label]), float(bounds[label + 1])), n + 1 + label, 0)),
                    )
                    self._manifest.add_identity(
                        label, self._identities[label], self.name, bounds[label], bounds[label + 1]
                    )
                self._rec.write(0, pack(IRHeader(2, (float(n + 1), float(n + c + 1)), 0, 0)))
                self._wait_sync()
                self._rec.close()
                # checked again now: another writer may have committed this range meanwhile
                old = check_chunk_slot(
                    self.root, self.start, self.end, stamp=self.stamp, overwrite=self.overwrite
                )
                replaced = self._replacement_record(old)
                stages = [
                    *self.stages,
                    StageTiming("write", self.node, round(time.perf_counter() - self._t0, 6), n, self.name,
                                round(self._wall0, 3)),
                ]  # fmt: skip
                self._manifest.add_stages(self.name, stages)
                missing = self._missing() if self.stamp is not None else []
                repairs = list(self.base.repairs) if self.base is not None else []
                if self.base is not None:
                    added = self._identities[len(self.base.identities) :]
                    tried = sorted({*added, *self._dropped_ids})
                    repairs.append({"round": self.repair, "tried": tried, "added": added,
                                    "images": n - self.base.images, "created": time.time(),
                                    "already_written": sorted(self._skipped)})  # fmt: skip
                info = ChunkInfo(
                    name=self.name,
                    start=self.start,
                    end=self.end,
                    images=n,
                    classes=c,
                    identities=list(self._identities),
                    quality=self.quality,
                    jpeg_backend=self.backend,
                    image_size=list(self.image_size),
                    created=time.time(),
                    host=_HOST,
                    seconds=round(time.perf_counter() - self._t0, 3),
                    spec_hash=self.stamp.spec_hash if self.stamp else "",
                    run_seed=self.stamp.run_seed if self.stamp else None,
                    replaced=replaced,
                    stages=[
                        *(self.base.stages if self.base is not None else []),
                        *(t.to_dict() for t in stages),
                    ],
                    missing=missing,
                    repairs=repairs,
                )
                self._manifest.set_meta(
                    chunk=self.name,
                    start=self.start,
                    end=self.end,
                    images=n,
                    classes=c,
                    spec_hash=info.spec_hash,
                    run_seed=info.run_seed,
                    replaced=replaced,
                    missing=missing,
                    repairs=repairs,
                )
                self._manifest.close()
                atomic_write_text(self.tmp / "property", f"{c},{self.image_size[0]},{self.image_size[1]}")
                atomic_write_text(self.tmp / CHUNK_META, json.dumps(info.to_dict(), indent=1))
                fsync_dir(self.tmp)
                final = self._swap_into_place()
            except (OSError, sqlite3.Error) as exc:
                self._fail(_os_error(exc, f"committing chunk {self.name}", self.tmp))
        except BaseException:
            self.abort()
            raise
        self._closed = True
        self._pool.shutdown(wait=True)
        self._sync_pool.shutdown(wait=True)
        info.path = str(final)
        try:
            update_index(self.root)
        except OSError as exc:  # the chunk itself is committed; the index is derived and rebuilt later
            log.warning("could not update %s: %s", self.root / DATASET_INDEX, exc)
        log.info(
            "committed chunk %s: %d images, %d identities, %.1fs",
            self.name,
            info.images,
            info.classes,
            info.seconds,
        )
        return info

    @property
    def _dropped_ids(self) -> set[int]:
        """Identities this write recorded dropped records for (this round's attempts)."""
        return set(self._manifest.dropped_identities_since(self._base_dropped))

    def _missing(self) -> list[dict[str, Any]]:
        """Planned identities of the range without images, each with the reasons of its latest attempt."""
        written = set(self._identities)
        absent = [i for i in range(self.start, self.end) if i not in written]
        if not absent:
            return []
        why = self._manifest.drop_reasons(absent)
        out = []
        for ident in absent:
            w = why.get(ident)
            if w is None:
                w = {"stage": "unknown", "reasons": {"not_in_faceset": 1}, "detail": "the faceset that "
                     "reached the writer has neither images nor a dropped record of this identity (a "
                     "hand-built graph, or a node that drops without recording)", "round": self.repair}  # fmt: skip
            out.append({"identity": ident, **w})
        return out

    def _replacement_record(self, old: ChunkInfo | None) -> list[dict[str, Any]]:
        """The ``replaced`` history of the new chunk: the old chunk's history plus the old chunk itself."""
        if self.base is not None:  # a repair keeps every image of the chunk: nothing was replaced
            return list(self.base.replaced)
        if old is None:
            return []
        same_run = self.stamp is not None and self.stamp.same_run(old.stamp)
        return [
            *old.replaced,
            {
                "images": old.images,
                "classes": old.classes,
                "spec_hash": old.spec_hash,
                "run_seed": old.run_seed,
                "created": old.created,
                "host": old.host,
                "replaced_at": time.time(),
                "reason": "same run (spec hash and run seed agree)" if same_run else "overwrite=true",
            },
        ]

    def _swap_into_place(self) -> Path:
        chunks = self.root / CHUNKS_DIR
        final = chunks / self.name
        # the .old-* name is the one recover() restores from when killed between the renames
        replaced = swap_folder(self.tmp, final, old=chunks / f".old-{self.name}-{_HOST}-{os.getpid()}")
        _ACTIVE.discard(str(self.tmp))
        if replaced:
            log.info("replaced earlier copy of chunk %s", self.name)
        return final

    def _fail(self, exc: Exception) -> None:
        self.abort()
        raise exc

    def _cleanup(self) -> None:
        _ACTIVE.discard(str(self.tmp))
        shutil.rmtree(self.tmp, ignore_errors=True)
        for d in self._made:  # deepest first; only folders this writer created, only when empty
            try:
                d.rmdir()
            except OSError:
                break
        self._made = []

    def abort(self) -> None:
        """Drop everything written for this chunk; committed chunks are untouched."""
        if self._closed:
            return
        self._closed = True
        pool = getattr(self, "_pool", None)
        if pool is not None:
            for fut, _meta in getattr(self, "_pending", ()):
                fut.cancel()
            pool.shutdown(wait=True)
        sync_pool = getattr(self, "_sync_pool", None)
        if sync_pool is not None:  # before the file closes: the sync holds its descriptor
            sync_pool.shutdown(wait=True)
        with contextlib.suppress(Exception):
            self._rec.close(fsync=False)
        with contextlib.suppress(Exception):
            self._manifest.abort()
        self._cleanup()

    def __enter__(self) -> ChunkWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._closed:
            self.commit()


def missing_text(info: ChunkInfo, *, limit: int = 10) -> str:
    """What a UI user reads about a chunk's missing identities: each with its reason, and the value of
    ``FDTAAttributeSpec.repair`` that regenerates them (empty text when nothing is missing)."""
    if not info.missing:
        return ""
    parts = []
    for m in info.missing[:limit]:
        why = ", ".join(f"{k} x{v}" for k, v in sorted((m.get("reasons") or {}).items()))
        parts.append(f"{m['identity']} [{m.get('stage', '?')}: {why}]")
    more = f" ... {len(info.missing) - limit} more" if len(info.missing) > limit else ""
    from ..plan import RepairRequest

    request = RepairRequest(len(info.repairs) + 1, tuple(int(m["identity"]) for m in info.missing))
    return (
        f"\nMISSING {len(info.missing)} planned identit{'y' if len(info.missing) == 1 else 'ies'} without "
        f"images: {'; '.join(parts)}{more} (recorded in chunk.json, dataset.json and fdta report). To "
        f"regenerate them with new seeds, set FDTAAttributeSpec.repair to '{request.text()}' and queue the "
        "same workflow again; fdta run does this by itself (--repair-rounds)."
    )


def read_missing(folder: str | Path) -> list[dict[str, Any]]:
    """The planned identities a written set has no images of, with why: a chunk's ``chunk.json``, a data
    set's ``dataset.json`` or a merged set's manifest meta (``missing``); [] when none records any."""
    from .manifest import query

    root = Path(folder)
    for name in ("chunk.json", "dataset.json"):
        p = root / name
        if p.is_file():
            try:
                data = json.loads(p.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise DatasetError(f"cannot read {p}: {exc}") from exc
            return list(data.get("missing") or [])
    if (root / MANIFEST_NAME).is_file():
        has = query(root / MANIFEST_NAME, "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'")
        rows = query(root / MANIFEST_NAME, "SELECT value FROM meta WHERE name = 'missing'") if has else []
        if rows and rows[0][0]:
            return list(json.loads(rows[0][0]))
    return []


def planned_range(stamp: ChunkStamp, start: int | None = None, count: int | None = None) -> tuple[int, int]:
    """The planned ``[start, end)``; the optional overrides ``start`` (>= 0) / ``count`` (> 0) must agree."""
    has_start = start is not None and start >= 0
    has_count = count is not None and count > 0
    s = int(start) if has_start else stamp.start
    e = s + int(count) if has_count else (stamp.end if s == stamp.start else s + stamp.count)
    if (s, e) != (stamp.start, stamp.end):
        raise InputError(
            f"identities {s}..{e - 1} were asked for, but the faceset is planned for identities "
            f"{stamp.start}..{stamp.end - 1} (FDTAAttributeSpec identity_start={stamp.start}, "
            f"identity_count={stamp.count})",
            where="identity_start",
            fix="set the writer's identity_start to -1 and identity_count to 0 (follow the plan), or "
            "make them equal to the spec's.",
        )
    return s, e


def chunk_range_of(faceset: FaceSet, start: int | None = None, count: int | None = None) -> tuple[int, int]:
    """The chunk range of a faceset: the planned range it carries (:class:`ChunkStamp`, set by the ACG
    and kept by every stage), else ``[min label, max label + 1)``.

    ``start`` (>= 0) and ``count`` (> 0) are optional overrides for facesets built by hand; on a planned
    faceset they must agree with the plan, because a different range is how chunks got lost (a second
    chunk written under the first one's name).
    """
    stamp = faceset.chunk
    has_start = start is not None and start >= 0
    has_count = count is not None and count > 0
    if stamp is not None:
        # an empty planned faceset is written as an empty chunk: its dropped records say why every
        # identity is missing, and the run goes on
        return planned_range(stamp, start, count)
    if len(faceset) == 0:
        raise InputError(
            "the faceset is empty: nothing to write",
            where="faceset",
            fix="check the upstream filter (CSIM threshold) and the identity plan.",
        )
    lo, hi = int(faceset.labels.min()), int(faceset.labels.max()) + 1
    s = int(start) if has_start else lo
    e = (s + int(count)) if has_count else max(hi, s + 1)
    return s, e


def write_faceset(
    faceset: FaceSet,
    dataset: str | os.PathLike,
    *,
    start: int | None = None,
    count: int | None = None,
    **kwargs: Any,
) -> ChunkInfo:
    """Write a faceset as one committed chunk of ``dataset`` (see :class:`ChunkWriter` for options)."""
    s, e = chunk_range_of(faceset, start, count)
    kwargs.setdefault("stamp", faceset.chunk)
    kwargs.setdefault("stages", faceset.timings)
    with ChunkWriter(dataset, s, e, total=len(faceset), **kwargs) as w:
        w.add_faceset(faceset)
        return w.commit()


def write_chunk(
    dataset: str | os.PathLike,
    start: int,
    end: int,
    items: Iterable[tuple[np.ndarray, int, Provenance | None]],
    **kwargs: Any,
) -> ChunkInfo:
    """Stream ``(image, identity, provenance)`` items (grouped by identity) into one committed chunk."""
    with ChunkWriter(dataset, start, end, **kwargs) as w:
        for image, identity, prov in items:
            w.add(image, identity, prov)
        return w.commit()
