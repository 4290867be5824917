"""Errors of FDTA nodes reach the user as ComfyUI execution errors whose message starts with the node id
(spot checks across areas)."""

from __future__ import annotations

import json

import pytest

from tests.comfy.harness import ComfyServer

CASES = {
    "FDTAAttributeSpec": (
        {"spec": '{"fields": {"gender": {"values": {"female": -1}}}}', "identity_start": 0,
         "identity_count": 2, "seed": 0},
        "FDTAAttributeSpec.spec",
    ),
    "FDTATrainerLauncher": (
        {"action": "status", "run_name": "fdta/../../escape", "preset": "tiny", "dataset_dir": "",
         "network": "preset", "loss": "preset", "epochs": 0, "batch_size": 0, "gpus": 1, "device": "cpu",
         "val_bins": "", "overrides": "{}"},
        "FDTATrainerLauncher.run_name: 'fdta/../../escape' contains '..'",
    ),
    "FDTAVerify": (
        {"model": "no_such_model.pt", "bins": "", "batch_size": 8},
        "FDTAVerify.model: 'no_such_model.pt' not found in",
    ),
}  # fmt: skip


@pytest.mark.parametrize("node_id", sorted(CASES))
def test_error_message_starts_with_node_id(comfy: ComfyServer, node_id: str) -> None:
    inputs, prefix = CASES[node_id]
    graph = {"7": {"class_type": node_id, "inputs": inputs}}
    if node_id == "FDTAAttributeSpec":  # not an output node: something must consume it
        graph["8"] = {"class_type": "PreviewAny", "inputs": {"source": ["7", 1]}}
    msgs = json.loads(comfy.run_error(graph))
    if "node_errors" in msgs:  # refused at queue time (validate_inputs): the same message, HTTP 400
        details = msgs["node_errors"]["7"]["errors"][0]["details"]
        assert details.split(" - ", 1)[1].startswith(prefix), details
        assert "Fix:" in details
        return
    kind, data = msgs[0]
    assert kind == "execution_error"
    assert data["node_type"] == node_id and data["node_id"] == "7"
    assert data["exception_message"].startswith(prefix), data["exception_message"]
    assert "Fix:" in data["exception_message"] or node_id == "FDTAVerify"
