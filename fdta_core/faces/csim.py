"""CSIM: ArcFace cosine similarity between a styled face and its identity's reference, and the filter
that keeps only faces that still show their identity (FDTA/DCFace keep styled images whose CSIM to
the source face passes a threshold; typical values are 0.5-0.65, DESIGN 5.6).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError, check_choice
from ..faceset import FACE_SIZE, Dropped, FaceSet
from ..grid import GREEN, RED, WHITE, Cell, render_grid

log = logging.getLogger(__name__)

EmbedFn = Callable[[np.ndarray], np.ndarray]
REFERENCES = ("source", "mean")


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    a = np.asarray(x, np.float64)
    n = np.linalg.norm(a, axis=-1, keepdims=True)
    return a / np.maximum(n, eps)


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of ``a`` [N, D] and ``b`` [N, D] or [D] -> [N] (a [D] pair -> scalar)."""
    an, bn = l2_normalize(a), l2_normalize(b)
    return np.sum(an * bn, axis=-1)


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """All pairwise cosine similarities: [N, D] x [M, D] -> [N, M]."""
    return l2_normalize(a) @ l2_normalize(b).T


def _embedder(models_or_fn: Any, batch_size: int) -> EmbedFn:
    if callable(models_or_fn) and not hasattr(models_or_fn, "embed"):
        return models_or_fn
    if hasattr(models_or_fn, "embed"):
        return lambda x: models_or_fn.embed(x, batch_size=batch_size)
    raise InputError("need face models (a recogniser) or an embedding function", where="csim")


