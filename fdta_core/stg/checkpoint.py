"""Loading DCFace mixer checkpoints without executing pickled code, and converting them to safetensors.

DCFace ships PyTorch Lightning checkpoints (``torch.save`` zip archives). Their ``hyper_parameters``
hold omegaconf ``DictConfig`` objects and hydra-made ``functools.partial`` objects, so
``torch.load(weights_only=True)`` refuses them. :func:`read_lightning_checkpoint` opens the archive
itself and unpickles ``data.pkl`` with :class:`RestrictedUnpickler`:

* tensors are rebuilt by FDTA's own functions from the raw storage bytes (the names
  ``torch._utils._rebuild_tensor_v2`` etc. are *mapped* to them, never imported);
* omegaconf / hydra / DCFace (``src.*``) / ``functools.partial`` / ``typing`` / ``pathlib`` globals become
  inert :class:`InertObject` stand-ins that only record their arguments and state;
* a handful of plain builtin containers are admitted;
* every other global (``os.system``, ``builtins.eval``, ``subprocess.*``, ...) raises
  :class:`~fdta_core.errors.UnsafeFileError` before anything is called.

Key handling: the sampling path (EMA UNet, ID encoder, style backbone, style head) is mapped onto
:class:`~fdta_core.stg.model.STGModel` names; training-only prefixes are recognised and skipped by name;
anything else is reported in :class:`LoadReport`.
"""

from __future__ import annotations

import io
import json
import logging
import pickle
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelFormatError, UnsafeFileError
from .config import STGConfig

log = logging.getLogger(__name__)

#: Version tag of the settings JSON stored in converted safetensors files.
FORMAT = "fdta-stg-v1"
#: Metadata key in converted safetensors files.
SETTINGS_KEY = "fdta_stg"

#: File names of the frozen style backbone that DCFace loads before the checkpoint overrides it.
ADAFACE_STYLE_FILE = "adaface_ir50_casia.ckpt"

# ---------------------------------------------------------------------------- key mapping
#: DCFace prefix -> FDTA prefix on the sampling path (EMA UNet first; ``model.`` is the fallback).
SAMPLING_PREFIXES: tuple[tuple[str, str], ...] = (
    ("ema_model.averaged_model.", "unet."),
    ("label_mapping.backbone.backbone.", "id_encoder.backbone."),
    ("recognition_model.backbone.", "style_backbone."),
)
#: Exact DCFace key -> FDTA key.
SAMPLING_KEYS: dict[str, str] = {
    "label_mapping.pos_emb.0": "id_encoder.pos_emb",
    "label_mapping.scaler.0": "id_encoder.scaler",
    "external_mapping.conv_0.weight": "style_head.conv.weight",
    "external_mapping.conv_0.bias": "style_head.conv.bias",
    "external_mapping.norm_0.weight": "style_head.norm.weight",
    "external_mapping.norm_0.bias": "style_head.norm.bias",
    "external_mapping.norm_0.running_mean": "style_head.norm.running_mean",
    "external_mapping.norm_0.running_var": "style_head.norm.running_var",
    "external_mapping.norm_0.num_batches_tracked": "style_head.norm.num_batches_tracked",
    "external_mapping.relu_0.weight": "style_head.relu.weight",
    "external_mapping.channel_weight_0.0": "style_head.channel_weight",
    "external_mapping.pos_emb_0.0": "style_head.pos_emb",
    "external_mapping.ln_0.weight": "style_head.ln.weight",
    "external_mapping.ln_0.bias": "style_head.ln.bias",
    "external_mapping.cross_attn_adapter.weight": "style_head.cross_attn_adapter.weight",
    "external_mapping.cross_attn_adapter.bias": "style_head.cross_attn_adapter.bias",
}
#: Prefixes that only training uses: recognised and skipped by name.
TRAINING_ONLY_PREFIXES: dict[str, str] = {
    "model.": "non-EMA UNet (training weights; the sampler uses the EMA copy)",
    "recognition_model.center.": "class centres of the style backbone (looked up during training only)",
    "recognition_model_eval.": "IR-101 evaluation network and its centres (training-time ID loss)",
}
#: FDTA prefixes of the style backbone (frozen AdaFace IR-50).
STYLE_BACKBONE_PREFIX = "style_backbone."


