"""SAM-compatible age transformation of aligned 112x112 faces (FDTA's M_a); see docs/age.md.

- :mod:`.model` / :mod:`.encoder` / :mod:`.stylegan2` / :mod:`.ops`: the network, with the parameter
  names of SAM's released ``sam_ffhq_aging.pt`` and pure-torch StyleGAN2 operations;
- :mod:`.loading`: safe reading of the checkpoint, strict layout check, ``.safetensors`` conversion;
- :mod:`.frame`: the ArcFace 112 <-> FFHQ 256/1024 frame change;
- :mod:`.shift`: target ages, batched shifting of a :class:`~fdta_core.faceset.FaceSet`, memory estimates.
"""

from __future__ import annotations

from .frame import M_112_TO_256, M_256_TO_112, faces_to_sam_input, ffhq_transform, sam_output_to_faces
from .loading import SAMCheckpoint, build_model, check_layout, load_sam, read_checkpoint, save_safetensors
from .model import FULL_CONFIG, SAM, SAMConfig
from .shift import AgeMemoryError, AgeTargets, age_faces, choose_batch_size, parse_ages, shift_faceset

__all__ = [
    "FULL_CONFIG",
    "M_112_TO_256",
    "M_256_TO_112",
    "SAM",
    "AgeMemoryError",
    "AgeTargets",
    "SAMCheckpoint",
    "SAMConfig",
    "age_faces",
    "build_model",
    "check_layout",
    "choose_batch_size",
    "faces_to_sam_input",
    "ffhq_transform",
    "load_sam",
    "parse_ages",
    "read_checkpoint",
    "sam_output_to_faces",
    "save_safetensors",
    "shift_faceset",
]
