"""An fp16 copy of an ONNX face model (ArcFace on CUDA: half the memory traffic, tensor cores).

The conversion keeps the model's float32 input and output (a Cast at each end), so callers feed and read
float32 as before; weights, constants and every float tensor inside become float16 (values clipped to
the float16 range). Written with ``onnx`` alone (no extra dependency); it covers the operators of
insightface's recognisers (Conv, BatchNormalization, PRelu, Add, Flatten, Gemm, ...). Closeness to the
float32 model is tested on the CPU (``tests/test_faces_fp16.py``; cosine >= 0.999 per embedding on the
tiny pack).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

#: ops whose float inputs/attributes must stay float32 (shape arithmetic, not activations)
_KEEP_FLOAT32 = {"Resize", "Upsample", "Range", "ConstantOfShape"}


def _half(arr: np.ndarray) -> np.ndarray:
    info = np.finfo(np.float16)
    return np.clip(arr, info.min, info.max).astype(np.float16)


def convert_float16(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Write an fp16 copy of ``src`` to ``dst`` (float32 input and output kept); returns ``dst``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    if any(n.op_type in _KEEP_FLOAT32 for n in graph.node):
        raise ValueError(
            f"{Path(src).name} has operators ({sorted({n.op_type for n in graph.node} & _KEEP_FLOAT32)}) "
            "this converter does not handle; use onnxconverter-common's float16 tools for it"
        )
    F32, F16 = TensorProto.FLOAT, TensorProto.FLOAT16
    for i, init in enumerate(graph.initializer):
        if init.data_type == F32:
            graph.initializer[i].CopyFrom(
                numpy_helper.from_array(_half(numpy_helper.to_array(init)), init.name)
            )
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == F32:
                attr.t.CopyFrom(numpy_helper.from_array(_half(numpy_helper.to_array(attr.t)), attr.t.name))
            if node.op_type == "Cast" and attr.name == "to" and attr.i == F32:
                attr.i = F16
    for vi in graph.value_info:
        if vi.type.tensor_type.elem_type == F32:
            vi.type.tensor_type.elem_type = F16
    # float32 at the edges: Cast after each float input, before each float output
    casts_in, casts_out = [], []
    for inp in graph.input:
        if inp.type.tensor_type.elem_type != F32:
            continue
        half = f"{inp.name}__fp16"
        for node in graph.node:
            node.input[:] = [half if x == inp.name else x for x in node.input]
        casts_in.append(helper.make_node("Cast", [inp.name], [half], to=F16, name=f"{inp.name}__to_fp16"))
    for out in graph.output:
        if out.type.tensor_type.elem_type != F32:
            continue
        half = f"{out.name}__fp16"
        for node in graph.node:
            node.output[:] = [half if x == out.name else x for x in node.output]
            node.input[:] = [half if x == out.name else x for x in node.input]
        casts_out.append(helper.make_node("Cast", [half], [out.name], to=F32, name=f"{out.name}__to_fp32"))
    nodes = [*casts_in, *graph.node, *casts_out]
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))
    log.info("[FDTA] faces: wrote fp16 copy of %s to %s", Path(src).name, dst)
    return Path(dst)


def fp16_cache_dir() -> Path:
    """Where fp16 copies go: ``$FDTA_CACHE_DIR/fp16`` or ``~/.cache/fdta/fp16`` (never the models folder,
    which may be read-only or shared)."""
    env = os.environ.get("FDTA_CACHE_DIR")
    base = Path(env) if env else Path(os.path.expanduser("~")) / ".cache" / "fdta"
    return base / "fp16"


def cached_float16(src: str | os.PathLike) -> Path:
    """The fp16 copy of ``src``, converted once and reused while ``src`` keeps its size and mtime."""
    p = Path(src)
    st = p.stat()
    dst = fp16_cache_dir() / f"{p.stem}-{st.st_size}-{int(st.st_mtime)}.fp16.onnx"
    if not dst.is_file():
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
        convert_float16(p, tmp)
        os.replace(tmp, dst)  # atomic: a concurrent loader sees the whole file or none
    return dst
