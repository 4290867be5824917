"""Build the shipped workflows.

The graphs are defined here once, as API-format prompts, and written as

* ``workflows/api/<name>.json``: the API twin that ``fdta run`` queues;
* ``workflows/<name>.json``: the editor (UI-format) file users open in ComfyUI, converted with the node
  schemas of a real ComfyUI (``fdta_core.workflow.api_to_ui``);
* ``tests/data/workflow_object_info.json``: those schemas, for the CI test that checks the twins agree;
* ``workflows/inputs/fdta_face_edges.png``: a drawn (not photographed) frontal-face edge map, an example
  control image (the shipped graphs draw one map per identity with ``FDTAControlMaps`` instead).

Usage: ``python workflows/build_workflows.py --object-info http://127.0.0.1:8188`` (a running ComfyUI
with this pack) or ``--object-info FILE.json``. Re-run after changing a graph or a node's inputs.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from fdta_core.prompts.spec import default_spec_text  # noqa: E402
from fdta_core.workflow import MODE_BYPASSED, api_to_ui  # noqa: E402

EDGE_IMAGE = "fdta_face_edges.png"
SD15 = "v1-5-pruned-emaonly.safetensors"
CANNY = "control_v11p_sd15_canny.pth"
STG = "dcface_5x5.ckpt"
SAM = "sam_ffhq_aging.pt"
PACK = "buffalo_l"
RUN_SEED = 1
CHUNK = 100
#: The five benchmarks of FDTA Table 1, under ComfyUI's input (or output) folder.
BENCHMARKS = ("lfw", "cfp_fp", "cplfw", "agedb_30", "calfw")
BENCH_DIR = "fdta/benchmarks"
TRAIN_GROUP = "Train and verify when the run has finished (bypassed: select the group, Ctrl+B to enable)"


def _acg_front(title: str, slug: str) -> dict[str, dict[str, Any]]:
    """Nodes shared by both data sets: plan, ACG source faces, face models. The ACG keeps the run's
    identities unique through ``identity_index`` (fdta run points it at RUN_DIR/identities)."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": SD15}},
        "2": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": CANNY}},
        "3": {
            "class_type": "FDTAControlMaps",
            "inputs": {"plan": ["5", 0], "format": "edges", "size": 512},
            "_meta": {"title": "Control maps: one face drawing per identity, from its attributes"},
        },
        "4": {
            "class_type": "FDTAAttributeSpec",
            "inputs": {
                "spec": default_spec_text(),
                "identity_start": 0,
                "identity_count": CHUNK,
                "seed": RUN_SEED,
                "repair": "",  # fdta run sets 'ROUND: IDS' for a chunk's repair rounds
            },
            "_meta": {"title": f"{title}: attributes of identities [start, start+count)"},
        },
        "5": {
            "class_type": "FDTAAttributePrompt",
            "inputs": {
                "plan": ["4", 0],
                "use_llm": False,
                "base_url": "",
                "model": "gpt-4o-mini",
                "temperature": 0.7,
                "batch_size": 8,
                "concurrency": 1,
                "failure_policy": "fallback",
                "use_cache": True,
                "api_key_env": "OPENAI_API_KEY",
            },
        },  # fmt: skip
        "6": {
            "class_type": "FDTAFaceModelLoader",
            "inputs": {"pack": PACK, "provider": "auto", "det_size": 640, "det_threshold": 0.5},
        },
        "7": {
            "class_type": "FDTAACGSampler",
            "inputs": {
                "model": ["1", 0],
                "clip": ["1", 1],
                "vae": ["1", 2],
                "control_net": ["2", 0],
                "plan": ["5", 0],
                "control_images": ["3", 0],
                "control_parameters": ["3", 2],
                "seed": RUN_SEED,
                "steps": 25,
                "cfg": 7.0,
                "sampler_name": "dpmpp_2m",
                "scheduler": "karras",
                # drawn maps fix the layout early; the prompt alone draws texture, hair and age (docs/acg.md)
                "strength": 0.6,
                "start_percent": 0.0,
                "end_percent": 0.55,
                "width": 512,
                "height": 512,
                "candidates": 4,
                "batch_size": 8,
                "face_models": ["6", 0],
                "options": ["15", 0],
                "identity_index": f"fdta/{slug}_identity_index",
            },
            "_meta": {"title": "ACG: one source face per identity"},
        },  # fmt: skip
        "15": {
            "class_type": "FDTAACGOptions",
            "inputs": {
                "control_preprocess": "none",  # drawn maps are used as drawn
                "canny_low": 100,
                "canny_high": 200,
                "edge_blur": 3,
                "control_assignment": "per_identity",  # map i belongs to identity i
                "retries": 2,
                "on_failure": "skip",
                "min_det_score": 0.5,
                "check_gender": True,
                "check_age": True,
                "age_tolerance": 10.0,
                "uniqueness_threshold": 0.3,
                "real_person_threshold": 0.3,
                "real_sets": "",
                "prefer": "farthest",
                "check_expression": True,
                "smile_ratio": 0.95,
                "expression_margin": 0.04,
                "check_pose": True,
                "max_yaw": 20.0,
                "max_roll": 20.0,
                "max_pitch_offset": 0.15,
            },
            "_meta": {"title": "ACG options: selection criteria, retries, edges"},
        },  # fmt: skip
        "8": {"class_type": "FDTASTGLoader", "inputs": {"model_name": STG}},
        "20": {
            "class_type": "PreviewImage",
            "inputs": {"images": ["7", 2]},
            "_meta": {"title": "ACG candidates"},
        },
        "21": {
            "class_type": "PreviewImage",
            "inputs": {"images": ["3", 1]},
            "_meta": {"title": "Control maps (first 64)"},
        },
    }