@dataclass
class LoadReport:
    """What happened to each key of a checkpoint."""

    source: str
    unet_from: str = ""
    mapped: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # training-only prefix -> number of keys
    unexpected: list[str] = field(default_factory=list)  # keys nobody recognises
    missing: list[str] = field(default_factory=list)  # model keys absent from the file
    shape_mismatch: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{self.mapped} sampling-path tensors (UNet from '{self.unet_from}')"]
        if self.skipped:
            parts.append("skipped training-only " + ", ".join(f"{k}* ({n})" for k, n in self.skipped.items()))
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected: {self.unexpected[:8]}")
        if self.missing:
            parts.append(f"{len(self.missing)} missing: {self.missing[:8]}")
        if self.shape_mismatch:
            parts.append(f"{len(self.shape_mismatch)} shape mismatches: {self.shape_mismatch[:8]}")
        return f"{self.source}: " + "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "unet_from": self.unet_from,
            "mapped": self.mapped,
            "skipped": dict(self.skipped),
            "unexpected": list(self.unexpected),
            "missing": list(self.missing),
            "shape_mismatch": list(self.shape_mismatch),
        }


def is_dcface_layout(keys: Any) -> bool:
    return any(k.startswith(("ema_model.", "label_mapping.", "external_mapping.", "model.")) for k in keys)


def map_dcface_state_dict(
    sd: Mapping[str, torch.Tensor], *, source: str = "checkpoint", use_ema: bool = True
) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """DCFace ``Trainer.state_dict()`` names -> :class:`STGModel` names.

    The EMA UNet is taken when present (DCFace samples with it: ``use_ema`` is True in the released
    files); ``model.*`` is used only when the file has no EMA copy or ``use_ema`` is False.
    """
    report = LoadReport(source=source)
    has_ema = any(k.startswith("ema_model.averaged_model.") for k in sd)
    unet_prefix = "ema_model.averaged_model." if (use_ema and has_ema) else "model."
    report.unet_from = unet_prefix
    if unet_prefix == "model." and use_ema:
        log.warning(
            "%s has no EMA UNet (ema_model.averaged_model.*); using the training weights model.*", source
        )
    prefixes = [(unet_prefix, "unet.")] + [(p, q) for p, q in SAMPLING_PREFIXES if q != "unet."]
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        target = SAMPLING_KEYS.get(key)
        if target is None:
            for p, q in prefixes:
                if key.startswith(p):
                    target = q + key[len(p) :]
                    break
        if target is not None:
            out[target] = value
            continue
        for p in (*TRAINING_ONLY_PREFIXES, "ema_model.averaged_model."):
            if key.startswith(p):
                report.skipped[p] = report.skipped.get(p, 0) + 1
                break
        else:
            report.unexpected.append(key)
    report.mapped = len(out)
    return out, report


# ---------------------------------------------------------------------------- restricted unpickling
class InertObject:
    """Stand-in for a pickled object of a class FDTA does not trust: records, never executes.

    Instances keep the global's name, the constructor arguments, the ``__setstate__`` state and any
    items/attributes the pickle sets, so settings can still be *read* (e.g. for a report) afterwards.
    """

    _fdta_global: str = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> InertObject:
        obj = object.__new__(cls)
        object.__setattr__(obj, "_fdta_args", args)
        object.__setattr__(obj, "_fdta_kwargs", kwargs)
        object.__setattr__(obj, "_fdta_state", None)
        object.__setattr__(obj, "_fdta_items", {})
        object.__setattr__(obj, "_fdta_list", [])
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # arguments were recorded by __new__
        pass

    def __setstate__(self, state: Any) -> None:
        object.__setattr__(self, "_fdta_state", state)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._fdta_items[key] = value

    def append(self, value: Any) -> None:
        self._fdta_list.append(value)

    def extend(self, values: Any) -> None:
        self._fdta_list.extend(values)

    def __setattr__(self, name: str, value: Any) -> None:
        self._fdta_items[name] = value

    def __repr__(self) -> str:
        return f"<inert {self._fdta_global}>"


