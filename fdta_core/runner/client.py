"""A small ComfyUI client over HTTP and the websocket, standard library only.

The websocket carries progress (``progress``, ``executing``, ``execution_error``) for the progress bar;
the authoritative result of a prompt is always read from ``/history``, so a dropped websocket costs only
progress updates, never correctness.

A slow answer is not a failed prompt. Under load ComfyUI's HTTP thread can take longer than a request
timeout to answer while the prompt keeps running; an earlier client turned such a timeout into a failed
chunk ("cannot reach ComfyUI (timed out)"), and the runner queued the chunk again while its first prompt
was still running. So: the client names its prompts itself (``prompt_id`` in ``POST /prompt``), a
transport error while queueing is resolved by looking the id up, a timed-out request only means "ask
again, with a longer timeout" (:class:`ServerSlow`), and a prompt is given up only when the server is
gone (:class:`ServerLost`: refusing connections for ``lost_after`` seconds, or answering without knowing
the prompt, i.e. restarted) or when it was cancelled and seen to stop (:meth:`ComfyClient.cancel`).
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
from enum import StrEnum
from typing import Any

from ..errors import ExternalServiceError

log = logging.getLogger(__name__)


class PromptError(ExternalServiceError):
    """ComfyUI refused a prompt (validation) or its execution failed."""


class ServerLost(ExternalServiceError):
    """The server that held a prompt is gone (dead, or restarted and no longer knows the prompt): the
    prompt is not running anywhere, so its chunk may run again."""


class ServerSlow(ExternalServiceError):
    """A request timed out: the server is there but busy (not a sign that a prompt failed)."""


class PromptMayRun(ExternalServiceError):
    """A prompt was asked to stop but was still seen running: its chunk must not be queued again until
    the server is asked again (the next resume does)."""


class PromptTimeout(ExternalServiceError):
    """A prompt ran past the chunk's time limit; it was cancelled and seen to stop."""


