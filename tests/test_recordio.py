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


@pytest.mark.parametrize("name", SETS)
def test_writer_reproduces_mxnet_bytes(shared_testdata, tmp_path, name):
    folder, exp = _expected(shared_testdata, name)
    src = RecordReader(folder / "train.rec")
    with RecordWriter(tmp_path / "train.rec", tmp_path / "train.idx") as w:
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
    """The batch framing (one join, one numpy magic scan) equals framing each record on its own, for
    clean batches and for a batch with an aligned (split) and an unaligned magic in a payload."""
    from fdta_core.recordio import _MAGIC_BYTES, encode_scalar_record, encode_scalar_records

    rng = np.random.default_rng(1)
    clean = [(float(i % 3), i + 1, bytes(rng.integers(0, 256, 50 + i, dtype=np.uint8))) for i in range(9)]
    base = bytes(rng.integers(0, 256, 40, dtype=np.uint8))
    dirty = [*clean[:3], (1.0, 50, base[:8] + _MAGIC_BYTES + base), (2.0, 51, base[:5] + _MAGIC_BYTES + base)]
    for items in (clean, dirty, clean[:1], []):
        data, sizes = encode_scalar_records(items)
        recs = [encode_scalar_record(*it) for it in items]
        assert data == b"".join(recs) and sizes == [len(r) for r in recs]
