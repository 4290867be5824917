"""Reference bank: real aligned faces whose styles (pose, lighting, expression) the STG mixer borrows.

Sources: a folder with one sub-folder per subject, an insightface/arcface ``.rec`` (e.g. MS1M's
``train.rec``), or an IMAGE batch. Images that are not 112x112 are aligned on the way in by an
``align`` function the caller passes (the faces stage's detector + 5-point alignment), so this module
needs no face models itself. Optional tags per image (``subject``, ``yaw``, ``lighting``,
``expression``) come from a CSV or from ``key=value`` parts of folder names.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError, InputError
from ..imagecodec import decode_image, read_image

log = logging.getLogger(__name__)

#: ``align(rgb_uint8_HxWx3) -> aligned 112x112x3 uint8 or None`` (None: no face found).
AlignFn = Callable[[np.ndarray], "np.ndarray | None"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
TAG_NAMES = ("subject", "yaw", "lighting", "expression")
_TAG_ALIASES = {
    "light": "lighting",
    "illumination": "lighting",
    "expr": "expression",
    "pose": "yaw",
    "id": "subject",
}
_TAG_RE = re.compile(r"([A-Za-z]+)=([^_,=/]+)")


@dataclass
class ReferenceBank:
    """Aligned 112x112 RGB uint8 faces with a stable key, a subject and optional tags per image."""

    images: np.ndarray
    keys: list[str]
    subjects: list[str]
    tags: list[dict[str, str]] = field(default_factory=list)
    source: str = ""

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.ndim != 4 or self.images.shape[1:] != (112, 112, 3) or self.images.dtype != np.uint8:
            raise InputError(
                f"reference images must be uint8 [N,112,112,3], got {self.images.dtype} {list(self.images.shape)}",
                where="ReferenceBank",
            )
        if not self.tags:
            self.tags = [{} for _ in range(n)]
        if not (len(self.keys) == len(self.subjects) == len(self.tags) == n):
            raise InputError("keys, subjects and tags need one entry per image", where="ReferenceBank")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subject_groups(self) -> dict[str, np.ndarray]:
        """subject -> indices of its images, subjects in first-appearance order."""
        out: dict[str, list[int]] = {}
        for i, s in enumerate(self.subjects):
            out.setdefault(s, []).append(i)
        return {k: np.asarray(v, np.int64) for k, v in out.items()}

    def summary(self) -> str:
        tagged = sum(1 for t in self.tags if t)
        return f"ReferenceBank: {len(self)} images, {len(self.subject_groups())} subjects, {tagged} tagged ({self.source})"

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_images(
        cls,
        images: np.ndarray,
        *,
        subjects: Sequence[str] | None = None,
        tags: Sequence[Mapping[str, str]] | None = None,
        align: AlignFn | None = None,
        source: str = "IMAGE",
    ) -> ReferenceBank:
        """An IMAGE batch as a bank; without subjects every image is its own subject."""
        arr = np.asarray(images)
        if arr.ndim != 4:
            raise InputError(
                f"expected [N,H,W,3] images, got {list(arr.shape)}", where="ReferenceBank.images"
            )
        out, keys, subs, tg = [], [], [], []
        for i in range(arr.shape[0]):
            face = _ensure_aligned(arr[i], align, f"{source}[{i}]")
            if face is None:
                continue
            out.append(face)
            keys.append(f"{source.lower()}:{i}")
            subs.append(str(subjects[i]) if subjects is not None else str(i))
            tg.append(dict(tags[i]) if tags is not None else {})
        return cls(_stack(out), keys, subs, tg, source=source)

    @classmethod
    def from_folder(
        cls,
        root: str | Path,
        *,
        align: AlignFn | None = None,
        tags_csv: str | Path | None = None,
        max_subjects: int = 0,
        max_per_subject: int = 0,
    ) -> ReferenceBank:
        """``root/<subject>/**/<image>``; ``key=value`` folder-name parts (``yaw=-30``) become tags.

        A CSV (columns ``path`` relative to ``root``, and any of subject/yaw/lighting/expression)
        overrides them. Images directly inside ``root`` form the subject ``_``.
        """
        root = Path(root)
        if not root.is_dir():
            raise InputError(
                f"reference folder {root} does not exist",
                where="ReferenceBank.folder",
                fix="create it with one sub-folder per real reference subject holding that subject's face "
                "images (e.g. <folder>/subject0/0.png), or point to an existing folder.",
            )
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise InputError(
                f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {root}",
                where="ReferenceBank.folder",
                fix="put one sub-folder per real subject with its face images inside.",
            )
        csv_tags = read_tags_csv(tags_csv) if tags_csv else {}
        per_subject: dict[str, int] = {}
        out, keys, subs, tg = [], [], [], []
        for path in files:
            rel = path.relative_to(root)
            subject = rel.parts[0] if len(rel.parts) > 1 else "_"
            tags = folder_tags(rel.parts[1:-1])
            tags.update(csv_tags.get(rel.as_posix(), {}))
            subject = tags.pop("subject", subject)
            if subject not in per_subject:
                if max_subjects and len(per_subject) >= max_subjects:
                    continue
                per_subject[subject] = 0
            if max_per_subject and per_subject[subject] >= max_per_subject:
                continue
            face = _ensure_aligned(read_image(path, where="ReferenceBank"), align, str(rel))
            if face is None:
                continue
            per_subject[subject] += 1
            out.append(face)
            keys.append(f"folder:{rel.as_posix()}")
            subs.append(subject)
            tg.append(tags)
        return cls(_stack(out), keys, subs, tg, source=str(root))

    @classmethod
    def from_rec(
        cls,
        rec_path: str | Path,
        *,
        max_subjects: int = 0,
        max_per_subject: int = 0,
        first_subject: int = 0,
        align: AlignFn | None = None,
    ) -> ReferenceBank:
        """Subjects from an insightface ``.rec`` (header + identity records; labels otherwise)."""
        from ..recordio import RecordReader, read_layout, unpack

        reader = RecordReader(rec_path)
        try:
            layout = read_layout(reader, scan_labels=False)
            groups: list[tuple[int, list[int]]] = []
            if layout.identity_ranges:
                for cls_id, (a, b) in enumerate(layout.identity_ranges):
                    groups.append((cls_id, list(range(a, b))))
            else:
                labels = layout.labels if layout.labels is not None else np.zeros(0, np.int64)
                by: dict[int, list[int]] = {}
                for k, lab in zip(layout.image_keys, labels.tolist(), strict=True):
                    by.setdefault(int(lab), []).append(k)
                groups = sorted(by.items())
            groups = groups[first_subject:]
            if max_subjects:
                groups = groups[:max_subjects]
            out, keys, subs = [], [], []
            name = Path(reader.rec_path).name
            for cls_id, rec_keys in groups:
                if max_per_subject:
                    rec_keys = rec_keys[:max_per_subject]
                for k in rec_keys:
                    _header, payload = unpack(reader.read(k))
                    face = _ensure_aligned(
                        decode_image(payload, where=f"ReferenceBank {name}#{k}"), align, f"{name}#{k}"
                    )
                    if face is None:
                        continue
                    out.append(face)
                    keys.append(f"rec:{name}#{k}")
                    subs.append(str(cls_id))
        finally:
            reader.close()
        if not out:
            raise DatasetError(f"{rec_path}: no reference images selected", where="ReferenceBank.rec")
        return cls(_stack(out), keys, subs, [{} for _ in out], source=str(rec_path))


# ---------------------------------------------------------------------------- helpers
def align_with_face_models(face_models: Any) -> AlignFn:
    """An :data:`AlignFn` from ``fdta_core.faces.FaceModels``: the main (largest, most central) face of
    the image, aligned to the 112x112 ArcFace template; ``None`` when no face is found."""
    if not callable(getattr(face_models, "align_batch", None)):
        raise InputError(
            "the connected face models cannot align images (no align_batch)",
            where="face_models",
            fix="connect FDTAFaceModelLoader's output, or pass references that are already aligned 112x112 faces.",
        )

    def align(img: np.ndarray) -> np.ndarray | None:
        res = face_models.align_batch([img], assume_aligned=False)
        if len(res.faces) == 0:
            return None
        return res.faces[0]

    return align


def folder_tags(parts: Sequence[str]) -> dict[str, str]:
    """``("yaw=-30", "lighting=3_expression=smile")`` -> ``{"yaw": "-30", "lighting": "3", "expression": "smile"}``."""
    tags: dict[str, str] = {}
    for part in parts:
        for k, v in _TAG_RE.findall(part):
            k = _TAG_ALIASES.get(k.lower(), k.lower())
            if k in TAG_NAMES:
                tags[k] = v
    return tags


def read_tags_csv(path: str | Path) -> dict[str, dict[str, str]]:
    """CSV with a ``path`` column (relative, ``/``-separated) and any of subject/yaw/lighting/expression."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"tags CSV {path} does not exist", where="ReferenceBank.tags_csv")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "path" not in reader.fieldnames:
            raise InputError(
                f"{path.name} needs a 'path' column (found {reader.fieldnames})",
                where="ReferenceBank.tags_csv",
                fix="columns: path,subject,yaw,lighting,expression (all but path optional).",
            )
        out = {}
        for row in reader:
            tags = {}
            for k, v in row.items():
                if k is None or k == "path" or v in (None, ""):
                    continue
                k = _TAG_ALIASES.get(k.strip().lower(), k.strip().lower())
                if k in TAG_NAMES:
                    tags[k] = v.strip()
            out[Path(row["path"].strip()).as_posix()] = tags
    return out


def _ensure_aligned(img: np.ndarray, align: AlignFn | None, where: str) -> np.ndarray | None:
    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise InputError(f"{where}: images must be uint8", where="ReferenceBank")
    if img.shape == (112, 112, 3):
        return np.ascontiguousarray(img)
    if align is None:
        raise InputError(
            f"{where} is {img.shape[1]}x{img.shape[0]}, not an aligned 112x112 face",
            where="ReferenceBank",
            fix="connect face models (FDTAFaceModelLoader) so references are aligned on the way in, or align them first.",
        )
    face = align(img)
    if face is None:
        log.info("reference %s: no face found; skipped", where)
        return None
    return np.ascontiguousarray(face)


def _stack(faces: list[np.ndarray]) -> np.ndarray:
    if not faces:
        raise InputError("no usable reference faces", where="ReferenceBank")
    return np.stack(faces).astype(np.uint8)
