"""Training data path over a RecordIO set: read, decode, flip, batch; normalise on the device.

Why it is shaped this way:

* each ``DataLoader`` worker opens the ``.rec`` itself (:class:`~fdta_core.recordio.RecordReader` drops
  its handle when pickled) and builds a *whole batch* per request (``__getitems__``), so there is one
  inter-process hand-off per batch rather than per image;
* images travel as uint8 HWC (a quarter of the bytes of float32) and are converted to normalised
  float CHW in one vectorised step on the training device (:func:`to_model_input`);
* JPEG decode is OpenCV's libjpeg-turbo decoding straight to RGB, then one flip-or-copy into a
  preallocated batch;
* the sample order and every flip derive from ``(seed, epoch)`` in the sampler, so a resumed run sees
  exactly the batches the uninterrupted run would have seen, whatever the number of workers.

NVIDIA DALI is used instead when it is installed, the device is CUDA and the set has the DALI layout
(:func:`make_dali_loader`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, DatasetError
from ..imagecodec import decode_into
from ..recordio import IR_HEADER_SIZE, RecordReader, read_layout, read_property
from ..seeds import derive_seed, numpy_rng

log = logging.getLogger(__name__)

MEAN = 127.5
STD = 127.5


def _find_rec(path: str | Path) -> tuple[Path, Path | None]:
    p = Path(path)
    if p.is_dir():
        rec = p / "train.rec"
    else:
        rec = p
    if not rec.is_file():
        raise DatasetError(
            f"training set {rec} not found",
            fix="pass a .rec file, a folder holding train.rec, train.idx and property, or a data-set folder "
            "holding chunks/ (FDTADatasetWriter's output).",
        )
    idx = rec.with_suffix(".idx")
    return rec, (idx if idx.is_file() else None)


class _FaceItems(torch.utils.data.Dataset):
    """Item access shared by the face datasets: subclasses set ``image_size`` and ``labels`` and
    implement ``load(index, flip, out)``."""

    image_size: int
    labels: np.ndarray

    def load(self, index: int, flip: bool, out: np.ndarray) -> None:
        raise NotImplementedError

    def __getitem__(self, item) -> tuple[torch.Tensor, int]:
        index, flip = item if isinstance(item, tuple) else (item, False)
        out = np.empty((self.image_size, self.image_size, 3), np.uint8)
        self.load(int(index), bool(flip), out)
        return torch.from_numpy(out), int(self.labels[int(index)])

    def __getitems__(self, items: Sequence[tuple[int, bool]]) -> tuple[torch.Tensor, torch.Tensor]:
        out = np.empty((len(items), self.image_size, self.image_size, 3), np.uint8)
        labels = np.empty(len(items), np.int64)
        for j, (index, flip) in enumerate(items):
            self.load(int(index), bool(flip), out[j])
            labels[j] = self.labels[int(index)]
        return torch.from_numpy(out), torch.from_numpy(labels)


class RecFaceDataset(_FaceItems):
    """Images and class labels of a RecordIO face set (insightface, DALI or plain layout).

    Indices are positions in :attr:`image_keys`. ``__getitems__`` takes ``(index, flip)`` pairs (what
    :class:`EpochBatchSampler` yields) and returns ``(uint8 N x H x W x 3 RGB, int64 labels)``.
    """

    def __init__(self, path: str | Path, *, image_size: int = 112, check_property: bool = True) -> None:
        rec, idx = _find_rec(path)
        self.reader = RecordReader(rec, idx)
        self.image_size = int(image_size)
        layout = read_layout(self.reader)
        self.kind = layout.kind
        self.image_keys = np.asarray(layout.image_keys, np.int64)
        if layout.kind == "insightface":
            labels = np.empty(len(self.image_keys), np.int64)
            covered = 0
            for c, (start, end) in enumerate(layout.identity_ranges):
                if not (1 <= start <= end <= len(self.image_keys) + 1):
                    raise DatasetError(
                        f"{rec}: identity record {c} has range [{start}, {end}) outside the images"
                    )
                labels[start - 1 : end - 1] = c
                covered += end - start
            if covered != len(self.image_keys):
                raise DatasetError(
                    f"{rec}: identity ranges cover {covered} images but the header lists {len(self.image_keys)}"
                )
            self._check_sample_labels(labels)
        else:
            if layout.labels is None:
                raise DatasetError(f"{rec}: no labels could be read")
            labels = np.asarray(layout.labels, np.int64)
        if labels.size == 0:
            raise DatasetError(f"{rec} holds no images")
        if labels.min() < 0:
            raise DatasetError(f"{rec}: negative class label {int(labels.min())}")
        self.labels = labels
        self.num_classes = int(layout.num_classes)
        if int(labels.max()) >= self.num_classes:
            raise DatasetError(f"{rec}: label {int(labels.max())} >= {self.num_classes} classes")
        prop = rec.parent / "property"
        if check_property and prop.is_file():
            n_prop, h, w = read_property(rec.parent)
            if n_prop != self.num_classes:
                raise DatasetError(
                    f"{prop} says {n_prop} classes but {rec} holds {self.num_classes}",
                    fix="rewrite the property file (num_classes,112,112) or the set; they must agree.",
                )
            if (h, w) != (self.image_size, self.image_size):
                log.warning("%s: images are %dx%d, training resizes to %d", prop, h, w, self.image_size)

    def _check_sample_labels(self, labels: np.ndarray, count: int = 32) -> None:
        """The range-derived labels must agree with the labels stored in the image headers."""
        picks = np.unique(np.linspace(0, len(labels) - 1, min(count, len(labels))).astype(np.int64))
        for i in picks.tolist():
            head = self.reader.read_header(int(self.image_keys[i]))
            stored = head.label[0] if head.is_array else head.label
            if int(stored) != int(labels[i]):
                raise DatasetError(
                    f"{self.reader.rec_path}: image key {int(self.image_keys[i])} is labelled {int(stored)} "
                    f"but its identity record says class {int(labels[i])}"
                )

    def __len__(self) -> int:
        return len(self.image_keys)

    def _payload(self, record: bytes) -> memoryview:
        flag = int.from_bytes(record[:4], "little")
        return memoryview(record)[IR_HEADER_SIZE + 4 * flag :]

    def load(self, index: int, flip: bool, out: np.ndarray) -> None:
        """Decode image ``index`` into ``out`` (H x W x 3 RGB), flipped horizontally if asked."""
        decode_into(self._payload(self.reader.read(int(self.image_keys[index]))), out, flip)


class ChunkedFaceDataset(_FaceItems):
    """All committed chunks of a data-set folder (``<root>/chunks/<start>-<end>/``) as one training set.

    Labels and image order are exactly those of ``fdta rec merge OUT ROOT``: identities are renumbered
    ``0..C-1`` in the order of their original identity id (``chunk.json``), images grouped by identity in
    key order. So training on the root and on its merged ``train.rec`` sees the same batches, without the
    copy. Chunks that share an identity id are refused (as merge refuses them).
    """

    kind = "chunks"

    def __init__(self, root: str | Path, *, image_size: int = 112, check_property: bool = True) -> None:
        from ..dataset.writer import CHUNKS_DIR, list_chunks

        self.root = Path(root)
        chunks = list_chunks(self.root)
        # a chunk in which every identity was rejected is committed empty (its manifest says why):
        # nothing to train on, so it is skipped with a note
        self.empty_chunks = [c.name for c in chunks if c.images == 0]
        for name in self.empty_chunks:
            log.warning(
                "chunk %s of %s has no images (every identity was rejected); skipped", name, self.root
            )
        chunks = [c for c in chunks if c.images > 0]
        if not chunks:
            raise DatasetError(
                f"{self.root / CHUNKS_DIR} holds no committed chunk with images"
                + (f" ({len(self.empty_chunks)} empty chunk(s))" if self.empty_chunks else ""),
                fix="let FDTADatasetWriter finish at least one chunk, or pass a folder holding train.rec.",
            )
        self.image_size = int(image_size)
        self.parts = [
            RecFaceDataset(c.path, image_size=image_size, check_property=check_property) for c in chunks
        ]
        entries: list[tuple[int, int, int]] = []  # (original identity, part, local label)
        for p, (info, part) in enumerate(zip(chunks, self.parts, strict=True)):
            part.reader.close()  # reopened lazily on first read (also in each DataLoader worker)
            if len(info.identities) != part.num_classes:
                raise DatasetError(
                    f"{info.path}: chunk.json lists {len(info.identities)} identities, "
                    f"the records hold {part.num_classes}",
                    fix="run `fdta rec info` on the data set; rewrite the broken chunk.",
                )
            entries.extend((int(ident), p, local) for local, ident in enumerate(info.identities))
        entries.sort()
        for a, b in zip(entries, entries[1:], strict=False):
            if a[0] == b[0]:
                raise DatasetError(
                    f"identity {a[0]} is in chunk {chunks[a[1]].name} and in chunk {chunks[b[1]].name}",
                    fix="remove the duplicate chunk, or merge independent sets with `fdta rec merge --renumber`.",
                )
        # positions of each (part, local label) block inside the part; parts are grouped by label
        part_idx, pos = [], []
        labels = []
        for new, (_ident, p, local) in enumerate(entries):
            lab = self.parts[p].labels
            lo, hi = np.searchsorted(lab, local, "left"), np.searchsorted(lab, local, "right")
            if hi <= lo:
                raise DatasetError(f"{chunks[p].path}: identity {_ident} has no images")
            part_idx.append(np.full(hi - lo, p, np.int32))
            pos.append(np.arange(lo, hi, dtype=np.int64))
            labels.append(np.full(hi - lo, new, np.int64))
        self._part = np.concatenate(part_idx)
        self._pos = np.concatenate(pos)
        self.labels = np.concatenate(labels)
        self.num_classes = len(entries)
        self.identities = [e[0] for e in entries]
        self.chunks = [c.name for c in chunks]
        log.info(
            "training on %d chunk(s) of %s: %d images, %d identities",
            len(chunks),
            self.root,
            len(self.labels),
            self.num_classes,
        )

    @property
    def reader(self) -> RecordReader:
        """The first chunk's reader (what callers that log a path need)."""
        return self.parts[0].reader

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, index: int, flip: bool, out: np.ndarray) -> None:
        self.parts[int(self._part[index])].load(int(self._pos[index]), flip, out)


