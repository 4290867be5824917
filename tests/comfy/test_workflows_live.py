"""The shipped workflows in a real ComfyUI: their node schemas are current, and both (Syn-MS1M and
Syn-MPIE) run end to end through the headless runner (``fdta run``) with every check on: face selection
(gender, age, uniqueness, real person), the CSIM filter, the writer, merge, ``fdta rec info`` and
``fdta report``.

The models are tiny random-weight models of the real architectures, except the face pack, which is the
*controlled* pack of :mod:`fdta_core.testing.controlled`: one centred face per image, a constant gender
and age, and an ArcFace whose similarities are a known function of the faces. So the test knows before
the run which identities face selection must reject and why (from the plan: wrong gender, wrong age, a
duplicate of an identity accepted earlier), and checks every CSIM decision against the same function
computed here from the written images and the chosen source faces."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fdta_core.cli import main as fdta
from fdta_core.faces.keypoints import planned_expression
from tests.comfy.harness import ComfyServer

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / "workflows"
SNAPSHOT = REPO / "tests" / "data" / "workflow_object_info.json"
MODELS = {
    "ckpt": "v1-5-pruned-emaonly.safetensors",
    # written as safetensors: ComfyUI torch.loads a .pth name, so the test points the workflow at this one
    "cnet": "control_sd15_canny_tiny.safetensors",
    "stg": "dcface_5x5.ckpt",
    "sam": "sam_ffhq_aging.pt",
}


def _inputs_signature(spec: dict) -> dict:
    """What a saved workflow depends on: input names, order and types (not defaults or model lists)."""
    out = {}
    for section in ("required", "optional"):
        for name, decl in (spec["input"].get(section) or {}).items():
            typ = decl[0]
            opts = decl[1] if len(decl) > 1 else {}
            if isinstance(typ, list) or typ == "COMBO":
                typ = "COMBO"
            out[name] = (section, typ, bool(opts.get("control_after_generate")))
    return {"inputs": out, "order": spec.get("input_order"), "outputs": spec["output"]}


def test_schema_snapshot_of_the_shipped_workflows_is_current(comfy: ComfyServer) -> None:
    """A renamed or reordered input silently breaks saved workflows; the snapshot catches it."""
    info = comfy.object_info()
    snap = json.loads(SNAPSHOT.read_text())
    for cls, spec in snap.items():
        assert cls in info, f"{cls} used by a shipped workflow is not registered"
        assert _inputs_signature(info[cls]) == _inputs_signature(spec), (
            f"{cls} changed its inputs; rebuild the workflows (python workflows/build_workflows.py "
            f"--object-info URL) and keep old workflows loading"
        )


@pytest.fixture(scope="module")
def tiny_models(comfy: ComfyServer):
    """Tiny random models saved under the file names the shipped workflows use."""
    import torch

    from fdta_core.testing.age import save_sam_checkpoint, tiny_sam
    from fdta_core.testing.controlled import make_controlled_face_pack
    from fdta_core.testing.faces import make_tiny_face_pack
    from fdta_core.testing.sd import write_random_sd_models
    from fdta_core.testing.stg import save_tiny_stg

    sd = write_random_sd_models(
        comfy.models, seed=7, checkpoint_name=MODELS["ckpt"], controlnet_name=MODELS["cnet"]
    )
    make_tiny_face_pack(comfy.models / "insightface", "buffalo_l")
    # a safetensors file under the .ckpt name the workflow uses is refused (wrong format), so the
    # test writes the converted form and points the workflow at it with --set
    save_tiny_stg(comfy.models / "fdta" / "stg" / "dcface_tiny.safetensors")
    age_dir = comfy.models / "fdta" / "age"
    age_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    save_sam_checkpoint(tiny_sam(seed=1), age_dir / MODELS["sam"])
    # references: 3 real "subjects" of aligned 112x112 faces; the control edge map of the workflows
    rng = np.random.default_rng(5)
    refs = comfy.input_dir / "fdta" / "ms1m_references"
    for s in range(3):
        (refs / f"subject{s}").mkdir(parents=True, exist_ok=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)).save(
                refs / f"subject{s}" / f"{i}.png"
            )
    Image.open(WORKFLOWS / "inputs" / "fdta_face_edges.png").save(comfy.input_dir / "fdta_face_edges.png")
    _write_mpie_references(comfy.input_dir / "fdta" / "multipie_references", rng)
    for case in CASES.values():
        make_controlled_face_pack(comfy.models / "insightface", case.pack, **case.pack_args)
    yield
    for p in (sd.checkpoint, sd.controlnet):
        p.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------ end to end
#: A bound on |t . t'| for the textures of two unrelated faces under the controlled ArcFace. White noise
#: gives a spread of about 0.065, but the tiny random SD's images share the VAE's fixed patterns, and
#: some pairs of them reach 0.3: the bound is generous. Cosines of unrelated faces therefore lie in
#: floor +- (1 - floor) * TEXTURE_SPREAD.
TEXTURE_SPREAD = 0.6
#: Uniqueness is checked across the whole run (the runner hands every chunk the run's identity index).
RUN_WIDE_UNIQUENESS = True
#: Node id of the preview of the chosen ACG candidates that the test adds to the shipped graph.
SOURCES_PREVIEW = "900"


@dataclass(frozen=True)
class Case:
    """One end-to-end run: a shipped workflow, the controlled pack it uses, and the run's shape."""

    workflow: str
    pack: str
    pack_args: dict
    seed: int
    identities: int
    chunk_size: int
    csim_threshold: float
    images_per_identity: int
    sets: tuple[str, ...] = ()


