"""The pack's server side for its frontend extension (``web/js``): HTTP routes under ``/fdta/`` and the
``fdta.progress`` events the run panel listens to.

Routes are thin: each parses the request, calls ``fdta_core`` (the spec parser and planner the
``FDTAAttributeSpec`` node uses; the read-only views of :mod:`fdta_core.dataset.browse`) in a worker
thread, and returns JSON. Paths sent by the browser are relative to ComfyUI's output folder; one that
leaves it (``..``, an absolute path, a symlink pointing out) is answered with HTTP 400.

Events: :func:`send_event` is the one place that talks to ``PromptServer.send_sync``; nodes call it
through :func:`stage_progress` (wired into every FDTA progress callback) and with the payloads
:mod:`fdta_core.events` builds. Outside a server (unit tests, the CLI) it does nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from typing import Any

from ..fdta_core.dataset.browse import chunk_info, list_datasets, servable_file
from ..fdta_core.errors import FDTAError
from ..fdta_core.prompts.studio import preview_spec, validate_spec_text

log = logging.getLogger("FDTA")

#: The one event type of the pack (payload ``kind`` says which update it is).
EVENT = "fdta.progress"
#: Route prefix (ComfyUI mirrors every route under ``/api`` too).
PREFIX = "/fdta"
_MAX_BODY = 1 << 20
_registered = False
_throttle: dict[tuple[str, str], float] = {}
_throttle_lock = threading.Lock()


# ------------------------------------------------------------------------------------------- events
def _server():
    try:
        from server import PromptServer
    except ImportError:  # not inside ComfyUI
        return None
    return getattr(PromptServer, "instance", None)


def _context() -> tuple[str | None, str | None]:
    """``(prompt_id, node_id)`` of the node ComfyUI is executing in this thread (a context variable)."""
    try:
        from comfy_execution.utils import get_executing_context
    except ImportError:
        return None, None
    ctx = get_executing_context()
    return (None, None) if ctx is None else (ctx.prompt_id, str(ctx.node_id))


_class_types: dict[tuple[str, str], str | None] = {}


def running_node() -> tuple[str | None, str | None, str | None]:
    """``(prompt_id, node_id, class_type)`` of the node ComfyUI is executing in this thread, if any."""
    prompt_id, node_id = _context()
    if prompt_id is None or node_id is None:
        return prompt_id, node_id, None
    key = (prompt_id, node_id)
    if key in _class_types:
        return prompt_id, node_id, _class_types[key]
    class_type = None
    try:
        running, _ = _server().prompt_queue.get_current_queue_volatile()
        for item in running:
            if item[1] == prompt_id:
                class_type = item[2].get(node_id, {}).get("class_type")
                break
    except Exception:  # noqa: BLE001 - a label for the panel only; never fail a node over it
        class_type = None
    if len(_class_types) > 1024:
        _class_types.clear()
    _class_types[key] = class_type
    return prompt_id, node_id, class_type


def send_event(kind: str, payload: dict[str, Any]) -> None:
    """Broadcast ``{"kind": kind, "prompt_id", "node", "class_type", "time", **payload}`` as ``fdta.progress``."""
    srv = _server()
    if srv is None:
        return
    prompt_id, node_id, class_type = running_node()
    data = {
        "kind": kind,
        "prompt_id": prompt_id,
        "node": node_id,
        "class_type": class_type,
        "time": time.time(),
        **payload,
    }
    try:
        srv.send_sync(EVENT, data)
    except Exception as exc:  # noqa: BLE001 - a closed event loop must not fail a run
        log.debug("[FDTA] progress event not sent: %s", exc)


def stage_progress(done: int, total: int, *, min_interval: float = 0.25) -> None:
    """Send the running node's progress (at most every ``min_interval`` seconds, always the last step)."""
    if _server() is None:
        return
    prompt_id, node_id = _context()
    key = (str(prompt_id), str(node_id))
    now = time.monotonic()
    with _throttle_lock:
        last = _throttle.get(key, 0.0)
        if done < total and now - last < min_interval:
            return
        _throttle[key] = now
        if len(_throttle) > 512:
            _throttle.clear()
    send_event("stage", {"done": int(done), "total": int(total)})


def save_panel_image(array, name: str) -> dict[str, str] | None:
    """Save an HxWx3 uint8 image into ComfyUI's temp folder for the run panel; returns what ``/view``
    needs (``filename``, ``subfolder``, ``type``), or None outside ComfyUI."""
    try:
        import folder_paths
        from PIL import Image
    except ImportError:
        return None
    sub = "fdta_panel"
    folder = os.path.join(folder_paths.get_temp_directory(), sub)
    os.makedirs(folder, exist_ok=True)
    filename = f"{name}.png"
    tmp = os.path.join(folder, f".{filename}.tmp")
    Image.fromarray(array).save(tmp, format="PNG")
    os.replace(tmp, os.path.join(folder, filename))
    return {"filename": filename, "subfolder": sub, "type": "temp"}


