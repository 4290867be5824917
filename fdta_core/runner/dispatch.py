"""The bookkeeping every engine shares (local threads, ``--launch``, Ray): one chunk at a time, the
manifest as the single record of what is done, and the rule that a chunk never runs twice at once.

* A chunk is marked running with the prompt id *before* it is queued (the client names its prompts), so
  a runner killed at any point knows which prompt to ask about when it resumes.
* A chunk is queued again only when its prompt is known not to run: it failed, it was cancelled and
  seen to stop, or its server is gone. A prompt whose cancel could not be confirmed is left alone
  (:class:`~.client.PromptMayRun`) until the next resume asks its server again.
* On resume, a chunk that was running is looked up on its server: finished prompts are taken as they
  are, running ones are followed, and only lost ones run again; with the servers' output folder known,
  a chunk whose commit already landed in the data set (same run stamp) is done without running.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ExternalServiceError, FDTAError
from ..plan import RepairRequest
from .client import ComfyClient, PromptMayRun, PromptState
from .manifest import Chunk, ChunkState, RunManifest
from .repair import missing_of, next_repair, round_record

log = logging.getLogger(__name__)

WRITER_NODE = "FDTADatasetWriter"
SPEC_NODE = "FDTAAttributeSpec"


@dataclass
class Ledger:
    """The manifest of one shard behind a lock, with the count of chunks still outstanding in this run
    (queued, running or followed), so workers know when to stop."""

    manifest: RunManifest
    max_attempts: int
    on_chunk: Callable[[Chunk, ChunkState], None] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    outstanding: int = 0

    def begin(
        self,
        chunk: Chunk,
        server: str,
        prompt_id: str,
        *,
        worker: str | None = None,
        round: int = 0,
        new_attempt: bool = True,
    ) -> None:
        """Mark ``chunk`` running ``prompt_id`` on ``server`` (before it is queued). A chunk's first pass
        and its repair rounds are one attempt: only the first prompt of a pickup counts one."""
        with self.lock:
            rec = self.manifest.records[chunk.index]
            extra = {"attempts": rec.attempts + 1, "error": None, "started": time.time(), "finished": None}
            self.manifest.mark(
                chunk,
                ChunkState.RUNNING,
                server=server,
                prompt_id=prompt_id,
                worker=worker,
                round=round,
                **(extra if new_attempt else {}),
            )
        if self.on_chunk and new_attempt:
            self.on_chunk(chunk, ChunkState.RUNNING)

    def first_pass(self, chunk: Chunk, outputs: dict[str, Any], missing: list[int], repairs=None) -> None:
        """The chunk's first pass is committed; ``missing`` planned identities are left for repairs."""
        with self.lock:
            fields: dict[str, Any] = {"outputs": outputs, "missing": missing}
            if repairs is not None:
                fields["repairs"] = repairs
            self.manifest.mark(chunk, self.manifest.records[chunk.index].state, **fields)

    def repaired(self, chunk: Chunk, record: dict[str, Any], missing: list[int]) -> None:
        with self.lock:
            rec = self.manifest.records[chunk.index]
            self.manifest.mark(chunk, rec.state, missing=missing, repairs=[*rec.repairs, record])

    def renamed(self, chunk: Chunk, prompt_id: str) -> None:
        with self.lock:
            self.manifest.mark(chunk, ChunkState.RUNNING, prompt_id=prompt_id)

    def done(self, chunk: Chunk, outputs: dict[str, Any] | None = None) -> None:
        with self.lock:
            fields: dict[str, Any] = {"finished": time.time()}
            if outputs is not None:
                fields["outputs"] = outputs
            self.manifest.mark(chunk, ChunkState.DONE, **fields)
            self.outstanding -= 1
        if self.on_chunk:
            self.on_chunk(chunk, ChunkState.DONE)

    def failed(self, chunk: Chunk, error: BaseException | str, *, may_retry: bool = True) -> bool:
        """Record a failure; True when the chunk should be queued again (attempts left, and its prompt
        is known not to run)."""
        with self.lock:
            rec = self.manifest.records[chunk.index]
            self.manifest.mark(chunk, ChunkState.FAILED, error=str(error), finished=time.time())
            retry = may_retry and rec.attempts < self.max_attempts
            if not retry:
                self.outstanding -= 1
        log.warning("chunk %s failed (attempt %d/%d): %s", chunk.name, rec.attempts, self.max_attempts, error)
        if self.on_chunk:
            self.on_chunk(chunk, ChunkState.FAILED)
        return retry

    def pending(self, chunk: Chunk) -> None:
        """Back to pending without counting an attempt (stopped by the user)."""
        with self.lock:
            self.manifest.mark(chunk, ChunkState.PENDING)