CASES = {
    # a male 45-year-old for every face, unrelated textures (floor 0): identities planned female or far
    # from 45 are rejected; with the uniqueness threshold at 0.9 only near-copies would be duplicates,
    # so the others are kept; CSIM of styled images scatters around 0, so a threshold of 0 drops
    # some and keeps others (each decision checked against the known function)
    "syn_ms1m": Case(
        "syn_ms1m.json", "e2e_male45", {"gender": "male", "age": 45.0, "identity_floor": 0.0},
        seed=11, identities=6, chunk_size=3, csim_threshold=0.0, images_per_identity=4,
        sets=("FDTASTGMixer.images_per_identity=2", "FDTAAgeShifter.batch_size=4",
              "FDTACSIMFilter.min_images_per_identity=1", "FDTAACGOptions.uniqueness_threshold=0.9",
              "FDTAACGOptions.real_person_threshold=0.9"),
    ),
    # a generator that always draws the same woman of 40 (floor 0.75): after the first acceptable
    # identity of a chunk every other one is a duplicate; every styled image keeps CSIM >= 0.69
    "syn_mpie": Case(
        "syn_mpie.json", "e2e_same_woman40", {"gender": "female", "age": 40.0, "identity_floor": 0.75},
        seed=12, identities=3, chunk_size=3, csim_threshold=0.3, images_per_identity=3,
        sets=("FDTASTGMixer.images_per_identity=3", "FDTACSIMFilter.min_images_per_identity=3",
              "FDTAACGOptions.real_person_threshold=0.99"),
    ),
}  # fmt: skip


def _write_mpie_references(root: Path, rng: np.random.Generator, subjects: int = 2) -> None:
    """Every subject with one tagged reference per cell of the Multi-PIE grid (13 yaws x 7 lightings x 2
    expressions, as the shipped Syn-MPIE workflow's ``grid_subject`` policy needs), and the tags CSV."""
    from fdta_core.stg.policies import MPIE_EXPRESSIONS, MPIE_LIGHTINGS, MPIE_YAWS

    rows = ["path,subject,yaw,lighting,expression"]
    for s in range(subjects):
        subject = f"subject{s}"
        (root / subject).mkdir(parents=True, exist_ok=True)
        n = 0
        for yaw in MPIE_YAWS:
            for light in MPIE_LIGHTINGS:
                for expr in MPIE_EXPRESSIONS:
                    rel = f"{subject}/{n:03d}.png"
                    coarse = rng.integers(0, 256, (14, 14, 3), dtype=np.uint8)
                    Image.fromarray(coarse).resize((112, 112), Image.BILINEAR).save(root / rel)
                    rows.append(f"{rel},{subject},{yaw},{light},{expr}")
                    n += 1
    (root / "tags.csv").write_text("\n".join(rows) + "\n")


def _node(api: dict, class_type: str) -> tuple[str, dict]:
    found = [(k, v) for k, v in api.items() if v["class_type"] == class_type]
    assert len(found) == 1, f"{class_type}: {len(found)} nodes"
    return found[0]


def _cli(capsys, argv: list[str]) -> tuple[int, str]:
    rc = fdta(argv)
    return rc, capsys.readouterr().out


