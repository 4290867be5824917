"""The pack loads in a real ComfyUI: every FDTA node is registered, documented, and nothing failed to import."""

from __future__ import annotations

import re

from tests.comfy.harness import ComfyServer
from tests.node_registry import declared_node_ids


def test_every_fdta_node_is_registered(comfy: ComfyServer) -> None:
    info = comfy.object_info()
    declared = declared_node_ids()
    assert declared, "no FDTA node declared in nodes/"
    missing = sorted(set(declared) - set(info))
    assert not missing, f"declared but not registered: {missing}\n{comfy.log_tail()}"
    assert {k for k in info if k.startswith("FDTA")} == set(declared)


def test_no_import_error_of_this_pack(comfy: ComfyServer) -> None:
    log = comfy.log_text()
    bad = [
        line
        for line in log.splitlines()
        if re.search(r"IMPORT FAILED|Cannot import|Traceback|could not be loaded", line)
        # the pack's folder, its log prefix or its library; not a bare "fdta", which also matches a ComfyUI
        # unpacked under .fdta/ (as .ci/run does) reporting its own optional modules
        and ("ComfyUI-FDTA" in line or "[FDTA]" in line or "fdta_core" in line)
    ]
    assert not bad, "\n".join(bad)
    assert "[FDTA] loaded" in log


def test_nodes_are_documented_and_categorised(comfy: ComfyServer) -> None:
    info = comfy.object_info()
    for node_id in declared_node_ids():
        spec = info[node_id]
        assert spec["category"].startswith("FDTA/"), node_id
        assert spec.get("description"), f"{node_id} has no description"
        for section in ("required", "optional"):
            for name, decl in spec["input"].get(section, {}).items():
                opts = decl[1] if len(decl) > 1 else {}
                assert opts.get("tooltip"), f"{node_id}.{name} has no tooltip"
        tips = spec.get("output_tooltips") or []
        assert len(tips) == len(spec["output"]) and all(tips), f"{node_id} outputs need tooltips"


def test_frontend_extension_and_its_imports_are_served(comfy: ComfyServer) -> None:
    """The browser loads every script the server lists under /extensions, and each relative import in
    it resolves against the script's own URL: a wrong number of ``../`` 404s in the browser only."""
    import urllib.parse
    import urllib.request

    scripts = [s for s in comfy.get("/extensions") if "/ComfyUI-FDTA/" in s]
    assert scripts, "the pack's web/ folder is not served"
    for script in scripts:
        url = urllib.parse.urljoin(comfy.url + "/", script.lstrip("/"))
        with urllib.request.urlopen(url, timeout=30) as r:
            assert r.status == 200
            source = r.read().decode()
        imports = re.findall(r"""^\s*import\s[^;]*?from\s+["']([^"']+)["']""", source, re.M)
        for spec in imports:
            if not spec.startswith("."):
                continue
            target = urllib.parse.urljoin(url, spec)
            with urllib.request.urlopen(target, timeout=30) as r:  # raises HTTPError on 404
                assert r.status == 200, target


def test_two_onnxruntime_builds_are_reported_once(comfy: ComfyServer) -> None:
    """ComfyUI's Python with onnxruntime and onnxruntime-gpu side by side gets one warning at load that
    says which to uninstall; with one build, no warning."""
    import subprocess

    from fdta_core.faces.providers import ORT_DISTRIBUTIONS

    probe = (
        "from importlib import metadata\n"
        f"names = {list(ORT_DISTRIBUTIONS)!r}\n"
        "found = []\n"
        "for n in names:\n"
        "    try:\n"
        "        metadata.distribution(n)\n"
        "    except metadata.PackageNotFoundError:\n"
        "        continue\n"
        "    found.append(n)\n"
        "print(','.join(found))\n"
    )
    out = subprocess.run([str(comfy.python), "-c", probe], capture_output=True, text=True, check=True)
    builds = [b for b in out.stdout.strip().split(",") if b]
    warnings = [line for line in comfy.log_text().splitlines() if "[FDTA] both" in line]
    if len(builds) >= 2:
        assert len(warnings) == 1, warnings
        assert "pip uninstall -y" in warnings[0]
    else:
        assert warnings == []
