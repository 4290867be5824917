"""RecordIO reader/writer against files written by MXNet itself (../shared/testdata/recordio)."""

from __future__ import annotations

import hashlib
import json
import pickle
import struct

import numpy as np
import pytest

from fdta_core.errors import DatasetError
from fdta_core.recordio import (
    MAGIC,
    IRHeader,
    RecordReader,
    RecordWriter,
    encode_record,
    pack,
    read_layout,
    scan_records,
    unpack,
)

SETS = ["insightface_layout", "magic_split", "dali_layout"]


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _expected(shared_testdata, name):
    folder = shared_testdata / "recordio" / name
    return folder, json.loads((folder / "expected.json").read_text())


def _label(header: IRHeader):
    return list(header.label) if header.is_array else header.label


@pytest.mark.parametrize("name", SETS)
def test_reader_returns_every_record_as_listed(shared_testdata, name):
    folder, exp = _expected(shared_testdata, name)
    reader = RecordReader(folder / "train.rec")
    assert reader.keys == exp["write_order"]
    for key_s, rec in exp["records"].items():
        key = int(key_s)
        assert reader.offset(key) == rec["offset"]
        raw = reader.read(key)
        assert len(raw) == rec["record_len"] and _sha(raw) == rec["record_sha256"], key
        header, payload = unpack(raw)
        assert header.flag == rec["flag"] and header.id == rec["id"] and header.id2 == rec["id2"]
        assert _label(header) == pytest.approx(rec["label"])
        assert len(payload) == rec["payload_len"] and _sha(payload) == rec["payload_sha256"]
        assert reader.read_header(key) == header


@pytest.mark.parametrize("name", SETS)
def test_sequential_scan_matches_index(shared_testdata, name):
    folder, exp = _expected(shared_testdata, name)
    got = [(off, _sha(r)) for off, r in scan_records(folder / "train.rec")]
    want = [
        (exp["records"][str(k)]["offset"], exp["records"][str(k)]["record_sha256"])
        for k in exp["write_order"]
    ]
    assert got == want


@pytest.mark.parametrize("direct", [False, True], ids=["buffered", "direct"])
@pytest.mark.parametrize("name", SETS)
def test_writer_reproduces_mxnet_bytes(shared_testdata, tmp_path, name, direct):
    folder, exp = _expected(shared_testdata, name)
    src = RecordReader(folder / "train.rec")
    with RecordWriter(tmp_path / "train.rec", tmp_path / "train.idx", direct=direct) as w:
        for key in exp["write_order"]:
            rec = exp["records"][str(key)]
            if "record_hex" in rec:
                w.write(key, bytes.fromhex(rec["record_hex"]))
            else:  # rebuild the logical record from its parts, through pack()
                header, payload = src.read_unpacked(key)
                w.write(key, pack(IRHeader(header.flag, header.label, header.id, header.id2), payload))
    assert (tmp_path / "train.rec").read_bytes() == (folder / "train.rec").read_bytes()
    assert (tmp_path / "train.idx").read_bytes() == (folder / "train.idx").read_bytes()


def test_chunk_parts_match_for_split_records(shared_testdata):
    folder, exp = _expected(shared_testdata, "magic_split")
    for rec in exp["records"].values():
        enc = encode_record(bytes.fromhex(rec["record_hex"]))
        parts, pos = [], 0
        while pos < len(enc):
            magic, lrec = struct.unpack_from("<II", enc, pos)
            assert magic == MAGIC
            length = lrec & ((1 << 29) - 1)
            parts.append({"file_offset": rec["offset"] + pos, "cflag": lrec >> 29, "length": length})
            pos += 8 + length + ((-length) & 3)
        assert parts == rec["parts"], rec["name"]


def test_layouts_are_recognised(shared_testdata):
    folder, exp = _expected(shared_testdata, "insightface_layout")
    lay = read_layout(RecordReader(folder), scan_labels=True)
    assert lay.kind == "insightface" and lay.num_images == exp["N"] and lay.num_classes == exp["C"]
    assert [list(r) for r in lay.identity_ranges] == exp["identity_ranges"]
    folder, exp = _expected(shared_testdata, "dali_layout")
    lay = read_layout(RecordReader(folder))
    assert lay.kind == "dali" and lay.num_images == exp["N"] and lay.num_classes == 5