def predict_selection(plan: list[dict], acg: dict, case: Case) -> dict[int, list[str]]:
    """Identity -> the rejection codes every candidate of it gets ([] = accepted), from the plan and the
    controlled pack alone. Constant gender/age: a planned gender or age off by more than the tolerance
    rejects every candidate; the floor decides uniqueness for every pair of unrelated faces."""
    floor = case.pack_args["identity_floor"]
    lo, hi = floor - (1 - floor) * TEXTURE_SPREAD, floor + (1 - floor) * TEXTURE_SPREAD
    thr = acg["uniqueness_threshold"]
    assert lo >= thr or hi < thr, f"floor {floor} leaves uniqueness at {thr} undecided; pick another floor"
    # the reference people are real: a face of a collapsed generator resembles them as much as it
    # resembles another face; the test sets the threshold where nobody is (or everybody would be) real
    assert hi < acg["real_person_threshold"], "every candidate would be a real person: the run would be empty"
    collapsed = lo >= thr
    out: dict[int, list[str]] = {}
    accepted = 0
    for row in plan:
        if not RUN_WIDE_UNIQUENESS and row["index"] % case.chunk_size == 0:
            accepted = 0
        codes = []
        if acg["check_gender"] and row["gender"] != case.pack_args["gender"]:
            codes.append("gender")
        if acg["check_age"] and abs(row["age"] - case.pack_args["age"]) > acg["age_tolerance"]:
            codes.append("age")
        # the controlled detector reports the ArcFace template's keypoints: a neutral mouth, a frontal head
        if (
            acg.get("check_expression", True)
            and planned_expression(row["attributes"].get("expression")) == "smiling"
        ):
            codes.append("expression")
        if collapsed and accepted:
            codes.append("duplicate")
        accepted += not codes
        out[row["index"]] = codes
    for start in range(0, len(plan), case.chunk_size):  # an empty chunk would fail the run (nothing to mix)
        chunk = [out[r["index"]] for r in plan[start : start + case.chunk_size]]
        assert any(not c for c in chunk), f"chunk at {start} keeps nobody: {out}"
    return out


def _history_of_run(comfy: ComfyServer, run_dir: Path) -> list[dict]:
    """The /history entries of the run's chunks, in chunk order (prompt ids from the run manifest)."""
    man = json.loads(next(run_dir.glob("run-shard*.json")).read_text())
    out = []
    for _, rec in sorted(man["chunks"].items(), key=lambda kv: int(kv[0])):
        entry = comfy.get(f"/history/{rec['prompt_id']}")[rec["prompt_id"]]
        out.append(entry)
    return out


def _source_faces(comfy: ComfyServer, history: list[dict]) -> list[np.ndarray]:
    """The chosen ACG candidates (the PreviewImage of the sampler's ``images`` output), aligned as the
    controlled detector aligns them: the whole image, through the product's own alignment."""
    from fdta_core.faces.align import ARCFACE_TEMPLATE_112, align_face

    faces = []
    for entry in history:
        for im in entry["outputs"][SOURCES_PREVIEW]["images"]:
            img = np.asarray(Image.open(comfy.temp_dir / im["subfolder"] / im["filename"]).convert("RGB"))
            faces.append(align_face(img, ARCFACE_TEMPLATE_112 * img.shape[1] / 112.0))
    return faces


