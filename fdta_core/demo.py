"""``fdta demo``: the whole pipeline in one command, on a real ComfyUI server.

Steps: find (or install) ComfyUI and make sure the pack's requirements are in its Python; put a model
for every stage into a private server folder (the real file when the models folder has it, else a tiny
random-weight model of the real architecture); start the server; run the shipped Syn-MS1M workflow for a
few identities through the ``fdta run`` code; merge; write the quality report; train a tiny IResNet for
a few steps; verify it on a ``.bin`` of pairs drawn from the new data set; stop the server (also on an
error or Ctrl-C). With tiny models this is a *plumbing* demo: the images are noise, not faces.

Everything lives under ``WORKDIR/demo/`` (default ``.fdta/demo``). Each run starts from empty run,
dataset, train and output folders there; the tiny models are kept and reused.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .comfy_server import ComfyServer, pack_root
from .errors import FDTAError
from .models_catalog import ModelFolders, workflow_models

log = logging.getLogger(__name__)

#: ComfyUI release the pack is tested with (and the oldest it supports).
COMFYUI_MIN_VERSION = (0, 3, 64)
COMFYUI_GIT_URL = "https://github.com/comfyanonymous/ComfyUI.git"
COMFYUI_GIT_REF = "v0.3.64"
#: Where the installer takes torch for ComfyUI's venv (the CPU build: the demo runs on the CPU);
#: ``FDTA_COMFY_TORCH_INDEX`` overrides it (e.g. a CUDA index for a GPU machine).
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"

OUTPUT_NAME = "fdta/demo_syn_ms1m"
TINY = {
    "ckpt": "fdta_demo_tiny_sd15.safetensors",
    "cnet": "fdta_demo_tiny_controlnet.safetensors",
    "pack": "fdta_demo_tiny",
    "stg": "fdta_demo_tiny_stg.safetensors",
    "sam": "fdta_demo_tiny_sam.pt",
}

Say = Callable[[str], None]


class DemoError(FDTAError, RuntimeError):
    """A step of the demo failed; the message names the step and where its log is."""


@dataclass
class DemoConfig:
    workdir: Path = Path(".fdta")
    comfyui_dir: Path | None = None
    comfyui_python: Path | None = None
    models_dir: Path | None = None
    identities: int = 4
    chunk_size: int = 2
    images_per_identity: int = 4
    seed: int = 1
    train_steps: int = 40
    pairs: int = 60
    install_comfyui: bool = True
    cpu: bool = True
    timeout: float = 900.0
    extra_model_paths: list[Path] = field(default_factory=list)

    @property
    def demo_dir(self) -> Path:
        return self.workdir / "demo"


# ---------------------------------------------------------------------------- ComfyUI
def comfyui_version(comfyui_dir: Path) -> tuple[int, ...] | None:
    """ComfyUI's version from ``comfyui_version.py`` (present since 0.3.x), or None."""
    f = comfyui_dir / "comfyui_version.py"
    if not f.is_file():
        return None
    for line in f.read_text().splitlines():
        if line.startswith("__version__"):
            raw = line.split("=", 1)[1].strip().strip("\"'")
            try:
                return tuple(int(p) for p in raw.split(".")[:3])
            except ValueError:
                return None
    return None


def _venv_python(venv: Path) -> Path:
    win = venv / "Scripts" / "python.exe"
    return win if win.exists() else venv / "bin" / "python"


def _check_call(cmd: Sequence[str], step: str, say: Say, cwd: Path | None = None) -> None:
    say(f"  $ {' '.join(map(str, cmd))}")
    try:
        rc = subprocess.call([str(c) for c in cmd], cwd=cwd)
    except FileNotFoundError as exc:
        raise DemoError(
            f"{step}: {exc}", fix=f"install {cmd[0]} or set COMFYUI_DIR to an existing ComfyUI."
        ) from None
    if rc != 0:
        raise DemoError(
            f"{step} failed (exit status {rc})",
            where=" ".join(map(str, cmd)),
            fix="read the output above; or install ComfyUI 0.3.64+ yourself (git clone + its venv, or "
            "comfy-cli) and set COMFYUI_DIR (and COMFYUI_PYTHON when its Python is not COMFYUI_DIR/.venv).",
        )


