"""``FDTA_FACESET``: the one currency between pipeline stages.

A :class:`FaceSet` holds aligned 112x112 RGB uint8 faces, one integer identity label per image, one
:class:`Provenance` record per image, and the *source face* of every identity it contains (the ACG face
that the identity was born from; the CSIM filter compares against it). Stages never mutate a faceset in
place: they build a new one, so ComfyUI's output cache stays valid.

ComfyUI ``IMAGE`` tensors are float32 ``[B, H, W, C]`` in [0, 1]; :func:`faceset_to_image` and
:func:`faceset_from_image` convert, here rather than in the nodes, so CI covers them.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import InputError

#: Side of an aligned face (the ArcFace template's frame).
FACE_SIZE = 112


@dataclass
class Provenance:
    """Where one image came from; becomes one manifest row when the image is written.

    ``seeds`` maps a stage name to the seed that stage used for this image; ``history`` lists the stages
    the image went through, in order; ``extra`` holds stage-specific details (style indices, detection
    score, ...). Everything must be JSON-serialisable.
    """

    identity: int
    attributes: dict[str, str] = field(default_factory=dict)
    seeds: dict[str, int] = field(default_factory=dict)
    reference_key: str | None = None
    age_target: float | None = None
    csim: float | None = None
    history: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def derive(self, stage: str, **changes: Any) -> Provenance:
        """A copy with ``stage`` appended to the history and the given fields replaced.

        ``seeds`` and ``extra`` given here are merged into the existing dicts, not substituted.
        """
        seeds = dict(self.seeds)
        seeds.update(changes.pop("seeds", {}) or {})
        extra = dict(self.extra)
        extra.update(changes.pop("extra", {}) or {})
        unknown = set(changes) - _PROVENANCE_SCALARS
        if unknown:
            raise TypeError(f"Provenance has no field(s) {sorted(unknown)}")
        # built directly, not with dataclasses.replace (3x slower): this runs once per image per stage
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.__dict__.update(changes)
        new.attributes = dict(changes.get("attributes", self.attributes))
        new.seeds, new.extra, new.history = seeds, extra, [*self.history, stage]
        return new

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Provenance:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise InputError(f"unknown provenance field(s) {sorted(unknown)}", where="Provenance")
        return cls(**{k: v for k, v in data.items() if k in names})


#: The fields :meth:`Provenance.derive` may set by keyword (besides the merged ``seeds`` and ``extra``).
_PROVENANCE_SCALARS = {"identity", "attributes", "reference_key", "age_target", "csim"}


def _check_images(images: np.ndarray, where: str) -> np.ndarray:
    if not isinstance(images, np.ndarray):
        raise InputError(f"images must be a numpy array, got {type(images).__name__}", where=where)
    if images.ndim != 4 or images.shape[1:] != (FACE_SIZE, FACE_SIZE, 3):
        raise InputError(
            f"images must have shape [N, {FACE_SIZE}, {FACE_SIZE}, 3] (aligned RGB faces), got {list(images.shape)}",
            where=where,
            fix="align the faces first (FDTAAlignFaces) so every image is a 112x112 RGB face.",
        )
    if images.dtype != np.uint8:
        raise InputError(f"images must be uint8, got {images.dtype}", where=where)
    return images


@dataclass(frozen=True)
class ChunkStamp:
    """The identity range a faceset was planned for, and what planned it.

    The ACG stamps the plan's ``[start, end)`` on its faceset and every stage passes the stamp on, so the
    dataset writer commits the chunk under the planned range even when some identities were dropped on
    the way, and the UI, the runner and a hand-built graph cannot disagree about it. ``spec_hash`` and
    ``run_seed`` say which run made the chunk: a chunk on disk is replaced without ``overwrite`` only by
    the same run (a re-run after a crash).
    """

    start: int
    end: int
    spec_hash: str = ""
    run_seed: int | None = None
    #: 0: the chunk's first pass; k >= 1: repair round k (the faceset holds identities the chunk on disk
    #: is missing, and the writer adds them to it)
    repair: int = 0

    def __post_init__(self) -> None:
        if int(self.start) < 0 or int(self.end) <= int(self.start):
            raise InputError(
                f"chunk range [{self.start}, {self.end}) is empty or negative", where="ChunkStamp"
            )
        if int(self.repair) < 0:
            raise InputError(f"repair round must be >= 0, got {self.repair}", where="ChunkStamp")

    @property
    def count(self) -> int:
        return int(self.end) - int(self.start)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> ChunkStamp | None:
        if not data:
            return None
        seed = data.get("run_seed")
        return cls(int(data["start"]), int(data["end"]), str(data.get("spec_hash") or ""),
                   None if seed is None else int(seed), int(data.get("repair") or 0))  # fmt: skip

    def same_run(self, other: ChunkStamp | None) -> bool:
        """Whether ``other`` comes from the same run (same spec and run seed, both known)."""
        return (
            other is not None
            and bool(self.spec_hash)
            and self.run_seed is not None
            and (self.spec_hash, self.run_seed) == (other.spec_hash, other.run_seed)
        )


def join_stamps(stamps: Iterable[ChunkStamp | None]) -> ChunkStamp | None:
    """The stamp of several facesets joined: equal stamps stay, adjacent ranges of one run merge,
    anything else (an unstamped part, two runs, a gap) gives None (the writer then needs a range)."""
    out: ChunkStamp | None = None
    first = True
    for s in sorted(stamps, key=lambda x: (x is not None, x.start if x else 0)):
        if s is None:
            return None
        if first:
            out, first = s, False
            continue
        assert out is not None
        if s == out:
            continue
        if (s.spec_hash, s.run_seed) != (out.spec_hash, out.run_seed) or s.start != out.end:
            return None
        out = dataclasses.replace(out, end=s.end)
    return out


@dataclass(frozen=True)
class Dropped:
    """Something a stage left out, and why: an identity without an acceptable ACG candidate, an image
    below the CSIM threshold, an identity left with too few images. Facesets carry these records to the
    dataset writer, which stores them in the manifest (table ``dropped``), so nothing disappears silently.

    ``reasons`` are stable codes (``gender``, ``age``, ``duplicate``, ``csim``, ...); ``detail`` says it in
    words; ``record`` holds JSON details (the dropped image's provenance, or the candidates tried).
    """

    stage: str
    identity: int
    reasons: tuple[str, ...]
    detail: str = ""
    record: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "reasons": list(self.reasons)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Dropped:
        return cls(
            str(data["stage"]),
            int(data["identity"]),
            tuple(str(r) for r in data.get("reasons", ())),
            str(data.get("detail", "")),
            dict(data.get("record") or {}),
        )


@dataclass
class FaceSet:
    """A batch of aligned faces with labels, provenance and the source face of each identity.

    ``chunk`` is the planned identity range (:class:`ChunkStamp`), or None for a faceset built by hand.
    ``dropped`` lists what earlier stages left out (:class:`Dropped`); every stage passes it on and adds
    its own, and the dataset writer records it.
    """

    images: np.ndarray
    labels: np.ndarray
    provenance: list[Provenance]
    sources: dict[int, np.ndarray] = field(default_factory=dict)
    chunk: ChunkStamp | None = None
    dropped: list[Dropped] = field(default_factory=list)
    #: what each stage so far cost (:class:`fdta_core.timing.StageTiming`), carried to the writer
    timings: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.images = _check_images(np.ascontiguousarray(self.images), "FaceSet.images")
        labels = np.asarray(self.labels)
        if labels.ndim != 1 or labels.shape[0] != self.images.shape[0]:
            raise InputError(
                f"labels must be a 1-D array with one entry per image ({self.images.shape[0]}), got shape {list(labels.shape)}",
                where="FaceSet.labels",
            )
        if labels.size and not np.issubdtype(labels.dtype, np.integer):
            if not np.all(np.equal(np.mod(labels, 1), 0)):
                raise InputError("labels must be integers", where="FaceSet.labels")
        labels = labels.astype(np.int64)
        if labels.size and labels.min() < 0:
            raise InputError(f"labels must be >= 0, found {int(labels.min())}", where="FaceSet.labels")
        self.labels = labels
        if len(self.provenance) != self.images.shape[0]:
            raise InputError(
                f"need one provenance record per image: {len(self.provenance)} records for {self.images.shape[0]} images",
                where="FaceSet.provenance",
            )
        for i, (p, lab) in enumerate(zip(self.provenance, self.labels, strict=True)):
            if p.identity != int(lab):
                raise InputError(
                    f"image {i}: label {int(lab)} disagrees with provenance identity {p.identity}",
                    where="FaceSet.provenance",
                )
        for ident, face in self.sources.items():
            if (
                not isinstance(face, np.ndarray)
                or face.shape != (FACE_SIZE, FACE_SIZE, 3)
                or face.dtype != np.uint8
            ):
                raise InputError(
                    f"source face of identity {ident} must be a 112x112x3 uint8 array",
                    where="FaceSet.sources",
                )
        if self.chunk is not None and self.labels.size:
            lo, hi = int(self.labels.min()), int(self.labels.max())
            if lo < self.chunk.start or hi >= self.chunk.end:
                raise InputError(
                    f"labels {lo}..{hi} lie outside the planned chunk {self.chunk.start}..{self.chunk.end - 1}",
                    where="FaceSet.chunk",
                )

    # ------------------------------------------------------------------ construction
    @classmethod
    def empty(cls) -> FaceSet:
        return cls(np.zeros((0, FACE_SIZE, FACE_SIZE, 3), np.uint8), np.zeros((0,), np.int64), [])

    @classmethod
    def from_sources(
        cls,
        images: np.ndarray,
        provenance: Sequence[Provenance],
        *,
        stage: str | None = None,
        chunk: ChunkStamp | None = None,
    ) -> FaceSet:
        """A faceset in which every image is the source face of its own identity (the ACG output)."""
        images = _check_images(np.ascontiguousarray(images), "FaceSet.images")
        prov = list(provenance)
        if stage:
            prov = [p.derive(stage) if (not p.history or p.history[-1] != stage) else p for p in prov]
        labels = np.array([p.identity for p in prov], np.int64)
        if len(set(labels.tolist())) != len(labels):
            raise InputError(
                "source facesets need exactly one image per identity", where="FaceSet.from_sources"
            )
        sources = {int(lab): images[i].copy() for i, lab in enumerate(labels)}
        return cls(images, labels, prov, sources, chunk)

    @classmethod
    def concat(cls, sets: Iterable[FaceSet]) -> FaceSet:
        sets = [s for s in sets]
        if not sets:
            return cls.empty()
        images = np.concatenate([s.images for s in sets], axis=0)
        labels = np.concatenate([s.labels for s in sets], axis=0)
        prov = [p for s in sets for p in s.provenance]
        sources: dict[int, np.ndarray] = {}
        for s in sets:
            sources.update(s.sources)
        return cls(
            images,
            labels,
            prov,
            sources,
            join_stamps(s.chunk for s in sets),
            dropped=[d for s in sets for d in s.dropped],
            timings=[t for s in sets for t in s.timings],
        )

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __iter__(self) -> Iterator[tuple[np.ndarray, int, Provenance]]:
        for i in range(len(self)):
            yield self.images[i], int(self.labels[i]), self.provenance[i]

    @property
    def identities(self) -> list[int]:
        """Distinct identity labels in first-appearance order."""
        return list(dict.fromkeys(int(x) for x in self.labels))

    def source_of(self, identity: int) -> np.ndarray:
        try:
            return self.sources[int(identity)]
        except KeyError:
            raise InputError(
                f"the faceset has no source face for identity {identity}",
                where="FaceSet.sources",
                fix="pass a faceset that descends from the ACG sampler output (it carries the source faces).",
            ) from None

    def select(self, indices: Sequence[int] | np.ndarray) -> FaceSet:
        """A new faceset with the images at ``indices`` (bool mask or integer indices)."""
        idx = np.asarray(indices)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise InputError(
                    f"mask has shape {list(idx.shape)}, expected [{len(self)}]", where="FaceSet.select"
                )
            idx = np.nonzero(idx)[0]
        idx = idx.astype(np.int64)
        keep_ids = {int(self.labels[i]) for i in idx}
        whole = len(idx) == len(self) and bool(np.array_equal(idx, np.arange(len(self))))
        return FaceSet(
            self.images if whole else self.images[idx],  # facesets are never mutated: share, don't copy
            self.labels[idx],
            [self.provenance[i] for i in idx],
            {k: v for k, v in self.sources.items() if k in keep_ids},
            self.chunk,
            dropped=list(self.dropped),
            timings=list(self.timings),
        )

    def derived(self, images: np.ndarray, labels: Any, provenance: list[Provenance],
                sources: dict[int, np.ndarray] | None = None) -> FaceSet:  # fmt: skip
        """A new faceset made by a stage from this one: same planned chunk and dropped records (and
        source faces unless given)."""
        return FaceSet(
            images,
            labels,
            provenance,
            dict(self.sources) if sources is None else sources,
            self.chunk,
            dropped=list(self.dropped),
            timings=list(self.timings),
        )

    def by_identity(self) -> dict[int, np.ndarray]:
        """Map identity -> indices of its images, in first-appearance order."""
        out: dict[int, list[int]] = {}
        for i, lab in enumerate(self.labels.tolist()):
            out.setdefault(lab, []).append(i)
        return {k: np.asarray(v, np.int64) for k, v in out.items()}

    def sorted_by_identity(self) -> FaceSet:
        """Images grouped by identity (stable within an identity), as the insightface layout needs."""
        order = np.argsort(self.labels, kind="stable")
        return self.select(order)

    def summary(self) -> str:
        n_id = len(self.identities)
        text = f"FaceSet: {len(self)} images, {n_id} identities, {len(self.sources)} source faces"
        if self.chunk is not None:
            text += f", planned chunk {self.chunk.start}..{self.chunk.end - 1}"
        return text + (f"; {len(self.dropped)} dropped on the way" if self.dropped else "")

    # ------------------------------------------------------------------ serialisation
    def provenance_json(self) -> str:
        return json.dumps([p.to_dict() for p in self.provenance], sort_keys=True)

    def save_npz(self, path: str) -> None:
        """Save to a compressed ``.npz`` (no pickle: provenance is stored as JSON text)."""
        src_ids = np.array(sorted(self.sources), np.int64)
        src = (
            np.stack([self.sources[int(i)] for i in src_ids])
            if len(src_ids)
            else np.zeros((0, FACE_SIZE, FACE_SIZE, 3), np.uint8)
        )
        np.savez_compressed(
            path,
            images=self.images,
            labels=self.labels,
            provenance=np.frombuffer(self.provenance_json().encode("utf-8"), np.uint8),
            source_ids=src_ids,
            source_images=src,
            chunk=np.frombuffer(
                json.dumps(self.chunk.to_dict() if self.chunk else None).encode("utf-8"), np.uint8
            ),
            dropped=np.frombuffer(
                json.dumps([d.to_dict() for d in self.dropped], sort_keys=True).encode("utf-8"), np.uint8
            ),
            timings=np.frombuffer(
                json.dumps([t.to_dict() for t in self.timings], sort_keys=True).encode("utf-8"), np.uint8
            ),
        )

    @classmethod
    def load_npz(cls, path: str) -> FaceSet:
        with np.load(path, allow_pickle=False) as z:
            prov = [Provenance.from_dict(d) for d in json.loads(z["provenance"].tobytes().decode("utf-8"))]
            sources = {int(i): z["source_images"][k] for k, i in enumerate(z["source_ids"])}
            chunk = (
                ChunkStamp.from_dict(json.loads(z["chunk"].tobytes().decode("utf-8")))
                if "chunk" in z.files
                else None
            )
            dropped = (
                [Dropped.from_dict(d) for d in json.loads(z["dropped"].tobytes().decode("utf-8"))]
                if "dropped" in z.files
                else []
            )
            timings = []
            if "timings" in z.files:
                from .timing import StageTiming

                timings = [
                    StageTiming.from_dict(d) for d in json.loads(z["timings"].tobytes().decode("utf-8"))
                ]
            return cls(z["images"], z["labels"], prov, sources, chunk, dropped=dropped, timings=timings)


# ---------------------------------------------------------------------- ComfyUI IMAGE conversions
def image_to_uint8(image: Any, *, where: str = "IMAGE") -> np.ndarray:
    """ComfyUI ``IMAGE`` (torch or numpy, ``[B,H,W,C]`` float in [0,1]) -> uint8 RGB ``[B,H,W,3]``.

    Grayscale (C=1) is repeated to RGB; RGBA (C=4) drops alpha. Values outside [0,1] are an error
    rather than silently clipped, because they usually mean a mis-wired latent or mask.
    """
    arr = image.detach().cpu().float().numpy() if hasattr(image, "detach") else np.asarray(image)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4:
        raise InputError(f"expected an IMAGE batch [B,H,W,C], got shape {list(arr.shape)}", where=where)
    c = arr.shape[-1]
    if c == 1:
        arr = np.repeat(arr, 3, axis=-1)
    elif c == 4:
        arr = arr[..., :3]
    elif c != 3:
        raise InputError(
            f"expected 1, 3 or 4 channels in the last dimension, got {c} (shape {list(arr.shape)})",
            where=where,
            fix="connect an IMAGE output (not a MASK or LATENT).",
        )
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.size:
        if not np.isfinite(arr).all():
            raise InputError("the image contains NaN or infinite values", where=where)
        lo, hi = float(arr.min()), float(arr.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise InputError(
                f"IMAGE values must lie in [0, 1], found [{lo:.3f}, {hi:.3f}]",
                where=where,
                fix="connect a decoded image (VAE Decode / Load Image), not raw model output.",
            )
    return np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)


def uint8_to_image(images: np.ndarray):  # -> torch.Tensor
    """uint8 ``[B,H,W,3]`` -> ComfyUI ``IMAGE`` float32 torch tensor in [0, 1]."""
    import torch

    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[None]
    return torch.from_numpy(np.ascontiguousarray(arr)).to(torch.float32).div_(255.0)


#: Bounds of :func:`faceset_preview`: rows (identities) and images per row, whatever the faceset's size.
PREVIEW_IDENTITIES = 8
PREVIEW_PER_IDENTITY = 8


def preview_caption(prov: Provenance) -> str:
    """What a preview tile says about an image: its target age, else its STG style, else its stage."""
    if prov.age_target is not None:
        return f"age {prov.age_target:g}"
    style = prov.extra.get("stg_style_index") if isinstance(prov.extra, dict) else None
    if style is not None:
        return f"style {style}"
    return prov.history[-1] if prov.history else ""


def faceset_preview(
    faceset: FaceSet,
    *,
    max_identities: int = PREVIEW_IDENTITIES,
    max_per_identity: int = PREVIEW_PER_IDENTITY,
) -> np.ndarray:
    """A bounded contact sheet of a faceset: its first ``max_identities`` identities, one row each with
    up to ``max_per_identity`` of their images, captioned (:func:`preview_caption`). Returns uint8
    ``[H, W, 3]`` whose size does not grow with the faceset, so a node's preview output (held in ComfyUI's
    cache with every other output) costs the same for 10 or 10,000 identities."""
    from .grid import WHITE, Cell, render_grid

    rows: list[list[Cell | None]] = []
    labels = []
    for ident, idx in list(faceset.by_identity().items())[: max(1, int(max_identities))]:
        rows.append(
            [Cell(faceset.images[i], [(preview_caption(faceset.provenance[i])[:18], WHITE)])
             for i in idx[: max(1, int(max_per_identity))]]
        )  # fmt: skip
        labels.append([(f"id {ident}", WHITE), (f"{len(idx)} images", WHITE)])
    if not rows:
        return render_grid([[Cell(None, [("empty faceset", WHITE)])]], tile=FACE_SIZE, caption_height=14)
    return render_grid(rows, tile=FACE_SIZE, gap=4, caption_height=14, label_width=72, row_labels=labels)


def faceset_to_image(faceset: FaceSet):  # -> torch.Tensor
    """The faces of a faceset as an ``IMAGE`` batch (an empty faceset gives one black 112x112 image,
    because ComfyUI's preview nodes cannot show a zero-length batch)."""
    if len(faceset) == 0:
        return uint8_to_image(np.zeros((1, FACE_SIZE, FACE_SIZE, 3), np.uint8))
    return uint8_to_image(faceset.images)


def faceset_from_image(
    image: Any,
    labels: Sequence[int] | np.ndarray | None = None,
    provenance: Sequence[Provenance] | None = None,
    *,
    stage: str = "import",
    as_sources: bool = True,
    where: str = "IMAGE",
) -> FaceSet:
    """Wrap an ``IMAGE`` batch of already aligned 112x112 faces as a faceset.

    Without labels every image is its own identity 0..B-1. With ``as_sources`` the first image of each
    identity becomes its source face.
    """
    arr = image_to_uint8(image, where=where)
    if arr.shape[1:3] != (FACE_SIZE, FACE_SIZE):
        raise InputError(
            f"images are {arr.shape[2]}x{arr.shape[1]}, not aligned 112x112 faces",
            where=where,
            fix="run FDTAAlignFaces first; it detects and aligns faces of any size.",
        )
    n = arr.shape[0]
    labs = np.arange(n, dtype=np.int64) if labels is None else np.asarray(labels, np.int64)
    if labs.shape != (n,):
        raise InputError(f"{len(labs)} labels for {n} images", where=where)
    prov = (
        list(provenance)
        if provenance is not None
        else [Provenance(identity=int(x), history=[stage]) for x in labs]
    )
    sources: dict[int, np.ndarray] = {}
    if as_sources:
        for i, lab in enumerate(labs.tolist()):
            sources.setdefault(lab, arr[i].copy())
    return FaceSet(arr, labs, prov, sources)
