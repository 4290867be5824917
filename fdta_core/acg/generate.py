"""One ACG chunk from start to outputs: what ``FDTAACGSampler.execute`` calls.

The node hands over ComfyUI objects only through a sampler factory (``make_sample(controls, on_step)``
returns the ``sample(jobs) -> uint8`` callback of :func:`fdta_core.acg.run_acg`); everything else lives
here so that CI covers it without ComfyUI:

* :class:`ACGOptions`: the advanced settings (selection criteria, retries, edge preprocessing) that
  ``FDTAACGOptions`` feeds the sampler; its defaults are the sampler's defaults when nothing is connected;
* :func:`real_person_bank`: every real person no identity may resemble (control photos, connected real
  faces, the STG reference bank's subjects, real sets named by path);
* :class:`StepProgress`: sampler steps and batches folded into one monotone progress count;
* :func:`sampling_meta`: the sampling settings recorded in every identity's provenance;
* :func:`generate_sources`: the whole chunk (controls, bank, run index, run, index update, outputs).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, check_choice
from ..faces.identity import (
    IdentityIndex,
    RunIndex,
    bank_subject_embeddings,
    model_file_id,
    real_index,
    resolve_index_folder,
    subject_embeddings,
)
from ..faces.keypoints import KeypointCriteria
from ..faceset import FaceSet
from ..plan import IdentityPlan
from .contact import contact_sheet
from .edges import EDGE_METHODS, EdgeSettings, control_images
from .engine import ON_FAILURE, ACGResult, ACGSettings, SampleFn, run_acg
from .seeds import CONTROL_POLICIES
from .selection import PREFER, FaceAnalyzer, SelectionCriteria

log = logging.getLogger(__name__)


#: The core's own defaults, which the flat options below take rather than repeat.
_EDGE, _SET, _SEL, _KP = EdgeSettings(), ACGSettings(), SelectionCriteria(), KeypointCriteria()


@dataclass(frozen=True)
class ACGOptions:
    """The advanced ACG settings (``FDTAACGOptions``): edge preprocessing of the control images, how
    candidates pick them, retries, and the selection criteria, flat in widget order. The defaults are
    those of the core's settings classes (what the sampler uses when no options node is connected)."""

    control_preprocess: str = _EDGE.method
    canny_low: int = _EDGE.low
    canny_high: int = _EDGE.high
    edge_blur: int = _EDGE.blur
    control_assignment: str = _SET.control_policy
    retries: int = _SET.retries
    on_failure: str = _SET.on_failure
    min_det_score: float = _SEL.min_det_score
    check_gender: bool = _SEL.check_gender
    check_age: bool = _SEL.age_tolerance is not None
    age_tolerance: float = _SEL.age_tolerance
    uniqueness_threshold: float = _SEL.uniqueness_threshold
    real_person_threshold: float = _SEL.real_person_threshold
    real_sets: str = ""
    # issue 17 (appended: widget order is part of saved workflows)
    prefer: str = _SEL.prefer
    check_expression: bool = _KP.check_expression
    smile_ratio: float = _KP.smile_ratio
    expression_margin: float = _KP.expression_margin
    check_pose: bool = _KP.check_pose
    max_yaw: float = _KP.max_yaw
    max_roll: float = _KP.max_roll
    max_pitch_offset: float = _KP.max_pitch_offset

    def __post_init__(self) -> None:
        check_choice(None, "control_preprocess", self.control_preprocess, EDGE_METHODS)
        check_choice(None, "prefer", self.prefer, PREFER)
        check_choice(None, "control_assignment", self.control_assignment, CONTROL_POLICIES)
        check_choice(None, "on_failure", self.on_failure, ON_FAILURE, what="on_failure")
        self.edge()  # Canny thresholds and blur
        self.criteria()  # thresholds and tolerances

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The option names in widget order."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> ACGOptions:
        """Options from widget values (unknown keys refused, missing keys at their defaults)."""
        unknown = sorted(set(values) - set(cls.names()))
        if unknown:
            raise InputError(
                f"unknown ACG option(s) {unknown}", where="options", fix=f"use {list(cls.names())}."
            )
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def edge(self) -> EdgeSettings:
        return EdgeSettings(
            self.control_preprocess, int(self.canny_low), int(self.canny_high), int(self.edge_blur)
        )

    def criteria(self) -> SelectionCriteria:
        return SelectionCriteria(
            min_det_score=float(self.min_det_score),
            check_gender=bool(self.check_gender),
            age_tolerance=float(self.age_tolerance) if self.check_age else None,
            uniqueness_threshold=float(self.uniqueness_threshold),
            real_person_threshold=float(self.real_person_threshold),
            keypoints=KeypointCriteria(
                **{
                    f.name: type(getattr(_KP, f.name))(getattr(self, f.name))
                    for f in fields(KeypointCriteria)
                }
            ),
            prefer=self.prefer,
        )

    def settings(self, *, candidates: int, batch_size: int, seed: int) -> ACGSettings:
        return ACGSettings(
            candidates=int(candidates),
            retries=int(self.retries),
            batch_size=int(batch_size),
            control_policy=self.control_assignment,
            seed=int(seed),
            on_failure=self.on_failure,
        )

    def real_set_paths(self) -> list[str]:
        """``real_sets`` split on ``;`` and newlines."""
        return [x.strip() for x in str(self.real_sets or "").replace("\n", ";").split(";") if x.strip()]


