"""Tiny ONNX face packs with the real insightface signatures, for tests and benches.

``make_tiny_face_pack(root)`` writes ``root/models/<pack>/`` with

* ``det_10g.onnx``: SCRFD signature (input ``1x3xHxW`` with dynamic H, W; 9 outputs: score / bbox / kps
  for strides 8, 16, 32 with 2 anchors, 2-D as in buffalo_l). Its weights are set by hand so that it
  *means* something: a bright 32x32 cell of the stride-32 grid on a dark background is a "face" whose
  box (128x128) and 5 landmarks (the ArcFace template scaled into that box) are centred on the cell's
  anchor point; strides 8 and 16 never fire. So tests know exactly where the face and landmarks are.
* ``w600k_r50.onnx``: ArcFace signature ``N x 3 x 112 x 112 -> N x 512`` (a small random conv net).
* ``genderage.onnx``: ``N x 3 x 96 x 96 -> N x 3`` (a small random conv net; age output in [0, 1]).

All are exported from small torch networks with seeded weights, so the real loading, pre- and
post-processing code paths run on them.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np

from ..faces.align import ARCFACE_TEMPLATE_112

#: Geometry of the hand-set detector: stride of the firing level, box half-size (pixels).
DET_STRIDE = 32
DET_HALF_BOX = 64.0


def _torch():
    import torch

    return torch


def export_onnx(
    module, path: str | Path, example, input_name: str, output_names: list[str], dynamic: dict
) -> Path:
    """Export a torch module with the legacy exporter (no onnxscript needed), opset 13."""
    torch = _torch()
    module.eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            example,
            buf,
            dynamo=False,
            input_names=[input_name],
            output_names=output_names,
            dynamic_axes=dynamic,
            opset_version=13,
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return path


def _det_module(anywhere: bool = False):
    torch = _torch()
    nn = torch.nn
    f = torch.nn.functional

    # Landmark offsets from the anchor in stride units: template (0..112) mapped into a 128x128 box
    # centred on the anchor.
    kps = (ARCFACE_TEMPLATE_112 * (2 * DET_HALF_BOX / 112.0) - DET_HALF_BOX) / DET_STRIDE

    class TinySCRFD(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.strides = (8, 16, 32)
            # score = sigmoid(gain * (cell mean - bias)); bias 2 is unreachable (inputs are < 1)
            self.gain = 20.0
            self.bias = {8: 2.0, 16: 2.0, 32: -2.0 if anywhere else 0.5}
            self.register_buffer("box", torch.full((1, 8, 1, 1), DET_HALF_BOX / DET_STRIDE))
            self.register_buffer(
                "kps", torch.tensor(np.tile(kps.reshape(-1), 2), dtype=torch.float32).view(1, 20, 1, 1)
            )

        def forward(self, x):
            gray = x.mean(dim=1, keepdim=True)
            scores, boxes, kpss = [], [], []
            for s in self.strides:
                m = f.avg_pool2d(gray, s, s)
                sc = torch.sigmoid(self.gain * (m - self.bias[s])).repeat(1, 2, 1, 1)
                zero = m * 0.0
                scores.append(sc.permute(0, 2, 3, 1).reshape(-1, 1))
                boxes.append((zero + self.box).permute(0, 2, 3, 1).reshape(-1, 4))
                kpss.append((zero + self.kps).permute(0, 2, 3, 1).reshape(-1, 10))
            return (*scores, *boxes, *kpss)

    return TinySCRFD()


def _arcface_module(seed: int, dim: int, mxnet: bool, size: int = 112):
    torch = _torch()
    nn = torch.nn
    g = torch.Generator().manual_seed(seed)

    class TinyArcFace(nn.Module):
        # Odd activations and no biases: images of unrelated identities get near-orthogonal embeddings,
        # noisy copies of one identity stay close, as with a real ArcFace.
        def __init__(self) -> None:
            super().__init__()
            self.c1 = nn.Conv2d(3, 16, 8, 8, bias=False)
            self.c2 = nn.Conv2d(16, 16, 3, 2, 1, bias=False)
            self.fc = nn.Linear(16 * ((size // 8 + 1) // 2) ** 2, dim, bias=False)
            for p in self.parameters():
                with torch.no_grad():
                    p.copy_(torch.randn(p.shape, generator=g) * (1.0 / max(1, p[0].numel()) ** 0.5))

        def forward(self, x):
            if mxnet:  # MXNet-converted models normalise inside the graph: Sub then Mul first
                x = (x - 127.5) * (1.0 / 127.5)
            x = torch.tanh(self.c1(x))
            x = torch.tanh(self.c2(x))
            return self.fc(x.flatten(1))

    return TinyArcFace()


def _genderage_module(seed: int):
    torch = _torch()
    nn = torch.nn
    g = torch.Generator().manual_seed(seed)

    class TinyGenderAge(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = nn.Conv2d(3, 8, 8, 8)
            self.fc = nn.Linear(8, 3)
            for p in self.parameters():
                with torch.no_grad():
                    p.copy_(torch.randn(p.shape, generator=g) * 0.5)

        def forward(self, x):
            h = torch.relu(self.c1(x)).mean(dim=(2, 3))
            o = self.fc(h)
            return torch.cat([o[:, :2], torch.sigmoid(o[:, 2:3])], dim=1)

    return TinyGenderAge()


def _random_det_module(seed: int, batched: bool):
    torch = _torch()
    nn = torch.nn
    g = torch.Generator().manual_seed(seed)

    class RandomSCRFD(nn.Module):
        """Random convolutional heads per stride: many overlapping candidates, for decode/NMS tests."""

        def __init__(self) -> None:
            super().__init__()
            self.heads = nn.ModuleList([nn.Conv2d(3, 2 * 15, s, s) for s in (8, 16, 32)])
            for p in self.parameters():
                with torch.no_grad():
                    p.copy_(torch.randn(p.shape, generator=g) * 0.05)

        def forward(self, x):
            scores, boxes, kpss = [], [], []
            for h in self.heads:
                y = h(x)  # [1, 30, h, w]: per anchor 1 score, 4 box, 10 kps
                y = y.permute(0, 2, 3, 1).reshape(-1, 2, 15).reshape(-1, 15)
                sc = torch.sigmoid(y[:, :1] * 4.0)
                bx = torch.nn.functional.softplus(y[:, 1:5]) * 2.0
                kp = y[:, 5:15] * 2.0
                if batched:
                    sc, bx, kp = sc[None], bx[None], kp[None]
                scores.append(sc)
                boxes.append(bx)
                kpss.append(kp)
            return (*scores, *boxes, *kpss)

    return RandomSCRFD()


def write_random_detector(path: str | Path, *, seed: int = 0, batched: bool = False) -> Path:
    """SCRFD-signature detector with random heads (``batched`` adds the leading 1 some exports carry)."""
    torch = _torch()
    names = [f"o{i}" for i in range(9)]
    ax = 1 if batched else 0
    dyn = {"input.1": {2: "h", 3: "w"}} | {n: {ax: "anchors"} for n in names}
    return export_onnx(
        _random_det_module(seed, batched), path, torch.zeros(1, 3, 64, 64), "input.1", names, dyn
    )


def write_tiny_detector(path: str | Path, *, anywhere: bool = False) -> Path:
    """The hand-set detector; ``anywhere=True`` makes every stride-32 cell a face (so the main-face
    rule picks the central one): any picture, e.g. a random-weight SD sample, yields an aligned face."""
    torch = _torch()
    names = (
        [f"score_{s}" for s in (8, 16, 32)]
        + [f"bbox_{s}" for s in (8, 16, 32)]
        + [f"kps_{s}" for s in (8, 16, 32)]
    )
    dyn = {"input.1": {2: "h", 3: "w"}} | {n: {0: "anchors"} for n in names}
    return export_onnx(_det_module(anywhere), path, torch.zeros(1, 3, 128, 128), "input.1", names, dyn)


def write_tiny_arcface(
    path: str | Path, *, seed: int = 0, dim: int = 512, mxnet: bool = False, size: int = 112
) -> Path:
    """ArcFace-signature model; ``mxnet=True`` puts the normalisation (Sub, Mul) inside the graph;
    ``size``/``dim`` other than 112/512 make a wrong-shape model for error tests."""
    torch = _torch()
    return export_onnx(
        _arcface_module(seed, dim, mxnet, size),
        path,
        torch.zeros(2, 3, size, size),
        "input.1",
        ["embedding"],
        {"input.1": {0: "None"}, "embedding": {0: "None"}},
    )


def write_tiny_genderage(path: str | Path, *, seed: int = 1) -> Path:
    torch = _torch()
    return export_onnx(
        _genderage_module(seed),
        path,
        torch.zeros(2, 3, 96, 96),
        "data",
        ["fc1"],
        {"data": {0: "None"}, "fc1": {0: "None"}},
    )


def make_tiny_face_pack(
    folder: str | Path,
    pack: str = "tiny_pack",
    *,
    seed: int = 0,
    genderage: bool = True,
    mxnet: bool = False,
    detect_anywhere: bool = False,
) -> Path:
    """Write a tiny pack under ``folder/models/<pack>/`` (``folder`` plays ``models/insightface``).

    Returns the pack folder; load it with ``load_face_pack([folder], pack)``.
    """
    d = Path(folder) / "models" / pack
    d.mkdir(parents=True, exist_ok=True)
    write_tiny_detector(d / "det_10g.onnx", anywhere=detect_anywhere)
    write_tiny_arcface(d / "w600k_r50.onnx", seed=seed, mxnet=mxnet)
    if genderage:
        write_tiny_genderage(d / "genderage.onnx", seed=seed + 1)
    return d


def tiny_face_image(
    height: int = 256,
    width: int = 256,
    anchor: tuple[int, int] = (128, 96),
    scale: float = 1.0,
    background: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An RGB image holding one "face" for the tiny detector, and the expected box and landmarks.

    ``anchor`` (x, y) is the face centre *in detector coordinates* (a multiple of 32); ``scale`` is the
    image / detector size ratio (the detector resizes the image by 1/scale). Returns
    ``(image, bbox[4], kps[5, 2])`` in image pixels.
    """
    ax, ay = anchor
    if ax % DET_STRIDE or ay % DET_STRIDE:
        raise ValueError("anchor coordinates must be multiples of 32")
    img = np.full((height, width, 3), background, np.uint8)
    c = int(round(DET_STRIDE * scale))
    x0, y0 = int(round(ax * scale)), int(round(ay * scale))
    img[y0 : y0 + c, x0 : x0 + c] = 255
    bbox = np.array([ax - DET_HALF_BOX, ay - DET_HALF_BOX, ax + DET_HALF_BOX, ay + DET_HALF_BOX]) * scale
    kps = (ARCFACE_TEMPLATE_112 * (2 * DET_HALF_BOX / 112.0) - DET_HALF_BOX + np.array([ax, ay])) * scale
    return img, bbox, kps


def synthetic_identity_faces(
    n_identities: int, per_identity: int, *, noise: float = 20.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Aligned 112x112 "faces": each identity is a smooth random pattern; its images add noise.

    Returns ``(sources [I,112,112,3], images [I*K,112,112,3], labels [I*K])``. With the tiny ArcFace,
    images of one identity have a higher CSIM to their source than to other identities.
    """
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, size=(n_identities, 14, 14, 3))
    sources = np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2)
    imgs, labels = [], []
    for i in range(n_identities):
        for _ in range(per_identity):
            imgs.append(sources[i] + rng.normal(0, noise, size=sources[i].shape))
            labels.append(i)
    clip = lambda a: np.clip(np.rint(a), 0, 255).astype(np.uint8)  # noqa: E731
    return clip(sources), clip(np.stack(imgs)), np.asarray(labels, np.int64)
