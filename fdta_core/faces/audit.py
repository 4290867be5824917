"""``fdta audit``: are the identities of a finished data set unique, and is nobody real among them?

Every identity is embedded (mean of its L2-normalised image embeddings, normalised again: DESIGN 5.8),
streaming over the records so memory grows with the number of identities only. Duplicate pairs inside
the set and matches against real sets (a data-set folder, or an ``.npy`` of embeddings) come from the
identity rules' range search (:func:`fdta_core.faces.identity.range_pairs`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError, InputError
from ..imagecodec import decode_image
from .identity import DCFACE_THRESHOLD, SearchInfo, check_threshold, range_pairs, unit_rows

log = logging.getLogger(__name__)


@dataclass
class IdentitySet:
    """Identity embeddings of one set: ``labels[i]`` is the class label of unit row ``centers[i]``."""

    name: str
    labels: np.ndarray
    centers: np.ndarray
    #: what each label is called, when the set names its people (an image folder: the person's folder)
    names: list[str] | None = None

    def label_text(self, label: int) -> str:
        if self.names is not None and 0 <= int(label) < len(self.names):
            return f"{self.names[int(label)]!r}"
        return f"identity {int(label)}"


def dataset_identities(
    folder: str | os.PathLike,
    models: Any,
    *,
    batch_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
) -> IdentitySet:
    """Embed every image of a record folder (``train.rec``) and average per class label."""
    from ..recordio import RecordReader, read_layout

    root = Path(folder)
    if not (root / "train.rec").is_file():
        hint = (
            "merge its chunks first (fdta rec merge OUT DATASET) and audit OUT."
            if (root / "chunks").is_dir()
            else "pass a folder holding train.rec, train.idx and property."
        )
        raise DatasetError(f"{root} holds no train.rec", fix=hint)
    reader = RecordReader(root / "train.rec")
    try:
        layout = read_layout(reader, scan_labels=True)
        keys = list(layout.image_keys)
        labels = np.asarray(layout.labels, np.int64)
        if not len(keys):  # an empty chunk (every identity rejected): nothing to check
            log.warning("%s holds no images (every identity was rejected upstream); nothing to audit", root)
            return IdentitySet(str(root), np.zeros((0,), np.int64), np.zeros((0, 0), np.float32))
        uniq, inv = np.unique(labels, return_inverse=True)
        sums: np.ndarray | None = None
        buf: list[np.ndarray] = []
        buf_rows: list[int] = []

        def flush() -> None:
            nonlocal sums
            if not buf:
                return
            emb = unit_rows(np.asarray(models.embed(np.stack(buf), batch_size=batch_size)), "audit")
            if sums is None:
                sums = np.zeros((len(uniq), emb.shape[1]), np.float64)
            np.add.at(sums, inv[np.asarray(buf_rows)], emb)
            buf.clear()
            buf_rows.clear()

        for n, key in enumerate(keys):
            _h, payload = reader.read_unpacked(key)
            buf.append(decode_image(payload, where=f"{reader.rec_path}: record {key}"))
            buf_rows.append(n)
            if len(buf) >= batch_size:
                flush()
            if progress is not None:
                progress(n + 1, len(keys))
        flush()
    finally:
        reader.close()
    assert sums is not None
    return IdentitySet(str(root), uniq, unit_rows(sums, "audit"))


def real_identities(
    path: str | os.PathLike,
    models: Any | None,
    *,
    batch_size: int = 64,
    cache_dir: str | os.PathLike | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> IdentitySet:
    """A real set: an ``.npy`` of identity embeddings ``[N, D]`` (labels 0..N-1), a data-set folder
    (``train.rec``), or a plain image folder (one subfolder per person, or one image per person; see
    :mod:`fdta_core.faces.realset`), whose embeddings are cached in ``cache_dir``."""
    from .realset import folder_identities, is_image_folder

    p = Path(path)
    if is_image_folder(p):
        names, centers = folder_identities(
            p, models, cache_dir=cache_dir, batch_size=batch_size, progress=progress
        )
        return IdentitySet(str(p), np.arange(len(names), dtype=np.int64), centers, names)
    if p.suffix == ".npy":
        try:
            arr = np.load(p, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(
                f"cannot read {p}: {exc}", where="--real", fix="pass a [N, D] float .npy"
            ) from exc
        if arr.ndim != 2 or not len(arr) or not np.issubdtype(arr.dtype, np.number):
            raise InputError(
                f"{p} holds a {arr.dtype} array of shape {list(arr.shape)}",
                where="--real",
                fix="pass [N, D] floats.",
            )
        return IdentitySet(str(p), np.arange(len(arr), dtype=np.int64), unit_rows(arr, f"--real {p}"))
    if p.is_dir():
        if models is None:
            raise InputError(f"{p} is a data-set folder: embedding it needs --pack", where="--real")
        return dataset_identities(p, models, batch_size=batch_size)
    raise InputError(
        f"{p} is neither an .npy of embeddings nor a folder (a data set, or images of people)",
        where="--real",
        fix="pass an .npy of [N, D] embeddings, a data-set folder, or a folder of photos (one subfolder "
        "per person).",
    )


@dataclass
class AuditResult:
    """What ``fdta audit --json`` prints (plus how the search ran)."""

    identities: int
    threshold: float
    duplicate_pairs: list[list[Any]] = field(default_factory=list)
    real_matches: list[list[Any]] = field(default_factory=list)
    flagged: list[int] = field(default_factory=list)
    search: list[SearchInfo] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "identities": self.identities,
            "threshold": self.threshold,
            "duplicate_pairs": self.duplicate_pairs,
            "real_matches": self.real_matches,
            "flagged": self.flagged,
            "search": [s.to_dict() for s in self.search],
        }


def audit_identities(
    data: IdentitySet,
    real: Sequence[IdentitySet] = (),
    threshold: float = DCFACE_THRESHOLD,
    *,
    exact: bool = False,
) -> AuditResult:
    """Duplicate pairs inside ``data`` and matches to each real set; ``flagged`` = the larger label of
    every duplicate pair and every label with a real match (sorted)."""
    thr = check_threshold(threshold, "--threshold")
    if not len(data.labels):  # an empty set: nothing can be a duplicate or a real person
        return AuditResult(0, thr)
    a, b, c, info = range_pairs(data.centers, None, thr, exact=exact)
    lab = data.labels
    dup = [[int(lab[i]), int(lab[j]), round(float(s), 6)] for i, j, s in zip(a, b, c, strict=True)]
    dup = [[min(x, y), max(x, y), s] for x, y, s in dup]
    dup.sort()
    flagged = {p[1] for p in dup}
    matches: list[list[Any]] = []
    infos = [info]
    for k, r in enumerate(real):
        qi, rj, cs, rinfo = range_pairs(data.centers, r.centers, thr, exact=exact)
        infos.append(rinfo)
        for i, j, s in zip(qi, rj, cs, strict=True):
            matches.append([int(lab[i]), k, int(r.labels[j]), round(float(s), 6)])
            flagged.add(int(lab[i]))
    matches.sort()
    return AuditResult(len(lab), thr, dup, matches, sorted(flagged), infos)