def _run_case(comfy: ComfyServer, tmp_path: Path, capsys, name: str) -> dict:
    """Run one case through ``fdta run`` and check everything that the predictions and the known
    functions say; returns what later checks need."""
    import sqlite3

    from fdta_core.recordio import RecordReader, read_layout
    from fdta_core.testing.controlled import controlled_embedding

    case = CASES[name]
    api = json.loads((WORKFLOWS / "api" / case.workflow).read_text())
    acg_id, acg_node = _node(api, "FDTAACGSampler")
    # the sampler's settings with its advanced options (FDTAACGOptions, linked into its options socket)
    opts_id = acg_node["inputs"]["options"][0]
    acg = {**api[opts_id]["inputs"], **acg_node["inputs"]}
    for text in case.sets:  # the run's own settings of the sampler count for the prediction
        target, value = text.split("=", 1)
        if target.startswith(("FDTAACGSampler.", "FDTAACGOptions.")):
            acg[target.split(".", 1)[1]] = json.loads(value)
    assert "face_models" in acg, "the shipped workflow checks its candidates with face models"
    out_name = f"fdta/e2e_{name}"
    # the one addition to the shipped graph: a preview of the chosen candidates (what a user looks at),
    # so the test can compute the CSIM that the filter should find from the source faces themselves
    api[SOURCES_PREVIEW] = {"class_type": "PreviewImage", "inputs": {"images": [acg_id, 1]}}
    # the one check not on here: the CSIM filter's identity-leak check compares each styled image with
    # its source and with its reference subject; a random-weight STG output is unrelated to both, so
    # its verdict is a coin flip no test can predict (and may empty a chunk). It needs a tiny STG that
    # keeps identity; the reference people still count at ACG (real_person_threshold, above).
    _node(api, "FDTACSIMFilter")[1]["inputs"].pop("reference_bank", None)
    wf = tmp_path / case.workflow
    wf.write_text(json.dumps(api))

    # the plan the run will make (same spec, same run seed), and what selection must decide
    spec = tmp_path / "spec.json"
    spec.write_text(_node(api, "FDTAAttributeSpec")[1]["inputs"]["spec"])
    rc, out = _cli(capsys, ["plan", "--spec", str(spec), "--count", str(case.identities), "--seed", str(case.seed), "--json"])  # fmt: skip
    assert rc == 0
    plan = json.loads(out)
    expected = predict_selection(plan, acg, case)
    kept_ids = [i for i, codes in expected.items() if not codes]
    assert kept_ids and any(expected.values()), f"{name}: the plan exercises nothing: {expected}"

    candidates, retries = 2, 1
    sets = [
        f"ControlNetLoader.control_net_name={MODELS['cnet']}", "FDTAACGSampler.width=64", "FDTAACGSampler.height=64",
        "FDTAACGSampler.steps=2", "FDTAACGSampler.sampler_name=euler", f"FDTAACGSampler.candidates={candidates}",
        f"FDTAACGOptions.retries={retries}", f"FDTAFaceModelLoader.pack={case.pack}",
        "FDTASTGLoader.model_name=dcface_tiny.safetensors", "FDTASTGMixer.steps=2",
        f"FDTACSIMFilter.threshold={case.csim_threshold}", f"FDTADatasetWriter.output_name={out_name}", *case.sets,
    ]  # fmt: skip
    run_dir = tmp_path / "run"
    # --repair-rounds 0: these runs check every decision of one pass against the known functions (a
    # repair round would regenerate CSIM-emptied identities from new sources); repair rounds have their
    # own live test below
    argv = ["run", str(wf), "--run-dir", str(run_dir), "--identities", str(case.identities),
            "--chunk-size", str(case.chunk_size), "--seed", str(case.seed), "--server", comfy.url, "--timeout", "900",
            "--repair-rounds", "0"]  # fmt: skip
    for s in sets:
        argv += ["--set", s]
    rc, out = _cli(capsys, argv)
    assert rc == 0, f"{out}\n{comfy.log_tail(80)}"
    summary = json.loads(out.strip().splitlines()[-1])
    n_chunks = -(-case.identities // case.chunk_size)
    assert summary["done"] == n_chunks and summary["failed"] == 0

    # ---- face selection: what was rejected and why, as predicted
    history = _history_of_run(comfy, run_dir)
    report = "\n".join(line for e in history for line in e["outputs"][acg_id]["fdta_acg_report"])
    provenance = {
        p["identity"]: p for e in history for p in json.loads(e["outputs"][acg_id]["fdta_acg_provenance"][0])
    }
    assert sorted(provenance) == kept_ids, report
    per_identity = candidates * (retries + 1)
    thr_u = acg["uniqueness_threshold"]
    for ident, codes in expected.items():
        if codes:
            assert (
                f"identity {ident}: NO ACCEPTABLE CANDIDATE after {per_identity} candidates "
                f"({ {'gender': 'gender', 'age': 'age', 'duplicate': 'duplicate', 'expression': 'expression'}[codes[0]] } x{per_identity})"
            ) in report, report
        else:
            # every candidate passes; the one farthest from the identities accepted so far is kept (the
            # first identity of the run, with nothing accepted yet, keeps candidate 0: detection decides)
            acg_prov = provenance[ident]["extra"]["acg"]
            cands = acg_prov["candidates"]
            assert sorted((c["status"], tuple(c["reasons"])) for c in cands) == [("chosen", ())] + [
                ("runner_up", ("not_chosen",))
            ] * (candidates - 1)
            won = next(c for c in cands if c["status"] == "chosen")
            assert f"identity {ident}: chose a0c{won['candidate']} " in report, report
            sel = acg_prov["selection"]
            if sel["rule"] == "farthest":
                near = [c["nearest_accepted_cosine"] for c in cands]
                assert won["nearest_accepted_cosine"] == min(near) == sel["nearest_accepted_cosine"]
                assert sel["uniqueness_margin"] == pytest.approx(thr_u - min(near), abs=1e-5)
            else:
                assert won["candidate"] == 0, acg_prov
            assert acg_prov["checks"]["pose"]["outcome"] == "pass"

    # ---- the written chunks merge into one sound data set with every kept identity exactly once
    dataset = comfy.output_dir / out_name
    merged = tmp_path / "merged"
    rc, out = _cli(capsys, ["rec", "merge", str(merged), str(dataset)])
    assert rc == 0, out
    rc, out = _cli(capsys, ["rec", "info", str(merged), "--json"])
    info = json.loads(out)
    assert rc == 0 and info["ok"] and info["layout"] == "insightface", info

    con = sqlite3.connect(merged / "manifest.sqlite")
    ident_rows = con.execute("SELECT identity, images FROM identities ORDER BY label").fetchall()
    written = [i for i, _ in ident_rows]
    assert len(written) == len(set(written)) == info["classes"]
    assert set(written) <= set(kept_ids)
    rows = con.execute("SELECT key, identity, csim, history, extra FROM images ORDER BY key").fetchall()
    assert len(rows) == info["images"] == sum(n for _, n in ident_rows)
    for _key, ident, _csim, _hist, extra in rows:
        acg_prov = json.loads(extra)["acg"]
        assert acg_prov["checked"] and acg_prov["planned_gender"] == next(
            r["gender"] for r in plan if r["index"] == ident
        )

    # ---- what was left out is in the manifest, with the reason: every rejected identity at ACG ...
    from fdta_core.dataset.manifest import read_dropped

    dropped = read_dropped(merged / "manifest.sqlite")
    acg_drops = {d["identity"]: d for d in dropped if d["stage"] == "acg"}
    assert {i: d["reasons"] for i, d in acg_drops.items()} == {i: c for i, c in expected.items() if c}
    for ident, d in acg_drops.items():
        planned = next(r for r in plan if r["index"] == ident)
        assert f"no acceptable candidate after {per_identity} candidates" in d["detail"]
        if "gender" in d["reasons"]:
            assert f"looks {case.pack_args['gender']}, planned {planned['gender']}" in d["detail"]
        if "age" in d["reasons"]:
            assert f"looks {case.pack_args['age']:.0f}, planned {planned['age']}" in d["detail"]
        if "duplicate" in d["reasons"]:
            assert "same identity as identity" in d["detail"]
        assert [c["reasons"] for c in d["record"]["candidates"]] == [d["reasons"]] * per_identity
    # ... and every styled image the CSIM filter dropped: written + dropped = all that were made
    csim_drops = [d for d in dropped if d["stage"] == "csim"]
    assert {d["stage"] for d in dropped} <= {"acg", "csim"}
    for d in csim_drops:
        c = d["record"]["csim"]
        if d["reasons"] == ["csim"]:
            assert c < case.csim_threshold and f"< threshold {case.csim_threshold:.3f}" in d["detail"], d
        else:
            assert d["reasons"] == ["identity"] and c >= case.csim_threshold, d
        assert d["identity"] in kept_ids and d["record"]["history"][:2] == ["acg", "stg"]
    made = {}
    for i in kept_ids:
        made[i] = sum(1 for _k, ident, *_ in rows if ident == i) + sum(
            1 for d in csim_drops if d["identity"] == i
        )
    assert set(made.values()) == {case.images_per_identity}, made

    # ---- CSIM: every decision is the known function of the written image and its source face
    sources = dict(zip(sorted(provenance), _source_faces(comfy, history), strict=True))
    floor = case.pack_args["identity_floor"]
    reader = RecordReader(merged / "train.rec")
    try:
        layout = read_layout(reader, scan_labels=True)
        import cv2

        imgs = []
        for key in layout.image_keys:
            _h, payload = reader.read_unpacked(key)
            imgs.append(cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_COLOR)[..., ::-1])
    finally:
        reader.close()
    emb = controlled_embedding(np.stack(imgs), floor)
    for (key, ident, csim, _hist, _extra), e in zip(rows, emb, strict=True):
        s = controlled_embedding(sources[ident][None], floor)[0]
        want = float(e @ s / (np.linalg.norm(e) * np.linalg.norm(s)))
        assert csim >= case.csim_threshold, (key, csim)
        assert abs(csim - want) < 0.03, f"image {key}: recorded CSIM {csim:.4f}, known function {want:.4f}"
    lo, hi = floor - (1 - floor) * TEXTURE_SPREAD, floor + (1 - floor) * TEXTURE_SPREAD
    assert all(lo <= c <= hi for c in [r[2] for r in rows] + [d["record"]["csim"] for d in csim_drops])
    return {
        "case": case, "plan": plan, "expected": expected, "kept": kept_ids, "written": written, "merged": merged,
        "rows": rows, "argv": argv, "dataset": dataset, "info": info, "dropped": dropped,
    }  # fmt: skip