def install_comfyui(dest: Path, say: Say) -> tuple[Path, Path]:
    """Install ComfyUI under ``dest`` the way its README says: git clone, a venv, torch, requirements.

    Needs git and network access to GitHub, PyPI and the torch index; fails with the command that failed.
    """
    root = dest / "ComfyUI"
    venv = root / ".venv"
    marker = venv / ".fdta_demo_ok"
    # a finished install: this one's, or the CPU ComfyUI that .ci/run unpacks into .fdta/ComfyUI
    if (root / "main.py").is_file() and any((venv / m).is_file() for m in (marker.name, ".comfy_harness_ok")):
        return root, _venv_python(venv)
    say(f"installing ComfyUI {COMFYUI_GIT_REF} into {root} (git clone + venv; needs network, a few minutes)")
    if not (root / "main.py").is_file():
        if shutil.which("git") is None:
            raise DemoError(
                "ComfyUI is not installed and git is not available to fetch it",
                fix="install git, or install ComfyUI 0.3.64+ and set COMFYUI_DIR.",
            )
        dest.mkdir(parents=True, exist_ok=True)
        if root.exists():
            shutil.rmtree(root)  # an interrupted clone
        _check_call(["git", "clone", "--depth", "1", "--branch", COMFYUI_GIT_REF, COMFYUI_GIT_URL, root],
                    f"cloning ComfyUI from {COMFYUI_GIT_URL}", say)  # fmt: skip
    _check_call([sys.executable, "-m", "venv", venv], "creating ComfyUI's venv", say)
    py = _venv_python(venv)
    index = os.environ.get("FDTA_COMFY_TORCH_INDEX", TORCH_CPU_INDEX)
    _check_call([py, "-m", "pip", "install", "torch", "torchvision", "torchaudio", "--index-url", index],
                f"installing torch from {index}", say)  # fmt: skip
    _check_call(
        [py, "-m", "pip", "install", "-r", root / "requirements.txt"],
        "installing ComfyUI's requirements",
        say,
    )
    marker.touch()
    return root, py


def resolve_comfyui(cfg: DemoConfig, say: Say) -> tuple[Path, Path]:
    """``(comfyui_dir, python)``: the given/``$COMFYUI_DIR`` one, a previous install under the workdir,
    or a fresh install there."""
    from .comfy_server import comfy_python

    raw = cfg.comfyui_dir or (Path(os.environ["COMFYUI_DIR"]) if os.environ.get("COMFYUI_DIR") else None)
    if raw is not None:
        root = Path(raw).expanduser().resolve()
        if not (root / "main.py").is_file():
            raise DemoError(
                f"COMFYUI_DIR={root} has no main.py", fix="point COMFYUI_DIR at a ComfyUI checkout."
            )
        python = comfy_python(root, cfg.comfyui_python)
        if not python.exists():
            raise DemoError(
                f"no Python for ComfyUI at {python}",
                fix="set COMFYUI_PYTHON to the interpreter that runs ComfyUI (or create COMFYUI_DIR/.venv).",
            )
    elif not cfg.install_comfyui:
        raise DemoError("COMFYUI_DIR is not set", fix="set COMFYUI_DIR, or drop --no-install.")
    else:
        root, python = install_comfyui(cfg.workdir.resolve(), say)
    version = comfyui_version(root)
    if version is not None and version < COMFYUI_MIN_VERSION:
        raise DemoError(
            f"ComfyUI {'.'.join(map(str, version))} at {root} is too old",
            fix="update ComfyUI to 0.3.64 or newer (git pull).",
        )
    say(
        f"ComfyUI {'.'.join(map(str, version)) if version else '(version unknown)'} at {root}, Python {python}"
    )
    return root, python


#: A script for ComfyUI's interpreter (a child process): it prints the unmet requirement lines on its
#: stdout, which :func:`missing_requirements` reads (the library itself logs; this print is the answer).
_REQ_CHECK = r"""
import re, sys
from importlib import metadata
try:
    from packaging.requirements import Requirement
except ImportError:
    from pip._vendor.packaging.requirements import Requirement
ALIASES = {"onnxruntime": ("onnxruntime", "onnxruntime-gpu"), "onnxruntime-gpu": ("onnxruntime-gpu", "onnxruntime")}
missing = []
for line in open(sys.argv[1]):
    line = line.split("#", 1)[0].strip()
    if not line or line.startswith("-"):
        continue
    req = Requirement(line)
    if req.marker is not None and not req.marker.evaluate():
        continue
    ok = False
    for name in ALIASES.get(req.name.lower(), (req.name,)):
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        ok = ok or name != req.name or not req.specifier or req.specifier.contains(version, prereleases=True)
    if not ok:
        missing.append(line)
print("\n".join(missing))
"""


