"""The runner under faults, against fake ComfyUI servers that run prompts one at a time for a while:
slow answers are not failures, a chunk never runs twice at once, a chunk whose prompt finished while no
runner watched is not redone, a dead server's chunk moves to another server, a timed-out prompt is
stopped before its chunk runs again."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fdta_core.runner import ChunkState, RunConfig, RunManifest, run
from fdta_core.runner.client import ComfyClient, PromptState

SPEC = json.dumps({"format": "fdta-attribute-spec/1", "fields": {"gender": {"values": {"male": 1}}}})
WORKFLOW = {
    "1": {"class_type": "FDTAAttributeSpec", "inputs": {"identity_start": 0, "identity_count": 1, "seed": 0, "spec": SPEC}},
    "2": {"class_type": "FDTADatasetWriter", "inputs": {"output_name": "fdta/x", "faceset": ["1", 0]}},
}  # fmt: skip


class Tracker:
    """Shared by the fake servers: which chunks run right now, and the worst overlap seen."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running: dict[int, int] = {}
        self.overlap = 0
        self.runs: list[int] = []

    def enter(self, start: int) -> None:
        with self.lock:
            self.running[start] = self.running.get(start, 0) + 1
            self.overlap = max(self.overlap, self.running[start])
            self.runs.append(start)

    def leave(self, start: int) -> None:
        with self.lock:
            self.running[start] -= 1


class SlowComfy:
    """Runs prompts sequentially for ``run_s`` seconds each; answers /history after ``history_delay`` and
    /prompt after ``post_delay`` seconds (the prompt is queued before the answer); /interrupt stops the
    running prompt; ``kill()`` makes it vanish (connections refused)."""

    def __init__(self, tracker: Tracker, run_s=0.6, history_delay=0.0, post_delay=0.0) -> None:
        self.tracker, self.run_s = tracker, run_s
        self.history_delay, self.post_delay = history_delay, post_delay
        self.lock = threading.Lock()
        self.pending: list[tuple[str, dict]] = []
        self.current: tuple[str, dict] | None = None
        self.history: dict[str, dict] = {}
        self.queued: list[int] = []
        self.interrupts = 0
        self._interrupt = threading.Event()
        self._alive = True
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, obj, code=200):
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                data = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
                if self.path == "/prompt":
                    pid = data["prompt_id"]
                    with outer.lock:
                        outer.pending.append((pid, data["prompt"]))
                        outer.queued.append(data["prompt"]["1"]["inputs"]["identity_start"])
                    time.sleep(outer.post_delay)
                    return self._send({"prompt_id": pid, "number": 0, "node_errors": {}})
                if self.path == "/queue":
                    with outer.lock:
                        outer.pending = [p for p in outer.pending if p[0] not in data.get("delete", [])]
                elif self.path == "/interrupt":
                    with outer.lock:
                        if outer.current and outer.current[0] == data.get("prompt_id"):
                            outer.interrupts += 1
                            outer._interrupt.set()
                self._send({})

            def do_GET(self):
                if self.path == "/queue":
                    with outer.lock:
                        run_ = [[0, outer.current[0], {}, {}, []]] if outer.current else []
                        pend = [[0, p, {}, {}, []] for p, _ in outer.pending]
                    return self._send({"queue_running": run_, "queue_pending": pend})
                time.sleep(outer.history_delay)
                pid = self.path.rsplit("/", 1)[-1]
                with outer.lock:
                    self._send({pid: outer.history[pid]} if pid in outer.history else {})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        threading.Thread(target=self._execute, daemon=True).start()

    def _execute(self) -> None:
        while self._alive:
            with self.lock:
                self.current = self.pending.pop(0) if self.pending else None
            if self.current is None:
                time.sleep(0.02)
                continue
            pid, prompt = self.current
            start = prompt["1"]["inputs"]["identity_start"]
            self.tracker.enter(start)
            self._interrupt.clear()
            stopped = self._interrupt.wait(self.run_s)
            self.tracker.leave(start)
            if not self._alive:
                return
            with self.lock:
                if stopped:
                    msg = ["execution_interrupted", {"prompt_id": pid}]
                    self.history[pid] = {
                        "status": {"status_str": "error", "completed": False, "messages": [msg]}
                    }
                else:
                    self.history[pid] = {"status": {"status_str": "success", "completed": True},
                                         "outputs": {"2": {"text": [f"wrote {start}"]}}}  # fmt: skip
                self.current = None

    def kill(self) -> None:
        self._alive = False
        self._interrupt.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def tracker():
    return Tracker()


