"""ArcFace recogniser (insightface's ``w600k_r50.onnx`` and friends)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, ModelFormatError
from .align import ensure_rgb_uint8
from .providers import BatchedModel, mxnet_normalisation, static_dims

log = logging.getLogger(__name__)


class ArcFaceRecognizer(BatchedModel):
    """ArcFace embedding model (``w600k_r50.onnx`` and friends): N x 3 x 112 x 112 RGB -> N x D."""

    role = "recognizer"

    def __init__(self, path: Path, session: Any) -> None:
        super().__init__(path, session)
        shape, outs = self.input_dims, self.outputs
        if len(shape) != 4 or shape[1] != 3 or shape[2] != 112 or shape[3] != 112:
            raise ModelFormatError(
                f"{path.name}: an ArcFace model takes N x 3 x 112 x 112, this one takes {self.input_shape}",
                where="faces.recognizer",
                fix="use an insightface recognition model such as w600k_r50.onnx.",
            )
        oshape = static_dims(outs[0].shape)
        if len(outs) != 1 or len(oshape) != 2 or not oshape[1] or oshape[1] < 64:
            raise ModelFormatError(
                f"{path.name}: an ArcFace model returns one N x D embedding, this one returns "
                f"{[o.shape for o in outs]}",
                where="faces.recognizer",
            )
        self.dim = int(oshape[1])
        if mxnet_normalisation(path):
            self.mean, self.std = 0.0, 1.0
            log.info(
                "[FDTA] faces: %s normalises inside the graph (MXNet export); feeding raw 0-255", path.name
            )
        else:
            self.mean, self.std = 127.5, 127.5

    def embed(self, faces: np.ndarray, batch_size: int = 32, progress: Any = None) -> np.ndarray:
        """Unnormalised embeddings of aligned uint8 RGB faces ``[N, 112, 112, 3]``, in batches."""
        return self.embed_many([faces], batch_size, progress)[0]

    def embed_many(
        self,
        parts: Sequence[np.ndarray],
        batch_size: int = 32,
        progress: Any = None,
        on_batch: Callable[[int, int, np.ndarray], None] | None = None,
    ) -> list[np.ndarray]:
        """Embeddings of several face arrays in one pipeline (e.g. a faceset and its source faces, so the
        sources fill the last batch instead of costing a batch of their own); one array per part.
        ``on_batch(start, stop, embeddings)``: see :meth:`BatchedModel.run_batches` (indices run over
        the parts end to end)."""
        arrs = [self._checked(f) for f in parts]
        sizes = [len(a) for a in arrs]
        if not sum(sizes):
            return [np.zeros((0, self.dim), np.float32) for _ in arrs]
        emb = self.run_batches([a for a in arrs if len(a)], batch_size, progress, on_batch)
        emb = emb.astype(np.float32, copy=False)
        return np.split(emb, np.cumsum(sizes)[:-1])

    @staticmethod
    def _checked(faces: np.ndarray) -> np.ndarray:
        arr = np.asarray(faces)
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4 or arr.shape[1:] != (112, 112, 3):
            raise InputError(
                f"embeddings need aligned faces [N, 112, 112, 3], got {list(arr.shape)}",
                where="embed",
                fix="align the faces first (FDTAAlignFaces / FaceModels.align_batch).",
            )
        if arr.dtype != np.uint8:
            arr = np.stack([ensure_rgb_uint8(a) for a in arr]) if len(arr) else arr.astype(np.uint8)
        return arr
