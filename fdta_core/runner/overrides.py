"""Check ``fdta run --set NODE.INPUT=VALUE`` before anything is queued.

A misspelt input (``FDTAAgeShifter.keep_original``) used to be added to the prompt, ignored by ComfyUI,
and the run "succeeded" doing something else; a value of the wrong type (``steps=abc``) only failed on
the server, chunk after chunk. Here every override must name a node (class or id) of the workflow and an
input of that node's schema in the server's ``/object_info``; its value is coerced to the input's type
and checked against its range or choices. Without a server (``--dry-run`` offline) the workflow's own
literal values stand in for the schema: the input must exist there and the value must fit its type.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import ConfigError, check_choice

log = logging.getLogger(__name__)

_WHERE = "run.set"

#: Widgets renamed when the node set was reshaped (before the first public release): ``(class, old)``
#: -> new name. ``--set`` with an old name still works (with a warning); the shipped workflows use the new.
RENAMED_INPUTS: dict[tuple[str, str], str] = {
    ("FDTAAgeLoader", "dtype"): "precision",  # one name for precision on every node
    ("FDTASTGLoader", "checkpoint"): "model_name",  # one name for a loader's model file
}
#: The advanced ACG settings moved from FDTAACGSampler to FDTAACGOptions (the sampler's ``options``
#: socket); the names are ``fdta_core.acg.ACGOptions.names()`` (a test keeps them equal).
ACG_OPTION_NAMES: tuple[str, ...] = (
    "control_preprocess",
    "canny_low",
    "canny_high",
    "edge_blur",
    "control_assignment",
    "retries",
    "on_failure",
    "min_det_score",
    "check_gender",
    "check_age",
    "age_tolerance",
    "uniqueness_threshold",
    "real_person_threshold",
    "real_sets",
)
#: ``(class, old input)`` -> ``(class that holds it now, the input of the old class that links to it)``.
MOVED_INPUTS: dict[tuple[str, str], tuple[str, str]] = {
    ("FDTAACGSampler", name): ("FDTAACGOptions", "options") for name in ACG_OPTION_NAMES
}


def resolve_aliases(
    prompt: Mapping[str, Mapping[str, Any]], overrides: Iterable[tuple[str, str, Any]]
) -> list[tuple[str, str, Any]]:
    """Old widget names of ``--set`` as their new places: a renamed input under its new name; an input
    moved to another node (FDTAACGSampler's advanced settings, now on FDTAACGOptions) retargeted to the
    node linked into the old node's socket, or a clear error when the workflow has none."""
    out = []
    for target, name, value in overrides:
        hits = [(nid, n) for nid, n in prompt.items() if nid == target or n.get("class_type") == target]
        classes = {str(n.get("class_type")) for _nid, n in hits}
        if len(classes) != 1:
            out.append((target, name, value))
            continue
        cls = classes.pop()
        has_input = any(name in (n.get("inputs") or {}) for _nid, n in hits)
        if (cls, name) in RENAMED_INPUTS and not has_input:
            new = RENAMED_INPUTS[(cls, name)]
            log.warning("--set %s.%s: the input is now called %s; use %s.%s", target, name, new, target, new)
            out.append((target, new, value))
            continue
        if (cls, name) in MOVED_INPUTS and not has_input:
            holder, socket = MOVED_INPUTS[(cls, name)]
            linked = sorted(
                {
                    str(link[0])
                    for _nid, n in hits
                    for link in [(n.get("inputs") or {}).get(socket)]
                    if isinstance(link, list)
                    and len(link) == 2
                    and str(link[0]) in prompt
                    and prompt[str(link[0])].get("class_type") == holder
                }
            )
            if not linked:
                raise ConfigError(
                    f"{cls}.{name} moved to {holder} (connected to the {socket} input of {cls}), and this "
                    f"workflow's {cls} has no {holder} connected",
                    where=f"{_WHERE} {target}.{name}",
                    fix=f"add a {holder} node, connect it to {cls}.{socket}, and use --set {holder}.{name}=...",
                )
            log.warning("--set %s.%s: the input moved to %s; use %s.%s", target, name, holder, holder, name)
            out.extend((nid, name, value) for nid in linked)
            continue
        out.append((target, name, value))
    return out


def _schema_inputs(schema: Mapping[str, Any]) -> dict[str, tuple[Any, dict]]:
    out: dict[str, tuple[Any, dict]] = {}
    for section in ("required", "optional"):
        for name, decl in ((schema.get("input") or {}).get(section) or {}).items():
            typ = decl[0] if isinstance(decl, (list, tuple)) and decl else decl
            opts = (
                decl[1]
                if isinstance(decl, (list, tuple)) and len(decl) > 1 and isinstance(decl[1], dict)
                else {}
            )
            out[name] = (typ, opts)
    return out


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in (
        "true",
        "false",
        "1",
        "0",
        "yes",
        "no",
        "on",
        "off",
    ):
        return value.strip().lower() in ("true", "1", "yes", "on")
    raise ValueError


def _as_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError
        return int(value)
    return int(str(value).strip()) if isinstance(value, str) else int(value)


def _as_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError
    f = float(value)
    if not math.isfinite(f):
        raise ValueError
    return f


def coerce(value: Any, typ: Any, opts: Mapping[str, Any], *, where: str) -> Any:
    """``value`` as the input type ``typ`` (``INT``, ``FLOAT``, ``BOOLEAN``, ``STRING``, a combo), checked
    against ``min``/``max`` and the combo's options; raises :class:`ConfigError` saying what is wrong."""
    options = typ if isinstance(typ, list) else (opts.get("options") if typ == "COMBO" else None)
    if options is not None:
        names = [str(o) for o in options]
        check_choice(None, where, str(value), names, what="choice", error=ConfigError)
        return options[names.index(str(value))]
    kinds = {
        "INT": (_as_int, "a whole number"),
        "FLOAT": (_as_float, "a number"),
        "BOOLEAN": (_as_bool, "true or false"),
    }
    if typ in kinds:
        conv, text = kinds[typ]
        try:
            out = conv(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{value!r} is not {text}", where=where, fix=f"give {text} ({typ}).") from None
        lo, hi = opts.get("min"), opts.get("max")
        if typ != "BOOLEAN" and ((lo is not None and out < lo) or (hi is not None and out > hi)):
            raise ConfigError(
                f"{out} is outside [{lo}, {hi}]", where=where, fix=f"give a value from {lo} to {hi}."
            )
        return out
    if typ == "STRING":
        return value if isinstance(value, str) else str(value)
    raise ConfigError(
        f"input type {typ} is a connection, not a value", where=where, fix="--set only sets widget values."
    )


def _offline_coerce(value: Any, current: Any, *, where: str) -> Any:
    """Without a schema: keep the type of the workflow's own literal value."""
    if isinstance(current, bool):
        return coerce(value, "BOOLEAN", {}, where=where)
    if isinstance(current, int):
        return coerce(value, "INT", {}, where=where)
    if isinstance(current, float):
        return coerce(value, "FLOAT", {}, where=where)
    if isinstance(current, list):
        raise ConfigError(
            "this input is a connection in the workflow", where=where, fix="--set only sets widget values."
        )
    return value if isinstance(current, str) and isinstance(value, str) else value


def check_overrides(
    prompt: Mapping[str, Mapping[str, Any]],
    overrides: Iterable[tuple[str, str, Any]],
    object_info: Mapping[str, Any] | None,
) -> list[tuple[str, str, Any]]:
    """The overrides with their values coerced; refuses an unknown node or input ("did you mean") and a
    value that does not fit the input (type, range, choices). ``object_info`` None: offline check."""
    out = []
    classes = {str(n.get("class_type")) for n in prompt.values()}
    for target, name, value in resolve_aliases(prompt, overrides):
        hits = [(nid, n) for nid, n in prompt.items() if nid == target or n.get("class_type") == target]
        if not hits:
            extra = (
                f" ({target} is known to the server, but the workflow has no such node)"
                if object_info is not None and target in object_info
                else ""
            )
            check_choice(
                None,
                _WHERE,
                target,
                sorted(classes) + list(prompt),
                what="node class or id of the workflow",
                error=ConfigError,
                fix=extra.strip(" ()") or None,
            )
        coerced: Any = value
        for nid, node in hits:
            cls = str(node.get("class_type"))
            where = f"{_WHERE} {target}.{name}"
            if object_info is not None:
                if cls not in object_info:
                    raise ConfigError(
                        f"node class {cls} (node {nid}) is not known to the server",
                        where=where,
                        fix="install the custom node pack that provides it, or point --server at the right ComfyUI.",
                    )
                inputs = _schema_inputs(object_info[cls])
                check_choice(None, where, name, list(inputs), what=f"input of {cls}", error=ConfigError)
                coerced = coerce(value, *inputs[name], where=where)
            else:
                current = node.get("inputs") or {}
                check_choice(
                    None,
                    where,
                    name,
                    list(current),
                    what=f"input of {cls} (node {nid}) in the workflow",
                    error=ConfigError,
                    fix="checked without a server: start one for a full check",
                )
                coerced = _offline_coerce(value, current[name], where=where)
        out.append((target, name, coerced))
    return out


def upgrade_workflow(prompt: Mapping[str, Any], *, where: str = "workflow") -> dict[str, Any]:
    """An API workflow saved before the node set was reshaped, brought up to date or refused.

    A renamed input is renamed (the value is the same setting); an input that moved to another node
    (the sampler's advanced settings, now on FDTAACGOptions) is refused, because ComfyUI would ignore it
    and run with the default instead (an edge map would be run through Canny, say)."""
    out: dict[str, Any] = {}
    for nid, node in prompt.items():
        cls = str(node.get("class_type"))
        inputs = dict(node.get("inputs") or {})
        for (c, old), new in RENAMED_INPUTS.items():
            if c == cls and old in inputs and new not in inputs:
                log.warning("%s: node %s (%s) input %s is now called %s", where, nid, cls, old, new)
                inputs[new] = inputs.pop(old)
        moved = sorted(old for (c, old) in MOVED_INPUTS if c == cls and old in inputs)
        if moved:
            holder, socket = MOVED_INPUTS[(cls, moved[0])]
            raise ConfigError(
                f"node {nid} ({cls}) sets {', '.join(moved)}, which moved to {holder} (connected to its "
                f"{socket} input): this workflow was saved with an older FDTA",
                where=where,
                fix=f"rebuild it from the shipped workflows (workflows/), or add a {holder} node with those "
                f"values and connect it to {cls}.{socket}.",
            )
        out[nid] = {**node, "inputs": inputs}
    return out