def missing_requirements(python: Path, requirements: Path) -> list[str]:
    """Lines of ``requirements`` that the interpreter ``python`` does not satisfy (markers honoured)."""
    out = subprocess.run([str(python), "-c", _REQ_CHECK, str(requirements)], capture_output=True, text=True)
    if out.returncode != 0:
        raise DemoError(
            f"could not check {requirements} with {python}: {out.stderr.strip()[-800:]}",
            fix="check that COMFYUI_PYTHON runs.",
        )
    return [m for m in out.stdout.splitlines() if m.strip()]


def ensure_pack_requirements(python: Path, pack: Path, say: Say) -> list[str]:
    """Install the pack's ``requirements.txt`` into ComfyUI's Python when something is missing (the
    README's install step); returns what was missing. ``onnxruntime`` and ``onnxruntime-gpu`` count as one."""
    req = pack / "requirements.txt"
    missing = missing_requirements(python, req)
    if missing:
        say(
            f"the pack's requirements are missing in ComfyUI's Python ({', '.join(missing)}): installing them"
        )
        _check_call([python, "-m", "pip", "install", "-r", req], "pip install -r requirements.txt", say)
    return missing


# ---------------------------------------------------------------------------- models
@dataclass
class DemoModels:
    """Which model each stage uses: real (path) or tiny, and the run overrides that follow."""

    real: dict[str, str] = field(default_factory=dict)
    tiny: list[str] = field(default_factory=list)
    sets: list[str] = field(default_factory=list)
    pack: str = "buffalo_l"
    insightface_dir: Path | None = None
    face_checks: bool = True

    @property
    def all_tiny(self) -> bool:
        return not self.real


def prepare_models(cfg: DemoConfig, server: ComfyServer, workflow: dict[str, Any], say: Say) -> DemoModels:
    """Use the real file of each stage when the models folder has it; write tiny models for the rest."""
    refs = {r.class_type: r for r in workflow_models(workflow)}
    folders = ModelFolders.discover(cfg.models_dir, cfg.extra_model_paths) if cfg.models_dir else None

    def real(cls: str, filename: str | None = None) -> Path | None:
        if folders is None or cls not in refs:
            return None
        r = refs[cls]
        return folders.find(r.folder, filename or r.value)

    out = DemoModels()
    tiny_root = server.models
    # SD 1.5 and its ControlNet go together: the tiny ControlNet only matches the tiny UNet
    ckpt, cnet = real("CheckpointLoaderSimple"), real("ControlNetLoader")
    if ckpt and cnet:
        out.real.update(sd15=str(ckpt), controlnet=str(cnet))
        out.sets += ["FDTAACGSampler.candidates=2"]
    else:
        from .testing.sd import write_random_sd_models

        if not (
            (tiny_root / "checkpoints" / TINY["ckpt"]).is_file()
            and (tiny_root / "controlnet" / TINY["cnet"]).is_file()
        ):
            say("writing a tiny random-weight SD 1.5 + ControlNet (about 0.5 GB, once)")
            write_random_sd_models(
                tiny_root, seed=7, checkpoint_name=TINY["ckpt"], controlnet_name=TINY["cnet"]
            )
        out.tiny += ["sd15", "controlnet"]
        out.sets += [
            f"CheckpointLoaderSimple.ckpt_name={TINY['ckpt']}", f"ControlNetLoader.control_net_name={TINY['cnet']}",
            "FDTAACGSampler.width=64", "FDTAACGSampler.height=64", "FDTAACGSampler.steps=2",
            "FDTAACGSampler.candidates=1", "FDTAACGSampler.sampler_name=euler",
        ]  # fmt: skip
    pack = refs["FDTAFaceModelLoader"].value if "FDTAFaceModelLoader" in refs else "buffalo_l"
    pack_files = [
        real("FDTAFaceModelLoader", f"models/{pack}/{f}") for f in ("det_10g.onnx", "w600k_r50.onnx")
    ]
    if all(pack_files):
        out.real["insightface"] = str(pack_files[0].parent)  # type: ignore[union-attr]
        out.pack, out.insightface_dir = pack, pack_files[0].parents[2]  # type: ignore[union-attr]
    else:
        from .testing.faces import make_tiny_face_pack

        if not (tiny_root / "insightface" / "models" / TINY["pack"] / "genderage.onnx").is_file():
            make_tiny_face_pack(tiny_root / "insightface", TINY["pack"])
        out.tiny.append("insightface")
        out.pack, out.insightface_dir = TINY["pack"], tiny_root / "insightface"
        out.sets.append(f"FDTAFaceModelLoader.pack={TINY['pack']}")
    stg = real("FDTASTGLoader")
    if stg:
        out.real["stg"] = str(stg)
    else:
        _write_tiny_stg(tiny_root / "fdta" / "stg" / TINY["stg"])
        out.tiny.append("stg")
        out.sets += [f"FDTASTGLoader.model_name={TINY['stg']}", "FDTASTGMixer.steps=2"]
    sam = real("FDTAAgeLoader")
    if sam:
        out.real["age"] = str(sam)
    else:
        from .testing.age import save_sam_checkpoint, tiny_sam

        p = tiny_root / "fdta" / "age" / TINY["sam"]
        if not p.is_file():
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_name(p.name + ".tmp")
            save_sam_checkpoint(tiny_sam(seed=1), tmp)
            os.replace(tmp, p)
        out.tiny.append("age")
        out.sets.append(f"FDTAAgeLoader.model_name={TINY['sam']}")
    # random-weight SD draws nothing a detector calls a face, and random models keep no identity: with any
    # tiny model in the identity chain the face checks and the CSIM filter would reject everything
    out.face_checks = not (set(out.tiny) & {"sd15", "controlnet", "insightface"})
    if out.tiny:
        out.sets += ["FDTACSIMFilter.threshold=-1", "FDTACSIMFilter.min_images_per_identity=0"]
    out.sets += [
        f"FDTASTGMixer.images_per_identity={cfg.images_per_identity}", "FDTAAgeShifter.batch_size=4",
        f"FDTADatasetWriter.output_name={OUTPUT_NAME}",
    ]  # fmt: skip
    return out


