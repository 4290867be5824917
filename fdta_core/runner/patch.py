"""Patch an API-format workflow for one chunk: identity range, seeds, user overrides."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError
from ..plan import RepairRequest
from ..seeds import derive_seed
from .manifest import Chunk

#: The node whose widgets define the chunk.
SPEC_NODE = "FDTAAttributeSpec"
#: Seed-like inputs of ComfyUI's own nodes (KSampler, KSamplerAdvanced, RandomNoise, ...).
CORE_SEED_INPUTS = ("seed", "noise_seed")
#: Nodes that consult and extend the run's identity index, and the input that names it.
INDEX_NODES = ("FDTAACGSampler",)
INDEX_INPUT = "identity_index"


def load_api_workflow(data: Mapping[str, Any], *, where: str = "workflow") -> dict[str, Any]:
    """Validate that ``data`` is an API-format prompt (``{id: {class_type, inputs}}``)."""
    if "nodes" in data and "links" in data:
        raise ConfigError(
            "this is a UI-format workflow (it has 'nodes' and 'links')",
            where=where,
            fix="convert it with fdta_core.workflow.ui_to_api (fdta run does this with the server's schemas), "
            "or use the API-format twin shipped in workflows/api/.",
        )
    if not data or not all(isinstance(v, Mapping) and "class_type" in v for v in data.values()):
        raise ConfigError(
            "not an API-format prompt: every entry needs 'class_type' and 'inputs'", where=where
        )
    return {str(k): dict(v) for k, v in data.items()}


def workflow_hash(prompt: Mapping[str, Any]) -> str:
    """A stable hash of a workflow, used to refuse resuming a run with a different graph."""
    return hashlib.sha256(json.dumps(prompt, sort_keys=True).encode()).hexdigest()[:16]


def parse_override(text: str) -> tuple[str, str, Any]:
    """``"ClassOrNodeId.input=value"`` -> ``(target, input, value)``; value parsed as JSON when possible."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ConfigError(f"override {text!r} must look like 'NodeClassOrId.input=value'", where="run.set")
    lhs, value_s = text.split("=", 1)
    target, name = lhs.rsplit(".", 1)
    try:
        value: Any = json.loads(value_s)
    except ValueError:
        value = value_s
    return target, name, value


def patch_workflow(
    prompt: Mapping[str, Any],
    chunk: Chunk,
    run_seed: int,
    overrides: list[tuple[str, str, Any]] | None = None,
    identity_index: str | None = None,
    repair: RepairRequest | None = None,
) -> dict[str, Any]:
    """A copy of ``prompt`` set up for ``chunk``.

    * the one ``FDTAAttributeSpec`` gets ``identity_start``, ``identity_count`` and ``seed`` (the run seed);
    * every other FDTA node's literal ``seed`` input gets the run seed (FDTA nodes derive per-identity
      seeds from it, so the same identity gets the same seeds in any chunking);
    * ComfyUI's own nodes' literal ``seed``/``noise_seed`` inputs get a seed derived from the run seed,
      the node id and the chunk start;
    * every ACG node gets ``identity_index`` (the run's identity index folder), so no chunk repeats an
      identity of an earlier chunk;
    * ``overrides`` (``(class_type or node id, input, value)``) are applied last;
    * ``repair`` (a repair round, :mod:`fdta_core.runner.repair`) goes to the spec's ``repair`` input
      after the overrides: the same chunk, only its missing identities.

    Only the spec node gets the range: the ACG stamps it on the faceset and the dataset writer commits
    that range. A writer whose own range override disagrees with the chunk is refused here, before
    anything is queued (it would be refused by the writer after the whole pipeline).
    """
    out = copy.deepcopy(dict(prompt))
    specs = [nid for nid, n in out.items() if n.get("class_type") == SPEC_NODE]
    if len(specs) != 1:
        raise ConfigError(
            f"the workflow needs exactly one {SPEC_NODE} node to set the identity range, found {len(specs)}",
            where="workflow",
            fix=f"add one {SPEC_NODE} node that feeds the pipeline.",
        )
    for nid, node in out.items():
        inputs = node.setdefault("inputs", {})
        cls = str(node.get("class_type", ""))
        if nid == specs[0]:
            inputs["identity_start"] = chunk.start
            inputs["identity_count"] = chunk.count
            inputs["seed"] = int(run_seed)
            continue
        if identity_index and cls in INDEX_NODES and not isinstance(inputs.get(INDEX_INPUT), list):
            inputs[INDEX_INPUT] = str(identity_index)
        for key in CORE_SEED_INPUTS:
            if key in inputs and not isinstance(inputs[key], list):  # a list is a link to another node
                if cls.startswith("FDTA"):
                    inputs[key] = int(run_seed)
                else:
                    inputs[key] = derive_seed(run_seed, "comfy", nid, chunk.start)  # <= SEED_MAX
    for target, name, value in overrides or []:
        hits = [n for nid, n in out.items() if nid == target or n.get("class_type") == target]
        if not hits:
            raise ConfigError(
                f"override target {target!r} matches no node id or class in the workflow", where="run.set"
            )
        for n in hits:
            n.setdefault("inputs", {})[name] = value
    if repair is not None:
        out[specs[0]]["inputs"]["repair"] = repair.text()
    for nid, node in out.items():
        if nid == specs[0]:
            continue
        check_range_override(node, chunk.start, chunk.count, where=f"node {nid} ({node.get('class_type')})")
    return out


#: "follow the plan" values of a writer's range overrides.
RANGE_DEFAULTS = {"identity_start": -1, "identity_count": 0}


def check_range_override(node: Mapping[str, Any], start: int, count: int, *, where: str) -> None:
    """Refuse a node whose literal ``identity_start``/``identity_count`` override disagrees with the
    chunk ``[start, start+count)`` (old workflows set the writer's range apart from the spec's)."""
    inputs = node.get("inputs") or {}
    wanted = {"identity_start": int(start), "identity_count": int(count)}
    for key, default in RANGE_DEFAULTS.items():
        value = inputs.get(key)
        if value is None or isinstance(value, list):
            continue
        try:
            v = int(value)
        except (TypeError, ValueError):
            continue
        if v != default and v != wanted[key]:
            raise ConfigError(
                f"{key}={v} overrides the chunk's range ({key}={wanted[key]} for identities "
                f"{start}..{start + count - 1}); the chunk would be written under the wrong name",
                where=f"{where}.{key}",
                fix=f"set {key} to {default} in the workflow: the range travels with the faceset from "
                "FDTAAttributeSpec (rebuild old workflows with workflows/build_workflows.py).",
            )
