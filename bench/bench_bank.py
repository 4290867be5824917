"""Peak memory of an STG chunk with a 10K-record and with a 1M-record reference bank.

Writes two insightface-layout ``.rec`` sets of synthetic reference faces (10 images per subject; tiny
JPEGs reused across records, so a million records write in about a minute), indexes each once
(:mod:`fdta_core.stg.bank_index`, cached beside the ``.rec``; the build time is printed), then runs one
chunk per bank in a fresh subprocess: open the bank, assign subjects to 100 identities (``subject``
policy), render 4 styles each with the tiny DCFace mixer, and compute the identity embeddings of the
subjects the chunk used (the CSIM leak check). Prints each child's ``ru_maxrss``; the last line is
``bank RSS 1M/10K: R.RRx`` (target: R <= 1.2). Held in memory, the 1M bank alone would be 1M x 112 x
112 x 3 bytes = 37.6 GB.

    nice -n 10 python bench/bench_bank.py                      # 10K and 1M records
    python bench/bench_bank.py --large 100000 --keep /tmp/bb   # smaller, keep the sets for a rerun
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

PER_SUBJECT = 10


def write_bank_rec(folder: Path, records: int, per_subject: int = PER_SUBJECT) -> Path:
    """An insightface ``.rec`` of ``records`` tiny synthetic faces (header, images, identity records,
    ``property``); 64 distinct JPEGs are reused, so the cost is the writing, not the encoding."""
    import numpy as np

    from fdta_core.imagecodec import encode_jpeg
    from fdta_core.recordio import IRHeader, RecordWriter, encode_record, pack, pack_scalar, write_property

    folder.mkdir(parents=True, exist_ok=True)
    rec = folder / "train.rec"
    if rec.is_file() and (folder / "property").is_file():
        return rec
    rng = np.random.default_rng(0)
    jpegs = []
    for _ in range(64):
        coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        jpegs.append(encode_jpeg(np.repeat(np.repeat(coarse, 28, 0), 28, 1), quality=40))
    n_subj = -(-records // per_subject)
    with RecordWriter(rec, folder / "train.idx") as w:
        w.write(0, pack(IRHeader(2, (float(records + 1), float(records + 1 + n_subj)), 0, 0)))
        batch = []
        for k in range(1, records + 1):
            batch.append((k, encode_record(pack_scalar(float((k - 1) // per_subject), k, jpegs[k % 64]))))
            if len(batch) == 50_000:
                w.write_encoded_many(batch)
                batch = []
        w.write_encoded_many(batch)
        for c in range(n_subj):
            a = 1 + c * per_subject
            w.write(
                records + 1 + c, pack(IRHeader(2, (float(a), float(min(records + 1, a + per_subject))), 0, 0))
            )
    write_property(folder, n_subj)
    return rec


def child(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    from fdta_core.faces.identity import bank_subject_embeddings
    from fdta_core.faceset import FaceSet, Provenance
    from fdta_core.stg import ReferenceBank, STGSampler, mix
    from fdta_core.testing.stg import tiny_model

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    bank = ReferenceBank.from_rec(args.rec)
    n = args.identities
    start = 5_000  # a chunk in the middle of a run
    source = FaceSet.from_sources(
        np.random.default_rng(0).integers(0, 256, (n, 112, 112, 3), dtype=np.uint8),
        [Provenance(identity=start + i) for i in range(n)],
    )
    sampler = STGSampler(tiny_model(seed=0), "cpu", "fp32")
    res = mix(sampler, source, bank, images_per_identity=args.styles, run_seed=1, steps=1, batch_size=16)
    used = {p.extra["stg_reference_subject"] for p in res.faceset.provenance}
    w = np.random.default_rng(1).normal(size=(112 * 112 * 3 // 64, 32))
    emb = bank_subject_embeddings(
        bank, lambda x: x.reshape(len(x), -1, 64).astype(np.float32).mean(axis=2) @ w, names=used
    )
    return {
        "records": len(bank),
        "subjects": bank.n_subjects,
        "subjects_used": len(emb),
        "images": len(res.faceset),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "seconds": time.perf_counter() - t0,
    }


def _run_child(rec: Path, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--rec", str(rec),
           "--identities", str(args.identities), "--styles", str(args.styles)]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(REPO))
    if proc.returncode:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"chunk with {rec} failed ({proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", type=int, default=10_000, help="records of the small bank")
    ap.add_argument("--large", type=int, default=1_000_000, help="records of the large bank")
    ap.add_argument("--identities", type=int, default=100, help="identities of the chunk")
    ap.add_argument("--styles", type=int, default=4, help="styles per identity")
    ap.add_argument(
        "--keep", default="", help="folder to write the sets to and keep (default: a temporary one)"
    )
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--rec", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return 0
    from fdta_core.stg.bank_index import open_rec_index

    with tempfile.TemporaryDirectory(prefix="fdta-bankbench-") as tmp:
        base = Path(args.keep or tmp)
        results = []
        for records in (args.small, args.large):
            t0 = time.perf_counter()
            rec = write_bank_rec(base / f"bank{records}", records)
            t1 = time.perf_counter()
            open_rec_index(rec)  # built once here (or found), as the first chunk of a run would
            t2 = time.perf_counter()
            r = _run_child(rec, args)
            results.append(r)
            print(
                f"{r['records']:>9} records, {r['subjects']:>7} subjects: chunk of {args.identities} identities "
                f"x {args.styles} styles ({r['subjects_used']} subjects read): peak RSS {r['peak_rss_mib']:.1f} MiB, "
                f"{r['seconds']:.1f} s (set written in {t1 - t0:.1f} s, indexed in {t2 - t1:.1f} s)",
                flush=True,
            )
    label = lambda n: f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}K"  # noqa: E731
    ratio = results[1]["peak_rss_mib"] / results[0]["peak_rss_mib"]
    print(f"bank RSS {label(args.large)}/{label(args.small)}: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
