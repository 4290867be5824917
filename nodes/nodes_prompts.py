"""Attribute stage nodes: ``FDTAAttributeSpec`` (stratified identity plan + grammar prompts) and
``FDTAAttributePrompt`` (optional LLM-written descriptions through an OpenAI-compatible server).

The API key never enters a widget or a setting: it comes from an environment variable only
(``OPENAI_API_KEY`` or the variable *named* in ``api_key_env``). ComfyUI's settings file is plain text on
disk and served over HTTP, so the frontend's settings hold only the LLM base URL and model
(:data:`SETTING_BASE_URL`, :data:`SETTING_MODEL`), which this node uses where its widget is empty.
"""

from __future__ import annotations

import json
import logging
import os

from comfy_api.latest import io

from ..fdta_core.errors import ConfigError
from ..fdta_core.plan import IdentityPlan as PlanRecord
from ..fdta_core.plan import parse_repair, repair_plan
from ..fdta_core.prompts.llm import DEFAULT_ENV_VAR, POLICIES, LLMSettings, describe_plan, resolve_api_key
from ..fdta_core.prompts.planner import build_plan, plan_preview
from ..fdta_core.prompts.spec import default_spec_text, parse_spec
from ._common import (
    CATEGORY,
    IdentityPlan,
    bool_input,
    combo_input,
    float_input,
    int_input,
    node_errors,
    progress_callback,
    seed_input,
)
from ._validation import FDTANode, PromptGraph, check_widgets, validate

log = logging.getLogger("FDTA")

#: ComfyUI settings registered by the frontend extension (web/js/fdta.js): defaults of empty widgets.
SETTING_BASE_URL = "FDTA.LLM.BaseURL"
SETTING_MODEL = "FDTA.LLM.Model"
#: Used when both the model widget and the setting are empty.
DEFAULT_MODEL = "gpt-4o-mini"
#: An API key stored here by earlier versions is ignored (and reported once): settings are plain text.
LEGACY_KEY_SETTING = "FDTA.LLM.APIKey"
_AREA = f"{CATEGORY}/attributes"
_warned_legacy_key = False


def comfy_setting(setting_id: str) -> str | None:
    """A text setting of ComfyUI's default user (``<user directory>/default/comfy.settings.json``), if set."""
    try:
        import folder_paths

        path = os.path.join(folder_paths.get_user_directory(), "default", "comfy.settings.json")
        with open(path, encoding="utf-8") as f:
            value = json.load(f).get(setting_id)
    except (OSError, ValueError, AttributeError):
        return None
    return value.strip() if isinstance(value, str) and value.strip() else None


def llm_endpoint(base_url: str, model: str) -> tuple[str | None, str]:
    """``(base_url or None for OpenAI, model)``: the widget when filled, else the ComfyUI setting, else
    OpenAI and :data:`DEFAULT_MODEL`."""
    url = (base_url or "").strip() or comfy_setting(SETTING_BASE_URL)
    name = (model or "").strip() or comfy_setting(SETTING_MODEL) or DEFAULT_MODEL
    return url or None, name


def _warn_legacy_key() -> None:
    global _warned_legacy_key
    if not _warned_legacy_key and comfy_setting(LEGACY_KEY_SETTING):
        _warned_legacy_key = True
        log.warning(
            "[FDTA] the ComfyUI setting %s holds an API key; it is ignored (settings are plain text on disk and "
            "served over HTTP). Put the key in the environment variable named by api_key_env and delete the "
            "setting.",
            LEGACY_KEY_SETTING,
        )


def llm_cache_dir() -> str:
    """``$FDTA_CACHE_DIR/llm``, else ``<ComfyUI user directory>/fdta_cache/llm`` (outside the
    per-user folders that ComfyUI serves over HTTP)."""
    env = os.environ.get("FDTA_CACHE_DIR")
    if env:
        return os.path.join(env, "llm")
    import folder_paths

    return os.path.join(folder_paths.get_user_directory(), "fdta_cache", "llm")


