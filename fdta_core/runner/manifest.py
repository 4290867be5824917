"""Chunks, shards and the run manifest (one JSON file per shard, rewritten atomically)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DatasetError
from ..fsutil import atomic_write_text
from ..plan import chunk_name

MANIFEST_VERSION = 1


@dataclass(frozen=True)
class Chunk:
    """Identities ``[start, start + count)``; ``index`` is its position in the run (0-based)."""

    index: int
    start: int
    count: int

    @property
    def end(self) -> int:
        return self.start + self.count

    @property
    def name(self) -> str:
        return chunk_name(self.start, self.end)


def plan_chunks(identities: int, chunk_size: int, first_identity: int = 0) -> list[Chunk]:
    """Split ``identities`` starting at ``first_identity`` into chunks of ``chunk_size`` (last may be short)."""
    if identities <= 0:
        raise ConfigError(f"identities must be > 0, got {identities}", where="run.identities")
    if chunk_size <= 0:
        raise ConfigError(f"chunk size must be > 0, got {chunk_size}", where="run.chunk_size")
    if first_identity < 0:
        raise ConfigError(f"first identity must be >= 0, got {first_identity}", where="run.first_identity")
    out = []
    for i, s in enumerate(range(0, identities, chunk_size)):
        out.append(Chunk(i, first_identity + s, min(chunk_size, identities - s)))
    return out


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/N"`` -> ``(i, N)`` with ``0 <= i < N``."""
    try:
        i_s, n_s = text.split("/")
        i, n = int(i_s), int(n_s)
    except ValueError:
        raise ConfigError(f"shard must look like 'i/N' (e.g. 0/4), got {text!r}", where="run.shard") from None
    if n < 1 or not 0 <= i < n:
        raise ConfigError(f"shard {text!r}: need 0 <= i < N", where="run.shard")
    return i, n


def select_shard(chunks: list[Chunk], shard: int, num_shards: int) -> list[Chunk]:
    """The chunks of shard ``shard`` of ``num_shards``: round-robin by chunk index, so shards stay balanced
    and the assignment never depends on which machine asks."""
    return [c for c in chunks if c.index % num_shards == shard]


class ChunkState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass
class ChunkRecord:
    state: ChunkState = ChunkState.PENDING
    attempts: int = 0
    prompt_id: str | None = None
    server: str | None = None
    #: who ran it besides the server (a Ray actor: "ray actor K pid P on HOST")
    worker: str | None = None
    #: the repair round of the prompt that runs now (0: the chunk's first pass)
    round: int = 0
    error: str | None = None
    started: float | None = None
    finished: float | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    #: planned identities the committed chunk lacks (None: the chunk's first pass is not committed yet)
    missing: list[int] | None = None
    #: finished repair rounds (see fdta_core.runner.repair), oldest first
    repairs: list[dict[str, Any]] = field(default_factory=list)


class RunManifest:
    """State of every chunk of one shard, persisted to ``path`` after each change.

    The file also records the run's identity (workflow hash, seed, chunking, shard); resuming with a
    different configuration is refused rather than silently mixing two runs in one dataset.
    """

    def __init__(self, path: str | os.PathLike, run_key: dict[str, Any], chunks: list[Chunk]) -> None:
        self.path = Path(path)
        self.run_key = run_key
        self.chunks = {c.index: c for c in chunks}
        self.records: dict[int, ChunkRecord] = {c.index: ChunkRecord() for c in chunks}
        #: chunks that were running when the last process died (their prompt may still run or be done)
        self.interrupted: list[int] = []
        if self.path.exists():
            self._load()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.save()

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text())
        except ValueError as exc:
            raise DatasetError(f"run manifest {self.path} is not valid JSON ({exc})") from None
        if data.get("run_key") != self.run_key:
            diff = {
                k: (data.get("run_key", {}).get(k), v)
                for k, v in self.run_key.items()
                if data.get("run_key", {}).get(k) != v
            }
            raise ConfigError(
                f"{self.path} belongs to a different run (changed: {diff})",
                where="run.run_dir",
                fix="resume with the same workflow, seed and chunking, or use a new run directory.",
            )
        for idx_s, rec in data.get("chunks", {}).items():
            idx = int(idx_s)
            if idx in self.records:
                known = {k: v for k, v in rec.items() if k in ChunkRecord.__dataclass_fields__}
                r = ChunkRecord(**{**known, "state": ChunkState(rec["state"])})
                # a chunk that was running when the process died is pending again: the dataset writer
                # replaces a chunk atomically, so running it again cannot duplicate images; the runner
                # first asks its server about its prompt (still running, or done: nothing is redone)
                if r.state == ChunkState.RUNNING:
                    r.state = ChunkState.PENDING
                    self.interrupted.append(idx)
                self.records[idx] = r

    def save(self) -> None:
        data = {
            "version": MANIFEST_VERSION,
            "run_key": self.run_key,
            "updated": time.time(),
            "chunks": {
                # start/count are for people reading the file; loading ignores them
                str(i): {
                    **asdict(r),
                    "state": r.state.value,
                    "start": self.chunks[i].start,
                    "count": self.chunks[i].count,
                }
                for i, r in sorted(self.records.items())
            },
        }
        atomic_write_text(self.path, json.dumps(data, indent=1, sort_keys=True))

    def mark(self, chunk: Chunk, state: ChunkState, **fields: Any) -> None:
        rec = self.records[chunk.index]
        rec.state = state
        for k, v in fields.items():
            setattr(rec, k, v)
        self.save()

    def todo(self, max_attempts: int) -> list[Chunk]:
        """Chunks still to run: pending ones, and failed ones with attempts left, in chunk order."""
        out = []
        for i, rec in sorted(self.records.items()):
            if rec.state == ChunkState.PENDING or (
                rec.state == ChunkState.FAILED and rec.attempts < max_attempts
            ):
                out.append(self.chunks[i])
        return out

    def counts(self) -> dict[str, int]:
        out = {s.value: 0 for s in ChunkState}
        for r in self.records.values():
            out[r.state.value] += 1
        return out
