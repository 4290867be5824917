"""Style sampling policies: which reference images give their style to which synthetic identity.

* ``random``: every image of every identity draws a reference at random from the whole bank.
* ``subject`` (Syn-MS1M): each synthetic identity takes the styles of one real subject; subjects are
  assigned from the run seed without repetition while there are enough of them.
* ``grid`` (Syn-MPIE): one image per cell of a structured grid read from the tags, by default
  13 yaws (-90..90 step 15) x 7 lightings x 2 expressions = 182 cells; each cell uses a reference
  carrying those tags.

Every choice derives from ``fdta_core.seeds`` with the *identity id*, so a chunk of identities gets the
same assignments whether it runs alone or inside the whole run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InputError, check_choice
from ..seeds import numpy_rng
from .bank import ReferenceBank

POLICIES = ("random", "subject", "grid")
MPIE_YAWS = tuple(str(y) for y in range(-90, 91, 15))
MPIE_LIGHTINGS = tuple(str(i) for i in range(7))
MPIE_EXPRESSIONS = ("neutral", "smile")


@dataclass(frozen=True)
class StylePick:
    """One image to render: identity, its style index (0..n-1), the bank image and the cell (grid)."""

    identity: int
    style_index: int
    bank_index: int
    cell: tuple[str, ...] | None = None


def pick_styles(
    bank: ReferenceBank,
    identities: Sequence[int],
    *,
    policy: str,
    images_per_identity: int,
    run_seed: int,
    grid_axes: Sequence[tuple[str, Sequence[str]]] | None = None,
) -> list[StylePick]:
    """Assign reference images to ``images_per_identity`` styles of each identity (grid: one per cell,
    ``images_per_identity`` 0 means all cells)."""
    check_choice(None, "style_policy", policy, POLICIES)
    if len(bank) == 0:
        raise InputError("the reference bank is empty", where="reference_bank")
    if policy == "grid":
        return _grid(bank, identities, images_per_identity, run_seed, grid_axes)
    if images_per_identity < 1:
        raise InputError(
            f"images per identity must be >= 1, got {images_per_identity}", where="images_per_identity"
        )
    picks: list[StylePick] = []
    if policy == "random":
        for ident in identities:
            rng = numpy_rng(run_seed, "stg-style-random", int(ident))
            idx = rng.integers(0, len(bank), size=images_per_identity)
            picks.extend(StylePick(int(ident), j, int(b)) for j, b in enumerate(idx))
        return picks
    groups = list(bank.subject_groups().values())
    for ident in identities:
        subj = _subject_for(int(ident), len(groups), run_seed)
        members = groups[subj]
        rng = numpy_rng(run_seed, "stg-style-subject-images", int(ident))
        if len(members) >= images_per_identity:
            chosen = rng.permutation(members)[:images_per_identity]
        else:  # fewer real images than wanted: use them all, then repeat in a shuffled order
            reps = -(-images_per_identity // len(members))
            chosen = np.concatenate([rng.permutation(members) for _ in range(reps)])[:images_per_identity]
        picks.extend(StylePick(int(ident), j, int(b)) for j, b in enumerate(chosen))
    return picks


def _subject_for(identity: int, n_subjects: int, run_seed: int) -> int:
    """Subject of an identity: a seeded permutation of the subjects, cycled, so identities that share a
    block of ``n_subjects`` never share a subject and any chunk computes its own assignment."""
    block, pos = divmod(identity, n_subjects)
    perm = numpy_rng(run_seed, "stg-subject-permutation", block).permutation(n_subjects)
    return int(perm[pos])


def mpie_axes() -> list[tuple[str, Sequence[str]]]:
    return [("yaw", MPIE_YAWS), ("lighting", MPIE_LIGHTINGS), ("expression", MPIE_EXPRESSIONS)]


def _grid(
    bank: ReferenceBank,
    identities: Sequence[int],
    images_per_identity: int,
    run_seed: int,
    axes: Sequence[tuple[str, Sequence[str]]] | None,
) -> list[StylePick]:
    axes = list(axes or mpie_axes())
    names = [a for a, _ in axes]
    by_cell: dict[tuple[str, ...], list[int]] = {}
    for i, tags in enumerate(bank.tags):
        if all(n in tags for n in names):
            by_cell.setdefault(tuple(_norm(tags[n]) for n in names), []).append(i)
    cells = [()]  # cartesian product in axis order
    for _, values in axes:
        cells = [(*c, _norm(v)) for c in cells for v in values]
    missing = [c for c in cells if c not in by_cell]
    if missing:
        shown = ", ".join("/".join(f"{n}={v}" for n, v in zip(names, c, strict=True)) for c in missing[:5])
        raise InputError(
            f"the reference bank has no image for {len(missing)} of {len(cells)} grid cells (e.g. {shown})",
            where="style_policy=grid",
            fix="tag the references (tags CSV or folder names such as yaw=-30/lighting=3/expression=smile) so "
            "every cell has at least one image, or use the random/subject policy.",
        )
    if images_per_identity and images_per_identity < len(cells):
        cells = cells[:images_per_identity]
    picks: list[StylePick] = []
    for ident in identities:
        rng = numpy_rng(run_seed, "stg-style-grid", int(ident))
        for j, cell in enumerate(cells):
            options = by_cell[cell]
            picks.append(StylePick(int(ident), j, int(options[rng.integers(0, len(options))]), cell))
    return picks


def _norm(v: str) -> str:
    s = str(v).strip().lower()
    try:
        f = float(s)
        return str(int(f)) if f.is_integer() else s
    except ValueError:
        return s