def _style_filter_write(
    g: dict[str, dict[str, Any]],
    *,
    bank_path: str,
    tags_csv: str,
    bank_title: str,
    policy: str,
    images_per_identity: int,
    stg_title: str,
    csim_input: list[Any],
    min_images: int,
    output_name: str,
) -> dict[str, dict[str, Any]]:
    """STG (reference bank + mixer), CSIM filter and dataset writer, shared by both data sets. The
    reference bank also feeds the ACG (no identity may resemble a reference subject) and the CSIM filter
    (styled faces that took on their reference subject's identity are dropped)."""
    g["7"]["inputs"]["reference_bank"] = ["9", 0]
    g.update(
        {
            "9": {
                "class_type": "FDTAReferenceBank",
                "inputs": {
                    "source": "folder",
                    "path": bank_path,
                    "max_subjects": 0,
                    "max_per_subject": 0,
                    "first_subject": 0,
                    "tags_csv": tags_csv,
                    "face_models": ["6", 0],
                },
                "_meta": {"title": bank_title},
            },  # fmt: skip
            "10": {
                "class_type": "FDTASTGMixer",
                "inputs": {
                    "stg_model": ["8", 0],
                    "source_faces": ["7", 0],
                    "reference_bank": ["9", 0],
                    "style_policy": policy,
                    "images_per_identity": images_per_identity,
                    "seed": RUN_SEED,
                    "steps": 50,
                    "eta": 1.0,
                    "batch_size": 16,
                    "precision": "auto",
                    "sampler": "ddim",
                },
                "_meta": {"title": stg_title},
            },  # fmt: skip
            "13": {
                "class_type": "FDTACSIMFilter",
                "inputs": {
                    "faceset": csim_input,
                    "face_models": ["6", 0],
                    "threshold": 0.3,
                    "reference": "source",
                    "min_images_per_identity": min_images,
                    "batch_size": 64,
                    "sheet_identities": 8,
                    "leak_threshold": 0.3,
                    "reference_bank": ["9", 0],
                },
                "_meta": {"title": "CSIM filter: drop images that lost the identity"},
            },  # fmt: skip
            "14": {
                "class_type": "FDTADatasetWriter",
                "inputs": {
                    "faceset": ["13", 0],
                    "output_name": output_name,
                    # -1 / 0: the chunk's range comes with the faceset from the spec (node 4), so the
                    # writer can never commit a chunk under a range other than the one planned
                    "identity_start": -1,
                    "identity_count": 0,
                    "overwrite": False,
                },
            },  # fmt: skip
            "21": {
                "class_type": "PreviewImage",
                "inputs": {"images": ["10", 1]},
                "_meta": {"title": "STG styles"},
            },
            "22": {"class_type": "PreviewImage", "inputs": {"images": ["13", 1]}, "_meta": {"title": "CSIM"}},
        }
    )
    return g