def chunk_outputs(entry: dict[str, Any]) -> dict[str, Any]:
    """What the manifest keeps of a history entry: the text and data-set outputs of the nodes."""
    return {k: v for k, v in entry.get("outputs", {}).items() if "text" in v or "dataset" in v}


def committed_chunk(prompt: dict[str, Any], chunk: Chunk, output_dir: Path | None) -> list[dict] | None:
    """The committed chunk folders of ``chunk`` that every dataset writer of ``prompt`` would write, when
    all of them are on disk and come from this run (same spec hash and run seed); else None.

    ``output_dir`` is the servers' output folder as this machine sees it (None: unknown, nothing checked).
    """
    if output_dir is None:
        return None
    from ..dataset.writer import CHUNKS_DIR, ChunkInfo
    from ..faceset import ChunkStamp
    from ..prompts.spec import parse_spec

    specs = [n for n in prompt.values() if n.get("class_type") == SPEC_NODE]
    writers = [n for n in prompt.values() if n.get("class_type") == WRITER_NODE]
    if len(specs) != 1 or not writers:
        return None
    inputs = specs[0].get("inputs", {})
    try:
        stamp = ChunkStamp(chunk.start, chunk.end, parse_spec(str(inputs["spec"])).hash, int(inputs["seed"]))
    except (KeyError, TypeError, ValueError):  # a linked spec: its hash is not known before running
        return None
    found = []
    for w in writers:
        name = w.get("inputs", {}).get("output_name")
        if not isinstance(name, str) or not name:
            return None
        folder = Path(output_dir) / name / CHUNKS_DIR / chunk.name
        if not (folder / "chunk.json").is_file():
            return None
        try:
            info = ChunkInfo.load(folder)
        except FDTAError:
            return None
        if not stamp.same_run(info.stamp):
            return None
        found.append(
            {
                "path": str(folder),
                "images": info.images,
                "classes": info.classes,
                "missing": sorted(int(m["identity"]) for m in getattr(info, "missing", []) or []),
                "repairs": [
                    {"round": r.get("round"), "on_disk": True} for r in getattr(info, "repairs", []) or []
                ],
            }
        )
    return found


