"""insightface's gender/age model (``genderage.onnx``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelFormatError
from .align import crop_transform
from .providers import BatchedModel, mxnet_normalisation, static_dims

#: Approximate face box of an aligned 112x112 crop (x1, y1, x2, y2), used to feed gender/age without
#: running the detector on faces that are already aligned.
ALIGNED_FACE_BOX = (16.0, 24.0, 96.0, 104.0)


class GenderAgeModel(BatchedModel):
    """insightface's gender/age model (``genderage.onnx``): N x 3 x 96 x 96 -> N x 3
    (female / male logits, age / 100)."""

    role = "genderage"

    def __init__(self, path: Path, session: Any) -> None:
        super().__init__(path, session)
        shape, outs = self.input_dims, self.outputs
        if len(shape) != 4 or shape[1] != 3 or not shape[2] or shape[2] != shape[3]:
            raise ModelFormatError(
                f"{path.name}: gender/age input must be N x 3 x S x S, got {self.input_shape}",
                where="faces.genderage",
            )
        oshape = static_dims(outs[0].shape)
        if len(outs) != 1 or len(oshape) != 2 or oshape[1] != 3:
            raise ModelFormatError(
                f"{path.name}: a gender/age model returns N x 3, this one returns {[o.shape for o in outs]}",
                where="faces.genderage",
            )
        self.size = int(shape[2])
        if mxnet_normalisation(path):
            self.mean, self.std = 0.0, 1.0
        else:
            self.mean, self.std = 127.5, 128.0

    def crop(self, image_rgb: np.ndarray, bbox: Sequence[float]) -> np.ndarray:
        """The un-rotated crop the model expects: the box centre, scaled so 1.5 x the longer box side fits."""
        import cv2

        x1, y1, x2, y2 = (float(v) for v in bbox)
        scale = self.size / (max(x2 - x1, y2 - y1) * 1.5)
        m = crop_transform(((x1 + x2) / 2, (y1 + y2) / 2), self.size, scale)
        return cv2.warpAffine(image_rgb, m, (self.size, self.size), borderValue=(0, 0, 0))

    def predict(self, crops: np.ndarray, batch_size: int = 32) -> tuple[list[str], list[int]]:
        """Gender (``"female"``/``"male"``) and age in years for model-sized crops ``[N, S, S, 3]``."""
        if len(crops) == 0:
            return [], []
        pred = self.run_batches(crops, batch_size)
        genders = ["male" if int(np.argmax(p[:2])) == 1 else "female" for p in pred]
        ages = [int(np.round(float(p[2]) * 100)) for p in pred]
        return genders, ages
