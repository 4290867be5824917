"""ACG (Attribute Controllable Generator): one clean source face per planned identity.

SD 1.5 + an edge-map ControlNet sample several candidates per identity from its formulated prompt;
face models check each candidate (face found and aligned, gender and age as planned, not a duplicate of
another identity, not a copy of a real person) and the best acceptable one becomes the identity's source
face. Identities without an acceptable candidate are retried with new seeds, then reported.

The sampler is a callback, so this package never imports ComfyUI; ``nodes/nodes_acg.py`` supplies one
built on ComfyUI's sampling API.
"""

from ..faces.identity import IdentityIndex
from .contact import contact_sheet
from .edges import EDGE_METHODS, EdgeSettings, control_images, edge_map, fit_image
from .engine import (
    ON_FAILURE,
    ACGResult,
    ACGSettings,
    CandidateJob,
    CandidateRecord,
    SelectionFailedError,
    make_batches,
    plan_round,
    run_acg,
)
from .generate import ACGOptions, ACGOutputs, StepProgress, generate_sources, real_person_bank, sampling_meta
from .seeds import CONTROL_POLICIES, STAGE, candidate_seed, control_index
from .selection import (
    FaceAnalysis,
    FaceAnalyzer,
    Rejection,
    SelectionCriteria,
    check_candidate,
    choose,
)

__all__ = [
    "CONTROL_POLICIES",
    "EDGE_METHODS",
    "ON_FAILURE",
    "STAGE",
    "ACGOptions",
    "ACGOutputs",
    "ACGResult",
    "ACGSettings",
    "CandidateJob",
    "CandidateRecord",
    "EdgeSettings",
    "IdentityIndex",
    "FaceAnalysis",
    "FaceAnalyzer",
    "Rejection",
    "SelectionCriteria",
    "SelectionFailedError",
    "StepProgress",
    "candidate_seed",
    "check_candidate",
    "choose",
    "contact_sheet",
    "control_images",
    "control_index",
    "edge_map",
    "fit_image",
    "generate_sources",
    "make_batches",
    "plan_round",
    "real_person_bank",
    "run_acg",
    "sampling_meta",
]
