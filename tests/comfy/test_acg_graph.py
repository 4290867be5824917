"""FDTAACGSampler in a real ComfyUI (CPU), wired to ComfyUI's own CheckpointLoaderSimple and
ControlNetLoader, on random-weight SD 1.5 + ControlNet files of the real architectures that the fixture
writes into the server's models folder (shallow 320-channel UNet, DESIGN section 9)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from fdta_core.acg import candidate_seed
from fdta_core.acg.generate import ACGOptions
from fdta_core.testing import faces as testing_faces
from fdta_core.testing.sd import write_random_sd_models
from tests.comfy.harness import ComfyServer, node_outputs

N_IDENTITIES = 2
CANDIDATES = 2
PLAN_TYPE = "FDTA_IDENTITY_PLAN"


@pytest.fixture(scope="module")
def sd_models(comfy: ComfyServer):
    models = write_random_sd_models(
        comfy.models,
        seed=1234,
        checkpoint_name="fdta_acg_test_sd15.safetensors",
        controlnet_name="fdta_acg_test_canny.safetensors",
    )
    yield models
    for p in (models.checkpoint, models.controlnet):  # 0.5 GB: do not keep it around
        p.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def control_image(comfy: ComfyServer) -> str:
    """A face-like edge map (white outlines on black) in the server's input folder."""
    img = Image.new("RGB", (96, 96), "black")
    d = ImageDraw.Draw(img)
    d.ellipse([22, 12, 74, 86], outline="white", width=2)  # face contour
    d.ellipse([34, 38, 44, 44], outline="white")  # eyes
    d.ellipse([52, 38, 62, 44], outline="white")
    d.line([48, 46, 46, 60, 50, 62], fill="white")  # nose
    d.arc([36, 64, 60, 74], 0, 180, fill="white")  # mouth
    comfy.input_dir.mkdir(parents=True, exist_ok=True)
    img.save(comfy.input_dir / "fdta_acg_edges.png")
    return "fdta_acg_edges.png"


# ---------------------------------------------------------------------- graph helpers
def _widget_default(decl: list[Any]) -> Any:
    typ, opts = decl[0], (decl[1] if len(decl) > 1 else {})
    if isinstance(typ, list):
        return opts.get("default", typ[0] if typ else None)
    if typ == "COMBO":
        return opts.get("default", (opts.get("options") or [None])[0])
    if typ in ("INT", "FLOAT"):
        return opts.get("default", opts.get("min", 0))
    if typ == "BOOLEAN":
        return opts.get("default", False)
    if typ == "STRING":
        return opts.get("default", "")
    raise LookupError(typ)


def _link_inputs(info: dict, node_id: str) -> int:
    n = 0
    for decl in info[node_id]["input"].get("required", {}).values():
        try:
            _widget_default(decl)
        except LookupError:
            n += 1
    return n


def _add_default_node(info: dict, node_id: str, graph: dict, chain: tuple[str, ...] = ()) -> str:
    """Add ``node_id`` with default widgets (identity counts set small), building FDTA producers for
    its linked inputs; the attribute stage's exact widgets are not this test's business."""
    inputs: dict[str, Any] = {}
    for name, decl in info[node_id]["input"].get("required", {}).items():
        try:
            value = _widget_default(decl)
            if decl[0] == "INT" and ("count" in name or name in ("identities", "num_identities")):
                value = N_IDENTITIES
            inputs[name] = value
        except LookupError:
            inputs[name] = _producer(info, decl[0], graph, (*chain, node_id))
    key = f"p{len(graph)}"
    graph[key] = {"class_type": node_id, "inputs": inputs}
    return key


def _producer(info: dict, io_type: str, graph: dict, chain: tuple[str, ...] = ()) -> list:
    """The simplest FDTA node (fewest linked inputs) that outputs ``io_type``, built with defaults."""
    found = [k for k, v in info.items() if k.startswith("FDTA") and io_type in v["output"] and k not in chain]
    for node_id in sorted(found, key=lambda k: (_link_inputs(info, k), k)):
        if node_id == "FDTAACGSampler" or len(chain) > 4:
            continue
        trial = dict(graph)
        try:
            key = _add_default_node(info, node_id, trial, chain)
        except LookupError:
            continue
        graph.clear()
        graph.update(trial)
        return [key, info[node_id]["output"].index(io_type)]
    raise LookupError(io_type)


