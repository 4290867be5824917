"""ArcFace embeddings per second: batched calls vs one image per call, same model, same run.

Uses the tiny ONNX pack from ``fdta_core.testing.faces`` (or a real pack with ``--insightface-dir`` and
``--pack``) on CPU and prints both rates and their ratio (target: batched >= 3x one-at-a-time).

    python bench/bench_csim.py [--quick] [--n 512] [--batch 64]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from fdta_core.faces.csim import csim_filter  # noqa: E402
from fdta_core.faces.models import load_face_pack  # noqa: E402
from fdta_core.faceset import FaceSet, Provenance  # noqa: E402
from fdta_core.testing.faces import make_tiny_face_pack, synthetic_identity_faces  # noqa: E402


def _rate(fn, n: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n / best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer images and repeats (about 10 s)")
    ap.add_argument("--n", type=int, default=512, help="faces to embed")
    ap.add_argument("--batch", type=int, default=32, help="batch size of the batched path")
    ap.add_argument("--insightface-dir", default=None, help="root with models/<pack>/ (default: a tiny pack)")
    ap.add_argument("--pack", default="tiny_pack")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (0 = its default)")
    args = ap.parse_args(argv)
    n = 128 if args.quick else args.n
    repeats = 2 if args.quick else 3

    with tempfile.TemporaryDirectory() as tmp:
        root = args.insightface_dir or tmp
        if args.insightface_dir is None:
            make_tiny_face_pack(tmp, args.pack, genderage=False)
        models = load_face_pack(
            [root], args.pack, providers="CPU", require=("recognizer",), threads=args.threads
        )
        n_id = max(1, n // 8)
        sources, faces, labels = synthetic_identity_faces(n_id, 8, seed=0)
        faces, labels = faces[:n], labels[:n]

        models.embed(faces[: args.batch], batch_size=args.batch)  # warm-up
        batched = _rate(lambda: models.embed(faces, batch_size=args.batch), len(faces), repeats)
        single = _rate(lambda: [models.embed(f[None], batch_size=1) for f in faces], len(faces), repeats)

        prov = [Provenance(identity=int(x)) for x in labels]
        fs = FaceSet(faces, labels, prov, {i: sources[i] for i in set(labels.tolist())})
        t0 = time.perf_counter()
        kept, stats = csim_filter(fs, models, 0.3, batch_size=args.batch)
        filt = len(fs) / (time.perf_counter() - t0)

    print(f"model: {models.recognizer.path.name} ({models.describe()})")
    print(f"faces: {len(faces)}, batch size {args.batch}, best of {repeats}")
    print(f"one-at-a-time: {single:10.1f} embeddings/s")
    print(f"batched:       {batched:10.1f} embeddings/s")
    print(f"ratio batched / one-at-a-time: {batched / single:.2f}x (target >= 3x)")
    print(f"csim_filter end to end: {filt:.1f} images/s (kept {stats.n_kept} / {stats.n_in})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