def embed_faceset(
    faceset: FaceSet,
    models_or_fn: Any,
    *,
    batch_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Embeddings of every image of a faceset, computed in batches (progress per batch)."""
    fn = _embedder(models_or_fn, batch_size)
    n = len(faceset)
    out = []
    for s in range(0, n, batch_size):
        out.append(np.asarray(fn(faceset.images[s : s + batch_size]), np.float32))
        if progress is not None:
            progress(min(n, s + batch_size), n)
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


@dataclass
class CSIMStats:
    """What the filter did: counts, the CSIM of every input image and the kept mask (input order)."""

    threshold: float
    reference: str
    min_images_per_identity: int
    csim: np.ndarray
    kept_mask: np.ndarray
    labels: np.ndarray
    reasons: list[str] = field(default_factory=list)  # per input image: "" (kept), "csim", "leak", "identity"
    csim_subject: np.ndarray | None = None  # per input image: CSIM to its STG reference subject (NaN: none)
    leak_threshold: float | None = None
    identities_in: int = 0
    identities_kept: int = 0
    dropped_identities: list[int] = field(default_factory=list)

    @property
    def n_in(self) -> int:
        return int(len(self.csim))

    @property
    def n_kept(self) -> int:
        return int(self.kept_mask.sum())

    def summary(self) -> dict[str, Any]:
        c = self.csim[np.isfinite(self.csim)]
        counts, edges = csim_histogram(c, bins=40)
        return {
            "threshold": self.threshold,
            "reference": self.reference,
            "min_images_per_identity": self.min_images_per_identity,
            "images_in": self.n_in,
            "images_kept": self.n_kept,
            "rejected_by_csim": int(sum(r == "csim" for r in self.reasons)),
            "rejected_as_leak": int(sum(r == "leak" for r in self.reasons)),
            "dropped_with_identity": int(sum(r == "identity" for r in self.reasons)),
            "identities_in": self.identities_in,
            "identities_kept": self.identities_kept,
            "dropped_identities": list(self.dropped_identities),
            "csim_mean": float(c.mean()) if c.size else None,
            "csim_std": float(c.std()) if c.size else None,
            "csim_min": float(c.min()) if c.size else None,
            "csim_max": float(c.max()) if c.size else None,
            "csim_median": float(np.median(c)) if c.size else None,
            "histogram": {"counts": counts.tolist(), "edges": [round(float(e), 4) for e in edges]},
        }

    def to_text(self) -> str:
        s = self.summary()
        lines = [
            f"CSIM filter (reference={s['reference']}, threshold={s['threshold']:.3f}, "
            f"min images/identity={s['min_images_per_identity']})",
            f"kept {s['images_kept']} / {s['images_in']} images; rejected {s['rejected_by_csim']} by CSIM, "
            f"{s['rejected_as_leak']} as reference-identity leaks, {s['dropped_with_identity']} with their identity",
            f"identities kept {s['identities_kept']} / {s['identities_in']}"
            + (
                f" (dropped: {s['dropped_identities'][:20]}{' ...' if len(s['dropped_identities']) > 20 else ''})"
                if s["dropped_identities"]
                else ""
            ),
        ]
        if s["csim_mean"] is not None:
            lines.append(
                f"CSIM mean {s['csim_mean']:.3f} +- {s['csim_std']:.3f}, median {s['csim_median']:.3f}, "
                f"range [{s['csim_min']:.3f}, {s['csim_max']:.3f}]"
            )
            counts, edges = s["histogram"]["counts"], s["histogram"]["edges"]
            top = max(counts) if counts else 0
            for k, cnt in enumerate(counts):
                if cnt:
                    bar = "#" * max(1, round(30 * cnt / top))
                    lines.append(f"  [{edges[k]:+.2f}, {edges[k + 1]:+.2f}) {cnt:5d} {bar}")
        return "\n".join(lines)


def csim_histogram(values: np.ndarray, bins: int = 20, value_range: tuple[float, float] = (-1.0, 1.0)):
    """Counts and edges of CSIM values over [-1, 1] (``numpy.histogram``)."""
    v = np.clip(np.asarray(values, np.float64), value_range[0], value_range[1])
    return np.histogram(v, bins=bins, range=value_range)


def csim_filter(
    faceset: FaceSet,
    models_or_fn: Any,
    threshold: float = 0.5,
    reference: str = "source",
    min_images_per_identity: int = 0,
    *,
    batch_size: int = 32,
    embeddings: np.ndarray | None = None,
    progress: Callable[[int, int], None] | None = None,
    reference_subjects: dict[str, np.ndarray] | None = None,
    leak_threshold: float | None = None,
) -> tuple[FaceSet, CSIMStats]:
    """Keep the images whose CSIM to their identity's reference is >= ``threshold``.

    With ``reference_subjects`` (STG reference subject -> identity embedding, see
    :func:`fdta_core.faces.identity.subject_embeddings`) every image styled after a subject (provenance
    ``stg_reference_subject``) also gets its CSIM to that subject; the image is dropped as a leak (the
    real subject's identity came through: DCFace's known failure) when that CSIM is at least its CSIM
    to the source identity, or at least ``leak_threshold``. Both CSIMs go into the kept images'
    provenance, and each kept image records how many images of its identity were dropped as leaks.

    The CSIM is written into each kept image's provenance (stage ``csim``). When
    ``min_images_per_identity`` > 0, an identity left with fewer kept images is dropped whole (a class
    with too few images hurts FR training more than it helps). ``models_or_fn`` is a
    :class:`~fdta_core.faces.pack.FaceModels` or a function uint8 [N,112,112,3] -> [N, D].
    """
    check_choice("csim", "reference", reference, REFERENCES)
    if not -1.0 <= float(threshold) <= 1.0:
        raise InputError(f"threshold must lie in [-1, 1], got {threshold}", where="csim.threshold")
    if int(min_images_per_identity) < 0:
        raise InputError("min_images_per_identity must be >= 0", where="csim.min_images_per_identity")
    n = len(faceset)
    if embeddings is not None and len(embeddings) != n:
        raise InputError(f"{len(embeddings)} embeddings for {n} images", where="csim.embeddings")
    judge = _Judge(faceset, float(threshold), reference, reference_subjects, leak_threshold)
    src = None
    if reference == "source" and n:
        for ident in judge.ids.tolist():
            faceset.source_of(ident)  # raises the explanatory error when one is missing
        src = np.stack([faceset.sources[i] for i in judge.ids.tolist()])
    if embeddings is None and src is not None and _streams(models_or_fn):
        # the sources first, then the faceset, in one pipeline; each batch of faces is judged on the
        # helper thread while the model runs the next one (see BatchedModel.run_batches)
        m = len(src)
        got: list[np.ndarray] = []

        def on_batch(start: int, stop: int, out: np.ndarray) -> None:
            if start < m:
                got.append(out[: min(stop, m) - start])
                if stop >= m:
                    judge.set_references(np.concatenate(got))
            lo = max(start, m)
            if lo < stop:
                judge.images(lo - m, stop - m, out[lo - start :])

        def step(done: int, _total: int) -> None:
            if progress is not None:
                progress(max(0, done - m), n)

        models_or_fn.embed_many([src, faceset.images], batch_size, step, on_batch=on_batch)
    elif n:
        if embeddings is None:
            embeddings = embed_faceset(faceset, models_or_fn, batch_size=batch_size, progress=progress)
        if src is not None:
            judge.set_references(np.asarray(_embedder(models_or_fn, batch_size)(src), np.float64))
        else:
            judge.set_mean_references(embeddings)
        judge.images(0, n, embeddings)
    return judge.finish(int(min_images_per_identity))


def _streams(models: Any) -> bool:
    """Whether ``models`` can hand over embeddings batch by batch (``embed_many(..., on_batch=)``)."""
    import inspect

    fn = getattr(models, "embed_many", None)
    if fn is None:
        return False
    try:
        return "on_batch" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


class _Judge:
    """The filter's per-image work, one range of images at a time (a whole faceset, or the batches of
    a pipeline as they come out of the model): CSIM to the identity's reference, CSIM to the STG
    reference subject, the keep/leak verdicts and the kept images' provenance. :meth:`finish` then
    applies what needs every image (``min_images_per_identity``, per-identity leak counts)."""

    def __init__(
        self,
        faceset: FaceSet,
        threshold: float,
        reference: str,
        subjects: dict[str, np.ndarray] | None,
        leak_threshold: float | None,
    ) -> None:
        n = len(faceset)
        self.fs, self.threshold, self.reference = faceset, threshold, reference
        self.leak_threshold = None if leak_threshold is None else float(leak_threshold)
        self.ids, self.row = np.unique(np.asarray(faceset.labels, np.int64), return_inverse=True)
        self.refs: np.ndarray | None = None
        self.csim = np.zeros(n, np.float64)
        self.subject = np.full(n, np.nan)
        self.keep = np.zeros(n, bool)
        self.leaked = np.zeros(n, bool)
        self.prov = list(faceset.provenance)
        self.subjects = bool(subjects)
        self.extra: dict[str, Any] = {"csim_reference": reference, "csim_threshold": threshold}
        if self.subjects:
            self.extra["leak_threshold"] = self.leak_threshold
            names = list(subjects)
            index = {name: k for k, name in enumerate(names)}
            self.which = np.array([self._subject_row(p, index) for p in faceset.provenance], np.int64)
            self.subject_refs = l2_normalize(np.stack([np.asarray(subjects[k], np.float64) for k in names]))

    @staticmethod
    def _subject_row(p: Any, index: dict[str, int]) -> int:
        """Row of the bank subject an image was styled after (-1: none, or one the bank lacks)."""
        subj = p.extra.get("stg_reference_subject") if isinstance(p.extra, dict) else None
        return -1 if subj is None else index.get(str(subj), -1)

    def set_references(self, per_identity: np.ndarray) -> None:
        """One reference embedding per identity, in the order of ``self.ids``."""
        self.refs = l2_normalize(per_identity)

    def set_mean_references(self, embeddings: np.ndarray) -> None:
        """``mean`` reference: the direction of each identity's mean L2-normalised embedding."""
        sums = np.zeros((len(self.ids), np.shape(embeddings)[1]), np.float64)
        np.add.at(sums, self.row, l2_normalize(embeddings))
        self.refs = l2_normalize(sums)

    def images(self, lo: int, hi: int, embeddings: np.ndarray) -> None:
        emb = l2_normalize(embeddings)
        c = np.einsum("ij,ij->i", emb, self.refs[self.row[lo:hi]])
        self.csim[lo:hi] = c
        keep = c >= self.threshold
        if self.subjects:
            w = self.which[lo:hi]
            hit = np.flatnonzero(w >= 0)
            subj = self.subject[lo:hi]
            subj[hit] = np.einsum("ij,ij->i", emb[hit], self.subject_refs[w[hit]])
            # the real subject's identity came through when the face is at least as close to the subject
            # as to its own identity's reference, or at least leak_threshold close to it
            leaked = np.zeros(hi - lo, bool)
            leaked[hit] = subj[hit] >= c[hit]
            if self.leak_threshold is not None:
                leaked[hit] |= subj[hit] >= self.leak_threshold
            self.leaked[lo:hi] = leaked
            keep &= ~leaked
        self.keep[lo:hi] = keep
        prov, extra = self.prov, self.extra
        for k in np.flatnonzero(keep).tolist():
            e = dict(extra)
            if self.subjects:
                if self.reference == "source":
                    e["csim_to_source"] = round(float(c[k]), 6)
                if self.which[lo + k] >= 0:
                    e["csim_to_reference_subject"] = round(float(self.subject[lo + k]), 6)
                e["leaked_images_dropped"] = 0  # the identity's count is filled in by finish()
            prov[lo + k] = prov[lo + k].derive("csim", csim=round(float(c[k]), 6), extra=e)

    def finish(self, min_images: int) -> tuple[FaceSet, CSIMStats]:
        fs, keep, csim = self.fs, self.keep, self.csim
        n = len(fs)
        reasons = ["" if k else "csim" for k in keep.tolist()]
        for i in np.flatnonzero(self.leaked).tolist():
            reasons[i] = "leak"
        dropped: list[int] = []
        if min_images > 0:
            for ident, idx in fs.by_identity().items():
                if int(keep[idx].sum()) < min_images:
                    dropped.append(int(ident))
                    for i in idx.tolist():
                        if keep[i]:
                            reasons[i] = "identity"
                    keep[idx] = False
        if self.subjects and self.leaked.any():
            leaks_of: dict[int, int] = {}
            for i in np.flatnonzero(self.leaked).tolist():
                leaks_of[int(fs.labels[i])] = leaks_of.get(int(fs.labels[i]), 0) + 1
            for i in np.flatnonzero(keep).tolist():
                self.prov[i].extra["leaked_images_dropped"] = leaks_of.get(int(fs.labels[i]), 0)
        full = fs.derived(fs.images, fs.labels, self.prov, fs.sources)
        kept = full.select(keep)
        kept.dropped = list(fs.dropped) + _dropped_records(
            fs, csim, reasons, self.threshold, self.reference, min_images, keep, self.subject
        )
        stats = CSIMStats(
            threshold=self.threshold,
            reference=self.reference,
            min_images_per_identity=min_images,
            csim=csim,
            kept_mask=keep,
            labels=fs.labels.copy(),
            reasons=reasons,
            identities_in=len(self.ids),
            identities_kept=len(kept.identities),
            dropped_identities=dropped,
            csim_subject=self.subject,
            leak_threshold=self.leak_threshold,
        )
        log.info(
            "[FDTA] csim: kept %d / %d images, %d / %d identities",
            stats.n_kept,
            n,
            stats.identities_kept,
            len(self.ids),
        )
        return kept, stats


