"""Deterministic seed derivation.

Every random choice in FDTA is derived from the run seed and *what* is being drawn (the stage, the
identity index, the style index, ...), never from a global RNG or wall-clock time. So any chunk of a run
can be generated alone, on any machine, and produce exactly the images it would have produced inside the
whole run.
"""

from __future__ import annotations

import hashlib
import struct

import numpy as np

from .errors import InputError

#: The largest seed anywhere in FDTA: every FDTA seed widget's max, the range ``fdta run --seed`` checks,
#: and the mask of :func:`derive_seed`. ComfyUI's own seed widgets accept 0 .. 2**64-1, so every value up
#: to here passes ComfyUI's range check on every node; beyond it a seed would not fit the signed 64-bit
#: integers of torch, numpy and SQLite manifests.
SEED_MAX = (1 << 63) - 1


def check_seed(seed: int, *, where: str = "seed") -> int:
    """``seed`` as an int if it is an integer in ``0..SEED_MAX``, else an :class:`InputError` saying the range."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= int(seed) <= SEED_MAX:
        raise InputError(
            f"seed {seed!r} is not an integer in 0 .. 2**63-1",
            where=where,
            fix=f"use a seed from 0 to {SEED_MAX} (2**63-1), the range every FDTA and ComfyUI node accepts.",
        )
    return int(seed)


def _encode(part: int | str) -> bytes:
    if isinstance(part, bool) or not isinstance(part, int | str):
        raise TypeError(f"seed parts must be int or str, got {type(part).__name__}")
    if isinstance(part, int):
        return b"i" + struct.pack("<q", part) if -(1 << 63) <= part < (1 << 63) else b"I" + str(part).encode()
    data = part.encode("utf-8")
    return b"s" + struct.pack("<I", len(data)) + data


def derive_seed(run_seed: int, *parts: int | str) -> int:
    """Return a 63-bit seed that depends only on ``run_seed`` and ``parts`` (e.g. ``"acg", identity, k``).

    Uses BLAKE2b over an unambiguous encoding, so ``("a", 12)`` and ``("a1", 2)`` never collide by
    construction and results are stable across Python versions and platforms.
    """
    h = hashlib.blake2b(digest_size=8, person=b"fdta-seed-v1")
    h.update(_encode(int(run_seed)))
    for part in parts:
        h.update(_encode(part))
    return int.from_bytes(h.digest(), "little") & SEED_MAX


def numpy_rng(run_seed: int, *parts: int | str) -> np.random.Generator:
    """A numpy Generator seeded by :func:`derive_seed`."""
    return np.random.default_rng(derive_seed(run_seed, *parts))


def torch_generator(run_seed: int, *parts: int | str, device: str = "cpu"):  # -> torch.Generator
    """A torch Generator seeded by :func:`derive_seed` (torch imported lazily)."""
    import torch

    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(run_seed, *parts))
    return g