class PromptState(StrEnum):
    """Where a prompt stands on its server."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    ERROR = "error"
    UNKNOWN = "unknown"  # the server answers but does not know the id (never queued, or restarted)


def new_prompt_id() -> str:
    return uuid.uuid4().hex


class ComfyClient:
    """HTTP + websocket client of one ComfyUI server.

    ``timeout`` bounds one HTTP request; ``lost_after`` is how long the server may stay unreachable while
    a prompt is followed before it counts as gone.
    """

    def __init__(self, url: str, *, timeout: float = 30.0, lost_after: float = 120.0) -> None:
        self.url = url.rstrip("/")
        if not self.url.startswith(("http://", "https://")):
            self.url = "http://" + self.url
        self.timeout = timeout
        self.lost_after = lost_after
        self.client_id = uuid.uuid4().hex

    # ------------------------------------------------------------------ HTTP
    def _request(self, method: str, path: str, payload: Any = None, *, timeout: float | None = None) -> Any:
        data = json.dumps(payload).encode() if payload is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as r:
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
            if isinstance(e, TimeoutError) or isinstance(getattr(e, "reason", None), TimeoutError):
                raise ServerSlow(
                    f"ComfyUI did not answer {method} {path} within {timeout or self.timeout:.0f} s",
                    where=self.url,
                ) from None
            raise ExternalServiceError(
                f"cannot reach ComfyUI ({e})", where=self.url, fix="start the server or check --server."
            ) from None
        return json.loads(body) if body else None

    def alive(self, timeout: float = 10.0) -> bool:
        """Whether the server answers at all (a cheap request)."""
        try:
            self._request("GET", "/queue", timeout=timeout)
            return True
        except (PromptError, ServerSlow):
            return True
        except ExternalServiceError:
            return False

    def queue(self, prompt: dict[str, Any], prompt_id: str | None = None) -> str:
        """Queue ``prompt`` under ``prompt_id`` (a new id when None); return the id.

        When the POST fails in transport (a timeout under load, a dropped connection) the server may
        have queued it anyway: the id is looked up, and only a server that answers without knowing it
        (or is gone) makes this raise, so a chunk is never queued twice by one call.
        """
        pid = prompt_id or new_prompt_id()
        payload = {"prompt": prompt, "client_id": self.client_id, "prompt_id": pid}
        try:
            res = self._request("POST", "/prompt", payload)
        except PromptError:
            raise
        except ExternalServiceError as exc:
            state = self._settle(pid, exc)
            if state == PromptState.UNKNOWN:
                raise ExternalServiceError(
                    f"queueing failed in transport ({exc.message}) and the server does not know prompt {pid}",
                    where=self.url,
                ) from None
            log.info("prompt %s was queued although POST /prompt failed in transport (%s)", pid, exc.message)
            return pid
        if res.get("node_errors"):
            raise PromptError(f"prompt rejected: {json.dumps(res['node_errors'])[:3000]}", where=self.url)
        return str(res.get("prompt_id", pid))

    def _settle(self, prompt_id: str, cause: Exception) -> PromptState:
        """The state of ``prompt_id`` after a transport error, asking until the server answers or
        ``lost_after`` passes (then :class:`ServerLost`)."""
        deadline = time.monotonic() + self.lost_after
        while True:
            try:
                return self.state(prompt_id)
            except ServerSlow:
                self._slower()
                deadline = time.monotonic() + self.lost_after
            except ExternalServiceError as exc:
                if isinstance(exc, PromptError) or time.monotonic() > deadline:
                    raise ServerLost(
                        f"no answer for {self.lost_after:.0f} s about prompt {prompt_id} ({cause})",
                        where=self.url,
                    ) from None
                time.sleep(min(2.0, self.lost_after / 10))

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        res = self._request("GET", f"/history/{urllib.parse.quote(prompt_id)}")
        return (res or {}).get(prompt_id)

    def state(self, prompt_id: str) -> PromptState:
        """Where ``prompt_id`` stands (history first: a prompt moves from the queue to the history)."""
        entry = self.history(prompt_id)
        if entry is not None:
            return _entry_state(entry) or PromptState.RUNNING
        q = self._request("GET", "/queue") or {}
        if any(_item_id(i) == prompt_id for i in q.get("queue_running", [])):
            return PromptState.RUNNING
        if any(_item_id(i) == prompt_id for i in q.get("queue_pending", [])):
            return PromptState.PENDING
        entry = self.history(prompt_id)  # it may have finished between the two requests
        if entry is not None:
            return _entry_state(entry) or PromptState.RUNNING
        return PromptState.UNKNOWN

    def _slower(self) -> None:
        """After a timed-out request: give the next ones twice the time (up to 10 minutes)."""
        self.timeout = min(self.timeout * 2, 600.0)

    def _unknown(self, prompt_id: str) -> bool:
        """True only when the server answers and does not know ``prompt_id`` (a transport error: False)."""
        try:
            return self.state(prompt_id) == PromptState.UNKNOWN
        except PromptError:
            raise
        except ExternalServiceError:
            return False

    def object_info(self) -> dict[str, Any]:
        return self._request("GET", "/object_info")

    def interrupt(self, prompt_id: str | None = None) -> None:
        """Interrupt ``prompt_id`` if it is the one running (ComfyUI >= 0.3.64), else whatever runs."""
        self._request("POST", "/interrupt", {"prompt_id": prompt_id} if prompt_id else {})

    def cancel(self, prompt_id: str, *, wait: float = 120.0) -> PromptState:
        """Remove ``prompt_id`` from the queue or interrupt it, and wait until it no longer runs;
        returns its final state. Raises :class:`ServerLost` when the server stops answering (then it
        runs nothing) and :class:`PromptMayRun` when it still runs after ``wait`` seconds."""
        deadline = time.monotonic() + wait
        while True:
            try:
                self._request("POST", "/queue", {"delete": [prompt_id]})
                self.interrupt(prompt_id)
                state = self.state(prompt_id)
            except PromptError:
                raise
            except ExternalServiceError as exc:
                state = self._settle(prompt_id, exc)
            if state not in (PromptState.PENDING, PromptState.RUNNING):
                return state
            if time.monotonic() > deadline:
                raise PromptMayRun(
                    f"prompt {prompt_id} still runs {wait:.0f} s after it was interrupted", where=self.url
                )
            time.sleep(0.5)

    def wait(
        self,
        prompt_id: str,
        *,
        timeout: float | None = None,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        poll: float = 1.0,
    ) -> dict[str, Any]:
        """Wait for ``prompt_id``; return its history entry.

        Raises :class:`PromptError` when it failed, :class:`ServerLost` when the server is gone or no
        longer knows it, :class:`PromptTimeout` after ``timeout`` seconds (the prompt is cancelled and
        seen to stop first). A request that times out or fails in transport is simply asked again.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        ws = None
        if on_progress is not None:
            try:
                ws = WebSocket.connect(self.url, f"/ws?clientId={self.client_id}", timeout=poll)
            except OSError as e:
                log.debug("websocket unavailable (%s); polling /history only", e)
        unreachable_since: float | None = None
        try:
            while True:
                slow = False
                try:
                    entry = self.history(prompt_id)
                    unreachable_since = None
                except PromptError:
                    raise
                except ServerSlow as exc:  # busy, not gone: ask again, with more patience
                    log.debug("prompt %s: %s; asking again", prompt_id, exc.message)
                    self._slower()
                    unreachable_since, entry = None, None
                    slow = True
                except ExternalServiceError as exc:
                    now = time.monotonic()
                    unreachable_since = unreachable_since or now
                    if now - unreachable_since > self.lost_after:
                        raise ServerLost(
                            f"no answer for {self.lost_after:.0f} s while prompt {prompt_id} ran ({exc.message})",
                            where=self.url,
                        ) from None
                    log.debug("no answer about prompt %s (%s); asking again", prompt_id, exc.message)
                    entry = None
                    ws = _close(ws)
                if entry is not None:
                    state = _entry_state(entry)
                    if state == PromptState.ERROR:
                        raise PromptError(_error_text(entry), where=self.url)
                    if state == PromptState.SUCCESS:
                        return entry
                elif unreachable_since is None and not slow and self._unknown(prompt_id):
                    raise ServerLost(
                        f"the server no longer knows prompt {prompt_id} (restarted?)", where=self.url
                    )
                if deadline is not None and time.monotonic() > deadline:
                    final = self.cancel(prompt_id)
                    if final == PromptState.SUCCESS:
                        entry = self.history(prompt_id)
                        if entry is not None:
                            return entry
                    raise PromptTimeout(
                        f"prompt {prompt_id} did not finish within {timeout} s; it was cancelled",
                        where=self.url,
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
            _close(ws)


def _item_id(item: Any) -> str | None:
    """The prompt id of a ``/queue`` item ``[number, prompt_id, prompt, extra, outputs]``."""
    return str(item[1]) if isinstance(item, list | tuple) and len(item) > 1 else None


def _entry_state(entry: dict[str, Any]) -> PromptState | None:
    status = entry.get("status", {}) or {}
    if status.get("status_str") == "error":
        return PromptState.ERROR
    if status.get("completed") or status.get("status_str") == "success":
        return PromptState.SUCCESS
    return None


def _error_text(entry: dict[str, Any]) -> str:
    status = entry.get("status", {})
    msgs = [m[1] for m in status.get("messages", []) if m[0] == "execution_error"]
    detail = msgs[0] if msgs else status
    text = detail.get("exception_message", "") if isinstance(detail, dict) else str(detail)
    node = detail.get("node_type", "?") if isinstance(detail, dict) else "?"
    return f"execution failed in {node}: {text.strip()}"


def _close(ws: WebSocket | None) -> None:
    if ws is not None:
        ws.close()
    return None


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
