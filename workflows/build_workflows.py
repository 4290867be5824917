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
from typing import Any, NamedTuple

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from fdta_core.prompts.spec import default_spec_text  # noqa: E402
from fdta_core.workflow import MODE_BYPASSED, Stage, api_to_ui  # noqa: E402
from fdta_core.workflow_picture import render_workflow  # noqa: E402

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
    """STG (reference bank + mixer), CSIM filter and dataset writer, shared by every data set. The
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


class DataSet(NamedTuple):
    """One shipped data-set recipe: the real reference subjects that give the styles, how many styles per
    identity, and (optionally) the age stage; everything else is the shared pipeline."""

    title: str
    slug: str
    bank_path: str
    bank_title: str
    policy: str
    images_per_identity: int
    stg_title: str
    min_images: int
    tags_csv: str = ""
    #: ``(ages, low, high, count)`` of the age shifter (range mode), or None for no age stage.
    ages: tuple[str, int, int, int] | None = None
    blurb: str = ""


DATASETS: dict[str, DataSet] = {
    "syn_ms1m": DataSet(
        "Syn-MS1M", "syn_ms1m", "fdta/ms1m_references", "Real reference faces (one sub-folder per subject)",
        "subject", 50, "STG: identity of the ACG face, style of a real face", 10, ages=("20, 45, 70", 20, 70, 1),
        blurb="10K identities x 100 images: 50 styles of one real MS1M subject each, every one aged once (20-70)",
    ),
    "syn_mpie": DataSet(
        "Syn-MPIE", "syn_mpie", "fdta/multipie_references", "Tagged references (subject, yaw, lighting, expression)",
        "grid_subject", 0, "STG: 13 yaws x 7 lightings x 2 expressions of one real subject", 20,
        tags_csv="fdta/multipie_references/tags.csv",
        blurb="182 images per identity: 13 yaws x 7 lightings x 2 expressions of one tagged Multi-PIE subject",
    ),
    "syn_vggface2": DataSet(
        "Syn-VGGFace2", "syn_vggface2", "fdta/vggface2_references",
        "Real reference faces (VGGFace2 layout: one sub-folder per subject)", "subject", 60,
        "STG: identity of the ACG face, styles of one real subject", 20, ages=("10, 45, 80", 10, 80, 2),
        blurb="180 images per identity: 60 styles of one real VGGFace2 subject, each aged twice (10-80)",
    ),
    "syn_casia": DataSet(
        "Syn-CASIA", "syn_casia", "fdta/casia_references",
        "Real reference faces (CASIA-WebFace layout: one sub-folder per subject)", "subject", 50,
        "STG: identity of the ACG face, styles of one real subject", 10,
        blurb="About 10K identities x 50 styles of one real CASIA-WebFace subject each (0.5M images)",
    ),
}  # fmt: skip


def dataset_graph(ds: DataSet) -> dict[str, dict[str, Any]]:
    """The whole pipeline of one data set: attributes -> ACG -> STG (-> age) -> CSIM -> writer. With an
    age stage, the STG images are aged (originals kept) before the CSIM filter."""
    g = _style_filter_write(
        _acg_front(ds.title, ds.slug),
        bank_path=ds.bank_path,
        tags_csv=ds.tags_csv,
        bank_title=ds.bank_title,
        policy=ds.policy,
        images_per_identity=ds.images_per_identity,
        stg_title=ds.stg_title,
        csim_input=["12", 0] if ds.ages else ["10", 0],
        min_images=ds.min_images,
        output_name=f"fdta/{ds.slug}",
    )
    if ds.ages:
        ages, low, high, count = ds.ages
        g["11"] = {
            "class_type": "FDTAAgeLoader",
            "inputs": {"model_name": SAM, "device": "auto", "precision": "auto"},
        }
        g["12"] = {
            "class_type": "FDTAAgeShifter",
            "inputs": {"faceset": ["10", 0], "age_model": ["11", 0], "mode": "range", "ages": ages,
                       "age_low": low, "age_high": high, "count": count, "sampling": "random", "seed": RUN_SEED,
                       "base_age": 30, "keep_originals": True, "batch_size": 0},
            "_meta": {"title": "Age: each styled face at random ages"},
        }  # fmt: skip
    return g


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


PHOTO_1, PHOTO_2 = "fdta_your_photo_1.png", "fdta_your_photo_2.png"


def _face_loader(nid: str = "4") -> dict[str, dict[str, Any]]:
    return {
        nid: {
            "class_type": "FDTAFaceModelLoader",
            "inputs": {"pack": PACK, "provider": "auto", "det_size": 640, "det_threshold": 0.5},
        }
    }


def _align(image: list[Any], models: list[Any], *, one_identity: bool, title: str) -> dict[str, Any]:
    return {
        "class_type": "FDTAAlignFaces",
        "inputs": {"image": image, "face_models": models, "min_face_size": 32, "assume_aligned_112": True,
                   "identity_start": 0, "one_identity": one_identity},
        "_meta": {"title": title},
    }  # fmt: skip


def _photo(image: str, title: str) -> dict[str, Any]:
    return {"class_type": "LoadImage", "inputs": {"image": image}, "_meta": {"title": title}}


def _preview(src: list[Any], title: str) -> dict[str, Any]:
    return {"class_type": "PreviewImage", "inputs": {"images": src}, "_meta": {"title": title}}


def example_align_and_csim() -> dict[str, dict[str, Any]]:
    """Two photos of one person -> aligned 112x112 faces -> the ArcFace CSIM of each to the first."""
    return {
        "1": _photo(PHOTO_1, "Your photo 1 (the reference)"),
        "2": _photo(PHOTO_2, "Your photo 2"),
        "3": {"class_type": "ImageBatch", "inputs": {"image1": ["1", 0], "image2": ["2", 0]}},
        **_face_loader(),
        "5": _align(
            ["3", 0], ["4", 0], one_identity=True, title="Align: one identity, the first photo is its source"
        ),
        "6": {
            "class_type": "FDTACSIMFilter",
            "inputs": {
                "faceset": ["5", 0],
                "face_models": ["4", 0],
                "threshold": 0.3,
                "reference": "source",
                "min_images_per_identity": 0,
                "batch_size": 32,
                "sheet_identities": 8,
                "leak_threshold": 0.3,
            },
            "_meta": {"title": "CSIM of each photo to photo 1"},
        },  # fmt: skip
        "7": _preview(["5", 1], "Aligned faces"),
        "8": _preview(["6", 1], "CSIM contact sheet"),
        "9": _preview(["6", 3], "CSIM histogram"),
    }


def example_stg_two_faces() -> dict[str, dict[str, Any]]:
    """The identity of one face in the pose, light and expression of another (the STG mixer alone)."""
    return {
        "1": _photo(PHOTO_1, "Identity: the face to keep"),
        "2": _photo(PHOTO_2, "Style: the face whose pose and light to borrow"),
        **_face_loader(),
        "5": _align(["1", 0], ["4", 0], one_identity=False, title="Align the identity face"),
        "6": {
            "class_type": "FDTAReferenceBank",
            "inputs": {
                "source": "images",
                "path": "",
                "max_subjects": 0,
                "max_per_subject": 0,
                "first_subject": 0,
                "tags_csv": "",
                "images": ["2", 0],
                "face_models": ["4", 0],
            },
            "_meta": {"title": "Style reference (aligned with the face models)"},
        },  # fmt: skip
        "7": {"class_type": "FDTASTGLoader", "inputs": {"model_name": STG}},
        "8": {
            "class_type": "FDTASTGMixer",
            "inputs": {
                "stg_model": ["7", 0],
                "source_faces": ["5", 0],
                "reference_bank": ["6", 0],
                "style_policy": "random",
                "images_per_identity": 4,
                "seed": RUN_SEED,
                "steps": 50,
                "eta": 1.0,
                "batch_size": 16,
                "precision": "auto",
                "sampler": "ddim",
            },
            "_meta": {"title": "STG: identity of photo 1, style of photo 2"},
        },  # fmt: skip
        "9": _preview(["8", 1], "Source, reference and styled faces"),
    }


def example_age_shifter() -> dict[str, dict[str, Any]]:
    """One face at three ages with SAM (the age stage alone)."""
    return {
        "1": _photo(PHOTO_1, "Your photo"),
        **_face_loader(),
        "5": _align(["1", 0], ["4", 0], one_identity=False, title="Align the face"),
        "6": {
            "class_type": "FDTAAgeLoader",
            "inputs": {"model_name": SAM, "device": "auto", "precision": "auto"},
        },
        "7": {
            "class_type": "FDTAAgeShifter",
            "inputs": {
                "faceset": ["5", 0],
                "age_model": ["6", 0],
                "mode": "list",
                "ages": "20, 45, 70",
                "age_low": 20,
                "age_high": 70,
                "count": 1,
                "sampling": "even",
                "seed": RUN_SEED,
                "base_age": 30,
                "keep_originals": True,
                "batch_size": 0,
            },
            "_meta": {"title": "Age: the face at 20, 45 and 70"},
        },  # fmt: skip
        "8": _preview(["7", 1], "Original and aged faces"),
    }


#: name -> the full graph (every node, including those bypassed in the editor file).
WORKFLOWS = {
    **{
        name: (lambda name=name: with_training_group(dataset_graph(DATASETS[name]), name))
        for name in DATASETS
    },
    "train_and_verify": train_and_verify,
    "example_align_and_csim": example_align_and_csim,
    "example_stg_two_faces": example_stg_two_faces,
    "example_age_shifter": example_age_shifter,
}

#: What the template browser's picture says under each graph's name.
HEADLINES = {
    **{n: (f"{d.title}: a synthetic face-recognition data set", d.blurb) for n, d in DATASETS.items()},
    "train_and_verify": (
        "Train and verify",
        "IResNet-50 + ArcFace on a written data set; FDTA Table 1 benchmarks",
    ),
    "example_align_and_csim": (
        "Align and CSIM",
        "Your own photos: aligned faces and their ArcFace similarity",
    ),
    "example_stg_two_faces": ("STG on two faces", "The identity of one photo in the style of another"),
    "example_age_shifter": ("Age shifter", "One face at 20, 45 and 70 (SAM)"),
}

BLUE, GREEN, YELLOW, PURPLE, CYAN, BROWN, PALE, OFF = (
    "#3f789e", "#8A8", "#b58b2a", "#a1309b", "#8AA", "#b06634", "#88A", "#8a6d3b"
)  # fmt: skip

#: Notes of the data-set stages: what to tune in each.
NOTE_ATTRIBUTES = (
    "What to tune: the population in the spec (fields, proportions, age range) and identity_count, the "
    "identities of one queue. fdta run sets identity_start, identity_count and seed per chunk. For richer "
    "prompts switch on use_llm (the key comes from OPENAI_API_KEY, never from the workflow)."
)
NOTE_ACG = (
    "What to tune: on the sampler, steps, cfg, the ControlNet's strength and end_percent, candidates per "
    "identity. On ACG Options: retries, age_tolerance and the uniqueness / real-person thresholds; set "
    "control_preprocess to canny when Load Image holds face photos instead of the shipped edge map. "
    "'ACG candidates' shows every candidate: green chosen, red rejected with the reason."
)
NOTE_STG = (
    "What to tune: the reference folder (path, under ComfyUI's input folder), images_per_identity, steps "
    "(DDIM 50 as DCFace; dpmpp_2m or unipc need 12-16) and batch_size for your GPU memory."
)
NOTE_AGE = "What to tune: the age range (age_low, age_high) and count, the aged copies of every styled face."
NOTE_CSIM = (
    "What to tune: threshold (styled images of one identity usually reach 0.5-0.65) and "
    "min_images_per_identity; the sheet shows each kept and dropped face with its CSIM."
)
NOTE_WRITE = (
    "What to tune: output_name (a folder under ComfyUI's output folder). Each queue writes one chunk; "
    "fdta run queues them all, resumes, and merges."
)
NOTE_TRAIN = (
    "Off until the data set is written: select the group and press Ctrl+B. Tune preset, network, loss "
    "and gpus on the launcher; queue again to see training state and the verification table."
)


def dataset_stages(name: str) -> list[Stage]:
    ds = DATASETS[name]
    stages = [
        Stage("1. Attributes: who the identities are", ["4", "5"], NOTE_ATTRIBUTES, BLUE),
        Stage("2. ACG: one source face per identity", ["1", "2", "3", "6", "15", "7", "20"], NOTE_ACG, GREEN),
        Stage("3. STG: styles of real faces", ["8", "9", "10", "21"], NOTE_STG, PURPLE),
    ]
    if ds.ages:
        stages.append(Stage("4. Age", ["11", "12"], NOTE_AGE, CYAN))
    n = len(stages) + 1
    stages += [
        Stage(f"{n}. CSIM filter", ["13", "22"], NOTE_CSIM, YELLOW),
        Stage(f"{n + 1}. Write the data set", ["14"], NOTE_WRITE, BROWN),
        Stage(TRAIN_GROUP, ["30", "31"], NOTE_TRAIN, OFF, bypassed=True),
    ]
    return stages


#: name -> the stages of its editor file: one titled group each, with a note of what to tune.
STAGES: dict[str, list[Stage]] = {
    **{n: dataset_stages(n) for n in DATASETS},
    "train_and_verify": [
        Stage("Combine independent data sets (optional)", ["1"],
              "Off by default (Ctrl+B on the group to enable): more_inputs lists the data sets to join; "
              "renumber keeps their identities apart.", OFF, bypassed=True),
        Stage("Train", ["2"], "What to change: dataset_dir (or connect the merge), run_name, preset, network, "
              "loss, gpus. Queue again to see the run's state; action=stop checkpoints and exits.", GREEN),
        Stage("Verify", ["3"], "What to change: bins, the benchmark .bin files (under the input or output "
              "folder). Queue when training has finished: the table follows FDTA Table 1.", YELLOW),
    ],
    "example_align_and_csim": [
        Stage("1. Your photos", ["1", "2", "3"], "What to change: pick two photos of one person in the Load "
              "Image nodes (chain more ImageBatch nodes for more). Photos of two people show a low CSIM.", BLUE),
        Stage("2. Align", ["4", "5", "7"], "What to tune: min_face_size drops tiny faces; pack and provider choose "
              "the insightface models (models/insightface/models/<pack>).", GREEN),
        Stage("3. CSIM", ["6", "8", "9"], "What to tune: threshold. The same person usually scores above 0.3 "
              "(DCFace's same-identity line); the sheet crosses out photos below it.", YELLOW),
    ],
    "example_stg_two_faces": [
        Stage("1. Two faces", ["1", "2"], "What to change: photo 1 gives the identity, photo 2 the pose, light "
              "and expression. Any photo with one clear face works; they are aligned for you.", BLUE),
        Stage("2. Faces aligned", ["4", "5", "6"], "What to tune: nothing usually; the face models find and "
              "align both faces (min_face_size drops tiny ones).", GREEN),
        Stage("3. STG mixer", ["7", "8", "9"], "What to tune: images_per_identity, seed (other noise), steps "
              "(DDIM 50; dpmpp_2m 12-16). The mixer checkpoint goes in models/fdta/stg.", PURPLE),
    ],
    "example_age_shifter": [
        Stage("1. Your photo", ["1", "4", "5"], "What to change: load a photo with one clear face; it is "
              "aligned to 112x112 as the pipeline's faces are.", BLUE),
        Stage("2. Age shifter", ["6", "7", "8"], "What to tune: ages (a list in list mode), or mode range with "
              "age_low, age_high and count. The SAM model goes in models/fdta/age.", CYAN),
    ],
}  # fmt: skip


def bypassed(name: str) -> set[str]:
    return {nid for st in STAGES.get(name, []) if st.bypassed for nid in st.nodes}


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
    """The editor file: laid out stage by stage, one titled group and one note per stage."""
    return api_to_ui(
        WORKFLOWS[name](),
        info,
        modes={nid: MODE_BYPASSED for nid in bypassed(name)},
        stages=STAGES[name],
    )


def thumbnail(name: str, ui: dict[str, Any]):
    """The template browser's picture of ``name`` (a JPEG beside the JSON, same stem)."""
    return render_workflow(ui, *HEADLINES[name])


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
        ui = ui_workflow(name, info)
        (HERE / f"{name}.json").write_text(json.dumps(ui, indent=1) + "\n")
        thumbnail(name, ui).save(HERE / f"{name}.jpg", quality=90, optimize=False)
        for node in build().values():
            used[node["class_type"]] = info[node["class_type"]]
    snapshot = REPO / "tests" / "data" / "workflow_object_info.json"
    snapshot.parent.mkdir(exist_ok=True)
    snapshot.write_text(json.dumps(dict(sorted(used.items())), indent=1) + "\n")
    draw_face_edges().save(HERE / "inputs" / EDGE_IMAGE)
    print(f"wrote {len(WORKFLOWS)} workflows, their API twins, thumbnails and {snapshot.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
