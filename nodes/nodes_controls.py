"""Control-map node: one ControlNet image per identity, drawn from the plan's attributes.

The drawing lives in ``fdta_core.acg.controls``; this node parses inputs, reports progress and shapes the
outputs (an IMAGE batch in plan order, a preview grid, and the drawing parameters as JSON for the ACG
sampler to record in each identity's provenance).
"""

from __future__ import annotations

import json
import logging

from comfy_api.latest import io

from ..fdta_core.acg.controls import CONTROL_SIZE, FORMATS, plan_maps, preview_grid
from ..fdta_core.faceset import uint8_to_image
from ._common import CATEGORY, IdentityPlan, as_plan, node_errors, progress_callback
from ._validation import FDTANode, validate

log = logging.getLogger("FDTA")

NODE_ID = "FDTAControlMaps"

#: The preview grid shows at most this many maps (a bounded preview, whatever the chunk size).
PREVIEW_MAX = 64


class FDTAControlMaps(FDTANode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FDTAControlMaps",  # literal: tests/node_registry.py reads node ids statically
            display_name="FDTA Control Maps (per-identity face edges / OpenPose)",
            category=f"{CATEGORY}/acg",
            description=(
                "Draws one ControlNet image per identity of the plan from its attributes: the face outline "
                "follows the face shape and jawline, eyes, eyebrows, nose and lips their shapes, the mouth the "
                "expression, plus a per-identity jitter of proportions, rotation, scale and position from the "
                "identity's seed. edges: white lines on black for a Canny ControlNet; openpose: the 68 face "
                "landmarks (+ pupils) as dots for an OpenPose ControlNet. The same identity always gets the "
                "same map. Connect control_maps and parameters to the ACG sampler with control_assignment "
                "per_identity."
            ),
            inputs=[
                IdentityPlan.Input(
                    "plan", tooltip="Identities with attributes (FDTAAttributeSpec / Prompt)."
                ),
                io.Combo.Input(
                    "format",
                    options=list(FORMATS),
                    default="edges",
                    tooltip="edges: Canny-like lines (control_v11p_sd15_canny); openpose: face landmark dots "
                    "(control_v11p_sd15_openpose).",
                ),
                io.Int.Input(
                    "size",
                    default=CONTROL_SIZE,
                    min=64,
                    max=2048,
                    step=8,
                    tooltip="Side of each square map in pixels; the sampler fits it to its width and height.",
                ),
            ],
            outputs=[
                io.Image.Output("control_maps", tooltip="One map per identity, in plan order."),
                io.Image.Output(
                    "preview", tooltip=f"The first {PREVIEW_MAX} maps in a grid with identity and face shape."
                ),
                io.String.Output(
                    "parameters",
                    tooltip="JSON list: per identity, the attributes read and the drawing parameters (connect to "
                    "the sampler's control_parameters to record them in provenance).",
                ),
            ],
        )

    @classmethod
    def validate_inputs(cls, format=None, size=None) -> bool | str:  # noqa: A002 - the widget's name
        return validate(cls, locals())

    @classmethod
    def execute(cls, plan, format, size) -> io.NodeOutput:  # noqa: A002 - the widget's name
        with node_errors(NODE_ID):
            plan = as_plan(plan)
            bar = progress_callback(len(plan), NODE_ID)
            maps = plan_maps(plan, fmt=format, size=int(size), progress=bar)
            shown = type(maps)(maps.images[:PREVIEW_MAX], maps.params[:PREVIEW_MAX])
            grid = preview_grid(shown)
            params = json.dumps(maps.records(), ensure_ascii=False)
            log.info("[FDTA] %s: drew %d %s maps of %dpx", NODE_ID, len(plan), format, size)
            return io.NodeOutput(uint8_to_image(maps.images), uint8_to_image(grid), params)


NODES = [FDTAControlMaps]
