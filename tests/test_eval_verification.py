"""Verification protocol (DESIGN 5.3) against an independent straightforward implementation, safe
loading of .bin files, and ``fdta verify`` on torch and ONNX models."""

from __future__ import annotations

import json
import math
import os
import pickle
import struct

import numpy as np
import pytest
import torch

from fdta_core.cli import main as cli_main
from fdta_core.errors import DatasetError, UnsafeFileError
from fdta_core.eval.verification import evaluate_pairs, load_bin, load_bin_raw, normalise_embeddings
from fdta_core.imagecodec import encode_jpeg
from fdta_core.iresnet import build_backbone
from fdta_core.testing.train import write_synthetic_bin


def reference_protocol(emb, emb_flip, issame):
    """The protocol written out in plain Python loops, as the published description reads."""
    rows = []
    for a, b in zip(emb.tolist(), emb_flip.tolist(), strict=True):
        s = [x + y for x, y in zip(a, b, strict=True)]
        n = math.sqrt(sum(v * v for v in s))
        rows.append([v / n for v in s])
    pairs = len(issame)
    dist = [
        sum((x - y) ** 2 for x, y in zip(rows[2 * i], rows[2 * i + 1], strict=True)) for i in range(pairs)
    ]
    thresholds = [k / 100 for k in range(400)]
    base, extra = divmod(pairs, 10)
    bounds, start = [], 0
    for k in range(10):
        size = base + (1 if k < extra else 0)
        bounds.append((start, start + size))
        start += size

    def accuracy(th, idx):
        return sum(1 for i in idx if (dist[i] < th) == bool(issame[i])) / len(idx)

    accs = []
    for lo, hi in bounds:
        train = [i for i in range(pairs) if not lo <= i < hi]
        test = list(range(lo, hi))
        best_th, best_acc = None, -1.0
        for th in thresholds:
            acc = accuracy(th, train)
            if acc > best_acc:
                best_th, best_acc = th, acc
        accs.append(accuracy(best_th, test))
    mean = sum(accs) / 10
    std = math.sqrt(sum((a - mean) ** 2 for a in accs) / 10)
    return accs, mean, std


