"""Provenance manifest: one SQLite row per image, written beside the records it describes.

A chunk's ``manifest.sqlite`` is written inside the chunk's temporary folder and renamed together with
``train.rec``, so a committed chunk always has exactly the rows of its records. ``merge`` builds the
merged manifest with SQL (``ATTACH`` + ``INSERT ... SELECT``), never holding rows in Python.

Tables::

    images(key, label, identity, chunk, source_key, attributes, seeds, reference_key, age_target,
           csim, history, extra, jpeg_bytes, sha256)
    identities(label, identity, chunk, first_key, end_key, images)
    dropped(id, chunk, stage, identity, reasons, detail, record)
    meta(name, value)
    stages(id, chunk, stage, node, seconds, images, images_per_s, started)

``key``/``label`` are the record key and class label in the ``train.rec`` beside the manifest;
``identity`` is the original identity id of the plan (stable across chunks and merges); ``chunk`` and
``source_key`` name the chunk and key an image was first written under. ``attributes``, ``seeds``,
``history`` and ``extra`` are JSON text (query them with SQLite's ``json_extract``).
``dropped`` lists what the pipeline left out of the chunk and why (an identity without an acceptable
ACG candidate, an image below the CSIM threshold, ...): ``reasons`` is a JSON list of codes, ``record``
JSON details (manifests written before this table existed simply lack it). ``stages`` holds the wall time
and images/s of every stage that made the chunk's images (:mod:`fdta_core.timing`; older manifests lack it).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..errors import DatasetError
from ..faceset import Provenance

MANIFEST_NAME = "manifest.sqlite"
SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE images (
    key INTEGER PRIMARY KEY,
    label INTEGER NOT NULL,
    identity INTEGER NOT NULL,
    chunk TEXT NOT NULL,
    source_key INTEGER NOT NULL,
    attributes TEXT NOT NULL DEFAULT '{}',
    seeds TEXT NOT NULL DEFAULT '{}',
    reference_key TEXT,
    age_target REAL,
    csim REAL,
    history TEXT NOT NULL DEFAULT '[]',
    extra TEXT NOT NULL DEFAULT '{}',
    jpeg_bytes INTEGER,
    sha256 TEXT
);
CREATE TABLE identities (
    label INTEGER PRIMARY KEY,
    identity INTEGER NOT NULL UNIQUE,
    chunk TEXT,
    first_key INTEGER NOT NULL,
    end_key INTEGER NOT NULL,
    images INTEGER NOT NULL
);
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT);
CREATE TABLE dropped (
    id INTEGER PRIMARY KEY,
    chunk TEXT,
    stage TEXT NOT NULL,
    identity INTEGER NOT NULL,
    reasons TEXT NOT NULL DEFAULT '[]',
    detail TEXT NOT NULL DEFAULT '',
    record TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE stages (
    id INTEGER PRIMARY KEY,
    chunk TEXT,
    stage TEXT NOT NULL,
    node TEXT NOT NULL DEFAULT '',
    seconds REAL NOT NULL,
    images INTEGER NOT NULL,
    images_per_s REAL,
    started REAL
);
"""
#: Image rows per INSERT statement (14 columns each: far below SQLite's 32766 bound parameters).
ROWS_PER_INSERT = 64
STAGE_COLUMNS = ("chunk", "stage", "node", "seconds", "images", "images_per_s", "started")
DROPPED_COLUMNS = ("chunk", "stage", "identity", "reasons", "detail", "record")
_INDEXES = """
CREATE INDEX IF NOT EXISTS images_identity ON images(identity);
CREATE INDEX IF NOT EXISTS images_label ON images(label);
"""

IMAGE_COLUMNS = (
    "key",
    "label",
    "identity",
    "chunk",
    "source_key",
    "attributes",
    "seeds",
    "reference_key",
    "age_target",
    "csim",
    "history",
    "extra",
    "jpeg_bytes",
    "sha256",
)

