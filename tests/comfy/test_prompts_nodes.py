"""The attribute nodes inside ComfyUI's own interpreter (no server): import as part of the pack, schema
facts (seed never randomised, tooltips), execution with and without the LLM, errors, key hygiene.

Skips unless ``COMFYUI_DIR`` points at a ComfyUI checkout with an interpreter, as all of ``tests/comfy``.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.chat_server import KEY, ChatServer
from tests.comfy.harness import REPO, comfy_or_skip

SCRIPT = textwrap.dedent(
    r"""
    import asyncio, importlib, importlib.util, json, os, sys
    pack, base_url = sys.argv[1], sys.argv[2]
    sys.argv = [sys.argv[0], "--cpu"]
    sys.path.insert(0, os.getcwd())
    import comfy.options
    comfy.options.enable_args_parsing()
    spec = importlib.util.spec_from_file_location(
        "ComfyUI-FDTA", os.path.join(pack, "__init__.py"), submodule_search_locations=[pack])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["ComfyUI-FDTA"] = mod
    spec.loader.exec_module(mod)
    m = importlib.import_module("ComfyUI-FDTA.nodes.nodes_prompts")
    out = {}
    for cls in m.NODES:
        info = cls.GET_NODE_INFO_V1()
        out[info["name"]] = {"category": info["category"], "inputs": info["input"]["required"],
                             "output_tooltips": info.get("output_tooltips"), "description": info["description"]}
    r = m.FDTAAttributeSpec.execute(spec=m.default_spec_text(), identity_start=2, identity_count=4, seed=5)
    plan = r.result[0]
    out["spec_plan"] = plan.to_dict()
    args = dict(base_url="", model="m", temperature=0.7, batch_size=2, concurrency=2, failure_policy="fallback",
                use_cache=True, api_key_env="FDTA_NODE_TEST_KEY")
    r2 = m.FDTAAttributePrompt.execute(plan=plan, use_llm=False, **args)
    out["passthrough_same"] = r2.result[0] == plan
    try:
        import openai  # noqa: F401
        have_openai = True
    except ImportError:
        have_openai = False
    out["have_openai"] = have_openai
    if have_openai:
        r3 = m.FDTAAttributePrompt.execute(plan=plan, use_llm=True, **{**args, "base_url": base_url})
        out["llm_plan"] = r3.result[0].to_dict()
        out["llm_preview"] = r3.result[1]
    errors = {}
    try:
        m.FDTAAttributeSpec.execute(spec='{"fields": {"eyez": ["blue"]}}', identity_start=0, identity_count=1, seed=0)
    except Exception as exc:
        errors["spec"] = str(exc)
    try:
        m.FDTAAttributePrompt.execute(plan=plan, use_llm=True, **{**args, "api_key_env": "sk-pasted-key"})
    except Exception as exc:
        errors["api_key_env"] = str(exc)
    out["errors"] = errors
    print("RESULT" + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def comfy_python():
    return comfy_or_skip()


def test_nodes_in_comfyui_interpreter(comfy_python, tmp_path):
    root, python = comfy_python
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(
        {"FDTA_NODE_TEST_KEY": KEY, "FDTA_CACHE_DIR": str(tmp_path / "cache"), "TMPDIR": str(tmp_path)}
    )
    with ChatServer() as server:
        proc = subprocess.run(
            [str(python), "-c", SCRIPT, str(REPO), server.base_url],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        requests = list(server.requests)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT"))
    out = json.loads(line[len("RESULT") :])
    for node_id in ("FDTAAttributeSpec", "FDTAAttributePrompt"):
        node = out[node_id]
        assert node["category"] == "FDTA/attributes" and node["description"]
        assert all(decl[1].get("tooltip") for decl in node["inputs"].values())
        assert all(node["output_tooltips"])
    assert out["FDTAAttributeSpec"]["inputs"]["spec"][1]["dynamicPrompts"] is False
    seed = out["FDTAAttributeSpec"]["inputs"]["seed"][1]
    assert seed["control_after_generate"] is False and seed["max"] == 2**63 - 1
    assert "api_key" not in json.dumps(out["FDTAAttributePrompt"]["inputs"]).replace("api_key_env", "")
    plan = out["spec_plan"]
    assert [i["index"] for i in plan["identities"]] == [2, 3, 4, 5]
    assert out["passthrough_same"] is True
    assert "eyez" in out["errors"]["spec"] and "FDTAAttributeSpec" in out["errors"]["spec"]
    assert (
        "api_key_env" in out["errors"]["api_key_env"] and "sk-pasted-key" not in out["errors"]["api_key_env"]
    )
    if out["have_openai"]:
        assert all(i["prompt_source"] == "llm" for i in out["llm_plan"]["identities"])
        assert requests and all(r["auth"] == f"Bearer {KEY}" for r in requests)
        assert "llm 4" in out["llm_preview"]
        for p in Path(tmp_path).rglob("*"):
            if p.is_file():
                assert KEY.encode() not in p.read_bytes(), p
    assert KEY not in proc.stdout and KEY not in proc.stderr
