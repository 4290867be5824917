"""Identity plans: spec + run seed + identity range -> attributes and grammar prompts per identity.

Identity ``i`` of a run depends only on (spec, run seed, i): categorical fields come from
:func:`.strata.stratified_values` (one stream per field, balanced over every prefix of the run), the
exact age inside its stratified bin from ``derive_seed(run_seed, "age", i)``. So the plan for
``[0, 1000)`` equals the plans for ``[0, 500)`` and ``[500, 1000)`` joined, on any machine.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..errors import InputError
from ..plan import FIELDS, IdentityPlan, IdentitySpec
from ..seeds import check_seed, derive_seed
from .grammar import GRAMMAR_VERSION, formulate
from .spec import AttributeSpec
from .strata import stratified_values

log = logging.getLogger(__name__)

#: Upper bound on ``start + count`` (stratification simulates every run from identity 0).
MAX_IDENTITIES = 10_000_000


def _check_range(start: int, count: int, run_seed: int) -> None:
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise InputError(
            f"identity_start {start!r} must be an integer >= 0", where="identity_start", fix="use 0 or more."
        )
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise InputError(
            f"identity_count {count!r} must be an integer >= 1", where="identity_count", fix="use 1 or more."
        )
    if start + count > MAX_IDENTITIES:
        raise InputError(
            f"identities up to {start + count} requested; the planner supports {MAX_IDENTITIES}",
            where="identity_count",
            fix="use a smaller range.",
        )
    check_seed(run_seed)


def _group_labels(spec: AttributeSpec, by: str, seed: int, upto: int) -> list[str]:
    """The ``by`` field's value (age: bin label) of identities ``[0, upto)``."""
    if by == "age":
        assert spec.age is not None
        idx = stratified_values(spec.age.weights, seed, f"age:{spec.hash}", 0, upto)
        return [spec.age.labels[i] for i in idx]
    f = spec.fields[by]
    idx = stratified_values(f.weights, seed, f"{by}:{spec.hash}", 0, upto)
    return [f.values[i] for i in idx]


def _conditional_column(spec: AttributeSpec, name: str, seed: int, start: int, count: int) -> list[str]:
    """Values of a field with ``by``: identity ``i`` of group ``g`` (its ``by`` value) takes slot
    ``rank_g(i)`` (how many earlier identities share ``g``) of the group's own stratified stream, so
    every prefix of every group is balanced, whatever the chunking."""
    f = spec.fields[name]
    assert f.by is not None
    labels = _group_labels(spec, f.by, seed, start + count)
    seen: dict[str, int] = {}
    ranks: list[tuple[str, int]] = []
    for i, g in enumerate(labels):
        r = seen.get(g, 0)
        seen[g] = r + 1
        if i >= start:
            ranks.append((g, r))
    out: list[str] = [""] * count
    by_group: dict[str, list[tuple[int, int]]] = {}
    for k, (g, r) in enumerate(ranks):
        by_group.setdefault(g, []).append((k, r))
    for g, items in by_group.items():
        values, weights = f.vocabulary(g)
        lo, hi = items[0][1], items[-1][1]
        idx = stratified_values(weights, seed, f"{name}|{f.by}={g}:{spec.hash}", lo, hi - lo + 1)
        for k, r in items:
            out[k] = values[idx[r - lo]]
    return out


def assign_attributes(spec: AttributeSpec, start: int, count: int, run_seed: int) -> list[dict[str, str]]:
    """Stratified attribute values (field -> text) of identities ``[start, start + count)``."""
    _check_range(start, count, run_seed)
    seed = int(run_seed)
    columns: dict[str, list[str]] = {}
    for name in FIELDS:
        if name == "age":
            if spec.age is None:
                continue
            bins = stratified_values(spec.age.weights, seed, f"age:{spec.hash}", start, count)
            ages = []
            for k, b in enumerate(bins):
                lo, hi = spec.age.bins[b]
                # uniform year inside the bin (modulo bias < 2^-56)
                ages.append(str(lo + derive_seed(seed, "age", start + k) % (hi - lo + 1)))
            columns[name] = ages
        elif name in spec.fields:
            f = spec.fields[name]
            if f.by is not None:
                columns[name] = _conditional_column(spec, name, seed, start, count)
                continue
            idx = stratified_values(f.weights, seed, f"{name}:{spec.hash}", start, count)
            columns[name] = [f.values[i] for i in idx]
    return [{name: col[k] for name, col in columns.items()} for k in range(count)]


def build_plan(
    spec: AttributeSpec,
    start: int,
    count: int,
    run_seed: int,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> IdentityPlan:
    """The plan of identities ``[start, start + count)`` with grammar prompts (``prompt_source="grammar"``)."""
    attrs = assign_attributes(spec, start, count, run_seed)
    identities = []
    step = max(1, count // 100)
    for k, a in enumerate(attrs):
        fp = formulate(spec, a)
        age_bin = ""
        if spec.age is not None and "age" in a:
            age = int(a["age"])
            age_bin = next(
                lab for (lo, hi), lab in zip(spec.age.bins, spec.age.labels, strict=True) if lo <= age <= hi
            )
        extra = {"grammar": GRAMMAR_VERSION, "spec_hash": spec.hash}
        if age_bin:
            extra["age_bin"] = age_bin
        if fp.dropped:
            extra["dropped"] = list(fp.dropped)
        identities.append(
            IdentitySpec(
                index=start + k,
                attributes=a,
                prompt=fp.prompt,
                negative_prompt=fp.negative_prompt,
                gender=a.get("gender"),
                age=int(a["age"]) if "age" in a else None,
                prompt_source="grammar",
                extra=extra,
            )
        )
        if progress is not None and ((k + 1) % step == 0 or k + 1 == count):
            progress(k + 1, count)
    return IdentityPlan(
        run_seed=int(run_seed),
        start=int(start),
        identities=tuple(identities),
        spec_hash=spec.hash,
        spec=spec.canonical,
    )


def plan_preview(plan: IdentityPlan, *, limit: int = 8) -> str:
    """A readable summary: range, achieved proportions per field, and the first prompts."""
    lines = [
        f"FDTA identity plan: identities {plan.start}..{plan.start + plan.count - 1} "
        f"({plan.count}), seed {plan.run_seed}, spec {plan.spec_hash}",
    ]
    sources: dict[str, int] = {}
    for ident in plan:
        sources[ident.prompt_source] = sources.get(ident.prompt_source, 0) + 1
    lines.append("prompt source: " + ", ".join(f"{k} {v}" for k, v in sorted(sources.items())))
    for name in FIELDS:
        counts: dict[str, int] = {}
        for ident in plan:
            v = ident.extra.get("age_bin") if name == "age" else ident.attributes.get(name)
            if v is not None:
                counts[v] = counts.get(v, 0) + 1
        if counts:
            top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
            shown = ", ".join(f"{v} {100 * n / plan.count:.0f}%" for v, n in top[:6])
            more = f", +{len(top) - 6} more" if len(top) > 6 else ""
            lines.append(f"  {name}: {shown}{more}")
    for ident in list(plan)[:limit]:
        lines.append(f"#{ident.index} [{ident.prompt_source}] {ident.prompt}")
    if plan.count > limit:
        lines.append(f"... {plan.count - limit} more")
    if plan.count:
        lines.append(f"negative: {plan.identities[0].negative_prompt}")
    return "\n".join(lines)
