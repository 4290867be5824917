"""IResNet-50 as AdaFace trains it (``BasicBlockIR`` units), the backbone of both STG condition paths.

Parameter names follow the AdaFace / face.evoLVe layout (``input_layer``, ``body.N.res_layer.M``,
``shortcut_layer``, ``output_layer``) because the released checkpoints store them that way.

DCFace quirk kept on purpose: both IR networks receive RGB images and flip the channels to **BGR**
before the first convolution, because the AdaFace weights were trained on BGR input.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import IRConfig


class IRUnit(nn.Module):
    """Pre-activation residual unit: BN-conv3x3-BN-PReLU-conv3x3(stride)-BN plus a shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        if cin == cout:
            # a 1x1 max pool with a stride is plain subsampling; it has no parameters
            self.shortcut_layer: nn.Module = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False),
                nn.BatchNorm2d(cout),
            )
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(cin),
            nn.Conv2d(cin, cout, 3, 1, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.PReLU(cout),
            nn.Conv2d(cout, cout, 3, stride, 1, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class IResNet(nn.Module):
    """IR-50 for 112x112 faces. :meth:`forward` returns the raw embedding and one tapped body output."""

    def __init__(self, cfg: IRConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.input_layer = nn.Sequential(
            nn.Conv2d(3, cfg.stem_width, 3, 1, 1, bias=False),
            nn.BatchNorm2d(cfg.stem_width),
            nn.PReLU(cfg.stem_width),
        )
        units: list[nn.Module] = []
        cin = cfg.stem_width
        for width, count in zip(cfg.stage_widths, cfg.stage_units, strict=True):
            for i in range(count):
                units.append(IRUnit(cin, width, 2 if i == 0 else 1))
                cin = width
        self.body = nn.Sequential(*units)
        last = cfg.stage_widths[-1]
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(last),
            nn.Dropout(0.4),
            nn.Flatten(),
            nn.Linear(last * 7 * 7, cfg.embedding_size),
            nn.BatchNorm1d(cfg.embedding_size, affine=False),
        )

    def forward_features(self, rgb: torch.Tensor, tap: int, *, stop_at_tap: bool = False):
        """Run on RGB [-1, 1] input; return ``(embedding or None, body[tap] output)``.

        The embedding is ``(x / n) * n`` with ``n = max(||x||, 1e-5)``: DCFace multiplies the normalised
        feature back by its norm, which is *not* bit-identical to ``x``, so we do the same.
        With ``stop_at_tap`` the rest of the network is skipped (the style path only needs body[2]).
        """
        x = torch.flip(rgb, dims=[1])  # RGB -> BGR, as the AdaFace weights expect
        x = self.input_layer(x)
        tapped = None
        for idx, unit in enumerate(self.body):
            x = unit(x)
            if idx == tap:
                tapped = x
                if stop_at_tap:
                    return None, tapped
        emb = self.output_layer(x)
        norm = torch.clip(torch.norm(emb, 2, 1, True), 1e-5)
        emb = torch.div(emb, norm) * norm
        return emb, tapped