def syn_ms1m() -> dict[str, dict[str, Any]]:
    """Syn-MS1M: 10K identities x 100 images; each identity takes the styles of one real MS1M subject
    (50 STG images), and each of those is aged once to a random age in 20-70 (100 images before CSIM)."""
    g = _style_filter_write(
        _acg_front("Syn-MS1M", "syn_ms1m"),
        bank_path="fdta/ms1m_references",
        tags_csv="",
        bank_title="Real reference faces (one sub-folder per subject)",
        policy="subject",
        images_per_identity=50,
        stg_title="STG: identity of the ACG face, style of a real face",
        csim_input=["12", 0],
        min_images=10,
        output_name="fdta/syn_ms1m",
    )
    g["11"] = {
        "class_type": "FDTAAgeLoader",
        "inputs": {"model_name": SAM, "device": "auto", "precision": "auto"},
    }
    g["12"] = {
        "class_type": "FDTAAgeShifter",
        "inputs": {"faceset": ["10", 0], "age_model": ["11", 0], "mode": "range", "ages": "20, 45, 70",
                   "age_low": 20, "age_high": 70, "count": 1, "sampling": "random", "seed": RUN_SEED,
                   "base_age": 30, "keep_originals": True, "batch_size": 0},
    }  # fmt: skip
    return g


def syn_mpie() -> dict[str, dict[str, Any]]:
    """Syn-MPIE: every identity in all 13 yaws x 7 lightings x 2 expressions = 182 styles, all from one
    real tagged Multi-PIE subject per identity (tags from a CSV or folder names)."""
    return _style_filter_write(
        _acg_front("Syn-MPIE", "syn_mpie"),
        bank_path="fdta/multipie_references",
        tags_csv="fdta/multipie_references/tags.csv",
        bank_title="Tagged references (subject, yaw, lighting, expression)",
        policy="grid_subject",
        images_per_identity=0,
        stg_title="STG: 13 yaws x 7 lightings x 2 expressions of one real subject",
        csim_input=["10", 0],
        min_images=20,
        output_name="fdta/syn_mpie",
    )


def syn_vggface2() -> dict[str, dict[str, Any]]:
    """Syn-VGGFace2: each identity takes 60 styles of one real VGGFace2 subject (many images per subject,
    wide pose range), each shown at its own age and aged twice to random ages in 10-80 (wide age range):
    180 images per identity before CSIM."""
    g = _style_filter_write(
        _acg_front("Syn-VGGFace2", "syn_vggface2"),
        bank_path="fdta/vggface2_references",
        tags_csv="",
        bank_title="Real reference faces (VGGFace2 layout: one sub-folder per subject)",
        policy="subject",
        images_per_identity=60,
        stg_title="STG: identity of the ACG face, styles of one real subject",
        csim_input=["12", 0],
        min_images=20,
        output_name="fdta/syn_vggface2",
    )
    g["11"] = {
        "class_type": "FDTAAgeLoader",
        "inputs": {"model_name": SAM, "device": "auto", "precision": "auto"},
    }
    g["12"] = {
        "class_type": "FDTAAgeShifter",
        "inputs": {"faceset": ["10", 0], "age_model": ["11", 0], "mode": "range", "ages": "10, 45, 80",
                   "age_low": 10, "age_high": 80, "count": 2, "sampling": "random", "seed": RUN_SEED,
                   "base_age": 30, "keep_originals": True, "batch_size": 0},
    }  # fmt: skip
    return g


