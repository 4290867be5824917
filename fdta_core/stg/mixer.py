"""Source faceset + reference bank -> styled faceset (what ``FDTASTGMixer`` runs).

Every styled image keeps the identity label of its source, records the reference key, style index,
policy and seed in its provenance, and the source faces travel along in ``FaceSet.sources``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..faceset import FaceSet
from ..grid import Cell, render_grid
from ..seeds import derive_seed
from .bank import ReferenceBank
from .ddim import DEFAULT_ETA, DEFAULT_STEPS
from .policies import StylePick, pick_styles
from .sampler import GenerationRequest, STGSampler
from .solvers import DDIM

log = logging.getLogger(__name__)

STAGE = "stg"
#: Caption strip under each tile of the contact sheet (one line).
CAPTION = 16


@dataclass
class MixResult:
    faceset: FaceSet
    contact_sheet: np.ndarray  # uint8 [H, W, 3]
    picks: list[StylePick]


def image_seed(run_seed: int, identity: int, style_index: int) -> int:
    """Noise seed of one styled image: depends only on the run seed, the identity and the style index."""
    return derive_seed(run_seed, STAGE, int(identity), int(style_index))


def mix(
    sampler: STGSampler,
    source: FaceSet,
    bank: ReferenceBank,
    *,
    policy: str = "subject",
    images_per_identity: int = 4,
    run_seed: int = 0,
    steps: int = DEFAULT_STEPS,
    eta: float = DEFAULT_ETA,
    batch_size: int = 16,
    grid_axes: Sequence[tuple[str, Sequence[str]]] | None = None,
    progress: Callable[[int, int], None] | None = None,
    solver: str = DDIM,
) -> MixResult:
    """Render ``images_per_identity`` styles of every identity of ``source``.

    ``solver``: ``ddim`` (DCFace's sampler, the default) or ``dpmpp_2m`` / ``unipc`` (deterministic,
    ``eta`` ignored); see docs/stg.md for which to use."""
    identities = source.identities
    if not identities:
        # every identity of the chunk was rejected upstream: nothing to style, but the chunk's range and
        # dropped records still travel on, so the writer records an empty chunk and the run goes on
        log.warning(
            "STG: the source faceset is empty (every identity was dropped upstream); nothing to style"
        )
        empty = source.derived(source.images, source.labels, [], {})
        return MixResult(empty, contact_sheet(empty, bank, []), [])
    first_prov = {}
    for _img, lab, prov in source:
        first_prov.setdefault(lab, prov)
    id_images = np.stack([source.source_of(i) for i in identities])
    picks = pick_styles(
        bank,
        identities,
        policy=policy,
        images_per_identity=images_per_identity,
        run_seed=run_seed,
        grid_axes=grid_axes,
    )
    pos = {ident: k for k, ident in enumerate(identities)}
    seeds = [image_seed(run_seed, p.identity, p.style_index) for p in picks]
    req = GenerationRequest(
        id_images=id_images,
        id_index=np.array([pos[p.identity] for p in picks], np.int64),
        style_images=bank.gather([p.bank_index for p in picks]),  # read per batch by the sampler
        seeds=seeds,
    )
    images = sampler.generate(
        req, steps=steps, eta=eta, batch_size=batch_size, progress=progress, solver=solver
    )
    prov = []
    for p, seed in zip(picks, seeds, strict=True):
        ref = bank.record(p.bank_index)
        extra = {
            "stg_style_index": p.style_index,
            "stg_policy": policy,
            "stg_reference_subject": ref.subject,
            "stg_sampler": solver,
            "stg_steps": steps,
            "stg_eta": eta if solver == DDIM else None,
        }
        if p.cell is not None:
            extra["stg_cell"] = list(p.cell)
        if ref.tags:
            extra["stg_reference_tags"] = dict(ref.tags)
        prov.append(
            first_prov[p.identity].derive(STAGE, reference_key=ref.key, seeds={STAGE: seed}, extra=extra)
        )
    labels = np.array([p.identity for p in picks], np.int64)
    styled = source.derived(images, labels, prov, {i: source.source_of(i) for i in identities})
    sheet = contact_sheet(styled, bank, picks)
    return MixResult(styled, sheet, picks)


#: Caption colours of the STG sheet (on white): source, reference, output.
SOURCE_COLOUR = (0, 0, 0)
REFERENCE_COLOUR = (30, 90, 200)
OUTPUT_COLOUR = (30, 140, 50)


def contact_sheet(
    styled: FaceSet,
    bank: ReferenceBank,
    picks: Sequence[StylePick],
    *,
    max_identities: int = 8,
    max_styles: int = 8,
) -> np.ndarray:
    """The paper's figure layout: per identity one row of [source | references] above one row of
    [blank | generated images]; at most ``max_identities`` x ``max_styles``. Every tile says what it is:
    ``source id N``, ``reference <subject>`` (the real face whose style is taken) or ``output <style>``."""
    ids = styled.identities[:max_identities]
    by_id: dict[int, list[int]] = {}
    for i, p in enumerate(picks):
        if p.identity in ids and len(by_id.setdefault(p.identity, [])) < max_styles:
            by_id[p.identity].append(i)
    cols = 1 + max((len(v) for v in by_id.values()), default=0)
    rows: list[list[Cell | None]] = []
    for ident in ids:
        refs: list[Cell | None] = [Cell(styled.source_of(ident), [(f"source id {ident}", SOURCE_COLOUR)])]
        outs: list[Cell | None] = [None]
        for i in by_id.get(ident, []):
            pick = picks[i]
            subject = bank.record(pick.bank_index).subject
            refs.append(
                Cell(bank.faces([pick.bank_index])[0], [(f"reference {subject}"[:20], REFERENCE_COLOUR)])
            )
            outs.append(Cell(styled.images[i], [(f"output {pick.style_index}", OUTPUT_COLOUR)]))
        rows += [refs, outs]
    return render_grid(rows, tile=112, gap=4, caption_height=CAPTION, background=(255, 255, 255), n_cols=cols)