#: Example queries (also in docs/dataset.md); tests run them.
EXAMPLE_QUERIES: dict[str, str] = {
    "images per gender": (
        "SELECT json_extract(attributes, '$.gender') AS gender, count(*) AS images, "
        "count(DISTINCT identity) AS identities FROM images GROUP BY gender ORDER BY gender"
    ),
    "low-CSIM images": "SELECT key, identity, csim FROM images WHERE csim < 0.5 ORDER BY csim",
    "what was dropped, and why": (
        "SELECT stage, json_extract(reasons, '$[0]') AS reason, count(*) AS n, count(DISTINCT identity) "
        "AS identities FROM dropped GROUP BY stage, reason ORDER BY stage, reason"
    ),
    "where the time went, per stage": (
        "SELECT stage, count(DISTINCT chunk) AS chunks, sum(images) AS images, round(sum(seconds), 2) AS "
        "seconds, round(sum(images) / sum(seconds), 1) AS images_per_s FROM stages GROUP BY stage"
    ),
    "where did identity 42 come from": (
        "SELECT key, chunk, source_key, json_extract(seeds, '$.acg') AS acg_seed, reference_key, "
        "age_target, history FROM images WHERE identity = 42 ORDER BY key"
    ),
}


#: One encoder for every row: ``json.dumps`` with options builds a new encoder per call (slow).
_ENCODE = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str).encode


