"""Peak memory of one chunk through STG, age, CSIM and the writer, for 10 and for 100 identities.

Each size runs in a fresh subprocess (so peaks do not mix) with tiny models: the tiny DCFace mixer
(``fdta_core.testing.stg``), the tiny SAM (``fdta_core.testing.age``) and a tiny ArcFace pack (ONNX,
``fdta_core.testing.faces``). The child does what the ComfyUI nodes of one prompt do, through the same
core functions, and keeps every node output alive to the end as ComfyUI's output cache does: the
facesets *and* the IMAGE previews the nodes return. It reports ``ru_maxrss``; the last line is
``chunk RSS 100/10: R.RRx`` (target: R < 2; memory linear in the chunk gives about 10x the chunk part).

    python bench/bench_chunk_memory.py            # 10 and 100 identities, 4 styles x (original + 1 age)
    python bench/bench_chunk_memory.py --small 4 --large 20 --steps 1
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


def _preview(faceset):  # -> torch IMAGE, what the STG/age nodes return for a person to look at
    """The node's preview: a bounded sample sheet where the code has one, else (older code) the whole
    faceset as a float IMAGE batch, so the bench measures either version of the nodes."""
    from fdta_core import faceset as fs_mod

    sheet = getattr(fs_mod, "faceset_preview", None)
    if sheet is not None:
        return fs_mod.uint8_to_image(sheet(faceset)[None])
    return fs_mod.faceset_to_image(faceset)


def child(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    from fdta_core.age.shift import AgeTargets, shift_faceset
    from fdta_core.dataset.writer import write_faceset
    from fdta_core.faces.csim import contact_sheet as csim_sheet
    from fdta_core.faces.csim import csim_filter, histogram_image
    from fdta_core.faces.pack import load_face_pack
    from fdta_core.faceset import ChunkStamp, FaceSet, Provenance, uint8_to_image
    from fdta_core.stg import ReferenceBank, STGSampler, mix
    from fdta_core.testing.age import tiny_sam
    from fdta_core.testing.stg import tiny_model

    torch.set_num_threads(max(1, args.threads))
    n = args.identities
    rng = np.random.default_rng(0)
    models = load_face_pack(
        [args.pack_root], "tiny_pack", providers="cpu", require=("recognizer",), threads=1
    )
    sampler = STGSampler(tiny_model(seed=0), "cpu", "fp32")
    sam = tiny_sam(seed=0)
    refs = rng.integers(0, 256, (40, 112, 112, 3), dtype=np.uint8)
    bank = ReferenceBank.from_images(refs, subjects=[f"s{i // 4}" for i in range(40)])
    src = rng.integers(0, 256, (n, 112, 112, 3), dtype=np.uint8)
    source = FaceSet.from_sources(
        src, [Provenance(identity=i) for i in range(n)], stage="acg", chunk=ChunkStamp(0, n, "bench", 0)
    )
    cache: dict[str, object] = {"acg": source}  # every node output stays alive, as in ComfyUI's cache
    t0 = time.perf_counter()
    res = mix(
        sampler, source, bank, images_per_identity=args.styles, run_seed=1, steps=args.steps, batch_size=16
    )
    cache["stg"] = (res.faceset, uint8_to_image(res.contact_sheet[None]), _preview(res.faceset))
    aged = shift_faceset(sam, res.faceset, AgeTargets("list", (60.0,)), keep_originals=True, batch_size=8)
    cache["age"] = (aged, _preview(aged))
    kept, stats = csim_filter(aged, models, -1.0, "source", batch_size=32)
    cache["csim"] = (
        kept,
        uint8_to_image(csim_sheet(aged, stats)[None]),
        uint8_to_image(histogram_image(stats.csim, -1.0)[None]),
    )
    info = write_faceset(kept, Path(args.out) / f"ds{n}", workers=2)
    cache["writer"] = info
    secs = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"identities": n, "images": info.images, "peak_rss_mib": peak_kib / 1024.0, "seconds": secs}


def _run_child(n: int, args: argparse.Namespace, pack_root: str, out: str) -> dict:
    cmd = [
        sys.executable, str(Path(__file__).resolve()), "--child", "--identities", str(n),
        "--styles", str(args.styles), "--steps", str(args.steps), "--threads", str(args.threads),
        "--pack-root", pack_root, "--out", out,
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(REPO))
    if proc.returncode:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"child for {n} identities failed ({proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", type=int, default=10, help="identities of the small chunk")
    ap.add_argument("--large", type=int, default=100, help="identities of the large chunk")
    ap.add_argument("--styles", type=int, default=4, help="STG images per identity")
    ap.add_argument("--steps", type=int, default=2, help="STG denoising steps (tiny model)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--identities", type=int, default=10, help=argparse.SUPPRESS)
    ap.add_argument("--pack-root", default="", help=argparse.SUPPRESS)
    ap.add_argument("--out", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return 0
    from fdta_core.testing.faces import make_tiny_face_pack

    with tempfile.TemporaryDirectory(prefix="fdta-chunkmem-") as tmp:
        make_tiny_face_pack(tmp, "tiny_pack", genderage=False)
        small = _run_child(args.small, args, tmp, tmp)
        large = _run_child(args.large, args, tmp, tmp)
    for r in (small, large):
        print(
            f"{r['identities']:>5} identities, {r['images']:>6} images written: "
            f"peak RSS {r['peak_rss_mib']:.1f} MiB ({r['seconds']:.1f} s)"
        )
    ratio = large["peak_rss_mib"] / small["peak_rss_mib"]
    print(f"chunk RSS {args.large}/{args.small}: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