def _report(capsys, comfy: ComfyServer, r: dict) -> dict:
    """``fdta report`` on the merged set, with the run's face pack: its JSON says what was dropped and
    why, exactly as the manifest does, and its text output names every rejected identity."""
    merged, pack = r["merged"], r["case"].pack
    base = ["report", str(merged), "--pack", pack, "--insightface-dir", str(comfy.models / "insightface"), "--provider", "CPU"]  # fmt: skip
    rc, out = _cli(capsys, [*base, "--json"])
    assert rc == 0, out
    rep = json.loads(out[out.index("{") :])
    assert rep["identities"] == len(r["written"]) and rep["images"] == len(r["rows"])
    drop = rep["dropped"]
    rejected = sorted(i for i, c in r["expected"].items() if c)
    assert drop["total"] == len(r["dropped"]) and drop["identities_without_source"] == rejected
    assert [(d["stage"], d["identity"], d["reasons"]) for d in drop["items"]] == [
        (d["stage"], d["identity"], d["reasons"]) for d in r["dropped"]
    ]
    rc, text = _cli(capsys, base)
    assert rc == 0 and f"dropped on the way: {len(r['dropped'])} (" in text, text
    for i in rejected[:20]:
        assert f"acg: identity {i} [{', '.join(r['expected'][i])}] no acceptable candidate" in text, text
    return rep


