"""STG: FDTA's style transfer generator, a re-implementation of DCFace's dual-condition mixer.

Public API::

    from fdta_core.stg import (STGConfig, STGModel, load_stg_weights, build_model, convert,
                               STGSampler, GenerationRequest, ReferenceBank, pick_styles, mix)
"""

from .bank import ReferenceBank
from .checkpoint import (
    LoadReport,
    STGWeights,
    build_model,
    convert,
    load_stg_weights,
    read_lightning_checkpoint,
)
from .config import IRConfig, STGConfig
from .ddim import Schedule, ddim_sample, ddim_timesteps
from .mixer import MixResult, contact_sheet, image_seed, mix
from .model import Condition, STGModel
from .policies import POLICIES, StylePick, mpie_axes, pick_styles
from .sampler import GenerationRequest, STGSampler

__all__ = [
    "POLICIES",
    "Condition",
    "GenerationRequest",
    "IRConfig",
    "LoadReport",
    "MixResult",
    "ReferenceBank",
    "STGConfig",
    "STGModel",
    "STGSampler",
    "STGWeights",
    "Schedule",
    "StylePick",
    "build_model",
    "contact_sheet",
    "convert",
    "ddim_sample",
    "ddim_timesteps",
    "image_seed",
    "load_stg_weights",
    "mix",
    "mpie_axes",
    "pick_styles",
    "read_lightning_checkpoint",
]
