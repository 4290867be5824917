"""Queue-time validation of FDTA nodes: a prompt that would fail is refused before any node runs.

ComfyUI 0.3.64 checks V3 inputs only partly when a prompt is queued: it does not check the options of V3
``Combo`` inputs at all (their type is ``"COMBO"``, not the option list that V1 nodes declare), so a
bogus sampler surfaced as a raw ``AttributeError`` mid-run. Every FDTA node therefore defines
``validate_inputs`` (ComfyUI's V3 hook) with explicit parameters and calls :func:`validate`, which

* checks every literal widget of the node against its schema (combo options, int/float type and range)
  and the node's own ``check_inputs`` (model files present, output names, ranges, spec syntax);
* sees the whole prompt (recorded by :func:`on_prompt`, a ``PromptServer`` on-prompt handler, in a
  context variable of the request), so the dataset writer can check the *planned* chunk (the
  FDTAAttributeSpec upstream) against the chunks on disk before the ACG starts;
* makes the whole prompt fail when any FDTA node of it is invalid: ComfyUI runs every output whose own
  nodes validate, so a bad age-loader device alone would still let the ACG preview run. One FDTA node
  upstream of each otherwise-valid output reports "refused with the rest of the prompt", so ``/prompt``
  answers HTTP 400 and nothing executes.

Unexpected exceptions in a check are logged and never block a prompt (execution still reports them).
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from comfy_api.latest import io

from ..fdta_core.errors import FDTAError, InputError, check_choice

log = logging.getLogger("FDTA")

_PROMPT: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("fdta_prompt", default=None)


def on_prompt(json_data: Any) -> Any:
    """``PromptServer`` on-prompt handler: remember the prompt being queued (read-only) for validation."""
    prompt = json_data.get("prompt") if isinstance(json_data, dict) else None
    _PROMPT.set({"prompt": prompt, "problems": None} if isinstance(prompt, dict) else None)
    return json_data


def register_prompt_handler() -> None:
    try:
        from server import PromptServer

        server = PromptServer.instance
    except (ImportError, AttributeError):  # pragma: no cover - not inside a ComfyUI server
        return
    if on_prompt not in getattr(server, "on_prompt_handlers", []):
        server.add_on_prompt_handler(on_prompt)


# ---------------------------------------------------------------------------- the prompt graph
def literal(value: Any) -> Any:
    """A widget value as the prompt holds it (``{"__value__": v}`` unwrapped); links give None."""
    if isinstance(value, dict) and "__value__" in value:
        return value["__value__"]
    if isinstance(value, list):
        return None
    return value


def is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int)


@dataclass
class PromptGraph:
    """The API-format prompt being queued, seen from one node."""

    prompt: Mapping[str, Any]
    node_id: str

    def inputs(self, node_id: str | None = None) -> dict[str, Any]:
        return dict((self.prompt.get(node_id or self.node_id) or {}).get("inputs") or {})

    def literals(self, node_id: str | None = None) -> dict[str, Any]:
        return {k: literal(v) for k, v in self.inputs(node_id).items() if literal(v) is not None}

    def class_of(self, node_id: str) -> str:
        return str((self.prompt.get(node_id) or {}).get("class_type", ""))

    def upstream(self, node_id: str | None = None) -> list[str]:
        """Every node that feeds ``node_id`` (breadth first, nearest first)."""
        seen: list[str] = []
        todo = [node_id or self.node_id]
        while todo:
            nid = todo.pop(0)
            for v in self.inputs(nid).values():
                if is_link(v) and str(v[0]) not in seen and str(v[0]) in self.prompt:
                    seen.append(str(v[0]))
                    todo.append(str(v[0]))
        return seen


# ---------------------------------------------------------------------------- widget checks
def check_widgets(
    cls: type[io.ComfyNode],
    values: Mapping[str, Any],
    models: Mapping[str, Callable[[str], Any]] | None = None,
) -> None:
    """Check literal widget values against the node's schema: combo options, int/float type and range.

    ``models`` maps a model-file combo to the loader's resolver (which raises ``ModelNotFoundError``
    naming the folders searched), so a missing file is reported as a missing model, not a bad choice.
    """
    schema = cls.define_schema()
    for inp in schema.inputs:
        name = inp.id
        if name not in values or values[name] is None:
            continue
        value = values[name]
        if isinstance(inp, io.Combo.Input):
            if models and name in models:
                models[name](value)
            if inp.options is not None:
                check_choice(None, name, value, list(inp.options))
        elif isinstance(inp, (io.Int.Input, io.Float.Input)):
            kind = int if isinstance(inp, io.Int.Input) else float
            try:
                number = kind(value)
                if kind is int and isinstance(value, float) and value != number:
                    raise ValueError
            except (TypeError, ValueError):
                raise InputError(
                    f"{value!r} is not {'an integer' if kind is int else 'a number'}",
                    where=name,
                    fix=f"give {'a whole number' if kind is int else 'a number'}.",
                ) from None
            lo, hi = getattr(inp, "min", None), getattr(inp, "max", None)
            if (lo is not None and number < lo) or (hi is not None and number > hi):
                raise InputError(
                    f"{number} is outside [{lo}, {hi}]", where=name, fix=f"give a value from {lo} to {hi}."
                )


# ---------------------------------------------------------------------------- the hook
def _current_node_id(cls: Any) -> str | None:
    try:
        from comfy_execution.utils import get_executing_context

        ctx = get_executing_context()
        if ctx is not None and ctx.node_id is not None:
            return str(ctx.node_id)
    except ImportError:  # pragma: no cover
        pass
    hidden = getattr(cls, "hidden", None)
    uid = getattr(hidden, "unique_id", None)
    return None if uid is None else str(uid)


def _class_mappings() -> Mapping[str, Any]:
    """ComfyUI's ``nodes.NODE_CLASS_MAPPINGS`` (looked up in ``sys.modules``: a bare ``import nodes``
    inside this pack would be ambiguous with the pack's own ``nodes`` package)."""
    import sys

    module = sys.modules.get("nodes")
    return getattr(module, "NODE_CLASS_MAPPINGS", None) or {}