def _dropped_records(
    faceset: FaceSet,
    csim: np.ndarray,
    reasons: list[str],
    threshold: float,
    reference: str,
    min_images: int,
    keep: np.ndarray,
    csim_subject: np.ndarray,
) -> list[Dropped]:
    """One :class:`Dropped` per image the filter left out (its provenance without the ACG details, which
    stay with the identity), saying whether its own CSIM or its identity's count dropped it."""
    kept_per_id = {int(i): int(keep[idx].sum() + sum(reasons[j] == "identity" for j in idx))
                   for i, idx in faceset.by_identity().items()}  # fmt: skip
    out = []
    for i, why in enumerate(reasons):
        if not why:
            continue
        p = faceset.provenance[i]
        ident, c = int(faceset.labels[i]), float(csim[i])
        if why == "csim":
            detail = f"CSIM {c:.3f} < threshold {threshold:.3f} (reference: {reference})"
        elif why == "leak":
            subj = p.extra.get("stg_reference_subject") if isinstance(p.extra, dict) else None
            detail = (
                f"reference subject {subj}'s identity leaked in: CSIM {float(csim_subject[i]):.3f} to the "
                f"subject vs {c:.3f} to the source ({reference})"
            )
        else:
            detail = (
                f"CSIM {c:.3f} passes, but identity {ident} keeps {kept_per_id[ident]} image(s) "
                f"< min_images_per_identity {min_images}: dropped whole"
            )
        record = {k: v for k, v in p.to_dict().items() if k != "extra"}
        record["extra"] = {k: v for k, v in p.extra.items() if k != "acg"}
        record.update(csim=round(c, 6), csim_threshold=threshold, csim_reference=reference)
        if np.isfinite(csim_subject[i]):
            record["csim_to_reference_subject"] = round(float(csim_subject[i]), 6)
        out.append(Dropped("csim", ident, (why,), detail, record))
    return out