_INERT_CLASSES: dict[str, type] = {}


def _inert_class(module: str, name: str) -> type:
    full = f"{module}.{name}"
    cls = _INERT_CLASSES.get(full)
    if cls is None:
        cls = type(f"Inert_{name}", (InertObject,), {"_fdta_global": full})
        _INERT_CLASSES[full] = cls
    return cls


#: Modules whose globals become inert stand-ins: configuration objects, DCFace's own classes, and what
#: Lightning stores beside the weights (loop/callback state, numpy scalars, torch dtypes). Being inert,
#: none of them is imported or called; they only keep the checkpoint readable.
INERT_MODULE_PREFIXES: tuple[str, ...] = (
    "omegaconf",
    "hydra",
    "src",
    "typing",
    "pathlib",
    "enum",
    "argparse",
    "datetime",
    "numpy",
    "pytorch_lightning",
    "lightning",
    "lightning_fabric",
    "torchmetrics",
    "torch",
)
#: Single globals that become inert stand-ins.
INERT_GLOBALS: frozenset[str] = frozenset(
    {"functools.partial", "collections.defaultdict", "_operator.attrgetter_disabled"}
)
#: Builtins whose call is harmless (type constructors only; never getattr/eval/exec/__import__/open).
SAFE_BUILTINS: dict[tuple[str, str], Any] = {
    ("builtins", "dict"): dict,
    ("builtins", "list"): list,
    ("builtins", "tuple"): tuple,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "int"): int,
    ("builtins", "float"): float,
    ("builtins", "str"): str,
    ("builtins", "bool"): bool,
    ("builtins", "bytes"): bytes,
    ("builtins", "bytearray"): bytearray,
    ("builtins", "complex"): complex,
    ("builtins", "slice"): slice,
    ("builtins", "object"): object,
    ("builtins", "NoneType"): type(None),
    ("collections", "OrderedDict"): OrderedDict,
    ("__builtin__", "set"): set,
    (
        "_codecs",
        "encode",
    ): None,  # filled below: protocol-2 pickles store bytes as _codecs.encode(str, "latin1")
}