def execute(
    client: ComfyClient,
    prompt: dict[str, Any],
    prompt_id: str,
    *,
    timeout: float | None = None,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    on_queued: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Queue ``prompt`` as ``prompt_id`` and wait for it; return the outputs the manifest keeps.

    ``on_queued`` hears the id the server gave when it is not ``prompt_id`` (a server that ignores
    client-chosen ids), so the manifest always names the prompt that runs."""
    pid = client.queue(prompt, prompt_id)
    if pid != prompt_id and on_queued is not None:
        on_queued(pid)
    return chunk_outputs(client.wait(pid, timeout=timeout, on_progress=on_progress))


def next_prompt(cfg, ledger: Ledger, chunk: Chunk) -> tuple[dict[str, Any], RepairRequest | None] | None:
    """The next prompt ``chunk`` needs: its first pass, or the next repair round of the identities it
    is missing (:mod:`.repair`); None when nothing is left (the chunk is then marked done).

    With the servers' output folder known, a first pass whose commit already landed (same run) is not
    queued again: the committed chunk says what it is missing and which rounds it had."""
    from .patch import patch_workflow

    def patch(repair: RepairRequest | None) -> dict[str, Any]:
        return patch_workflow(
            cfg.workflow, chunk, cfg.seed, cfg.overrides, identity_index=cfg.index_location(), repair=repair
        )

    rec = ledger.manifest.records[chunk.index]
    if rec.missing is None:
        prompt = patch(None)
        found = committed_chunk(prompt, chunk, cfg.output_dir)
        if found is None:
            return prompt, None
        log.info("chunk %s is already committed (%s): not written again", chunk.name, found[0]["path"])
        missing = sorted({i for f in found for i in f["missing"]})
        ledger.first_pass(chunk, {"committed": found}, missing, repairs=found[0]["repairs"])
    request = next_repair(rec.missing, len(rec.repairs), cfg.repair_rounds)
    if request is None:
        ledger.done(chunk)
        return None
    return patch(request), request


def prompt_finished(
    ledger: Ledger, chunk: Chunk, request: RepairRequest | None, prompt_id: str, outputs: dict[str, Any]
) -> None:
    """Record a finished prompt of ``chunk``: its first pass (what it is missing) or a repair round."""
    after = missing_of(outputs)
    if request is None:
        ledger.first_pass(chunk, outputs, after or [])
    else:
        missing = list(request.identities) if after is None else after
        ledger.repaired(chunk, round_record(request, prompt_id, missing), missing)


def running_request(ledger: Ledger, chunk: Chunk) -> RepairRequest | None:
    """The repair round the chunk's recorded prompt belongs to (None: its first pass)."""
    rec = ledger.manifest.records[chunk.index]
    if not rec.round or rec.missing is None:
        return None
    return RepairRequest(int(rec.round), tuple(sorted(int(i) for i in rec.missing)))


def settle_failure(ledger: Ledger, chunk: Chunk, exc: FDTAError) -> bool:
    """Record ``exc`` for ``chunk``; True when it should be queued again."""
    return ledger.failed(chunk, exc, may_retry=not isinstance(exc, PromptMayRun))


def recover_interrupted(
    ledger: Ledger, client_factory: Callable[[str], ComfyClient]
) -> list[tuple[Chunk, str, str]]:
    """Ask the servers about the chunks that were running when the last process died.

    Finished prompts are recorded (done, or failed with their error); prompts still queued or running
    are returned as ``(chunk, server, prompt_id)`` for the caller to follow; the rest stay pending.
    """
    man = ledger.manifest
    follow = []
    for idx in list(man.interrupted):
        rec, chunk = man.records[idx], man.chunks[idx]
        if not (rec.prompt_id and rec.server):
            continue
        client = client_factory(rec.server)
        try:
            state = client.state(rec.prompt_id)
        except ExternalServiceError as exc:
            log.info(
                "chunk %s: its server %s does not answer (%s); it runs again", chunk.name, rec.server, exc
            )
            continue
        if state == PromptState.SUCCESS:
            entry = client.history(rec.prompt_id) or {}
            log.info("chunk %s finished while no runner watched (prompt %s)", chunk.name, rec.prompt_id)
            # taken as it is; what is left (repair rounds) runs as a pending chunk
            prompt_finished(
                ledger, chunk, running_request(ledger, chunk), rec.prompt_id, chunk_outputs(entry)
            )
        elif state == PromptState.ERROR:
            entry = client.history(rec.prompt_id) or {}
            with ledger.lock:
                man.mark(chunk, ChunkState.FAILED, error=str(entry.get("status")), finished=time.time())
        elif state in (PromptState.PENDING, PromptState.RUNNING):
            log.info(
                "chunk %s still runs on %s (prompt %s): following it", chunk.name, rec.server, rec.prompt_id
            )
            with ledger.lock:
                man.mark(chunk, ChunkState.RUNNING)
            follow.append((chunk, rec.server, rec.prompt_id))
    man.interrupted = []
    return follow


def follow(
    ledger: Ledger,
    client: ComfyClient,
    chunk: Chunk,
    prompt_id: str,
    *,
    timeout: float | None = None,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
) -> bool:
    """Wait for a prompt queued by an earlier process; True when the chunk should be queued again
    (it failed, or repair rounds are left)."""
    try:
        outputs = chunk_outputs(client.wait(prompt_id, timeout=timeout, on_progress=on_progress))
    except FDTAError as exc:
        return settle_failure(ledger, chunk, exc)
    prompt_finished(ledger, chunk, running_request(ledger, chunk), prompt_id, outputs)
    return True  # the chunk's next step (or "done") is decided by whoever picks it up
