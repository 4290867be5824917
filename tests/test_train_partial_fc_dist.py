"""Partial FC over 2 gloo processes equals the single-process margin softmax on the global batch:
same loss on every rank, and each rank's gradients are its slice of the full gradients."""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fdta_core.train.losses import MarginSpec
from fdta_core.train.partial_fc import PartialFC

CLASSES, DIM, PER_RANK = 7, 12, 5


def _data():
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(2 * PER_RANK, DIM, generator=g)
    labels = torch.randint(0, CLASSES, (2 * PER_RANK,), generator=g)
    weight = torch.randn(CLASSES, DIM, generator=g)
    return emb, labels, weight


def _worker(rank: int, port: int, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        emb, labels, weight = _data()
        pfc = PartialFC(MarginSpec.named("arcface", s=8), DIM, CLASSES, rank=rank, world_size=2)
        with torch.no_grad():
            pfc.weight.copy_(weight[pfc.class_start : pfc.class_start + pfc.num_local])
        mine = emb[rank * PER_RANK : (rank + 1) * PER_RANK].clone().requires_grad_(True)
        loss = pfc(mine, labels[rank * PER_RANK : (rank + 1) * PER_RANK])
        loss.backward()
        out[rank] = (float(loss), mine.grad.clone(), pfc.weight.grad.clone(), pfc.class_start, pfc.num_local)
    finally:
        dist.destroy_process_group()


def test_partial_fc_two_ranks_matches_single_process():
    emb, labels, weight = _data()
    full = PartialFC(MarginSpec.named("arcface", s=8), DIM, CLASSES)
    with torch.no_grad():
        full.weight.copy_(weight)
    e = emb.clone().requires_grad_(True)
    loss = full(e, labels)
    loss.backward()

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    manager = mp.get_context("spawn").Manager()
    out = manager.dict()
    mp.start_processes(_worker, args=(port, out), nprocs=2, start_method="spawn", join=True)
    for rank in range(2):
        r_loss, g_emb, g_w, start, n = out[rank]
        assert abs(r_loss - float(loss.detach())) < 1e-5
        assert torch.allclose(g_emb, e.grad[rank * PER_RANK : (rank + 1) * PER_RANK], atol=1e-6)
        assert torch.allclose(g_w, full.weight.grad[start : start + n], atol=1e-6)
    assert out[0][4] + out[1][4] == CLASSES
