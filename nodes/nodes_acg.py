"""ACG node: unique identity faces from formulated prompts with SD 1.5 + an edge-map ControlNet.

The node only glues ComfyUI to ``fdta_core.acg``: it encodes prompts with the CLIP it is given, samples
with ComfyUI's own sampling API (``comfy.sample.sample_custom`` with ComfyUI's samplers, schedulers and
ControlNet objects, so LoRAs, model patches and memory management all apply), decodes with the VAE, and
hands the images to ``fdta_core.acg.run_acg`` which does seeds, batching, selection, retries and outputs.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Sequence
from typing import Any

import comfy.model_management
import comfy.sample
import comfy.samplers
import numpy as np
import torch
from comfy_api.latest import io

from ..fdta_core.acg import (
    CONTROL_POLICIES,
    EDGE_METHODS,
    ON_FAILURE,
    ACGSettings,
    CandidateJob,
    EdgeSettings,
    IdentityIndex,
    SelectionCriteria,
    contact_sheet,
    run_acg,
)
from ..fdta_core.acg.batching import PerElementNoise, batch_cond, initial_noise
from ..fdta_core.acg.edges import control_images as make_control_images
from ..fdta_core.acg.faces_adapter import as_analyzer
from ..fdta_core.errors import InputError
from ..fdta_core.faces.audit import real_identities
from ..fdta_core.faces.identity import RunIndex, real_index, resolve_index_folder, subject_embeddings
from ..fdta_core.faceset import FaceSet, image_to_uint8, uint8_to_image
from ..fdta_core.plan import IdentityPlan as PlanRecord
from ._common import (
    CATEGORY,
    FaceModels,
    Faceset,
    IdentityPlan,
    ReferenceBank,
    node_errors,
    output_roots,
    progress_callback,
    seed_input,
)
from ._validation import PromptGraph, check_widgets, validate

log = logging.getLogger("FDTA")

NODE_ID = "FDTAACGSampler"


def _as_plan(plan: Any) -> PlanRecord:
    if isinstance(plan, PlanRecord):
        return plan
    if isinstance(plan, dict):
        return PlanRecord.from_dict(plan)
    raise InputError(
        f"expected an identity plan, got {type(plan).__name__}",
        where="plan",
        fix="connect the plan output of FDTAAttributeSpec or FDTAAttributePrompt.",
    )


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


def check_acg(values: dict, graph: PromptGraph | None) -> None:
    lo, hi = values.get("start_percent"), values.get("end_percent")
    if lo is not None and hi is not None and float(lo) > float(hi):
        raise InputError(
            f"start_percent {lo} is after end_percent {hi}",
            where="start_percent",
            fix="the ControlNet acts from start_percent to end_percent: make start_percent <= end_percent.",
        )


class FDTAACGSampler(io.ComfyNode):
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
                "seeds, and outputs one aligned 112x112 source face per identity with every seed in provenance."
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
                    tooltip="Control images: edge maps used as they are, or real face photos that the node turns "
                    "into edge maps (see control_preprocess). Candidates draw from this batch.",
                ),
                io.Combo.Input(
                    "control_preprocess",
                    options=list(EDGE_METHODS),
                    default="canny",
                    tooltip="none: the images already are edge maps; canny: OpenCV Canny with the thresholds "
                    "below; canny_auto: thresholds from each photo's median; sobel: soft gradient edges.",
                ),
                io.Int.Input(
                    "canny_low", default=100, min=0, max=255, tooltip="Canny lower hysteresis threshold."
                ),
                io.Int.Input(
                    "canny_high", default=200, min=0, max=255, tooltip="Canny upper hysteresis threshold."
                ),
                io.Int.Input(
                    "edge_blur",
                    default=3,
                    min=0,
                    max=31,
                    tooltip="Gaussian blur size before edge detection (0: none).",
                ),
                io.Combo.Input(
                    "control_assignment",
                    options=list(CONTROL_POLICIES),
                    default="random",
                    tooltip="random: each candidate draws its control image from its derived seed; cycle: "
                    "candidates walk the control images in order so all are used equally.",
                ),
                io.Float.Input(
                    "strength", default=1.0, min=0.0, max=10.0, step=0.01, tooltip="ControlNet strength."
                ),
                io.Float.Input(
                    "start_percent",
                    default=0.0,
                    min=0.0,
                    max=1.0,
                    step=0.001,
                    tooltip="ControlNet starts here.",
                ),
                io.Float.Input(
                    "end_percent", default=1.0, min=0.0, max=1.0, step=0.001, tooltip="ControlNet ends here."
                ),
                io.Int.Input(
                    "candidates",
                    default=4,
                    min=1,
                    max=64,
                    tooltip="Candidates sampled per identity and round.",
                ),
                io.Int.Input(
                    "batch_size",
                    default=8,
                    min=1,
                    max=256,
                    tooltip="Candidates per sampler call (from several identities, each with its own prompt). "
                    "Does not change the images, only speed and memory.",
                ),
                seed_input(
                    "Mixed with the plan's run seed, identity, round and candidate into every candidate "
                    "seed; change it to re-roll all faces of the same plan.",
                ),
                io.Int.Input("steps", default=25, min=1, max=1000, tooltip="Sampling steps."),
                io.Float.Input(
                    "cfg", default=7.0, min=0.0, max=100.0, step=0.1, tooltip="Classifier-free guidance."
                ),
                io.Combo.Input(
                    "sampler_name",
                    options=comfy.samplers.KSampler.SAMPLERS,
                    default="dpmpp_2m",
                    tooltip="Sampler.",
                ),
                io.Combo.Input(
                    "scheduler",
                    options=comfy.samplers.KSampler.SCHEDULERS,
                    default="karras",
                    tooltip="Scheduler.",
                ),
                io.Int.Input(
                    "width", default=512, min=32, max=4096, step=8, tooltip="Image width in pixels."
                ),
                io.Int.Input(
                    "height", default=512, min=32, max=4096, step=8, tooltip="Image height in pixels."
                ),
                io.Int.Input(
                    "retries",
                    default=2,
                    min=0,
                    max=50,
                    tooltip="Extra rounds with new seeds for identities without an acceptable candidate.",
                ),
                io.Combo.Input(
                    "on_failure",
                    options=list(ON_FAILURE),
                    default="skip",
                    tooltip="After the last retry: skip leaves the identity out (listed in the report and the "
                    "contact sheet); error stops with the list.",
                ),
                io.Float.Input(
                    "min_det_score",
                    default=0.5,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    tooltip="Minimum face detection score.",
                ),
                io.Boolean.Input(
                    "check_gender", default=True, tooltip="Reject faces whose gender differs from the plan."
                ),
                io.Boolean.Input(
                    "check_age",
                    default=True,
                    tooltip="Reject faces whose age is off by more than the tolerance.",
                ),
                io.Float.Input(
                    "age_tolerance",
                    default=10.0,
                    min=0.0,
                    max=100.0,
                    step=0.5,
                    tooltip="Allowed age error in years.",
                ),
                io.Float.Input(
                    "uniqueness_threshold",
                    default=0.3,
                    min=-1.0,
                    max=1.0,
                    step=0.01,
                    tooltip="ArcFace cosine at or above which a face counts as an identity already accepted.",
                ),
                io.Float.Input(
                    "real_person_threshold",
                    default=0.3,
                    min=-1.0,
                    max=1.0,
                    step=0.01,
                    tooltip="ArcFace cosine at or above which a face counts as a copy of a real face (the control "
                    "photos and real_faces).",
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
                    "real_sets",
                    default="",
                    optional=True,
                    tooltip="Real people no identity may resemble, besides the reference bank: paths separated by "
                    "';', each an .npy of [N, 512] identity embeddings (e.g. of MS1M) or a dataset folder (train.rec).",
                ),
                FaceModels.Input(
                    "face_models",
                    optional=True,
                    tooltip="Face models for selection (FDTAFaceModelLoader). Without them nothing is checked: "
                    "candidate 0 is kept, centre-cropped, and marked unchecked.",
                ),
                Faceset.Input(
                    "real_faces",
                    optional=True,
                    tooltip="Aligned faces of real people that no identity may resemble (besides the control photos).",
                ),
                ReferenceBank.Input(
                    "reference_bank",
                    optional=True,
                    tooltip="The STG reference bank (FDTA Reference Bank): its real subjects are in the graph, so no "
                    "identity may resemble any of them.",
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
        cls,
        control_preprocess=None,
        control_assignment=None,
        sampler_name=None,
        scheduler=None,
        on_failure=None,
        start_percent=None,
        end_percent=None,
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
        control_preprocess,
        canny_low,
        canny_high,
        edge_blur,
        control_assignment,
        strength,
        start_percent,
        end_percent,
        candidates,
        batch_size,
        seed,
        steps,
        cfg,
        sampler_name,
        scheduler,
        width,
        height,
        retries,
        on_failure,
        min_det_score,
        check_gender,
        check_age,
        age_tolerance,
        uniqueness_threshold,
        real_person_threshold,
        identity_index="",
        real_sets="",
        face_models=None,
        real_faces=None,
        reference_bank=None,
    ) -> io.NodeOutput:
        with node_errors(NODE_ID):
            plan = _as_plan(plan)
            if start_percent > end_percent:
                raise InputError(
                    f"start_percent {start_percent} is after end_percent {end_percent}", where="start_percent"
                )
            edge = EdgeSettings(control_preprocess, canny_low, canny_high, edge_blur)
            settings = ACGSettings(
                candidates=candidates,
                retries=retries,
                batch_size=batch_size,
                control_policy=control_assignment,
                seed=seed,
                on_failure=on_failure,
            )
            criteria = SelectionCriteria(
                min_det_score=min_det_score,
                check_gender=check_gender,
                age_tolerance=age_tolerance if check_age else None,
                uniqueness_threshold=uniqueness_threshold,
                real_person_threshold=real_person_threshold,
            )
            photos = image_to_uint8(control_images, where="control_images")
            controls = control_images_to_tensor(photos, width, height, edge)

            analyzer = (
                as_analyzer(face_models, det_threshold=max(0.05, min(0.2, min_det_score)))
                if face_models is not None
                else None
            )
            real = IdentityIndex()
            if analyzer is not None:
                if control_preprocess != "none":  # real photos: generated faces must not copy them
                    for k, a in enumerate(analyzer.analyze(photos)):
                        if a.detected and a.embedding is not None:
                            real.add(f"control photo {k}", a.embedding)
                if isinstance(real_faces, FaceSet) and len(real_faces):
                    embs = analyzer.embed_aligned(real_faces.images)
                    real.extend(
                        [f"real face {i} (label {int(x)})" for i, x in enumerate(real_faces.labels)], embs
                    )
                if reference_bank is not None and len(reference_bank):
                    subjects = subject_embeddings(
                        reference_bank.images, reference_bank.subjects, analyzer.embed_aligned
                    )
                    real.merge_from(real_index(subjects))
                for path in [
                    x.strip() for x in str(real_sets or "").replace("\n", ";").split(";") if x.strip()
                ]:
                    got = real_identities(path, face_models)
                    real.merge_from(real_index(sets=[(path, got.centers)]))
                log.info("[FDTA] %s: %d real identities to stay away from", NODE_ID, len(real))
            else:
                log.warning("[FDTA] %s: no face models connected; candidates are NOT checked", NODE_ID)
            run_index = prior = None
            if identity_index and str(identity_index).strip():
                run_index = RunIndex(resolve_index_folder(identity_index, output_roots()))
                repaired = [int(i.index) for i in plan.identities]
                prior = run_index.prior(
                    plan.start, repair_of=(plan.end, repaired) if plan.repair_round else None
                )

            per_batch = steps
            state = {"done": 0, "total": math.ceil(len(plan) * candidates / batch_size)}
            bar = progress_callback(state["total"] * per_batch)

            def on_batch(done: int, total: int) -> None:
                state["done"], state["total"] = done, total
                bar(done * per_batch, total * per_batch)

            def on_step(step: int, total_steps: int) -> None:
                bar(state["done"] * per_batch + min(step, per_batch), state["total"] * per_batch)

            sampler = ComfyBatchSampler(
                model=model,
                clip=clip,
                vae=vae,
                control_net=control_net,
                controls=controls,
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
            meta = {
                "sampler": sampler_name,
                "scheduler": scheduler,
                "steps": steps,
                "cfg": cfg,
                "width": width,
                "height": height,
                "controlnet_strength": strength,
                "controlnet_range": [start_percent, end_percent],
                "control_preprocess": control_preprocess,
            }
            result = run_acg(
                plan,
                sampler,
                controls.shape[0],
                settings=settings,
                criteria=criteria,
                analyzer=analyzer,
                real=real,
                prior=prior,
                meta=meta,
                progress=on_batch,
            )
            if run_index is not None and analyzer is not None:
                run_index.save_chunk(
                    plan.start,
                    plan.end,
                    result.accepted_index(),
                    replacing=[int(i.index) for i in plan.identities] if plan.repair_round else None,
                )
            faceset = result.faceset()
            images = result.images()
            if images.shape[0] == 0:
                images = np.zeros((1, height, width, 3), np.uint8)
            sheet = contact_sheet(result)
            report = result.report()
            log.info("[FDTA] %s: %s", NODE_ID, report.splitlines()[-1])
            # the report and the provenance also go to the prompt's history, for API users and the runner
            ui = {"fdta_acg_report": [report], "fdta_acg_provenance": [faceset.provenance_json()]}
            return io.NodeOutput(faceset, uint8_to_image(images), uint8_to_image(sheet), report, ui=ui)


def control_images_to_tensor(photos: np.ndarray, width: int, height: int, edge: EdgeSettings) -> torch.Tensor:
    """Photos or edge maps (uint8) -> control images at the sampling size as an IMAGE tensor."""
    return uint8_to_image(make_control_images(photos, width, height, edge))


NODES = [FDTAACGSampler]
