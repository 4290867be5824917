"""Seeds and control-image assignment of ACG candidates.

A candidate is identified by (identity, attempt, candidate): its sampling seed and its control image
derive from the run seed and those numbers only, never from the batch it was sampled in or the chunk it
belongs to, so any identity can be regenerated alone (with ComfyUI's plain KSampler and the recorded
seed and control image) and chunks of a run compose.
"""

from __future__ import annotations

from ..errors import InputError, check_choice
from ..seeds import derive_seed

#: Stage name used in seed derivation and provenance (``Provenance.seeds["acg"]``).
STAGE = "acg"

#: How candidates pick their control image: ``random`` draws it from the candidate's own derived seed;
#: ``cycle`` walks the control images in order (identity i, candidate k, attempt a -> (i + k + a*K) mod N),
#: so every control image is used equally often; ``per_identity``: control image ``i`` belongs to the
#: plan's ``i``-th identity (a batch of maps drawn per identity, ``FDTAControlMaps``), for all its candidates.
CONTROL_POLICIES: tuple[str, ...] = ("random", "cycle", "per_identity")


def candidate_seed(run_seed: int, identity: int, attempt: int, candidate: int, *, salt: int = 0) -> int:
    """Sampling seed of candidate ``candidate`` of ``identity`` in retry round ``attempt``.

    ``salt`` is the sampler node's own seed widget: changing it re-rolls every candidate without changing
    the identity plan.
    """
    return derive_seed(int(run_seed), STAGE, int(salt), int(identity), int(attempt), int(candidate))


def control_index(
    run_seed: int,
    identity: int,
    attempt: int,
    candidate: int,
    n_controls: int,
    *,
    candidates: int = 1,
    policy: str = "random",
    salt: int = 0,
    slot: int | None = None,
) -> int:
    """Index of the control image that candidate uses, in ``[0, n_controls)`` (``slot``: the identity's
    position in its plan, which ``per_identity`` uses)."""
    if n_controls <= 0:
        raise InputError("at least one control image is needed", where="control_images")
    if policy == "per_identity":
        if slot is None or not 0 <= int(slot) < n_controls:
            raise InputError(
                f"per_identity control assignment needs one control image per identity; plan position {slot} "
                f"has none among {n_controls}",
                where="control_images",
                fix="connect FDTAControlMaps driven by the same plan, or choose random or cycle.",
            )
        return int(slot)
    if policy == "random":
        return (
            derive_seed(
                int(run_seed), STAGE, "control", int(salt), int(identity), int(attempt), int(candidate)
            )
            % n_controls
        )
    if policy == "cycle":
        return (int(identity) + int(candidate) + int(attempt) * max(int(candidates), 1)) % n_controls
    check_choice(None, "control_assignment", policy, CONTROL_POLICIES)
    raise AssertionError(f"control policy {policy!r} has no implementation")  # a new CONTROL_POLICIES entry
