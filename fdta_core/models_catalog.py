"""Which model files a workflow needs, where ComfyUI looks for them, where to get them and under which
licence (``fdta models``), and fetching what the Hugging Face Hub hosts (``fdta models --download``).

The catalog below is the one table of known files. A workflow's needs come from its loader nodes (API
or UI format); a file that the catalog does not know is still listed (where it goes, present or not),
with "unknown source". Folders follow ComfyUI: ``<models>/<sub-folder>`` plus every entry of
``extra_model_paths.yaml`` under the same key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError, FDTAError, InputError

log = logging.getLogger(__name__)

#: ComfyUI folder key (also the ``extra_model_paths.yaml`` key) -> default sub-folder of ``models/``.
FOLDERS: dict[str, str] = {
    "checkpoints": "checkpoints",
    "controlnet": "controlnet",
    "vae": "vae",
    "loras": "loras",
    "diffusion_models": "diffusion_models",
    "text_encoders": "text_encoders",
    "upscale_models": "upscale_models",
    "insightface": "insightface",
    "fdta_stg": "fdta/stg",
    "fdta_age": "fdta/age",
    "fdta_fr": "fdta/fr",
}

#: Loader node -> (model input, folder key). The model input is the first widget of each loader, which
#: is how UI-format workflows store it.
LOADERS: dict[str, tuple[str, str]] = {
    "CheckpointLoaderSimple": ("ckpt_name", "checkpoints"),
    "ControlNetLoader": ("control_net_name", "controlnet"),
    "DiffControlNetLoader": ("control_net_name", "controlnet"),
    "VAELoader": ("vae_name", "vae"),
    "LoraLoader": ("lora_name", "loras"),
    "UNETLoader": ("unet_name", "diffusion_models"),
    "CLIPLoader": ("clip_name", "text_encoders"),
    "UpscaleModelLoader": ("model_name", "upscale_models"),
    "FDTAFaceModelLoader": ("pack", "insightface"),
    "FDTASTGLoader": ("model_name", "fdta_stg"),
    "FDTAAgeLoader": ("model_name", "fdta_age"),
}
#: Widget index of the model input in UI-format workflows (LoraLoader's first widget is the LoRA name too).
_UI_WIDGET = 0

_INSIGHTFACE_LICENCE = "insightface pretrained models: non-commercial research purposes only"
_INSIGHTFACE_URL = "https://github.com/deepinsight/insightface/releases/download/v0.7/buffalo_l.zip"


@dataclass(frozen=True)
class ModelSource:
    """One known model file: where it goes, where to get it, its licence, and (when known) its checksum.

    ``filename`` is relative to the folder (insightface packs: ``models/<pack>/<file>``). ``hf_repo`` /
    ``hf_filename`` name it on the Hugging Face Hub when it is hosted there; ``sha256`` (when given) is
    checked after a download, besides the Hub's own LFS checksum.
    """

    folder: str
    filename: str
    title: str
    licence: str
    url: str
    hf_repo: str | None = None
    hf_filename: str | None = None
    hf_revision: str | None = None
    sha256: str | None = None
    note: str = ""


#: The known files of the shipped workflows. Sizes and checksums are not guessed: the Hub's LFS
#: checksum is what a download is checked against unless ``sha256`` is filled in.
CATALOG: tuple[ModelSource, ...] = (
    ModelSource(
        "checkpoints",
        "v1-5-pruned-emaonly.safetensors",
        "Stable Diffusion 1.5 (ACG)",
        "CreativeML OpenRAIL-M",
        "https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5",
        hf_repo="stable-diffusion-v1-5/stable-diffusion-v1-5",
        hf_filename="v1-5-pruned-emaonly.safetensors",
        note="any SD 1.5 fine-tune works; set its name in CheckpointLoaderSimple",
    ),
    ModelSource(
        "controlnet",
        "control_v11p_sd15_canny.pth",
        "ControlNet 1.1 Canny for SD 1.5 (ACG edge maps)",
        "OpenRAIL (ControlNet 1.1 model card)",
        "https://huggingface.co/lllyasviel/ControlNet-v1-1",
        hf_repo="lllyasviel/ControlNet-v1-1",
        hf_filename="control_v11p_sd15_canny.pth",
    ),
    *(
        ModelSource(
            "insightface",
            f"models/buffalo_l/{name}",
            f"insightface buffalo_l {role}",
            _INSIGHTFACE_LICENCE,
            _INSIGHTFACE_URL,
            note="unzip buffalo_l.zip into models/insightface/models/buffalo_l/",
        )
        for name, role in (
            ("det_10g.onnx", "face detector (SCRFD-10G)"),
            ("w600k_r50.onnx", "ArcFace R50 (WebFace600K)"),
            ("genderage.onnx", "gender/age"),
        )
    ),
    ModelSource(
        "fdta_stg",
        "dcface_5x5.ckpt",
        "DCFace dual-condition mixer, 5x5 style grid (STG)",
        "research use only (DCFace release; trained on research face data sets)",
        "https://github.com/mk-minchul/dcface",
        note="or dcface_3x3.ckpt; 'fdta stg convert' makes a safetensors copy",
    ),
    ModelSource(
        "fdta_age",
        "sam_ffhq_aging.pt",
        "SAM age transformation (age shifter)",
        "code MIT; weights derive from NVIDIA StyleGAN2 FFHQ: research use only",
        "https://github.com/yuval-alaluf/SAM",
        note="'fdta age convert' makes a safetensors copy",
    ),
)

#: Files every insightface pack needs besides the catalogued buffalo_l ones.
PACK_FILES: tuple[str, ...] = ("det_10g.onnx", "w600k_r50.onnx", "genderage.onnx")


# ---------------------------------------------------------------------------- workflow parsing
@dataclass(frozen=True)
class ModelRef:
    """One model a workflow names: the loader node, its input, the folder key and the value."""

    node: str
    class_type: str
    input: str
    folder: str
    value: str


def workflow_models(workflow: dict[str, Any]) -> list[ModelRef]:
    """The model names used by the loader nodes of an API-format or UI-format workflow, in node order."""
    refs: list[ModelRef] = []
    if isinstance(workflow.get("nodes"), list):  # UI format
        for node in workflow["nodes"]:
            cls = node.get("type")
            if cls not in LOADERS or node.get("mode") in (2, 4):  # muted / bypassed nodes load nothing
                continue
            inp, folder = LOADERS[cls]
            widgets = node.get("widgets_values")
            if isinstance(widgets, dict):
                value = widgets.get(inp)
            else:
                value = widgets[_UI_WIDGET] if widgets else None
            if isinstance(value, str) and value:
                refs.append(ModelRef(str(node.get("id")), cls, inp, folder, value))
        return refs
    for node_id, node in workflow.items():
        if not isinstance(node, dict) or "class_type" not in node:
            continue
        cls = node["class_type"]
        if cls not in LOADERS:
            continue
        inp, folder = LOADERS[cls]
        value = node.get("inputs", {}).get(inp)
        if isinstance(value, str) and value:  # a linked input ([node, slot]) names no file here
            refs.append(ModelRef(str(node_id), cls, inp, folder, value))
    return refs


def load_workflow(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise InputError(f"workflow {p} does not exist", fix="give the path of a workflow JSON.") from None
    except ValueError as exc:
        raise InputError(
            f"workflow {p} is not JSON ({exc})", fix="save the workflow again from ComfyUI."
        ) from None
    if not isinstance(data, dict):
        raise InputError(
            f"workflow {p} is not a workflow object", fix="give an API- or UI-format workflow JSON."
        )
    return data


# ---------------------------------------------------------------------------- folders
def parse_extra_model_paths(path: str | os.PathLike) -> dict[str, list[Path]]:
    """Folders per key from a ComfyUI ``extra_model_paths.yaml`` (the semantics of ComfyUI's loader:
    ``base_path`` relative to the file's folder, each value one path or several on separate lines)."""
    try:
        import yaml
    except ImportError:
        raise ConfigError(
            "reading extra_model_paths.yaml needs PyYAML", fix="pip install pyyaml (or the 'hub' extra)."
        ) from None
    p = Path(path)
    data = yaml.safe_load(p.read_text()) or {}
    out: dict[str, list[Path]] = {}
    for section in data.values():
        if not isinstance(section, dict):
            continue
        base = section.get("base_path")
        base_path = Path(os.path.expandvars(os.path.expanduser(base))) if base else None
        if base_path is not None and not base_path.is_absolute():
            base_path = p.parent / base_path
        for key, value in section.items():
            if key in ("base_path", "is_default") or value is None:
                continue
            for line in str(value).splitlines():
                line = line.strip()
                if not line:
                    continue
                q = Path(os.path.expandvars(os.path.expanduser(line)))
                if base_path is not None and not q.is_absolute():
                    q = base_path / q
                out.setdefault(key, []).append(q)
    return out


@dataclass
class ModelFolders:
    """ComfyUI's models folder plus ``extra_model_paths.yaml`` entries: every folder per key.

    Files go (downloads) into the default folder ``<models>/<sub-folder>``; lookups search it first,
    then the extra folders in file order.
    """

    models_dir: Path
    extra: dict[str, list[Path]] = field(default_factory=dict)

    @classmethod
    def discover(
        cls, models_dir: str | os.PathLike, extra_yaml: Sequence[str | os.PathLike] = ()
    ) -> ModelFolders:
        extra: dict[str, list[Path]] = {}
        for y in extra_yaml:
            for key, paths in parse_extra_model_paths(y).items():
                extra.setdefault(key, []).extend(paths)
        return cls(Path(models_dir), extra)

    def default(self, key: str) -> Path:
        return self.models_dir / FOLDERS.get(key, key)

    def folders(self, key: str) -> list[Path]:
        return [self.default(key), *self.extra.get(key, [])]

    def find(self, key: str, filename: str) -> Path | None:
        for folder in self.folders(key):
            cand = folder / filename
            if cand.is_file():
                return cand
        return None


# ---------------------------------------------------------------------------- the listing
@dataclass
class ModelStatus:
    """One needed file: what, where it goes, whether it is there, and where to get it."""

    folder: str
    filename: str
    nodes: list[str]
    present: bool
    path: str
    searched: list[str]
    size: int | None = None
    sha256: str | None = None
    title: str = ""
    licence: str = "unknown (not in FDTA's catalog: see the model's own page)"
    url: str = ""
    hf_repo: str | None = None
    hf_filename: str | None = None
    note: str = ""
    expected_sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def downloadable(self) -> bool:
        return self.hf_repo is not None


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _catalog_index(catalog: Iterable[ModelSource]) -> dict[tuple[str, str], ModelSource]:
    return {(s.folder, s.filename): s for s in catalog}


def needed_files(refs: Iterable[ModelRef]) -> list[tuple[str, str, list[str]]]:
    """``(folder, filename, node labels)`` of every file the refs need; an insightface pack expands to
    its files. Duplicates (two loaders of one file) are merged."""
    out: dict[tuple[str, str], list[str]] = {}
    for r in refs:
        label = f"{r.class_type} (node {r.node})"
        names = [f"models/{r.value}/{f}" for f in PACK_FILES] if r.folder == "insightface" else [r.value]
        for name in names:
            out.setdefault((r.folder, name), []).append(label)
    return [(k[0], k[1], v) for k, v in out.items()]


def model_status(
    refs: Iterable[ModelRef],
    folders: ModelFolders,
    *,
    catalog: Iterable[ModelSource] = CATALOG,
    hash_files: bool = True,
) -> list[ModelStatus]:
    """Status of every file the refs need (present, size, SHA-256, source, licence)."""
    index = _catalog_index(catalog)
    rows = []
    for folder, filename, nodes in needed_files(refs):
        found = folders.find(folder, filename)
        src = index.get((folder, filename))
        row = ModelStatus(
            folder=folder,
            filename=filename,
            nodes=nodes,
            present=found is not None,
            path=str(found or folders.default(folder) / filename),
            searched=[str(p) for p in folders.folders(folder)],
        )
        if found is not None:
            row.size = found.stat().st_size
            if hash_files:
                row.sha256 = sha256_file(found)
        if src is not None:
            row.title, row.licence, row.url, row.note = src.title, src.licence, src.url, src.note
            row.hf_repo, row.hf_filename, row.expected_sha256 = src.hf_repo, src.hf_filename, src.sha256
        rows.append(row)
    return rows


def format_table(rows: Sequence[ModelStatus]) -> str:
    """Human-readable listing, one block per file."""
    lines = []
    for r in rows:
        state = "present" if r.present else "MISSING"
        lines.append(f"[{state}] {r.folder}/{r.filename}  ({r.title or 'not in the catalog'})")
        lines.append(f"    used by: {', '.join(r.nodes)}")
        if r.present:
            size = f"{r.size / 2**20:.1f} MiB" if r.size is not None else "?"
            lines.append(f"    at: {r.path}  size {size}" + (f"  sha256 {r.sha256}" if r.sha256 else ""))
        else:
            lines.append(f"    goes to: {r.path}")
            if len(r.searched) > 1:
                lines.append(
                    f"    also searched (extra_model_paths.yaml key '{r.folder}'): {', '.join(r.searched[1:])}"
                )
        src = f"{r.url}" if r.url else "unknown source"
        if r.hf_repo:
            src += f"  (Hugging Face Hub: {r.hf_repo}/{r.hf_filename}; fdta models --download fetches it)"
        lines.append(f"    get it: {src}")
        lines.append(f"    licence: {r.licence}")
        if r.note:
            lines.append(f"    note: {r.note}")
    missing = sum(not r.present for r in rows)
    lines.append(f"{len(rows)} file(s) needed, {len(rows) - missing} present, {missing} missing")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- downloads
class DownloadError(FDTAError, RuntimeError):
    """A model could not be downloaded or did not match its checksum."""


def download_missing(
    rows: Sequence[ModelStatus],
    folders: ModelFolders,
    *,
    endpoint: str | None = None,
    token: str | None = None,
    on_file: Callable[[ModelStatus, Path], None] | None = None,
) -> list[Path]:
    """Fetch every missing file that the Hub hosts into its default folder; return the written paths.

    Resumable: ``huggingface_hub`` keeps a partial file under ``<models>/.fdta_download/`` and continues it
    with an HTTP range request next time. Checksummed: the Hub's LFS SHA-256 (the ETag of large files)
    and, when the catalog knows it, the catalog's SHA-256 must match before the file is moved into place.
    ``endpoint`` defaults to ``$HF_ENDPOINT`` (a mirror), else huggingface.co.
    """
    todo = [r for r in rows if not r.present and r.downloadable]
    if not todo:
        return []
    try:
        from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    except ImportError:
        raise DownloadError(
            "downloading models needs huggingface_hub", fix="pip install 'fdta[hub]' (or huggingface_hub)."
        ) from None
    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or None
    staging = folders.models_dir / ".fdta_download"
    written: list[Path] = []
    failures: list[DownloadError] = []
    for r in todo:
        try:
            dest = _download_one(
                r, folders, staging, endpoint, token, hf_hub_download, get_hf_file_metadata, hf_hub_url
            )
        except DownloadError as exc:  # the others may still come: report every failure at the end
            log.error("%s", exc)
            failures.append(exc)
            continue
        if on_file is not None:
            on_file(r, dest)
        written.append(dest)
    if failures:
        if len(failures) == 1:
            raise failures[0]
        raise DownloadError(
            f"{len(failures)} download(s) failed ({len(written)} succeeded):\n"
            + "\n".join(str(f) for f in failures)
        )
    return written


def _download_one(r: ModelStatus, folders: ModelFolders, staging: Path, endpoint, token, hf_hub_download,
                  get_hf_file_metadata, hf_hub_url) -> Path:  # fmt: skip
    assert r.hf_repo is not None and r.hf_filename is not None
    dest = folders.default(r.folder) / r.filename
    url = hf_hub_url(r.hf_repo, r.hf_filename, endpoint=endpoint)
    try:
        meta = get_hf_file_metadata(url, token=token)
        local = Path(
            hf_hub_download(r.hf_repo, r.hf_filename, local_dir=staging, endpoint=endpoint, token=token)
        )
    except Exception as exc:  # network, 404, auth: name the file and the mirror
        raise DownloadError(
            f"could not download {r.hf_repo}/{r.hf_filename} from {endpoint or 'huggingface.co'}: "
            f"{type(exc).__name__}: {exc}",
            where=f"{r.folder}/{r.filename}",
            fix=f"check the network (or HF_ENDPOINT), or download it by hand from {r.url} into {dest.parent}.",
        ) from exc
    digest = sha256_file(local)
    expected = [
        (what, v.lower()) for what, v in (("catalog", r.expected_sha256), ("hub", _lfs_sha(meta))) if v
    ]
    for what, want in expected:
        if digest != want:
            local.unlink(missing_ok=True)
            raise DownloadError(
                f"{r.hf_repo}/{r.hf_filename} has SHA-256 {digest}, the {what} says {want}; the file was deleted",
                where=f"{r.folder}/{r.filename}",
                fix="run the download again; if it repeats, the mirror serves another file.",
            )
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(local), str(dest))
    r.present, r.path, r.size, r.sha256 = True, str(dest), dest.stat().st_size, digest
    log.info("downloaded %s (%d bytes, sha256 %s)", dest, r.size, digest)
    return dest


def _lfs_sha(meta: Any) -> str | None:
    """The Hub's SHA-256 of an LFS file (its ETag is the SHA-256); None for small git files (git SHA-1)."""
    etag = (getattr(meta, "etag", None) or "").strip('"').removeprefix("W/").strip('"')
    return etag if len(etag) == 64 and all(c in "0123456789abcdef" for c in etag.lower()) else None
