"""Training data path throughput: fdta's loader vs a one-record-at-a-time OpenCV baseline, same run.

Both produce training batches (RGB, randomly flipped) from the same synthetic ``.rec`` of 112 x 112 JPEGs (quality 95):

* baseline: read a record, unpack, ``cv2.imdecode``, BGR->RGB, flip, float normalise, HWC->CHW, per image;
  then stack the batch (what a straightforward ``Dataset.__getitem__`` + default collate does, in-process);
* fdta: :func:`fdta_core.train.data.make_loader` (batch-level worker requests, decode straight to RGB
  and one flip-or-copy into a preallocated uint8 batch), with 0 and ``--workers`` processes. Its batch
  is uint8: on a GPU it is normalised there (free), so that is the CPU-side data path of GPU training;
  for CPU training the batch normalisation on the CPU is timed as well ("+ CPU normalise").

Decoding (libjpeg-turbo, about 170 us per 112 x 112 image on one core) is the floor of both; the gain
comes from moving the per-image float work off the CPU and from worker processes, which need free
cores: on a machine whose cores are already busy, workers cannot help.

Usage: ``python bench/bench_loader.py [--quick] [--images N] [--batch B] [--workers W]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._steady import load_average, pin_threads, steady_ratio  # noqa: E402
from fdta_core.recordio import RecordReader, unpack  # noqa: E402
from fdta_core.testing.train import write_synthetic_rec  # noqa: E402
from fdta_core.train.data import EpochBatchSampler, RecFaceDataset, make_loader, to_model_input  # noqa: E402


def baseline(rec: Path, keys: list[int], batch: int, seed: int = 0) -> tuple[int, float]:
    import cv2

    reader = RecordReader(rec)
    rng = np.random.default_rng(seed)
    order = rng.permutation(keys)
    n = (len(order) // batch) * batch
    t = time.perf_counter()
    for start in range(0, n, batch):
        items = []
        for key in order[start : start + batch].tolist():
            header, payload = unpack(reader.read(key))
            img = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_COLOR)
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
            if rng.random() < 0.5:
                img = np.fliplr(img)
            x = (img.astype(np.float32) - 127.5) / 127.5
            items.append((torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))), int(header.label)))
        xb = torch.stack([i[0] for i in items])
        yb = torch.tensor([i[1] for i in items])
        assert xb.shape[0] == batch and yb.shape[0] == batch
    return n, time.perf_counter() - t


def fdta(folder: Path, batch: int, workers: int, normalise_on_cpu: bool) -> tuple[int, float]:
    ds = RecFaceDataset(folder)
    sampler = EpochBatchSampler(len(ds), batch, seed=0)
    loader = make_loader(ds, sampler, num_workers=workers)
    n = 0
    t = time.perf_counter()
    for images, labels in loader:
        # On a GPU the uint8 batch is copied over and normalised there (to_model_input on the device),
        # so the CPU-side data path ends here; for CPU training the normalisation is timed too.
        x = to_model_input(images, "cpu") if normalise_on_cpu else images
        assert x.shape[0] == batch and labels.shape[0] == batch
        n += x.shape[0]
    return n, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2,048 images (about 30 s on 2 busy cores)")
    ap.add_argument("--images", type=int, default=8192)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="best of N timings per method (the table)")
    ap.add_argument("--cap", type=float, default=None, help="seconds to repeat each headline ratio")
    args = ap.parse_args()
    pin_threads(1)  # decoding threads inside each worker: the workers are the parallelism
    images = 2048 if args.quick else args.images
    classes = max(2, images // 32)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "set"
        t = time.perf_counter()
        write_synthetic_rec(folder, classes, images // classes, seed=0, size=112)
        print(
            f"wrote {classes * (images // classes)} JPEGs (112x112, q95) in {time.perf_counter() - t:.1f} s"
        )
        rec = folder / "train.rec"
        rec.read_bytes()  # warm the page cache for both methods
        print(f"torch threads 1, cores {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
        keys = list(range(1, classes * (images // classes) + 1))
        methods = {
            "baseline (OpenCV, one record at a time)": lambda: baseline(rec, keys, args.batch),
            "fdta loader, 0 workers": lambda: fdta(folder, args.batch, 0, False),
            f"fdta loader, {args.workers} workers": lambda: fdta(folder, args.batch, args.workers, False),
            "fdta loader, 0 workers + CPU normalise": lambda: fdta(folder, args.batch, 0, True),
            f"fdta loader, {args.workers} workers + CPU normalise": lambda: fdta(
                folder, args.batch, args.workers, True
            ),
        }
        best = {}
        for _ in range(args.repeats):
            for name, fn in methods.items():
                n, dt = fn()
                best[name] = max(best.get(name, 0.0), n / dt)
        base_name = "baseline (OpenCV, one record at a time)"
        base = best[base_name]
        for name, sps in best.items():
            print(f"{name:<46} {sps:9.0f} samples/s   x{sps / base:.2f}")

        def rate(name: str) -> float:
            n, dt = methods[name]()
            return n / dt

        # the headline ratios: the best fdta setting of each path vs the baseline, repeated side by side
        # until the spread is under 10% (or a time cap)
        for label, cpu in (("GPU training path", False), ("CPU training path", True)):
            top = max((k for k in best if k.startswith("fdta") and ("CPU" in k) == cpu), key=best.get)
            st = steady_ratio(
                lambda t=top: rate(t), lambda: rate(base_name), cap_s=args.cap or (40 if args.quick else 120)
            )
            print(f"{label}: {top} vs baseline, {st.line()}; load average {load_average():.1f}")
            print(f"ratio fdta ({label}, best) / baseline: {st.ratio:.2f}")


if __name__ == "__main__":
    main()