@pytest.mark.slow
def test_syn_ms1m_end_to_end_with_every_check(comfy: ComfyServer, tiny_models, tmp_path, capsys) -> None:
    r = _run_case(comfy, tmp_path, capsys, "syn_ms1m")
    # 2 STG styles x (original + 1 aged) per identity before the CSIM filter; the filter kept some
    assert all(n <= 4 for _, n in sqlite3_rows(r["merged"], "SELECT identity, images FROM identities"))
    histories = {tuple(json.loads(h)) for *_, h, _e in r["rows"]}
    assert histories <= {("acg", "stg", "csim"), ("acg", "stg", "age", "csim")}
    assert all(ref for ref in sqlite3_rows(r["merged"], "SELECT reference_key FROM images"))

    rep = _report(capsys, comfy, r)
    assert rep["uniqueness"] == pytest.approx(1.0)  # unrelated faces, floor 0: nobody twice
    # the CSIM threshold sits inside the spread of unrelated faces: it dropped some images, kept others
    assert rep["dropped"]["by_stage"]["csim"]["csim"] > 0 and len(r["rows"]) > 0

    # resumable: the same command again has nothing left to do and queues nothing
    before = len(comfy.get("/history"))
    assert fdta(r["argv"]) == 0
    capsys.readouterr()
    assert len(comfy.get("/history")) == before
    chunks = sorted(c.name for c in (r["dataset"] / "chunks").iterdir() if not c.name.startswith("."))
    assert chunks == ["000000000-000000003", "000000003-000000006"]


@pytest.mark.slow
def test_syn_mpie_end_to_end_with_every_check(comfy: ComfyServer, tiny_models, tmp_path, capsys) -> None:
    r = _run_case(comfy, tmp_path, capsys, "syn_mpie")
    # a floor of 0.75 keeps every styled image: all 3 grid cells of every kept identity are written
    assert r["written"] == r["kept"]
    counts = dict(sqlite3_rows(r["merged"], "SELECT identity, images FROM identities"))
    assert set(counts.values()) == {3}
    cells = sqlite3_rows(r["merged"], "SELECT json_extract(extra, '$.stg_cell') FROM images")
    assert len({c for c in cells}) == 3
    rep = _report(capsys, comfy, r)
    assert rep["images"] == 3 * len(r["kept"]) and "csim" not in rep["dropped"]["by_stage"]
    assert rep["dropped"]["by_stage"]["acg"] == {"gender": 1, "age": 1, "duplicate": 2}


