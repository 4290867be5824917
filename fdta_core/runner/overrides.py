"""Check ``fdta run --set NODE.INPUT=VALUE`` before anything is queued.

A misspelt input (``FDTAAgeShifter.keep_original``) used to be added to the prompt, ignored by ComfyUI,
and the run "succeeded" doing something else; a value of the wrong type (``steps=abc``) only failed on
the server, chunk after chunk. Here every override must name a node (class or id) of the workflow and an
input of that node's schema in the server's ``/object_info``; its value is coerced to the input's type
and checked against its range or choices. Without a server (``--dry-run`` offline) the workflow's own
literal values stand in for the schema: the input must exist there and the value must fit its type.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import ConfigError, check_choice

_WHERE = "run.set"


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
    for target, name, value in overrides:
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
