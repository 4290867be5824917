"""ACG node: unique identity faces from formulated prompts with SD 1.5 + an edge-map ControlNet.

The sampler only glues ComfyUI to ``fdta_core.acg``: it encodes prompts with the CLIP it is given,
samples with ComfyUI's own sampling API (``comfy.sample.sample_custom`` with ComfyUI's samplers,
schedulers and ControlNet objects, so LoRAs, model patches and memory management all apply), decodes with
the VAE, and hands that sampler to ``fdta_core.acg.generate_sources`` which does control images, the
real-person bank, seeds, batching, selection, retries, progress, provenance and outputs.

Two nodes, as PuLID's Apply / Apply Advanced: ``FDTAACGSampler`` holds what a user sets every time
(models, plan, control images, seed, steps, cfg, sampler, ControlNet strength, image size, candidates);
``FDTAACGOptions`` holds the selection criteria, retries and edge preprocessing, whose defaults (the
sampler's when nothing is connected) suit most runs.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import comfy.model_management
import comfy.sample
import comfy.samplers
import numpy as np
import torch
from comfy_api.latest import io

from ..fdta_core.acg import CONTROL_POLICIES, EDGE_METHODS, ON_FAILURE, CandidateJob
from ..fdta_core.acg.batching import PerElementNoise, batch_cond, initial_noise
from ..fdta_core.acg.generate import ACGOptions, check_range, generate_sources, index_folder, sampling_meta
from ..fdta_core.acg.selection import PREFER
from ..fdta_core.errors import InputError
from ..fdta_core.faces.realset import REAL_SET_CACHE
from ..fdta_core.faceset import FaceSet, image_to_uint8, uint8_to_image
from ..fdta_core.timing import StageClock
from ._common import (
    CATEGORY,
    ACGOptionsSocket,
    FaceModels,
    Faceset,
    IdentityPlan,
    ReferenceBank,
    as_plan,
    batch_size_input,
    bool_input,
    combo_input,
    float_input,
    int_input,
    node_errors,
    output_roots,
    progress_callback,
    seed_input,
    tip,
)
from ._validation import FDTANode, PromptGraph, check_widgets, validate

log = logging.getLogger("FDTA")

NODE_ID = "FDTAACGSampler"


class ComfyBatchSampler:
    """``sample(jobs) -> uint8 images``: one ComfyUI sampler call for a batch of candidates, each batch
    element with its own prompt conditioning, control image and noise seed."""

    def __init__(
        self,
        *,
        model: Any,
        clip: Any,
        vae: Any,
        control_net: Any,
        controls: torch.Tensor,
        strength: float,
        start_percent: float,
        end_percent: float,
        steps: int,
        cfg: float,
        sampler_name: str,
        scheduler: str,
        width: int,
        height: int,
        on_step: Any = None,
    ) -> None:
        self.model, self.clip, self.vae, self.control_net = model, clip, vae, control_net
        self.controls = controls  # [N, H, W, 3] float in [0, 1]
        self.strength, self.range = strength, (start_percent, end_percent)
        self.steps, self.cfg = steps, cfg
        self.sampler_name, self.scheduler = sampler_name, scheduler
        self.width, self.height = width, height
        self.on_step = on_step
        self._cond_cache: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}

    def _encode(self, text: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        hit = self._cond_cache.get(text)
        if hit is None:
            out = self.clip.encode_from_tokens(self.clip.tokenize(text), return_pooled=True, return_dict=True)
            hit = (out.pop("cond"), out.get("pooled_output"))
            self._cond_cache[text] = hit
        return hit

    def _conditioning(self, texts: Sequence[str], control: Any) -> list:
        encoded = [self._encode(t) for t in texts]
        extra: dict[str, Any] = {"control": control, "control_apply_to_uncond": False}
        pooled = [p for _, p in encoded]
        if all(p is not None for p in pooled):
            extra["pooled_output"] = torch.cat(pooled)  # type: ignore[arg-type]
        return [[batch_cond([c for c, _ in encoded]), extra]]

    def _sampler(self, seeds: Sequence[int], latent_shape: Sequence[int]) -> Any:
        sampler = comfy.samplers.sampler_object(self.sampler_name)
        fn = getattr(sampler, "sampler_function", None)
        if fn is not None:
            params = inspect.signature(fn).parameters
            if "noise_sampler" in params or any(p.kind is p.VAR_KEYWORD for p in params.values()):
                noise = PerElementNoise(seeds, latent_shape, self.model.load_device)
                sampler = comfy.samplers.KSAMPLER(
                    fn, {**sampler.extra_options, "noise_sampler": noise}, sampler.inpaint_options
                )
        return sampler

    def __call__(self, jobs: Sequence[CandidateJob]) -> np.ndarray:
        n = len(jobs)
        hint = self.controls[[j.control for j in jobs]].movedim(-1, 1)
        c_net = self.control_net.copy().set_cond_hint(hint, self.strength, self.range, vae=self.vae)
        positive = self._conditioning([j.prompt for j in jobs], c_net)
        negative = self._conditioning([j.negative_prompt for j in jobs], c_net)

        latent_format = self.model.get_model_object("latent_format")
        shape = [latent_format.latent_channels, self.height // 8, self.width // 8]
        latent = torch.zeros([n, *shape])
        # initial noise exactly as comfy.sample.prepare_noise draws it for a batch of one with that seed
        noise = initial_noise([j.seed for j in jobs], shape)
        ks = comfy.samplers.KSampler(
            self.model,
            steps=self.steps,
            device=self.model.load_device,
            sampler=self.sampler_name,
            scheduler=self.scheduler,
            denoise=1.0,
            model_options=self.model.model_options,
        )

        def callback(step: int, x0: Any, x: Any, total: int) -> None:
            comfy.model_management.throw_exception_if_processing_interrupted()
            if self.on_step is not None:
                self.on_step(step + 1, total)

        samples = comfy.sample.sample_custom(
            self.model,
            noise,
            self.cfg,
            self._sampler([j.seed for j in jobs], shape),
            ks.sigmas,
            positive,
            negative,
            latent,
            callback=callback,
            disable_pbar=True,
            seed=int(jobs[0].seed),
        )
        images = self.vae.decode(samples)
        if images.ndim == 5:  # video VAEs return [B, T, H, W, C]
            images = images.reshape(-1, *images.shape[-3:])
        return image_to_uint8(images, where="VAE decode")


def _acg_options(options: Any) -> ACGOptions:
    if options is None:
        return ACGOptions()
    if isinstance(options, ACGOptions):
        return options
    if isinstance(options, dict):
        return ACGOptions.from_values(options)
    raise InputError(
        f"expected ACG options, got {type(options).__name__}",
        where="options",
        fix="connect the options output of FDTAACGOptions, or leave the socket empty for the defaults.",
    )


def check_acg(values: dict, graph: PromptGraph | None) -> None:
    lo, hi = values.get("start_percent"), values.get("end_percent")
    if lo is not None and hi is not None:
        check_range(lo, hi)


_DEFAULTS = ACGOptions()


class FDTAACGOptions(FDTANode):
    """The advanced ACG settings as one socket; unconnected, the sampler uses these same defaults."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        d = _DEFAULTS
        return io.Schema(
            node_id="FDTAACGOptions",  # literal: tests/node_registry.py reads node ids statically
            display_name="FDTA ACG Options (selection, retries, edges)",
            category=f"{CATEGORY}/acg",
            description=(
                "Advanced settings of the FDTA ACG Sampler: how control photos become edge maps, how "
                "candidates pick their control image, how many retry rounds, and which candidates are "
                "acceptable (detection score, planned gender and age, uniqueness, no real person). Connect "
                "it to the sampler's options input; without it the sampler uses these defaults."
            ),
            inputs=[
                combo_input(
                    "control_preprocess",
                    EDGE_METHODS,
                    d.control_preprocess,
                    "none: the control images already are edge maps; canny: OpenCV Canny with the thresholds "
                    "below; canny_auto: thresholds from each photo's median; sobel: soft gradient edges",
                ),
                int_input("canny_low", d.canny_low, 0, 255, "Canny lower hysteresis threshold"),
                int_input("canny_high", d.canny_high, 0, 255, "Canny upper hysteresis threshold"),
                int_input(
                    "edge_blur", d.edge_blur, 0, 31, "Gaussian blur size before edge detection (0: none)"
                ),
                combo_input(
                    "control_assignment",
                    CONTROL_POLICIES,
                    d.control_assignment,
                    "random: each candidate draws its control image from its derived seed; cycle: "
                    "candidates walk the control images in order so all are used equally; per_identity: image i "
                    "belongs to identity i of the plan (the maps of FDTA Control Maps)",
                ),
                int_input(
                    "retries",
                    d.retries,
                    0,
                    50,
                    "Extra rounds with new seeds for identities without an acceptable candidate",
                ),
                combo_input(
                    "on_failure",
                    ON_FAILURE,
                    d.on_failure,
                    "After the last retry: skip leaves the identity out (listed in the report and the "
                    "contact sheet); error stops with the list",
                ),
                float_input("min_det_score", d.min_det_score, 0.0, 1.0, 0.01, "Minimum face detection score"),
                bool_input("check_gender", d.check_gender, "Reject faces whose gender differs from the plan"),
                bool_input(
                    "check_age", d.check_age, "Reject faces whose age is off by more than age_tolerance"
                ),
                float_input("age_tolerance", d.age_tolerance, 0.0, 100.0, 0.5, "Allowed age error in years"),
                float_input(
                    "uniqueness_threshold",
                    d.uniqueness_threshold,
                    -1.0,
                    1.0,
                    0.01,
                    "ArcFace cosine at or above which a face counts as an identity already accepted",
                ),
                float_input(
                    "real_person_threshold",
                    d.real_person_threshold,
                    -1.0,
                    1.0,
                    0.01,
                    "ArcFace cosine at or above which a face counts as a copy of a real person (control "
                    "photos, real_faces, the reference bank's subjects, real_sets)",
                ),
                io.String.Input(
                    "real_sets",
                    default=d.real_sets,
                    tooltip=tip(
                        "Real people no identity may resemble, besides the reference bank: paths separated by "
                        "';', each an .npy of [N, 512] identity embeddings (e.g. of MS1M), a dataset folder "
                        "(train.rec), or a folder of photos (one subfolder per person, or one photo per person; "
                        "embedded once, cached in the output folder)"
                    ),
                ),
                combo_input(
                    "prefer",
                    PREFER,
                    d.prefer,
                    "Which acceptable candidate is kept: farthest from the identities already accepted in the "
                    "run (largest minimum cosine distance, spreading identities); detection: best detection score",
                ),
                bool_input(
                    "check_expression",
                    d.check_expression,
                    "Reject faces whose mouth-corner geometry contradicts a planned neutral or smiling "
                    "expression (a slight smile is not checked)",
                ),
                float_input(
                    "smile_ratio",
                    d.smile_ratio,
                    0.0,
                    3.0,
                    0.01,
                    "Mouth-corner distance over eye distance that separates smiling from neutral (0.83 on the "
                    "neutral ArcFace template)",
                ),
                float_input(
                    "expression_margin",
                    d.expression_margin,
                    0.0,
                    1.0,
                    0.01,
                    "Half-width of the undecided band around smile_ratio in which both expressions pass",
                ),
                bool_input(
                    "check_pose", d.check_pose, "Reject faces that are not frontal within the limits below"
                ),
                float_input(
                    "max_yaw",
                    d.max_yaw,
                    0.0,
                    90.0,
                    0.5,
                    "Largest head turn in degrees (from the nose offset)",
                ),
                float_input(
                    "max_roll", d.max_roll, 0.0, 90.0, 0.5, "Largest in-plane tilt of the eye line in degrees"
                ),
                float_input(
                    "max_pitch_offset",
                    d.max_pitch_offset,
                    0.0,
                    1.0,
                    0.01,
                    "Largest shift of the nose between eye line and mouth line from its frontal place (0.495)",
                ),
            ],
            outputs=[
                ACGOptionsSocket.Output(
                    "options", tooltip="The advanced settings, for the options input of FDTA ACG Sampler."
                )
            ],
        )

    @classmethod
    def check_inputs(cls, values: dict, graph: PromptGraph | None = None) -> None:
        """Queue-time checks of literal widget values (nodes/_validation.py)."""
        check_widgets(cls, values)
        lo, hi = values.get("canny_low"), values.get("canny_high")
        if lo is not None and hi is not None and int(lo) > int(hi):
            raise InputError(
                f"canny_low {lo} is above canny_high {hi}",
                where="canny_low",
                fix="make canny_low <= canny_high.",
            )

    @classmethod
    def validate_inputs(
        cls,
        control_preprocess=None,
        control_assignment=None,
        on_failure=None,
        canny_low=None,
        canny_high=None,
        prefer=None,
    ) -> bool | str:
        return validate(cls, locals())

    @classmethod
    def execute(cls, **values: Any) -> io.NodeOutput:
        with node_errors("FDTAACGOptions"):
            return io.NodeOutput(ACGOptions.from_values(values))


