"""MXNet RecordIO, pure Python, byte-compatible with ``mx.recordio`` (DESIGN 5.2).

What is written here is what insightface's ``arcface_torch`` (``MXFaceDataset``), ``rec2image`` and
NVIDIA DALI's ``fn.readers.mxnet`` read. The physical format:

* a chunk is ``uint32 magic 0xCED7230A``, ``uint32 lrec = cflag << 29 | length``, ``length`` bytes, zero
  padding to a multiple of 4 (little-endian);
* a logical record that contains the magic at a 4-byte-aligned offset (counted from the first byte of
  the record, so a magic inside the IRHeader or the label array counts too) is split there: the magic is
  dropped and the pieces become chunks with cflag 1 (first), 2 (middle), 3 (last); readers put the magic
  back. Without the split the output would not be byte-identical to MXNet's.
* ``.idx`` is text, one ``key\\toffset\\n`` line per record in write order.

A logical record is ``IRHeader`` (``struct '<IfQQ'``: flag, label, id, id2; 24 bytes), then ``flag``
float32 label values when the label is an array (the header's label is then 0.0), then the payload.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import mmap
import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DatasetError, InputError

log = logging.getLogger(__name__)

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_CHUNK_HEAD = struct.Struct("<II")
_IR = struct.Struct("<IfQQ")
IR_HEADER_SIZE = _IR.size  # 24
_LEN_MASK = (1 << 29) - 1
#: Largest chunk length the 29-bit length field can hold.
MAX_CHUNK = _LEN_MASK


# ---------------------------------------------------------------------------- IRHeader
@dataclass(frozen=True)
class IRHeader:
    """MXNet's image-record header. ``label`` is a float (scalar label, flag 0) or a tuple of floats
    (array label: flag is its length). ``id2`` carries no meaning for readers (insightface writes 0 on
    the header record, other writers 1)."""

    flag: int
    label: float | tuple[float, ...]
    id: int = 0
    id2: int = 0

    @property
    def is_array(self) -> bool:
        return isinstance(self.label, tuple)


def pack(header: IRHeader, payload: bytes = b"") -> bytes:
    """Header + label floats + payload, as ``mx.recordio.pack`` makes it.

    As in MXNet, an array label overrides ``flag`` with the array's length and writes 0.0 as the
    header's label; a scalar label forces flag 0.
    """
    label = header.label
    if isinstance(label, list | tuple | np.ndarray):
        values = np.asarray(label, dtype="<f4").ravel()
        head = _IR.pack(len(values), 0.0, header.id, header.id2)
        return head + values.tobytes() + bytes(payload)
    return pack_scalar(float(label), header.id, payload, header.id2)


def pack_scalar(label: float, id: int, payload: bytes = b"", id2: int = 0) -> bytes:
    """``pack(IRHeader(0, label, id, id2), payload)`` without building the dataclass: the data-set
    writer packs one per face, so this is the hot path of the one header struct."""
    return _IR.pack(0, label, id, id2) + bytes(payload)


def unpack(record: bytes) -> tuple[IRHeader, bytes]:
    """Inverse of :func:`pack`: ``(header, payload)``; array labels come back as tuples of floats."""
    if len(record) < IR_HEADER_SIZE:
        raise DatasetError(f"record of {len(record)} bytes is shorter than the 24-byte IRHeader")
    flag, label, id_, id2 = _IR.unpack_from(record, 0)
    if flag > 0:
        end = IR_HEADER_SIZE + 4 * flag
        if len(record) < end:
            raise DatasetError(f"record of {len(record)} bytes is too short for its {flag} label floats")
        values = np.frombuffer(record, dtype="<f4", count=flag, offset=IR_HEADER_SIZE)
        return IRHeader(flag, tuple(float(v) for v in values), id_, id2), bytes(record[end:])
    return IRHeader(0, float(label), id_, id2), bytes(record[IR_HEADER_SIZE:])


def unpack_header(record: bytes) -> IRHeader:
    """Only the header (and label array) of a record; cheap when the payload is large."""
    return unpack(record[: IR_HEADER_SIZE + 4 * max(0, _IR.unpack_from(record, 0)[0])])[0]


# ---------------------------------------------------------------------------- chunking
def aligned_magic_offsets(record: bytes) -> np.ndarray:
    """Offsets (multiples of 4, counted from the record's first byte) where the magic appears."""
    n = len(record) // 4
    if n == 0:
        return np.zeros(0, np.int64)
    words = np.frombuffer(record, dtype="<u4", count=n)
    return np.flatnonzero(words == MAGIC).astype(np.int64) * 4


def encode_record(record: bytes) -> bytes:
    """The physical bytes of one logical record: its chunks with headers and padding."""
    record = bytes(record)
    if _MAGIC_BYTES not in record:  # fast path (almost every record): one C-level search, no numpy
        return _chunk(0, record)
    splits = aligned_magic_offsets(record)
    if len(splits) == 0:
        return _chunk(0, record)
    out = bytearray()
    start = 0
    for i, pos in enumerate(splits.tolist()):
        out += _chunk(1 if i == 0 else 2, record[start:pos])
        start = pos + 4
    out += _chunk(3, record[start:])
    return bytes(out)


_PADS = (b"", b"\x00", b"\x00\x00", b"\x00\x00\x00")


def encode_scalar_record(label: float, id: int, payload: bytes, id2: int = 0) -> bytes:
    """``encode_record(pack_scalar(label, id, payload, id2))`` in one join: the data-set writer's per-face
    hot path (no intermediate copies of the payload). The same bytes, byte for byte."""
    head = _IR.pack(0, label, id, id2)
    n = IR_HEADER_SIZE + len(payload)
    if n > MAX_CHUNK or payload.rfind(_MAGIC_BYTES) >= 0 or _MAGIC_BYTES in head + payload[:3]:
        return encode_record(head + bytes(payload))  # rare: the record must be split (or is too long)
    return b"".join((_CHUNK_HEAD.pack(MAGIC, n), head, payload, _PADS[(-n) & 3]))


_HEADS = struct.Struct("<IIIfQQ")  # chunk head (magic, cflag|length) + IRHeader (flag 0, label, id, id2)


def encode_scalar_records(
    items: Sequence[tuple[float, int, bytes]], buf: bytearray | None = None
) -> tuple[bytearray, int, list[int]]:
    """Frame many ``(label, id, payload)`` scalar records into ``buf``: ``(buf, nbytes, sizes)``.

    ``buf[:nbytes]`` is ``b"".join(encode_scalar_record(*it) for it in items)``, byte for byte, and
    ``sizes`` the length of each record. ``buf`` is reused when it is large enough (the returned one is a
    new, larger buffer otherwise): the data-set writer frames every batch into a buffer of its own
    instead of joining a fresh ~700 KB ``bytes``, whose new pages cost ~3 us a face in page faults.
    The magic check runs once over the framed bytes (numpy, 4-byte aligned words: a record starts
    4-aligned, so an aligned magic inside a payload is an aligned word of the batch); the rare batch
    with one is framed record by record with :func:`encode_scalar_record`."""
    sizes: list[int] = []
    total = 0
    for _label, _id, payload in items:
        n = IR_HEADER_SIZE + len(payload)
        if n > MAX_CHUNK:
            raise InputError(f"record chunk of {n} bytes exceeds RecordIO's 2^29-1 byte limit")
        size = 8 + n + ((-n) & 3)
        sizes.append(size)
        total += size
    if buf is None or len(buf) < total:
        buf = bytearray(max(total, 2 * len(buf or b"")))
    pack_into = _HEADS.pack_into
    with memoryview(buf) as out:
        off = 0
        for (label, id_, payload), size in zip(items, sizes, strict=True):
            n = IR_HEADER_SIZE + len(payload)
            pack_into(out, off, MAGIC, n, 0, label, id_, 0)
            start = off + 32
            out[start : start + len(payload)] = payload
            out[start + len(payload) : off + size] = _PADS[size - 32 - len(payload)]
            off += size
        words = np.frombuffer(buf, dtype="<u4", count=total // 4)
        hits = np.flatnonzero(words == MAGIC) * 4
        heads = np.cumsum(sizes, dtype=np.int64) - sizes  # where each record starts
        if len(hits) != len(heads) or not np.array_equal(hits, heads):  # a payload holds the magic
            recs = [encode_scalar_record(label, id_, payload) for label, id_, payload in items]
            sizes = [len(r) for r in recs]
            total = sum(sizes)
            if len(buf) < total:
                out.release()
                buf = bytearray(total)
            buf[:total] = b"".join(recs)
    return buf, total, sizes


def _chunk(cflag: int, data: bytes) -> bytes:
    if len(data) > MAX_CHUNK:
        raise InputError(f"record chunk of {len(data)} bytes exceeds RecordIO's 2^29-1 byte limit")
    pad = (-len(data)) & 3
    return _CHUNK_HEAD.pack(MAGIC, (cflag << 29) | len(data)) + data + b"\x00" * pad


# ---------------------------------------------------------------------------- writing
#: O_DIRECT writes go in whole blocks of this size from a page-aligned buffer (4 KiB satisfies every
#: common logical block size: 512 B and 4 KiB).
DIRECT_BLOCK = 4096
_STAGE = 4 << 20  # the staging buffer; whole blocks are written once it is a quarter full
_EINVAL = (errno.EINVAL, getattr(errno, "EOPNOTSUPP", errno.EINVAL))


class _RecFile:
    """The ``.rec`` file: a plain buffered file, or (``direct``) writes that bypass the page cache.

    Why direct: the data-set writer streams gigabytes that it only fsyncs and never reads back, and it
    is CPU-bound on the JPEG encoders. Through the page cache every byte is copied by the kernel into
    freshly allocated pages and written back later, which costs several microseconds of CPU a face
    (measured: 5-15 us on these VMs, where a fresh page also faults in the host); with ``O_DIRECT`` the
    device reads the bytes from a staging buffer of ours and the kernel copies nothing. Records are
    copied into the staging buffer and written in whole :data:`DIRECT_BLOCK` blocks; the tail is
    written at :meth:`close` with ``O_DIRECT`` cleared. Where ``O_DIRECT`` is unknown (macOS) or refused
    (some file systems say ``EINVAL``), or a write comes back short of a whole block, the file goes on
    as an ordinary one: same bytes, through the page cache.
    """

    def __init__(self, path: Path, direct: bool = False) -> None:
        self.direct = False
        self._file: io.BufferedWriter | None = None
        if direct and hasattr(os, "O_DIRECT"):
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
            try:
                self._fd = os.open(path, flags | os.O_DIRECT, 0o666)
            except OSError as exc:
                if exc.errno not in _EINVAL:
                    raise
                log.debug("O_DIRECT refused for %s (%s); writing through the page cache", path, exc)
            else:
                try:
                    self._stage = mmap.mmap(-1, _STAGE)  # page-aligned, as O_DIRECT wants
                except BaseException:
                    os.close(self._fd)
                    raise
                self._view = memoryview(self._stage)
                self._fill = 0
                self.direct = True
        if not self.direct:
            self._file = open(path, "wb")  # noqa: SIM115 - closed by close()
        self.closed = False

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed file")  # as a closed buffered file says

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._file is not None:
            self._file.write(data)
            return
        self._check_open()
        with memoryview(data) as raw, raw if raw.format == "B" and raw.ndim == 1 else raw.cast("B") as src:
            pos, n = 0, src.nbytes
            while pos < n:
                take = min(n - pos, _STAGE - self._fill)
                self._view[self._fill : self._fill + take] = src[pos : pos + take]
                self._fill += take
                pos += take
                if self._fill >= _STAGE // 4:
                    self._write_blocks()

    def _write_blocks(self, everything: bool = False) -> None:
        """Write the staged bytes: whole blocks only while ``O_DIRECT`` is on (the partial block moves
        to the front of the buffer), everything when ``everything`` or once it is off."""
        if everything and self.direct and self._fill % DIRECT_BLOCK:
            self._write_blocks()
            self._end_direct()
        end = self._fill - self._fill % DIRECT_BLOCK if self.direct else self._fill
        done = 0
        while done < end:
            try:
                wrote = os.write(self._fd, self._view[done:end])
            except OSError as exc:
                if not self.direct or exc.errno not in _EINVAL:
                    raise
                log.debug("O_DIRECT write refused (%s); writing through the page cache", exc)
                self._end_direct()
                end = self._fill
                continue
            done += wrote
            if self.direct and wrote % DIRECT_BLOCK:  # a short write left the file offset unaligned
                self._end_direct()
                end = self._fill
        if done:
            self._stage.move(0, done, self._fill - done)
            self._fill -= done

    def _end_direct(self) -> None:
        """Clear ``O_DIRECT`` on the descriptor: the rest goes through the page cache."""
        import fcntl

        fcntl.fcntl(self._fd, fcntl.F_SETFL, fcntl.fcntl(self._fd, fcntl.F_GETFL) & ~os.O_DIRECT)
        self.direct = False

    def flush(self) -> None:
        """Hand the OS what can go now (for a direct file: the whole blocks staged so far)."""
        if self._file is not None:
            self._file.flush()
        else:
            self._check_open()
            self._write_blocks()

    def fileno(self) -> int:
        if self._file is not None:
            return self._file.fileno()
        self._check_open()
        return self._fd

    def close(self, *, fsync: bool = True) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            if self._file is not None:
                self._file.flush()
            else:
                self._write_blocks(everything=True)
            if fsync:
                os.fsync(self._file.fileno() if self._file is not None else self._fd)
        finally:
            if self._file is not None:
                self._file.close()
            else:
                os.close(self._fd)
                with contextlib.suppress(BufferError):  # a view still held by a traceback: freed by GC
                    self._view.release()
                    self._stage.close()

    def __del__(self) -> None:
        # like a buffered file dropped unclosed: what is staged is written and the descriptor closed
        if not getattr(self, "closed", True):
            with contextlib.suppress(Exception):
                self.close(fsync=False)


class RecordWriter:
    """Append records to a ``.rec`` file and its ``.idx`` (like ``MXIndexedRecordIO`` in ``'w'`` mode).

    ``write(key, record)`` takes a logical record (see :func:`pack`) and returns its offset. Use as a
    context manager; the files are flushed and fsynced on close. Writing to final names is the caller's
    choice: the dataset writer writes into a temporary chunk folder and renames it when complete.
    """

    def __init__(
        self,
        rec_path: str | os.PathLike,
        idx_path: str | os.PathLike | None = None,
        *,
        direct: bool = False,
    ) -> None:
        self.rec_path = Path(rec_path)
        self.idx_path = Path(idx_path) if idx_path is not None else self.rec_path.with_suffix(".idx")
        self._rec = _RecFile(self.rec_path, direct)
        try:
            self._idx = open(self.idx_path, "w", encoding="ascii", newline="\n")  # noqa: SIM115
        except BaseException:
            self._rec.close(fsync=False)
            raise
        self._offset = 0
        self.count = 0

    @property
    def offset(self) -> int:
        return self._offset

    def write(self, key: int, record: bytes) -> int:
        return self.write_encoded(key, encode_record(record))

    def write_encoded(self, key: int, encoded: bytes) -> int:
        """Append bytes already produced by :func:`encode_record` (used by parallel encoders)."""
        offset = self._offset
        self._rec.write(encoded)
        self._idx.write(f"{int(key)}\t{offset}\n")
        self._offset += len(encoded)
        self.count += 1
        return offset

    def write_encoded_many(self, items: Sequence[tuple[int, bytes]]) -> None:
        """Append several ``(key, encoded)`` records with one write per file (the dataset writer's
        batches; fewer Python-level writes while the encoder threads hold the cores)."""
        offset = self._offset
        lines = []
        for key, encoded in items:
            lines.append(f"{int(key)}\t{offset}\n")
            offset += len(encoded)
        self._rec.write(b"".join(encoded for _key, encoded in items))
        self._idx.write("".join(lines))
        self._offset = offset
        self.count += len(items)

    def write_joined(
        self, keys: Sequence[int], sizes: Sequence[int], data: bytes | bytearray | memoryview
    ) -> None:
        """Append records already framed by :func:`encode_record` and joined into ``data`` (``sizes``
        gives each one's length; any bytes-like object): one write per file for a whole batch of the
        data-set writer."""
        if len(keys) != len(sizes) or sum(sizes) != len(data):
            raise ValueError("write_joined: keys, sizes and data do not agree")
        offset = self._offset
        lines = []
        for key, size in zip(keys, sizes, strict=True):
            lines.append(f"{int(key)}\t{offset}\n")
            offset += size
        self._rec.write(data)
        self._idx.write("".join(lines))
        self._offset = offset
        self.count += len(keys)

    def flush_for_sync(self) -> int:
        """Hand what was written so far to the OS and return the ``.rec`` file descriptor, so that
        another thread can ``os.fdatasync`` it while writing goes on (the final fsync on close then only
        has the tail left to write)."""
        self._rec.flush()
        return self._rec.fileno()

    @property
    def direct(self) -> bool:
        """Whether ``train.rec`` is being written with ``O_DIRECT`` (see :class:`_RecFile`)."""
        return self._rec.direct

    def close(self, *, fsync: bool = True) -> None:
        if self._rec.closed:
            return
        try:
            self._rec.close(fsync=fsync)
        except BaseException:
            with contextlib.suppress(OSError):  # the .rec's error is the one to report
                self._idx.close()
            raise
        self._idx.flush()
        if fsync:
            os.fsync(self._idx.fileno())
        self._idx.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------- reading
def read_idx(idx_path: str | os.PathLike) -> tuple[list[int], dict[int, int]]:
    """Parse an ``.idx`` file: keys in file order and key -> offset."""
    keys: list[int] = []
    offsets: dict[int, int] = {}
    path = Path(idx_path)
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise DatasetError(
            f"index file {path} not found", fix="pass the folder holding train.rec and train.idx."
        ) from None
    except UnicodeDecodeError:
        raise DatasetError(f"{path} is not a RecordIO index (not ASCII text)") from None
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 2:
            raise DatasetError(f"{path}:{lineno}: expected 'key<TAB>offset', got {line[:60]!r}")
        try:
            key, off = int(parts[0]), int(parts[1])
        except ValueError:
            raise DatasetError(
                f"{path}:{lineno}: key and offset must be integers, got {line[:60]!r}"
            ) from None
        if key in offsets:
            raise DatasetError(f"{path}:{lineno}: key {key} appears twice")
        keys.append(key)
        offsets[key] = off
    return keys, offsets


def _read_chunks(f: io.BufferedReader, offset: int, where: str) -> bytes:
    """Read the logical record whose first chunk starts at ``offset``."""
    f.seek(offset)
    parts: list[bytes] = []
    first = True
    while True:
        head = f.read(8)
        if len(head) < 8:
            raise DatasetError(f"{where}: truncated chunk header at offset {f.tell() - len(head)}")
        magic, lrec = _CHUNK_HEAD.unpack(head)
        if magic != MAGIC:
            raise DatasetError(
                f"{where}: bad magic 0x{magic:08x} at offset {f.tell() - 8} (not a RecordIO record boundary)"
            )
        cflag, length = lrec >> 29, lrec & _LEN_MASK
        data = f.read(length)
        if len(data) < length:
            raise DatasetError(
                f"{where}: record at offset {offset} is truncated ({len(data)} of {length} bytes)"
            )
        pad = (-length) & 3
        if pad:
            f.seek(pad, io.SEEK_CUR)
        if first:
            if cflag == 0:
                return data
            if cflag != 1:
                raise DatasetError(
                    f"{where}: record at offset {offset} starts with a continuation chunk (cflag {cflag})"
                )
            parts.append(data)
            first = False
            continue
        if cflag not in (2, 3):
            raise DatasetError(f"{where}: split record at offset {offset} has a chunk with cflag {cflag}")
        parts.append(_MAGIC_BYTES)
        parts.append(data)
        if cflag == 3:
            return b"".join(parts)


def scan_records(rec_path: str | os.PathLike) -> Iterator[tuple[int, bytes]]:
    """Sequentially yield ``(offset, logical_record)`` for a whole ``.rec`` (no ``.idx`` needed).

    Raises :class:`DatasetError` at the first corruption (bad magic, truncation), naming the offset.
    """
    path = Path(rec_path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        offset = 0
        while offset < size:
            record = _read_chunks(f, offset, str(path))
            yield offset, record
            offset = f.tell()


def rec_file(path: str | os.PathLike) -> Path:
    """The ``.rec`` a user named: the file itself, or a data-set folder's ``train.rec``."""
    rec = Path(path)
    if rec.is_dir():
        rec = rec / "train.rec"
    if not rec.is_file():
        raise DatasetError(
            f"RecordIO file {rec} not found", fix="pass a .rec file or a folder holding train.rec."
        )
    return rec


class RecordReader:
    """Indexed random access to a ``.rec`` (like ``MXIndexedRecordIO`` in ``'r'`` mode).

    The file is opened lazily and re-opened in each process (the handle is dropped when pickled), so
    one reader can be handed to every ``DataLoader`` worker. Without an ``.idx`` the ``.rec`` is scanned
    once to build the index.
    """

    def __init__(self, rec_path: str | os.PathLike, idx_path: str | os.PathLike | None = None) -> None:
        rec = rec_file(rec_path)
        self.rec_path = rec
        idx = Path(idx_path) if idx_path is not None else rec.with_suffix(".idx")
        if idx.is_file():
            self.idx_path: Path | None = idx
            self.keys, self._offsets = read_idx(idx)
        else:
            self.idx_path = None
            self.keys, self._offsets = [], {}
            for i, (off, _rec) in enumerate(scan_records(rec)):
                self.keys.append(i)
                self._offsets[i] = off
        self._fh: io.BufferedReader | None = None
        self._pid = -1

    def _file(self) -> io.BufferedReader:
        if self._fh is None or self._pid != os.getpid():
            self._fh = open(self.rec_path, "rb")  # noqa: SIM115
            self._pid = os.getpid()
        return self._fh

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_fh"] = None
        state["_pid"] = -1
        return state

    def __len__(self) -> int:
        return len(self.keys)

    def __contains__(self, key: int) -> bool:
        return key in self._offsets

    def offset(self, key: int) -> int:
        try:
            return self._offsets[key]
        except KeyError:
            raise DatasetError(f"key {key} is not in {self.idx_path or self.rec_path}") from None

    def read(self, key: int) -> bytes:
        """The logical record at ``key`` (header + labels + payload)."""
        return _read_chunks(self._file(), self.offset(key), str(self.rec_path))

    def read_unpacked(self, key: int) -> tuple[IRHeader, bytes]:
        return unpack(self.read(key))

    def read_header(self, key: int) -> IRHeader:
        """Only the header and label of ``key``; reads the first chunk's first bytes when possible."""
        f = self._file()
        off = self.offset(key)
        f.seek(off)
        head = f.read(8 + IR_HEADER_SIZE)
        if len(head) >= 8 + IR_HEADER_SIZE:
            magic, lrec = _CHUNK_HEAD.unpack_from(head, 0)
            cflag, length = lrec >> 29, lrec & _LEN_MASK
            if magic == MAGIC and cflag == 0 and length >= IR_HEADER_SIZE:
                flag = _IR.unpack_from(head, 8)[0]
                if flag == 0:
                    return unpack(head[8 : 8 + IR_HEADER_SIZE])[0]
        return unpack_header(self.read(key))

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> RecordReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------- layouts
@dataclass
class Layout:
    """How a RecordIO set is organised.

    * ``insightface``: header at key 0 with label ``[N+1, N+C+1]``, images at keys ``1..N`` grouped by
      identity, identity-range records at ``N+1..N+C`` (what ``face2rec``/``MXFaceDataset`` use);
    * ``dali``: no header or identity records, scalar labels only, records shuffled;
    * ``plain``: anything else that holds images with scalar labels (e.g. grouped, without header).
    """

    kind: str
    image_keys: list[int]
    num_classes: int
    identity_ranges: list[tuple[int, int]] = field(default_factory=list)
    labels: np.ndarray | None = None

    @property
    def num_images(self) -> int:
        return len(self.image_keys)


def read_layout(reader: RecordReader, *, scan_labels: bool = False) -> Layout:
    """Work out the layout of ``reader``'s set.

    For the insightface layout only the header and identity records are read, unless ``scan_labels``
    asks for every image label too; for the others every header is read (labels are needed to count
    classes).
    """
    if 0 in reader:
        head = reader.read_header(0)
        if head.is_array and len(head.label) >= 2 and head.label[0] >= 1:
            first_id, end_id = int(head.label[0]), int(head.label[1])
            if end_id < first_id:
                raise DatasetError(
                    f"{reader.rec_path}: header label {list(head.label)} is not a valid identity range"
                )
            image_keys = list(range(1, first_id))
            missing = [k for k in image_keys[:1] + image_keys[-1:] if k not in reader]
            if missing:
                raise DatasetError(
                    f"{reader.rec_path}: header says images are keys 1..{first_id - 1}, key {missing[0]} is absent"
                )
            ranges: list[tuple[int, int]] = []
            for k in range(first_id, end_id):
                if k not in reader:
                    raise DatasetError(
                        f"{reader.rec_path}: identity record {k} listed by the header is absent"
                    )
                h = reader.read_header(k)
                if not h.is_array or len(h.label) < 2:
                    raise DatasetError(f"{reader.rec_path}: identity record {k} has no [start, end) label")
                ranges.append((int(h.label[0]), int(h.label[1])))
            labels = None
            if scan_labels:
                labels = np.array([_scalar_label(reader, k) for k in image_keys], np.int64)
            return Layout("insightface", image_keys, end_id - first_id, ranges, labels)
    keys = list(reader.keys)
    labels = np.array([_scalar_label(reader, k) for k in keys], np.int64)
    n_classes = int(labels.max()) + 1 if labels.size else 0
    grouped = bool(np.all(np.diff(labels) >= 0)) if labels.size else True
    contiguous = keys == list(range(len(keys)))
    kind = "dali" if (contiguous and not grouped) else "plain"
    return Layout(kind, keys, n_classes, [], labels)


def _scalar_label(reader: RecordReader, key: int) -> float:
    h = reader.read_header(key)
    if h.is_array:
        if len(h.label) == 0:
            raise DatasetError(f"{reader.rec_path}: record {key} has an empty label array")
        return float(h.label[0])
    return float(h.label)


def write_property(folder: str | os.PathLike, num_classes: int, size: Sequence[int] = (112, 112)) -> None:
    """insightface's ``property`` file: ``num_classes,H,W`` (no trailing newline)."""
    from .fsutil import atomic_write_text

    atomic_write_text(Path(folder) / "property", f"{int(num_classes)},{int(size[0])},{int(size[1])}")


def read_property(folder: str | os.PathLike) -> tuple[int, int, int]:
    path = Path(folder) / "property"
    try:
        parts = path.read_text().strip().split(",")
        return int(parts[0]), int(parts[1]), int(parts[2])
    except FileNotFoundError:
        raise DatasetError(f"{path} not found") from None
    except (ValueError, IndexError):
        raise DatasetError(f"{path} is not 'num_classes,height,width'") from None
