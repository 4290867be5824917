"""``FDTA_IDENTITY_PLAN``: the identities of one chunk, their attributes and formulated prompts.

This module is the data contract between the attribute stage (which builds plans) and every later stage
(the ACG sampler reads prompts and the gender/age targets; provenance copies the attributes). A plan for
identities ``[start, start+count)`` depends only on the spec and the run seed, so chunks compose.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

#: The 12 fields of an FDTA face description, in prompt priority order (DESIGN 5.6).
FIELDS: tuple[str, ...] = (
    "gender",
    "race",
    "age",
    "eyes",
    "eyebrows",
    "nose",
    "face_shape",
    "lips",
    "hair",
    "jawline",
    "cheeks",
    "expression",
)


#: Digits of each bound in a chunk name (``000000000-000000100``): 2^24 identities fit, names sort.
CHUNK_NAME_DIGITS = 9


def chunk_name(start: int, end: int) -> str:
    """Name of the chunk of identities ``[start, end)``, shared by the runner and the dataset writer."""
    return f"{int(start):0{CHUNK_NAME_DIGITS}d}-{int(end):0{CHUNK_NAME_DIGITS}d}"


@dataclass(frozen=True)
class IdentitySpec:
    """One planned identity.

    ``attributes`` maps each field of :data:`FIELDS` that the spec enables to its value (as text;
    ``age`` as whole years); ``gender`` (``"male"`` / ``"female"``) and ``age`` (years) are the targets
    the ACG selection checks. ``prompt_source`` says where the description came from: ``"grammar"``,
    ``"llm"`` or ``"llm-fallback"`` (the LLM failed and the grammar was used, as the user's policy
    allowed). ``extra`` holds provenance details: ``grammar`` version, ``spec_hash``, ``age_bin``,
    ``dropped`` (phrases left out to fit CLIP's window), and for LLM prompts ``description`` (field ->
    phrase), ``llm_model``, ``llm_error`` (why a fallback happened; never a key).
    """

    index: int
    attributes: dict[str, str]
    prompt: str
    negative_prompt: str
    gender: str | None = None
    age: int | None = None
    prompt_source: str = "grammar"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IdentitySpec:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class IdentityPlan:
    """The identities ``[start, start + count)`` of a run with ``run_seed``; ``spec_hash`` identifies the
    attribute spec that produced them (two plans compose only when seed and hash agree). ``spec`` is
    the normalised spec itself (JSON-able), so later stages can re-formulate prompts.

    A *repair* plan (``repair_round`` >= 1, see :func:`repair_plan`) holds only the identities of the
    chunk ``[start, start + chunk_count)`` that an earlier pass left missing: the ACG regenerates them
    with the attempt seeds of that round and the dataset writer adds them to the committed chunk.
    """

    run_seed: int
    start: int
    identities: tuple[IdentitySpec, ...]
    spec_hash: str = ""
    spec: dict[str, Any] = field(default_factory=dict, compare=False)
    #: the chunk's size when the plan holds a subset of it (a repair round); 0: ``len(identities)``
    chunk_count: int = 0
    #: 0 for a chunk's first pass; k >= 1 for its k-th repair round
    repair_round: int = 0

    @property
    def count(self) -> int:
        return len(self.identities)

    @property
    def end(self) -> int:
        """End of the chunk the plan belongs to (a repair plan's chunk is wider than its identities)."""
        return int(self.start) + (int(self.chunk_count) or len(self.identities))

    def __len__(self) -> int:
        return len(self.identities)

    def __iter__(self):
        return iter(self.identities)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_seed": self.run_seed,
            "start": self.start,
            "spec_hash": self.spec_hash,
            "spec": self.spec,
            "identities": [i.to_dict() for i in self.identities],
            "chunk_count": self.chunk_count,
            "repair_round": self.repair_round,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IdentityPlan:
        return cls(
            run_seed=int(data["run_seed"]),
            start=int(data["start"]),
            identities=tuple(IdentitySpec.from_dict(d) for d in data["identities"]),
            spec_hash=str(data.get("spec_hash", "")),
            spec=dict(data.get("spec") or {}),
            chunk_count=int(data.get("chunk_count") or 0),
            repair_round=int(data.get("repair_round") or 0),
        )

    def concat(self, other: IdentityPlan) -> IdentityPlan:
        """Join two adjacent chunks of the same run (same seed and spec)."""
        if (other.run_seed, other.spec_hash) != (self.run_seed, self.spec_hash):
            raise ValueError("plans of different runs (seed or spec differ) cannot be joined")
        if self.repair_round or other.repair_round:
            raise ValueError("repair plans (a subset of a chunk) cannot be joined")
        if other.start != self.start + self.count:
            raise ValueError(f"plan starting at {other.start} does not follow {self.start}+{self.count}")
        return dataclasses.replace(self, identities=self.identities + other.identities)


@dataclass(frozen=True)
class RepairRequest:
    """Regenerate ``identities`` of a chunk in repair round ``round`` (>= 1)."""

    round: int
    identities: tuple[int, ...]

    def text(self) -> str:
        """The value of ``FDTAAttributeSpec.repair`` that asks for this repair."""
        return f"{self.round}: " + ", ".join(str(i) for i in self.identities)


def parse_repair(text: str | None, *, where: str = "repair") -> RepairRequest | None:
    """``"ROUND: ID, ID, ..."`` (e.g. ``"1: 3, 7"``) -> :class:`RepairRequest`; empty text -> None."""
    from .errors import InputError

    raw = str(text or "").strip()
    if not raw:
        return None
    fix = "write the repair round, a colon and the identity numbers, e.g. '1: 3, 7' (or leave it empty)."
    if ":" not in raw:
        raise InputError(f"{raw!r} has no 'ROUND:' prefix", where=where, fix=fix)
    head, tail = raw.split(":", 1)
    try:
        rnd = int(head.strip())
        ids = tuple(int(x) for x in tail.replace(";", ",").replace(" ", ",").split(",") if x.strip())
    except ValueError:
        raise InputError(f"{raw!r} is not 'ROUND: ID, ID, ...'", where=where, fix=fix) from None
    if rnd < 1:
        raise InputError(f"repair round must be >= 1, got {rnd}", where=where, fix=fix)
    if not ids:
        raise InputError(f"{raw!r} names no identity", where=where, fix=fix)
    if len(set(ids)) != len(ids):
        raise InputError(f"{raw!r} names an identity twice", where=where, fix=fix)
    return RepairRequest(rnd, tuple(sorted(ids)))


def repair_plan(plan: IdentityPlan, request: RepairRequest, *, where: str = "repair") -> IdentityPlan:
    """The subset of the chunk plan ``plan`` that ``request`` regenerates (same run, same chunk range)."""
    from .errors import InputError

    if plan.repair_round:
        raise InputError("the plan already is a repair plan", where=where)
    by_index = {int(i.index): i for i in plan.identities}
    outside = [i for i in request.identities if i not in by_index]
    if outside:
        raise InputError(
            f"identities {outside[:10]} are not in this chunk ({plan.start}..{plan.end - 1})",
            where=where,
            fix="name identities of the chunk the spec plans (identity_start .. identity_start + identity_count - 1).",
        )
    return dataclasses.replace(
        plan,
        identities=tuple(by_index[i] for i in request.identities),
        chunk_count=len(plan.identities),
        repair_round=int(request.round),
    )
