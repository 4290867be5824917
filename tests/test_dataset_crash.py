"""Crash safety: a writer process killed with SIGKILL in the middle of a chunk, then resumed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fdta_core.dataset import inspect, list_chunks, merge, query, recover
from fdta_core.dataset.writer import _HOST

REPO = Path(__file__).resolve().parent.parent

CHILD = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from fdta_core.dataset import write_faceset, list_chunks
    from fdta_core.faceset import ChunkStamp, FaceSet, Provenance

    root, hang_at = sys.argv[1], int(sys.argv[2])
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 0

    def faceset(start, n_id, per):
        labels = np.repeat(np.arange(start, start + n_id), per)
        rng = np.random.default_rng(start + seed)
        imgs = rng.integers(0, 256, (len(labels), 112, 112, 3), dtype=np.uint8)
        # one run (same spec and run seed): re-writing its own chunk after a crash is allowed
        return FaceSet(imgs, labels, [Provenance(identity=int(x), seeds={"run": seed}) for x in labels],
                       chunk=ChunkStamp(start, start + n_id, "crash-test-spec", 7))

    def hang(done, total):
        if done >= 8:
            print("MID", flush=True)
            time.sleep(120)

    done = {c.name for c in list_chunks(root)}   # resume: skip committed chunks (what the runner does)
    for i, start in enumerate(range(0, 16, 4)):
        name = f"{start:09d}-{start + 4:09d}"
        if name in done and i != hang_at:
            continue
        write_faceset(faceset(start, 4, 6), root, batch_size=4, workers=2,
                      progress=hang if i == hang_at else None)
        print("COMMITTED", name, flush=True)
    print("DONE", flush=True)
    """
)


def run_child(root: Path, hang_at: int, seed: int = 0) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root), str(hang_at), str(seed)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def kill_at_mid(proc: subprocess.Popen) -> list[str]:
    lines = []
    for line in proc.stdout:
        lines.append(line.strip())
        if line.startswith("MID"):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, (lines, proc.stderr.read())
    return lines


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")
def test_sigkill_mid_chunk_then_resume(tmp_path):
    root = tmp_path / "ds"
    # 1st run: chunks 0 and 1 commit, killed half-way through chunk 2
    lines = kill_at_mid(run_child(root, hang_at=2))
    assert lines[:2] == ["COMMITTED 000000000-000000004", "COMMITTED 000000004-000000008"]
    assert [c.name for c in list_chunks(root)] == ["000000000-000000004", "000000004-000000008"]
    leftovers = [p.name for p in (root / "chunks").iterdir() if p.name.startswith(".")]
    assert len(leftovers) == 1 and leftovers[0].startswith(".tmp-000000008-000000012-")
    rep = inspect(root)  # the half chunk is not part of the set
    assert rep.ok and rep.images == 48 and "unfinished" in rep.warnings[0]

    # 2nd run: re-writing committed chunk 1 is killed half-way: the old copy stays committed
    before = (root / "chunks" / "000000004-000000008" / "train.rec").read_bytes()
    kill_at_mid(run_child(root, hang_at=1, seed=5))
    assert (root / "chunks" / "000000004-000000008" / "train.rec").read_bytes() == before

    # 3rd run resumes: skips committed chunks, cleans the dead writers' folders, writes the rest
    proc = run_child(root, hang_at=-1)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out.split() == ["COMMITTED", "000000008-000000012", "COMMITTED", "000000012-000000016", "DONE"]
    assert [c.name for c in list_chunks(root)] == [f"{s:09d}-{s + 4:09d}" for s in range(0, 16, 4)]
    assert not [p for p in (root / "chunks").iterdir() if p.name.startswith(".")]
    rep = inspect(root)
    assert rep.ok and rep.warnings == [] and rep.images == 96 and rep.classes == 16

    # merged: every identity exactly once with its 6 images, nothing lost, nothing duplicated
    merge(tmp_path / "merged", [root])
    rep = inspect(tmp_path / "merged")
    assert rep.ok, rep.errors
    assert rep.images == 96 and rep.classes == 16
    counts = query(
        tmp_path / "merged", "SELECT identity, count(*) FROM images GROUP BY identity ORDER BY identity"
    )
    assert counts == [(i, 6) for i in range(16)]
    assert query(tmp_path / "merged", "SELECT DISTINCT json_extract(seeds, '$.run') FROM images") == [(0,)]


def test_recover_after_kill_between_the_renames(tmp_path):
    """Killed after moving the old chunk aside and before moving the new one in: the old one returns."""
    import numpy as np

    from fdta_core.dataset import write_faceset
    from fdta_core.faceset import FaceSet, Provenance

    labels = np.repeat(np.arange(2), 2)
    fs = FaceSet(np.zeros((4, 112, 112, 3), np.uint8), labels, [Provenance(identity=int(x)) for x in labels])
    write_faceset(fs, tmp_path, start=0, count=2)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    chunks = tmp_path / "chunks"
    final = chunks / "000000000-000000002"
    old = chunks / f".old-000000000-000000002-{_HOST}-{dead.pid}"
    tmp = chunks / f".tmp-000000000-000000002-{_HOST}-{dead.pid}"
    os.replace(final, old)
    tmp.mkdir()
    foreign = chunks / ".tmp-000000002-000000004-elsewhere-1"
    foreign.mkdir()
    assert list_chunks(tmp_path) == []
    done = recover(tmp_path)
    assert any("restored committed chunk 000000000-000000002" in d for d in done)
    assert [c.name for c in list_chunks(tmp_path)] == ["000000000-000000002"]
    assert not old.exists() and not tmp.exists()
    assert foreign.exists()  # another host's writer may still be running: left alone
    assert inspect(tmp_path).images == 4
