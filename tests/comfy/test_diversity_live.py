"""Issue 17 live: FDTAControlMaps feeds the ACG one map per identity (its parameters land in each identity's
provenance), the expression and pose checks reject what the controlled face pack makes fail, and among
several passing candidates the one farthest from the accepted identities is kept.

Real ComfyUI (CPU), random-weight SD 1.5 + ControlNet (``fdta_core.testing.sd``), and the controlled face
pack of ``fdta_core.testing.controlled`` whose detector reports keypoints the test chooses: a smile for
every face (identities planned neutral are rejected, planned smiling kept), or a head turned by 35 degrees
(every candidate rejected as not frontal).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fdta_core.cli import main as fdta
from fdta_core.testing.controlled import (
    controlled_embedding,
    make_controlled_face_pack,
    smiling_keypoints,
    turned_keypoints,
)
from fdta_core.testing.sd import write_random_sd_models
from tests.comfy.harness import ComfyServer, node_outputs

pytestmark = pytest.mark.slow

SIDE = 64
CANDIDATES = 3
RETRIES = 1
RUN_SEED = 5
COUNT = 4
SPEC = {
    "format": "fdta-attribute-spec/1",
    "fields": {
        "gender": {"values": ["male"]},
        "age": {"min": 35, "max": 44, "distribution": "uniform", "bin_width": 10},
        "face_shape": {"template": "{value} face", "values": ["round", "long", "square", "heart-shaped"]},
        "lips": {"template": "{value} lips", "values": ["full", "thin"]},
        "expression": {"template": "{value}", "values": ["broad smile", "neutral expression"]},
    },
}


@pytest.fixture(scope="module")
def models(comfy: ComfyServer):
    sd = write_random_sd_models(
        comfy.models,
        seed=77,
        checkpoint_name="fdta_div_sd15.safetensors",
        controlnet_name="fdta_div_cn.safetensors",
    )
    packs = comfy.models / "insightface"
    make_controlled_face_pack(packs, "div_smile", gender="male", age=40.0, identity_floor=0.0,
                              keypoints=smiling_keypoints())  # fmt: skip
    make_controlled_face_pack(packs, "div_turned", gender="male", age=40.0, identity_floor=0.0,
                              keypoints=turned_keypoints(35.0))  # fmt: skip
    yield sd
    for p in (sd.checkpoint, sd.controlnet):
        p.unlink(missing_ok=True)


def _graph(info: dict, sd, pack: str) -> dict:
    def defaults(node: str) -> dict:
        out = {}
        for name, decl in info[node]["input"].get("required", {}).items():
            opts = decl[1] if len(decl) > 1 else {}
            if "default" in opts:
                out[name] = opts["default"]
        return out

    options = defaults("FDTAACGOptions") | {
        "control_assignment": "per_identity",
        "control_preprocess": "none",
        "retries": RETRIES,
        "uniqueness_threshold": 0.9,  # random-weight faces: only near-copies count as the same person
        "real_person_threshold": 0.99,
    }
    sampler = defaults("FDTAACGSampler") | {
        "model": ["ckpt", 0], "clip": ["ckpt", 1], "vae": ["ckpt", 2], "control_net": ["cnet", 0],
        "plan": ["spec", 0], "control_images": ["maps", 0], "control_parameters": ["maps", 2],
        "options": ["opts", 0], "face_models": ["faces", 0],
        "seed": 9, "steps": 2, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal",
        "strength": 0.6, "start_percent": 0.0, "end_percent": 0.55,
        "width": SIDE, "height": SIDE, "candidates": CANDIDATES, "batch_size": 6,
    }  # fmt: skip
    return {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": sd.checkpoint_name}},
        "cnet": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": sd.controlnet_name}},
        "spec": {
            "class_type": "FDTAAttributeSpec",
            "inputs": {"spec": json.dumps(SPEC), "identity_start": 0, "identity_count": COUNT, "seed": RUN_SEED},
        },
        "maps": {"class_type": "FDTAControlMaps", "inputs": {"plan": ["spec", 0], "format": "edges", "size": SIDE}},
        "faces": {
            "class_type": "FDTAFaceModelLoader",
            "inputs": defaults("FDTAFaceModelLoader") | {"pack": pack, "det_threshold": 0.1},
        },
        "opts": {"class_type": "FDTAACGOptions", "inputs": options},
        "acg": {"class_type": "FDTAACGSampler", "inputs": sampler},
        "save_maps": {"class_type": "SaveImage", "inputs": {"images": ["maps", 0], "filename_prefix": "fdta_div_maps"}},
        "save_src": {"class_type": "SaveImage", "inputs": {"images": ["acg", 1], "filename_prefix": "fdta_div_src"}},
    }  # fmt: skip


def _saved(comfy: ComfyServer, entry: dict, node: str) -> list[np.ndarray]:
    return [
        np.asarray(
            Image.open(Path(comfy.output_dir) / im.get("subfolder", "") / im["filename"]).convert("RGB")
        )
        for im in node_outputs(entry, node)["images"]
    ]


def test_per_identity_maps_checks_and_farthest_candidate(comfy: ComfyServer, models, tmp_path, capsys):
    from fdta_core.faces.align import align_face

    info = comfy.object_info()
    assert "FDTAControlMaps" in info, comfy.log_tail()
    comfy.free()
    entry = comfy.run(_graph(info, models, "div_smile"), timeout=900)
    ui = node_outputs(entry, "acg")
    report = ui["fdta_acg_report"][0]
    provenance = json.loads(ui["fdta_acg_provenance"][0])

    # the maps the node drew are the CLI's maps, byte for byte, with the same parameters
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    out = tmp_path / "maps"
    rc = fdta(["controls", "--spec", str(spec), "--start", "0", "--count", str(COUNT), "--seed", str(RUN_SEED),
               "--size", str(SIDE), "--out", str(out)])  # fmt: skip
    assert rc == 0, capsys.readouterr()
    doc = json.loads((out / "controls.json").read_text())
    cli = {r["index"]: r for r in doc["identities"]}
    drawn = _saved(comfy, entry, "save_maps")
    assert len(drawn) == COUNT
    for r, img in zip(doc["identities"], drawn, strict=True):
        assert np.array_equal(np.asarray(Image.open(out / r["file"]).convert("RGB")), img)

    # expression: the pack reads a smile on every face, so identities planned neutral are rejected
    per_identity = CANDIDATES * (RETRIES + 1)
    planned = {i: cli[i]["attributes"]["expression"] for i in cli}
    assert set(planned.values()) == {"broad smile", "neutral expression"}
    kept = sorted(p["identity"] for p in provenance)
    assert kept == sorted(i for i, e in planned.items() if e == "broad smile"), report
    for i, e in planned.items():
        if e == "neutral expression":
            assert f"identity {i}: NO ACCEPTABLE CANDIDATE after {per_identity} candidates (expression x{per_identity})" in report, report  # fmt: skip

    # each kept identity: its own map (parameters recorded), checks recorded, farthest candidate kept
    faces = _saved(comfy, entry, "save_src")
    assert len(faces) == len(provenance)
    kps = smiling_keypoints() * SIDE / 112.0
    embs = controlled_embedding(np.stack([align_face(f, kps) for f in faces]), 0.0)
    embs /= np.linalg.norm(embs, axis=1, keepdims=True)
    for k, p in enumerate(provenance):
        acg = p["extra"]["acg"]
        assert acg["control_map"] == cli[p["identity"]]["parameters"]
        assert acg["control_index"] == p["identity"]  # plan position == identity (start 0)
        assert acg["control_policy"] == "per_identity"
        checks = acg["checks"]
        assert (
            checks["expression"]["planned_class"] == "smiling" and checks["expression"]["outcome"] == "pass"
        )
        assert checks["expression"]["mouth_ratio"] > 1.0 and checks["pose"]["outcome"] == "pass"
        cands = acg["candidates"]
        assert len(cands) == CANDIDATES and all(c["keypoints"]["mouth_ratio"] > 1.0 for c in cands)
        sel = acg["selection"]
        assert sel["passing_candidates"] == CANDIDATES
        won = next(c for c in cands if c["status"] == "chosen")
        if k == 0:  # nothing accepted before it: detection decides (all tie), candidate 0
            assert sel["rule"].startswith("detection") and won["candidate"] == 0
            continue
        assert sel["rule"] == "farthest"
        near = [c["nearest_accepted_cosine"] for c in cands]
        assert won["nearest_accepted_cosine"] == min(near) and len(set(near)) == CANDIDATES
        # independent: the kept face's nearest earlier accepted face, from the saved images
        expected = float(np.max(embs[:k] @ embs[k]))
        assert sel["nearest_accepted_cosine"] == pytest.approx(expected, abs=5e-3)
        assert sel["lead_over_next"] > 0
    assert "identity diversity: pairwise cosine" in report

    # pose: the same graph with a pack that sees every head turned by 35 degrees keeps nobody
    comfy.free()
    turned = comfy.run(_graph(info, models, "div_turned"), timeout=900)
    ui = node_outputs(turned, "acg")
    assert json.loads(ui["fdta_acg_provenance"][0]) == []
    rep = ui["fdta_acg_report"][0]
    for i, e in planned.items():
        first = "expression" if e == "broad smile" else "not frontal"  # a smile planned, a neutral mouth seen
        assert f"identity {i}: NO ACCEPTABLE CANDIDATE after {per_identity} candidates ({first} x{per_identity})" in rep, rep  # fmt: skip