@pytest.mark.parametrize("pairs", [300, 307])
def test_protocol_equals_independent_implementation(pairs):
    rng = np.random.default_rng(pairs)
    centres = rng.normal(size=(40, 24))
    issame = np.array([(i // (pairs // 10 or 1)) % 2 == 0 for i in range(pairs)])
    rng.shuffle(issame[: pairs // 2])
    cls = []
    for s in issame:
        a = int(rng.integers(40))
        cls += [a, a if s else int((a + rng.integers(1, 40)) % 40)]
    emb = centres[cls] + rng.normal(scale=1.1, size=(2 * pairs, 24))
    emb_flip = centres[cls] + rng.normal(scale=1.1, size=(2 * pairs, 24))
    res = evaluate_pairs(normalise_embeddings(emb, emb_flip), issame)
    accs, mean, std = reference_protocol(emb, emb_flip, issame)
    assert 0.6 < mean < 0.99  # a non-trivial case: thresholds matter
    assert res.pairs == pairs
    assert np.allclose(res.fold_accuracies, accs, rtol=0, atol=1e-12)
    assert abs(res.accuracy_mean - mean) < 1e-9
    assert abs(res.accuracy_std - std) < 1e-9


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvilEval:
    def __reduce__(self):
        return (eval, ("__import__('os').system('true')",))


def test_malicious_bin_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    for payload in (
        ([_Evil(marker)], [True]),
        ([b"x", b"y"], [_Evil(marker)]),
        ([_EvilEval()], [True]),
    ):
        path = tmp_path / "evil.bin"
        path.write_bytes(pickle.dumps(payload, protocol=2))
        with pytest.raises(UnsafeFileError, match="refused"):
            load_bin_raw(path)
        assert not marker.exists()
    # numpy arrays of anything but uint8 (object arrays could hide code) are refused too
    path = tmp_path / "float.bin"
    path.write_bytes(pickle.dumps(([np.zeros(4, np.float64)] * 2, [True])))
    with pytest.raises(UnsafeFileError):
        load_bin_raw(path)
    path.write_bytes(pickle.dumps(([np.array([b"a"], dtype=object)] * 2, [True])))
    with pytest.raises(UnsafeFileError):
        load_bin_raw(path)
    # calling numpy.ndarray directly (REDUCE) instead of through _reconstruct is refused
    crafted = b"\x80\x02(cnumpy\nndarray\nK\x04\x85R" + b"\x89\x85t."
    path.write_bytes(crafted)
    with pytest.raises(UnsafeFileError):
        load_bin_raw(path)


def test_real_bin_variants_load(tmp_path):
    imgs = [encode_jpeg(np.full((112, 112, 3), v, np.uint8)) for v in (10, 200, 90, 90)]
    issame = [False, True]
    # protocol 4 bytes, protocol 2 (bytes via _codecs.encode), numpy uint8 arrays
    for name, data in (
        ("p4", pickle.dumps((imgs, issame), protocol=4)),
        ("p2", pickle.dumps((imgs, issame), protocol=2)),
        ("np", pickle.dumps(([np.frombuffer(b, np.uint8) for b in imgs], issame), protocol=2)),
    ):
        path = tmp_path / f"{name}.bin"
        path.write_bytes(data)
        enc, same = load_bin_raw(path)
        assert enc == imgs and same.tolist() == issame, name
    # a Python 2 file: str objects (BINSTRING) that only load with encoding='bytes'
    py2 = b"\x80\x02((" + b"".join(b"T" + struct.pack("<i", len(x)) + x for x in imgs) + b"l("
    py2 += b"".join(b"\x88" if s else b"\x89" for s in issame) + b"lt."
    path = tmp_path / "py2.bin"
    path.write_bytes(py2)
    images, same = load_bin(path)
    assert images.shape == (4, 112, 112, 3) and same.tolist() == issame
    assert abs(int(images[1, 50, 50, 0]) - 200) <= 2


def test_not_a_benchmark_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.bin"
    path.write_bytes(b"not a pickle at all")
    with pytest.raises(DatasetError):
        load_bin_raw(path)
    path.write_bytes(pickle.dumps(([b"a", b"b", b"c"], [True])))
    with pytest.raises(DatasetError, match="2 per pair"):
        load_bin_raw(path)
    path.write_bytes(pickle.dumps(([b"a", b"b"], [1])))
    with pytest.raises(DatasetError, match="non-boolean"):
        load_bin_raw(path)


def test_cli_verify_torch_and_onnx(tmp_path, capsys):
    bin_path = write_synthetic_bin(tmp_path / "syn.bin", num_classes=6, pairs=40, size=32)
    torch.manual_seed(0)
    model = build_backbone("r4", width=8, num_features=16, input_size=32).eval()
    torch.save(model.state_dict(), tmp_path / "bare.pth")
    torch.save({"backbone": model.state_dict(), "arch": model.arch()}, tmp_path / "model.pt")
    results = {}
    for name in ("bare.pth", "model.pt"):
        assert cli_main(["verify", str(tmp_path / name), str(bin_path), "--json"]) == 0
        results[name] = json.loads(capsys.readouterr().out)
    assert results["bare.pth"] == results["model.pt"]
    syn = results["model.pt"]["syn"]
    assert syn["pairs"] == 40 and 0 <= syn["accuracy_std"] <= syn["accuracy_mean"] <= 1
    assert cli_main(["export-onnx", str(tmp_path / "model.pt"), str(tmp_path / "m.onnx")]) == 0
    capsys.readouterr()
    assert cli_main(["verify", str(tmp_path / "m.onnx"), str(bin_path), "--json"]) == 0
    onnx_res = json.loads(capsys.readouterr().out)["syn"]
    assert abs(onnx_res["accuracy_mean"] - syn["accuracy_mean"]) <= 0.025
    # the human table
    assert cli_main(["verify", str(tmp_path / "model.pt"), str(bin_path)]) == 0
    assert "syn" in capsys.readouterr().out
    # a pickle posing as a checkpoint is refused by weights_only loading
    (tmp_path / "evil.pt").write_bytes(pickle.dumps(_Evil(tmp_path / "pwned2")))
    assert cli_main(["verify", str(tmp_path / "evil.pt"), str(bin_path)]) == 2
    assert not (tmp_path / "pwned2").exists()


def test_paper_table_layout_columns_by_file_name_and_published_rows():
    from fdta_core.eval.table import TABLE1_COLUMNS, format_paper_table, paper_table, published_rows
    from fdta_core.eval.verification import VerificationResult

    def res(name, acc):
        return VerificationResult(name, 6000, acc, 0.01, [acc] * 10, [1.0] * 10)

    # given out of Table 1's order, with an upper-case name and a benchmark that has no column
    results = [res("calfw", 0.90), res("LFW", 0.97), res("agedb_30", 0.85), res("cplfw", 0.80),
               res("cfp_fp", 0.83), res("ijbb_pairs", 0.5)]  # fmt: skip
    t = paper_table(results, "run1")
    assert t.model.values == [97.0, 83.0, 80.0, 85.0, 90.0] and t.model.average == 87.0
    assert [r.name for r in t.extra] == ["ijbb_pairs"]
    text = format_paper_table(t)
    lines = text.splitlines()
    assert lines[0].split() == ["train", "set", "LFW", "CFP-FP", "CPLFW", "AgeDB", "CALFW", "avg"]
    assert lines[1].split() == ["run1", "97.00", "83.00", "80.00", "85.00", "90.00", "87.00"]
    syn_ms1m = next(line for line in lines if line.startswith("Syn-MS1M (FDTA)"))
    assert syn_ms1m.split()[-6:] == ["96.70", "83.18", "79.18", "84.51", "89.00", "86.51"]
    assert "ijbb_pairs: 50.00 (no column in Table 1)" in text
    # the published rows are DESIGN 5.7's, each with its source, and their averages add up
    rows, title, _ = published_rows()
    assert [r.name for r in rows] == ["SynFace", "DigiFace", "DCFace", "Syn-CASIA (FDTA)", "Syn-MS1M (FDTA)"]
    assert "Table 1" in title and all(r.source for r in rows)
    for r in rows:  # kept as published: DigiFace's printed average (68.62) is 0.03 above its columns' mean
        assert abs(sum(r.values) / 5 - r.average) <= (0.04 if r.name == "DigiFace" else 0.011), r.name
    # a partial run: missing columns are dashes and no average
    part = paper_table([res("lfw", 0.9)], "m")
    assert part.model.values[1:] == [None] * 4 and part.model.average is None
    assert "(not run: CFP-FP, CPLFW, AgeDB, CALFW" in format_paper_table(part)
    assert list(part.to_dict()["model"])[1:6] == list(TABLE1_COLUMNS)


def test_cli_verify_table(tmp_path, capsys):
    torch.manual_seed(0)
    model = build_backbone("r4", width=8, num_features=16, input_size=32).eval()
    (tmp_path / "run7").mkdir()
    torch.save({"backbone": model.state_dict(), "arch": model.arch()}, tmp_path / "run7" / "model.pt")
    bins = [str(write_synthetic_bin(tmp_path / f"{n}.bin", num_classes=6, pairs=40, size=32, seed=i))
            for i, n in enumerate(("lfw", "cfp_fp"))]  # fmt: skip
    assert cli_main(["verify", str(tmp_path / "run7" / "model.pt"), *bins, "--table"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[2:] == ["LFW", "CFP-FP", "CPLFW", "AgeDB", "CALFW", "avg"]
    row = out[1].split()
    assert row[0] == "run7" and row[3:] == ["-", "-", "-", "-"]
    assert 0 <= float(row[1]) <= 100 and 0 <= float(row[2]) <= 100
    assert cli_main(["verify", str(tmp_path / "run7" / "model.pt"), *bins, "--table", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model"]["lfw"] == float(row[1]) and data["model"]["average"] is None
    assert data["published"][-1]["average"] == 86.51