def syn_casia() -> dict[str, dict[str, Any]]:
    """Syn-CASIA: about 10K identities (CASIA-WebFace has 10,575 subjects) x 50 styles of one real
    CASIA-WebFace subject each (DCFace's 0.5M-image scale)."""
    return _style_filter_write(
        _acg_front("Syn-CASIA", "syn_casia"),
        bank_path="fdta/casia_references",
        tags_csv="",
        bank_title="Real reference faces (CASIA-WebFace layout: one sub-folder per subject)",
        policy="subject",
        images_per_identity=50,
        stg_title="STG: identity of the ACG face, styles of one real subject",
        csim_input=["10", 0],
        min_images=10,
        output_name="fdta/syn_casia",
    )


def _launcher(run_name: str, dataset: list[Any] | None, dataset_dir: str = "") -> dict[str, Any]:
    """The paper's recipe: LResNet50E-IR (IResNet-50) with its margin loss (ArcFace, s 64, m 0.5), the
    synthetic-set schedule (SGD 0.1 per 1024, 34 epochs, fp16)."""
    inputs: dict[str, Any] = {
        "action": "start_or_resume",
        "run_name": run_name,
        "preset": "synthetic",
        "dataset_dir": dataset_dir,
        "network": "r50",
        "loss": "arcface",
        "epochs": 0,
        "batch_size": 0,
        "gpus": 1,
        "device": "auto",
        "val_bins": "",
        "overrides": "{}",
    }
    if dataset is not None:
        inputs["dataset"] = dataset
    return {
        "class_type": "FDTATrainerLauncher",
        "inputs": inputs,
        "_meta": {"title": "Train IResNet-50 + ArcFace (FDTA's recipe) on the whole data set"},
    }


def _verify(run: list[Any]) -> dict[str, Any]:
    return {
        "class_type": "FDTAVerify",
        "inputs": {
            "model": run,
            "bins": "\n".join(f"{BENCH_DIR}/{b}.bin" for b in BENCHMARKS),
            "batch_size": 64,
        },
        "_meta": {"title": "Verify: FDTA Table 1 (queue again when training has finished)"},
    }


def with_training_group(g: dict[str, dict[str, Any]], name: str) -> dict[str, dict[str, Any]]:
    """The launcher after the writer (it trains on the writer's whole data set, every chunk) and
    verification of the run's model, as one group that is bypassed until the user enables it."""
    g["30"] = _launcher(f"fdta/train/{name}_r50", ["14", 0])
    g["31"] = _verify(["30", 0])
    return g


def train_and_verify() -> dict[str, dict[str, Any]]:
    """A written data set -> the trainer launcher (FDTA's recipe) -> verification on the five benchmarks
    in FDTA Table 1's layout. The merge node (bypassed) combines independent sets first when enabled."""
    return {
        "1": {
            "class_type": "FDTADatasetMerge",
            "inputs": {
                "output_name": "fdta/syn_ms1m_mpie",
                "renumber": True,
                "more_inputs": "fdta/syn_ms1m\nfdta/syn_mpie",
            },
            "_meta": {"title": "Combine Syn-MS1M and Syn-MPIE (bypassed: Ctrl+B to enable)"},
        },
        "2": _launcher("fdta/train/syn_ms1m_r50", ["1", 0], dataset_dir="fdta/syn_ms1m"),
        "3": _verify(["2", 0]),
    }


#: name -> the full graph (every node, including those bypassed in the editor file).
WORKFLOWS = {
    "syn_ms1m": lambda: with_training_group(syn_ms1m(), "syn_ms1m"),
    "syn_mpie": lambda: with_training_group(syn_mpie(), "syn_mpie"),
    "syn_vggface2": lambda: with_training_group(syn_vggface2(), "syn_vggface2"),
    "syn_casia": lambda: with_training_group(syn_casia(), "syn_casia"),
    "train_and_verify": train_and_verify,
}

#: name -> editor groups ``(title, node ids, bypassed)``.
GROUPS: dict[str, list[tuple[str, list[str], bool]]] = {
    **{n: [(TRAIN_GROUP, ["30", "31"], True)] for n in ("syn_ms1m", "syn_mpie", "syn_vggface2", "syn_casia")},
    "train_and_verify": [("Combine independent data sets (optional)", ["1"], True)],
}


def bypassed(name: str) -> set[str]:
    return {nid for _t, ids, off in GROUPS.get(name, []) for nid in ids if off}


