"""The fp16 recogniser option and the batch pipeline of the face models, checked on the CPU."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from fdta_core.faces import load_face_pack  # noqa: E402
from fdta_core.faces.fp16 import cached_float16, convert_float16  # noqa: E402
from fdta_core.testing.faces import make_tiny_face_pack, synthetic_identity_faces  # noqa: E402

#: fp16 weights and activations: each embedding keeps its direction to cosine >= this vs float32
FP16_MIN_COSINE = 0.999


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    root = tmp_path_factory.mktemp("pack")
    make_tiny_face_pack(root, "tiny_pack", genderage=False)
    return root


def test_fp16_recognizer_is_close_to_float32(pack, tmp_path, monkeypatch):
    monkeypatch.setenv("FDTA_CACHE_DIR", str(tmp_path / "cache"))
    _src, faces, _labels = synthetic_identity_faces(6, 4, seed=3)
    m32 = load_face_pack([pack], "tiny_pack", providers="CPU", require=("recognizer",), threads=1)
    m16 = load_face_pack(
        [pack], "tiny_pack", providers="CPU", require=("recognizer",), threads=1, recognizer_fp16=True
    )
    a, b = m32.embed(faces), m16.embed(faces)
    assert b.dtype == np.float32 and a.shape == b.shape
    assert _cos(a, b).min() >= FP16_MIN_COSINE
    assert not np.array_equal(a, b)  # it really ran in half precision
    # converted once, then reused
    files = list((tmp_path / "cache" / "fp16").glob("*.onnx"))
    assert len(files) == 1
    assert cached_float16(m32.recognizer.path) == files[0]


def test_fp16_keeps_float32_io(pack, tmp_path):
    import onnx

    src = next((pack / "models" / "tiny_pack").glob("w600k*.onnx"))
    model = onnx.load(str(convert_float16(src, tmp_path / "r16.onnx")))
    f32 = onnx.TensorProto.FLOAT
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [f32]
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [f32]
    assert all(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer if i.data_type != 7)


@pytest.mark.parametrize("iobinding", [False, True])
def test_pipelined_batches_match_one_call_per_batch(pack, iobinding):
    """Preparing the next batch in a helper thread (and IOBinding, used on CUDA, forced here on the CPU)
    gives the embeddings of plain per-batch calls; a faceset and its sources in one stream give what
    two separate calls give; progress is reported per batch."""
    _src, faces, _labels = synthetic_identity_faces(10, 7, seed=1)  # 70 faces: 5 batches of 16 (last short)
    m = load_face_pack([pack], "tiny_pack", providers="CPU", require=("recognizer",), threads=1)
    rec = m.recognizer
    plain = np.concatenate([rec.embed(faces[s : s + 16], batch_size=16) for s in range(0, 70, 16)])
    rec.iobinding = iobinding
    seen = []
    got = rec.embed(faces, batch_size=16, progress=lambda d, t: seen.append((d, t)))
    np.testing.assert_allclose(got, plain, rtol=1e-5, atol=1e-5)
    assert seen == [(16, 70), (32, 70), (48, 70), (64, 70), (70, 70)]
    a, b = m.embed_many([faces[:50], faces[50:]], batch_size=16)
    np.testing.assert_allclose(np.concatenate([a, b]), plain, rtol=1e-5, atol=1e-5)
    e0, e1 = m.embed_many([faces[:0], faces[:3]], batch_size=16)
    assert e0.shape == (0, rec.dim) and e1.shape == (3, rec.dim)