@pytest.fixture
def servers(tracker):
    made = []

    def make(**kw):
        s = SlowComfy(tracker, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        if s._alive:
            s.kill()


def _cfg(tmp_path, urls, **kw):
    base = dict(workflow=WORKFLOW, run_dir=tmp_path / "run", identities=4, chunk_size=1, seed=9, servers=urls,
                identity_index="", server_wait=5.0)  # fmt: skip
    return RunConfig(**(base | kw))


def _fast(url: str) -> ComfyClient:
    return ComfyClient(url, timeout=0.2, lost_after=3.0)


def test_slow_answers_are_not_failures_and_no_chunk_runs_twice(tmp_path, servers, tracker):
    """The bug of issue 15: /history answering after the client's request timeout made the runner fail
    the chunk and queue it again while its prompt still ran. Now: every chunk runs exactly once."""
    a, b = servers(history_delay=0.4), servers(history_delay=0.4, post_delay=0.4)
    counts = run(_cfg(tmp_path, [a.url, b.url]), client_factory=_fast)
    assert counts["done"] == 4 and counts["failed"] == 0
    assert sorted(a.queued + b.queued) == [0, 1, 2, 3]  # each queued once, although POSTs timed out on b
    assert tracker.overlap == 1 and sorted(tracker.runs) == [0, 1, 2, 3]
    man = json.loads((tmp_path / "run" / "run-shard0000-of-0001.json").read_text())
    assert all(c["attempts"] == 1 for c in man["chunks"].values())


def test_a_dead_servers_chunk_runs_again_on_another_server(tmp_path, servers, tracker):
    a, b = servers(run_s=3.0), servers(run_s=0.3)
    done: list[int] = []

    def on_chunk(chunk, state):
        if state == ChunkState.DONE:
            done.append(chunk.start)

    cfg = _cfg(tmp_path, [a.url, b.url], server_wait=1.0)
    killer = threading.Timer(1.0, a.kill)
    killer.start()
    counts = run(cfg, on_chunk=on_chunk, client_factory=_fast)
    killer.join()
    assert counts["done"] == 4, counts
    lost = sorted(set(a.queued))
    assert len(lost) == 1 and sorted(done) == [0, 1, 2, 3]
    man = json.loads(cfg.manifest_path().read_text())
    rec = man["chunks"][str(lost[0])]
    assert rec["attempts"] == 2 and rec["server"] == b.url and rec["state"] == "done"
    assert tracker.overlap == 1


def test_a_timed_out_prompt_is_stopped_before_its_chunk_runs_again(tmp_path, servers, tracker):
    a = servers(run_s=1.5)
    cfg = _cfg(tmp_path, [a.url], identities=1, timeout=0.5, max_attempts=2)
    counts = run(cfg, client_factory=_fast)
    assert counts["failed"] == 1  # 1.5 s each time, 0.5 s allowed
    assert a.interrupts == 2 and a.queued == [0, 0] and tracker.overlap == 1
    assert "cancelled" in json.loads(cfg.manifest_path().read_text())["chunks"]["0"]["error"]


def test_resume_takes_finished_prompts_and_follows_running_ones(tmp_path, servers, tracker):
    """A runner killed while chunks ran: on resume, a prompt that finished meanwhile is taken as it is,
    one still running is followed, and neither is queued again."""
    a = servers(run_s=1.0)
    cfg = _cfg(tmp_path, [a.url], identities=3)
    man = RunManifest(cfg.manifest_path(), cfg.run_key(), cfg.chunks())
    c0, c1, c2 = cfg.chunks()
    client = _fast(a.url)
    from fdta_core.runner.patch import patch_workflow

    for c, pid in ((c0, "p0"), (c1, "p1")):
        client.queue(patch_workflow(WORKFLOW, c, cfg.seed), pid)
        man.mark(c, ChunkState.RUNNING, attempts=1, server=a.url, prompt_id=pid)
    deadline = time.monotonic() + 10
    while client.state("p0") != PromptState.SUCCESS and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.state("p1") in (PromptState.RUNNING, PromptState.PENDING)
    counts = run(cfg, client_factory=_fast)
    assert counts["done"] == 3
    assert a.queued == [0, 1, 2] and tracker.runs == [0, 1, 2] and tracker.overlap == 1
    recs = json.loads(cfg.manifest_path().read_text())["chunks"]
    assert [recs[str(i)]["attempts"] for i in range(3)] == [1, 1, 1]
    assert recs["1"]["prompt_id"] == "p1" and recs["1"]["outputs"]["2"]["text"] == ["wrote 1"]


def test_a_committed_chunk_is_not_run_again(tmp_path, servers, tracker):
    """The runner died after a chunk's commit landed but before the manifest said so (and the server
    was restarted): with the output folder known, the chunk is done without running."""
    import numpy as np

    from fdta_core.dataset import write_faceset
    from fdta_core.faceset import ChunkStamp, FaceSet, Provenance
    from fdta_core.prompts.spec import parse_spec

    a = servers(run_s=0.1)
    out = tmp_path / "comfy_out"
    cfg = _cfg(tmp_path, [a.url], identities=2, output_dir=out)
    stamp = ChunkStamp(0, 1, parse_spec(SPEC).hash, cfg.seed)
    prov = [Provenance(0), Provenance(0)]
    fs = FaceSet(np.zeros((2, 112, 112, 3), np.uint8), np.array([0, 0]), prov, chunk=stamp)
    write_faceset(fs, out / "fdta" / "x", start=0, count=1)
    counts = run(cfg, client_factory=_fast)
    assert counts["done"] == 2 and a.queued == [1]
    rec = json.loads(cfg.manifest_path().read_text())["chunks"]["0"]
    assert rec["outputs"]["committed"][0]["path"].endswith("000000000-000000001")
    # a chunk of another run (other seed) in the slot is not taken for this run's
    cfg2 = _cfg(tmp_path / "b", [a.url], identities=1, output_dir=out, seed=10)
    assert run(cfg2, client_factory=_fast)["done"] == 1 and a.queued == [1, 0]