def _fdta_classes(prompt: Mapping[str, Any]) -> dict[str, type]:
    mappings = _class_mappings()
    out = {}
    for nid, node in prompt.items():
        cls = mappings.get(str((node or {}).get("class_type", "")))
        if cls is not None and hasattr(cls, "check_inputs") and str(node["class_type"]).startswith("FDTA"):
            out[str(nid)] = cls
    return out


def _check_node(cls: Any, values: Mapping[str, Any], graph: PromptGraph | None) -> str | None:
    node_id = cls.define_schema().node_id
    try:
        cls.check_inputs(values, graph)
    except FDTAError as exc:
        return str(exc.at(node_id))
    except Exception:  # noqa: BLE001 - a bug in a check must not block a prompt; execution reports it
        log.warning("[FDTA] queue-time check of %s failed unexpectedly; not blocking", node_id, exc_info=True)
    return None


def _problems(state: dict[str, Any]) -> dict[str, str]:
    """node id -> error of every invalid FDTA node of the prompt (computed once per prompt)."""
    if state["problems"] is None:
        prompt = state["prompt"]
        problems = {}
        for nid, cls in _fdta_classes(prompt).items():
            graph = PromptGraph(prompt, nid)
            msg = _check_node(cls, graph.literals(), graph)
            if msg:
                problems[nid] = msg
        state["problems"] = problems
    return state["problems"]


def _blockers(prompt: Mapping[str, Any], bad: Iterable[str]) -> set[str]:
    """One FDTA node per output that no invalid node feeds: failing it makes that output fail too."""
    mappings = _class_mappings()
    bad = set(bad)
    fdta = _fdta_classes(prompt)
    out: set[str] = set()
    for nid, node in prompt.items():
        cls = mappings.get(str((node or {}).get("class_type", "")))
        if not getattr(cls, "OUTPUT_NODE", False):
            continue
        chain = [str(nid), *PromptGraph(prompt, str(nid)).upstream()]
        if bad.intersection(chain):
            continue
        first = next((n for n in chain if n in fdta), None)
        if first is not None:
            out.add(first)
    return out


def validate(cls: Any, given: Mapping[str, Any]) -> bool | str:
    """Body of every FDTA node's ``validate_inputs``: True, or the error text ComfyUI shows (HTTP 400)."""
    node_id = _current_node_id(cls)
    state = _PROMPT.get()
    prompt = state["prompt"] if state else None
    node = prompt.get(node_id) if prompt is not None and node_id is not None else None
    own = cls.define_schema().node_id
    if not isinstance(node, Mapping) or node.get("class_type") != own:
        # no prompt context (not queued through /prompt): check what ComfyUI passed in
        values = {k: v for k, v in given.items() if v is not None and k != "cls"}
        return _check_node(cls, values, None) or True
    problems = _problems(state)
    if node_id in problems:
        return problems[node_id]
    if problems and node_id in _blockers(prompt, problems):
        listed = "; ".join(f"node {n}: {m}" for n, m in sorted(problems.items()))
        return f"{own}: not queued, because another FDTA node of this prompt is invalid ({listed})"
    return True


class FDTANode(io.ComfyNode):
    """Base of every FDTA node: by default its queue-time check (:func:`validate` calls ``check_inputs``)
    checks the literal widget values against the schema and the model files through ``MODEL_RESOLVERS``
    (widget name -> resolver that raises ``ModelNotFoundError`` naming the folders searched). Nodes with
    more to check override ``check_inputs`` and call :func:`check_widgets` themselves."""

    @classmethod
    def MODEL_RESOLVERS(cls) -> dict[str, Callable[[str], Any]]:
        return {}

    @classmethod
    def check_inputs(cls, values: dict, graph: PromptGraph | None = None) -> None:
        """Queue-time checks of literal widget values."""
        check_widgets(cls, values, cls.MODEL_RESOLVERS())
