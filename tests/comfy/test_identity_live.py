"""The run-wide identity guarantees in a real ComfyUI (tiny random-weight models, CPU), through ``fdta run``.

A two-chunk run (one identity per chunk, two candidates per round) in which chunk 1's first-round
candidate 0 would repeat the identity chunk 0 accepted and candidate 1 would copy a person of the STG
reference bank: both are rejected, the identity is regenerated in a later round from new deterministic
seeds, and the merged set is unique by ``fdta audit``.

How the situation is made (random SD weights draw no real faces, so "same person" comes from the
models' own outputs): two probe runs read what chunk 1 would produce (the run index holds each
accepted embedding; the ACG's chosen image is saved), that image goes into the reference bank as a real
subject, and the uniqueness threshold is set just below the cosine of chunk 1's first candidate to chunk
0's identity. Same seeds give the same pixels across restarts, so the runs are reproducible.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fdta_core.cli import main as fdta
from fdta_core.faces.identity import IdentityIndex, RunIndex
from tests.comfy.harness import ComfyServer

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
CKPT, CNET, PACK = "v1-5-pruned-emaonly.safetensors", "fdta_identity_cnet.safetensors", "fdta_any_face"


@pytest.fixture(scope="module")
def setup(comfy: ComfyServer, tmp_path_factory):
    from fdta_core.testing.faces import make_tiny_face_pack
    from fdta_core.testing.sd import write_random_sd_models

    sd = write_random_sd_models(comfy.models, seed=7, checkpoint_name=CKPT, controlnet_name=CNET)
    make_tiny_face_pack(comfy.models / "insightface", PACK, detect_anywhere=True)
    refs = comfy.input_dir / "fdta" / "identity_refs"
    rng = np.random.default_rng(5)
    for s in range(2):
        (refs / f"subject{s}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)).save(
            refs / f"subject{s}" / "0.png"
        )
    Image.open(REPO / "workflows" / "inputs" / "fdta_face_edges.png").save(
        comfy.input_dir / "fdta_face_edges.png"
    )
    api = json.loads((REPO / "workflows" / "api" / "syn_ms1m.json").read_text())
    # the shipped ACG front (plan, ACG with its options and face models, reference bank feeding it), written
    # straight away
    graph = {k: api[k] for k in ("1", "2", "3", "4", "5", "6", "7", "9", "15")}  # 15: the ACG options
    assert graph["7"]["inputs"]["reference_bank"] == ["9", 0]
    graph["9"]["inputs"]["path"] = "fdta/identity_refs"
    graph["14"] = {
        "class_type": "FDTADatasetWriter",
        # -1 / 0: the range travels with the faceset from the plan, as in the shipped workflows
        "inputs": {"faceset": ["7", 0], "output_name": "x", "identity_start": -1, "identity_count": 0},
    }
    graph["30"] = {"class_type": "SaveImage", "inputs": {"images": ["7", 1], "filename_prefix": "acg"}}  # fmt: skip
    wf = tmp_path_factory.mktemp("wf") / "acg_only.json"
    wf.write_text(json.dumps(graph))
    yield wf, refs
    for p in (sd.checkpoint, sd.controlnet):
        p.unlink(missing_ok=True)


def _run(comfy, wf, run_dir, name, *, u, r, real_sets="", capsys=None):
    sets = [
        f"ControlNetLoader.control_net_name={CNET}", "FDTAACGSampler.width=64", "FDTAACGSampler.height=64",
        "FDTAACGSampler.steps=2", "FDTAACGSampler.candidates=2", "FDTAACGSampler.sampler_name=euler",
        "FDTAACGOptions.check_gender=false", "FDTAACGOptions.check_age=false", "FDTAACGOptions.min_det_score=0.0",
        "FDTAACGOptions.retries=5", f"FDTAACGOptions.uniqueness_threshold={u}",
        f"FDTAACGOptions.real_person_threshold={r}", f"FDTAACGOptions.real_sets={json.dumps(real_sets)}",
        f"FDTAFaceModelLoader.pack={PACK}", "FDTAFaceModelLoader.det_threshold=0.1",
        f"FDTADatasetWriter.output_name=fdta/{name}", f"SaveImage.filename_prefix={name}",
    ]  # fmt: skip
    argv = ["run", str(wf), "--run-dir", str(run_dir), "--identities", "2", "--chunk-size", "1", "--seed", "11",
            "--server", comfy.url, "--timeout", "900"]  # fmt: skip
    for s in sets:
        argv += ["--set", s]
    comfy.free()
    rc = fdta(argv)
    out = capsys.readouterr().out if capsys else ""
    assert rc == 0, f"{out}\n{comfy.log_tail(60)}"
    hist = comfy.get("/history")
    acg = {}
    for entry in hist.values():
        prompt = entry["prompt"][2]
        if prompt.get("30", {}).get("inputs", {}).get("filename_prefix") != name:
            continue
        start = prompt["4"]["inputs"]["identity_start"]
        outs = entry["outputs"]
        img = outs["30"]["images"][0]
        acg[start] = {
            "image": comfy.output_dir / img.get("subfolder", "") / img["filename"],
            "provenance": json.loads(outs["7"]["fdta_acg_provenance"][0])[0],
            "report": outs["7"]["fdta_acg_report"][0],
        }
    return acg


def _emb(run_dir, start):
    idx = IdentityIndex.load(RunIndex(run_dir / "identities").chunk_files()[start][2])
    assert idx.ids == [start]
    return idx.vectors()[0].astype(np.float64)


def test_two_chunk_run_rejects_a_repeat_and_a_reference_person(comfy, setup, tmp_path, capsys):
    wf, refs = setup
    # probe 1: nothing rejected; chunk 1 keeps its first-round candidate 0
    p1 = _run(comfy, wf, tmp_path / "p1", "idprobe1", u=1.0, r=1.0, capsys=capsys)
    assert p1[1]["provenance"]["extra"]["acg"]["candidate"] == 0
    e0, e1c0 = _emb(tmp_path / "p1", 0), _emb(tmp_path / "p1", 1)
    # probe 2: candidate 0 of chunk 1 is a "real person" (an .npy real set), so candidate 1 is kept
    npy = tmp_path / "c0.npy"
    np.save(npy, e1c0[None])
    p2 = _run(comfy, wf, tmp_path / "p2", "idprobe2", u=1.0, r=0.99, real_sets=str(npy), capsys=capsys)
    acg1 = p2[1]["provenance"]["extra"]["acg"]
    assert (acg1["attempt"], acg1["candidate"]) == (0, 1), p2[1]["report"]
    e1c1 = _emb(tmp_path / "p2", 1)
    cos_dup = float(e1c0 @ e0)
    assert abs(cos_dup) < 0.999 and float(e1c1 @ e1c0) < 0.999
    if cos_dup < 0.05:
        pytest.fail(
            f"the probe found chunk 1's first candidate at cosine {cos_dup:.3f} to chunk 0: too far to plant"
        )
    # the reference bank gets a real subject whose face is chunk 1's candidate 1
    (refs / "subject_copy").mkdir(exist_ok=True)
    Image.open(p2[1]["image"]).save(refs / "subject_copy" / "0.png")
    u = round(cos_dup - 0.02, 4)
    run_dir = tmp_path / "run"
    res = _run(comfy, wf, run_dir, "idrun", u=u, r=0.9, capsys=capsys)
    assert res[0]["provenance"]["extra"]["acg"]["attempt"] == 0
    cands = res[1]["provenance"]["extra"]["acg"]["candidates"]
    first = {c["candidate"]: c for c in cands if c["attempt"] == 0}
    assert first[0]["status"] == "rejected" and "duplicate" in first[0]["reasons"], res[1]["report"]
    assert first[1]["status"] == "rejected" and first[1]["reasons"][0] == "real_person", res[1]["report"]
    assert res[1]["provenance"]["extra"]["acg"]["attempt"] >= 1  # regenerated from new seeds
    assert "identity 0" in res[1]["report"] or "duplicate" in res[1]["report"]
    # both chunks wrote their accepted identities to the run's index; together they are unique
    files = RunIndex(run_dir / "identities").chunk_files()
    assert [(s, e) for s, e, _ in files] == [(0, 1), (1, 2)]
    everything = RunIndex(run_dir / "identities").all()
    v = everything.vectors()
    assert float(v[0] @ v[1]) < u
    # the written set, merged, is unique by fdta audit at the run's threshold
    merged = tmp_path / "merged"
    assert fdta(["rec", "merge", str(merged), str(comfy.output_dir / "fdta" / "idrun")]) == 0
    capsys.readouterr()
    argv = ["audit", str(merged), "--pack", PACK, "--insightface-dir", str(comfy.models / "insightface"),
            "--threshold", str(u), "--json"]  # fmt: skip
    rc = fdta(argv)
    report = json.loads(capsys.readouterr().out)
    assert rc == 0 and report["identities"] == 2 and report["flagged"] == [], report
