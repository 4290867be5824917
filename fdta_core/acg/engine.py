"""The ACG loop: plan candidates, sample them in batches, analyse, select, retry, and build the outputs.

The sampler itself is a callback (``sample(jobs) -> uint8 images``): the ComfyUI node implements it with
ComfyUI's own sampling API, tests and benchmarks with anything else. Everything else (seeds, control
assignment, batching, selection, retries, provenance, report) lives here and is covered in CI.

Determinism: a candidate's seed and control image depend only on (run seed, sampler seed, identity,
attempt, candidate); selection runs after a whole round is sampled, in plan order, so the outcome does
not depend on the batch size.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import FDTAError, InputError, check_choice
from ..faces.identity import IdentityIndex
from ..faces.keypoints import planned_expression
from ..faceset import FACE_SIZE, ChunkStamp, Dropped, FaceSet, Provenance
from ..plan import IdentityPlan, IdentitySpec
from .seeds import CONTROL_POLICIES, STAGE, candidate_seed, control_index
from .selection import FaceAnalysis, FaceAnalyzer, Rejection, SelectionCriteria, choose_detailed

log = logging.getLogger(__name__)

#: What happens to identities that have no acceptable candidate after the last retry:
#: ``skip`` leaves them out of the faceset and lists them (report, contact sheet, warning log);
#: ``error`` stops the node with the list and the reasons.
ON_FAILURE: tuple[str, ...] = ("skip", "error")

#: Side of the thumbnails kept for the contact sheet.
THUMB = 160


class SelectionFailedError(FDTAError, RuntimeError):
    """Some identities had no acceptable candidate after every retry (raised with ``on_failure='error'``)."""


@dataclass(frozen=True)
class ACGSettings:
    """How many candidates, retries and what batch size; ``seed`` is the sampler node's seed widget
    (mixed into every candidate seed, so changing it re-rolls faces without changing the plan)."""

    candidates: int = 4
    retries: int = 2
    batch_size: int = 8
    control_policy: str = "random"
    seed: int = 0
    on_failure: str = "skip"

    def __post_init__(self) -> None:
        if self.candidates < 1:
            raise InputError(f"candidates must be >= 1, got {self.candidates}", where="candidates")
        if self.retries < 0:
            raise InputError(f"retries must be >= 0, got {self.retries}", where="retries")
        if self.batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {self.batch_size}", where="batch_size")
        check_choice(None, "control_assignment", self.control_policy, CONTROL_POLICIES)
        check_choice(None, "on_failure", self.on_failure, ON_FAILURE, what="on_failure")


@dataclass(frozen=True)
class CandidateJob:
    """One image to sample: identity ``identity`` (plan position ``slot``), retry round ``attempt``,
    candidate ``candidate``, with its own seed, control image and prompts."""

    slot: int
    identity: int
    attempt: int
    candidate: int
    seed: int
    control: int
    prompt: str
    negative_prompt: str

    @property
    def name(self) -> str:
        return f"a{self.attempt}c{self.candidate}"


@dataclass
class CandidateRecord:
    """A sampled candidate, what the face models saw, and the verdict."""

    job: CandidateJob
    thumbnail: np.ndarray
    analysis: FaceAnalysis | None = None
    image: np.ndarray | None = None  # full resolution, kept for the chosen candidate only
    status: str = "pending"  # chosen | rejected | runner_up | unchecked
    reasons: list[Rejection] = field(default_factory=list)
    nearest: tuple[float, str] | None = None  # nearest accepted identity when it was checked

    def summary(self) -> dict[str, Any]:
        a = self.analysis
        geom = None if a is None else a.geometry()
        return {
            "attempt": self.job.attempt,
            "candidate": self.job.candidate,
            "seed": self.job.seed,
            "control_index": self.job.control,
            "status": self.status,
            "reasons": [r.code for r in self.reasons],
            "det_score": None if a is None or not a.detected else round(float(a.det_score), 4),
            "keypoints": None if geom is None else geom.to_dict(),
            "nearest_accepted_cosine": None if self.nearest is None else round(self.nearest[0], 6),
        }


SampleFn = Callable[[Sequence[CandidateJob]], np.ndarray]


def plan_round(
    plan: IdentityPlan, slots: Sequence[int], attempt: int, settings: ACGSettings, n_controls: int
) -> list[CandidateJob]:
    """The candidate jobs of retry round ``attempt`` for the identities at plan positions ``slots``."""
    jobs: list[CandidateJob] = []
    for slot in slots:
        spec = plan.identities[slot]
        for k in range(settings.candidates):
            jobs.append(
                CandidateJob(
                    slot=slot,
                    identity=int(spec.index),
                    attempt=attempt,
                    candidate=k,
                    seed=candidate_seed(plan.run_seed, spec.index, attempt, k, salt=settings.seed),
                    control=control_index(
                        plan.run_seed,
                        spec.index,
                        attempt,
                        k,
                        n_controls,
                        candidates=settings.candidates,
                        policy=settings.control_policy,
                        salt=settings.seed,
                        slot=slot,
                    ),
                    prompt=spec.prompt,
                    negative_prompt=spec.negative_prompt,
                )
            )
    return jobs


def make_batches(jobs: Sequence[CandidateJob], batch_size: int) -> list[list[CandidateJob]]:
    """Consecutive groups of at most ``batch_size`` jobs (several identities share one sampler call)."""
    return [list(jobs[i : i + batch_size]) for i in range(0, len(jobs), batch_size)]


def thumbnail(image: np.ndarray, side: int = THUMB) -> np.ndarray:
    """Square thumbnail (letterboxed) of a uint8 RGB image."""
    from PIL import Image

    h, w = image.shape[:2]
    scale = side / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    small = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR))
    out = np.zeros((side, side, 3), np.uint8)
    y0, x0 = (side - nh) // 2, (side - nw) // 2
    out[y0 : y0 + nh, x0 : x0 + nw] = small
    return out


def center_face(image: np.ndarray) -> np.ndarray:
    """Centre square crop resized to 112x112: the stand-in "aligned" face when no face models are
    connected (unchecked mode; recorded as such in provenance)."""
    from PIL import Image

    h, w = image.shape[:2]
    s = min(h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    crop = Image.fromarray(np.ascontiguousarray(image[y0 : y0 + s, x0 : x0 + s]))
    return np.asarray(crop.resize((FACE_SIZE, FACE_SIZE), Image.BICUBIC))


def _check_batch(images: Any, n: int) -> np.ndarray:
    arr = np.asarray(images)
    if arr.ndim != 4 or arr.shape[0] != n or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise InputError(
            f"the sampler returned {arr.dtype} {list(arr.shape)}, expected uint8 [{n}, H, W, 3]",
            where="ACG sampler",
        )
    return arr


def _check_analyses(analyses: Sequence[FaceAnalysis], n: int) -> list[FaceAnalysis]:
    out = list(analyses)
    if len(out) != n:
        raise InputError(f"the face analyser returned {len(out)} results for {n} images", where="face_models")
    for a in out:
        if a.aligned is not None and (
            a.aligned.shape != (FACE_SIZE, FACE_SIZE, 3) or a.aligned.dtype != np.uint8
        ):
            raise InputError(
                f"aligned faces must be uint8 {FACE_SIZE}x{FACE_SIZE}x3, got {a.aligned.dtype} {list(a.aligned.shape)}",
                where="face_models",
            )
    return out


@dataclass
class ACGResult:
    """Everything one ACG run produced; ``faceset()``, ``images()``, ``report()`` and
    ``fdta_core.acg.contact.contact_sheet()`` turn it into the node's outputs."""

    plan: IdentityPlan
    settings: ACGSettings
    records: list[CandidateRecord]
    chosen: dict[int, CandidateRecord]
    failed: list[int]
    checked: bool
    rounds: int
    meta: dict[str, Any] = field(default_factory=dict)
    #: per plan position: how the winner was picked (rule, nearest accepted identity, margins)
    selections: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: per control image: the parameters it was drawn from (``FDTAControlMaps``), when known
    control_records: list[dict[str, Any]] | None = None
    criteria: SelectionCriteria | None = None

    def records_of(self, slot: int) -> list[CandidateRecord]:
        return [r for r in self.records if r.job.slot == slot]

    @property
    def chosen_slots(self) -> list[int]:
        return sorted(self.chosen)

    def provenance(self, slot: int) -> Provenance:
        rec = self.chosen[slot]
        spec: IdentitySpec = self.plan.identities[slot]
        a = rec.analysis
        acg: dict[str, Any] = {
            "attempt": rec.job.attempt,
            "candidate": rec.job.candidate,
            "control_index": rec.job.control,
            "checked": self.checked,
            "det_score": None if a is None else round(float(a.det_score), 4),
            "gender": None if a is None else a.gender,
            "age": None if a is None or a.age is None else round(float(a.age), 2),
            "planned_gender": spec.gender,
            "planned_age": spec.age,
            "prompt": spec.prompt,
            "negative_prompt": spec.negative_prompt,
            "prompt_source": spec.prompt_source,
            "run_seed": self.plan.run_seed,
            "sampler_seed": self.settings.seed,
            "control_policy": self.settings.control_policy,
            "candidates": [r.summary() for r in self.records_of(slot)],
            "repair_round": int(self.plan.repair_round),
            **self.meta,
        }
        if self.checked:
            acg["selection"] = self.selections.get(slot, {})
            acg["checks"] = self.check_record(slot, rec)
        if self.control_records is not None and 0 <= rec.job.control < len(self.control_records):
            acg["control_map"] = self.control_records[rec.job.control]
        return Provenance(
            identity=int(spec.index),
            attributes=dict(spec.attributes),
            seeds={STAGE: int(rec.job.seed)},
            history=[STAGE],
            extra={STAGE: acg},
        )

    def check_record(self, slot: int, rec: CandidateRecord) -> dict[str, Any]:
        """Expression and pose checks of the chosen candidate: planned, measured, thresholds, outcome."""
        spec: IdentitySpec = self.plan.identities[slot]
        kc = (self.criteria or SelectionCriteria()).keypoints
        geom = None if rec.analysis is None else rec.analysis.geometry()
        planned = planned_expression(spec.attributes.get("expression"))
        if not kc.check_expression:
            expr = "off"
        elif geom is None:
            expr = "unchecked (no keypoints)"
        elif planned is None:
            expr = "unchecked (the planned expression is not checkable from keypoints)"
        else:
            expr = "pass"
        pose = "off" if not kc.check_pose else ("unchecked (no keypoints)" if geom is None else "pass")
        return {
            "expression": {
                "planned": spec.attributes.get("expression"),
                "planned_class": planned,
                "mouth_ratio": None if geom is None else round(geom.mouth_ratio, 4),
                "outcome": expr,
            },
            "pose": {**({} if geom is None else geom.to_dict()), "outcome": pose},
            "thresholds": kc.to_dict(),
        }

    def diversity(self):
        """Pairwise similarity distribution of the chosen source faces (None with fewer than 2)."""
        from ..faces.identity_diversity import similarity_stats

        embs = [
            self.chosen[s].analysis.embedding  # type: ignore[union-attr]
            for s in self.chosen_slots
            if self.chosen[s].analysis is not None and self.chosen[s].analysis.embedding is not None  # type: ignore[union-attr]
        ]
        if len(embs) < 2:
            return None
        return similarity_stats(np.stack([np.asarray(e, np.float64) for e in embs]))

    def dropped(self) -> list[Dropped]:
        """One record per identity without an acceptable candidate: every reason any of its candidates
        was rejected for (in first-seen order), the report line, and the candidates tried."""
        out = []
        for slot in self.failed:
            spec: IdentitySpec = self.plan.identities[slot]
            recs = self.records_of(slot)
            codes = list(dict.fromkeys(r.code for rec in recs for r in rec.reasons))
            details = list(dict.fromkeys(r.detail for rec in recs for r in rec.reasons))
            out.append(
                Dropped(
                    STAGE,
                    int(spec.index),
                    tuple(codes),
                    f"no acceptable candidate after {len(recs)} candidates: " + "; ".join(details),
                    {
                        "attributes": dict(spec.attributes),
                        "planned_gender": spec.gender,
                        "planned_age": spec.age,
                        "prompt": spec.prompt,
                        "run_seed": self.plan.run_seed,
                        "sampler_seed": self.settings.seed,
                        "repair_round": int(self.plan.repair_round),
                        "candidates": [r.summary() for r in recs],
                    },
                )
            )
        return out

    def faceset(self) -> FaceSet:
        """The source faceset: one aligned 112x112 face per chosen identity, in plan order; identities
        without an acceptable candidate are listed in its ``dropped`` records."""
        slots = self.chosen_slots
        stamp = self.chunk_stamp()
        if not slots:
            empty = dataclasses.replace(FaceSet.empty(), chunk=stamp)
            empty.dropped = self.dropped()
            return empty
        faces = []
        for s in slots:
            rec = self.chosen[s]
            if rec.analysis is not None and rec.analysis.aligned is not None:
                faces.append(rec.analysis.aligned)
            else:
                assert rec.image is not None
                faces.append(center_face(rec.image))
        out = FaceSet.from_sources(np.stack(faces), [self.provenance(s) for s in slots], chunk=stamp)
        out.dropped = self.dropped()
        return out

    def chunk_stamp(self) -> ChunkStamp | None:
        """The plan's range: the chunk the faces belong to, whichever identities failed."""
        if len(self.plan) == 0:
            return None
        return ChunkStamp(
            int(self.plan.start),
            int(self.plan.end),
            self.plan.spec_hash,
            int(self.plan.run_seed),
            int(self.plan.repair_round),
        )

    def accepted_index(self) -> IdentityIndex:
        """The identities this run accepted (checked ones with an embedding), for the run's index."""
        out = IdentityIndex()
        for s in self.chosen_slots:
            a = self.chosen[s].analysis
            if a is not None and a.embedding is not None:
                ident = int(self.plan.identities[s].index)
                out.add(f"identity {ident}", a.embedding, ident)
        return out

    def images(self) -> np.ndarray:
        """Full-resolution chosen images [N,H,W,3] in plan order (N may be 0)."""
        imgs = [self.chosen[s].image for s in self.chosen_slots]
        if not imgs:
            return np.zeros((0, 1, 1, 3), np.uint8)
        return np.stack([i for i in imgs if i is not None])

    def report(self) -> str:
        """A human-readable account: one line per identity, then a summary."""
        lines = []
        for slot, spec in enumerate(self.plan.identities):
            recs = self.records_of(slot)
            counts = Counter(r.reasons[0].code for r in recs if r.status == "rejected" and r.reasons)
            why = ", ".join(f"{Rejection.SHORT.get(c, c)} x{n}" for c, n in sorted(counts.items()))
            if slot in self.chosen:
                rec = self.chosen[slot]
                det = "" if rec.analysis is None else f" det={rec.analysis.det_score:.2f}"
                lines.append(
                    f"identity {spec.index}: chose {rec.job.name} seed={rec.job.seed} control={rec.job.control}{det}"
                    + (f" ({len(recs)} candidates; rejected: {why})" if why else f" ({len(recs)} candidates)")
                )
            else:
                lines.append(
                    f"identity {spec.index}: NO ACCEPTABLE CANDIDATE after {len(recs)} candidates ({why})"
                )
        mode = "checked with face models" if self.checked else "UNCHECKED (no face models connected)"
        lines.append(
            f"{len(self.chosen)}/{len(self.plan)} identities have a source face; {len(self.failed)} failed; "
            f"{len(self.records)} candidates in {self.rounds} round(s); {mode}."
        )
        stats = self.diversity() if self.checked else None
        if stats is not None:
            lines.append(stats.summary_line() + " (this chunk's source faces)")
            lines.extend(stats.text_histogram(30))
        return "\n".join(lines)