# ----------------------------------------------------------------------------- pictures
def contact_sheet(
    faceset: FaceSet,
    stats: CSIMStats,
    *,
    max_identities: int = 8,
    max_per_identity: int = 12,
    pad: int = 4,
) -> np.ndarray:
    """One row per identity: its source face, then each face with its CSIM under it; rejected faces
    are crossed out in red. ``faceset`` is the filter's *input*. Returns an HxWx3 uint8 image."""
    t = FACE_SIZE
    by_id = faceset.by_identity()
    ids = list(by_id)[: max(1, max_identities)]
    cols = 1 + min(max_per_identity, max((len(v) for v in by_id.values()), default=0))
    rows: list[list[Cell | None]] = []
    for ident in ids:
        src = faceset.sources.get(ident)
        if src is not None:
            row: list[Cell | None] = [Cell(src, [(f"id {ident} source", WHITE)])]
        else:
            row = [Cell(np.zeros((t, t, 3), np.uint8), [(f"id {ident} (no source)", WHITE)])]
        for i in by_id[ident][:max_per_identity]:
            ok = bool(stats.kept_mask[i])
            why = "" if ok else {"csim": " x", "leak": " leak"}.get(stats.reasons[i], " id")
            row.append(
                Cell(faceset.images[i], [(f"{stats.csim[i]:.3f}{why}", GREEN if ok else RED)], crossed=not ok)
            )
        rows.append(row)
    return render_grid(rows, tile=t, gap=pad, caption_height=18, n_cols=cols)