def real_person_bank(
    analyzer: FaceAnalyzer,
    *,
    photos: np.ndarray | None = None,
    real_faces: FaceSet | None = None,
    reference_bank: Any = None,
    real_sets: Sequence[str] = (),
    face_models: Any = None,
    real_cache: str | Path | None = None,
) -> IdentityIndex:
    """Every real person no generated identity may resemble: the faces in control ``photos`` (pass None
    when the control images already are edge maps), the aligned ``real_faces``, the subjects of the STG
    ``reference_bank`` (anything with ``images`` and ``subjects``), and each ``real_sets`` path (an
    ``.npy`` of identity embeddings, a data-set folder, or an image folder of people, embedded with
    ``face_models``; an image folder's embeddings are cached in ``real_cache``)."""
    from ..faces.audit import real_identities

    real = IdentityIndex()
    if photos is not None and len(photos):
        for k, a in enumerate(analyzer.analyze(photos)):
            if a.detected and a.embedding is not None:
                real.add(f"control photo {k}", a.embedding)
    if isinstance(real_faces, FaceSet) and len(real_faces):
        embs = analyzer.embed_aligned(real_faces.images)
        real.extend([f"real face {i} (label {int(x)})" for i, x in enumerate(real_faces.labels)], embs)
    if reference_bank is not None and len(reference_bank):
        if hasattr(reference_bank, "subject_embeddings"):  # streamed, and cached beside an indexed bank
            cache_id = model_file_id(face_models) if face_models is not None else ""
            subjects = bank_subject_embeddings(reference_bank, analyzer.embed_aligned, cache_id=cache_id)
        else:
            subjects = subject_embeddings(
                reference_bank.images, reference_bank.subjects, analyzer.embed_aligned
            )
        real.merge_from(real_index(subjects))
    for path in real_sets:
        got = real_identities(path, face_models, cache_dir=real_cache)
        real.merge_from(real_index(sets=[(path, got.centers)]))
    return real


class StepProgress:
    """Sampler steps and batches as one progress count: ``steps`` units per sampler call, so the bar moves
    during a call and never goes back when a retry round adds batches."""

    def __init__(self, batches: int, steps: int, report: Callable[[int, int], None] | None) -> None:
        self.done, self.total, self.steps, self.report = 0, max(int(batches), 1), max(int(steps), 1), report

    @property
    def units(self) -> int:
        return self.total * self.steps

    def on_batch(self, done: int, total: int) -> None:
        self.done, self.total = int(done), max(int(total), 1)
        if self.report is not None:
            self.report(self.done * self.steps, self.units)

    def on_step(self, step: int, _total_steps: int | None = None) -> None:
        if self.report is not None:
            self.report(self.done * self.steps + min(int(step), self.steps), self.units)


def sampling_meta(
    *,
    sampler_name: str,
    scheduler: str,
    steps: int,
    cfg: float,
    width: int,
    height: int,
    strength: float,
    start_percent: float,
    end_percent: float,
    control_preprocess: str,
) -> dict[str, Any]:
    """The sampling settings every identity's ``acg`` provenance records (enough to re-sample it with a
    plain KSampler + ControlNet from the recorded seed and control image)."""
    return {
        "sampler": sampler_name,
        "scheduler": scheduler,
        "steps": int(steps),
        "cfg": float(cfg),
        "width": int(width),
        "height": int(height),
        "controlnet_strength": float(strength),
        "controlnet_range": [float(start_percent), float(end_percent)],
        "control_preprocess": control_preprocess,
    }


def check_range(start_percent: float, end_percent: float) -> None:
    if float(start_percent) > float(end_percent):
        raise InputError(
            f"start_percent {start_percent} is after end_percent {end_percent}",
            where="start_percent",
            fix="the ControlNet acts from start_percent to end_percent: make start_percent <= end_percent.",
        )


@dataclass
class ACGOutputs:
    """What the sampler node returns: the source faceset, the chosen images (at least one blank frame),
    the contact sheet pages, the report, and the run's result for callers that want more."""

    faceset: FaceSet
    images: np.ndarray
    sheet: np.ndarray
    report: str
    result: ACGResult

    def ui(self) -> dict[str, list[str]]:
        """The prompt-history entries (report and provenance) that API users and the runner read."""
        return {"fdta_acg_report": [self.report], "fdta_acg_provenance": [self.faceset.provenance_json()]}