def sqlite3_rows(folder: Path, sql: str) -> list:
    import sqlite3

    con = sqlite3.connect(folder / "manifest.sqlite")
    try:
        rows = con.execute(sql).fetchall()
    finally:
        con.close()
    return [r[0] if len(r) == 1 else r for r in rows]


# ------------------------------------------------------------------------------------ repair rounds


def _repair_workflow(tmp_path: Path, name: str) -> Path:
    """The shipped Syn-MS1M graph (without the CSIM leak check, whose verdict on a random STG is a coin
    flip, as in the end-to-end runs above)."""
    api = json.loads((WORKFLOWS / "api" / "syn_ms1m.json").read_text())
    _node(api, "FDTACSIMFilter")[1]["inputs"].pop("reference_bank", None)
    wf = tmp_path / f"{name}.json"
    wf.write_text(json.dumps(api))
    return wf


def _repair_argv(comfy: ComfyServer, wf: Path, run_dir: Path, out_name: str, identities: int, rounds: int,
                 *sets: str) -> list[str]:  # fmt: skip
    base = [
        f"ControlNetLoader.control_net_name={MODELS['cnet']}", "FDTAACGSampler.width=64", "FDTAACGSampler.height=64",
        "FDTAACGSampler.steps=2", "FDTAACGSampler.sampler_name=euler", "FDTAACGSampler.candidates=1",
        "FDTAACGOptions.retries=0", "FDTAFaceModelLoader.pack=e2e_male45", "FDTAACGOptions.check_gender=false",
        "FDTAACGOptions.check_age=false", "FDTAACGOptions.uniqueness_threshold=0.9",
        "FDTAACGOptions.real_person_threshold=0.9", "FDTASTGLoader.model_name=dcface_tiny.safetensors",
        "FDTASTGMixer.steps=2", "FDTASTGMixer.images_per_identity=2", "FDTAAgeShifter.batch_size=4",
        f"FDTADatasetWriter.output_name={out_name}", *sets,
    ]  # fmt: skip
    argv = ["run", str(wf), "--run-dir", str(run_dir), "--identities", str(identities), "--chunk-size",
            str(identities), "--seed", "11", "--server", comfy.url, "--timeout", "900", "--repair-rounds", str(rounds)]  # fmt: skip
    for s in base:
        argv += ["--set", s]
    return argv


