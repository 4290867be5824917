"""Attribute nodes in a real ComfyUI: Spec -> Prompt -> PreviewAny, determinism, spec errors, and the LLM
path against a local fake chat-completions server with the key taken from the server's environment
(and found nowhere afterwards: files, log, history)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.chat_server import ChatServer
from tests.comfy.conftest import LIVE_KEY_ENV
from tests.comfy.harness import ComfyServer, node_outputs


def _graph(spec: str | None = None, *, seed: int = 3, count: int = 4, **prompt_kw) -> dict:
    spec_inputs = {"identity_start": 2, "identity_count": count, "seed": seed}
    if spec is not None:
        spec_inputs["spec"] = spec
    else:
        from fdta_core.prompts.spec import default_spec_text

        spec_inputs["spec"] = default_spec_text()
    prompt_inputs = {
        "plan": ["1", 0],
        "use_llm": False,
        "base_url": "",
        "model": "test-model",
        "temperature": 0.7,
        "batch_size": 2,
        "concurrency": 1,
        "failure_policy": "error",
        "use_cache": True,
        "api_key_env": "OPENAI_API_KEY",
        **prompt_kw,
    }
    return {
        "1": {"class_type": "FDTAAttributeSpec", "inputs": spec_inputs},
        "2": {"class_type": "FDTAAttributePrompt", "inputs": prompt_inputs},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 1]}},
        "4": {"class_type": "PreviewAny", "inputs": {"source": ["1", 1]}},
    }


def _text(entry: dict, node: str) -> str:
    return node_outputs(entry, node)["text"][0]


def _error(payload: str) -> dict:
    msgs = json.loads(payload)
    assert msgs and msgs[0][0] == "execution_error", payload
    return msgs[0][1]


def test_plan_preview_without_llm_is_deterministic(comfy: ComfyServer) -> None:
    first = comfy.run(_graph())
    text = _text(first, "3")
    assert text.startswith("FDTA identity plan: identities 2..5 (4), seed 3")
    assert "prompt source: grammar 4" in text
    assert text.count("\n#") == 4  # four prompts shown
    assert text == _text(first, "4")  # use_llm off: the plan passes through unchanged
    comfy.free()  # drop the cache so the second run really executes
    second = comfy.run(_graph())
    assert _text(second, "3") == text
    other = comfy.run(_graph(seed=4))
    assert _text(other, "3") != text


def _queue_error(payload: str, node: str) -> str:
    """A prompt refused at queue time (HTTP 400): the validation message of ``node``."""
    data = json.loads(payload)
    assert data["error"]["type"] == "prompt_outputs_failed_validation", payload
    return data["node_errors"][node]["errors"][0]["details"]


def test_invalid_spec_names_the_bad_entry(comfy: ComfyServer) -> None:
    # refused at queue time (validate_inputs), before any node runs
    msg = _queue_error(comfy.run_error(_graph('{"fields": {"eyez": ["blue"]}}')), "1")
    assert msg.startswith("spec - FDTAAttributeSpec.spec.fields.eyez:"), msg
    assert "eyes" in msg  # the fix suggests the field meant
    msg = _queue_error(comfy.run_error(_graph("{not json")), "1")
    assert msg.startswith("spec - FDTAAttributeSpec.spec"), msg


def _files_containing(root: Path, needle: bytes) -> list[str]:
    hits = []
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink():
            try:
                if needle in p.read_bytes():
                    hits.append(str(p))
            except OSError:
                pass
    return hits


def test_llm_prompts_with_key_from_environment(comfy: ComfyServer) -> None:
    key = comfy.env[LIVE_KEY_ENV]
    with ChatServer() as chat:
        graph = _graph(use_llm=True, base_url=chat.base_url, api_key_env=LIVE_KEY_ENV, seed=11)
        entry = comfy.run(graph, timeout=120)
        text = _text(entry, "3")
        assert "prompt source: llm 4" in text, text
        assert "distinct" in text  # phrases written by the fake LLM made it into the prompts
        assert chat.requests, "the LLM server was never asked"
        assert {r["auth"] for r in chat.requests} == {f"Bearer {key}"}
        n_requests = len(chat.requests)
        # a rerun after /free is served from the disk cache: same prompts, no new request
        comfy.free()
        again = comfy.run(graph, timeout=120)
        assert _text(again, "3") == text
        assert len(chat.requests) == n_requests
        # the widget holds a variable NAME; a pasted key is refused with a message naming the input
        err = _error(
            comfy.run_error(_graph(use_llm=True, base_url=chat.base_url, api_key_env="sk-pasted-1234"))
        )
        assert err["exception_message"].startswith("FDTAAttributePrompt.api_key_env:"), err
    if not os.environ.get("FDTA_CACHE_DIR"):  # the cache is inside the base dir, so the scan covers it
        assert any(p.is_file() for p in (comfy.user_dir / "fdta_cache" / "llm").rglob("*"))
    needle = key.encode()
    for sub in ("output", "user", "temp", "input"):
        assert not _files_containing(comfy.base / sub, needle), f"key leaked into {sub}/"
    assert key not in comfy.log_text()
    assert key not in json.dumps(comfy.get("/history?max_items=1000"))
    assert key not in json.dumps(comfy.get("/queue"))