def _write_tiny_stg(path: Path) -> None:
    if path.is_file():
        return
    from .testing.stg import save_tiny_stg

    save_tiny_stg(path, seed=3, source="fdta demo (tiny)")


def write_extra_model_paths(path: Path, folders: ModelFolders) -> Path:
    """An ``extra_model_paths.yaml`` that gives the demo server the user's real model folders."""
    from .models_catalog import FOLDERS

    lines = ["fdta_demo_real_models:"]
    for key in FOLDERS:
        paths = [str(p) for p in folders.folders(key) if p.is_dir()]
        if paths:
            lines.append(f"  {key}: |")
            lines += [f"    {p}" for p in paths]
    path.write_text("\n".join(lines) + "\n")
    return path


# ---------------------------------------------------------------------------- inputs and verification
def write_references(input_dir: Path, seed: int, subjects: int = 3, per_subject: int = 2) -> Path:
    """Stand-in "real reference subjects" for Syn-MS1M (random 112x112 images, one folder per subject)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    refs = input_dir / "fdta" / "ms1m_references"
    for s in range(subjects):
        d = refs / f"subject{s}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_subject):
            Image.fromarray(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return refs


def write_pairs_bin(dataset: Path, path: Path, pairs: int, seed: int) -> Path:
    """A verification ``.bin`` (the benchmark format) of image pairs drawn from ``dataset``: half of the
    same identity, half of different ones, in alternating blocks (as LFW orders them, so that each of the
    protocol's 10 contiguous folds holds both kinds). Not held out: a plumbing check, not a benchmark."""
    from .recordio import RecordReader, unpack
    from .seeds import numpy_rng

    with RecordReader(dataset / "train.rec", dataset / "train.idx") as reader:
        header, _ = unpack(reader.read(0))
        if not header.is_array:
            raise DemoError(
                f"{dataset}/train.rec has no insightface header record", fix="merge the chunks again."
            )
        first_id = int(header.label[0])  # type: ignore[index]
        by_class: dict[int, list[bytes]] = {}
        for key in range(1, first_id):
            h, img = unpack(reader.read(key))
            label = h.label[0] if isinstance(h.label, tuple) else h.label
            by_class.setdefault(int(label), []).append(img)
    classes = sorted(c for c, imgs in by_class.items() if imgs)
    if len(classes) < 2 or not any(len(by_class[c]) > 1 for c in classes):
        raise DemoError(
            f"{dataset} has too few identities/images for verification pairs",
            fix="run the demo with more --identities or --images-per-identity.",
        )
    multi = [c for c in classes if len(by_class[c]) > 1]
    rng = numpy_rng(seed, "demo-pairs")
    bins: list[bytes] = []
    issame: list[bool] = []
    for p in range(pairs):
        same = (p * 20 // pairs) % 2 == 0  # 20 blocks: each of the 10 folds holds both kinds
        if same:
            c = multi[int(rng.integers(len(multi)))]
            i, j = rng.choice(len(by_class[c]), 2, replace=False)
            bins += [by_class[c][int(i)], by_class[c][int(j)]]
        else:
            a, b = rng.choice(len(classes), 2, replace=False)
            ca, cb = classes[int(a)], classes[int(b)]
            bins += [
                by_class[ca][int(rng.integers(len(by_class[ca])))],
                by_class[cb][int(rng.integers(len(by_class[cb])))],
            ]
        issame.append(same)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump((bins, issame), f, protocol=4)
    return path


# ---------------------------------------------------------------------------- the demo
#: Set by ``fdta demo``'s SIGINT/SIGTERM handler. Python drops an exception raised while a ``__del__``
#: or a weakref callback runs ("Exception ignored in ..."), so a Ctrl-C that lands there would be lost
#: and the demo would go on to the end; every step boundary checks this instead.
INTERRUPTED = threading.Event()


def check_interrupted() -> None:
    """Raise ``KeyboardInterrupt`` when a Ctrl-C (or a kill) arrived, even if its exception was lost."""
    if INTERRUPTED.is_set():
        raise KeyboardInterrupt


def _cli(argv: list[str], step: str) -> None:
    from .cli import main as fdta

    check_interrupted()
    rc = fdta(argv)
    if rc == 130:  # the inner command caught a Ctrl-C: pass it on, so every step stops
        raise KeyboardInterrupt
    check_interrupted()
    if rc != 0:
        raise DemoError(
            f"{step} failed: 'fdta {' '.join(argv)}' exited with {rc}", fix="read the messages above."
        )


def run_demo(cfg: DemoConfig, say: Say) -> dict[str, Any]:
    """Run every step; return the summary (the JSON line of ``fdta demo``). The server is always stopped."""
    t0 = time.monotonic()
    pack = pack_root()
    comfy_dir, python = resolve_comfyui(cfg, say)
    ensure_pack_requirements(python, pack, say)
    if cfg.models_dir is None:
        cfg.models_dir = comfy_dir / "models"
        if not cfg.extra_model_paths and (comfy_dir / "extra_model_paths.yaml").is_file():
            cfg.extra_model_paths = [comfy_dir / "extra_model_paths.yaml"]
    demo = cfg.demo_dir.resolve()
    base = demo / "comfy"
    for sub in ("run", "dataset", "train", "bench", "workflow", str(Path("comfy") / "output" / OUTPUT_NAME)):
        shutil.rmtree(demo / sub, ignore_errors=True)  # the demo's own scratch folders: a fresh run each time
    (demo / "workflow").mkdir(parents=True, exist_ok=True)

    workflow = json.loads((pack / "workflows" / "api" / "syn_ms1m.json").read_text())
    yaml = write_extra_model_paths(
        demo / "extra_model_paths.yaml", ModelFolders.discover(cfg.models_dir, cfg.extra_model_paths)
    )
    server = ComfyServer(
        comfy_dir, python, base, extra_args=["--extra-model-paths-config", str(yaml)], pack=pack, cpu=cfg.cpu
    )
    server.prepare()
    models = prepare_models(cfg, server, workflow, say)
    if models.all_tiny:
        say("PLUMBING DEMO: every model is a tiny random-weight model of the real architecture; the images "
            "are noise, not faces. Put real weights in the models folder (fdta models) for real faces.")  # fmt: skip
    else:
        say(f"real models: {', '.join(f'{k} ({v})' for k, v in models.real.items())}")
        if models.tiny:
            say(f"tiny random-weight stand-ins (missing real files): {', '.join(models.tiny)}")
    if not models.face_checks:
        del workflow["7"]["inputs"]["face_models"]  # FDTAACGSampler samples without the face checks
        workflow["7"]["inputs"].pop("reference_bank", None)  # ...and without the real-person check
    if models.tiny:
        # the CSIM filter's identity-leak check compares styled images with their reference subjects: on
        # random models its verdict is a coin flip that may empty a chunk
        for node in workflow.values():
            if node.get("class_type") == "FDTACSIMFilter":
                node["inputs"].pop("reference_bank", None)
        say("ACG face selection and the CSIM filter are off: random models draw no detectable face")
    wf_path = demo / "workflow" / "syn_ms1m_demo.json"
    wf_path.write_text(json.dumps(workflow, indent=1))
    write_references(server.input_dir, cfg.seed)
    shutil.copy2(
        pack / "workflows" / "inputs" / "fdta_face_edges.png", server.input_dir / "fdta_face_edges.png"
    )

    say(f"starting ComfyUI (base folder {base}, log {server.log_path})")
    try:
        server.start()
        say(f"ComfyUI is up at {server.url}; running Syn-MS1M for {cfg.identities} identities")
        argv = ["run", str(wf_path), "--run-dir", str(demo / "run"), "--identities", str(cfg.identities),
                "--chunk-size", str(cfg.chunk_size), "--seed", str(cfg.seed), "--server", server.url,
                "--timeout", str(cfg.timeout), "--retries", "0"]  # fmt: skip
        for s in models.sets:
            argv += ["--set", s]
        _cli(argv, "the Syn-MS1M run")
    except (FDTAError, OSError) as exc:
        raise DemoError(
            f"{exc}\n--- ComfyUI log tail ({server.log_path}) ---\n{server.log_tail(40)}"
        ) from exc
    finally:
        server.stop()
        say("ComfyUI stopped")

    dataset = demo / "dataset"
    _cli(["rec", "merge", str(dataset), str(server.output_dir / OUTPUT_NAME)], "merging the chunks")
    from .dataset.info import inspect

    info = inspect(dataset)
    if not info.ok:
        raise DemoError(
            f"the merged data set {dataset} is not sound: {json.dumps(info.to_dict(), default=str)[:2000]}"
        )
    say(f"data set: {dataset} ({info.classes} identities, {info.images} images)")

    report_dir = dataset / "report"
    _cli(["report", str(dataset), "--out", str(report_dir), "--pack", models.pack,
          "--insightface-dir", str(models.insightface_dir), "--provider", "CPU"], "the quality report")  # fmt: skip

    train_dir = demo / "train"
    _cli(["train", "--preset", "tiny", "--data", str(dataset), "--output", str(train_dir),
          "--max-steps", str(cfg.train_steps), "--save-every", str(cfg.train_steps),
          "--verify-every", str(10 * cfg.train_steps), "--seed", str(cfg.seed)], "training")  # fmt: skip
    model = train_dir / "model.pt"
    if not model.is_file():
        raise DemoError(f"training finished without {model}", fix=f"read {train_dir / 'train.log'}.")

    bin_path = write_pairs_bin(dataset, demo / "bench" / "demo_pairs.bin", cfg.pairs, cfg.seed)
    from .eval.models import load_model_embedder
    from .eval.verification import verify

    embed, size = load_model_embedder(str(model), "cpu")
    res = verify(embed, [str(bin_path)], size=size)[0]
    verify_d = {
        "bin": str(bin_path),
        "pairs": res.pairs,
        "accuracy_mean": res.accuracy_mean,
        "accuracy_std": res.accuracy_std,
    }
    say(f"verification on {bin_path.name} (pairs drawn from the data set itself): "
        f"{100 * res.accuracy_mean:.2f} +- {100 * res.accuracy_std:.2f} %")  # fmt: skip
    check_interrupted()
    seconds = round(time.monotonic() - t0, 1)
    say(f"done in {seconds:.0f} s; where everything is:")
    for label, p in (("workflow", wf_path), ("run manifest", demo / "run"), ("chunks", server.output_dir / OUTPUT_NAME),
                     ("data set", dataset), ("report", report_dir / "report.html"), ("training run", train_dir),
                     ("model", model), ("ComfyUI log", server.log_path)):  # fmt: skip
        say(f"  {label:13s} {p}")
    return {
        "dataset": str(dataset),
        "identities": info.classes,
        "images": info.images,
        "report": str(report_dir / "report.html"),
        "model": str(model),
        "verify": verify_d,
        "models": {"real": models.real, "tiny": models.tiny},
        "seconds": seconds,
    }