def first_attempt(plan: IdentityPlan, settings: ACGSettings) -> int:
    """The first attempt number of ``plan``: 0 for a chunk's first pass; repair round k (an identity the
    CSIM filter or the leak check left without images) continues after the attempts of the rounds
    before it, so every (identity, attempt) has its own seeds and control image."""
    return int(plan.repair_round) * (settings.retries + 1)


def run_acg(
    plan: IdentityPlan,
    sample: SampleFn,
    n_controls: int,
    *,
    settings: ACGSettings = ACGSettings(),
    criteria: SelectionCriteria = SelectionCriteria(),
    analyzer: FaceAnalyzer | None = None,
    real: IdentityIndex | None = None,
    prior: IdentityIndex | None = None,
    meta: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
    control_records: Sequence[dict[str, Any]] | None = None,
) -> ACGResult:
    """Generate one source face per identity of ``plan``.

    ``real``: embeddings of real people that no identity may resemble (e.g. the photos behind the
    control images); ``prior``: identities accepted earlier (other chunks) that must not be duplicated.
    Without ``analyzer`` nothing is checked: candidate 0 of every identity is kept and marked unchecked.
    ``progress(done_batches, total_batches)`` is called after every sampler call; whatever it raises
    (ComfyUI's interrupt) propagates. ``control_records``: per control image, the parameters it was
    drawn from (``FDTAControlMaps``); the chosen candidate's record goes into its provenance.
    """
    if len(plan) == 0:
        raise InputError(
            "the identity plan is empty", where="plan", fix="give the attribute spec an identity_count >= 1."
        )
    check_controls(plan, n_controls, settings.control_policy, control_records)
    real = real if real is not None else IdentityIndex()
    accepted = prior.copy() if prior is not None else IdentityIndex()
    records: list[CandidateRecord] = []
    chosen: dict[int, CandidateRecord] = {}
    pending = list(range(len(plan)))
    selections: dict[int, dict[str, Any]] = {}
    done = 0
    total = math.ceil(len(pending) * settings.candidates / settings.batch_size)
    rounds = 0
    first = first_attempt(plan, settings)
    for attempt in range(first, first + settings.retries + 1):
        rounds += 1
        jobs = plan_round(plan, pending, attempt, settings, n_controls)
        batches = make_batches(jobs, settings.batch_size)
        if attempt > first:
            total += len(batches)
            log.info("ACG retry round %d for %d identities (%d candidates)", attempt, len(pending), len(jobs))
        round_recs: list[CandidateRecord] = []
        for batch in batches:
            images = _check_batch(sample(batch), len(batch))
            analyses = (
                _check_analyses(analyzer.analyze(images), len(batch))
                if analyzer is not None
                else [None] * len(batch)
            )
            for job, img, an in zip(batch, images, analyses, strict=True):
                round_recs.append(
                    CandidateRecord(job=job, thumbnail=thumbnail(img), analysis=an, image=img.copy())
                )
            done += 1
            if progress is not None:
                progress(done, total)
        by_slot: dict[int, list[CandidateRecord]] = {}
        for r in round_recs:
            by_slot.setdefault(r.job.slot, []).append(r)
        still: list[int] = []
        for slot in pending:  # plan order: uniqueness decisions do not depend on batching
            recs = by_slot[slot]
            spec = plan.identities[slot]
            if analyzer is None:
                pick: int | None = 0
                reasons: list[list[Rejection]] = [[]] + [
                    [Rejection("not_chosen", "unchecked mode keeps candidate 0")] for _ in recs[1:]
                ]
            else:
                choice = choose_detailed(
                    [r.analysis for r in recs],  # type: ignore[misc]
                    gender=spec.gender,
                    age=spec.age,
                    criteria=criteria,
                    accepted=accepted,
                    real=real,
                    names=[r.job.name for r in recs],
                    expression=planned_expression(spec.attributes.get("expression")),
                )
                pick, reasons = choice.index, choice.reasons
                for r, near in zip(recs, choice.nearest, strict=True):
                    r.nearest = near
                if pick is not None:
                    selections[slot] = choice.selection(criteria)
            for i, (r, why) in enumerate(zip(recs, reasons, strict=True)):
                r.reasons = why
                if i == pick:
                    r.status = "chosen" if analyzer is not None else "unchecked"
                else:
                    r.status = "runner_up" if why and why[0].code == "not_chosen" else "rejected"
                    r.image = None
            if pick is None:
                still.append(slot)
            else:
                rec = recs[pick]
                chosen[slot] = rec
                if rec.analysis is not None and rec.analysis.embedding is not None:
                    accepted.add(f"identity {spec.index}", rec.analysis.embedding, int(spec.index))
        records.extend(round_recs)
        pending = still
        if not pending:
            break
    # keep records in (slot, attempt, candidate) order for reports and the contact sheet
    records.sort(key=lambda r: (r.job.slot, r.job.attempt, r.job.candidate))
    result = ACGResult(
        plan=plan,
        settings=settings,
        records=records,
        chosen=chosen,
        failed=list(pending),
        checked=analyzer is not None,
        rounds=rounds,
        meta=dict(meta or {}),
        selections=selections,
        control_records=None if control_records is None else [dict(r) for r in control_records],
        criteria=criteria,
    )
    if pending:
        ids = [plan.identities[s].index for s in pending]
        msg = (
            f"{len(ids)} of {len(plan)} identities had no acceptable candidate after {settings.retries} retries: "
            f"identities {ids[:20]}{' ...' if len(ids) > 20 else ''}"
        )
        if settings.on_failure == "error":
            details = "\n".join(line for line in result.report().splitlines() if "NO ACCEPTABLE" in line)
            raise SelectionFailedError(
                f"{msg}.\n{details}",
                where="selection",
                fix="raise retries or candidates, loosen the tolerances, or set on_failure to 'skip'.",
            )
        log.warning("%s; they are left out of the faceset (see the report and contact sheet)", msg)
    return result


