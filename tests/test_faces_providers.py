"""Which onnxruntime build runs the face models, and what the pack says when two are installed."""

from __future__ import annotations

import logging
from importlib import metadata

import pytest

from fdta_core.faces import providers as P


class _Dist:
    def __init__(self, name: str) -> None:
        self.name = name


def _installed(monkeypatch: pytest.MonkeyPatch, names: set[str]) -> None:
    def distribution(name: str):
        if name in names:
            return _Dist(name)
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", distribution)


def test_one_build_is_no_conflict(monkeypatch):
    _installed(monkeypatch, {"onnxruntime-gpu"})
    assert P.installed_onnxruntime_builds() == ["onnxruntime-gpu"]
    assert P.onnxruntime_conflict() is None
    _installed(monkeypatch, set())
    assert P.onnxruntime_conflict() is None


def test_both_builds_say_which_to_uninstall(monkeypatch):
    _installed(monkeypatch, {"onnxruntime", "onnxruntime-gpu"})
    msg = P.onnxruntime_conflict()
    assert msg is not None
    assert "onnxruntime and onnxruntime-gpu" in msg
    assert "pip uninstall -y onnxruntime &&" in msg  # the CPU build goes, the GPU build stays
    assert "pip install --force-reinstall --no-deps onnxruntime-gpu" in msg


def test_this_python_reports_what_is_really_installed():
    builds = P.installed_onnxruntime_builds()
    assert builds, "the test environment has an onnxruntime build"
    for b in builds:
        assert metadata.distribution(b).metadata["Name"].lower() == b


def test_gpu_providers_without_a_visible_device_are_not_offered(monkeypatch, caplog):
    """onnxruntime-gpu lists CUDA even on a machine with no GPU; auto must then pick the CPU quietly."""
    ort = pytest.importorskip("onnxruntime")
    monkeypatch.setattr(
        ort,
        "get_available_providers",
        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
    )
    monkeypatch.setattr(P, "cuda_device_visible", lambda: False)
    assert P.available_providers() == ["CPUExecutionProvider"]
    with caplog.at_level(logging.INFO):
        assert P.resolve_providers("auto") == ["CPUExecutionProvider"]
    assert P.provider_choices() == ["auto", "CPU"]
    with caplog.at_level(logging.WARNING):
        assert P.resolve_providers("CUDA") == ["CPUExecutionProvider"]
    assert "no CUDA device" in caplog.text
    monkeypatch.setattr(P, "cuda_device_visible", lambda: True)
    assert P.resolve_providers("auto") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert P.provider_choices()[:3] == ["auto", "CPU", "CUDA"]


@pytest.mark.parametrize("mean,std", [(127.5, 127.5), (127.5, 128.0), (0.0, 1.0)])
def test_to_blob_opencv_path_matches_numpy(monkeypatch, mean, std):
    """The OpenCV split + addWeighted conversion gives the numpy transpose-and-normalise to within one
    float32 rounding step (also from a non-contiguous batch, into a reused buffer, and with the reused
    planes of another shape in between); without OpenCV numpy does it."""
    import numpy as np

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 112, 112, 3), dtype=np.uint8)
    expect = images.transpose(0, 3, 1, 2).astype(np.float32)
    expect -= np.float32(mean)
    expect *= np.float32(1.0 / std)
    ulp = 2.4e-7 * max(1.0, 255.0 / std)
    fast = P.to_blob(images, mean, std)
    assert fast.dtype == np.float32 and fast.flags.c_contiguous
    np.testing.assert_allclose(fast, expect, rtol=0, atol=ulp)
    P.to_blob(images[:2, :64, :96], mean, std)  # other planes in the thread's scratch
    buf = np.full((5, 3, 112, 112), np.nan, np.float32)
    assert P.to_blob(images[::-1], mean, std, out=buf) is buf
    np.testing.assert_allclose(buf, expect[::-1], rtol=0, atol=ulp)
    with pytest.raises(ValueError, match="out has shape"):
        P.to_blob(images, mean, std, out=buf[:4])
    monkeypatch.setattr(P, "_cv2", lambda: None)
    np.testing.assert_array_equal(P.to_blob(images, mean, std), expect)
    np.testing.assert_array_equal(P.to_blob(images[:0], mean, std), expect[:0])