def check_spec(values: dict, graph: PromptGraph | None) -> None:
    """The spec parses (errors name the bad entry), so a typo is refused before any node runs."""
    if isinstance(values.get("spec"), str):
        parse_spec(values["spec"], source="spec")
    if isinstance(values.get("repair"), str):
        parse_repair(values["repair"])


class FDTAAttributeSpec(FDTANode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FDTAAttributeSpec",
            display_name="FDTA Attribute Spec",
            category=_AREA,
            description=(
                "Plans the identities [identity_start, identity_start + identity_count) of a run: each gets "
                "stratified attributes (gender, race, age, eyes, eyebrows, nose, face shape, lips, hair, "
                "jawline, cheeks, expression) and an SD 1.5 prompt that fits CLIP's 77-token window. "
                "The same spec and seed always give the same identities, however the run is chunked, and "
                "every prefix of the run matches the requested proportions to within one identity."
            ),
            inputs=[
                io.String.Input(
                    "spec",
                    multiline=True,
                    dynamic_prompts=False,  # the frontend must never rewrite {...} in the JSON
                    default=default_spec_text(),
                    tooltip="Attribute spec as JSON: per field a list of values (equal shares) or value -> "
                    "weight, an optional phrase template, age as a range with a distribution or bins, and "
                    "prompt prefix/suffix/negative. Errors name the bad entry.",
                ),
                int_input(
                    "identity_start",
                    0,
                    0,
                    2**31 - 1,
                    "Index of the first identity of this chunk (the runner sets it per chunk).",
                ),
                int_input("identity_count", 8, 1, 100000, "Number of identities in this chunk."),
                seed_input(
                    "Run seed: every attribute and prompt derives from it and the identity index. "
                    "Keep it fixed for a whole run.",
                ),
                io.String.Input(
                    "repair",
                    default="",
                    optional=True,
                    tooltip="Empty for a normal chunk. 'ROUND: ID, ID, ...' (e.g. '1: 3, 7') regenerates only "
                    "those identities of the chunk, with that round's new ACG seeds, and the dataset writer adds "
                    "them to the chunk already written. The writer names the missing identities and the value "
                    "to put here; fdta run does it by itself (--repair-rounds).",
                ),
            ],
            outputs=[
                IdentityPlan.Output(
                    display_name="plan", tooltip="Identities of this chunk with attributes and prompts."
                ),
                io.String.Output(
                    display_name="preview", tooltip="Readable summary: achieved proportions and prompts."
                ),
            ],
        )

    @classmethod
    def check_inputs(cls, values: dict, graph: PromptGraph | None = None) -> None:
        """Queue-time checks of literal widget values (nodes/_validation.py)."""
        check_widgets(cls, values)
        check_spec(values, graph)

    @classmethod
    def validate_inputs(cls, spec=None, repair=None) -> bool | str:
        return validate(cls, locals())

    @classmethod
    def execute(
        cls, spec: str, identity_start: int, identity_count: int, seed: int, repair: str = ""
    ) -> io.NodeOutput:
        with node_errors("FDTAAttributeSpec"):
            request = parse_repair(repair)
            parsed = parse_spec(spec, source="spec")
            plan = build_plan(
                parsed,
                int(identity_start),
                int(identity_count),
                int(seed),
                progress=progress_callback(identity_count),
            )
            if request is not None:
                plan = repair_plan(plan, request)
            preview = plan_preview(plan)
        return io.NodeOutput(plan, preview)