def acg_graph(info: dict, ckpt: str, cnet: str, image: str, **overrides: Any) -> dict:
    graph: dict[str, Any] = {}
    plan = _producer(info, PLAN_TYPE, graph)  # LookupError: the attribute nodes failed to register
    acg_inputs = {
        "model": ["ckpt", 0],
        "clip": ["ckpt", 1],
        "vae": ["ckpt", 2],
        "control_net": ["cnet", 0],
        "plan": plan,
        "control_images": ["img", 0],
        "seed": 3,
        "steps": 2,
        "cfg": 5.0,
        "sampler_name": "euler_ancestral",
        "scheduler": "normal",
        "strength": 1.0,
        "start_percent": 0.0,
        "end_percent": 1.0,
        "width": 32,
        "height": 32,
        "candidates": CANDIDATES,
        "batch_size": 4,
        "options": ["opts", 0],
    }
    # every option at the core's default (what the options node shows), then this test's settings;
    # the expression and pose checks stay off: random-weight faces carry no meaningful keypoints here
    opts_inputs = ACGOptions().to_dict() | {
        "check_expression": False,
        "check_pose": False,
        "control_preprocess": "none",
        "canny_low": 100,
        "canny_high": 200,
        "edge_blur": 3,
        "control_assignment": "random",
        "retries": 1,
        "on_failure": "skip",
        "min_det_score": 0.5,
        "check_gender": True,
        "check_age": True,
        "age_tolerance": 10.0,
        "uniqueness_threshold": 0.3,
        "real_person_threshold": 0.3,
        "real_sets": "",
    }
    for key, value in overrides.items():  # each setting goes to the node that has it now
        (opts_inputs if key in opts_inputs else acg_inputs)[key] = value
    graph.update(
        {
            "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
            "cnet": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": cnet}},
            "img": {"class_type": "LoadImage", "inputs": {"image": image}},
            "acg": {"class_type": "FDTAACGSampler", "inputs": acg_inputs},
            "opts": {"class_type": "FDTAACGOptions", "inputs": opts_inputs},
            "save": {
                "class_type": "SaveImage",
                "inputs": {"images": ["acg", 1], "filename_prefix": "fdta_acg"},
            },
            "sheet": {
                "class_type": "SaveImage",
                "inputs": {"images": ["acg", 2], "filename_prefix": "fdta_acg_sheet"},
            },
        }
    )
    return graph


def saved_images(comfy: ComfyServer, entry: dict, node: str) -> list[np.ndarray]:
    out = []
    for im in node_outputs(entry, node)["images"]:
        path = Path(comfy.output_dir) / im.get("subfolder", "") / im["filename"]
        out.append(np.asarray(Image.open(path).convert("RGB")))
    return out


def run_graph(comfy: ComfyServer, graph: dict) -> dict:
    comfy.free()  # models unloaded and cache dropped: the second run really samples again
    return comfy.run(graph, timeout=600)


# ---------------------------------------------------------------------- tests
def test_acg_graph_yields_source_faces_with_every_seed_and_is_deterministic(comfy, sd_models, control_image):
    info = comfy.object_info()
    assert "FDTAACGSampler" in info, comfy.log_tail()
    graph = acg_graph(info, sd_models.checkpoint_name, sd_models.controlnet_name, control_image)

    first = run_graph(comfy, graph)
    acg_ui = node_outputs(first, "acg")
    provenance = json.loads(acg_ui["fdta_acg_provenance"][0])
    report = acg_ui["fdta_acg_report"][0]
    assert len(provenance) >= 1, report
    identities = [p["identity"] for p in provenance]
    assert len(set(identities)) == len(identities)
    for p in provenance:
        acg = p["extra"]["acg"]
        assert p["history"] == ["acg"]
        # every candidate seed is recorded, derived from the plan's run seed, the node seed and the candidate
        seeds = [c["seed"] for c in acg["candidates"]]
        assert len(seeds) == CANDIDATES
        assert seeds == [
            candidate_seed(acg["run_seed"], p["identity"], c["attempt"], c["candidate"], salt=3)
            for c in acg["candidates"]
        ]
        assert p["seeds"]["acg"] in seeds
        assert acg["checked"] is False  # no face models in this graph
        assert acg["sampler"] == "euler_ancestral" and acg["steps"] == 2
    images = saved_images(comfy, first, "save")
    assert len(images) == len(provenance) and images[0].shape == (32, 32, 3)
    assert not np.array_equal(images[0], images[-1]) or len(images) == 1  # identities differ
    sheet = saved_images(comfy, first, "sheet")
    assert len(sheet) == 1 and sheet[0].shape[0] > 32

    second = run_graph(comfy, graph)
    assert node_outputs(second, "acg")["fdta_acg_provenance"] == acg_ui["fdta_acg_provenance"]
    for a, b in zip(images, saved_images(comfy, second, "save"), strict=True):
        assert np.array_equal(a, b)
    log = comfy.log_text()
    assert (
        "unet missing" not in log and "missing controlnet keys" not in log
    )  # the random files match exactly

    # one candidate per sampler call instead of all of them: same seeds, same choices, same pixels
    # (up to float rounding of batched math)
    third = run_graph(
        comfy,
        acg_graph(info, sd_models.checkpoint_name, sd_models.controlnet_name, control_image, batch_size=1),
    )
    assert node_outputs(third, "acg")["fdta_acg_provenance"] == acg_ui["fdta_acg_provenance"]
    for a, b in zip(images, saved_images(comfy, third, "save"), strict=True):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 2