def check_controls(
    plan: IdentityPlan, n_controls: int, policy: str, records: Sequence[dict[str, Any]] | None
) -> None:
    """A per-identity control batch must hold one image per identity of the plan, and maps drawn for
    this plan (their recorded identity and run seed agree)."""
    if records is not None and len(records) != n_controls:
        raise InputError(
            f"{len(records)} control-map records for {n_controls} control images",
            where="control_parameters",
            fix="connect the parameters output of the same FDTAControlMaps node as the images.",
        )
    if policy != "per_identity":
        return
    if n_controls != len(plan):
        raise InputError(
            f"per_identity control assignment needs one control image per identity: {n_controls} images for "
            f"{len(plan)} identities",
            where="control_images",
            fix="connect FDTAControlMaps driven by the same plan (one map per identity), or choose random or cycle.",
        )
    for slot, (spec, rec) in enumerate(zip(plan.identities, records or [], strict=False)):
        ident, seed = rec.get("identity"), rec.get("run_seed")
        if ident is not None and (int(ident) != int(spec.index) or int(seed) != int(plan.run_seed)):
            raise InputError(
                f"control map {slot} was drawn for identity {ident} (run seed {seed}), but the plan's identity "
                f"there is {spec.index} (run seed {plan.run_seed})",
                where="control_images",
                fix="drive FDTAControlMaps with the same plan as the sampler.",
            )
