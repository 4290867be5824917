"""Issue 12, faults measured live: the ComfyUI server is SIGKILLed while FDTADatasetWriter writes a chunk.
The chunk is absent (or, if the kill came after the rename, whole), the earlier chunk and its manifest
are byte-identical, and after a restart the next write cleans up the dead writer's folder."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fdta_core.cli import main as fdta
from fdta_core.dataset import inspect, list_chunks
from tests.comfy.harness import ComfyServer

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")]

OUT = "fdta/issue12_kill"


def _graph(first_identity: int, copies: int, pack: str) -> dict:
    """LoadImage -> RepeatImageBatch -> FDTAAlignFaces (already aligned, one identity per image) -> writer."""
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": "issue12_noise.png"}},
        "2": {"class_type": "RepeatImageBatch", "inputs": {"image": ["1", 0], "amount": copies}},
        "3": {"class_type": "FDTAFaceModelLoader",
              "inputs": {"pack": pack, "provider": "CPU", "det_size": 256, "det_threshold": 0.5}},
        "4": {"class_type": "FDTAAlignFaces",
              "inputs": {"image": ["2", 0], "face_models": ["3", 0], "min_face_size": 20, "assume_aligned_112": True,
                         "identity_start": first_identity, "one_identity": False}},
        "5": {"class_type": "FDTADatasetWriter", "inputs": {"faceset": ["4", 0], "output_name": OUT}},
    }  # fmt: skip


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_sigkill_of_the_server_mid_writer_loses_nothing_committed(comfy: ComfyServer) -> None:
    from fdta_core.testing.faces import make_tiny_face_pack

    make_tiny_face_pack(comfy.models / "insightface", "kill_pack")
    # noise encodes slowly and big: the writer of 4096 faces takes seconds, time to kill it mid-way
    noise = np.random.default_rng(0).integers(0, 256, (112, 112, 3), dtype=np.uint8)
    Image.fromarray(noise).save(comfy.input_dir / "issue12_noise.png")
    ds = comfy.output_dir / OUT
    chunks = ds / "chunks"

    comfy.run(_graph(0, 4, "kill_pack"), timeout=300)
    (earlier,) = list_chunks(ds)
    before = _snapshot(Path(earlier.path))
    index_before = json.loads((ds / "dataset.json").read_text())

    comfy.queue(_graph(100_000, 4096, "kill_pack"))
    final = chunks / "000100000-000104096"
    deadline = time.monotonic() + 300
    tmp = None
    while time.monotonic() < deadline and tmp is None:
        for p in chunks.glob(".tmp-000100000-000104096-*"):
            rec = p / "train.rec"
            if rec.exists() and rec.stat().st_size > 0:
                tmp = p
        time.sleep(0.02)
    assert tmp is not None, f"the writer never started:\n{comfy.log_tail(40)}"
    killed_mid_way = not final.exists()
    comfy.proc.send_signal(signal.SIGKILL)
    comfy.proc.wait(timeout=60)
    try:
        assert killed_mid_way, "the writer finished before the kill; make the chunk bigger"
        # absent (or whole, had the rename won the race), the earlier chunk byte for byte, the index intact
        assert not final.exists() or inspect(ds).ok
        assert _snapshot(Path(earlier.path)) == before
        assert json.loads((ds / "dataset.json").read_text())["chunks"] == index_before["chunks"]
        assert [c.name for c in list_chunks(ds)] in (
            [earlier.name],
            [earlier.name, final.name],
        )
        rep = inspect(ds)
        assert rep.ok and any("unfinished" in w for w in rep.warnings), rep
    finally:
        comfy.start()  # the session's server, fresh, for the tests that follow

    # the next write cleans up the dead writer's folder and commits normally
    comfy.run(_graph(200_000, 2, "kill_pack"), timeout=300)
    assert not [p.name for p in chunks.iterdir() if p.name.startswith(".")]
    assert _snapshot(Path(earlier.path)) == before
    names = [c.name for c in list_chunks(ds)]
    assert names[0] == earlier.name and names[-1] == "000200000-000200002"
    assert fdta(["rec", "info", str(ds)]) == 0
