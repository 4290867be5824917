"""The shipped workflows: UI files and API twins agree, match the builder, and are safe to share."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

from fdta_core.runner import patch_workflow, plan_chunks
from fdta_core.runner.patch import load_api_workflow
from fdta_core.workflow import VIRTUAL_NODES, node_rects, ui_to_api
from tests.node_registry import declared_node_ids

REPO = Path(__file__).resolve().parents[1]
WF = REPO / "workflows"
DATASETS = ["syn_ms1m", "syn_mpie", "syn_vggface2", "syn_casia"]
EXAMPLES = ["train_and_verify", "example_align_and_csim", "example_stg_two_faces", "example_age_shifter"]
NAMES = [*DATASETS, *EXAMPLES]
SCHEMAS = json.loads((REPO / "tests" / "data" / "workflow_object_info.json").read_text())


def _builder():
    spec = importlib.util.spec_from_file_location("build_workflows", WF / "build_workflows.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("name", NAMES)
def test_ui_file_and_api_twin_agree(name):
    ui = json.loads((WF / f"{name}.json").read_text())
    api = load_api_workflow(json.loads((WF / "api" / f"{name}.json").read_text()))
    assert ui_to_api(ui, SCHEMAS) == api
    # the committed files are what the builder makes (no hand edits that drift from it)
    assert _builder().api_twin(name) == api


@pytest.mark.parametrize("name", NAMES)
def test_every_node_is_known_and_every_seed_is_fixed(name):
    ui = json.loads((WF / f"{name}.json").read_text())
    fdta = set(declared_node_ids())
    for node in ui["nodes"]:
        assert node["type"] in SCHEMAS or node["type"] in VIRTUAL_NODES
        if node["type"].startswith("FDTA"):
            assert node["type"] in fdta
        # the editor's "control after generate" value, when present, never randomises
        assert "randomize" not in node.get("widgets_values", [])


@pytest.mark.parametrize("name", NAMES)
def test_no_secret_and_no_absolute_path_in_shipped_files(name):
    for path in (WF / f"{name}.json", WF / "api" / f"{name}.json"):
        text = path.read_text()
        assert not re.search(r"sk-[A-Za-z0-9]{8,}", text), path
        assert not re.search(r'"(/home|/root|/Users|[A-Z]:\\\\)', text), path
        assert '"api_key"' not in text


@pytest.mark.parametrize("name", DATASETS)
def test_runner_patches_the_shipped_graph(name):
    api = json.loads((WF / "api" / f"{name}.json").read_text())
    chunk = plan_chunks(10_000, 100)[37]
    p = patch_workflow(api, chunk, 5)
    spec = next(n for n in p.values() if n["class_type"] == "FDTAAttributeSpec")["inputs"]
    writer = next(n for n in p.values() if n["class_type"] == "FDTADatasetWriter")["inputs"]
    assert (spec["identity_start"], spec["identity_count"], spec["seed"]) == (3700, 100, 5)
    # the runner patches one node: the writer follows the range the faceset carries from the spec
    assert (writer["identity_start"], writer["identity_count"], writer["overwrite"]) == (-1, 0, False)
    assert api == json.loads((WF / "api" / f"{name}.json").read_text())
    assert all(
        n["inputs"]["seed"] == 5
        for n in p.values()
        if n["class_type"].startswith("FDTA") and "seed" in n["inputs"]
    )


def test_control_image_is_shipped():
    from PIL import Image

    img = Image.open(WF / "inputs" / "fdta_face_edges.png")
    assert img.size == (512, 512) and img.mode == "RGB"


@pytest.mark.parametrize("name", DATASETS)
def test_training_group_is_bypassed_and_one_toggle_trains_after_the_writer(name):
    """The data-set workflows end in a bypassed group: launcher after the writer, verify after it."""
    ui = json.loads((WF / f"{name}.json").read_text())
    by_type = {n["type"]: n for n in ui["nodes"]}
    launcher, verify = by_type["FDTATrainerLauncher"], by_type["FDTAVerify"]
    assert launcher["mode"] == verify["mode"] == 4  # bypassed by default: the runner never trains
    assert all(n["mode"] == 0 for n in ui["nodes"] if n["type"] not in ("FDTATrainerLauncher", "FDTAVerify"))
    assert sum(n["mode"] == 4 for n in ui["nodes"]) == 2
    group = next(g for g in ui["groups"] if "Train" in g["title"])
    x, y, w, h = group["bounding"]
    for n in (launcher, verify):  # the group frames both nodes, so selecting it selects them
        assert x <= n["pos"][0] and n["pos"][0] + n["size"][0] <= x + w
        assert y <= n["pos"][1] and n["pos"][1] + n["size"][1] <= y + h
    api = ui_to_api(ui, SCHEMAS)
    assert not any(n["class_type"] in ("FDTATrainerLauncher", "FDTAVerify") for n in api.values())
    # the toggle: the editor sets the group's nodes to mode 0
    for n in ui["nodes"]:
        n["mode"] = 0
    full = ui_to_api(ui, SCHEMAS)
    writer = next(k for k, n in full.items() if n["class_type"] == "FDTADatasetWriter")
    lk = next(k for k, n in full.items() if n["class_type"] == "FDTATrainerLauncher")
    vk = next(k for k, n in full.items() if n["class_type"] == "FDTAVerify")
    assert full[lk]["inputs"]["dataset"] == [writer, 0]
    assert full[vk]["inputs"]["model"] == [lk, 0]
    # the paper's model: LResNet50E-IR (IResNet-50) with ArcFace
    assert (full[lk]["inputs"]["network"], full[lk]["inputs"]["loss"]) == ("r50", "arcface")
    bins = full[vk]["inputs"]["bins"].splitlines()
    assert [b.rsplit("/", 1)[1] for b in bins] == [
        "lfw.bin",
        "cfp_fp.bin",
        "cplfw.bin",
        "agedb_30.bin",
        "calfw.bin",
    ]


def test_train_and_verify_workflow():
    ui = json.loads((WF / "train_and_verify.json").read_text())
    api = ui_to_api(ui, SCHEMAS)
    assert sorted(n["class_type"] for n in api.values()) == ["FDTATrainerLauncher", "FDTAVerify"]
    launcher = next(n for n in api.values() if n["class_type"] == "FDTATrainerLauncher")["inputs"]
    assert "dataset" not in launcher and launcher["dataset_dir"] == "fdta/syn_ms1m"
    assert (launcher["preset"], launcher["network"], launcher["loss"]) == ("synthetic", "r50", "arcface")
    for n in ui["nodes"]:
        n["mode"] = 0
    full = ui_to_api(ui, SCHEMAS)
    merge = next(k for k, n in full.items() if n["class_type"] == "FDTADatasetMerge")
    assert full[merge]["inputs"]["renumber"] is True
    assert next(n for n in full.values() if n["class_type"] == "FDTATrainerLauncher")["inputs"][
        "dataset"
    ] == [
        merge,
        0,
    ]


def test_syn_mpie_uses_one_subject_per_identity_and_every_cell():
    api = json.loads((WF / "api" / "syn_mpie.json").read_text())
    mixer = next(n for n in api.values() if n["class_type"] == "FDTASTGMixer")["inputs"]
    assert (mixer["style_policy"], mixer["images_per_identity"]) == ("grid_subject", 0)


@pytest.mark.parametrize("name", DATASETS)
def test_acg_draws_one_control_map_per_identity(name):
    """Issue 17: the shipped graphs give each identity its own drawn map (FDTAControlMaps on the same plan
    as the sampler, per_identity, parameters into provenance), with the ControlNet stopped early enough
    that prompts still draw texture, hair and age (docs/acg.md says why)."""
    api = json.loads((WF / "api" / f"{name}.json").read_text())
    acg = next(n for n in api.values() if n["class_type"] == "FDTAACGSampler")["inputs"]
    maps_id = acg["control_images"][0]
    assert api[maps_id]["class_type"] == "FDTAControlMaps"
    assert acg["control_parameters"] == [maps_id, 2]
    assert api[maps_id]["inputs"]["plan"] == acg["plan"]
    opts = api[acg["options"][0]]["inputs"]
    assert opts["control_assignment"] == "per_identity" and opts["prefer"] == "farthest"
    assert opts["check_expression"] and opts["check_pose"]
    assert acg["strength"] <= 0.7 and acg["end_percent"] <= 0.6
    assert not any(n["class_type"] == "LoadImage" for n in api.values())


# ------------------------------------------------------------------ templates that read well (issue 19)
def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _inside(r, box) -> bool:
    return box[0] <= r[0] and r[2] <= box[2] and box[1] <= r[1] and r[3] <= box[3]


@pytest.mark.parametrize("name", NAMES)
def test_no_two_nodes_overlap_and_every_stage_is_a_group_with_a_note(name):
    """Node rectangles (title bar included) never overlap; groups never overlap; each node lies in
    exactly one group, and each group holds exactly one note saying what to tune."""
    ui = json.loads((WF / f"{name}.json").read_text())
    rects = node_rects(ui)
    ids = sorted(rects)
    for i, a in enumerate(ids):
        for b in ids[i + 1 :]:
            assert not _overlap(rects[a], rects[b]), f"{name}: nodes {a} and {b} overlap"
    boxes = [(g["title"], (x, y, x + w, y + h)) for g in ui["groups"] for x, y, w, h in [g["bounding"]]]
    for i, (ta, a) in enumerate(boxes):
        for tb, b in boxes[i + 1 :]:
            assert not _overlap(a, b), f"{name}: groups {ta!r} and {tb!r} overlap"
    assert len(boxes) >= 2 and all(t.strip() for t, _ in boxes)
    by_id = {n["id"]: n for n in ui["nodes"]}
    for nid, r in rects.items():
        homes = [t for t, box in boxes if _inside(r, box)]
        assert len(homes) == 1, f"{name}: node {nid} ({by_id[nid]['type']}) lies in {homes}"
    for title, box in boxes:
        notes = [by_id[n] for n, r in rects.items() if _inside(r, box) and by_id[n]["type"] == "Note"]
        assert len(notes) == 1, f"{name}: group {title!r} has {len(notes)} notes"
        text = notes[0]["widgets_values"][0]
        assert len(text) > 40 and any(w in text for w in ("tune", "change", "Ctrl+B")), text
        w, h = notes[0]["size"]  # room for every line at 8 px a character and 20 px a line
        assert h >= 20 * -(-len(text) * 8 // (w - 20)), f"{name}: the note of {title!r} is too short"


@pytest.mark.parametrize("name", NAMES)
def test_every_workflow_has_a_current_thumbnail(name):
    """ComfyUI's template browser (frontend 1.27) shows ``<stem>.jpg`` beside each custom-node template;
    it is the picture the builder draws from the JSON (compared loosely: JPEG and font rasterising may
    differ by a few levels between Pillow builds)."""
    from PIL import Image

    from fdta_core.workflow_picture import SIZE

    path = WF / f"{name}.jpg"
    img = Image.open(path)
    assert img.format == "JPEG" and img.size == SIZE
    ui = json.loads((WF / f"{name}.json").read_text())
    fresh = _builder().thumbnail(name, ui).convert("RGB")
    import numpy as np

    diff = np.abs(np.asarray(img.convert("RGB"), np.int16) - np.asarray(fresh, np.int16)).mean()
    assert diff < 4.0, f"{path.name} is stale (mean difference {diff:.1f}): rebuild the workflows"
    # a picture, not a blank: the groups' colours and the header are there
    assert np.asarray(fresh).std() > 20


def test_every_json_in_the_template_folder_is_a_shipped_workflow():
    """ComfyUI lists every workflows/*.json as a template of this pack: each is one the builder makes."""
    assert sorted(p.stem for p in WF.glob("*.json")) == sorted(NAMES)
    assert sorted(p.stem for p in WF.glob("*.jpg")) == sorted(NAMES)


def test_examples_say_what_to_change_and_run_one_stage():
    stages = {
        "example_align_and_csim": {"FDTAAlignFaces", "FDTACSIMFilter"},
        "example_stg_two_faces": {"FDTAAlignFaces", "FDTAReferenceBank", "FDTASTGMixer"},
        "example_age_shifter": {"FDTAAlignFaces", "FDTAAgeShifter"},
    }
    for name, want in stages.items():
        api = json.loads((WF / "api" / f"{name}.json").read_text())
        fdta = {n["class_type"] for n in api.values() if n["class_type"].startswith("FDTA")}
        assert want <= fdta and "FDTAACGSampler" not in fdta and "FDTADatasetWriter" not in fdta
        assert any(n["class_type"] == "LoadImage" for n in api.values())
