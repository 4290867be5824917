"""A small ComfyUI client over HTTP and the websocket, standard library only.

The websocket carries progress (``progress``, ``executing``, ``execution_error``) for the progress bar;
the authoritative result of a prompt is always read from ``/history``, so a dropped websocket costs only
progress updates, never correctness.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import struct
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

from ..errors import ExternalServiceError

log = logging.getLogger(__name__)


class PromptError(ExternalServiceError):
    """ComfyUI refused a prompt (validation) or its execution failed."""


class ComfyClient:
    def __init__(self, url: str, *, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        if not self.url.startswith(("http://", "https://")):
            self.url = "http://" + self.url
        self.timeout = timeout
        self.client_id = uuid.uuid4().hex

    # ------------------------------------------------------------------ HTTP
    def _request(self, method: str, path: str, payload: Any = None) -> Any:
        data = json.dumps(payload).encode() if payload is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                body = r.read()
        except urllib.error.HTTPError as e:
            body = e.read()
            try:
                detail = json.loads(body)
            except ValueError:
                detail = body.decode(errors="replace")[:2000]
            raise PromptError(
                f"{method} {path} answered HTTP {e.code}: {json.dumps(detail)[:3000]}", where=self.url
            ) from None
        except (urllib.error.URLError, OSError) as e:
            raise ExternalServiceError(
                f"cannot reach ComfyUI ({e})", where=self.url, fix="start the server or check --server."
            ) from None
        return json.loads(body) if body else None

    def queue(self, prompt: dict[str, Any]) -> str:
        res = self._request("POST", "/prompt", {"prompt": prompt, "client_id": self.client_id})
        if res.get("node_errors"):
            raise PromptError(f"prompt rejected: {json.dumps(res['node_errors'])[:3000]}", where=self.url)
        return str(res["prompt_id"])

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        res = self._request("GET", f"/history/{urllib.parse.quote(prompt_id)}")
        return (res or {}).get(prompt_id)

    def object_info(self) -> dict[str, Any]:
        return self._request("GET", "/object_info")

    def interrupt(self) -> None:
        self._request("POST", "/interrupt", {})

    def wait(
        self,
        prompt_id: str,
        *,
        timeout: float | None = None,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        poll: float = 1.0,
    ) -> dict[str, Any]:
        """Wait for ``prompt_id``; return its history entry or raise :class:`PromptError`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        ws = None
        if on_progress is not None:
            try:
                ws = WebSocket.connect(self.url, f"/ws?clientId={self.client_id}", timeout=poll)
            except OSError as e:
                log.debug("websocket unavailable (%s); polling /history only", e)
        try:
            while True:
                entry = self.history(prompt_id)
                if entry is not None:
                    status = entry.get("status", {})
                    if status.get("status_str") == "error":
                        msgs = [m[1] for m in status.get("messages", []) if m[0] == "execution_error"]
                        detail = msgs[0] if msgs else status
                        text = (
                            detail.get("exception_message", "") if isinstance(detail, dict) else str(detail)
                        )
                        node = detail.get("node_type", "?") if isinstance(detail, dict) else "?"
                        raise PromptError(f"execution failed in {node}: {text.strip()}", where=self.url)
                    if status.get("completed") or status.get("status_str") == "success":
                        return entry
                if deadline is not None and time.monotonic() > deadline:
                    raise ExternalServiceError(
                        f"prompt {prompt_id} did not finish within {timeout} s", where=self.url
                    )
                if ws is not None:
                    try:
                        msg = ws.recv_json()
                    except (OSError, ValueError):
                        ws = None
                        continue
                    if msg is not None and msg.get("data", {}).get("prompt_id") in (None, prompt_id):
                        on_progress(msg)  # type: ignore[misc]
                else:
                    time.sleep(poll)
        finally:
            if ws is not None:
                ws.close()


class WebSocket:
    """Minimal RFC 6455 client: enough to read ComfyUI's JSON text frames (binary previews are skipped)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buf = b""

    @classmethod
    def connect(cls, base_url: str, path: str, timeout: float = 1.0) -> WebSocket:
        u = urllib.parse.urlparse(base_url)
        if u.scheme != "http":
            raise OSError("only plain ws:// is supported")
        host, port = u.hostname or "127.0.0.1", u.port or 80
        sock = socket.create_connection((host, port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        req = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        sock.sendall(req.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            part = sock.recv(4096)
            if not part:
                raise OSError("websocket handshake: connection closed")
            head += part
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status:
            raise OSError(f"websocket handshake refused: {status!r}")
        ws = cls(sock)
        ws._buf = head.split(b"\r\n\r\n", 1)[1]
        sock.settimeout(timeout)
        return ws

    def _read(self, n: int) -> bytes:
        while len(self._buf) < n:
            part = self.sock.recv(65536)
            if not part:
                raise OSError("websocket closed")
            self._buf += part
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def recv_json(self) -> dict[str, Any] | None:
        """The next JSON text message, or None on timeout or for a non-text frame."""
        try:
            b0, b1 = self._read(2)
        except TimeoutError:
            return None
        opcode, length = b0 & 0x0F, b1 & 0x7F
        self.sock.settimeout(10)  # a started frame is read to its end
        try:
            if length == 126:
                length = struct.unpack(">H", self._read(2))[0]
            elif length == 127:
                length = struct.unpack(">Q", self._read(8))[0]
            mask = self._read(4) if b1 & 0x80 else None
            data = self._read(length)
        finally:
            self.sock.settimeout(1.0)
        if mask:
            data = bytes(c ^ mask[i % 4] for i, c in enumerate(data))
        if opcode == 0x8:
            raise OSError("websocket closed by server")
        if opcode == 0x9:  # ping -> pong (client frames are masked)
            self._send(0xA, data)
            return None
        if opcode != 0x1:
            return None
        return json.loads(data.decode("utf-8"))

    def _send(self, opcode: int, data: bytes) -> None:
        mask = os.urandom(4)
        head = bytes([0x80 | opcode])
        n = len(data)
        head += bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n)
        self.sock.sendall(head + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(data)))

    def close(self) -> None:
        try:
            self._send(0x8, b"")
        except OSError:
            pass
        self.sock.close()