def _c_encoder() -> Any:
    """json's C encoder built once with ``_ENCODE``'s options (``JSONEncoder.encode`` builds it again on
    every call, half the cost of a small dict); None where the C accelerator is missing."""
    import json.encoder as je

    make = getattr(je, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython always has it
        return None
    c = make(None, str, je.encode_basestring_ascii, None, ":", ",", True, False, True)
    probe = {"b": [1, 2.5, None, "\u00e9"], "a": {"y": True, "x": "s"}}
    return c if "".join(c(probe, 0)) == _ENCODE(probe) else None


_C_ENCODE = _c_encoder()


def _json(value: Any) -> str:
    if not value:
        return "[]" if isinstance(value, list) else "{}"
    if _C_ENCODE is not None and type(value) in (dict, list):
        try:
            return "".join(_C_ENCODE(value, 0))
        except (
            TypeError,
            ValueError,
            RecursionError,
        ):  # e.g. a non-string key: the Python encoder says what is wrong
            pass
    return _ENCODE(value)


def image_row(
    key: int,
    label: int,
    identity: int,
    chunk: str,
    provenance: Provenance | None,
    *,
    jpeg_bytes: int | None = None,
    sha256: str | None = None,
) -> tuple:
    """One ``images`` row (column order :data:`IMAGE_COLUMNS`)."""
    p = provenance or Provenance(identity=identity)
    return (
        int(key),
        int(label),
        int(identity),
        chunk,
        int(key),
        _json(p.attributes),
        _json(p.seeds),
        p.reference_key,
        None if p.age_target is None else float(p.age_target),
        None if p.csim is None else float(p.csim),
        _json(p.history),
        _json(p.extra),
        jpeg_bytes,
        sha256,
    )


class ManifestWriter:
    """Builds a new manifest file. Durability comes from the caller's fsync + rename of the folder, so
    SQLite's own journal is off while building (much faster, and the file is never seen half-built)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if self.path.exists():
            self.path.unlink()
        self.conn = sqlite3.connect(self.path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=OFF")
        self.conn.execute("PRAGMA synchronous=OFF")
        self.conn.executescript(_SCHEMA)
        self.conn.execute("BEGIN")
        self._inserts: dict[int, str] = {}

    def add_images(self, rows: Iterable[tuple]) -> None:
        """Insert image rows, up to :data:`ROWS_PER_INSERT` per statement.

        One multi-row ``INSERT ... VALUES (...), (...)`` per batch instead of ``executemany``, which steps
        once per row and releases and re-takes the GIL around every step (contended by the JPEG threads
        while writing): 1.7 us a row against 2.5 us, measured alone; merges insert the same way."""
        rows = rows if isinstance(rows, list) else list(rows)
        for i in range(0, len(rows), ROWS_PER_INSERT):
            part = rows[i : i + ROWS_PER_INSERT]
            self.conn.execute(self._insert_n(len(part)), list(itertools.chain.from_iterable(part)))

    def _insert_n(self, n: int) -> str:
        sql = self._inserts.get(n)
        if sql is None:
            one = f"({', '.join('?' * len(IMAGE_COLUMNS))})"
            sql = self._inserts[n] = f"INSERT INTO images ({', '.join(IMAGE_COLUMNS)}) VALUES " + ", ".join(
                [one] * n
            )
        return sql

    def add_identity(
        self, label: int, identity: int, chunk: str | None, first_key: int, end_key: int
    ) -> None:
        self.conn.execute(
            "INSERT INTO identities VALUES (?, ?, ?, ?, ?, ?)",
            (int(label), int(identity), chunk, int(first_key), int(end_key), int(end_key - first_key)),
        )

    def add_dropped(self, chunk: str | None, records: Iterable[Any]) -> None:
        """Record what was left out (:class:`~fdta_core.faceset.Dropped` records) under ``chunk``."""
        self.conn.executemany(
            f"INSERT INTO dropped ({', '.join(DROPPED_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?)",
            [
                (chunk, d.stage, int(d.identity), _ENCODE(list(d.reasons)), d.detail, _json(d.record))
                for d in records
            ],
        )

    def add_stages(self, chunk: str | None, timings: Iterable[Any]) -> None:
        """Record what each stage cost (:class:`~fdta_core.timing.StageTiming`) for ``chunk``."""
        self.conn.executemany(
            f"INSERT INTO stages ({', '.join(STAGE_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (t.chunk or chunk, t.stage, t.node, float(t.seconds), int(t.images), round(t.images_per_s, 3),
                 float(t.started))
                for t in timings
            ],
        )  # fmt: skip

    def copy_from(self, path: str | os.PathLike) -> None:
        """Copy the ``images`` and ``dropped`` rows of another manifest (a repair round starts from the
        committed chunk's manifest; its ``identities`` are rewritten at commit)."""
        self.conn.execute("COMMIT")
        self.conn.execute("ATTACH DATABASE ? AS base", (str(Path(path)),))
        try:
            cols = ", ".join(IMAGE_COLUMNS)
            self.conn.execute(f"INSERT INTO images ({cols}) SELECT {cols} FROM base.images ORDER BY key")
            has = self.conn.execute(
                "SELECT 1 FROM base.sqlite_master WHERE type='table' AND name='dropped'"
            ).fetchone()
            if has:
                cols = ", ".join(DROPPED_COLUMNS)
                self.conn.execute(f"INSERT INTO dropped ({cols}) SELECT {cols} FROM base.dropped ORDER BY id")
            if self.conn.execute(
                "SELECT 1 FROM base.sqlite_master WHERE type='table' AND name='stages'"
            ).fetchone():  # the earlier rounds' stage timings stay with the chunk
                cols = ", ".join(STAGE_COLUMNS)
                self.conn.execute(f"INSERT INTO stages ({cols}) SELECT {cols} FROM base.stages ORDER BY id")
        finally:
            self.conn.execute("DETACH DATABASE base")
            self.conn.execute("BEGIN")

    def dropped_count(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM dropped").fetchone()[0])

    def dropped_identities_since(self, count: int) -> list[int]:
        """Identities of the dropped rows added after the first ``count``."""
        rows = self.conn.execute("SELECT DISTINCT identity FROM dropped WHERE id > ?", (int(count),))
        return [int(r[0]) for r in rows]

    def drop_reasons(self, identities: Iterable[int]) -> dict[int, dict[str, Any]]:
        """Why each of ``identities`` was left out, from its latest round's dropped rows: ``{stage,
        reasons: {code: count}, detail, round}`` (identities without a row are absent)."""
        wanted = {int(i) for i in identities}
        rows = self.conn.execute(
            "SELECT identity, coalesce(json_extract(record, '$.repair_round'), 0) AS r, stage, reasons, "
            "count(*), min(detail), max(id) FROM dropped GROUP BY identity, r, stage, reasons"
        ).fetchall()
        latest: dict[int, int] = {}
        for ident, r, *_ in rows:
            if int(ident) in wanted:
                latest[int(ident)] = max(latest.get(int(ident), 0), int(r))
        out: dict[int, dict[str, Any]] = {}
        last_id: dict[int, int] = {}
        for ident, r, stage, reasons, n, detail, last in rows:
            ident = int(ident)
            if ident not in wanted or int(r) != latest[ident]:
                continue
            w = out.setdefault(ident, {"stage": stage, "reasons": {}, "detail": detail, "round": int(r)})
            for code in json.loads(reasons or "[]"):
                w["reasons"][code] = w["reasons"].get(code, 0) + int(n)
            if int(last) > last_id.get(ident, -1):  # the stage of the identity's last record
                last_id[ident] = int(last)
                w["stage"], w["detail"] = stage, detail
        return out

    def set_meta(self, **values: Any) -> None:
        self.conn.executemany(
            "INSERT OR REPLACE INTO meta VALUES (?, ?)",
            [(k, v if isinstance(v, str) else _json(v)) for k, v in values.items()],
        )

    def close(self, *, fsync: bool = True) -> None:
        if self.conn is None:
            return
        self.set_meta(schema_version=SCHEMA_VERSION)
        self.conn.execute("COMMIT")
        self.conn.executescript(_INDEXES)
        self.conn.close()
        self.conn = None
        if fsync:
            fd = os.open(self.path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def abort(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self.conn.close()
            self.conn = None


@contextlib.contextmanager
def open_manifest(path: str | os.PathLike) -> Iterator[sqlite3.Connection]:
    """Read-only connection to a manifest (raises :class:`DatasetError` when absent or not a manifest)."""
    p = Path(path)
    if p.is_dir():
        p = p / MANIFEST_NAME
    if not p.is_file():
        raise DatasetError(f"manifest {p} not found")
    try:
        conn = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
        conn.execute("SELECT count(*) FROM images")
    except sqlite3.DatabaseError as exc:
        raise DatasetError(f"{p} is not a readable FDTA manifest ({exc})") from None
    try:
        yield conn
    finally:
        conn.close()


def read_identities(path: str | os.PathLike) -> list[tuple[int, int, str | None, int, int]]:
    """``(label, identity, chunk, first_key, end_key)`` rows of a manifest, by label."""
    with open_manifest(path) as conn:
        return [
            (int(a), int(b), c, int(d), int(e))
            for a, b, c, d, e in conn.execute(
                "SELECT label, identity, chunk, first_key, end_key FROM identities ORDER BY label"
            )
        ]


def read_stages(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Every ``stages`` row of a manifest as a dict; [] for manifests written before the table existed."""
    with open_manifest(path) as conn:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='stages'").fetchone():
            return []
        rows = conn.execute(f"SELECT {', '.join(STAGE_COLUMNS)} FROM stages ORDER BY id").fetchall()
    return [dict(zip(STAGE_COLUMNS, r, strict=True)) for r in rows]


def read_dropped(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Every ``dropped`` row of a manifest as a dict (reasons and record decoded); [] for manifests
    written before the table existed."""
    with open_manifest(path) as conn:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='dropped'").fetchone():
            return []
        rows = conn.execute(f"SELECT {', '.join(DROPPED_COLUMNS)} FROM dropped ORDER BY id").fetchall()
    out = []
    for chunk, stage, identity, reasons, detail, record in rows:
        out.append(
            {
                "chunk": chunk,
                "stage": stage,
                "identity": int(identity),
                "reasons": json.loads(reasons or "[]"),
                "detail": detail,
                "record": json.loads(record or "{}"),
            }
        )
    return out


def query(path: str | os.PathLike, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
    """Run a read-only query on a manifest (the connection is opened read-only)."""
    with open_manifest(path) as conn:
        try:
            return list(conn.execute(sql, tuple(params)))
        except sqlite3.Error as exc:
            raise DatasetError(f"query failed on {path}: {exc}") from None
