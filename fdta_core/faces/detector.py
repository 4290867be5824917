"""SCRFD face detector (insightface's ``det_*.onnx``) and the rule that picks the main face of an image."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, ModelFormatError
from .align import ensure_rgb_uint8
from .providers import static_dims, to_blob


@dataclass
class Detection:
    """One detected face: box ``(x1, y1, x2, y2)`` in input pixels, score in [0, 1], 5 landmarks."""

    bbox: np.ndarray
    score: float
    kps: np.ndarray

    @property
    def size(self) -> float:
        """Shorter side of the box in pixels (what ``min_face_size`` compares)."""
        return float(min(self.bbox[2] - self.bbox[0], self.bbox[3] - self.bbox[1]))


class SCRFDDetector:
    """SCRFD face detector with 5 keypoints (insightface's ``det_*.onnx``)."""

    role = "detector"

    def __init__(self, path: Path, session, det_size: int = 640, threshold: float = 0.5, nms: float = 0.4):
        self.path = path
        self.session = session
        self.threshold = float(threshold)
        self.nms_threshold = float(nms)
        inp = session.get_inputs()[0]
        self.input_name = inp.name
        shape = static_dims(inp.shape)
        if len(shape) != 4 or shape[1] not in (3, None):
            raise ModelFormatError(
                f"{path.name}: detector input must be 1x3xHxW, got {inp.shape}", where="faces.detector"
            )
        self.input_size = (shape[3], shape[2]) if shape[2] and shape[3] else (int(det_size), int(det_size))
        outs = session.get_outputs()
        self.output_names = [o.name for o in outs]
        n = len(outs)
        if n in (6, 9):
            self.fmc, self.strides, self.num_anchors = 3, [8, 16, 32], 2
        elif n in (10, 15):
            self.fmc, self.strides, self.num_anchors = 5, [8, 16, 32, 64, 128], 1
        else:
            raise ModelFormatError(
                f"{path.name}: an SCRFD detector has 6, 9, 10 or 15 outputs, this model has {n}",
                where="faces.detector",
                fix="use an insightface SCRFD detector such as det_10g.onnx.",
            )
        if n in (6, 10):
            raise ModelFormatError(
                f"{path.name}: this SCRFD model gives no 5-point landmarks, which alignment needs",
                where="faces.detector",
                fix="use a keypoint model (det_10g.onnx, scrfd_*_bnkps.onnx).",
            )
        if self.input_size[0] % 32 or self.input_size[1] % 32:
            raise InputError(
                f"detector size must be a multiple of 32, got {self.input_size}", where="faces.det_size"
            )
        self._centers: dict[tuple[int, int, int], np.ndarray] = {}

    def _anchor_centers(self, h: int, w: int, stride: int) -> np.ndarray:
        key = (h, w, stride)
        if key not in self._centers:
            ys, xs = np.mgrid[:h, :w]
            c = (np.stack([xs, ys], axis=-1).astype(np.float32) * stride).reshape(-1, 2)
            if self.num_anchors > 1:
                c = np.repeat(c, self.num_anchors, axis=0)
            self._centers[key] = c
        return self._centers[key]

    def _forward(self, canvas: np.ndarray, threshold: float):
        blob = to_blob(canvas[None], 127.5, 128.0)
        outs = self.session.run(self.output_names, {self.input_name: blob})
        outs = [o[0] if o.ndim == 3 else o for o in outs]  # batched exports carry a leading 1
        ih, iw = canvas.shape[:2]
        scores_l, boxes_l, kps_l = [], [], []
        for i, stride in enumerate(self.strides):
            h, w = ih // stride, iw // stride
            centers = self._anchor_centers(h, w, stride)
            scores = outs[i].reshape(-1)
            box = outs[i + self.fmc].reshape(-1, 4) * stride
            kps = outs[i + 2 * self.fmc].reshape(-1, 10) * stride
            if scores.shape[0] != centers.shape[0] or box.shape[0] != centers.shape[0]:
                raise ModelFormatError(
                    f"{self.path.name}: stride {stride} gives {scores.shape[0]} scores for {centers.shape[0]} anchors",
                    where="faces.detector",
                    fix="this is not an SCRFD model with the insightface output layout.",
                )
            pos = np.nonzero(scores >= threshold)[0]
            c = centers[pos]
            b = box[pos]
            boxes_l.append(
                np.stack([c[:, 0] - b[:, 0], c[:, 1] - b[:, 1], c[:, 0] + b[:, 2], c[:, 1] + b[:, 3]], -1)
            )
            k = kps[pos].reshape(-1, 5, 2) + c[:, None, :]
            kps_l.append(k)
            scores_l.append(scores[pos])
        return np.concatenate(scores_l), np.concatenate(boxes_l), np.concatenate(kps_l)

    def _nms(self, boxes: np.ndarray, scores: np.ndarray) -> list[int]:
        x1, y1, x2, y2 = boxes.T
        areas = (x2 - x1 + 1) * (y2 - y1 + 1)
        order = scores.argsort()[::-1]
        keep: list[int] = []
        while order.size:
            i = int(order[0])
            keep.append(i)
            rest = order[1:]
            w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
            h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
            inter = w * h
            ovr = inter / (areas[i] + areas[rest] - inter)
            order = rest[ovr <= self.nms_threshold]
        return keep

    def detect(self, image_rgb: np.ndarray, threshold: float | None = None) -> list[Detection]:
        """Faces in an RGB uint8 image, best score first; coordinates in the image's pixels."""
        import cv2

        img = ensure_rgb_uint8(image_rgb, where="detect.image")
        thr = self.threshold if threshold is None else float(threshold)
        iw, ih = self.input_size
        im_ratio = img.shape[0] / img.shape[1]
        if im_ratio > ih / iw:
            nh, nw = ih, max(1, int(ih / im_ratio))
        else:
            nw, nh = iw, max(1, int(iw * im_ratio))
        scale = nh / img.shape[0]
        canvas = np.zeros((ih, iw, 3), np.uint8)
        canvas[:nh, :nw] = cv2.resize(img, (nw, nh)) if (nw, nh) != (img.shape[1], img.shape[0]) else img
        scores, boxes, kps = self._forward(canvas, thr)
        if scores.size == 0:
            return []
        boxes = boxes / scale
        kps = kps / scale
        keep = self._nms(boxes, scores)
        return [
            Detection(boxes[i].astype(np.float32), float(scores[i]), kps[i].astype(np.float32)) for i in keep
        ]


def main_face_index(boxes: Sequence[Sequence[float]], shape: tuple[int, ...]) -> int:
    """Index of the face an image is about, insightface's rule for ``max_num=1``: the largest value of
    box area minus twice the squared offset of the box centre from the image centre.

    The image centre is ``(w // 2, h // 2)`` as in insightface's SCRFD ``detect`` (integer division), so
    the choice matches what insightface users get, also on odd-sized images. The first face wins a tie.
    """
    if len(boxes) == 0:
        raise InputError("no face to choose from", where="faces.main_face")
    h, w = shape[:2]
    cx, cy = w // 2, h // 2
    best, best_v = 0, -np.inf
    for i, box in enumerate(boxes):
        x1, y1, x2, y2 = (float(v) for v in box[:4])
        v = (x2 - x1) * (y2 - y1) - 2.0 * (((x1 + x2) / 2 - cx) ** 2 + ((y1 + y2) / 2 - cy) ** 2)
        if v > best_v:
            best, best_v = i, v
    return best


def pick_main_face(dets: Sequence[Detection], shape: tuple[int, ...]) -> Detection:
    """The main face among ``dets`` (see :func:`main_face_index`)."""
    return dets[main_face_index([d.bbox for d in dets], shape)]
