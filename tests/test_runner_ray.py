"""``fdta run --ray`` on a local Ray cluster (2 CPUs, two actors) attached to fake ComfyUI servers that
run prompts for a while: every chunk done exactly once, and an actor SIGKILLed mid-chunk has its chunk
stopped on the server and run again by the other actor (Ray restarts the dead one)."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import pytest
import ray

from fdta_core.runner import ChunkState
from fdta_core.runner.ray_engine import RayOptions, plan_actors, run_ray
from tests.test_runner_faults import SlowComfy, Tracker, _cfg

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    yield
    ray.shutdown()


@pytest.fixture
def fakes(request):
    tracker = Tracker()
    run_s = getattr(request, "param", 1.0)
    made = [SlowComfy(tracker, run_s=run_s), SlowComfy(tracker, run_s=run_s)]
    yield tracker, made
    for s in made:
        if s._alive:
            s.kill()


def test_actors_per_gpu_or_per_core_group():
    assert plan_actors({"GPU": 4.0, "CPU": 64.0}, RayOptions()) == (4, {"num_gpus": 1, "num_cpus": 1})
    assert plan_actors({"CPU": 16.0}, RayOptions(cpus_per_actor=4)) == (4, {"num_cpus": 4})
    assert plan_actors({"CPU": 2.0}, RayOptions(cpus_per_actor=1)) == (2, {"num_cpus": 1})


def test_two_actors_run_every_chunk_once(cluster, fakes, tmp_path):
    tracker, (a, b) = fakes
    cfg = _cfg(tmp_path, [], identities=4)
    heard: list[str] = []  # the fakes have no websocket: progress polling must simply not get in the way
    counts = run_ray(
        cfg, RayOptions(attach=[a.url, b.url], cpus_per_actor=1), on_progress=lambda c, m: heard.append(c)
    )
    assert counts["done"] == 4 and counts["failed"] == 0 and heard == []
    assert sorted(a.queued + b.queued) == [0, 1, 2, 3] and a.queued and b.queued
    assert tracker.overlap == 1
    recs = json.loads(cfg.manifest_path().read_text())["chunks"]
    assert {r["worker"].split(" pid")[0] for r in recs.values()} == {"ray actor 0", "ray actor 1"}


@pytest.mark.parametrize("fakes", [4.0], indirect=True)  # long prompts: the kill lands mid-chunk
def test_an_actor_killed_mid_chunk_has_its_chunk_run_again(cluster, fakes, tmp_path):
    tracker, (a, b) = fakes
    cfg = _cfg(tmp_path, [], identities=4)
    killed: list[str] = []

    def on_chunk(chunk, state):
        if state == ChunkState.RUNNING and chunk.index == 1 and not killed:
            rec = json.loads(cfg.manifest_path().read_text())["chunks"]["1"]
            killed.append(rec["worker"])
            pid = int(rec["worker"].split(" pid ")[1].split()[0])
            threading.Timer(0.4, os.kill, (pid, signal.SIGKILL)).start()

    counts = run_ray(cfg, RayOptions(attach=[a.url, b.url], cpus_per_actor=1), on_chunk=on_chunk)
    assert killed and counts["done"] == 4, counts
    rec = json.loads(cfg.manifest_path().read_text())["chunks"]["1"]
    assert rec["attempts"] == 2 and rec["state"] == "done"
    assert sorted(tracker.runs) == [0, 1, 1, 2, 3]  # the killed actor's prompt was stopped, then run again
    assert tracker.overlap == 1 and a.interrupts + b.interrupts == 1