def test_pack_unpack_round_trip_and_mxnet_flag_rules():
    raw = pack(IRHeader(flag=7, label=3.0, id=5, id2=9), b"jpeg")
    h, p = unpack(raw)
    assert h == IRHeader(0, 3.0, 5, 9) and p == b"jpeg"  # scalar label forces flag 0
    h, p = unpack(pack(IRHeader(0, (1.0, 2.5, -3.0), 1, 0), b"x"))
    assert h.flag == 3 and h.label == (1.0, 2.5, -3.0) and p == b"x"


def test_reader_pickles_without_its_file_handle(tmp_path):
    with RecordWriter(tmp_path / "a.rec") as w:
        for k in range(3):
            w.write(k, pack(IRHeader(0, float(k), k, 0), bytes([k]) * 10))
    r = RecordReader(tmp_path / "a.rec")
    r.read(0)
    r2 = pickle.loads(pickle.dumps(r))
    assert r2._fh is None and r2.read_unpacked(2)[1] == b"\x02" * 10


def test_reader_without_idx_scans(tmp_path):
    with RecordWriter(tmp_path / "a.rec", tmp_path / "other.idx") as w:
        w.write(10, pack(IRHeader(0, 1.0, 0, 0), struct.pack("<I", MAGIC) * 3))
        w.write(11, pack(IRHeader(0, 2.0, 0, 0), b"abc"))
    r = RecordReader(tmp_path / "a.rec")
    assert r.keys == [0, 1] and unpack(r.read(0))[1] == struct.pack("<I", MAGIC) * 3


