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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

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


@dataclass(frozen=True)
class BankRecord:
    """What the mixer records about one reference image: its stable key, its subject and its tags."""

    key: str
    subject: str
    tags: dict[str, str]


class FaceGather(Sequence):
    """Faces ``bank[indices[i]]`` read only when sliced: the STG sampler takes a batch at a time, so a
    chunk never holds all of its reference faces at once."""

    def __init__(self, bank: ReferenceBank, indices: Sequence[int]) -> None:
        self.bank = bank
        self.indices = np.asarray(indices, np.int64).reshape(-1)

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def __getitem__(self, item: Any) -> np.ndarray:
        if isinstance(item, int | np.integer):
            return self.bank.faces([int(self.indices[int(item)])])[0]
        return self.bank.faces(self.indices[item])


class _Column(Sequence):
    """A read-only per-record column (key, subject or tags) of an indexed bank, fetched on access."""

    def __init__(self, bank: ReferenceBank, field_name: str) -> None:
        self._bank, self._field = bank, field_name

    def __len__(self) -> int:
        return len(self._bank)

    def __getitem__(self, item: Any) -> Any:
        if isinstance(item, slice):
            return [self[i] for i in range(*item.indices(len(self)))]
        i = int(item)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(item)
        return getattr(self._bank.record(i), self._field)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        head = ", ".join(repr(self[i]) for i in range(min(3, len(self))))
        return f"<{self._field} of {len(self)} reference images: [{head}{', ...' if len(self) > 3 else ''}]>"


class _Faces(Sequence):
    """``bank.images`` of an indexed bank: faces decoded on access (an int, a slice or a list of indices)."""

    def __init__(self, bank: ReferenceBank) -> None:
        self._bank = bank

    def __len__(self) -> int:
        return len(self._bank)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self._bank), 112, 112, 3)

    def __getitem__(self, item: Any) -> np.ndarray:
        if isinstance(item, int | np.integer):
            i = int(item) + (len(self) if int(item) < 0 else 0)
            return self._bank.faces([i])[0]
        if isinstance(item, slice):
            return self._bank.faces(np.arange(len(self))[item])
        return self._bank.faces(np.asarray(item, np.int64))


