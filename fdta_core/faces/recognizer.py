"""ArcFace recogniser (insightface's ``w600k_r50.onnx`` and friends)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import InputError, ModelFormatError
from .align import ensure_rgb_uint8
from .providers import mxnet_normalisation, static_dims, to_blob

log = logging.getLogger(__name__)


class ArcFaceRecognizer:
    """ArcFace embedding model (``w600k_r50.onnx`` and friends): N x 3 x 112 x 112 RGB -> N x D."""

    role = "recognizer"

    def __init__(self, path: Path, session):
        self.path = path
        self.session = session
        inp = session.get_inputs()[0]
        self.input_name = inp.name
        shape = static_dims(inp.shape)
        outs = session.get_outputs()
        if len(shape) != 4 or shape[1] != 3 or shape[2] != 112 or shape[3] != 112:
            raise ModelFormatError(
                f"{path.name}: an ArcFace model takes N x 3 x 112 x 112, this one takes {inp.shape}",
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
        self.output_name = outs[0].name
        self.fixed_batch = shape[0]  # None = dynamic
        if mxnet_normalisation(path):
            self.mean, self.std = 0.0, 1.0
            log.info(
                "[FDTA] faces: %s normalises inside the graph (MXNet export); feeding raw 0-255", path.name
            )
        else:
            self.mean, self.std = 127.5, 127.5

    def embed(self, faces: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Unnormalised embeddings of aligned uint8 RGB faces ``[N, 112, 112, 3]``, in batches."""
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
        if len(arr) == 0:
            return np.zeros((0, self.dim), np.float32)
        bs = self.fixed_batch or max(1, int(batch_size))
        starts = list(range(0, len(arr), bs))

        def prepare(s: int) -> tuple[np.ndarray, int]:
            chunk = arr[s : s + bs]
            pad = 0
            if self.fixed_batch and len(chunk) < self.fixed_batch:
                pad = self.fixed_batch - len(chunk)
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), np.uint8)])
            return to_blob(chunk, self.mean, self.std), pad

        def run(blob: np.ndarray, pad: int) -> np.ndarray:
            emb = self.session.run([self.output_name], {self.input_name: blob})[0]
            return emb[: len(emb) - pad] if pad else emb

        out = [run(*prepare(s)) for s in starts]
        return np.concatenate(out).astype(np.float32, copy=False)
