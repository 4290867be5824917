"""Safe reading of DCFace Lightning checkpoints, key classification, and `fdta stg convert`."""

from __future__ import annotations

import functools
import io
import json
import os
import pickle
import sys
import types
from collections import OrderedDict

import pytest
import torch

from fdta_core.errors import ModelFormatError, UnsafeFileError
from fdta_core.stg.checkpoint import (
    InertObject,
    build_model,
    load_stg_weights,
    read_lightning_checkpoint,
    to_dcface_state_dict,
)
from fdta_core.testing.stg import tiny_config, tiny_model

CALLS: list[str] = []


def _fake_modules() -> dict[str, types.ModuleType]:
    """Stand-ins for omegaconf and DCFace's datamodule, with booby traps that record any execution."""
    omegaconf = types.ModuleType("omegaconf")
    dictconfig = types.ModuleType("omegaconf.dictconfig")

    class DictConfig:
        def __init__(self, content):
            self.__dict__["_content"] = dict(content)

        def __getstate__(self):
            return {"_content": self._content, "_metadata": {"ref_type": "Any"}}

        def __setstate__(self, state):
            CALLS.append("DictConfig.__setstate__")
            self.__dict__.update(state)

    DictConfig.__module__ = "omegaconf.dictconfig"
    DictConfig.__qualname__ = "DictConfig"
    dictconfig.DictConfig = DictConfig
    omegaconf.DictConfig = DictConfig
    omegaconf.dictconfig = dictconfig

    src = types.ModuleType("src")
    dm = types.ModuleType("src.datamodules")
    fdm = types.ModuleType("src.datamodules.face_datamodule")

    class FaceDataModule:
        def __init__(self, *a, **k):
            CALLS.append("FaceDataModule.__init__")

    FaceDataModule.__module__ = "src.datamodules.face_datamodule"
    FaceDataModule.__qualname__ = "FaceDataModule"
    fdm.FaceDataModule = FaceDataModule
    return {
        "omegaconf": omegaconf,
        "omegaconf.dictconfig": dictconfig,
        "src": src,
        "src.datamodules": dm,
        "src.datamodules.face_datamodule": fdm,
    }


class _Modules:
    def __init__(self):
        self.mods = _fake_modules()

    def __enter__(self):
        self.saved = {k: sys.modules.get(k) for k in self.mods}
        sys.modules.update(self.mods)
        return self.mods

    def __exit__(self, *exc):
        for k, v in self.saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def write_lightning_ckpt(path, model, *, with_style=True, extra=None):
    """A checkpoint in the released structure: Lightning top-level keys, DCFace state-dict names, and
    hyper_parameters made of omegaconf DictConfigs and a hydra-style functools.partial."""
    sd = to_dcface_state_dict(model.state_dict())
    if not with_style:
        sd = {k: v for k, v in sd.items() if not k.startswith("recognition_model.backbone.")}
    full = OrderedDict()
    for k, v in sd.items():
        if k.startswith("ema_model.averaged_model."):
            full["model." + k[len("ema_model.averaged_model.") :]] = v + 1.0 if v.is_floating_point() else v
    full.update(sd)
    full["recognition_model.center.weight"] = torch.randn(4, 32)
    full["recognition_model_eval.backbone.input_layer.0.weight"] = torch.randn(8, 3, 3, 3)
    full.update(extra or {})
    with _Modules() as mods:
        dc = mods["omegaconf"].DictConfig
        ckpt = {
            "epoch": 3,
            "global_step": 1000,
            "pytorch-lightning_version": "1.7.1",
            "state_dict": full,
            "loops": {"fit_loop": {"state_dict": {}}},
            "callbacks": {"ModelCheckpoint{'monitor': None}": {"best_model_score": torch.tensor(0.5)}},
            "optimizer_states": [],
            "lr_schedulers": [],
            "hparams_name": "kwargs",
            "hyper_parameters": {
                "unet_config": dc(
                    {
                        "params": dc({"condition_type": "crossatt_and_stylemod"}),
                        "model_params": dc({"num_head_channels": 16, "num_channels": 8}),
                    }
                ),
                "external_mapping": dc({"spatial_dim": 5, "version": "v4_dropout"}),
                "use_ema": True,
                "datamodule": functools.partial(
                    mods["src.datamodules.face_datamodule"].FaceDataModule, batch_size=8
                ),
            },
        }
        torch.save(ckpt, path)
    return full


@pytest.fixture(scope="module")
def tiny():
    return tiny_model(seed=3)


@pytest.fixture
def ckpt(tmp_path, tiny):
    path = tmp_path / "dcface_tiny.ckpt"
    write_lightning_ckpt(path, tiny, extra={"something.else": torch.zeros(2)})
    return path