class ReferenceBank:
    """Aligned 112x112 RGB uint8 reference faces with a stable key, a subject and optional tags each.

    Two kinds, one interface:

    * in memory, ``ReferenceBank(images, keys, subjects, tags)`` or :meth:`from_images` (an IMAGE batch);
    * an *index* over a folder or a ``.rec`` (:meth:`from_folder`, :meth:`from_rec`): built once and
      cached beside the data (:mod:`.bank_index`), then read lazily, so the memory a chunk needs does not
      grow with the size of the reference data: the policies ask for subjects and record numbers, the
      mixer reads only the faces its identities use.

    Consumers use :meth:`faces`, :meth:`gather`, :meth:`record`, :attr:`n_subjects`,
    :meth:`subject_members` and :meth:`tagged`; ``images``, ``keys``, ``subjects`` and ``tags`` stay as
    sequences (lazy for an index) for code and tests that index them directly.
    """

    def __init__(
        self,
        images: np.ndarray | None = None,
        keys: Sequence[str] | None = None,
        subjects: Sequence[str] | None = None,
        tags: Sequence[Mapping[str, str]] | None = None,
        source: str = "",
        *,
        index: Any = None,
    ) -> None:
        self.source = source
        self._index = index
        self._groups: list[np.ndarray] | None = None
        self._names: list[str] | None = None
        if index is not None:
            return
        images = np.asarray(images)
        n = len(images)
        if images.ndim != 4 or images.shape[1:] != (112, 112, 3) or images.dtype != np.uint8:
            raise InputError(
                f"reference images must be uint8 [N,112,112,3], got {images.dtype} {list(images.shape)}",
                where="ReferenceBank",
            )
        self._images = images
        self._keys = list(keys or [])
        self._subjects = list(subjects or [])
        self._tags = [dict(t) for t in tags] if tags else [{} for _ in range(n)]
        if not (len(self._keys) == len(self._subjects) == len(self._tags) == n):
            raise InputError("keys, subjects and tags need one entry per image", where="ReferenceBank")

    # ------------------------------------------------------------------ what every consumer uses
    @property
    def indexed(self) -> bool:
        """Whether the bank is a lazily read index (True) or held in memory."""
        return self._index is not None

    def __len__(self) -> int:
        return len(self._index) if self._index is not None else int(self._images.shape[0])

    def _check(self, indices: np.ndarray) -> np.ndarray:
        idx = np.asarray(indices, np.int64).reshape(-1)
        if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= len(self)):
            raise InputError(
                f"reference index out of range 0..{len(self) - 1}: {int(idx.min())}..{int(idx.max())}",
                where="ReferenceBank",
            )
        return idx

    def faces(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """The faces at ``indices`` as uint8 ``[k, 112, 112, 3]`` (read from disk for an index)."""
        idx = self._check(np.asarray(indices))
        if self._index is not None:
            return self._index.faces(idx)
        return self._images[idx]

    def gather(self, indices: Sequence[int] | np.ndarray) -> FaceGather:
        """The faces at ``indices``, read batch by batch when sliced (see :class:`FaceGather`)."""
        return FaceGather(self, self._check(np.asarray(indices)))

    def record(self, i: int) -> BankRecord:
        """Key, subject and tags of image ``i``."""
        if self._index is not None:
            return self._index.record(int(self._check(np.asarray([i]))[0]))
        return BankRecord(self._keys[i], str(self._subjects[i]), self._tags[i])

    @property
    def n_subjects(self) -> int:
        if self._index is not None:
            return self._index.n_subjects
        return len(self._memory_groups()[0])

    def subject_name(self, j: int) -> str:
        """Name of the ``j``-th subject (subjects in first-appearance order)."""
        if self._index is not None:
            return self._index.subject_name(int(j))
        return self._memory_groups()[1][int(j)]

    def subject_members(self, j: int) -> np.ndarray:
        """Indices of the ``j``-th subject's images, in bank order."""
        if self._index is not None:
            return self._index.subject_members(int(j))
        return self._memory_groups()[0][int(j)]

    def subject_position(self, name: str) -> int | None:
        """Position ``j`` of the subject called ``name`` (None when the bank has no such subject)."""
        if self._index is not None:
            return self._index.subject_position(str(name))
        names = self._memory_groups()[1]
        try:
            return names.index(str(name))
        except ValueError:
            return None

    def tagged(self) -> Iterator[tuple[int, str, dict[str, str]]]:
        """``(index, subject, tags)`` of every image that carries tags, in bank order."""
        if self._index is not None:
            yield from self._index.tagged()
            return
        for i, t in enumerate(self._tags):
            if t:
                yield i, str(self._subjects[i]), t

    def _memory_groups(self) -> tuple[list[np.ndarray], list[str]]:
        if self._groups is None:
            out: dict[str, list[int]] = {}
            for i, s in enumerate(self._subjects):
                out.setdefault(str(s), []).append(i)
            self._names = list(out)
            self._groups = [np.asarray(v, np.int64) for v in out.values()]
        assert self._names is not None
        return self._groups, self._names

    # ------------------------------------------------------------------ sequence views
    @property
    def images(self) -> np.ndarray | _Faces:
        return _Faces(self) if self._index is not None else self._images

    @property
    def keys(self) -> list[str] | _Column:
        return _Column(self, "key") if self._index is not None else self._keys

    @property
    def subjects(self) -> list[str] | _Column:
        return _Column(self, "subject") if self._index is not None else self._subjects

    @property
    def tags(self) -> list[dict[str, str]] | _Column:
        return _Column(self, "tags") if self._index is not None else self._tags

    def subject_groups(self) -> dict[str, np.ndarray]:
        """subject -> indices of its images, subjects in first-appearance order (every subject: for a
        large index prefer :attr:`n_subjects` and :meth:`subject_members`)."""
        return {self.subject_name(j): self.subject_members(j) for j in range(self.n_subjects)}

    def summary(self) -> str:
        tagged = self._index.n_tagged() if self._index is not None else sum(1 for t in self._tags if t)
        kind = f", index {self._index.db_path}" if self._index is not None else ""
        return (
            f"ReferenceBank: {len(self)} images, {self.n_subjects} subjects, {tagged} tagged "
            f"({self.source}{kind})"
        )

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
        """An IMAGE batch as a bank (in memory); without subjects every image is its own subject."""
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
        align_id: str = "",
        tags_csv: str | Path | None = None,
        max_subjects: int = 0,
        max_per_subject: int = 0,
        first_subject: int = 0,
        cache_dir: str | Path | None = None,
    ) -> ReferenceBank:
        """``root/<subject>/**/<image>``; ``key=value`` folder-name parts (``yaw=-30``) become tags.

        A CSV (columns ``path`` relative to ``root``, and any of subject/yaw/lighting/expression)
        overrides them. Images directly inside ``root`` form the subject ``_``. The folder is indexed
        once (faces that are not 112x112 are aligned then, with ``align``; ``align_id`` names the
        models so that other models rebuild the index) and read lazily; the limits select from the index.
        """
        from .bank_index import open_folder_index

        index = open_folder_index(
            root, align=align, align_id=align_id, tags_csv=tags_csv, cache_dir=cache_dir
        ).view(first_subject, max_subjects, max_per_subject)
        return cls(source=str(root), index=index)

    @classmethod
    def from_rec(
        cls,
        rec_path: str | Path,
        *,
        max_subjects: int = 0,
        max_per_subject: int = 0,
        first_subject: int = 0,
        align: AlignFn | None = None,
        align_id: str = "",
        cache_dir: str | Path | None = None,
    ) -> ReferenceBank:
        """Subjects from an insightface ``.rec`` (header + identity records; labels otherwise), indexed
        once and read lazily (see :meth:`from_folder`)."""
        from .bank_index import open_rec_index

        index = open_rec_index(rec_path, align=align, align_id=align_id, cache_dir=cache_dir).view(
            first_subject, max_subjects, max_per_subject
        )
        return cls(source=str(rec_path), index=index)

    # ------------------------------------------------------------------ identity embeddings of subjects
    def subject_embeddings(
        self,
        embed: Callable[[np.ndarray], np.ndarray],
        *,
        names: Iterable[str] | None = None,
        batch_size: int = 64,
        cache_id: str = "",
    ) -> tuple[list[str], np.ndarray]:
        """Identity embedding of subjects (mean of their images' unit embeddings, re-normalised), computed
        streaming: ``batch_size`` faces at a time, never the whole bank. ``names`` limits it to those
        subjects (unknown names are skipped); otherwise every subject, and with a ``cache_id`` naming the
        embedding model an indexed bank caches the result beside its index. Returns ``(names, [S, D]
        float32)``."""
        if names is None:
            positions = range(self.n_subjects)
        else:
            found = (self.subject_position(n) for n in dict.fromkeys(str(x) for x in names))
            positions = sorted(p for p in found if p is not None)
        if names is None and cache_id and self._index is not None:
            cached = self._index.load_embeddings(cache_id)
            if cached is not None:
                return [self.subject_name(j) for j in range(self.n_subjects)], cached
        positions = list(positions)
        sums: np.ndarray | None = None  # [S, D]: each subject's sum of unit embeddings
        rows: list[np.ndarray] = []
        parts: list[np.ndarray] = []
        count = 0

        def flush() -> None:
            nonlocal sums, count
            if not parts:
                return
            e = np.asarray(embed(self.faces(np.concatenate(parts))), np.float64)
            e /= np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
            if sums is None:
                sums = np.zeros(
                    (len(positions), e.shape[1]), np.float64 if len(positions) < 65536 else np.float32
                )
            np.add.at(sums, np.concatenate(rows), e.astype(sums.dtype, copy=False))
            rows.clear()
            parts.clear()
            count = 0

        for row, j in enumerate(positions):
            members = self.subject_members(j)
            for s in range(0, len(members), batch_size):
                part = members[s : s + batch_size]
                if count and count + len(part) > batch_size:
                    flush()
                parts.append(part)
                rows.append(np.full(len(part), row, np.int64))
                count += len(part)
        flush()
        out_names = [self.subject_name(j) for j in positions]
        if sums is None:
            return out_names, np.zeros((0, 0), np.float32)
        emb = (sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)).astype(np.float32)
        if names is None and cache_id and self._index is not None:
            self._index.save_embeddings(cache_id, emb)
        return out_names, emb


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