def _codecs_encode(text: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """The only use of ``_codecs.encode`` in data pickles: ``str -> bytes`` in latin-1 / utf-8."""
    if not isinstance(text, str) or encoding.lower() not in (
        "latin1",
        "latin-1",
        "iso-8859-1",
        "utf-8",
        "utf8",
    ):
        raise UnsafeFileError(
            "_codecs.encode used for something other than text -> bytes", where="checkpoint"
        )
    return text.encode(encoding, errors)


SAFE_BUILTINS[("_codecs", "encode")] = _codecs_encode

_STORAGE_DTYPES: dict[str, torch.dtype] = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


@dataclass(frozen=True)
class _StorageType:
    dtype: torch.dtype


def _rebuild_tensor(storage: torch.Tensor, offset: int, size: Any, stride: Any, *_rest: Any) -> torch.Tensor:
    """FDTA's replacement for ``torch._utils._rebuild_tensor_v2``: a strided view of the flat storage."""
    if not isinstance(storage, torch.Tensor):
        raise UnsafeFileError("a tensor refers to something that is not a storage", where="checkpoint")
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if len(size) and any(s == 0 for s in size):
        return torch.empty(size, dtype=storage.dtype)
    needed = int(offset) + (sum((s - 1) * st for s, st in zip(size, stride, strict=True)) + 1 if size else 1)
    if needed > storage.numel():
        raise ModelFormatError("a tensor reaches past the end of its storage", where="checkpoint")
    return torch.as_strided(storage, size, stride, int(offset)).clone()


def _rebuild_parameter(data: torch.Tensor, requires_grad: bool = False, *_rest: Any) -> torch.Tensor:
    return data


_TORCH_REBUILD: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves globals only through FDTA's allow-list (see the module docstring)."""

    def __init__(self, file: Any, storages: Mapping[str, bytes] | None, *, where: str) -> None:
        super().__init__(file, encoding="utf-8")
        self._storages = storages or {}
        self._where = where
        self._loaded: dict[str, torch.Tensor] = {}
        self.inert_globals: set[str] = set()

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        if key in _TORCH_REBUILD:
            return _TORCH_REBUILD[key]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "torch" and name == "Size":
            return tuple
        if key in SAFE_BUILTINS:
            return SAFE_BUILTINS[key]
        full = f"{module}.{name}"
        if full in INERT_GLOBALS or any(
            module == p or module.startswith(p + ".") for p in INERT_MODULE_PREFIXES
        ):
            self.inert_globals.add(full)
            return _inert_class(module, name)
        raise UnsafeFileError(
            f"the pickle references the global '{full}', which a model checkpoint has no reason to contain; "
            "nothing was executed",
            where=self._where,
            fix="only load checkpoints from trusted sources; a DCFace mixer checkpoint holds tensors and "
            "omegaconf/hydra settings only.",
        )

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage" or len(pid) < 5:
            raise UnsafeFileError(f"unsupported persistent id {pid!r:.80}", where=self._where)
        _, stype, key, _location, numel = pid[:5]
        if not isinstance(stype, _StorageType):
            raise UnsafeFileError("a storage record names an unknown storage type", where=self._where)
        key = str(key)
        if key not in self._loaded:
            raw = self._storages.get(key)
            if raw is None:
                raise ModelFormatError(f"storage '{key}' is missing from the archive", where=self._where)
            dtype = stype.dtype
            t = (
                torch.frombuffer(bytearray(raw), dtype=torch.uint8)
                if raw
                else torch.empty(0, dtype=torch.uint8)
            )
            t = t.view(dtype) if raw else torch.empty(0, dtype=dtype)
            if t.numel() != int(numel) and int(numel) * t.element_size() != len(raw):
                # numel may count bytes (untyped storages) or elements (typed storages)
                if len(raw) != int(numel):
                    raise ModelFormatError(f"storage '{key}' has the wrong size", where=self._where)
            self._loaded[key] = t
        return self._loaded[key]


class _LazyStorages(Mapping[str, bytes]):
    def __init__(self, zf: zipfile.ZipFile, prefix: str) -> None:
        self._zf = zf
        self._prefix = prefix
        self._names = {n[len(prefix) :]: n for n in zf.namelist() if n.startswith(prefix)}

    def __getitem__(self, key: str) -> bytes:
        return self._zf.read(self._names[key])

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return self[key] if key in self._names else default


def read_lightning_checkpoint(path: str | Path) -> dict[str, Any]:
    """Unpickle a ``torch.save`` zip archive (e.g. a Lightning ``.ckpt``) without executing code.

    Returns the top-level object (a dict for Lightning files). Tensors are CPU tensors.
    """
    path = Path(path)
    where = f"checkpoint {path.name}"
    if not path.is_file():
        raise ModelFormatError(f"{path} does not exist", where=where)
    if not zipfile.is_zipfile(path):
        raise UnsafeFileError(
            f"{path.name} is not a torch zip archive (a legacy or raw pickle); it is not read",
            where=where,
            fix="re-save it with torch >= 1.6 in a trusted environment, or convert it to safetensors there.",
        )
    with zipfile.ZipFile(path) as zf:
        pkls = [n for n in zf.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pkls) != 1:
            raise ModelFormatError(f"expected one data.pkl in the archive, found {len(pkls)}", where=where)
        prefix = pkls[0][: -len("data.pkl")] + "data/"
        up = RestrictedUnpickler(io.BytesIO(zf.read(pkls[0])), _LazyStorages(zf, prefix), where=where)
        obj = up.load()
    if up.inert_globals:
        log.info("%s: replaced %d non-tensor globals by inert stand-ins", path.name, len(up.inert_globals))
    return obj


def hparam(obj: Any, *path: str) -> Any:
    """Best-effort read of a value inside inert omegaconf objects (``DictConfig`` state ``_content``,
    value nodes ``_val``) or plain dicts; ``None`` when absent. Nothing is executed."""

    def unwrap(o: Any) -> Any:
        for _ in range(8):
            if isinstance(o, InertObject):
                st = o._fdta_state
                o = st if st is not None else dict(o._fdta_items)
            elif isinstance(o, dict) and "_content" in o:
                o = o["_content"]
            elif isinstance(o, dict) and "_val" in o and len(o) <= 3:
                o = o["_val"]
            elif isinstance(o, tuple) and len(o) == 2 and isinstance(o[1], dict) and o[0] is None:
                o = o[1]  # (None, slots) state
            else:
                return o
        return o

    cur = unwrap(obj)
    for key in path:
        if not isinstance(cur, dict) or key not in cur:
            return None
        cur = unwrap(cur[key])
    return cur


# ---------------------------------------------------------------------------- files -> STG state dicts
@dataclass
class STGWeights:
    """A state dict in FDTA naming plus its settings, ready to build :class:`STGModel`."""

    state_dict: dict[str, torch.Tensor]
    config: STGConfig
    report: LoadReport
    settings: dict[str, Any]


def _settings_for(config: STGConfig, report: LoadReport, source: str) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "grid": config.grid,
        "config": config.to_dict(),
        "source": Path(source).name,
        "unet_from": report.unet_from,
    }


