"""Style sampling policies: which reference images give their style to which synthetic identity.

* ``random``: every image of every identity draws a reference at random from the whole bank.
* ``subject`` (Syn-MS1M): each synthetic identity takes the styles of one real subject; subjects are
  assigned from the run seed without repetition while there are enough of them.
* ``grid_subject`` (Syn-MPIE as the paper made it): one image per cell of a structured grid read from the
  tags, by default 13 yaws (-90..90 step 15) x 7 lightings x 2 expressions = 182 cells, *all from one real
  reference subject per identity* (a subject whose images cover every cell; subjects are assigned as in
  ``subject``), so each synthetic identity is shown in one real person's poses, lights and expressions.
* ``grid``: the same grid, each cell from any reference carrying its tags (mixed subjects; the first
  implementation, kept as an option).

With fewer images per identity than cells, both grid policies sample the grid *balanced*: every value of
every axis appears as evenly as the count allows (26 images: each of the 13 yaws twice), no cell twice,
which cells derived from the identity seed (:func:`balanced_cells`).

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

POLICIES = ("random", "subject", "grid", "grid_subject")
GRID_POLICIES = ("grid", "grid_subject")
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
    if policy in GRID_POLICIES:
        return _grid(
            bank, identities, images_per_identity, run_seed, grid_axes, one_subject=policy == "grid_subject"
        )
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
    n_subjects = bank.n_subjects  # an indexed bank reads only the subjects this chunk uses
    for ident in identities:
        subj = _subject_for(int(ident), n_subjects, run_seed)
        members = bank.subject_members(subj)
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
    *,
    one_subject: bool = False,
) -> list[StylePick]:
    axes = list(axes or mpie_axes())
    names = [a for a, _ in axes]
    cells = [()]  # cartesian product in axis order
    for _, values in axes:
        cells = [(*c, _norm(v)) for c in cells for v in values]
    tagged = [
        (i, subject, tuple(_norm(tags[n]) for n in names))
        for i, subject, tags in bank.tagged()
        if all(n in tags for n in names)
    ]
    if one_subject:
        return _grid_one_subject(identities, images_per_identity, run_seed, axes, cells, tagged)
    by_cell: dict[tuple[str, ...], list[int]] = {}
    for i, _subject, cell in tagged:
        by_cell.setdefault(cell, []).append(i)
    missing = [c for c in cells if c not in by_cell]
    if missing:
        shown = ", ".join("/".join(f"{n}={v}" for n, v in zip(names, c, strict=True)) for c in missing[:5])
        raise InputError(
            f"the reference bank has no image for {len(missing)} of {len(cells)} grid cells (e.g. {shown})",
            where="style_policy=grid",
            fix="tag the references (tags CSV or folder names such as yaw=-30/lighting=3/expression=smile) so "
            "every cell has at least one image, or use the random/subject policy.",
        )
    picks: list[StylePick] = []
    for ident in identities:
        rng = numpy_rng(run_seed, "stg-style-grid", int(ident))
        for j, cell in enumerate(balanced_cells(axes, images_per_identity, run_seed, int(ident))):
            options = by_cell[cell]
            picks.append(StylePick(int(ident), j, int(options[rng.integers(0, len(options))]), cell))
    return picks


def _grid_one_subject(
    identities: Sequence[int],
    images_per_identity: int,
    run_seed: int,
    axes: Sequence[tuple[str, Sequence[str]]],
    cells: list[tuple[str, ...]],
    tagged: list[tuple[int, str, tuple[str, ...]]],
) -> list[StylePick]:
    """Every cell of an identity from the one subject it is assigned (among the subjects that cover the
    whole grid, so that any balanced sample of cells is available)."""
    per_subject: dict[str, dict[tuple[str, ...], list[int]]] = {}
    for i, subject, cell in tagged:
        per_subject.setdefault(subject, {}).setdefault(cell, []).append(i)
    complete = [s for s, got in per_subject.items() if all(c in got for c in cells)]
    if not complete:
        best = max(per_subject.items(), key=lambda kv: len(kv[1]), default=(None, {}))
        raise InputError(
            f"no reference subject has an image in every one of the {len(cells)} grid cells"
            + (f" (the most complete, {best[0]}, covers {len(best[1])})" if best[0] is not None else ""),
            where="style_policy=grid_subject",
            fix="give each real subject a tagged image per cell (tags CSV: path,subject,yaw,lighting,expression), "
            "or use style_policy=grid (each cell from any subject).",
        )
    picks: list[StylePick] = []
    for ident in identities:
        subject = complete[_subject_for(int(ident), len(complete), run_seed)]
        own = per_subject[subject]
        rng = numpy_rng(run_seed, "stg-style-grid-subject", int(ident))
        for j, cell in enumerate(balanced_cells(axes, images_per_identity, run_seed, int(ident))):
            options = own[cell]
            picks.append(StylePick(int(ident), j, int(options[rng.integers(0, len(options))]), cell))
    return picks


def balanced_cells(
    axes: Sequence[tuple[str, Sequence[str]]], count: int, run_seed: int, identity: int
) -> list[tuple[str, ...]]:
    """``count`` distinct grid cells (all of them, in axis order, when ``count`` is 0 or covers the grid)
    in which every value of every axis appears ``count // n`` or ``count // n + 1`` times.

    When the axis sizes are pairwise coprime (13, 7, 2) cell ``j`` takes value ``perm_a[j mod n_a]`` on each
    axis: by the Chinese remainder theorem the first ``prod(n)`` such cells are all different, and each value
    of an axis appears evenly. The permutations come from the identity seed, so which cells an identity
    gets varies with the identity and is reproducible. Other sizes use a greedy least-used choice.
    """
    values = [[_norm(v) for v in vals] for _, vals in axes]
    sizes = [len(v) for v in values]
    total = int(np.prod(sizes))
    if count <= 0 or count >= total:
        cells = [()]
        for vals in values:
            cells = [(*c, v) for c in cells for v in vals]
        return cells
    rng = numpy_rng(run_seed, "stg-grid-cells", identity)
    perms = [rng.permutation(n) for n in sizes]
    if total == int(np.lcm.reduce(sizes)):
        picked = [
            tuple(vals[int(p[j % n])] for vals, p, n in zip(values, perms, sizes, strict=True))
            for j in range(count)
        ]
    else:
        counts = [np.zeros(n, np.int64) for n in sizes]
        remaining = [tuple(int(p[i]) for p, i in zip(perms, idx, strict=True)) for idx in np.ndindex(*sizes)]
        remaining = [remaining[i] for i in rng.permutation(len(remaining))]
        picked_idx = []
        for _ in range(count):
            k = min(
                range(len(remaining)),
                key=lambda r: tuple(
                    sorted((c[v] for c, v in zip(counts, remaining[r], strict=True)), reverse=True)
                ),
            )
            cell = remaining.pop(k)
            for c, v in zip(counts, cell, strict=True):
                c[v] += 1
            picked_idx.append(cell)
        picked = [tuple(vals[i] for vals, i in zip(values, cell, strict=True)) for cell in picked_idx]
    order = {c: i for i, c in enumerate(balanced_cells(axes, 0, run_seed, identity))}
    return sorted(picked, key=order.__getitem__)


def _norm(v: str) -> str:
    s = str(v).strip().lower()
    try:
        f = float(s)
        return str(int(f)) if f.is_integer() else s
    except ValueError:
        return s
