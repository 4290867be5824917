"""Full-size released layouts (5x5 and 3x3): every sampling-path key fits the full-size model."""

from __future__ import annotations

import json

import pytest
import torch

from fdta_core.stg.checkpoint import TRAINING_ONLY_PREFIXES, map_dcface_state_dict
from fdta_core.stg.config import STGConfig
from fdta_core.stg.model import STGModel

_DTYPES = {"float32": torch.float32, "int64": torch.int64}


@pytest.mark.parametrize("grid", [5, 3])
def test_released_layout_loads(shared_testdata, grid):
    layout = json.loads((shared_testdata / "dcface" / f"state_dict_layout_{grid}x{grid}.json").read_text())
    sd = {k: torch.empty(shape, dtype=_DTYPES[dt], device="meta") for k, shape, dt in layout["state_dict"]}
    mapped, report = map_dcface_state_dict(sd, source=f"dcface_{grid}x{grid}.ckpt")
    assert report.unexpected == []
    assert report.unet_from == "ema_model.averaged_model."
    assert set(report.skipped) == set(TRAINING_ONLY_PREFIXES)
    # training-only keys: all of model.*, the centres and the IR-101 evaluation net
    n_training = sum(1 for k in sd if k.startswith(tuple(TRAINING_ONLY_PREFIXES)))
    assert sum(report.skipped.values()) == n_training
    cfg = STGConfig.from_state_dict(mapped)
    assert cfg == STGConfig.full_size(grid)
    with torch.device("meta"):
        model = STGModel(cfg)
    expected = model.state_dict()
    assert sorted(expected) == sorted(mapped), set(expected) ^ set(mapped)
    for k, t in expected.items():
        assert tuple(t.shape) == tuple(mapped[k].shape), k
        assert t.dtype == mapped[k].dtype, k
    # the sampling-path parameter count documented with the layout
    n_params = sum(t.numel() for k, t in mapped.items() if t.is_floating_point())
    assert n_params > 0.99 * layout["parameter_counts"]["parameters_on_sampling_path"]
    assert cfg.context_length == 49 + 1 + grid * grid
