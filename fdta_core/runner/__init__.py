"""Headless runner: queue a workflow over many identity chunks on one or more ComfyUI servers.

A run is a deterministic list of chunks (identity ranges). ``--shard i/N`` picks every chunk whose
index is ``i`` modulo ``N``, so a batch scheduler can run the shards anywhere. Each chunk's state lives
in a run manifest that is rewritten atomically (fsync + rename) on every change; a killed run resumes
without redoing or duplicating finished chunks, and failed chunks are retried up to a limit.

ComfyUI is the engine: for every chunk the API-format workflow is patched (identity range, run seed,
derived seeds, output name) and POSTed to ``/prompt``; progress is followed over the websocket and the
result read from ``/history``. No seed is left to ComfyUI: every seed input is derived from the run
seed and the chunk.
"""

from .manifest import Chunk, ChunkState, RunManifest, plan_chunks, select_shard
from .patch import patch_workflow
from .runner import RunConfig, run

__all__ = [
    "Chunk",
    "ChunkState",
    "RunConfig",
    "RunManifest",
    "patch_workflow",
    "plan_chunks",
    "run",
    "select_shard",
]