@pytest.mark.parametrize("cut", [3, 9, 40])
def test_truncated_and_corrupt_files_give_clear_errors(tmp_path, cut):
    with RecordWriter(tmp_path / "a.rec") as w:
        w.write(0, pack(IRHeader(0, 1.0, 0, 0), b"a" * 64))
        w.write(1, pack(IRHeader(0, 1.0, 0, 0), b"b" * 64))
    data = (tmp_path / "a.rec").read_bytes()
    (tmp_path / "a.rec").write_bytes(data[:-cut])
    r = RecordReader(tmp_path / "a.rec")
    assert r.read(0)
    with pytest.raises(DatasetError, match="truncated"):
        r.read(1)
    bad = bytearray(data)
    bad[len(bad) // 2 + 4 : len(bad) // 2 + 8] = b"\xff\xff\xff\xff"
    (tmp_path / "b.rec").write_bytes(
        bytes(bad[: len(data) // 2]) + b"\x00" * 8 + bytes(bad[len(data) // 2 + 8 :])
    )
    with pytest.raises(DatasetError):
        list(scan_records(tmp_path / "b.rec"))


def test_random_payloads_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    recs = []
    for _ in range(200):
        words = rng.integers(0, 2**32, size=int(rng.integers(0, 50)), dtype=np.uint32)
        words[rng.random(words.size) < 0.2] = MAGIC
        tail = rng.integers(0, 256, size=int(rng.integers(0, 4)), dtype=np.uint8).tobytes()
        recs.append(words.astype("<u4").tobytes() + tail)
    with RecordWriter(tmp_path / "r.rec") as w:
        for i, r in enumerate(recs):
            w.write(i, r)
    rd = RecordReader(tmp_path / "r.rec")
    assert [rd.read(i) for i in range(len(recs))] == recs


def test_encode_scalar_record_is_byte_identical_to_the_general_path():
    """The writer's one-join fast path gives exactly ``encode_record(pack_scalar(...))``, including
    payloads that hold the magic (aligned, unaligned, across the header boundary) and every padding."""
    from fdta_core.recordio import _MAGIC_BYTES, encode_record, encode_scalar_record, pack_scalar

    rng = np.random.default_rng(0)
    payloads = [bytes(rng.integers(0, 256, n, dtype=np.uint8)) for n in (0, 1, 2, 3, 4, 5, 17, 100, 5000)]
    base = bytes(rng.integers(0, 256, 64, dtype=np.uint8))
    for at in (0, 1, 2, 3, 4, 8, 30, 60):  # magic inside the payload at every alignment
        payloads.append(base[:at] + _MAGIC_BYTES + base[at:])
    for cut in (1, 2, 3):  # magic split between the last header bytes and the payload
        payloads.append(_MAGIC_BYTES[cut:] + base)
    for label, key in (
        (0.0, 1),
        (3.0, 7),
        (float(2**23), 2**40),
        (1.0, 0xCED7230A),
    ):  # last: magic in the header
        for p in payloads:
            assert encode_scalar_record(label, key, p) == encode_record(pack_scalar(label, key, p))


def test_encode_scalar_records_batch_is_byte_identical():
    """The batch framing (into one reused buffer, one numpy magic scan) equals framing each record on
    its own, for clean batches and for a batch with an aligned (split) and an unaligned magic in a
    payload, also when the buffer holds an earlier, longer batch."""
    from fdta_core.recordio import _MAGIC_BYTES, encode_scalar_record, encode_scalar_records

    rng = np.random.default_rng(1)
    clean = [(float(i % 3), i + 1, bytes(rng.integers(0, 256, 50 + i, dtype=np.uint8))) for i in range(9)]
    base = bytes(rng.integers(0, 256, 40, dtype=np.uint8))
    dirty = [*clean[:3], (1.0, 50, base[:8] + _MAGIC_BYTES + base), (2.0, 51, base[:5] + _MAGIC_BYTES + base)]
    buf = None
    for items in (clean, dirty, clean[:1], [], clean, dirty[:4]):  # the buffer is reused across batches
        old = buf
        buf, n, sizes = encode_scalar_records(items, buf)
        recs = [encode_scalar_record(*it) for it in items]
        assert bytes(buf[:n]) == b"".join(recs) and sizes == [len(r) for r in recs]
        assert old is None or len(old) < n or buf is old  # reused when large enough
    big = [(0.0, 1, bytes(5000))]
    grown, n, _ = encode_scalar_records(big, bytearray(16))
    assert len(grown) >= n == 5000 + 32


def _o_direct_works(folder) -> bool:
    """Whether this file system takes O_DIRECT (ext4 and xfs do; the test's answer must not depend on
    the writer's own code)."""
    import os

    if not hasattr(os, "O_DIRECT"):
        return False
    try:
        fd = os.open(folder / "probe", os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o600)
    except OSError:
        return False
    os.close(fd)
    (folder / "probe").unlink()
    return True


def _write_pattern(w: RecordWriter, rng) -> None:
    """Records of every size class: tiny, around a block, around the staging buffer (4 MiB), with
    flushes (the background fdatasync's) in between."""
    sizes = [0, 1, 3, 4091, 4096, 4097, 12_000, 1 << 20, (4 << 20) - 5, (4 << 20) + 9, 7, 5000]
    for key, n in enumerate(sizes * 2, 1):
        w.write(key, pack(IRHeader(0, float(key), key, 0), rng.integers(0, 256, n, dtype=np.uint8).tobytes()))
        if key % 5 == 0:
            w.flush_for_sync()


def test_direct_writer_gives_the_same_files(tmp_path):
    """O_DIRECT (whole blocks from a staging buffer, the tail at close) writes the bytes the buffered
    file writes, records of any size, flushed at any point."""
    for direct in (False, True):
        folder = tmp_path / str(direct)
        folder.mkdir()
        with RecordWriter(folder / "train.rec", direct=direct) as w:
            assert w.direct is (direct and _o_direct_works(folder))
            _write_pattern(w, np.random.default_rng(3))
    for name in ("train.rec", "train.idx"):
        assert (tmp_path / "True" / name).read_bytes() == (tmp_path / "False" / name).read_bytes()


def test_direct_writer_falls_back_where_o_direct_is_refused(tmp_path, monkeypatch):
    """A file system that refuses O_DIRECT (EINVAL) gets an ordinary file; a write that comes back
    short of a whole block turns O_DIRECT off for the rest. Same bytes either way."""
    import errno
    import os

    import fdta_core.recordio as rio

    if not hasattr(os, "O_DIRECT"):
        pytest.skip("no O_DIRECT on this platform: the writer never asks for it")
    with RecordWriter(tmp_path / "want.rec") as w:
        _write_pattern(w, np.random.default_rng(4))
    real_open, real_write = os.open, os.write

    def refuse(path, flags, *a):
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *a)

    monkeypatch.setattr(rio.os, "open", refuse)
    with RecordWriter(tmp_path / "refused.rec", direct=True) as w:
        assert not w.direct
        _write_pattern(w, np.random.default_rng(4))
    monkeypatch.setattr(rio.os, "open", real_open)
    if not _o_direct_works(tmp_path):
        pytest.skip("this file system refuses O_DIRECT: the short-write path cannot be reached")
    shorts = []

    def short(fd, data):
        if not shorts and len(data) > 2 * rio.DIRECT_BLOCK:
            shorts.append(len(data))
            return real_write(fd, data[: rio.DIRECT_BLOCK])  # a whole block: still aligned
        if len(shorts) == 1 and len(data) > 2 * rio.DIRECT_BLOCK:
            shorts.append(len(data))
            import fcntl

            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_DIRECT)
            wrote = real_write(fd, data[:100])  # unaligned: O_DIRECT must go off for the rest
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_DIRECT)
            return wrote
        return real_write(fd, data)

    monkeypatch.setattr(rio.os, "write", short)
    with RecordWriter(tmp_path / "short.rec", direct=True) as w:
        assert w.direct
        _write_pattern(w, np.random.default_rng(4))
        assert not w.direct  # off since the unaligned short write
    assert len(shorts) == 2

    def einval(fd, data):  # a file system that opens with O_DIRECT but refuses its writes
        import fcntl

        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(fd, data)

    monkeypatch.setattr(rio.os, "write", einval)
    with RecordWriter(tmp_path / "einval.rec", direct=True) as w:
        assert w.direct
        _write_pattern(w, np.random.default_rng(4))
        assert not w.direct
    for name in ("refused", "short", "einval"):
        assert (tmp_path / f"{name}.rec").read_bytes() == (tmp_path / "want.rec").read_bytes()
        assert (tmp_path / f"{name}.idx").read_bytes() == (tmp_path / "want.idx").read_bytes()


