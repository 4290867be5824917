"""IResNet layouts (arcface_torch compatibility), margin losses, Partial FC and the lr schedule."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.nn import functional as F

from fdta_core.errors import ConfigError, ModelFormatError
from fdta_core.iresnet import arch_from_state_dict, backbone_from_state_dict, build_backbone
from fdta_core.train.losses import CombinedMarginLoss, MarginSpec
from fdta_core.train.partial_fc import PartialFC
from fdta_core.train.trainer import lr_at


@pytest.mark.parametrize("name", ["iresnet18", "iresnet50", "iresnet100"])
def test_arcface_torch_layouts_load_strictly(shared_testdata, name):
    layout = json.loads((shared_testdata / "iresnet" / "state_dict_layouts.json").read_text())[name]
    # a state dict exactly as arcface_torch's model would save it (distinct values per tensor)
    state = {
        key: (torch.full(shape, i % 7 + 1, dtype=torch.int64) if dtype == "int64" else torch.rand(shape))
        for i, (key, shape, dtype) in enumerate(layout)
    }
    model = build_backbone("r" + name[len("iresnet") :])
    result = model.load_state_dict(state, strict=False)
    assert result.missing_keys == [] and result.unexpected_keys == []
    ours = model.state_dict()
    assert list(ours) == [k for k, _, _ in layout]
    for key, shape, dtype in layout:
        assert list(ours[key].shape) == shape, key
        assert str(ours[key].dtype) == f"torch.{dtype}", key
        assert torch.equal(ours[key], state[key]), key
    # and the architecture is recovered from the weights alone (what fdta verify does with backbone.pth)
    arch = arch_from_state_dict(state)
    assert arch["num_features"] == 512 and arch["input_size"] == 112 and arch["width"] == 64
    rebuilt = backbone_from_state_dict(state)
    assert rebuilt.layers_cfg == model.layers_cfg


def test_forward_shapes_and_fp32_head():
    model = build_backbone("r4", width=8, num_features=32, input_size=32).eval()
    out = model(torch.randn(3, 3, 32, 32))
    assert out.shape == (3, 32) and out.dtype == torch.float32
    assert model.features.weight.requires_grad is False


def test_bad_arch_and_weights_are_refused():
    with pytest.raises(ConfigError):
        build_backbone("r7")
    state = build_backbone("r4", width=8, num_features=16, input_size=32).state_dict()
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(ModelFormatError):
        backbone_from_state_dict(state)
    with pytest.raises(ModelFormatError):
        arch_from_state_dict({"foo": torch.zeros(1)})


def test_margins_match_their_formulas():
    cos = torch.tensor([[0.5, 0.2, -0.1], [0.9, 0.3, 0.0], [-0.95, 0.1, 0.2]])
    labels = torch.tensor([0, 0, 0])
    out = CombinedMarginLoss(MarginSpec.named("cosface", s=64))(cos, labels)
    want = cos.clone()
    want[:, 0] -= 0.4
    assert torch.allclose(out, want * 64)
    out = CombinedMarginLoss(MarginSpec.named("arcface", s=10))(cos, labels)
    for r in range(2):
        assert math.isclose(out[r, 0].item(), 10 * math.cos(math.acos(cos[r, 0].item()) + 0.5), rel_tol=1e-5)
    # theta + m beyond pi: the monotonic fallback cos - sin(pi - m) * m
    assert math.isclose(out[2, 0].item(), 10 * (-0.95 - math.sin(math.pi - 0.5) * 0.5), rel_tol=1e-5)
    assert torch.allclose(out[:, 1:], cos[:, 1:] * 10)
    # a row whose class lives on another rank (-1) gets no margin
    out = CombinedMarginLoss(MarginSpec.named("arcface"))(cos, torch.tensor([-1, 1, -1]))
    assert torch.allclose(out[0], cos[0] * 64) and not torch.allclose(out[1], cos[1] * 64)
    assert MarginSpec.named("combined:1,0.3,0.2") == MarginSpec(64.0, 1.0, 0.3, 0.2)
    with pytest.raises(ConfigError):
        MarginSpec.named("softmax")


def test_partial_fc_single_process_is_margin_softmax_ce():
    torch.manual_seed(0)
    emb = torch.randn(8, 16, requires_grad=True)
    labels = torch.randint(0, 5, (8,))
    pfc = PartialFC(MarginSpec.named("cosface", s=16), 16, 5)
    loss = pfc(emb, labels)
    cos = F.normalize(emb) @ F.normalize(pfc.weight).T
    logits = cos.clone()
    logits[torch.arange(8), labels] -= 0.4
    want = F.cross_entropy(16 * logits, labels)
    assert torch.allclose(loss, want, atol=1e-5)
    loss.backward()
    g1 = emb.grad.clone()
    emb.grad = None
    want2 = F.cross_entropy(
        16 * (F.normalize(emb) @ F.normalize(pfc.weight).T - 0.4 * F.one_hot(labels, 5)), labels
    )
    want2.backward()
    assert torch.allclose(g1, emb.grad, atol=1e-6)


def test_partial_fc_sampling_keeps_positives():
    torch.manual_seed(0)
    pfc = PartialFC(MarginSpec.named("cosface"), 8, 100, sample_rate=0.1)
    labels = torch.tensor([3, 50, 97, 3])
    new_labels, weight = pfc._sample(labels)
    assert weight.shape[0] == pfc.num_sample == 10
    assert torch.equal(weight[new_labels], pfc.weight[labels])


def test_poly_schedule_with_warmup():
    assert lr_at(0, 0.1, 100, 10) == 0
    assert math.isclose(lr_at(5, 0.1, 100, 10), 0.05)
    assert math.isclose(lr_at(10, 0.1, 100, 10), 0.1)
    assert math.isclose(lr_at(55, 0.1, 100, 10), 0.1 * 0.5**2)
    assert lr_at(100, 0.1, 100, 10) == 0
