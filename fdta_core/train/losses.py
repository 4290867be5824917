"""Margin losses on cosine logits: ArcFace, CosFace and the combined margin of arcface_torch.

The combined form ``s * (cos(m1 * theta + m2) - m3)`` on the target class covers ArcFace (1, 0.5, 0),
CosFace (1, 0, 0.4) and mixtures. Logits come in as cosines of normalised embeddings and normalised
class centres; a label of -1 means "the target class lives on another rank" (Partial FC), so no margin
is applied in this rank's slice for that row.

Unlike arcface_torch, which edits the logits in place under ``no_grad`` (a straight-through trick that
saves memory), the margin here is an ordinary differentiable function of the cosine: the gradient is the
true gradient of the stated loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import ConfigError, check_choice

#: Named presets: (m1, m2, m3).
MARGINS: dict[str, tuple[float, float, float]] = {
    "arcface": (1.0, 0.5, 0.0),
    "cosface": (1.0, 0.0, 0.4),
}


@dataclass(frozen=True)
class MarginSpec:
    """``s`` and ``(m1, m2, m3)`` of the combined margin."""

    s: float = 64.0
    m1: float = 1.0
    m2: float = 0.0
    m3: float = 0.4

    @classmethod
    def named(cls, loss: str, s: float = 64.0, m: float | None = None) -> MarginSpec:
        """``arcface`` (m is the angular margin m2), ``cosface`` (m is the additive margin m3), or
        ``combined:m1,m2,m3``."""
        name = loss.lower()
        if name.startswith("combined"):
            try:
                m1, m2, m3 = (float(v) for v in name.split(":", 1)[1].split(","))
            except (IndexError, ValueError):
                raise ConfigError(
                    f"bad combined margin '{loss}'",
                    fix="write it as combined:m1,m2,m3, e.g. combined:1,0.3,0.2",
                ) from None
            return cls(s, m1, m2, m3)
        check_choice(None, "loss", name, MARGINS, error=ConfigError, fix="or combined:m1,m2,m3")
        m1, m2, m3 = MARGINS[name]
        if m is not None:
            if name == "arcface":
                m2 = float(m)
            else:
                m3 = float(m)
        return cls(s, m1, m2, m3)


class CombinedMarginLoss(torch.nn.Module):
    """Turns cosine logits into margin-adjusted, scaled logits (the softmax cross-entropy follows)."""

    def __init__(self, spec: MarginSpec) -> None:
        super().__init__()
        self.spec = spec

    def forward(self, cosines: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        s, m1, m2, m3 = self.spec.s, self.spec.m1, self.spec.m2, self.spec.m3
        rows = torch.nonzero(labels != -1, as_tuple=True)[0]
        if rows.numel() == 0:
            return cosines * s
        cols = labels[rows].long()
        target = cosines[rows, cols].float()
        if m1 == 1.0 and m2 == 0.0:
            new_target = target - m3
        else:
            eps = 1e-7
            theta = torch.acos(target.clamp(-1.0 + eps, 1.0 - eps))
            new_target = torch.cos(m1 * theta + m2) - m3
            if m1 == 1.0 and m2 > 0:
                # Past pi - m2 the margin would *raise* the logit; fall back to the linear CosFace-like
                # penalty there, as the original ArcFace implementation does (keeps the loss monotonic).
                th = math.cos(math.pi - m2)
                mm = math.sin(math.pi - m2) * m2
                new_target = torch.where(target > th, new_target, target - mm - m3)
        out = cosines.float().index_put((rows, cols), new_target)
        return out * s
