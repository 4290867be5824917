"""The reference bank as an index: built once beside the data, read lazily.

An MS1M-size reference set (millions of faces) cannot be held in RAM, and a chunk of a run uses the
styles of only as many subjects as it has identities. So a folder or a ``.rec`` is indexed once into a
small SQLite file (record number -> subject, key, tags and where its face lies: a byte offset in the
``.rec``, or a file of the folder) and every later open reads only that file's pages it needs: the
policies ask for the number of subjects and one subject's records, the mixer decodes the faces of the
records it picked.

* Where: ``.fdta-bank/`` beside the data (the ``.rec``'s folder, or the reference folder's parent); when
  that is not writable, ``$FDTA_CACHE_DIR/banks`` (default ``~/.cache/fdta/banks``).
* When it is rebuilt: the index records a fingerprint of its source (size and modification time of
  ``.rec``/``.idx``/``property``, or of every image file and the tags CSV of a folder); an open whose
  fingerprint differs builds a new one. Builds write temporary files and rename them into place, so a
  killed build leaves the old index (or none), never half of one.
* Faces that are not aligned 112x112 (a folder of photos, a ``.rec`` whose ``property`` does not say
  112x112) are aligned once while building, with the caller's align function, and stored losslessly
  (PNG) in a ``.rec`` beside the index; images without a face are left out, as the in-memory bank does.
  ``align_id`` names the face models: an index aligned with other models is rebuilt.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError, InputError
from ..imagecodec import decode_image, encode_png, read_image
from .bank import IMAGE_EXTENSIONS, AlignFn, BankRecord, _ensure_aligned, folder_tags, read_tags_csv

log = logging.getLogger(__name__)

#: Bump when the index layout changes: older indexes are rebuilt.
INDEX_VERSION = 1
CACHE_FOLDER = ".fdta-bank"
#: Where a record's face lies.
FILE_SOURCE_REC, FILE_FACES_REC, FILE_FOLDER = 0, 1, 2
_INSERT_BATCH = 20_000

_SCHEMA = """
CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE subjects (s INTEGER PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE records (i INTEGER PRIMARY KEY, s INTEGER NOT NULL, key TEXT NOT NULL, file INTEGER NOT NULL,
                      loc INTEGER NOT NULL, path TEXT, tags TEXT);
"""


# ---------------------------------------------------------------------------- where and whether
def cache_folder(beside: Path, cache_dir: str | os.PathLike | None) -> Path:
    """``cache_dir`` if given, else ``beside/.fdta-bank`` when writable, else the user cache."""
    if cache_dir is not None:
        out = Path(cache_dir)
        out.mkdir(parents=True, exist_ok=True)
        return out
    out = beside / CACHE_FOLDER
    try:
        out.mkdir(exist_ok=True)
        probe = out / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
        return out
    except OSError:
        base = Path(os.environ.get("FDTA_CACHE_DIR") or Path.home() / ".cache" / "fdta")
        out = base / "banks"
        out.mkdir(parents=True, exist_ok=True)
        log.info("reference bank index: %s is not writable; caching in %s", beside, out)
        return out


def _stat_line(path: Path) -> str:
    try:
        st = path.stat()
    except FileNotFoundError:
        return f"{path.name}:-"
    return f"{path.name}:{st.st_size}:{st.st_mtime_ns}"


def _walk_images(root: Path) -> Iterator[Path]:
    """Image files under ``root`` in the order of ``sorted(root.rglob(...))`` (depth first, names sorted
    per folder), streaming: never the whole listing in memory."""
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as exc:
        raise DatasetError(f"cannot list reference folder {root}: {exc}") from None
    for e in entries:
        if e.is_dir(follow_symlinks=True):
            if e.name == CACHE_FOLDER:
                continue
            yield from _walk_images(Path(e.path))
        elif e.is_file() and Path(e.name).suffix.lower() in IMAGE_EXTENSIONS:
            yield Path(e.path)


def _folder_fingerprint(root: Path, tags_csv: Path | None) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    for p in _walk_images(root):
        st = p.stat()
        h.update(f"{p.relative_to(root).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        n += 1
    if tags_csv is not None:
        h.update(f"csv {tags_csv.resolve()} {_stat_line(tags_csv)}".encode())
    return h.hexdigest(), n


def _rec_fingerprint(rec: Path) -> str:
    parts = [
        str(rec.resolve()),
        _stat_line(rec),
        _stat_line(rec.with_suffix(".idx")),
        _stat_line(rec.parent / "property"),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


# ---------------------------------------------------------------------------- the open index
class BankIndex:
    """An open index and a view of it (first subject, number of subjects, images per subject).

    Positions ``p`` (what the bank calls index ``i``) number the records of the view in bank order;
    the SQLite connection and the ``.rec`` handles open lazily, once per process, behind a lock.
    """

    def __init__(self, db_path: Path, root: Path | None = None) -> None:
        self.db_path = Path(db_path)
        self.root = root
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._files: dict[int, Any] = {}
        self._pid = -1
        meta = dict(self._query("SELECT k, v FROM meta"))
        self.meta = meta
        self.source = meta["source"]
        self.data = {FILE_SOURCE_REC: Path(meta["source"])}
        if meta.get("faces_file"):
            self.data[FILE_FACES_REC] = self.db_path.parent / meta["faces_file"]
        self.n_records_total = int(meta["n_records"])
        self.n_subjects_total = int(meta["n_subjects"])
        self._s0, self._s1, self._per = 0, self.n_subjects_total, 0
        self._base, self._ids, self._n = 0, None, self.n_records_total
        self._contiguous = meta.get("contiguous") == "1"

    # -- plumbing
    def _db(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():
            uri = self.db_path.resolve().as_uri() + "?mode=ro"
            self._conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
            self._files = {}
            self._pid = os.getpid()
        return self._conn

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db().execute(sql, args).fetchall()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.update(_conn=None, _files={}, _pid=-1, _lock=None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _g(self, p: np.ndarray) -> np.ndarray:
        return self._ids[p] if self._ids is not None else p + self._base

    def _p(self, g: np.ndarray) -> np.ndarray:
        return np.searchsorted(self._ids, g) if self._ids is not None else g - self._base

    # -- views
    def view(self, first_subject: int = 0, max_subjects: int = 0, max_per_subject: int = 0) -> BankIndex:
        """The records of subjects ``first_subject ..`` (at most ``max_subjects`` of them, 0 = all), at
        most ``max_per_subject`` images each (0 = all), in bank order."""
        out = copy.copy(self)
        out._lock = threading.Lock()
        out._conn, out._files, out._pid = None, {}, -1
        total = self.n_subjects_total
        s0 = min(max(0, int(first_subject)), total)
        s1 = min(total, s0 + int(max_subjects)) if max_subjects else total
        per = max(0, int(max_per_subject))
        out._s0, out._s1, out._per = s0, s1, per
        if s0 == 0 and s1 == total and not per:
            out._base, out._ids, out._n = 0, None, self.n_records_total
        elif not per and self._contiguous:  # subjects hold consecutive records: a range, no array
            lo, hi, n = out._query(
                "SELECT MIN(i), MAX(i), COUNT(*) FROM records WHERE s >= ? AND s < ?", (s0, s1)
            )[0]
            out._base, out._ids, out._n = int(lo or 0), None, int(n)
        else:
            if per:
                sql = ("SELECT i FROM (SELECT i, ROW_NUMBER() OVER (PARTITION BY s ORDER BY i) AS r FROM records "
                       "WHERE s >= ? AND s < ?) WHERE r <= ? ORDER BY i")  # fmt: skip
                rows = out._query(sql, (s0, s1, per))
            else:
                rows = out._query("SELECT i FROM records WHERE s >= ? AND s < ? ORDER BY i", (s0, s1))
            out._ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
            out._base, out._n = 0, len(rows)
        if out._n == 0:
            raise DatasetError(f"{self.source}: no reference images selected", where="ReferenceBank")
        return out

    def __len__(self) -> int:
        return self._n

    @property
    def n_subjects(self) -> int:
        return self._s1 - self._s0

    def subject_name(self, j: int) -> str:
        if not 0 <= j < self.n_subjects:
            raise IndexError(j)
        return str(self._query("SELECT name FROM subjects WHERE s = ?", (self._s0 + j,))[0][0])

    def subject_members(self, j: int) -> np.ndarray:
        if not 0 <= j < self.n_subjects:
            raise IndexError(j)
        sql = "SELECT i FROM records WHERE s = ? ORDER BY i" + (f" LIMIT {self._per}" if self._per else "")
        rows = self._query(sql, (self._s0 + j,))
        return self._p(np.fromiter((r[0] for r in rows), np.int64, len(rows)))

    def subject_position(self, name: str) -> int | None:
        rows = self._query("SELECT s FROM subjects WHERE name = ?", (str(name),))
        if not rows or not self._s0 <= rows[0][0] < self._s1:
            return None
        return int(rows[0][0]) - self._s0

    def record(self, p: int) -> BankRecord:
        g = int(self._g(np.asarray([p]))[0])
        key, name, tags = self._query(
            "SELECT r.key, s.name, r.tags FROM records r JOIN subjects s ON r.s = s.s WHERE r.i = ?", (g,)
        )[0]
        return BankRecord(str(key), str(name), json.loads(tags) if tags else {})

    def tagged(self) -> Iterator[tuple[int, str, dict[str, str]]]:
        sql = ("SELECT r.i, s.name, r.tags FROM records r JOIN subjects s ON r.s = s.s "
               "WHERE r.tags IS NOT NULL AND r.s >= ? AND r.s < ? ORDER BY r.i")  # fmt: skip
        for g, name, tags in self._query(sql, (self._s0, self._s1)):
            if self._ids is not None:
                p = int(np.searchsorted(self._ids, g))
                if p >= len(self._ids) or self._ids[p] != g:
                    continue
            else:
                p = g - self._base
            yield p, str(name), json.loads(tags)

    def n_tagged(self) -> int:
        if self._ids is None:
            sql = "SELECT COUNT(*) FROM records WHERE tags IS NOT NULL AND s >= ? AND s < ?"
            return int(self._query(sql, (self._s0, self._s1))[0][0])
        return sum(1 for _ in self.tagged())

    # -- faces
    def faces(self, positions: np.ndarray) -> np.ndarray:
        g = self._g(np.asarray(positions, np.int64))
        out = np.empty((len(g), 112, 112, 3), np.uint8)
        if not len(g):
            return out
        where: dict[int, tuple[int, int, str | None, str]] = {}
        uniq = np.unique(g).tolist()
        for s in range(0, len(uniq), 500):
            part = uniq[s : s + 500]
            sql = f"SELECT i, file, loc, path, key FROM records WHERE i IN ({','.join('?' * len(part))})"
            for i, f, loc, path, key in self._query(sql, tuple(part)):
                where[int(i)] = (int(f), int(loc), path, str(key))
        for k, gi in enumerate(g.tolist()):
            out[k] = self._read(*where[gi])
        return out

    def _read(self, file: int, loc: int, path: str | None, key: str) -> np.ndarray:
        from ..recordio import _read_chunks, unpack

        if file == FILE_FOLDER:
            assert self.root is not None and path is not None
            img = read_image(self.root / path, where="ReferenceBank")
        else:
            src = self.data[file]
            with self._lock:
                self._db()  # resets the handles in a forked process
                fh = self._files.get(file)
                if fh is None:
                    try:
                        fh = self._files[file] = open(src, "rb")  # noqa: SIM115
                    except OSError as exc:
                        raise DatasetError(
                            f"cannot open {src} for reference {key}: {exc}",
                            where="ReferenceBank",
                            fix=f"restore the file, or delete the index {self.db_path} to rebuild it.",
                        ) from None
                record = _read_chunks(fh, loc, str(src))
            img = decode_image(unpack(record)[1], where=f"ReferenceBank {key}")
        if img.shape != (112, 112, 3):
            raise DatasetError(
                f"reference {key} is {img.shape[1]}x{img.shape[0]}, not an aligned 112x112 face",
                where="ReferenceBank",
                fix=f"the index {self.db_path} took the set as aligned (its property file says 112x112): "
                "fix the property file or connect face models and delete the index to rebuild it aligned.",
            )
        return img

    # -- subject embeddings, cached beside the index
    def _embedding_path(self, cache_id: str) -> Path:
        view = f"{cache_id}|{self.meta['fingerprint']}|{self._s0}|{self._s1}|{self._per}"
        return self.db_path.with_name(
            f"{self.db_path.stem}.emb-{hashlib.sha256(view.encode()).hexdigest()[:16]}.npy"
        )

    def load_embeddings(self, cache_id: str) -> np.ndarray | None:
        path = self._embedding_path(cache_id)
        if not path.is_file():
            return None
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable subject-embedding cache %s: %s", path, exc)
            return None
        if arr.ndim != 2 or arr.shape[0] != self.n_subjects:
            return None
        log.info("reference bank: %d subject embeddings from %s", arr.shape[0], path)
        return arr

    def save_embeddings(self, cache_id: str, emb: np.ndarray) -> None:
        from ..fsutil import atomic_open

        try:
            with atomic_open(self._embedding_path(cache_id), "wb") as f:
                np.save(f, np.ascontiguousarray(emb, np.float32), allow_pickle=False)
        except OSError as exc:  # a cache that cannot be written only costs time next run
            log.warning("could not cache subject embeddings beside %s: %s", self.db_path, exc)


# ---------------------------------------------------------------------------- building
class _Builder:
    """Writes a new index to temporary files and renames them into place on :meth:`commit`."""

    def __init__(self, db_path: Path, meta: dict[str, str]) -> None:
        self.db_path = db_path
        self.meta = dict(meta)
        self.tmp = db_path.with_name(f"{db_path.name}.tmp-{os.getpid()}")
        self.faces_name = f"{db_path.stem}.faces-{meta['fingerprint'][:12]}.rec"
        self.faces_tmp = db_path.with_name(f"{self.faces_name}.tmp-{os.getpid()}")
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()
        self.conn = sqlite3.connect(self.tmp)
        self.conn.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;" + _SCHEMA)
        self.subjects: dict[str, int] = {}
        self.rows: list[tuple] = []
        self.n = 0
        self.n_tagged = 0
        self.contiguous = True
        self._last_s = -1
        self.faces = None

    def add(self, subject: str, key: str, file: int, loc: int, path: str | None, tags: dict | None) -> None:
        s = self.subjects.get(subject)
        if s is None:
            s = self.subjects[subject] = len(self.subjects)
            self.conn.execute("INSERT INTO subjects VALUES (?, ?)", (s, subject))
        elif s != self._last_s:
            self.contiguous = False
        self._last_s = s
        self.rows.append(
            (self.n, s, key, file, int(loc), path, json.dumps(tags, sort_keys=True) if tags else None)
        )
        self.n += 1
        self.n_tagged += bool(tags)
        if len(self.rows) >= _INSERT_BATCH:
            self._flush()

    def add_face(self, subject: str, key: str, face: np.ndarray, tags: dict | None) -> None:
        from ..recordio import RecordWriter, pack_scalar

        if self.faces is None:
            self.faces = RecordWriter(self.faces_tmp, self.faces_tmp.with_suffix(".idx-tmp"))
        off = self.faces.write(self.n, pack_scalar(0.0, self.n, encode_png(face)))
        self.add(subject, key, FILE_FACES_REC, off, None, tags)

    def _flush(self) -> None:
        self.conn.executemany("INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?)", self.rows)
        self.rows.clear()

    def commit(self) -> Path:
        self._flush()
        self.conn.execute("CREATE INDEX records_by_subject ON records (s, i)")
        self.conn.execute("CREATE UNIQUE INDEX subjects_by_name ON subjects (name)")
        self.meta.update(
            version=str(INDEX_VERSION),
            n_records=str(self.n),
            n_subjects=str(len(self.subjects)),
            n_tagged=str(self.n_tagged),
            contiguous="1" if self.contiguous else "0",
            faces_file=self.faces_name if self.faces is not None else "",
            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        self.conn.executemany("INSERT INTO meta VALUES (?, ?)", sorted(self.meta.items()))
        self.conn.commit()
        self.conn.close()
        with open(self.tmp, "rb+") as f:
            os.fsync(f.fileno())
        if self.faces is not None:
            self.faces.close()
            self.faces_tmp.with_suffix(".idx-tmp").unlink()
            os.replace(self.faces_tmp, self.db_path.with_name(self.faces_name))
        os.replace(self.tmp, self.db_path)
        from ..fsutil import fsync_dir

        fsync_dir(self.db_path.parent)
        for old in self.db_path.parent.glob(f"{self.db_path.stem}.faces-*.rec"):
            if old.name != self.faces_name:
                with contextlib.suppress(OSError):
                    old.unlink()
        return self.db_path

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()
        if self.faces is not None:
            with contextlib.suppress(Exception):
                self.faces.close(fsync=False)
        for p in (self.tmp, self.faces_tmp, self.faces_tmp.with_suffix(".idx-tmp")):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()


def _usable(
    db: Path, fingerprint: str, align: AlignFn | None, align_id: str, root: Path | None
) -> BankIndex | None:
    if not db.is_file():
        return None
    try:
        index = BankIndex(db, root)
    except (sqlite3.Error, KeyError, ValueError) as exc:
        log.warning("reference bank index %s is unreadable (%s); rebuilding it", db, exc)
        return None
    meta = index.meta
    if meta.get("version") != str(INDEX_VERSION) or meta.get("fingerprint") != fingerprint:
        log.info("reference bank index %s is out of date (its source changed); rebuilding it", db)
        return None
    if meta.get("faces_file") and align is not None and meta.get("align_id", "") != align_id:
        log.info("reference bank index %s was aligned with other face models; rebuilding it", db)
        return None
    return index


@contextlib.contextmanager
def _build_lock(db: Path) -> Iterator[None]:
    """One builder per index at a time (several ComfyUI servers may open the same bank at once); the
    others wait and then find the index built. Where ``fcntl`` is missing, builds may race: each writes
    its own temporary files and the last rename wins, both complete."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(db.with_name(db.name + ".lock"), "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _db_path(folder: Path, stem: str, identity: str) -> Path:
    return folder / f"{stem}-{hashlib.sha256(identity.encode()).hexdigest()[:12]}.bank.sqlite"


def open_rec_index(
    rec_path: str | os.PathLike,
    *,
    align: AlignFn | None = None,
    align_id: str = "",
    cache_dir: str | os.PathLike | None = None,
) -> BankIndex:
    """The index of an insightface ``.rec`` (built on first use or when the ``.rec`` changed)."""
    from ..recordio import rec_file

    rec = rec_file(rec_path).resolve()
    fp = _rec_fingerprint(rec)
    db = _db_path(cache_folder(rec.parent, cache_dir), rec.stem, str(rec))
    found = _usable(db, fp, align, align_id, None)
    if found is not None:
        return found
    with _build_lock(db):
        found = _usable(db, fp, align, align_id, None)  # another process may have built it meanwhile
        if found is not None:
            return found
        t0 = time.perf_counter()
        b = _Builder(db, {"kind": "rec", "source": str(rec), "fingerprint": fp, "align_id": align_id})
        try:
            _build_rec(b, rec, align)
            if b.n == 0:
                raise DatasetError(f"{rec}: no reference images selected", where="ReferenceBank.rec")
            b.commit()
        except BaseException:
            b.abort()
            raise
    log.info("reference bank: indexed %d images of %d subjects of %s in %.1f s -> %s",
             b.n, len(b.subjects), rec, time.perf_counter() - t0, db)  # fmt: skip
    return BankIndex(db)


def _build_rec(b: _Builder, rec: Path, align: AlignFn | None) -> None:
    from ..recordio import RecordReader, read_layout, read_property, unpack

    assume_aligned = False
    if (rec.parent / "property").is_file():
        with contextlib.suppress(DatasetError):
            assume_aligned = read_property(rec.parent)[1:] == (112, 112)
    reader = RecordReader(rec)
    try:
        layout = read_layout(reader, scan_labels=False)
        if layout.identity_ranges:
            groups: list[tuple[int, list[int]]] = [
                (c, list(range(a, e))) for c, (a, e) in enumerate(layout.identity_ranges)
            ]
        else:
            labels = layout.labels if layout.labels is not None else np.zeros(0, np.int64)
            by: dict[int, list[int]] = {}
            for k, lab in zip(layout.image_keys, labels.tolist(), strict=True):
                by.setdefault(int(lab), []).append(k)
            groups = sorted(by.items())
        name = rec.name
        for cls_id, keys in groups:
            for k in keys:
                key = f"rec:{name}#{k}"
                if assume_aligned:
                    b.add(str(cls_id), key, FILE_SOURCE_REC, reader.offset(k), None, None)
                    continue
                img = decode_image(unpack(reader.read(k))[1], where=f"ReferenceBank {name}#{k}")
                if img.shape == (112, 112, 3):
                    b.add(str(cls_id), key, FILE_SOURCE_REC, reader.offset(k), None, None)
                    continue
                face = _ensure_aligned(img, align, f"{name}#{k}")
                if face is not None:
                    b.add_face(str(cls_id), key, face, None)
    finally:
        reader.close()


def open_folder_index(
    root: str | os.PathLike,
    *,
    align: AlignFn | None = None,
    align_id: str = "",
    tags_csv: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> BankIndex:
    """The index of a reference folder (built on first use or when a file or the tags CSV changed)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(
            f"reference folder {root} does not exist",
            where="ReferenceBank.folder",
            fix="create it with one sub-folder per real reference subject holding that subject's face "
            "images (e.g. <folder>/subject0/0.png), or point to an existing folder.",
        )
    root = root.resolve()
    csv_path = Path(tags_csv).resolve() if tags_csv else None
    if csv_path is not None and not csv_path.is_file():
        raise InputError(f"tags CSV {csv_path} does not exist", where="ReferenceBank.tags_csv")
    fp, n_files = _folder_fingerprint(root, csv_path)
    if not n_files:
        raise InputError(
            f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {root}",
            where="ReferenceBank.folder",
            fix="put one sub-folder per real subject with its face images inside.",
        )
    parent = root.parent if root.parent != root else root
    db = _db_path(cache_folder(parent, cache_dir), root.name or "root", f"{root}|{csv_path}")
    found = _usable(db, fp, align, align_id, root)
    if found is not None:
        return found
    with _build_lock(db):
        found = _usable(db, fp, align, align_id, root)
        if found is not None:
            return found
        t0 = time.perf_counter()
        b = _Builder(db, {"kind": "folder", "source": str(root), "fingerprint": fp, "align_id": align_id})
        try:
            _build_folder(b, root, align, read_tags_csv(csv_path) if csv_path else {})
            if b.n == 0:
                raise InputError("no usable reference faces", where="ReferenceBank")
            b.commit()
        except BaseException:
            b.abort()
            raise
    log.info("reference bank: indexed %d images of %d subjects of %s in %.1f s -> %s",
             b.n, len(b.subjects), root, time.perf_counter() - t0, db)  # fmt: skip
    return BankIndex(db, root)


def _image_size(path: Path) -> tuple[int, int] | None:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except Exception:  # noqa: BLE001 - let the full decoder report it
        return None


def _build_folder(
    b: _Builder, root: Path, align: AlignFn | None, csv_tags: dict[str, dict[str, str]]
) -> None:
    for path in _walk_images(root):
        rel = path.relative_to(root)
        subject = rel.parts[0] if len(rel.parts) > 1 else "_"
        tags = folder_tags(rel.parts[1:-1])
        tags.update(csv_tags.get(rel.as_posix(), {}))
        subject = tags.pop("subject", subject)
        key = f"folder:{rel.as_posix()}"
        if _image_size(path) == (112, 112):
            b.add(subject, key, FILE_FOLDER, 0, rel.as_posix(), tags)
            continue
        face = _ensure_aligned(read_image(path, where="ReferenceBank"), align, str(rel))
        if face is not None:
            b.add_face(subject, key, face, tags)
