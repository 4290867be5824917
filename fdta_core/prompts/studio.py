"""What the attribute editor of the ComfyUI frontend asks the server: is this spec valid, and which
identities and prompts does it give?

Both answers come from the same parser (:func:`.spec.parse_spec`) and planner (:func:`.planner.build_plan`)
as the ``FDTAAttributeSpec`` node, so the editor can never disagree with a run. The results are plain
JSON-able dicts; the HTTP routes in ``nodes/_server.py`` only forward them.
"""

from __future__ import annotations

from typing import Any

from ..errors import FDTAError
from .planner import build_plan
from .spec import parse_spec

#: Most identities a preview may ask for (the editor shows a handful; the node plans the real chunk).
MAX_PREVIEW = 64


def _error_dict(exc: FDTAError) -> dict[str, Any]:
    return {"where": exc.where or "spec", "message": exc.message, "fix": exc.fix or "", "text": str(exc)}


def validate_spec_text(text: Any) -> dict[str, Any]:
    """``{"ok": True, "hash", "canonical", "summary"}`` or ``{"ok": False, "errors": [{where, message, fix}]}``.

    ``where`` is the parser's path of the wrong entry (``spec.fields.eyes.values[3]``), so the editor can
    mark that row. The parser stops at the first error, so there is at most one.
    """
    if not isinstance(text, str | dict):
        return {
            "ok": False,
            "errors": [
                {"where": "spec", "message": "no spec given", "fix": "send the spec JSON text.", "text": ""}
            ],
        }
    try:
        spec = parse_spec(text, source="spec")
    except FDTAError as exc:
        return {"ok": False, "errors": [_error_dict(exc)]}
    summary: dict[str, Any] = {}
    for name, f in spec.fields.items():
        summary[name] = {
            "values": len(f.values),
            "by": f.by,
            "cases": {k: len(v) for k, v, _ in f.cases},
        }
    if spec.age is not None:
        summary["age"] = {"min": spec.age.min, "max": spec.age.max, "bins": list(spec.age.labels)}
    return {"ok": True, "hash": spec.hash, "canonical": spec.canonical, "summary": summary}


def preview_spec(text: Any, *, seed: int = 0, start: int = 0, count: int = 8) -> dict[str, Any]:
    """The first ``count`` identities from ``start`` of the plan the node would make, with their prompts,
    and the proportions those identities achieve; a spec error is returned like :func:`validate_spec_text`."""
    checked = validate_spec_text(text)
    if not checked["ok"]:
        return checked
    try:
        count = int(count)
        start = int(start)
        seed = int(seed)
        if not 1 <= count <= MAX_PREVIEW:
            raise ValueError(f"count {count} is outside 1..{MAX_PREVIEW}")
        plan = build_plan(parse_spec(text, source="spec"), start, count, seed)
    except FDTAError as exc:
        return {"ok": False, "errors": [_error_dict(exc)]}
    except (TypeError, ValueError) as exc:
        return {
            "ok": False,
            "errors": [
                {"where": "preview", "message": str(exc), "fix": "use 1-64 identities.", "text": str(exc)}
            ],
        }
    identities = [
        {
            "index": ident.index,
            "attributes": dict(ident.attributes),
            "prompt": ident.prompt,
            "negative": ident.negative_prompt,
            "age_bin": ident.extra.get("age_bin", ""),
            "dropped": list(ident.extra.get("dropped", [])),
        }
        for ident in plan
    ]
    return {
        "ok": True,
        "hash": plan.spec_hash,
        "seed": plan.run_seed,
        "start": plan.start,
        "count": plan.count,
        "identities": identities,
    }