def generate_sources(
    plan: IdentityPlan,
    photos: np.ndarray,
    make_sample: Callable[[np.ndarray, Callable[[int, int], None]], SampleFn],
    *,
    width: int,
    height: int,
    steps: int,
    candidates: int,
    batch_size: int,
    seed: int,
    options: ACGOptions | None = None,
    analyzer: FaceAnalyzer | None = None,
    face_models: Any = None,
    real_faces: FaceSet | None = None,
    reference_bank: Any = None,
    index_folder: str | Path | None = None,
    meta: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
    where: str = "FDTAACGSampler",
    real_cache: str | Path | None = None,
    control_records: Sequence[dict[str, Any]] | str | None = None,
) -> ACGOutputs:
    """One chunk of source faces. ``photos`` are the control images (uint8 [N,H,W,3]); they become edge
        maps at the sampling size per ``options``; ``make_sample(controls, on_step)`` builds the sampler
        callback over those control images. The face checks use ``analyzer``, else one built from
    ``face_models`` (neither: nothing is checked, candidate 0 is kept). ``index_folder``: the run's identity index (identities of
        earlier chunks are not generated again; this chunk's are added)."""
    options = options or ACGOptions()
    # drawn maps (FDTAControlMaps, with their parameters): used as they are, never taken for real people
    if control_records is not None:
        control_records = parse_control_records(control_records, len(photos))
        options = replace(options, control_preprocess="none")
    if analyzer is None and face_models is not None:
        from .faces_adapter import as_analyzer

        # detect generously, judge by min_det_score: a weak detection is a rejection with a reason
        analyzer = as_analyzer(face_models, det_threshold=max(0.05, min(0.2, float(options.min_det_score))))
    settings = options.settings(candidates=candidates, batch_size=batch_size, seed=seed)
    criteria = options.criteria()
    controls = control_images(photos, int(width), int(height), options.edge())
    real = IdentityIndex()
    if analyzer is not None:
        real = real_person_bank(
            analyzer,
            photos=photos if options.control_preprocess != "none" else None,  # real photos: never copy them
            real_faces=real_faces,
            reference_bank=reference_bank,
            real_sets=options.real_set_paths(),
            face_models=face_models,
            real_cache=real_cache,
        )
        log.info("%s: %d real identities to stay away from", where, len(real))
    else:
        log.warning("%s: no face models connected; candidates are NOT checked", where)
    run_index = RunIndex(index_folder) if index_folder is not None else None
    # a repair round (plan.repair_round >= 1) must also differ from the chunk's own other identities
    repaired = [int(i.index) for i in plan.identities] if plan.repair_round else None
    prior = (
        run_index.prior(plan.start, repair_of=(plan.end, repaired) if repaired is not None else None)
        if run_index is not None
        else None
    )
    bar = StepProgress(math.ceil(len(plan) * settings.candidates / settings.batch_size), steps, progress)
    result = run_acg(
        plan,
        make_sample(controls, bar.on_step),
        controls.shape[0],
        settings=settings,
        criteria=criteria,
        analyzer=analyzer,
        real=real,
        prior=prior,
        meta=dict(meta or {}),
        progress=bar.on_batch,
        control_records=control_records,
    )
    if run_index is not None and analyzer is not None:
        run_index.save_chunk(plan.start, plan.end, result.accepted_index(), replacing=repaired)
    faceset = result.faceset()
    images = result.images()
    if images.shape[0] == 0:
        images = np.zeros((1, int(height), int(width), 3), np.uint8)
    report = result.report()
    log.info("%s: %s", where, report.splitlines()[-1])
    return ACGOutputs(faceset, images, contact_sheet(result), report, result)


def index_folder(name: str | None, roots: Sequence[str]) -> Path | None:
    """The run's identity index folder for the sampler's ``identity_index`` widget (None when empty)."""
    if not name or not str(name).strip():
        return None
    return resolve_index_folder(str(name), list(roots))


def parse_control_records(records: Any, n_images: int) -> list[dict[str, Any]]:
    """The ``parameters`` output of ``FDTAControlMaps`` (JSON text or a list of dicts), one per control
    image, checked."""
    import json

    fix = "connect the parameters output of the FDTAControlMaps node that draws control_images (or leave it unconnected)."
    if isinstance(records, str):
        try:
            records = json.loads(records)
        except ValueError as exc:
            raise InputError(
                f"control_parameters is not JSON: {exc}", where="control_parameters", fix=fix
            ) from exc
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise InputError(
            "control_parameters must be a JSON list with one object per control image",
            where="control_parameters",
            fix=fix,
        )
    if len(records) != n_images:
        raise InputError(
            f"control_parameters describes {len(records)} maps but control_images holds {n_images} images",
            where="control_parameters",
            fix=fix,
        )
    return records