@pytest.mark.slow
def test_csim_emptied_identities_are_repaired_through_comfyui(
    comfy: ComfyServer, tiny_models, tmp_path, capsys
) -> None:
    """fdta run against a real ComfyUI: the CSIM filter (threshold 0 inside the spread of unrelated faces,
    at least 2 of an identity's 4 images) empties some identities of the chunk; repair rounds queue the
    same workflow for just those (FDTAAttributeSpec.repair), the ACG draws them from the next attempt
    seeds, and the writer adds them to the committed chunk. Everything planned is written or recorded
    missing with its reason, and the written quota-field counts are the plan's less the missing."""
    wf = _repair_workflow(tmp_path, "repair")
    out_name, run_dir, n = "fdta/e2e_repair", tmp_path / "run", 6
    argv = _repair_argv(comfy, wf, run_dir, out_name, n, 3, "FDTACSIMFilter.threshold=0.0",
                        "FDTACSIMFilter.min_images_per_identity=2")  # fmt: skip
    comfy.free()
    rc, out = _cli(capsys, argv)
    assert rc == 0, f"{out}\n{comfy.log_tail(80)}"
    chunk = json.loads(
        (comfy.output_dir / out_name / "chunks" / "000000000-000000006" / "chunk.json").read_text()
    )
    man = json.loads(next(run_dir.glob("run-shard*.json")).read_text())["chunks"]["0"]
    rounds = man["repairs"]
    assert rounds, f"the first pass kept every identity: nothing exercised ({chunk})"
    assert (
        [r["round"] for r in chunk["repairs"]]
        == [r["round"] for r in rounds]
        == list(range(1, len(rounds) + 1))
    )
    added = {i: r["round"] for r in chunk["repairs"] for i in r["added"]}
    assert added, f"no repair round got an identity through: pick another CSIM threshold ({chunk['repairs']})"
    missing = {m["identity"]: m for m in chunk["missing"]}
    assert sorted(chunk["identities"] + list(missing)) == list(range(n)) and man["missing"] == sorted(missing)
    assert rounds[0]["identities"] == sorted(set(added) | set(rounds[0]["missing_after"]) | set(missing))
    for m in missing.values():  # still missing after the bound: the reason of its last attempt
        assert (
            m["stage"] == "csim" and m["round"] == len(rounds) and set(m["reasons"]) <= {"csim", "identity"}
        )
    # every repaired identity's images come from its round's own ACG attempt (retries 0: attempt = round)
    rows = sqlite3_rows(comfy.output_dir / out_name / "chunks" / "000000000-000000006",
                        "SELECT identity, json_extract(extra, '$.acg.attempt'), attributes FROM images")  # fmt: skip
    for ident, attempt, _a in rows:
        assert attempt == added.get(ident, 0), (ident, attempt, added)
    # quotas: written per-value counts = the plan's less the missing identities
    spec = tmp_path / "spec.json"
    spec.write_text(_node(json.loads(wf.read_text()), "FDTAAttributeSpec")[1]["inputs"]["spec"])
    rc, out = _cli(capsys, ["plan", "--spec", str(spec), "--count", str(n), "--seed", "11", "--json"])
    plan = {r["index"]: r for r in json.loads(out)}
    written = {ident: json.loads(a) for ident, _att, a in rows}
    for field in ("gender", "race", "age"):
        want = sorted(plan[i]["attributes"][field] for i in plan if i not in missing)
        assert sorted(a[field] for a in written.values()) == want
    rc, out = _cli(capsys, ["rec", "info", str(comfy.output_dir / out_name), "--json"])
    assert rc == 0 and json.loads(out)["ok"], out
    index = json.loads((comfy.output_dir / out_name / "dataset.json").read_text())
    assert sorted(m["identity"] for m in index["missing"]) == sorted(missing)


@pytest.mark.slow
def test_a_chunk_in_which_every_identity_is_rejected_is_written_empty_through_comfyui(
    comfy: ComfyServer, tiny_models, tmp_path, capsys
) -> None:
    """Every candidate is rejected (a detection score below min_det_score): the empty faceset flows
    through STG, age, CSIM and the writer, which commits an empty chunk whose manifest and chunk.json
    say why each identity is missing; the run succeeds, the repair round is tried and recorded, and
    rec info, fdta report and fdta audit accept the chunk."""
    wf = _repair_workflow(tmp_path, "rejected")
    out_name, run_dir = "fdta/e2e_all_rejected", tmp_path / "run"
    argv = _repair_argv(comfy, wf, run_dir, out_name, 2, 1, "FDTAACGOptions.min_det_score=0.95")
    comfy.free()
    rc, out = _cli(capsys, argv)
    assert rc == 0, f"{out}\n{comfy.log_tail(80)}"
    assert json.loads(out.strip().splitlines()[-1])["done"] == 1
    folder = comfy.output_dir / out_name / "chunks" / "000000000-000000002"
    chunk = json.loads((folder / "chunk.json").read_text())
    assert (chunk["images"], chunk["classes"]) == (0, 0)
    assert [(m["identity"], m["stage"], m["reasons"]) for m in chunk["missing"]] == [
        (0, "acg", {"low_score": 1}), (1, "acg", {"low_score": 1})
    ]  # fmt: skip
    assert [(r["round"], r["added"], r["tried"]) for r in chunk["repairs"]] == [(1, [], [0, 1])]
    man = json.loads(next(run_dir.glob("run-shard*.json")).read_text())["chunks"]["0"]
    assert man["state"] == "done" and man["missing"] == [0, 1] and len(man["repairs"]) == 1
    rc, out = _cli(capsys, ["rec", "info", str(comfy.output_dir / out_name), "--json"])
    assert rc == 0 and json.loads(out)["ok"], out
    rc, out = _cli(capsys, ["report", str(folder), "--json", "--out", str(tmp_path / "rep")])
    rep = json.loads(out[out.index("{") :])
    assert rc == 0 and rep["images"] == 0 and [m["identity"] for m in rep["missing"]] == [0, 1]
    pack = ["--pack", "e2e_male45", "--insightface-dir", str(comfy.models / "insightface"), "--json"]
    rc, out = _cli(capsys, ["audit", str(folder), *pack])
    assert rc == 0 and json.loads(out)["identities"] == 0
