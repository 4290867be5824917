"""IResNet backbones with exactly the parameter names of insightface ``arcface_torch`` (DESIGN 5.4): the
FR model that ``train`` trains and ``eval`` loads, so it lives beside both (``stg.iresnet`` is AdaFace's
different IR-50 layout).

Matching the names and shapes means a published ``backbone.pth`` (arcface_torch r18/r34/r50/r100) or
FDTA's released LResNet50E-IR weights load with ``load_state_dict(strict=True)``, and what we train can
be loaded by arcface_torch's own tools. ``width`` and ``input_size`` only exist to build tiny networks for
tests and benchmarks; at their defaults (64, 112) the network is the published one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from .errors import ConfigError, ModelFormatError, check_choice

#: Blocks per stage of the published depths (arcface_torch ``iresnet18`` ... ``iresnet200``).
LAYERS: dict[str, tuple[int, int, int, int]] = {
    "r18": (2, 2, 2, 2),
    "r34": (3, 4, 6, 3),
    "r50": (3, 4, 14, 3),
    "r100": (3, 13, 30, 3),
    "r200": (6, 26, 60, 6),
    # not a published depth: one block per stage, for tests and smoke runs
    "r4": (1, 1, 1, 1),
}


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """Pre-activation-style block of IResNet: BN-conv-BN-PReLU-conv(stride)-BN plus the shortcut."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-05)
        self.conv1 = _conv3x3(inplanes, planes)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-05)
        self.prelu = nn.PReLU(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-05)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        identity = self.downsample(x) if self.downsample is not None else x
        return out + identity


class IResNet(nn.Module):
    """IResNet with the BN-Dropout-FC-BN head producing ``num_features``-d (unnormalised) embeddings.

    Input: N x 3 x H x W RGB in [-1, 1] (H = W = ``input_size``, 112 for every published model).
    """

    def __init__(
        self,
        layers: Sequence[int],
        *,
        num_features: int = 512,
        dropout: float = 0.0,
        width: int = 64,
        input_size: int = 112,
    ) -> None:
        super().__init__()
        if len(layers) != 4 or any(int(n) < 1 for n in layers):
            raise ConfigError(f"IResNet needs 4 stages of >= 1 block, got {list(layers)}")
        if input_size % 16:
            raise ConfigError(f"input_size must be a multiple of 16 (4 stride-2 stages), got {input_size}")
        self.layers_cfg = tuple(int(n) for n in layers)
        self.width = int(width)
        self.input_size = int(input_size)
        self.num_features = int(num_features)
        w = self.width
        self.inplanes = w
        self.conv1 = nn.Conv2d(3, w, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w, eps=1e-05)
        self.prelu = nn.PReLU(w)
        self.layer1 = self._make_layer(w, layers[0])
        self.layer2 = self._make_layer(2 * w, layers[1])
        self.layer3 = self._make_layer(4 * w, layers[2])
        self.layer4 = self._make_layer(8 * w, layers[3])
        self.bn2 = nn.BatchNorm2d(8 * w, eps=1e-05)
        self.dropout = nn.Dropout(p=dropout, inplace=True)
        spatial = input_size // 16
        self.fc = nn.Linear(8 * w * spatial * spatial, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-05)
        # arcface_torch freezes the scale of the last BN at 1 (only its shift is learnt).
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0, 0.1)
            elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, planes: int, blocks: int) -> nn.Sequential:
        downsample = nn.Sequential(
            nn.Conv2d(self.inplanes, planes, kernel_size=1, stride=2, bias=False),
            nn.BatchNorm2d(planes, eps=1e-05),
        )
        mods = [IBasicBlock(self.inplanes, planes, 2, downsample)]
        self.inplanes = planes
        mods += [IBasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        # As arcface_torch: the head runs in fp32 even when the body runs under fp16 autocast.
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = self.features(self.fc(x.float()))
        return x

    def arch(self) -> dict:
        """The constructor arguments, stored in checkpoints so a model rebuilds without guessing."""
        return {
            "layers": list(self.layers_cfg),
            "num_features": self.num_features,
            "width": self.width,
            "input_size": self.input_size,
        }


def build_backbone(
    network: str = "r50",
    *,
    num_features: int = 512,
    dropout: float = 0.0,
    width: int = 64,
    input_size: int = 112,
    layers: Sequence[int] | None = None,
) -> IResNet:
    """Build ``r18``/``r34``/``r50``/``r100``/``r200`` (or explicit ``layers``) as arcface_torch does."""
    if layers is None:
        key = network.lower().replace("iresnet", "r")
        check_choice(
            None, "network", key, LAYERS, error=ConfigError, fix="or give explicit layers such as 1,1,1,1"
        )
        layers = LAYERS[key]
    return IResNet(layers, num_features=num_features, dropout=dropout, width=width, input_size=input_size)


def iresnet18(**kw) -> IResNet:
    return build_backbone("r18", **kw)


def iresnet34(**kw) -> IResNet:
    return build_backbone("r34", **kw)


def iresnet50(**kw) -> IResNet:
    return build_backbone("r50", **kw)


def iresnet100(**kw) -> IResNet:
    return build_backbone("r100", **kw)


def arch_from_state_dict(state: Mapping[str, torch.Tensor]) -> dict:
    """Infer ``layers``, ``width``, ``num_features`` and ``input_size`` from an IResNet state dict.

    This is what lets ``fdta verify`` take a bare arcface_torch ``backbone.pth`` with no config.
    """
    if "conv1.weight" not in state or "fc.weight" not in state:
        raise ModelFormatError(
            "not an IResNet state dict (no conv1.weight / fc.weight)",
            fix="pass an arcface_torch IResNet backbone or a checkpoint written by fdta train.",
        )
    layers = []
    for stage in range(1, 5):
        idx = {int(k.split(".")[1]) for k in state if k.startswith(f"layer{stage}.")}
        if not idx:
            raise ModelFormatError(f"IResNet state dict has no layer{stage} blocks")
        layers.append(max(idx) + 1)
    width = int(state["conv1.weight"].shape[0])
    num_features, fc_in = (int(s) for s in state["fc.weight"].shape)
    spatial2 = fc_in // (8 * width)
    spatial = int(round(spatial2**0.5))
    if spatial * spatial * 8 * width != fc_in:
        raise ModelFormatError(f"fc input size {fc_in} does not fit width {width}")
    return {"layers": layers, "num_features": num_features, "width": width, "input_size": spatial * 16}


def backbone_from_state_dict(state: Mapping[str, torch.Tensor], arch: Mapping | None = None) -> IResNet:
    """Build the matching IResNet and load ``state`` strictly (an unexpected key is an error)."""
    arch = dict(arch) if arch else arch_from_state_dict(state)
    model = IResNet(
        arch["layers"],
        num_features=arch["num_features"],
        width=arch.get("width", 64),
        input_size=arch.get("input_size", 112),
    )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelFormatError(f"weights do not fit IResNet{arch['layers']}: {exc}") from None
    return model
