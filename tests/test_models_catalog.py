"""``fdta models``: what a workflow needs, where it goes, present or not, and Hub downloads against a
local HTTP server on 127.0.0.1 standing in for the Hugging Face Hub (HF_ENDPOINT)."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from fdta_core import models_catalog as mc
from fdta_core.cli import main as fdta

REPO = Path(__file__).resolve().parents[1]
COMMIT = "a" * 40


class FakeHub:
    """Serves ``/{repo}/resolve/{revision}/{file}`` like the Hub: HEAD with X-Repo-Commit and the LFS
    SHA-256 as ETag, GET with HTTP ranges (resumes). ``corrupt`` serves other bytes than announced."""

    def __init__(self) -> None:
        self.files: dict[tuple[str, str], bytes] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        self.corrupt: set[tuple[str, str]] = set()
        #: key -> bytes to send before dropping the connection, once (an interrupted download)
        self.cut_once: dict[tuple[str, str], int] = {}
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):  # keep pytest output clean
                pass

            def _lookup(self):
                parts = self.path.split("?")[0].strip("/").split("/")
                if len(parts) < 5 or parts[2] != "resolve":
                    return None
                key = ("/".join(parts[:2]), "/".join(parts[4:]))
                return key if key in hub.files else None

            def _head(self, body_follows: bool) -> None:
                hub.requests.append((self.command, self.path, self.headers.get("Range")))
                key = self._lookup()
                if key is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = hub.files[key]
                sha = hashlib.sha256(data).hexdigest()
                if key in hub.corrupt:
                    data = bytes(b ^ 0xFF for b in data)
                start = 0
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes="):
                    start = int(rng[6:].split("-")[0] or 0)
                self.send_response(206 if start else 200)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{sha}"')
                self.send_header("X-Linked-Etag", f'"{sha}"')
                self.send_header("X-Linked-Size", str(len(data)))
                self.send_header("Content-Length", str(len(data) - start))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if body_follows:
                    cut = hub.cut_once.pop(key, None)
                    if cut is not None:
                        self.wfile.write(data[start:cut])
                        self.wfile.flush()
                        self.close_connection = True
                        self.connection.shutdown(2)  # the network drops mid-file
                        return
                    self.wfile.write(data[start:])

            def do_HEAD(self):
                self._head(False)

            def do_GET(self):
                self._head(True)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hub(monkeypatch, tmp_path) -> Iterator[FakeHub]:
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with FakeHub() as h:
        monkeypatch.setenv("HF_ENDPOINT", h.url)
        yield h


def _api(models: dict[str, tuple[str, str]]) -> dict:
    return {
        str(i): {"class_type": cls, "inputs": {inp: value, "other": ["1", 0]}}
        for i, (cls, (inp, value)) in enumerate(models.items(), 1)
    }


def test_shipped_workflows_name_every_stage_model_in_both_formats() -> None:
    want = [
        ("checkpoints", "v1-5-pruned-emaonly.safetensors"),
        ("controlnet", "control_v11p_sd15_canny.pth"),
        ("insightface", "buffalo_l"),
        ("fdta_stg", "dcface_5x5.ckpt"),
        ("fdta_age", "sam_ffhq_aging.pt"),
    ]
    for name in ("syn_ms1m", "syn_mpie"):
        api = mc.workflow_models(mc.load_workflow(REPO / "workflows" / "api" / f"{name}.json"))
        ui = mc.workflow_models(mc.load_workflow(REPO / "workflows" / f"{name}.json"))
        expected = sorted(
            w for w in want if name == "syn_ms1m" or w[0] != "fdta_age"
        )  # Syn-MPIE: no age stage
        assert sorted((r.folder, r.value) for r in api) == expected
        assert sorted((r.folder, r.value) for r in ui) == expected
    # every file of every shipped workflow is in the catalog, with a source and a licence
    index = {(s.folder, s.filename) for s in mc.CATALOG}
    for wf in sorted((REPO / "workflows").rglob("*.json")):
        if "inputs" in wf.parts:
            continue
        for folder, filename, _ in mc.needed_files(mc.workflow_models(mc.load_workflow(wf))):
            assert (folder, filename) in index, (wf.name, folder, filename)
    for s in mc.CATALOG:
        assert s.url.startswith("https://") and s.licence


def test_ui_workflow_skips_muted_nodes_and_api_skips_linked_inputs() -> None:
    ui = {
        "nodes": [
            {"id": 1, "type": "CheckpointLoaderSimple", "widgets_values": ["a.safetensors"], "mode": 0},
            {"id": 2, "type": "VAELoader", "widgets_values": ["v.safetensors"], "mode": 4},
            {"id": 3, "type": "KSampler", "widgets_values": [1, "fixed"]},
        ]
    }
    assert [(r.node, r.value) for r in mc.workflow_models(ui)] == [("1", "a.safetensors")]
    api = {"5": {"class_type": "FDTAAgeLoader", "inputs": {"model_name": ["9", 0]}}}
    assert mc.workflow_models(api) == []


def test_status_lists_present_and_missing_with_size_sha_and_extra_model_paths(tmp_path) -> None:
    models = tmp_path / "models"
    extra = tmp_path / "elsewhere"
    (models / "checkpoints").mkdir(parents=True)
    (models / "checkpoints" / "v1-5-pruned-emaonly.safetensors").write_bytes(b"sd15-bytes")
    pack = extra / "faces" / "models" / "buffalo_l"
    pack.mkdir(parents=True)
    for f in mc.PACK_FILES:
        (pack / f).write_bytes(f.encode())
    yaml = tmp_path / "extra_model_paths.yaml"
    yaml.write_text(f"mine:\n  base_path: {extra}\n  insightface: faces\n  fdta_age: |\n    age1\n    age2\n")
    folders = mc.ModelFolders.discover(models, [yaml])
    assert folders.folders("fdta_age") == [models / "fdta" / "age", extra / "age1", extra / "age2"]
    wf = mc.load_workflow(REPO / "workflows" / "api" / "syn_ms1m.json")
    rows = {(r.folder, r.filename): r for r in mc.model_status(mc.workflow_models(wf), folders)}
    sd = rows[("checkpoints", "v1-5-pruned-emaonly.safetensors")]
    assert sd.present and sd.size == 10 and sd.sha256 == hashlib.sha256(b"sd15-bytes").hexdigest()
    assert sd.hf_repo and "OpenRAIL" in sd.licence
    det = rows[("insightface", "models/buffalo_l/det_10g.onnx")]
    assert det.present and det.path == str(pack / "det_10g.onnx") and "non-commercial" in det.licence
    sam = rows[("fdta_age", "sam_ffhq_aging.pt")]
    assert not sam.present and sam.path == str(models / "fdta" / "age" / "sam_ffhq_aging.pt")
    assert str(extra / "age2") in sam.searched and not sam.downloadable
    text = mc.format_table(list(rows.values()))
    assert "MISSING" in text and "extra_model_paths.yaml key 'fdta_age'" in text
    assert "7 file(s) needed, 4 present, 3 missing" in text


def _catalog(data: dict[str, bytes], sha: dict[str, str] | None = None) -> tuple[mc.ModelSource, ...]:
    return tuple(
        mc.ModelSource(
            "checkpoints", name, "tiny", "test licence", "https://example.invalid",
            hf_repo="fdta-test/tiny-models", hf_filename=f"sub/{name}", sha256=(sha or {}).get(name),
        )
        for name in data
    )  # fmt: skip


def test_download_fetches_checks_and_places_files(hub: FakeHub, tmp_path) -> None:
    data = {"a.safetensors": b"A" * 5000, "b.safetensors": bytes(range(256)) * 40}
    for name, blob in data.items():
        hub.files[("fdta-test/tiny-models", f"sub/{name}")] = blob
    folders = mc.ModelFolders(tmp_path / "models")
    refs = mc.workflow_models(_api({"CheckpointLoaderSimple": ("ckpt_name", "a.safetensors"),
                                    "LoraLoader": ("lora_name", "b.safetensors")}))  # fmt: skip
    # b is a LoRA here: put it under loras in the catalog to check the folder follows the catalog
    cat = (_catalog({"a.safetensors": b""}, {"a.safetensors": hashlib.sha256(data["a.safetensors"]).hexdigest()})
           + (mc.ModelSource("loras", "b.safetensors", "t", "l", "https://x.invalid", hf_repo="fdta-test/tiny-models",
                             hf_filename="sub/b.safetensors"),))  # fmt: skip
    rows = mc.model_status(refs, folders, catalog=cat)
    assert [r.present for r in rows] == [False, False]
    written = mc.download_missing(rows, folders)
    assert written == [
        folders.models_dir / "checkpoints" / "a.safetensors",
        folders.models_dir / "loras" / "b.safetensors",
    ]
    for p, blob in zip(written, data.values(), strict=True):
        assert p.read_bytes() == blob
    assert all(r.present and r.sha256 for r in rows)
    again = mc.model_status(refs, folders, catalog=cat)
    assert all(r.present for r in again) and mc.download_missing(again, folders) == []


def test_download_resumes_a_partial_file(hub: FakeHub, tmp_path, monkeypatch) -> None:
    from huggingface_hub import constants

    # small read chunks, so the bytes that arrived before the connection dropped are on disk
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 4096)
    blob = bytes(range(256)) * 400
    hub.files[("fdta-test/tiny-models", "sub/a.safetensors")] = blob
    folders = mc.ModelFolders(tmp_path / "models")
    refs = mc.workflow_models(_api({"CheckpointLoaderSimple": ("ckpt_name", "a.safetensors")}))
    cat = _catalog({"a.safetensors": b""})
    hub.cut_once[("fdta-test/tiny-models", "sub/a.safetensors")] = 30000
    try:  # huggingface_hub may resume within the same call, or the call fails and the next one resumes
        mc.download_missing(mc.model_status(refs, folders, catalog=cat), folders)
    except mc.DownloadError:
        assert not (folders.models_dir / "checkpoints" / "a.safetensors").exists()
    mc.download_missing(mc.model_status(refs, folders, catalog=cat), folders)
    assert (folders.models_dir / "checkpoints" / "a.safetensors").read_bytes() == blob
    ranges = [r for m, _, r in hub.requests if m == "GET"]
    resumed = [int(r[6:-1]) for r in ranges[1:] if r and r.startswith("bytes=")]
    assert ranges[0] is None and resumed and 0 < resumed[0] <= 30000, ranges


def test_download_refuses_a_file_whose_checksum_differs(hub: FakeHub, tmp_path) -> None:
    hub.files[("fdta-test/tiny-models", "sub/a.safetensors")] = b"B" * 3000
    folders = mc.ModelFolders(tmp_path / "models")
    refs = mc.workflow_models(_api({"CheckpointLoaderSimple": ("ckpt_name", "a.safetensors")}))
    cat = _catalog({"a.safetensors": b""}, {"a.safetensors": "0" * 64})  # the catalog expects other bytes
    with pytest.raises(mc.DownloadError, match="SHA-256") as exc:
        mc.download_missing(mc.model_status(refs, folders, catalog=cat), folders)
    assert "catalog" in str(exc.value)
    assert not (folders.models_dir / "checkpoints" / "a.safetensors").exists()
    # a mirror that serves other bytes than its LFS checksum says is refused too
    hub.corrupt.add(("fdta-test/tiny-models", "sub/a.safetensors"))
    cat = _catalog({"a.safetensors": b""})
    with pytest.raises(mc.DownloadError, match="SHA-256|consistency|size"):
        mc.download_missing(mc.model_status(refs, folders, catalog=cat), folders)
    assert not (folders.models_dir / "checkpoints" / "a.safetensors").exists()


def test_download_names_the_file_and_mirror_when_the_hub_has_no_such_file(hub: FakeHub, tmp_path) -> None:
    hub.files[("fdta-test/tiny-models", "sub/b.safetensors")] = b"B" * 100
    folders = mc.ModelFolders(tmp_path / "models")
    refs = mc.workflow_models(_api({"CheckpointLoaderSimple": ("ckpt_name", "a.safetensors"),
                                    "UNETLoader": ("unet_name", "b.safetensors")}))  # fmt: skip
    cat = _catalog({"a.safetensors": b"", "b.safetensors": b""})
    cat = (cat[0], mc.ModelSource("diffusion_models", "b.safetensors", "t", "l", "https://x.invalid",
                                  hf_repo="fdta-test/tiny-models", hf_filename="sub/b.safetensors"))  # fmt: skip
    with pytest.raises(mc.DownloadError) as exc:
        mc.download_missing(mc.model_status(refs, folders, catalog=cat), folders)
    msg = str(exc.value)
    assert "fdta-test/tiny-models/sub/a.safetensors" in msg and hub.url in msg and "checkpoints" in msg
    # the other file still came
    assert (folders.models_dir / "diffusion_models" / "b.safetensors").read_bytes() == b"B" * 100


def test_cli_lists_json_and_downloads_the_shipped_sd15(hub: FakeHub, tmp_path, capsys, monkeypatch) -> None:
    """The real catalog entry of SD 1.5 through the CLI, served by the stand-in hub (tiny bytes)."""
    src = next(s for s in mc.CATALOG if s.folder == "checkpoints")
    cnet = next(s for s in mc.CATALOG if s.folder == "controlnet")
    hub.files[(src.hf_repo, src.hf_filename)] = b"not really SD" * 100
    hub.files[(cnet.hf_repo, cnet.hf_filename)] = b"not really a ControlNet" * 10
    models = tmp_path / "models"
    monkeypatch.delenv("COMFYUI_DIR", raising=False)
    assert fdta(["models", "--models", str(models), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["missing"] == 7 and len(out["files"]) == 7
    assert fdta(["models", "--models", str(models), "--download", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["downloaded"] == [
        str(models / "checkpoints" / src.filename),
        str(models / "controlnet" / cnet.filename),
    ]
    assert out["missing"] == 5  # the insightface pack, DCFace and SAM are not on the Hub: fetched by hand
    assert (models / "checkpoints" / src.filename).read_bytes() == b"not really SD" * 100
    assert fdta(["models", "--models", str(models)]) == 0
    text = capsys.readouterr().out
    assert "[present] checkpoints/v1-5-pruned-emaonly.safetensors" in text
    assert hashlib.sha256(b"not really SD" * 100).hexdigest() in text