class FDTAACGSampler(FDTANode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FDTAACGSampler",  # literal: tests/node_registry.py reads node ids statically
            display_name="FDTA ACG Sampler (SD + ControlNet source faces)",
            category=f"{CATEGORY}/acg",
            description=(
                "FDTA's Attribute Controllable Generator: for every identity of the plan, samples several "
                "candidates from its formulated prompt with SD 1.5 + an edge-map ControlNet (many identities "
                "per sampler call), keeps the candidate whose face is detected and matches the planned gender "
                "and age and is neither a duplicate nor a copy of a real person, retries the others with new "
                "seeds, and outputs one aligned 112x112 source face per identity with every seed in provenance. "
                "Selection criteria, retries and edge preprocessing: connect FDTA ACG Options."
            ),
            inputs=[
                io.Model.Input(
                    "model", tooltip="SD 1.5 model (CheckpointLoaderSimple; LoRAs and patches apply)."
                ),
                io.Clip.Input(
                    "clip", tooltip="Text encoder of the checkpoint; encodes each identity's prompt."
                ),
                io.Vae.Input("vae", tooltip="VAE of the checkpoint; decodes the sampled latents."),
                io.ControlNet.Input(
                    "control_net", tooltip="Edge (Canny) ControlNet for SD 1.5 (ControlNetLoader)."
                ),
                IdentityPlan.Input(
                    "plan", tooltip="Identities with attributes and prompts (FDTAAttributePrompt)."
                ),
                io.Image.Input(
                    "control_images",
                    tooltip="Control images: real face photos that become edge maps, or edge maps used as they "
                    "are (control_preprocess 'none' on FDTA ACG Options). Candidates draw from this batch.",
                ),
                seed_input(
                    "Mixed with the plan's run seed, identity, round and candidate into every candidate "
                    "seed; change it to re-roll all faces of the same plan",
                ),
                int_input("steps", 25, 1, 1000, "Sampling steps"),
                float_input("cfg", 7.0, 0.0, 100.0, 0.1, "Classifier-free guidance"),
                combo_input("sampler_name", comfy.samplers.KSampler.SAMPLERS, "dpmpp_2m", "Sampler"),
                combo_input("scheduler", comfy.samplers.KSampler.SCHEDULERS, "karras", "Scheduler"),
                float_input("strength", 1.0, 0.0, 10.0, 0.01, "ControlNet strength"),
                float_input(
                    "start_percent", 0.0, 0.0, 1.0, 0.001, "ControlNet starts here (share of the steps)"
                ),
                float_input("end_percent", 1.0, 0.0, 1.0, 0.001, "ControlNet ends here (share of the steps)"),
                int_input("width", 512, 32, 4096, "Image width in pixels", step=8),
                int_input("height", 512, 32, 4096, "Image height in pixels", step=8),
                int_input("candidates", 4, 1, 64, "Candidates sampled per identity and round"),
                batch_size_input(8, 256, "Candidates (from several identities, each with its own prompt)"),
                FaceModels.Input(
                    "face_models",
                    optional=True,
                    tooltip="Face models for selection (FDTAFaceModelLoader). Without them nothing is checked: "
                    "candidate 0 is kept, centre-cropped, and marked unchecked.",
                ),
                ReferenceBank.Input(
                    "reference_bank",
                    optional=True,
                    tooltip="The STG reference bank (FDTA Reference Bank): its real subjects are in the graph, so no "
                    "identity may resemble any of them.",
                ),
                Faceset.Input(
                    "real_faces",
                    optional=True,
                    tooltip="Aligned faces of real people that no identity may resemble (besides the control photos).",
                ),
                ACGOptionsSocket.Input(
                    "options",
                    optional=True,
                    tooltip="Selection criteria, retries and edge preprocessing (FDTA ACG Options); unconnected: "
                    "canny edges, 2 retries, detection 0.5, gender and age (10 years) checked, thresholds 0.3.",
                ),
                io.String.Input(
                    "identity_index",
                    default="",
                    optional=True,
                    tooltip="Folder of the run's identity index (one FAISS file per chunk), relative to ComfyUI's "
                    "output folder: identities accepted by earlier chunks of the run are not generated again, and "
                    "this chunk's identities are added. Empty: uniqueness within this chunk only. fdta run sets it.",
                ),
                io.String.Input(
                    "control_parameters",
                    optional=True,
                    force_input=True,
                    tooltip="The parameters output of FDTA Control Maps when control_images are its per-identity "
                    "maps: they are used as drawn (no edge preprocessing) and each identity's provenance records "
                    "its map's parameters. Set control_assignment to per_identity on FDTA ACG Options.",
                ),
            ],
            outputs=[
                Faceset.Output(
                    "faceset", tooltip="One aligned 112x112 source face per identity, with provenance."
                ),
                io.Image.Output("images", tooltip="The chosen candidates at full resolution, in plan order."),
                io.Image.Output(
                    "contact_sheet",
                    tooltip="Every candidate: chosen framed green, runners-up orange, rejected red with the reason.",
                ),
                io.String.Output(
                    "report", tooltip="One line per identity: the chosen seed or why none was kept."
                ),
            ],
        )

    @classmethod
    def check_inputs(cls, values: dict, graph: PromptGraph | None = None) -> None:
        """Queue-time checks of literal widget values (nodes/_validation.py)."""
        check_widgets(cls, values)
        check_acg(values, graph)

    @classmethod
    def validate_inputs(
        cls, sampler_name=None, scheduler=None, start_percent=None, end_percent=None
    ) -> bool | str:
        return validate(cls, locals())

    @classmethod
    def execute(
        cls,
        model,
        clip,
        vae,
        control_net,
        plan,
        control_images,
        seed,
        steps,
        cfg,
        sampler_name,
        scheduler,
        strength,
        start_percent,
        end_percent,
        width,
        height,
        candidates,
        batch_size,
        face_models=None,
        reference_bank=None,
        real_faces=None,
        options=None,
        identity_index="",
        control_parameters=None,
    ) -> io.NodeOutput:
        with node_errors(NODE_ID):
            clock = StageClock()
            plan = as_plan(plan)
            check_range(start_percent, end_percent)
            opts = _acg_options(options)

            def make_sample(controls: np.ndarray, on_step: Any) -> ComfyBatchSampler:
                return ComfyBatchSampler(
                    model=model,
                    clip=clip,
                    vae=vae,
                    control_net=control_net,
                    controls=uint8_to_image(controls),
                    strength=strength,
                    start_percent=start_percent,
                    end_percent=end_percent,
                    steps=steps,
                    cfg=cfg,
                    sampler_name=sampler_name,
                    scheduler=scheduler,
                    width=width,
                    height=height,
                    on_step=on_step,
                )

            out = generate_sources(
                plan,
                image_to_uint8(control_images, where="control_images"),
                make_sample,
                width=width,
                height=height,
                steps=steps,
                candidates=candidates,
                batch_size=batch_size,
                seed=seed,
                options=opts,
                face_models=face_models,
                real_faces=real_faces if isinstance(real_faces, FaceSet) else None,
                reference_bank=reference_bank,
                index_folder=index_folder(identity_index, output_roots()),
                # an image folder in real_sets is embedded once; the cache lives in the output folder
                real_cache=Path(output_roots()[0]) / REAL_SET_CACHE,
                meta=sampling_meta(
                    sampler_name=sampler_name,
                    scheduler=scheduler,
                    steps=steps,
                    cfg=cfg,
                    width=width,
                    height=height,
                    strength=strength,
                    start_percent=start_percent,
                    end_percent=end_percent,
                    control_preprocess="none (drawn maps)"
                    if control_parameters is not None
                    else opts.control_preprocess,
                ),
                progress=progress_callback(1),
                where=NODE_ID,
                control_records=control_parameters,
            )
            clock.stamp(out.faceset, None, "acg", NODE_ID, len(out.faceset))
            # the report and the provenance also go to the prompt's history, for API users and the runner
            return io.NodeOutput(
                out.faceset, uint8_to_image(out.images), uint8_to_image(out.sheet), out.report, ui=out.ui()
            )


NODES = [FDTAACGSampler, FDTAACGOptions]