@pytest.mark.parametrize("direct", [False, True], ids=["buffered", "direct"])
def test_a_full_disk_at_close_is_reported_and_closes_both_files(tmp_path, monkeypatch, direct):
    """ENOSPC on the last write (the tail, at close) reaches the caller as itself, not masked by the
    ``.idx``'s flush, and neither file is left open. Buffered: ``/dev/full`` fails every write with
    ENOSPC; direct: the staging buffer's writes fail the same way."""
    import errno
    import os

    import fdta_core.recordio as rio

    if direct:
        if not _o_direct_works(tmp_path):
            pytest.skip("this file system refuses O_DIRECT")
        w = RecordWriter(tmp_path / "train.rec", direct=True)
        assert w.direct

        def full(fd, data):
            del data  # a view of the staging buffer must not outlive the call
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(rio.os, "write", full)
    else:
        if not os.path.exists("/dev/full"):
            pytest.skip("no /dev/full on this platform")
        w = RecordWriter("/dev/full", tmp_path / "train.idx")
    w.write(1, pack(IRHeader(0, 1.0, 1, 0), b"x" * 100))  # staged or buffered: nothing written yet
    with pytest.raises(OSError) as err:
        w.close()
    assert err.value.errno == errno.ENOSPC
    assert w._idx.closed and w._rec.closed
    w.close()  # a second close (an abort after the failed commit) is a no-op


def _open_fds() -> set[str]:
    import os

    return {
        os.readlink(f"/proc/self/fd/{f}")
        for f in os.listdir("/proc/self/fd")
        if os.path.exists(f"/proc/self/fd/{f}")
    }


@pytest.mark.skipif(not __import__("os").path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_direct_writer_leaves_no_descriptor_behind(tmp_path):
    """The O_DIRECT file holds a raw descriptor: an .idx that cannot be opened, and a writer dropped
    without close, leave none open; the dropped one writes what it staged, as a buffered file would."""
    import gc

    with pytest.raises(FileNotFoundError):
        RecordWriter(tmp_path / "a.rec", tmp_path / "missing" / "a.idx", direct=True)
    gc.collect()
    assert not [p for p in _open_fds() if str(tmp_path) in p]
    sizes = {}
    for direct in (False, True):
        w = RecordWriter(tmp_path / f"{direct}.rec", direct=direct)
        for k in range(100):
            w.write(k, pack(IRHeader(0, 1.0, k, 0), b"y" * 1000))
        del w
        gc.collect()
        sizes[direct] = (tmp_path / f"{direct}.rec").read_bytes()
    assert sizes[True] == sizes[False] and len(sizes[True]) == 100 * 1032
    assert not [p for p in _open_fds() if str(tmp_path) in p]


@pytest.mark.parametrize("direct", [False, True], ids=["buffered", "direct"])
def test_a_closed_writer_refuses_io(tmp_path, direct):
    """After close, writing or asking for the descriptor (the background fdatasync) raises ValueError,
    instead of handing out a descriptor number that may by then belong to another file."""
    w = RecordWriter(tmp_path / "t.rec", direct=direct)
    w.write(1, pack(IRHeader(0, 1.0, 1, 0), b"z" * 10))
    w.close()
    with pytest.raises(ValueError):
        w.flush_for_sync()
    with pytest.raises(ValueError):
        w.write(2, pack(IRHeader(0, 1.0, 2, 0), b"z"))