def panel_report_csim(stats: Any, sheet=None) -> None:
    """After the CSIM filter: kept/dropped counts, the histogram and the contact sheet for the panel."""
    if _server() is None:
        return
    from ..fdta_core.events import csim_event

    payload = csim_event(stats)
    if sheet is not None:
        prompt_id, node_id, _ = running_node()
        try:
            payload["contact_sheet"] = save_panel_image(sheet, f"sheet_{prompt_id or 'x'}_{node_id or 'x'}")
        except (OSError, ValueError) as exc:
            log.debug("[FDTA] contact sheet for the panel not saved: %s", exc)
    send_event("csim", payload)


def panel_report_chunk(dataset: str, info: Any) -> None:
    """After the writer committed a chunk: which one, so the panel refreshes its list of chunks."""
    if _server() is None:
        return
    from ..fdta_core.events import chunk_event

    send_event("chunk", chunk_event(dataset, info, _output_root()))


# ------------------------------------------------------------------------------------------- routes
def _output_root() -> str:
    import folder_paths

    return folder_paths.get_output_directory()


def _json_error(status: int, message: str, where: str = "", fix: str = ""):
    from aiohttp import web

    return web.json_response({"error": message, "where": where, "fix": fix}, status=status)


async def _body(request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > _MAX_BODY:
        raise ValueError("request body over 1 MiB")
    raw = await request.read()
    if len(raw) > _MAX_BODY:
        raise ValueError("request body over 1 MiB")
    data = json.loads(raw or b"{}")
    if not isinstance(data, dict):
        raise ValueError("the body must be a JSON object")
    return data


async def _guarded(fn, *args, **kwargs):
    """Run ``fn`` in a thread; FDTA input errors become 400, a missing file 404."""
    from aiohttp import web

    try:
        result = await asyncio.to_thread(fn, *args, **kwargs)
    except FDTAError as exc:
        return _json_error(400, exc.message, exc.where or "", exc.fix or "")
    except FileNotFoundError as exc:
        return _json_error(404, str(exc))
    return web.json_response(result) if not isinstance(result, web.StreamResponse) else result


def register_routes() -> None:
    """Add the ``/fdta/...`` routes to ComfyUI's server (once; before ComfyUI builds its app)."""
    global _registered
    srv = _server()
    if _registered or srv is None:
        return
    from aiohttp import web

    routes = srv.routes

    @routes.post(f"{PREFIX}/spec/validate")
    async def spec_validate(request):
        try:
            data = await _body(request)
        except ValueError as exc:
            return _json_error(400, str(exc))
        return await _guarded(validate_spec_text, data.get("spec"))

    @routes.post(f"{PREFIX}/spec/preview")
    async def spec_preview(request):
        try:
            data = await _body(request)
        except ValueError as exc:
            return _json_error(400, str(exc))
        return await _guarded(
            preview_spec,
            data.get("spec"),
            seed=data.get("seed", 0),
            start=data.get("identity_start", 0),
            count=data.get("count", 8),
        )

    @routes.get(f"{PREFIX}/datasets")
    async def datasets(request):
        check = request.query.get("check", "1") != "0"
        return await _guarded(
            lambda: {"root": "output", "datasets": list_datasets(_output_root(), check=check)}
        )

    @routes.get(f"{PREFIX}/chunk")
    async def chunk(request):
        name = request.query.get("path", "")
        decode = request.query.get("decode", "0") == "1"
        return await _guarded(lambda: chunk_info(_output_root(), name, decode=decode))

    async def _serve(name: str):
        try:
            path, kind = await asyncio.to_thread(servable_file, _output_root(), name)
        except FDTAError as exc:
            return _json_error(400, exc.message, exc.where or "", exc.fix or "")
        except FileNotFoundError as exc:
            return _json_error(404, str(exc))
        return web.FileResponse(
            path,
            headers={
                "Content-Type": kind,
                # reports are self-contained pages; nothing they hold may run against ComfyUI's origin
                "Content-Security-Policy": "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'",
                "X-Content-Type-Options": "nosniff",
            },
        )

    @routes.get(f"{PREFIX}/file")
    async def file_by_query(request):
        return await _serve(request.query.get("path", ""))

    @routes.get(PREFIX + "/output/{tail:.*}")
    async def file_by_path(request):
        return await _serve(request.match_info.get("tail", ""))

    _registered = True
    log.info("[FDTA] routes registered under %s", PREFIX)