def _finish(
    sd: dict[str, torch.Tensor],
    report: LoadReport,
    source: str,
    cfg: STGConfig | None,
    num_head_channels: int | None = None,
) -> STGWeights:
    if not any(k.startswith(STYLE_BACKBONE_PREFIX) for k in sd):
        raise ModelFormatError(
            f"{Path(source).name} has no weights for the frozen style backbone (recognition_model.backbone.*)",
            where="STG checkpoint",
            fix=f"add the AdaFace IR-50 CASIA-WebFace backbone ({ADAFACE_STYLE_FILE}, from DCFace's "
            "pretrained_models) with `fdta stg convert CKPT OUT --style-backbone adaface_ir50_casia.ckpt`.",
        )
    config = cfg or STGConfig.from_state_dict(sd, num_head_channels=num_head_channels)
    return STGWeights(sd, config, report, _settings_for(config, report, source))


def load_style_backbone_file(path: str | Path) -> dict[str, torch.Tensor]:
    """AdaFace IR-50 checkpoint (``model.*`` keys in a Lightning file) -> ``style_backbone.*`` tensors."""
    path = Path(path)
    raw = _load_raw(path)
    sd = raw.get("state_dict", raw) if isinstance(raw, dict) else None
    if not isinstance(sd, Mapping):
        raise ModelFormatError(f"{path.name} holds no state_dict", where="style backbone")
    out = {}
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor):
            continue
        for p in ("model.", "recognition_model.backbone.", "style_backbone.", ""):
            if k.startswith(p) and (k[len(p) :].startswith(("input_layer.", "body.", "output_layer."))):
                out[STYLE_BACKBONE_PREFIX + k[len(p) :]] = v
                break
    if not out:
        raise ModelFormatError(f"{path.name} holds no IR-50 backbone weights", where="style backbone")
    return out


def _load_raw(path: Path) -> Any:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return read_lightning_checkpoint(path)


def load_stg_weights(
    path: str | Path,
    *,
    config: STGConfig | None = None,
    style_backbone: str | Path | None = None,
    use_ema: bool = True,
    num_head_channels: int | None = None,
) -> STGWeights:
    """Read a DCFace ``.ckpt``, a safetensors file in DCFace naming, or one written by :func:`convert`."""
    path = Path(path)
    where = f"STG checkpoint {path.name}"
    if not path.is_file():
        raise ModelFormatError(f"{path} does not exist", where=where)
    settings: dict[str, Any] = {}
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if SETTINGS_KEY in meta:
            settings = json.loads(meta[SETTINGS_KEY])
        raw: Any = load_file(str(path))
    else:
        ckpt = read_lightning_checkpoint(path)
        hp = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
        if num_head_channels is None and hp is not None:
            nhc = hparam(hp, "unet_config", "model_params", "num_head_channels")
            if isinstance(nhc, int) and nhc > 0:
                num_head_channels = nhc
            if hparam(hp, "use_ema") is False:  # DCFace samples with model.* when use_ema is off
                use_ema = False
        raw = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
        if raw is None and isinstance(ckpt, dict) and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
            raw = ckpt
        if not isinstance(raw, Mapping):
            raise ModelFormatError("the checkpoint has no 'state_dict'", where=where)
    raw = {k: v for k, v in raw.items() if isinstance(v, torch.Tensor)}
    if is_dcface_layout(raw):
        sd, report = map_dcface_state_dict(raw, source=path.name, use_ema=use_ema)
    else:
        sd, report = dict(raw), LoadReport(source=path.name, unet_from=settings.get("unet_from", "unet."))
        known = ("unet.", "id_encoder.", "style_backbone.", "style_head.")
        report.unexpected = [k for k in sd if not k.startswith(known)]
        for k in report.unexpected:
            sd.pop(k)
        report.mapped = len(sd)
    if style_backbone is not None:
        extra = load_style_backbone_file(style_backbone)
        sd = {k: v for k, v in sd.items() if not k.startswith(STYLE_BACKBONE_PREFIX)}
        sd.update(extra)
    if config is None and settings.get("config"):
        config = STGConfig.from_dict(settings["config"])
    return _finish(sd, report, str(path), config, num_head_channels)