def open_face_dataset(path: str | Path, *, image_size: int = 112) -> RecFaceDataset | ChunkedFaceDataset:
    """The training set at ``path``: a ``.rec`` file or a folder holding ``train.rec`` (one set), or a
    data-set folder holding ``chunks/`` (every committed chunk, labelled as ``fdta rec merge`` would).

    A folder with neither is refused; a data-set folder is never silently reduced to one chunk.
    """
    from ..dataset.writer import CHUNKS_DIR

    p = Path(path)
    if p.is_dir() and not (p / "train.rec").is_file():
        if (p / CHUNKS_DIR).is_dir():
            return ChunkedFaceDataset(p, image_size=image_size)
        raise DatasetError(
            f"{p} holds neither train.rec nor a chunks/ folder",
            fix="pass a folder holding train.rec/train.idx/property, a data-set folder written by "
            "FDTADatasetWriter (chunks/), or the output of `fdta rec merge`.",
        )
    if p.is_dir() and (p / CHUNKS_DIR).is_dir():
        log.warning("%s holds both train.rec and chunks/: training on train.rec", p)
    return RecFaceDataset(p, image_size=image_size)


class EpochBatchSampler(torch.utils.data.Sampler):
    """Yields this rank's batches of ``(index, flip)`` for one epoch; resumable at any batch.

    The epoch's permutation and flips come from ``derive_seed(seed, 'sampler'|'flip', epoch)``; global
    batch ``b`` is ``perm[b*B*W : (b+1)*B*W]`` and rank ``r`` takes its ``r``-th slice of ``B``. The tail
    that does not fill a global batch is dropped (every rank must see the same number of steps).
    """

    def __init__(
        self, n: int, batch_size: int, *, rank: int = 0, world_size: int = 1, seed: int = 0, flip: bool = True
    ) -> None:
        self.n, self.batch_size = int(n), int(batch_size)
        self.rank, self.world_size = int(rank), int(world_size)
        self.seed, self.flip = int(seed), bool(flip)
        self.epoch, self.start_batch = 0, 0
        if self.batches_per_epoch == 0:
            raise ConfigError(
                f"{n} images do not fill one global batch of {batch_size} x {world_size} processes",
                fix="lower batch_size or the number of processes.",
            )

    @property
    def batches_per_epoch(self) -> int:
        return self.n // (self.batch_size * self.world_size)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = int(epoch), int(start_batch)

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start_batch

    def __iter__(self) -> Iterator[list[tuple[int, bool]]]:
        perm = numpy_rng(self.seed, "sampler", self.epoch).permutation(self.n)
        flips = (
            numpy_rng(self.seed, "flip", self.epoch).random(self.n) < 0.5
            if self.flip
            else np.zeros(self.n, bool)
        )
        gb = self.batch_size * self.world_size
        for b in range(self.start_batch, self.batches_per_epoch):
            lo = b * gb + self.rank * self.batch_size
            idx = perm[lo : lo + self.batch_size]
            yield list(zip(idx.tolist(), flips[idx].tolist(), strict=True))


