"""ONNX export with insightface's convention, so a trained model plugs into the CSIM filter and into
insightface's own ``ArcFaceONNX``: input ``N x 3 x 112 x 112`` RGB float normalised as
``(x - 127.5) / 127.5`` (the normalisation is *not* in the graph), output ``N x 512`` unnormalised, batch
dimension dynamic.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np

from ..errors import ModelFormatError
from ..eval.models import load_backbone

log = logging.getLogger(__name__)


def export_onnx(checkpoint: str | Path, output: str | Path, *, opset: int = 17, check: bool = True) -> Path:
    """Export the backbone of ``checkpoint`` (``model.pt``, a training checkpoint or a bare state dict).

    With ``check`` the ONNX output is compared with torch on random input (max abs diff < 1e-3) when
    onnxruntime is installed.
    """
    import torch

    model = load_backbone(checkpoint)
    size = model.input_size
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros(1, 3, size, size)
    tmp = output.with_name(output.name + ".tmp.onnx")
    # The TorchScript exporter gives the plain Conv/BN/PRelu/Gemm graph insightface tools expect and
    # needs no onnxscript; torch marks it deprecated, which is not news to the user.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (dummy,),
            str(tmp),
            input_names=["input.1"],
            output_names=["embedding"],
            dynamic_axes={"input.1": {0: "N"}, "embedding": {0: "N"}},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    tmp.replace(output)
    if check:
        try:
            import onnxruntime as ort
        except ImportError:
            log.warning("onnxruntime not installed: exported %s without a numerical check", output)
            return output
        x = np.random.default_rng(0).uniform(-1, 1, (2, 3, size, size)).astype(np.float32)
        sess = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        with torch.no_grad():
            want = model(torch.from_numpy(x)).numpy()
        diff = float(np.abs(got - want).max())
        if diff > 1e-3 * max(1.0, float(np.abs(want).max())):
            raise ModelFormatError(f"ONNX export of {checkpoint} differs from torch by {diff}")
        log.info("exported %s (max |onnx - torch| = %.2e)", output, diff)
    return output
