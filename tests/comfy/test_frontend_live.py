"""The frontend extension against a real ComfyUI: the pack's /fdta routes (and that no path leaves the
output folder), the LLM settings, and — in headless Chromium — the real frontend with the shipped
workflows, the attribute editor and the run panel during a run. Screenshots land in
``test-artifacts/screenshots/`` (see tests/comfy/browser.py)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fdta_core.cli import main as fdta
from fdta_core.prompts.spec import default_spec_text, parse_spec
from tests.comfy.browser import chromium_page
from tests.comfy.harness import REPO, ComfyServer

WORKFLOWS = REPO / "workflows"
#: The two data-set workflows of the FDTA paper.
DATASET_WORKFLOWS = ("syn_ms1m.json", "syn_mpie.json")
PACK = "browser_tiny_pack"


def _get(comfy: ComfyServer, path: str) -> tuple[int, bytes]:
    """GET a raw path (sent as is: no client-side normalisation of ``..``)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", comfy.port, timeout=60)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def _post(comfy: ComfyServer, path: str, payload) -> tuple[int, dict]:
    req = urllib.request.Request(
        comfy.url + path, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


# ------------------------------------------------------------------------------------------ routes
def test_spec_routes_use_the_node_s_parser_and_planner(comfy: ComfyServer) -> None:
    spec = json.loads(default_spec_text())
    spec["fields"]["nose"]["values"][2] = "narrow: long"
    status, out = _post(comfy, "/api/fdta/spec/validate", {"spec": json.dumps(spec)})
    assert status == 200 and out["ok"] is False
    assert out["errors"][0]["where"] == "spec.fields.nose.values[2]" and out["errors"][0]["fix"]
    status, out = _post(comfy, "/fdta/spec/preview", {"spec": default_spec_text(), "seed": 4, "count": 3})
    assert status == 200 and out["ok"] and out["hash"] == parse_spec(default_spec_text()).hash
    assert [i["index"] for i in out["identities"]] == [0, 1, 2]
    assert all(i["prompt"].startswith("RAW photo") for i in out["identities"])
    status, _ = _post(comfy, "/fdta/spec/preview", ["not", "an", "object"])
    assert status == 400


def test_routes_refuse_paths_that_leave_the_output_folder(comfy: ComfyServer, tmp_path: Path) -> None:
    out = comfy.output_dir
    (out / "fdta_routes").mkdir(parents=True, exist_ok=True)
    (out / "fdta_routes" / "ok.json").write_text('{"fine": true}')
    secret = comfy.base / "secret_outside.json"
    secret.write_text('{"secret": 1}')
    link = out / "fdta_routes" / "leak.json"
    if not link.is_symlink():
        link.symlink_to(secret)
    dlink = out / "fdta_routes" / "up"
    if not dlink.is_symlink():
        dlink.symlink_to(comfy.base, target_is_directory=True)
    bad = [
        "/fdta/file?path=" + urllib.parse.quote("../secret_outside.json"),
        "/fdta/file?path=" + urllib.parse.quote(str(secret)),
        "/fdta/file?path=" + urllib.parse.quote("fdta_routes/leak.json"),
        "/fdta/file?path=" + urllib.parse.quote("fdta_routes/up/secret_outside.json"),
        "/fdta/output/..%2Fsecret_outside.json",
        "/fdta/output/fdta_routes/leak.json",
        "/fdta/output/fdta_routes/up/secret_outside.json",
        "/fdta/output/%2Fetc%2Fpasswd",
        "/api/fdta/output/..%2F..%2Fetc%2Fpasswd",
        "/fdta/chunk?path=" + urllib.parse.quote("../"),
        "/fdta/chunk?path=" + urllib.parse.quote("/etc"),
        "/fdta/chunk?path=fdta_routes/up",
    ]
    for path in bad:
        status, body = _get(comfy, path)
        assert status == 400, (path, status, body[:200])
        assert b"secret" not in body or b"secret_outside" in body  # the name may be echoed, never the content
        assert b'"secret": 1' not in body
    status, body = _get(comfy, "/fdta/output/fdta_routes/ok.json")
    assert status == 200 and json.loads(body) == {"fine": True}
    status, body = _get(comfy, "/fdta/file?path=fdta_routes/missing.json")
    assert status == 404
    status, body = _get(comfy, "/fdta/datasets")
    assert status == 200 and "datasets" in json.loads(body)


def test_llm_settings_are_defaults_of_empty_widgets(comfy: ComfyServer) -> None:
    """Settings FDTA.LLM.BaseURL / Model (as the frontend stores them) fill the node's empty widgets; a
    filled widget wins; an API key stored as a setting is ignored."""
    from tests.chat_server import ChatServer
    from tests.comfy.conftest import LIVE_KEY_ENV

    def put(setting: str, value: str) -> None:
        req = urllib.request.Request(
            f"{comfy.url}/settings/{setting}", data=json.dumps(value).encode(), method="POST"
        )
        urllib.request.urlopen(req, timeout=30).read()

    def graph(seed: int, **kw) -> dict:
        inputs = {"plan": ["1", 0], "use_llm": True, "base_url": "", "model": "", "temperature": 0.7,
                  "batch_size": 2, "concurrency": 1, "failure_policy": "fallback", "use_cache": False,
                  "api_key_env": LIVE_KEY_ENV, **kw}  # fmt: skip
        return {
            "1": {"class_type": "FDTAAttributeSpec",
                  "inputs": {"spec": default_spec_text(), "identity_start": 0, "identity_count": 2, "seed": seed}},
            "2": {"class_type": "FDTAAttributePrompt", "inputs": inputs},
            "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 1]}},
        }  # fmt: skip

    with ChatServer() as server:
        put("FDTA.LLM.BaseURL", server.base_url)
        put("FDTA.LLM.Model", "model-from-settings")
        put("FDTA.LLM.APIKey", "sk-settings-key-must-be-ignored")
        try:
            comfy.run(graph(101))
            first = list(server.requests)
            comfy.run(graph(102, model="model-from-widget"))
            later = server.requests[len(first) :]
        finally:
            put("FDTA.LLM.BaseURL", "")
            put("FDTA.LLM.Model", "")
            put("FDTA.LLM.APIKey", "")
    assert first, "the node did not use the base URL from the settings"
    assert {r["body"]["model"] for r in first} == {"model-from-settings"}
    assert later and {r["body"]["model"] for r in later} == {"model-from-widget"}
    assert {r["auth"] for r in first + later} == {f"Bearer {comfy.env[LIVE_KEY_ENV]}"}, (
        "key: environment only"
    )
    assert "ignored" in comfy.log_text() and "sk-settings-key" not in comfy.log_text()


# ------------------------------------------------------------------------------------------ browser
def _settle_new_user(comfy: ComfyServer) -> None:
    """No first-run template dialog over the canvas."""
    req = urllib.request.Request(f"{comfy.url}/settings/Comfy.TutorialCompleted", data=b"true", method="POST")
    urllib.request.urlopen(req, timeout=30).read()


def _fdta_page_errors(page) -> list[str]:
    return [e for e in page.errors if "ComfyUI-FDTA" in e or "fdta" in e.lower()] + [
        c for c in page.console if c.startswith("error") and "/extensions/ComfyUI-FDTA/" in c
    ]


LOAD_WORKFLOW = """async (wf) => {
  await window.app.loadGraphData(wf, true, true, "fdta-test");
  await new Promise((r) => setTimeout(r, 500));
  const nodes = window.app.graph._nodes.map((n) => ({
    id: n.id, type: n.type, registered: !!LiteGraph.registered_node_types[n.type],
    widgets: (n.widgets || []).filter((w) => w.serialize !== false).map((w) => w.name),
  }));
  const missingDialog = !!document.querySelector(".comfy-missing-nodes");
  return { nodes, missingDialog, serialized: window.app.graph.serialize() };
}"""


@pytest.mark.slow
def test_dataset_workflows_load_without_warnings(comfy: ComfyServer) -> None:
    _settle_new_user(comfy)
    info = comfy.object_info()
    with chromium_page(comfy.url) as page:
        page.open_comfyui()
        for name in DATASET_WORKFLOWS:
            wf = json.loads((WORKFLOWS / name).read_text())
            before = len(page.console)
            out = page.js(LOAD_WORKFLOW, wf)
            assert not out["missingDialog"], f"{name}: missing-node dialog"
            unregistered = [n["type"] for n in out["nodes"] if not n["registered"]]
            assert not unregistered, f"{name}: unknown node types {unregistered}"
            saved = {n["id"]: n for n in wf["nodes"]}
            loaded = {n["id"]: n for n in out["serialized"]["nodes"]}
            for nid, node in saved.items():
                if "widgets_values" not in node:
                    continue
                got = loaded[nid].get("widgets_values")
                want = node["widgets_values"]
                # no value moved to another widget; a widget the file predates may follow (below)
                assert got[: len(want)] == want, f"{name}: node {nid} {node['type']} widget values moved"
            for n in out["nodes"]:
                if not n["type"].startswith("FDTA"):
                    continue
                n_saved = len(saved[n["id"]].get("widgets_values", []))
                assert n_saved <= len(n["widgets"]), f"{name}: {n['type']} has values for missing widgets"
                # widgets newer than the file must be optional inputs, loaded with their defaults
                decl = info[n["type"]]["input"]
                for k, widget in enumerate(n["widgets"][n_saved:], start=n_saved):
                    opt = decl.get("optional", {}).get(widget)
                    assert opt is not None, f"{name}: {n['type']}.{widget} is required but not in the file"
                    value = loaded[n["id"]]["widgets_values"][k]
                    assert value == opt[1].get("default"), (name, n["type"], widget, value)
            logged = [c for c in page.console[before:] if "widget" in c.lower() or "missing" in c.lower()]
            assert not logged, f"{name}: {logged}"
            page.js("() => window.app.canvas.ds && (window.app.canvas.ds.scale = 0.55)")
            page.screenshot(f"workflow_{Path(name).stem}")
        # the LLM settings are registered (Settings > FDTA), saying where the key goes
        page.js("() => app.extensionManager.command.execute('Comfy.ShowSettingsDialog')")
        page.page.get_by_text("FDTA", exact=True).last.click()
        page.page.get_by_text("LLM base URL", exact=False).first.wait_for(timeout=30_000)
        page.page.wait_for_timeout(300)
        page.screenshot("settings_fdta")
        dialog_text = page.js("() => document.body.innerText")
        assert "LLM model" in dialog_text and "environment" in dialog_text
        assert not _fdta_page_errors(page), _fdta_page_errors(page)


@pytest.mark.slow
def test_attribute_editor_edits_the_widget_json(comfy: ComfyServer) -> None:
    _settle_new_user(comfy)
    wf = json.loads((WORKFLOWS / "syn_ms1m.json").read_text())
    with chromium_page(comfy.url) as page:
        page.open_comfyui()
        page.js(LOAD_WORKFLOW, wf)
        info = page.js(
            """() => { const n = app.graph._nodes.find((x) => x.type === 'FDTAAttributeSpec');
              return { id: n.id, spec: n.widgets.find((w) => w.name === 'spec').value,
                       button: n.widgets.some((w) => w.type === 'button' && w.serialize === false),
                       inPrompt: false } }"""
        )
        assert info["button"], "no 'Open attribute editor' button on the node"
        original = info["spec"]
        # the node's button opens the editor of that node
        page.js(
            """() => { const n = app.graph._nodes.find((x) => x.type === 'FDTAAttributeSpec');
              n.widgets.find((w) => w.type === 'button').callback() }"""
        )
        editor = page.page.get_by_test_id("fdta-attribute-editor")
        editor.wait_for(state="visible", timeout=30_000)
        page.page.get_by_test_id("fdta-editor-status").filter(has_text="valid").wait_for(timeout=60_000)
        # open and apply without a change: the text stays byte for byte
        page.page.get_by_test_id("fdta-editor-apply").click()
        editor.wait_for(state="detached", timeout=10_000)
        assert (
            page.js(
                "() => app.graph._nodes.find((x) => x.type === 'FDTAAttributeSpec').widgets.find((w) => w.name === 'spec').value"
            )
            == original
        )

        # the command opens it too (the selected, else the first FDTAAttributeSpec node)
        page.js("() => app.extensionManager.command.execute('FDTA.OpenAttributeEditor')")
        editor.wait_for(state="visible", timeout=30_000)
        prompts = page.page.get_by_test_id("fdta-preview-prompt")
        prompts.first.wait_for(timeout=60_000)
        assert prompts.count() >= 1 and prompts.first.inner_text().startswith("RAW photo")
        female = page.page.get_by_test_id("fdta-share-gender-female")
        female.fill("70")
        female.dispatch_event("change")
        assert page.page.get_by_test_id("fdta-share-gender-male").input_value() == "30.0"
        page.page.get_by_test_id("fdta-sum-gender").filter(has_text="100.0%").wait_for(timeout=5_000)
        race = page.page.get_by_test_id("fdta-share-race-White")
        race.fill("40")
        race.dispatch_event("change")
        page.page.get_by_test_id("fdta-sum-race").filter(has_text="100.0%").wait_for(timeout=5_000)
        page.page.get_by_test_id("fdta-editor-status").filter(has_text="valid").wait_for(timeout=60_000)
        page.page.wait_for_function(
            "() => [...document.querySelectorAll('[data-testid=fdta-preview-identity]')].length >= 6",
            timeout=30_000,
        )
        # a wrong entry is reported by the server and its row is outlined
        bad = page.page.get_by_test_id("fdta-value-eyes-1")
        bad.fill("light (brown)")
        bad.dispatch_event("change")
        page.page.get_by_test_id("fdta-editor-error-where").filter(has_text="spec.fields.eyes").wait_for(
            timeout=60_000
        )
        assert page.js("() => !!document.querySelector('[data-field=eyes].fdta-error')")
        assert page.page.get_by_test_id("fdta-editor-apply").is_disabled()
        page.screenshot("attribute_editor_error")
        bad = page.page.get_by_test_id("fdta-value-eyes-1")
        bad.fill("light brown")
        bad.dispatch_event("change")
        page.page.get_by_test_id("fdta-editor-status").filter(has_text="valid").wait_for(timeout=60_000)
        page.page.wait_for_timeout(400)
        page.screenshot("attribute_editor")
        # conditional vocabularies are tabs: give men's hair its own proportions
        page.page.get_by_test_id("fdta-tab-hair-male").click()
        short = page.page.get_by_test_id("fdta-share-hair-male-short black")
        short.fill("30")
        short.dispatch_event("change")
        page.page.get_by_test_id("fdta-sum-hair-male").filter(has_text="100.0%").wait_for(timeout=5_000)
        # age as explicit bins
        page.page.get_by_test_id("fdta-age-mode").select_option("bins")
        page.page.get_by_test_id("fdta-share-age-18-27").wait_for(timeout=5_000)
        page.page.get_by_test_id("fdta-editor-status").filter(has_text="valid").wait_for(timeout=60_000)
        page.page.get_by_test_id("fdta-field-hair").scroll_into_view_if_needed()
        page.page.wait_for_timeout(300)
        page.screenshot("attribute_editor_conditional")
        page.page.get_by_test_id("fdta-editor-apply").click()
        editor.wait_for(state="detached", timeout=10_000)
        text = page.js(
            "() => app.graph._nodes.find((x) => x.type === 'FDTAAttributeSpec').widgets.find((w) => w.name === 'spec').value"
        )
        # the prompt sent to the server holds the same text (the button is not an input)
        api_prompt = page.js("async () => (await app.graphToPrompt()).output")
    spec = json.loads(text)
    assert spec["fields"]["gender"]["values"] == {"female": 0.7, "male": 0.3}
    race = spec["fields"]["race"]["values"]
    assert race["White"] == 0.4 and abs(sum(race.values()) - 1.0) < 1e-9
    # the other races keep their relative shares (Black : Hispanic stays 2 : 1)
    assert abs(race["Black"] / race["Hispanic"] - 2.0) < 0.05
    before = json.loads(original)
    assert spec["prompt"] == before["prompt"]
    hair = spec["fields"]["hair"]
    assert hair["by"] == "gender" and hair["cases"]["female"] == before["fields"]["hair"]["cases"]["female"]
    male = hair["cases"]["male"]
    assert male["short black"] == 0.3 and abs(sum(male.values()) - 1.0) < 1e-9 and len(male) == 10
    # the age bins the uniform range made, now explicit, with the same shares (by width)
    bins = spec["fields"]["age"]["bins"]
    assert list(bins)[0] == "18-27" and list(bins)[-1] == "78-80" and "min" not in spec["fields"]["age"]
    assert parse_spec(text).age.bins == parse_spec(original).age.bins
    assert parse_spec(text).fields["gender"].weights == (7, 3)
    spec_node = next(v for v in api_prompt.values() if v["class_type"] == "FDTAAttributeSpec")
    assert spec_node["inputs"]["spec"] == text
    declared = comfy.object_info()["FDTAAttributeSpec"]["input"]
    names = set(declared.get("required", {})) | set(declared.get("optional", {}))
    assert set(spec_node["inputs"]) <= names  # the button is never an input


# ------------------------------------------------------------------------------------------ run panel
@pytest.fixture(scope="module")
def face_images(comfy: ComfyServer) -> list[str]:
    """A tiny insightface pack and eight 256x256 images of one face for its tiny detector, with more and
    more noise (within what the detector tolerates) so that their CSIM to the identity's mean differs."""
    from fdta_core.testing.faces import make_tiny_face_pack, tiny_face_image

    make_tiny_face_pack(comfy.models / "insightface", PACK)
    rng = np.random.default_rng(3)
    anchors = [(128, 96), (64, 128), (96, 128), (128, 128), (160, 96), (96, 96), (128, 160), (160, 128)]
    names = []
    for i, anchor in enumerate(anchors):
        img, _, _ = tiny_face_image(256, 256, anchor)
        img = np.clip(img.astype(np.int16) + rng.integers(0, 12 + 8 * i, img.shape), 0, 255).astype(np.uint8)
        name = f"fdta_browser_face_{i}.png"
        Image.fromarray(img).save(comfy.input_dir / name)
        names.append(name)
    return names


def _wait_or_explain(page, comfy: ComfyServer, prompts: list[str], script: str, arg) -> None:
    """Wait for ``script`` in the page; on a timeout fail with the panel's text and the prompts' history."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.page.wait_for_function(script, arg=arg, timeout=180_000, polling=50)
    except PlaywrightTimeout:
        page.screenshot("run_panel_timeout")
        panel = page.page.get_by_test_id("fdta-run-panel").inner_text()
        hist = {p: comfy.get(f"/history/{p}").get(p, {}).get("status") for p in prompts}
        pytest.fail(
            f"the run panel did not reach the state\npanel:\n{panel}\nhistory: {hist}\n{comfy.log_tail(30)}"
        )


def _widen_sidebar(page, width: int) -> None:
    """Drag the sidebar's splitter so the panel is ``width`` pixels wide (as a user would)."""
    gutter = page.page.locator(".p-splitter-gutter").first
    box = gutter.bounding_box()
    panel = page.page.get_by_test_id("fdta-run-panel").bounding_box()
    if not box or not panel:
        return
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.page.mouse.move(x, y)
    page.page.mouse.down()
    page.page.mouse.move(x + (width - panel["width"]), y, steps=8)
    page.page.mouse.up()
    page.page.mouse.move(x + 600, y + 300)  # off the gutter, so it is not drawn highlighted


def chunk_graph(names: list[str], start: int, repeat: int, output: str) -> dict:
    """Plan -> (faces) align -> CSIM filter -> dataset writer: one identity per chunk, ``len(names) *
    repeat`` images of it."""
    g: dict = {}
    for i, name in enumerate(names):
        g[f"L{i}"] = {"class_type": "LoadImage", "inputs": {"image": name}}
    prev = ["L0", 0]
    for i in range(1, len(names)):
        g[f"B{i}"] = {"class_type": "ImageBatch", "inputs": {"image1": prev, "image2": [f"L{i}", 0]}}
        prev = [f"B{i}", 0]
    g["R"] = {"class_type": "RepeatImageBatch", "inputs": {"image": prev, "amount": repeat}}
    g["S"] = {
        "class_type": "FDTAAttributeSpec",
        "inputs": {"spec": default_spec_text(), "identity_start": start, "identity_count": 1, "seed": 5},
    }
    g["S_p"] = {"class_type": "PreviewAny", "inputs": {"source": ["S", 1]}}
    g["M"] = {
        "class_type": "FDTAFaceModelLoader",
        "inputs": {"pack": PACK, "provider": "CPU", "det_size": 256, "det_threshold": 0.5},
    }
    g["A"] = {
        "class_type": "FDTAAlignFaces",
        "inputs": {
            "image": ["R", 0],
            "face_models": ["M", 0],
            "min_face_size": 32,
            "assume_aligned_112": False,
            "identity_start": start,
            "one_identity": True,
        },
    }
    g["C"] = {
        "class_type": "FDTACSIMFilter",
        "inputs": {
            "faceset": ["A", 0],
            "face_models": ["M", 0],
            "threshold": 0.5,
            "reference": "mean",
            "min_images_per_identity": 0,
            "batch_size": 4,
            "sheet_identities": 4,
        },
    }
    g["W"] = {
        "class_type": "FDTADatasetWriter",
        "inputs": {
            "faceset": ["C", 0],
            "output_name": output,
            "identity_start": start,
            "identity_count": 1,
            "overwrite": True,
        },
    }
    g["W_p"] = {"class_type": "PreviewAny", "inputs": {"source": ["W", 0]}}
    return g  # fmt: skip


@pytest.mark.slow
def test_run_panel_follows_a_queued_run(comfy: ComfyServer, face_images: list[str]) -> None:
    _settle_new_user(comfy)
    output = "fdta/browser_run"
    with chromium_page(comfy.url, width=1600, height=1000) as page:
        page.open_comfyui()
        page.js("() => app.extensionManager.command.execute('FDTA.OpenRunPanel')")
        panel = page.page.get_by_test_id("fdta-run-panel")
        panel.wait_for(state="visible", timeout=30_000)
        _widen_sidebar(page, 420)
        page.page.get_by_test_id("fdta-run-idle").wait_for(timeout=10_000)
        first = comfy.queue(chunk_graph(face_images, 0, 1, output))
        second = comfy.queue(chunk_graph(face_images, 1, 16, output))
        # mid-run: chunk 0 is written and the second chunk is being processed
        _wait_or_explain(
            page,
            comfy,
            [first, second],
            """(first) => {
              const s = document.querySelector('[data-testid=fdta-run-status]');
              const chunks = document.querySelectorAll('[data-testid=fdta-run-chunk]').length;
              const sheet = document.querySelector('[data-testid=fdta-run-sheet] img');
              return s && s.textContent === 'running' && chunks >= 1 && sheet && sheet.complete &&
                     document.querySelector('[data-testid=fdta-run-stages]') &&
                     !document.querySelector('[data-testid=fdta-run-current]').textContent.includes(first.slice(0, 8));
            }""",
            first,
        )
        mid = page.screenshot("run_panel_mid_run")
        still_running = page.js("() => document.querySelector('[data-testid=fdta-run-status]').textContent")
        comfy.wait(first, timeout=300)
        comfy.wait(second, timeout=300)
        page.page.get_by_test_id("fdta-run-status").filter(has_text="done").wait_for(timeout=60_000)
        page.page.wait_for_function(
            "() => document.querySelectorAll('[data-testid=fdta-run-chunk]').length >= 2", timeout=60_000
        )
        # merge the chunks and write the quality report: the panel links it, the route serves it
        merged = comfy.output_dir / "fdta" / "browser_merged"
        assert fdta(["rec", "merge", str(merged), str(comfy.output_dir / output)]) == 0
        assert fdta(["report", str(merged)]) == 0
        page.page.get_by_test_id("fdta-run-refresh").click()
        link = page.page.get_by_test_id("fdta-run-report").first
        link.wait_for(timeout=60_000)
        report_url = link.get_attribute("href")
        texts = {
            k: page.page.get_by_test_id(k).inner_text()
            for k in ("fdta-run-current", "fdta-run-csim", "fdta-run-datasets", "fdta-run-identities")
        }
        hist_bars = page.js("() => document.querySelectorAll('[data-testid=fdta-run-histogram] rect').length")
        sheet_ok = page.js(
            "() => { const i = document.querySelector('[data-testid=fdta-run-sheet] img'); return i.complete && i.naturalWidth > 0 }"
        )
        page.screenshot("run_panel_done")
        errors = _fdta_page_errors(page)
    assert mid.is_file() and still_running in ("running", "done")
    assert "images kept" in texts["fdta-run-current"] and "identities kept" in texts["fdta-run-current"]
    assert "2 chunks" in texts["fdta-run-csim"]
    assert "browser_run" in texts["fdta-run-datasets"] and "✓ ok" in texts["fdta-run-datasets"]
    assert "/ 1" in texts["fdta-run-identities"]
    assert hist_bars == 24 and sheet_ok
    assert not errors, errors
    # what the panel showed is what the writer committed
    from fdta_core.dataset.writer import list_chunks

    chunks = list_chunks(comfy.output_dir / output)
    assert [c.start for c in chunks] == [0, 1]
    assert report_url.endswith("/fdta/output/fdta/browser_merged/report/report.html"), report_url
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", comfy.port, timeout=60)
    conn.request("GET", urllib.parse.urlparse(report_url).path)
    r = conn.getresponse()
    body = r.read()
    conn.close()
    assert r.status == 200 and r.getheader("Content-Type", "").startswith("text/html")
    assert "default-src 'none'" in r.getheader("Content-Security-Policy", "") and b"<html" in body.lower()


# ------------------------------------------------------------------------------------------ templates
@pytest.mark.slow
def test_template_browser_shows_the_fdta_workflows_with_thumbnails(comfy: ComfyServer) -> None:
    """ComfyUI's template browser lists every shipped workflow under the pack, each with its thumbnail."""
    shipped = sorted(p.stem for p in WORKFLOWS.glob("*.json"))
    listed = comfy.get("/api/workflow_templates").get("ComfyUI-FDTA", [])
    assert sorted(listed) == shipped
    _settle_new_user(comfy)
    with chromium_page(comfy.url, width=1600, height=1000) as page:
        page.open_comfyui()
        page.js("() => app.extensionManager.command.execute('Comfy.BrowseTemplates')")
        nav = page.page.get_by_text("ComfyUI-FDTA", exact=True).first
        nav.wait_for(timeout=30_000)
        nav.click()
        page.page.wait_for_timeout(300)
        page.screenshot("template_browser")  # replaced below once the thumbnails are in
        # the frontend fetches each thumbnail and shows it as a blob: URL in an <img alt="<stem>">
        collect = """(names) => [...document.querySelectorAll('img')]
                 .filter((i) => names.includes(i.alt))
                 .map((i) => ({ name: i.alt, ok: !!i.src && i.complete && i.naturalWidth > 0 }))"""
        try:
            page.page.wait_for_function(
                """(names) => {
                  const imgs = [...document.querySelectorAll('img')].filter((i) => names.includes(i.alt));
                  // cards below the fold load lazily: the first rows must be drawn, the rest only listed
                  return imgs.length >= names.length &&
                    imgs.filter((i) => i.src && i.complete && i.naturalWidth > 0).length >= 3;
                }""",
                arg=shipped,
                timeout=60_000,
            )
        except Exception:  # noqa: BLE001 - say what the page showed
            pytest.fail(f"thumbnails did not load: {page.js(collect, shipped)}")
        page.page.wait_for_timeout(500)
        thumbs = page.js(collect, shipped)
        page.screenshot("template_browser")
    assert sum(t["ok"] for t in thumbs) >= 3, thumbs
    assert {t["name"] for t in thumbs} == set(shipped), thumbs
    for name in shipped:  # what the frontend fetches for each card
        status, body = _get(comfy, f"/api/workflow_templates/ComfyUI-FDTA/{name}.jpg")
        assert status == 200 and body[:2] == b"\xff\xd8" and len(body) > 1000, name
