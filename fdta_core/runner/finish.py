"""``--merge-to``: when every chunk of every shard of a run is done, merge the data set(s) it wrote."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..errors import ConfigError
from .manifest import ChunkState, plan_chunks
from .patch import patch_workflow

log = logging.getLogger(__name__)


def run_complete(cfg) -> tuple[bool, str]:
    """Whether every chunk of the run (all shards, read from their manifests) is done; and why not."""
    _, n = cfg.shard
    done: set[int] = set()
    for i in range(n):
        path = cfg.run_dir / f"run-shard{i:04d}-of-{n:04d}.json"
        if not path.is_file():
            return False, f"shard {i}/{n} has not started ({path.name} missing)"
        data = json.loads(path.read_text())
        done |= {int(k) for k, r in data.get("chunks", {}).items() if r.get("state") == ChunkState.DONE.value}
    total = len(plan_chunks(cfg.identities, cfg.chunk_size, cfg.first_identity))
    if len(done) < total:
        return False, f"{total - len(done)} of {total} chunk(s) not done yet"
    return True, ""


def dataset_folders(cfg, output_dir: Path) -> list[Path]:
    """The data-set folders the run's dataset writers fill, as this machine sees them."""
    first = plan_chunks(cfg.identities, cfg.chunk_size, cfg.first_identity)[0]
    prompt = patch_workflow(cfg.workflow, first, cfg.seed, cfg.overrides, identity_index="")
    names = sorted(
        {
            n["inputs"].get("output_name")
            for n in prompt.values()
            if n.get("class_type") == "FDTADatasetWriter"
            and isinstance(n.get("inputs", {}).get("output_name"), str)
        }
    )
    if not names:
        raise ConfigError(
            "the workflow has no FDTADatasetWriter with a literal output_name", where="run --merge-to"
        )
    return [Path(output_dir) / name for name in names]


def merge_run(
    cfg,
    output_dir: Path | None,
    out: Path,
    *,
    audit_pack: str | None = None,
    insightface_dirs: list[str] | None = None,
    provider: str = "auto",
) -> int | None:
    """Merge (and with ``audit_pack`` audit) the run's data set into ``out`` once the whole run is done;
    returns ``fdta rec merge``'s exit status, or None when the run is not complete yet."""
    if output_dir is None:
        raise ConfigError(
            "--merge-to needs to know where the servers write",
            where="run --merge-to",
            fix="use --launch or --ray (their output folder is known), or pass --output-dir "
            "(ComfyUI's output folder as this machine sees it).",
        )
    ok, why = run_complete(cfg)
    if not ok:
        log.info("not merging yet: %s", why)
        return None
    from ..cli import main as fdta

    argv = ["rec", "merge", str(out), *map(str, dataset_folders(cfg, output_dir))]
    if audit_pack:
        argv += ["--audit", "--pack", audit_pack, "--provider", provider]
        for d in insightface_dirs or []:
            argv += ["--insightface-dir", str(d)]
    import contextlib
    import sys

    with contextlib.redirect_stdout(sys.stderr):  # stdout keeps the run's one JSON summary
        return fdta(argv)


def uniqueness_threshold(cfg) -> float | None:
    """The ACG's ``uniqueness_threshold`` in this run's prompts (the options node's literal value, overrides
    applied; the core's default when the sampler has no options node), or None when no ACG runs."""
    from ..acg.generate import ACGOptions

    first = plan_chunks(cfg.identities, cfg.chunk_size, cfg.first_identity)[0]
    prompt = patch_workflow(cfg.workflow, first, cfg.seed, cfg.overrides, identity_index="")
    if not any(n.get("class_type") == "FDTAACGSampler" for n in prompt.values()):
        return None
    values = [
        n["inputs"].get("uniqueness_threshold")
        for n in prompt.values()
        if n.get("class_type") == "FDTAACGOptions"
    ]
    literal = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    return min(literal) if literal else float(ACGOptions().uniqueness_threshold)


def cross_chunk_duplicates(index_folder: str | Path, threshold: float) -> list[dict]:
    """Pairs of identities of *different* chunks of the run's identity index at or above ``threshold``.

    A chunk's ACG sees the chunks that were done when it started, so chunks generated at the same time
    (several servers, shards, Ray actors) cannot see each other: this is the check of the whole run once
    its chunks are written. Each pair: ``{"identities": [a, b], "cosine": c, "chunks": [A, B]}``, ``a < b``.
    """
    import numpy as np

    from ..faces.identity import IdentityIndex, RunIndex, range_pairs

    vecs, ids, chunk_of, names = [], [], [], []
    for s, e, f in RunIndex(index_folder).chunk_files():
        idx = IdentityIndex.load(f)
        if not len(idx):
            continue
        vecs.append(idx.vectors())
        ids.extend(idx.ids)
        chunk_of.extend([len(names)] * len(idx))
        names.append(f"{s:09d}-{e:09d}")
    if len(names) < 2:
        return []
    if len({v.shape[1] for v in vecs}) > 1:
        log.warning(
            "identity index %s mixes embedding sizes (different face models): not checked", index_folder
        )
        return []
    a, b, c, _info = range_pairs(np.concatenate(vecs), None, float(threshold))
    out = []
    for i, j, cos in zip(a.tolist(), b.tolist(), c.tolist(), strict=True):
        if chunk_of[i] == chunk_of[j]:
            continue
        (ia, ca), (ib, cb) = sorted(((ids[i], chunk_of[i]), (ids[j], chunk_of[j])))
        out.append({"identities": [ia, ib], "cosine": round(cos, 4), "chunks": [names[ca], names[cb]]})
    return sorted(out, key=lambda d: d["identities"])