def build_model(weights: STGWeights, *, strict: bool = True):  # -> STGModel
    """Instantiate :class:`STGModel` and load ``weights``; missing or mis-shaped keys are errors."""
    from .model import STGModel

    model = STGModel(weights.config)
    check_against_model(weights, model)
    if strict and (weights.report.missing or weights.report.shape_mismatch):
        raise ModelFormatError(
            f"the checkpoint does not fit the STG model: {weights.report.summary()}",
            where=f"STG checkpoint {weights.report.source}",
            fix="use a DCFace mixer checkpoint (dcface_5x5.ckpt / dcface_3x3.ckpt) or a file converted from one.",
        )
    model.load_state_dict(weights.state_dict, strict=False)
    model.eval()
    if weights.report.unexpected:
        log.warning(
            "STG checkpoint: ignoring %d unexpected keys: %s",
            len(weights.report.unexpected),
            weights.report.unexpected[:10],
        )
    return model


def check_against_model(weights: STGWeights, model: torch.nn.Module) -> LoadReport:
    """Fill ``missing`` / ``shape_mismatch`` / ``unexpected`` of the report against ``model``."""
    report = weights.report
    expected = model.state_dict()
    report.missing = [k for k in expected if k not in weights.state_dict]
    report.shape_mismatch = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in weights.state_dict.items()
        if k in expected and tuple(v.shape) != tuple(expected[k].shape)
    ]
    extra = [k for k in weights.state_dict if k not in expected]
    for k in extra:
        weights.state_dict.pop(k)
    report.unexpected.extend(extra)
    return report


def convert(
    src: str | Path,
    dst: str | Path,
    *,
    style_backbone: str | Path | None = None,
    dtype: torch.dtype | None = None,
    num_head_channels: int | None = None,
    use_ema: bool = True,
) -> STGWeights:
    """Write the sampling-path weights of ``src`` and a settings JSON (grid size, widths) to safetensors."""
    from safetensors.torch import save as save_bytes

    from ..fsutil import atomic_open

    weights = load_stg_weights(
        src, style_backbone=style_backbone, num_head_channels=num_head_channels, use_ema=use_ema
    )
    build_model(weights)  # proves every key fits before anything is written
    tensors = {}
    for k, v in weights.state_dict.items():
        v = v.detach().contiguous()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        tensors[k] = v
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    meta = {SETTINGS_KEY: json.dumps(weights.settings, sort_keys=True), "format": FORMAT}
    data = save_bytes(tensors, metadata=meta)
    with atomic_open(dst, "wb") as f:
        f.write(data)
    return weights


def to_dcface_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """FDTA names -> DCFace names (the EMA copy for the UNet): the inverse of :func:`map_dcface_state_dict`.

    Used to write test checkpoints in the released layout.
    """
    inverse = {v: k for k, v in SAMPLING_KEYS.items()}
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key in inverse:
            out[inverse[key]] = value
            continue
        for p, q in SAMPLING_PREFIXES:
            if key.startswith(q):
                out[p + key[len(q) :]] = value
                break
        else:
            raise ModelFormatError(f"'{key}' is not an STG model key", where="to_dcface_state_dict")
    return out
