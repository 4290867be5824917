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
    the normalised spec itself (JSON-able), so later stages can re-formulate prompts."""

    run_seed: int
    start: int
    identities: tuple[IdentitySpec, ...]
    spec_hash: str = ""
    spec: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def count(self) -> int:
        return len(self.identities)

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
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IdentityPlan:
        return cls(
            run_seed=int(data["run_seed"]),
            start=int(data["start"]),
            identities=tuple(IdentitySpec.from_dict(d) for d in data["identities"]),
            spec_hash=str(data.get("spec_hash", "")),
            spec=dict(data.get("spec") or {}),
        )

    def concat(self, other: IdentityPlan) -> IdentityPlan:
        """Join two adjacent chunks of the same run (same seed and spec)."""
        if (other.run_seed, other.spec_hash) != (self.run_seed, self.spec_hash):
            raise ValueError("plans of different runs (seed or spec differ) cannot be joined")
        if other.start != self.start + self.count:
            raise ValueError(f"plan starting at {other.start} does not follow {self.start}+{self.count}")
        return dataclasses.replace(self, identities=self.identities + other.identities)
