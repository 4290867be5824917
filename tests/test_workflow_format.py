"""UI <-> API workflow conversion, checked on ComfyUI's own core schemas."""

from __future__ import annotations

import json

import pytest

from fdta_core.errors import ConfigError
from fdta_core.workflow import api_to_ui, ui_to_api

API = {
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15.safetensors"}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a face", "clip": ["4", 1]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
    "3": {
        "class_type": "KSampler",
        "inputs": {
            "seed": 42,
            "steps": 20,
            "cfg": 7.0,
            "sampler_name": "euler",
            "scheduler": "normal",
            "denoise": 1.0,
            "model": ["4", 0],
            "positive": ["6", 0],
            "negative": ["7", 0],
            "latent_image": ["5", 0],
        },
    },  # fmt: skip
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "fdta", "images": ["8", 0]}},
}


@pytest.fixture(scope="module")
def core_info(shared_testdata):
    path = shared_testdata.parent / "comfyui" / "core_object_info.json"
    return json.loads(path.read_text())


def test_round_trip(core_info):
    ui = api_to_ui(API, core_info)
    assert ui["version"] == 0.4 and len(ui["nodes"]) == 7 and len(ui["links"]) == 9
    ks = next(n for n in ui["nodes"] if n["type"] == "KSampler")
    assert ks["widgets_values"] == [42, "fixed", 20, 7.0, "euler", "normal", 1.0]
    assert [i["name"] for i in ks["inputs"]] == ["model", "positive", "negative", "latent_image"]
    for link in ui["links"]:  # every link is listed on both ends
        src = next(n for n in ui["nodes"] if n["id"] == link[1])
        dst = next(n for n in ui["nodes"] if n["id"] == link[3])
        assert link[0] in src["outputs"][link[2]]["links"] and dst["inputs"][link[4]]["link"] == link[0]
    assert ui_to_api(ui, core_info) == API


def test_reroute_bypass_mute_and_unknown_nodes(core_info):
    ui = api_to_ui(API, core_info)
    # put a Reroute between the decoder and SaveImage
    link = next(lk for lk in ui["links"] if lk[3] == 9)
    ui["nodes"].append({"id": 50, "type": "Reroute", "mode": 0, "inputs": [{"name": "", "type": "*", "link": 99}],
                        "outputs": [{"links": [link[0]]}]})  # fmt: skip
    ui["links"].append([99, link[1], link[2], 50, 0, "IMAGE"])
    link[1], link[2] = 50, 0
    ui["nodes"].append({"id": 60, "type": "Note", "mode": 0, "widgets_values": ["hello"]})
    api = ui_to_api(ui, core_info)
    assert api["9"]["inputs"]["images"] == ["8", 0] and "50" not in api and "60" not in api
    next(n for n in ui["nodes"] if n["id"] == 9)["mode"] = 2
    assert "9" not in ui_to_api(ui, core_info)
    bad = api_to_ui(API, core_info)
    bad["nodes"][0]["type"] = "NoSuchNode"
    with pytest.raises(ConfigError, match="not known"):
        ui_to_api(bad, core_info)


def test_force_input_strings_are_sockets_without_a_widget_value(core_info):
    """A ``forceInput`` STRING (the ACG's ``control_parameters``) has no widget in the editor: a value for
    it in ``widgets_values`` would shift every later widget when the frontend loads the file."""
    info = dict(core_info) | {
        "TakesText": {
            "input": {
                "required": {"steps": ["INT", {"default": 4}]},
                "optional": {"text": ["STRING", {"forceInput": True}], "name": ["STRING", {"default": "a"}]},
            },
            "input_order": {"required": ["steps"], "optional": ["text", "name"]},
            "output": ["STRING"],
        },
        "GivesText": {"input": {"required": {}}, "output": ["STRING"]},
    }
    api = {
        "1": {"class_type": "GivesText", "inputs": {}},
        "2": {"class_type": "TakesText", "inputs": {"steps": 3, "text": ["1", 0], "name": "b"}},
    }
    ui = api_to_ui(api, info)
    node = next(n for n in ui["nodes"] if n["type"] == "TakesText")
    assert node["widgets_values"] == [3, "b"]
    text = next(i for i in node["inputs"] if i["name"] == "text")
    assert "widget" not in text and text["link"] is not None
    assert ui_to_api(ui, info) == api
