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