def _passthrough(batch):
    return batch


def make_loader(
    dataset: RecFaceDataset, sampler: EpochBatchSampler, *, num_workers: int = 2, pin_memory: bool = False
) -> torch.utils.data.DataLoader:
    """A DataLoader of ``(uint8 NHWC, labels)`` batches (one worker request per batch)."""
    kw = {}
    if num_workers > 0:
        kw = {"prefetch_factor": 4, "persistent_workers": False}
    # The loader gets its own generator: creating an iterator draws a worker base seed, and drawing it
    # from the global RNG would shift dropout/sampling randomness after a resume.
    gen = torch.Generator()
    gen.manual_seed(derive_seed(sampler.seed, "loader", sampler.rank))
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        generator=gen,
        collate_fn=_passthrough,
        num_workers=num_workers,
        pin_memory=pin_memory,
        **kw,
    )


def to_model_input(images: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """uint8 N x H x W x 3 RGB -> contiguous float N x 3 x H x W in [-1, 1] on ``device``.

    On a GPU the uint8 batch (a quarter of the bytes) is copied over and converted there. On the CPU a
    strided NHWC->NCHW float copy is slow (several times the cost of the arithmetic), so each channel
    plane is converted with numpy's contiguous-output ufunc instead.
    """
    device = torch.device(device)
    n, h, w, c = images.shape
    if device.type == "cpu":
        src = images.numpy()
        x = np.empty((n, c, h, w), np.float32)
        for i in range(n):
            for ch in range(c):
                np.subtract(src[i, :, :, ch], MEAN, out=x[i, ch], dtype=np.float32)
        return torch.from_numpy(x).div_(STD)
    images = images.to(device, non_blocking=True)
    x = torch.empty((n, c, h, w), dtype=torch.float32, device=device)
    x.copy_(images.permute(0, 3, 1, 2))  # one pass: layout change and conversion together
    return x.sub_(MEAN).div_(STD)


def dali_available() -> bool:
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


def make_dali_loader(
    rec: str | Path,
    *,
    batch_size: int,
    rank: int,
    world_size: int,
    device_id: int,
    seed: int,
    num_threads: int = 4,
):
    """A DALI iterator yielding ``(float N x 3 x 112 x 112 in [-1, 1] on the GPU, labels)`` batches.

    Only for the DALI layout (every record an image, shuffled). DALI shuffles with its own buffer, so a
    resumed run continues with new batches rather than the exact remaining ones.
    """
    from nvidia.dali import fn, pipeline_def, types
    from nvidia.dali.plugin.pytorch import DALIClassificationIterator, LastBatchPolicy

    rec, idx = _find_rec(rec)
    if idx is None:
        raise DatasetError(f"DALI needs the index file next to {rec}")

    @pipeline_def(batch_size=batch_size, num_threads=num_threads, device_id=device_id, seed=seed % (2**31))
    def pipe():
        jpegs, labels = fn.readers.mxnet(
            path=[str(rec)],
            index_path=[str(idx)],
            initial_fill=16384,
            num_shards=world_size,
            shard_id=rank,
            random_shuffle=True,
            pad_last_batch=False,
            name="reader",
        )
        images = fn.decoders.image(jpegs, device="mixed", output_type=types.RGB)
        images = fn.crop_mirror_normalize(
            images,
            dtype=types.FLOAT,
            mean=[MEAN] * 3,
            std=[STD] * 3,
            output_layout="CHW",
            mirror=fn.random.coin_flip(probability=0.5),
        )
        return images, labels.gpu()

    p = pipe()
    p.build()
    it = DALIClassificationIterator(
        p, reader_name="reader", last_batch_policy=LastBatchPolicy.DROP, auto_reset=True
    )

    class _Wrap:
        def __len__(self) -> int:
            return p.epoch_size("reader") // (batch_size * world_size)

        def __iter__(self):
            for data in it:
                yield data[0]["data"], data[0]["label"].view(-1).long()

    return _Wrap()