def histogram_image(
    values: np.ndarray, threshold: float | None = None, *, bins: int = 40, width: int = 480, height: int = 240
) -> np.ndarray:
    """A bar chart of CSIM values over [-1, 1] with the threshold as a red line (uint8 RGB)."""
    import cv2

    counts, edges = csim_histogram(values, bins)
    img = np.full((height, width, 3), 255, np.uint8)
    m, top = 24, max(1, int(counts.max()) if counts.size else 1)
    plot_w, plot_h = width - 2 * m, height - 2 * m
    for k, cnt in enumerate(counts):
        x0 = m + int(k * plot_w / bins)
        x1 = m + int((k + 1) * plot_w / bins) - 1
        y0 = height - m - int(plot_h * cnt / top)
        color = (70, 110, 200) if threshold is None or edges[k + 1] > threshold else (170, 170, 170)
        cv2.rectangle(img, (x0, y0), (x1, height - m), color, -1)
    cv2.line(img, (m, height - m), (width - m, height - m), (0, 0, 0), 1)
    for v in (-1.0, -0.5, 0.0, 0.5, 1.0):
        x = m + int((v + 1) / 2 * plot_w)
        cv2.putText(
            img, f"{v:g}", (x - 8, height - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA
        )
    if threshold is not None:
        x = m + int((float(threshold) + 1) / 2 * plot_w)
        cv2.line(img, (x, m), (x, height - m), RED, 2)
    cv2.putText(
        img,
        f"CSIM (n={int(counts.sum())}, max bin {top})",
        (m, 16),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.45,
        (0, 0, 0),
        1,
        cv2.LINE_AA,
    )
    return img
