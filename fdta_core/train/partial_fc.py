"""Partial FC: the class-centre matrix sharded over ranks, with optional negative-class sampling.

For millions of identities the full softmax weight (C x 512) does not fit one GPU and most of its
gradient is noise. Each rank keeps the centres of a contiguous slice of classes; the embeddings of the
whole global batch are gathered to every rank, each rank computes cosines against its (sampled)
centres, and a distributed softmax cross-entropy combines the slices (An et al., Partial FC, 2021; the
same scheme as arcface_torch's ``PartialFC_V2``). With one process this reduces to an ordinary
normalised-softmax margin loss, and ``sample_rate=1`` keeps every class.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from .losses import CombinedMarginLoss, MarginSpec


def _dist_on() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _AllGather(torch.autograd.Function):
    """all_gather whose backward sums every rank's gradient for this rank's slice."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        world = dist.get_world_size()
        parts = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(parts, tensor.contiguous())
        ctx.rank = dist.get_rank()
        ctx.n = tensor.shape[0]
        return torch.cat(parts, 0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


def gather_batch(embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Global batch on every rank (the per-rank batch size must be equal, as with drop_last)."""
    if not _dist_on():
        return embeddings, labels
    parts = [torch.empty_like(labels) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, labels.contiguous())
    return _AllGather.apply(embeddings), torch.cat(parts, 0)


class _DistSoftmaxCE(torch.autograd.Function):
    """Mean softmax cross-entropy whose classes are split over ranks; ``labels`` -1 = not here."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        on = _dist_on()
        logits = logits.float()
        row_max = logits.max(dim=1, keepdim=True).values
        if on:
            dist.all_reduce(row_max, op=dist.ReduceOp.MAX)
        probs = torch.exp(logits - row_max)
        denom = probs.sum(dim=1, keepdim=True)
        if on:
            dist.all_reduce(denom, op=dist.ReduceOp.SUM)
        probs = probs / denom
        here = labels != -1
        target_p = torch.zeros(logits.shape[0], 1, device=logits.device, dtype=logits.dtype)
        rows = torch.nonzero(here, as_tuple=True)[0]
        target_p[rows] = probs[rows, labels[rows]].unsqueeze(1)
        if on:
            dist.all_reduce(target_p, op=dist.ReduceOp.SUM)
        ctx.save_for_backward(probs, labels)
        return -torch.log(target_p.clamp_min(1e-30)).mean()

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        probs, labels = ctx.saved_tensors
        grad = probs.clone()
        rows = torch.nonzero(labels != -1, as_tuple=True)[0]
        grad[rows, labels[rows]] -= 1.0
        grad = grad / probs.shape[0]
        return grad * grad_out, None


class PartialFC(nn.Module):
    """Class centres of this rank's slice + margin + distributed softmax CE.

    ``forward(embeddings, labels)`` takes this rank's batch (unnormalised embeddings, int labels) and
    returns the loss of the *global* batch (equal on every rank).
    """

    def __init__(
        self,
        margin: MarginSpec,
        embedding_size: int,
        num_classes: int,
        sample_rate: float = 1.0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__()
        self.num_classes = int(num_classes)
        self.sample_rate = float(sample_rate)
        self.rank, self.world_size = int(rank), int(world_size)
        base, extra = divmod(self.num_classes, self.world_size)
        self.num_local = base + (1 if self.rank < extra else 0)
        self.class_start = base * self.rank + min(self.rank, extra)
        self.num_sample = max(1, int(math.ceil(self.sample_rate * self.num_local)))
        self.weight = nn.Parameter(torch.normal(0, 0.01, (self.num_local, int(embedding_size))))
        self.margin = CombinedMarginLoss(margin)

    def _sample(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pick the centres used this step: every positive class in the batch plus random negatives."""
        if self.sample_rate >= 1.0:
            return labels, self.weight
        positive = torch.unique(labels[labels >= 0], sorted=True)
        if self.num_sample > positive.numel():
            score = torch.rand(self.num_local, device=self.weight.device)
            score[positive] = 2.0
            index = torch.topk(score, k=self.num_sample)[1].sort()[0]
        else:
            index = positive
        remap = torch.full((self.num_local,), -1, dtype=torch.long, device=labels.device)
        remap[index] = torch.arange(index.numel(), device=labels.device)
        new_labels = torch.where(labels >= 0, remap[labels.clamp_min(0)], labels)
        return new_labels, self.weight[index]

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        embeddings, labels = gather_batch(embeddings, labels.view(-1).long())
        local = labels - self.class_start
        local = torch.where((local >= 0) & (local < self.num_local), local, torch.full_like(local, -1))
        local, weight = self._sample(local)
        cos = F.linear(F.normalize(embeddings.float()), F.normalize(weight.float())).clamp(-1, 1)
        logits = self.margin(cos, local)
        return _DistSoftmaxCE.apply(logits, local)
