"""Repair rounds: regenerate the identities a committed chunk is missing.

A ComfyUI graph cannot loop, so an identity that the CSIM filter or the leak check leaves without images
(after the ACG has accepted it) cannot be regenerated inside the prompt that dropped it. The runner does
it: the dataset writer reports the chunk's missing planned identities in its history output
(:data:`MISSING_KEY`); the runner then queues the same workflow again for just those identities with
``FDTAAttributeSpec.repair = "ROUND: ID, ..."`` (the ACG continues with that round's own attempt seeds and
consults the run's identity index, the chunk's own identities included), and the writer adds what comes
back to the committed chunk, atomically, keeping every key and label already written. Rounds stop when
nothing is missing or after ``RunConfig.repair_rounds``; what is still missing then stays listed, with its
reason, in the chunk's ``chunk.json``, ``dataset.json`` and ``fdta report``.

The run manifest records each round (``ChunkRecord.missing``, ``ChunkRecord.repairs``), so a killed run
resumes with the next round instead of redoing the chunk.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..plan import RepairRequest

#: Key of the dataset writer's history output that lists the chunk's missing planned identities.
MISSING_KEY = "fdta_missing"


def missing_of(outputs: Mapping[str, Any]) -> list[int] | None:
    """The missing identities a prompt's writer reported (``None``: no writer of this pack reported any,
    e.g. a workflow without FDTADatasetWriter, so nothing can be repaired)."""
    found: list[int] | None = None
    for node_out in outputs.values():
        if isinstance(node_out, Mapping) and MISSING_KEY in node_out:
            found = sorted({*(found or []), *(int(i) for i in node_out[MISSING_KEY] or [])})
    return found


def next_repair(missing: list[int] | None, rounds_done: int, max_rounds: int) -> RepairRequest | None:
    """The next round to queue for a chunk, or None when nothing is missing or the bound is reached."""
    if not missing or rounds_done >= max_rounds:
        return None
    return RepairRequest(rounds_done + 1, tuple(sorted(int(i) for i in missing)))


def round_record(request: RepairRequest, prompt_id: str, missing_after: list[int] | None) -> dict[str, Any]:
    """What the run manifest keeps of one finished repair round."""
    return {
        "round": request.round,
        "identities": list(request.identities),
        "prompt_id": prompt_id,
        "missing_after": list(missing_after or []),
    }


def run_repair_rounds(
    missing: list[int] | None,
    repairs: list[dict[str, Any]],
    max_rounds: int,
    submit: Any,
    record: Any,
) -> tuple[list[int], list[dict[str, Any]]]:
    """Queue repair rounds for one chunk until nothing is missing or ``max_rounds`` rounds are done.

    ``submit(request) -> (prompt_id, outputs)`` queues the chunk's workflow with ``request`` and waits
    for it; ``record(missing, repairs)`` persists the state after every round (the run manifest), so a
    killed run resumes with the next round. Returns the final ``(missing, repairs)``.
    """
    missing = list(missing or [])
    repairs = list(repairs)
    while (request := next_repair(missing, len(repairs), max_rounds)) is not None:
        pid, outputs = submit(request)
        after = missing_of(outputs)
        # a writer that reports nothing cannot have left identities missing that it does not know of;
        # keep the request's list then, so the round is not taken for a success
        missing = list(request.identities) if after is None else after
        repairs.append(round_record(request, pid, missing))
        record(missing, repairs)
    return missing, repairs
