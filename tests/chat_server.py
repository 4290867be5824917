"""A tiny chat-completions server on 127.0.0.1 for the LLM tests (real HTTP, real openai client), shared
by the library tests, the node tests in ComfyUI's interpreter and the live server tests.

Each POST pops the next scripted behaviour ("ok", "malformed", "429[:<retry-after>]", "500", "sleep:<s>", "400-schema",
"401", "quota", "empty", "long", "wrong-gender"); when the script is empty it answers "ok". Every request is recorded.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def describe(ident: dict, *, wrong_gender: bool = False, long_subject: bool = False) -> dict:
    a = ident["attributes"]
    out = {"id": ident["id"]}
    noise = " ".join(["qzxwvk"] * 9)
    for f, v in a.items():
        if f == "gender":
            out[f] = (
                ("man" if v == "female" else "woman")
                if wrong_gender
                else ("woman" if v == "female" else "man")
            )
            out[f] += f" {noise}" if long_subject else ""
        elif f == "age":
            out[f] = f"{v}-year-old"
        elif f == "race":
            out[f] = f"{v} {noise}" if long_subject else v
        else:
            out[f] = f"distinct {v} {f.replace('_', ' ')}"
    return out


class ChatServer:
    def __init__(self) -> None:
        self.script: list[str] = []
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def _send(self, status: int, body: dict, headers: dict | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                with server.lock:
                    behaviour = server.script.pop(0) if server.script else "ok"
                    server.requests.append(
                        {
                            "path": self.path,
                            "body": body,
                            "auth": self.headers.get("Authorization"),
                            "behaviour": behaviour,
                        }
                    )
                if not self.path.endswith("/chat/completions"):
                    self._send(404, {"error": {"message": "not found"}})
                    return
                if behaviour.startswith("sleep:"):
                    time.sleep(float(behaviour.split(":", 1)[1]))
                    behaviour = "ok"
                if behaviour.startswith("429"):
                    after = behaviour.split(":", 1)[1] if ":" in behaviour else "0"
                    self._send(
                        429,
                        {"error": {"message": "rate limited", "type": "rate_limit"}},
                        {"Retry-After": after},
                    )
                    return
                if behaviour == "quota":
                    self._send(429, {"error": {"message": "quota", "code": "insufficient_quota"}})
                    return
                if behaviour == "500":
                    self._send(500, {"error": {"message": "server exploded"}})
                    return
                if behaviour == "401":
                    self._send(401, {"error": {"message": f"bad key {self.headers.get('Authorization')}"}})
                    return
                fmt = (body.get("response_format") or {}).get("type")
                if behaviour == "400-schema" and fmt == "json_schema":
                    self._send(400, {"error": {"message": "response_format json_schema is not supported"}})
                    return
                user = json.loads(body["messages"][-1]["content"])
                if behaviour == "malformed":
                    content = '{"identities": [ {"id": 1, "eyes": '
                elif behaviour == "empty":
                    content = ""
                else:
                    items = [
                        describe(
                            i, wrong_gender=behaviour == "wrong-gender", long_subject=behaviour == "long"
                        )
                        for i in user["identities"]
                    ]
                    content = json.dumps({"identities": items})
                    if fmt is None:
                        content = "Here you are:\n```json\n" + content + "\n```"
                self._send(
                    200,
                    {
                        "id": "chatcmpl-test",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": body.get("model", "test"),
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": content},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    },
                )

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> ChatServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


#: A fake API key: tests check it never reaches a file, a log or a workflow.
KEY = "sk-test-SECRET-0123456789abcdefXYZ"