def _comfy_has_cv2(comfy: ComfyServer) -> bool:
    r = subprocess.run([str(comfy.python), "-c", "import cv2"], capture_output=True)
    return r.returncode == 0


def test_real_photos_are_turned_into_edge_maps(comfy, sd_models, control_image):
    # requirements.txt lists opencv-python-headless: its absence is a broken install, not a reason to skip
    assert _comfy_has_cv2(comfy), (
        "opencv is missing in ComfyUI's environment (pip install -r requirements.txt)"
    )
    info = comfy.object_info()
    graph = acg_graph(
        info,
        sd_models.checkpoint_name,
        sd_models.controlnet_name,
        control_image,
        control_preprocess="canny_auto",
    )
    entry = run_graph(comfy, graph)
    prov = json.loads(node_outputs(entry, "acg")["fdta_acg_provenance"][0])
    assert prov and all(p["extra"]["acg"]["control_preprocess"] == "canny_auto" for p in prov)


def test_bad_inputs_are_reported_with_the_node_id(comfy, sd_models, control_image):
    info = comfy.object_info()
    graph = acg_graph(
        info,
        sd_models.checkpoint_name,
        sd_models.controlnet_name,
        control_image,
        start_percent=0.8,
        end_percent=0.2,
    )
    err = comfy.run_error(graph)
    assert "FDTAACGSampler" in err and "start_percent" in err


def test_cancel_stops_the_node(comfy, sd_models, control_image):
    import time

    from tests.comfy.harness import PromptFailed

    info = comfy.object_info()
    graph = acg_graph(
        info, sd_models.checkpoint_name, sd_models.controlnet_name, control_image, steps=1000, seed=99
    )
    prompt_id = comfy.queue(graph)
    deadline = time.monotonic() + 120
    while not any(item[1] == prompt_id for item in comfy.get("/queue")["queue_running"]):
        assert time.monotonic() < deadline, "the prompt never started"
        time.sleep(0.2)
    time.sleep(3.0)  # loaders are cached from the other tests: by now the sampler is stepping
    t0 = time.monotonic()
    comfy.post("/interrupt", {})
    with pytest.raises(PromptFailed) as exc:
        comfy.wait(prompt_id, timeout=120)
    assert "execution_interrupted" in json.dumps(exc.value.payload)
    assert time.monotonic() - t0 < 60  # 2 x 2 candidates x 1000 steps would take far longer


def test_candidates_are_checked_with_face_models(comfy, sd_models, control_image):
    """With the faces stage's tiny ONNX pack: every candidate is analysed and either chosen or rejected
    with reasons (random SD weights rarely draw a "face", so failures are expected and must be reported)."""
    info = comfy.object_info()
    # requirements.txt installs onnxruntime and opencv: a missing loader means the faces nodes broke
    assert "FDTAFaceModelLoader" in info, "FDTAFaceModelLoader is not registered (see the server log)"
    testing_faces.make_tiny_face_pack(comfy.models / "insightface", "tiny_acg")
    info = comfy.object_info()  # the pack list is read when the schema is built
    loader_inputs = {
        name: _widget_default(decl) for name, decl in info["FDTAFaceModelLoader"]["input"]["required"].items()
    }
    loader_inputs["pack"] = "tiny_acg"
    graph = acg_graph(
        info,
        sd_models.checkpoint_name,
        sd_models.controlnet_name,
        control_image,
        face_models=["faces", 0],
        seed=5,
    )
    graph["faces"] = {"class_type": "FDTAFaceModelLoader", "inputs": loader_inputs}
    entry = run_graph(comfy, graph)
    ui = node_outputs(entry, "acg")
    report = ui["fdta_acg_report"][0]
    assert "checked with face models" in report
    provenance = json.loads(ui["fdta_acg_provenance"][0])
    lines = [line for line in report.splitlines() if line.startswith("identity ")]
    assert len(lines) == N_IDENTITIES
    assert sum("NO ACCEPTABLE CANDIDATE" in line for line in lines) == N_IDENTITIES - len(provenance)
    for p in provenance:
        acg = p["extra"]["acg"]
        assert acg["checked"] is True and acg["det_score"] is not None
        assert all(c["status"] in ("chosen", "runner_up", "rejected") for c in acg["candidates"])
        assert all(c["reasons"] for c in acg["candidates"] if c["status"] != "chosen")
    assert len(saved_images(comfy, entry, "sheet")) >= 1