class FDTAAttributePrompt(FDTANode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FDTAAttributePrompt",
            display_name="FDTA Attribute Prompt (LLM)",
            category=_AREA,
            description=(
                "Optionally lets ChatGPT or any OpenAI-compatible server (Ollama, vLLM, LM Studio via "
                "base_url) write each identity's 12-field description from its attributes, several "
                "identities per request, with structured JSON output, a disk cache (reruns cost nothing), "
                "retries and a failure policy. The API key comes from an environment variable (default "
                "OPENAI_API_KEY) or ComfyUI's settings, never from a widget. With use_llm off the plan "
                "passes through with its grammar prompts."
            ),
            inputs=[
                IdentityPlan.Input("plan", tooltip="Plan from FDTA Attribute Spec."),
                bool_input("use_llm", False, "Ask the LLM; off = keep the grammar prompts."),
                io.String.Input(
                    "base_url",
                    default="",
                    tooltip="OpenAI-compatible base URL, e.g. http://127.0.0.1:11434/v1 for Ollama; empty = the "
                    "setting FDTA > LLM > Base URL, else OpenAI.",
                ),
                io.String.Input(
                    "model",
                    default="",
                    tooltip=f"Model name on that server; empty = the setting FDTA > LLM > Model, else {DEFAULT_MODEL}.",
                ),
                float_input(
                    "temperature", 0.7, 0.0, 2.0, 0.05, "Sampling temperature (part of the cache key)."
                ),
                int_input("batch_size", 8, 1, 64, "Identities described per request."),
                int_input(
                    "concurrency",
                    1,
                    1,
                    32,
                    "Requests in flight at once (results do not depend on it). Raise it for a local "
                    "server or a high rate limit.",
                ),
                combo_input(
                    "failure_policy",
                    list(POLICIES),
                    "fallback",
                    "When the LLM still fails after retries: 'fallback' keeps the grammar prompt "
                    "(recorded as prompt_source llm-fallback); 'error' stops the prompt with a clear error.",
                ),
                bool_input("use_cache", True, "Reuse cached descriptions (never contains the key)."),
                io.String.Input(
                    "api_key_env",
                    default=DEFAULT_ENV_VAR,
                    tooltip="NAME of the environment variable that holds the key (not the key itself), set "
                    "before ComfyUI starts. The key is read from the environment only: a widget would save it "
                    "in the workflow, and ComfyUI's settings file is plain text on disk.",
                ),
            ],
            outputs=[
                IdentityPlan.Output(
                    display_name="plan", tooltip="The plan with LLM-written prompts where available."
                ),
                io.String.Output(
                    display_name="preview",
                    tooltip="Readable summary incl. how many prompts came from the LLM.",
                ),
            ],
        )

    @classmethod
    def validate_inputs(cls, failure_policy=None) -> bool | str:
        return validate(cls, locals())

    @classmethod
    def execute(
        cls,
        plan: PlanRecord,
        use_llm: bool,
        base_url: str,
        model: str,
        temperature: float,
        batch_size: int,
        concurrency: int,
        failure_policy: str,
        use_cache: bool,
        api_key_env: str,
    ) -> io.NodeOutput:
        with node_errors("FDTAAttributePrompt"):
            if not isinstance(plan, PlanRecord):
                raise ConfigError(
                    "the plan input is not an FDTA identity plan",
                    where="plan",
                    fix="connect FDTA Attribute Spec.",
                )
            if use_llm:
                name = (api_key_env or DEFAULT_ENV_VAR).strip()
                if not _looks_like_env_name(name):
                    raise ConfigError(
                        "api_key_env must be the NAME of an environment variable in UPPER_CASE",
                        where="api_key_env",
                        fix="put the key in an environment variable such as OPENAI_API_KEY and enter only that name "
                        "(a key typed here would be saved in the workflow).",
                    )
                url, model_name = llm_endpoint(base_url, model)
                settings = LLMSettings(
                    model=model_name,
                    base_url=url,
                    temperature=float(temperature),
                    batch_size=int(batch_size),
                    concurrency=int(concurrency),
                    failure_policy=failure_policy,
                    use_cache=bool(use_cache),
                    cache_dir=llm_cache_dir(),
                )
                _warn_legacy_key()
                key = resolve_api_key(name)
                plan = describe_plan(plan, settings, api_key=key, progress=progress_callback(plan.count))
            preview = plan_preview(plan)
        return io.NodeOutput(plan, preview)


def _looks_like_env_name(name: str) -> bool:
    return (
        bool(name)
        and len(name) <= 64
        and name.replace("_", "").isalnum()
        and name.isupper()
        and not name[0].isdigit()
    )


NODES = [FDTAAttributeSpec, FDTAAttributePrompt]