def test_reads_lightning_file_without_executing(ckpt):
    CALLS.clear()
    with _Modules():  # even with the classes importable, nothing of theirs may run
        obj = read_lightning_checkpoint(ckpt)
    assert CALLS == []
    hp = obj["hyper_parameters"]
    assert isinstance(hp["unet_config"], InertObject)
    assert hp["unet_config"]._fdta_global == "omegaconf.dictconfig.DictConfig"
    assert hp["unet_config"]._fdta_state["_content"]["params"]._fdta_global.endswith("DictConfig")
    assert hp["datamodule"]._fdta_global == "functools.partial"
    assert hp["use_ema"] is True
    assert obj["state_dict"]["recognition_model.center.weight"].shape == (4, 32)
    # and torch's own safe loader refuses the same file, which is why the restricted reader exists
    with pytest.raises(pickle.UnpicklingError):
        torch.load(ckpt, weights_only=True)


@torch.no_grad()
def test_ema_weights_picked_and_keys_reported(ckpt, tiny):
    # the head width is read from the inert hyper_parameters (unet_config.model_params.num_head_channels)
    assert load_stg_weights(ckpt).config == tiny_config()
    w = load_stg_weights(ckpt, config=tiny_config())
    model = build_model(w)
    r = w.report
    assert r.unet_from == "ema_model.averaged_model."
    assert r.unexpected == ["something.else"]
    assert set(r.skipped) == {"model.", "recognition_model.center.", "recognition_model_eval."}
    assert not r.missing and not r.shape_mismatch
    for k, v in tiny.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k


def test_missing_style_backbone_names_adaface_file(tmp_path, tiny):
    path = tmp_path / "no_style.ckpt"
    write_lightning_ckpt(path, tiny, with_style=False)
    with pytest.raises(ModelFormatError, match="adaface_ir50_casia.ckpt"):
        load_stg_weights(path, config=tiny_config())


def _evil_file(tmp_path, marker):
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"a": torch.zeros(1)}, "hyper_parameters": {"x": Evil()}}, path)
    return path


def test_malicious_pickle_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = _evil_file(tmp_path, marker)
    with pytest.raises(UnsafeFileError, match="system"):
        read_lightning_checkpoint(path)
    with pytest.raises(UnsafeFileError):
        load_stg_weights(path)
    assert not marker.exists()


def test_lightning_extras_become_inert(tmp_path):
    import numpy as np

    path = tmp_path / "extras.ckpt"
    torch.save(
        {
            "state_dict": {"w": torch.arange(6.0).view(2, 3).t()},
            "score": np.float64(0.5),
            "dtype": torch.float16,
            "loader": torch.load,
        },
        path,
    )
    obj = read_lightning_checkpoint(path)
    assert torch.equal(obj["state_dict"]["w"], torch.arange(6.0).view(2, 3).t())
    assert isinstance(obj["score"], InertObject) and issubclass(obj["dtype"], InertObject)
    assert isinstance(obj["loader"], type) and issubclass(
        obj["loader"], InertObject
    )  # never torch.load itself


def test_raw_pickle_and_getattr_gadget_refused(tmp_path):
    marker = tmp_path / "pwned2"
    raw = tmp_path / "raw.ckpt"
    raw.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(UnsafeFileError, match="not a torch zip"):
        read_lightning_checkpoint(raw)

    class Gadget:
        def __reduce__(self):
            return (getattr, ("abc", "upper"))

    class Eval:
        def __reduce__(self):
            return (eval, (f"__import__('os').system('touch {marker}')",))

    for name, obj, word in (("gadget", Gadget(), "getattr"), ("eval", Eval(), "eval")):
        path = tmp_path / f"{name}.ckpt"
        torch.save({"state_dict": {}, "x": obj}, path)
        with pytest.raises(UnsafeFileError, match=word):
            read_lightning_checkpoint(path)
    assert not marker.exists()


@torch.no_grad()
def test_cli_convert_roundtrip(tmp_path, ckpt, tiny):
    from safetensors import safe_open

    from fdta_core.cli import main

    out = tmp_path / "models" / "tiny.safetensors"
    buf = io.StringIO()
    sys_stdout = sys.stdout
    sys.stdout = buf
    try:
        rc = main(["stg", "convert", str(ckpt), str(out), "--json"])
    finally:
        sys.stdout = sys_stdout
    assert rc == 0
    info = json.loads(buf.getvalue())
    assert info["grid"] == 5 and info["unexpected"] == ["something.else"]
    with safe_open(str(out), framework="pt") as f:
        keys = set(f.keys())
        settings = json.loads(f.metadata()["fdta_stg"])
    assert settings["grid"] == 5 and settings["config"]["num_head_channels"] == 16
    assert keys == set(tiny.state_dict())
    assert not any(k.startswith(("model.", "recognition_model")) for k in keys)
    model = build_model(load_stg_weights(out))
    x = torch.randn(1, 3, 112, 112)
    c1, c2 = model.condition(x, x), tiny.condition(x, x)
    torch.testing.assert_close(model.denoise(x, 500, c1), tiny.denoise(x, 500, c2))


def test_cli_inspect(ckpt, capsys):
    from fdta_core.cli import main

    assert main(["stg", "inspect", str(ckpt)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["grid"] == 5 and info["missing"] == [] and info["shape_mismatch"] == []
    assert info["unet_from"] == "ema_model.averaged_model." and info["unexpected"] == ["something.else"]