def api_twin(name: str) -> dict[str, dict[str, Any]]:
    """What ``fdta run`` queues and what the editor exports: the graph without its bypassed nodes (links
    into them dropped, as ComfyUI's editor drops a bypassed node's output that no input can pass on)."""
    full = WORKFLOWS[name]()
    off = bypassed(name)
    out: dict[str, dict[str, Any]] = {}
    for nid, node in full.items():
        if nid in off:
            continue
        inputs = {
            k: v
            for k, v in node["inputs"].items()
            if not (isinstance(v, list) and len(v) == 2 and str(v[0]) in off)
        }
        out[nid] = {**node, "inputs": inputs}
    return out


def ui_workflow(name: str, info: dict[str, Any]) -> dict[str, Any]:
    groups = GROUPS.get(name, [])
    return api_to_ui(
        WORKFLOWS[name](),
        info,
        modes={nid: MODE_BYPASSED for nid in bypassed(name)},
        groups=[
            {"title": t, "nodes": ids, "color": "#8a6d3b" if off else "#3f789e"} for t, ids, off in groups
        ],
    )


def draw_face_edges(size: int = 512):
    """A clean frontal-face edge map (white lines on black), drawn from geometry: no real person."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), (0, 0, 0))
    d = ImageDraw.Draw(img)
    s = size / 512
    w = max(2, round(3 * s))

    def box(x0, y0, x1, y1):
        return [round(x0 * s), round(y0 * s), round(x1 * s), round(y1 * s)]

    d.ellipse(box(146, 92, 366, 402), outline="white", width=w)  # face
    d.arc(box(136, 40, 376, 250), 190, 350, fill="white", width=w)  # hairline
    for x0 in (184, 282):  # eyes, brows
        d.ellipse(box(x0, 222, x0 + 48, 246), outline="white", width=w)
        d.ellipse(box(x0 + 17, 226, x0 + 31, 242), outline="white", width=w)
        d.arc(box(x0 - 6, 196, x0 + 54, 224), 200, 340, fill="white", width=w)
    d.line(box(256, 246, 248, 306), fill="white", width=w)  # nose
    d.arc(box(232, 292, 280, 318), 20, 160, fill="white", width=w)
    d.arc(box(214, 322, 298, 352), 15, 165, fill="white", width=w)  # lips
    d.line(box(222, 336, 290, 336), fill="white", width=w)
    d.arc(box(130, 226, 156, 292), 90, 270, fill="white", width=w)  # ears
    d.arc(box(356, 226, 382, 292), 270, 90, fill="white", width=w)
    d.line(box(212, 392, 204, 470), fill="white", width=w)  # neck
    d.line(box(300, 392, 308, 470), fill="white", width=w)
    return img


def _load_object_info(src: str) -> dict[str, Any]:
    if src.startswith("http"):
        with urllib.request.urlopen(src.rstrip("/") + "/object_info", timeout=60) as r:
            return json.loads(r.read())
    return json.loads(Path(src).read_text())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--object-info", required=True, help="URL of a ComfyUI with this pack, or an object_info JSON"
    )
    args = ap.parse_args(argv)
    info = _load_object_info(args.object_info)
    (HERE / "api").mkdir(exist_ok=True)
    (HERE / "inputs").mkdir(exist_ok=True)
    used: dict[str, Any] = {}
    for name, build in WORKFLOWS.items():
        (HERE / "api" / f"{name}.json").write_text(json.dumps(api_twin(name), indent=1) + "\n")
        (HERE / f"{name}.json").write_text(json.dumps(ui_workflow(name, info), indent=1) + "\n")
        for node in build().values():
            used[node["class_type"]] = info[node["class_type"]]
    snapshot = REPO / "tests" / "data" / "workflow_object_info.json"
    snapshot.parent.mkdir(exist_ok=True)
    snapshot.write_text(json.dumps(dict(sorted(used.items())), indent=1) + "\n")
    draw_face_edges().save(HERE / "inputs" / EDGE_IMAGE)
    print(f"wrote {len(WORKFLOWS)} workflows, their API twins and {snapshot.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
