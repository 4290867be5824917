"""Headless runner: chunking, shards, workflow patching, resume and retry against a local fake ComfyUI."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from fdta_core.cli import main as cli_main
from fdta_core.errors import ConfigError
from fdta_core.runner import (
    ChunkState,
    RunConfig,
    RunManifest,
    patch_workflow,
    plan_chunks,
    run,
    select_shard,
)
from fdta_core.runner.manifest import parse_shard
from fdta_core.runner.patch import load_api_workflow, parse_override
from fdta_core.seeds import SEED_MAX

REPO = Path(__file__).resolve().parent.parent

WORKFLOW = {
    "1": {
        "class_type": "FDTAAttributeSpec",
        "inputs": {"identity_start": 0, "identity_count": 1, "seed": 0, "spec": "{}"},
    },
    "2": {"class_type": "FDTASTGMixer", "inputs": {"seed": 5, "faceset": ["1", 0]}},
    "3": {"class_type": "KSampler", "inputs": {"seed": 5, "steps": 2}},
    "4": {
        "class_type": "FDTADatasetWriter",
        "inputs": {"name": "fdta/x", "faceset": ["2", 0], "identity_start": -1, "identity_count": 0},
    },
}


def test_chunks_and_shards_partition_the_run():
    chunks = plan_chunks(1050, 100, first_identity=20)
    assert [c.count for c in chunks] == [100] * 10 + [50]
    assert chunks[0].start == 20 and chunks[-1].end == 1070
    shards = [select_shard(chunks, i, 4) for i in range(4)]
    seen = sorted(c.index for s in shards for c in s)
    assert seen == list(range(len(chunks)))
    assert max(len(s) for s in shards) - min(len(s) for s in shards) <= 1
    assert parse_shard("3/4") == (3, 4)
    for bad in ("4/4", "x", "1/0", "-1/2"):
        with pytest.raises(ConfigError):
            parse_shard(bad)
    with pytest.raises(ConfigError):
        plan_chunks(0, 10)


def test_patch_sets_range_and_derives_every_seed():
    c = plan_chunks(300, 100)[1]
    p = patch_workflow(WORKFLOW, c, 77, [parse_override("FDTADatasetWriter.name=fdta/run1")])
    assert p["1"]["inputs"] | {} == {"identity_start": 100, "identity_count": 100, "seed": 77, "spec": "{}"}
    assert p["2"]["inputs"]["seed"] == 77 and p["2"]["inputs"]["faceset"] == ["1", 0]
    core = p["3"]["inputs"]["seed"]
    assert core != 5 and core == patch_workflow(WORKFLOW, c, 77)["3"]["inputs"]["seed"]
    assert core != patch_workflow(WORKFLOW, plan_chunks(300, 100)[2], 77)["3"]["inputs"]["seed"]
    assert p["4"]["inputs"]["name"] == "fdta/run1"
    # only the spec gets the range: the writer follows the plan stamped on the faceset
    assert (p["4"]["inputs"]["identity_start"], p["4"]["inputs"]["identity_count"]) == (-1, 0)
    # an old workflow whose writer sets its own range is refused before anything is queued
    old = json.loads(json.dumps(WORKFLOW))
    old["4"]["inputs"].update(identity_start=0, identity_count=100)
    with pytest.raises(
        ConfigError, match=r"node 4 \(FDTADatasetWriter\)\.identity_start.*set identity_start to -1"
    ):
        patch_workflow(old, c, 77)
    assert WORKFLOW["1"]["inputs"]["identity_start"] == 0  # the original is not modified
    with pytest.raises(ConfigError, match="exactly one FDTAAttributeSpec"):
        patch_workflow({"3": WORKFLOW["3"]}, c, 1)
    with pytest.raises(ConfigError, match="UI-format"):
        load_api_workflow({"nodes": [], "links": []})
    with pytest.raises(ConfigError, match="matches no node"):
        patch_workflow(WORKFLOW, c, 1, [("Nope", "x", 1)])


def _stages(start: int) -> list[dict]:
    """What FDTADatasetWriter reports for a chunk: its stages' timings (10 images, fixed seconds)."""
    return [
        {"stage": "stg", "node": "FDTASTGMixer", "seconds": 2.0, "images": 10, "chunk": f"c{start}"},
        {"stage": "write", "node": "FDTADatasetWriter", "seconds": 0.5, "images": 10, "chunk": f"c{start}"},
    ]


class FakeComfy:
    """Answers /prompt and /history like ComfyUI; chunks listed in ``fail`` fail that many times."""

    def __init__(
        self, fail: dict[int, int] | None = None, object_info: dict | None = None, missing=None
    ) -> None:
        self.object_info = object_info or {}
        self.missing = missing  # (identity_start, repair text) -> the writer's missing list, or None
        self.prompts: list[dict] = []
        self.fail = dict(fail or {})
        self.history: dict[str, dict] = {}
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
                    prompt = data["prompt"]
                    outer.prompts.append(prompt)
                    pid = data.get("prompt_id") or f"p{len(outer.prompts)}"
                    start = prompt["1"]["inputs"]["identity_start"]
                    if outer.fail.get(start, 0) > 0:
                        outer.fail[start] -= 1
                        err = {"node_type": "FDTASTGMixer", "exception_message": "boom"}
                        outer.history[pid] = {
                            "status": {"status_str": "error", "messages": [["execution_error", err]]}
                        }
                    else:
                        out = {"text": [f"wrote {start}"], "fdta_stages": _stages(start)}
                        if outer.missing is not None:
                            got = outer.missing(start, prompt["1"]["inputs"].get("repair", ""))
                            if got is not None:
                                out["fdta_missing"] = got
                        outer.history[pid] = {
                            "status": {"status_str": "success", "completed": True},
                            "outputs": {"4": out},
                        }
                    self._send({"prompt_id": pid, "node_errors": {}})
                else:
                    self._send({})

            def do_GET(self):
                if self.path == "/object_info":
                    return self._send(outer.object_info)
                if self.path == "/queue":  # every prompt finishes at once: nothing is ever queued
                    return self._send({"queue_running": [], "queue_pending": []})
                pid = self.path.rsplit("/", 1)[-1]
                self._send({pid: outer.history[pid]} if pid in outer.history else {})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.fixture
def fake():
    servers = []

    def make(**kw):
        s = FakeComfy(**kw)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.close()


def _cfg(tmp_path, urls, **kw):
    base = dict(
        workflow=WORKFLOW, run_dir=tmp_path / "run", identities=250, chunk_size=100, seed=9, servers=urls
    )
    return RunConfig(**(base | kw))


def test_run_resumes_without_redoing_chunks(tmp_path, fake):
    a, b = fake(), fake()
    counts = run(_cfg(tmp_path, [a.url, b.url]))
    assert counts["done"] == 3 and counts["failed"] == 0
    starts = sorted(p["1"]["inputs"]["identity_start"] for p in a.prompts + b.prompts)
    assert starts == [0, 100, 200]
    assert run(_cfg(tmp_path, [a.url]))["done"] == 3
    assert len(a.prompts) + len(b.prompts) == 3  # nothing redone
    with pytest.raises(ConfigError, match="different run"):
        run(_cfg(tmp_path, [a.url], seed=10))


def test_failed_chunks_are_retried_then_reported(tmp_path, fake):
    s = fake(fail={100: 1, 200: 5})
    counts = run(_cfg(tmp_path, [s.url], max_attempts=3))
    assert counts == {"pending": 0, "running": 0, "done": 2, "failed": 1}
    man = json.loads((tmp_path / "run" / "run-shard0000-of-0001.json").read_text())
    assert man["chunks"]["1"]["attempts"] == 2 and man["chunks"]["2"]["attempts"] == 3
    assert "boom" in man["chunks"]["2"]["error"]
    s.fail = {}
    assert run(_cfg(tmp_path, [s.url], max_attempts=4))["done"] == 3  # one more attempt allowed


def test_a_chunk_running_at_a_crash_is_pending_again(tmp_path):
    cfg = _cfg(tmp_path, ["http://127.0.0.1:9"])
    m = RunManifest(cfg.manifest_path(), cfg.run_key(), cfg.chunks())
    m.mark(cfg.chunks()[0], ChunkState.DONE)
    m.mark(cfg.chunks()[1], ChunkState.RUNNING, attempts=1)
    m2 = RunManifest(cfg.manifest_path(), cfg.run_key(), cfg.chunks())
    assert [c.index for c in m2.todo(3)] == [1, 2]


def test_cli_dry_run_and_shard(tmp_path, capsys):
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(WORKFLOW))
    rc = cli_main(["run", str(wf), "--run-dir", str(tmp_path / "r"), "--identities", "500", "--chunk-size", "100",
                   "--seed", "3", "--shard", "1/2", "--dry-run"])  # fmt: skip
    assert rc == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["chunk"] for x in lines] == [
        "000000100-000000200",
        "000000300-000000400",
    ]  # one width with the writer


# ------------------------------------------------------------------ fdta run --set is checked (issue 12)
SHIPPED = json.loads((REPO / "workflows" / "api" / "syn_ms1m.json").read_text())
OBJECT_INFO = json.loads((REPO / "tests" / "data" / "workflow_object_info.json").read_text())


@pytest.mark.parametrize(
    "override, match",
    [
        (
            "FDTAAgeShifter.keep_original=false",
            r"unknown input of FDTAAgeShifter 'keep_original'.*did you mean 'keep_originals'",
        ),
        ("FDTAACGSampler.steps=abc", r"FDTAACGSampler.steps.*'abc' is not a whole number"),
        ("FDTAACGSampler.steps=0", r"0 is outside \[1, "),
        ("FDTAACGSampler.sampler_name=eular", r"unknown choice 'eular'.*did you mean 'euler'"),
        ("FDTAAgeLoader.device=gpu", r"unknown choice 'gpu'.*Use one of auto, cpu"),
        (
            "FDTAAgeShifterr.seed=3",
            r"unknown node class or id of the workflow 'FDTAAgeShifterr'.*did you mean 'FDTAAgeShifter'",
        ),
        ("FDTACSIMFilter.threshold=high", r"'high' is not a number"),
        ("FDTAAgeShifter.keep_originals=maybe", r"'maybe' is not true or false"),
    ],
)
def test_set_overrides_are_checked_against_the_server_schema(override, match):
    from fdta_core.runner.overrides import check_overrides

    with pytest.raises(ConfigError, match=match):
        check_overrides(SHIPPED, [parse_override(override)], OBJECT_INFO)


def test_set_values_are_coerced_to_the_input_type():
    from fdta_core.runner.overrides import check_overrides

    sets = ["FDTAACGSampler.steps=2.0", "FDTAAgeShifter.keep_originals=false", "FDTACSIMFilter.threshold=1",
            "FDTADatasetWriter.output_name=123", "7.sampler_name=euler", "FDTAAgeShifter.keep_originals=1"]  # fmt: skip
    out = check_overrides(SHIPPED, [parse_override(s) for s in sets], OBJECT_INFO)
    assert [v for *_, v in out] == [2, False, 1.0, "123", "euler", True]
    assert type(out[2][2]) is float
    # offline (no server): the workflow's own values stand in for the schema
    assert check_overrides(SHIPPED, [parse_override("FDTAACGSampler.steps=3")], None) == [
        ("FDTAACGSampler", "steps", 3)
    ]
    with pytest.raises(ConfigError, match="did you mean 'keep_originals'.*without a server"):
        check_overrides(SHIPPED, [parse_override("FDTAAgeShifter.keep_original=false")], None)
    with pytest.raises(ConfigError, match="'abc' is not a whole number"):
        check_overrides(SHIPPED, [parse_override("FDTAACGSampler.steps=abc")], None)


def test_cli_refuses_a_misspelt_set_before_queueing(tmp_path, fake, capsys):
    s = fake(object_info=OBJECT_INFO)
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(SHIPPED))
    base = ["run", str(wf), "--run-dir", str(tmp_path / "r"), "--identities", "4", "--chunk-size", "2",
            "--seed", "3", "--server", s.url]  # fmt: skip
    for extra in (["--dry-run"], []):
        assert cli_main([*base, "--set", "FDTAAgeShifter.keep_original=false", *extra]) != 0
        err = capsys.readouterr().err
        assert (
            "unknown input of FDTAAgeShifter 'keep_original'" in err
            and "did you mean 'keep_originals'" in err
        )
        assert cli_main([*base, "--set", "FDTAACGSampler.steps=abc", *extra]) != 0
        assert "'abc' is not a whole number" in capsys.readouterr().err
    assert s.prompts == [] and not (tmp_path / "r").exists()  # nothing queued, no run started


def test_every_chunk_gets_the_run_identity_index(tmp_path, fake):
    """fdta run prepares RUN_DIR/identities (with its marker) and names it on every chunk's ACG node;
    ``--set`` still wins and an empty location turns it off."""
    from fdta_core.faces.identity import RUN_INDEX_MARKER

    wf = dict(WORKFLOW) | {"5": {"class_type": "FDTAACGSampler", "inputs": {"identity_index": "", "seed": 1}}}
    a = fake()
    assert run(_cfg(tmp_path, [a.url], workflow=wf))["done"] == 3
    where = str((tmp_path / "run" / "identities").resolve())
    assert [p["5"]["inputs"]["identity_index"] for p in a.prompts] == [where] * 3
    assert (tmp_path / "run" / "identities" / RUN_INDEX_MARKER).is_file()
    c = plan_chunks(10, 5)[1]
    assert patch_workflow(wf, c, 1, identity_index="")["5"]["inputs"]["identity_index"] == ""
    p = patch_workflow(wf, c, 1, [("FDTAACGSampler", "identity_index", "mine")], identity_index=where)
    assert p["5"]["inputs"]["identity_index"] == "mine"


@pytest.mark.parametrize("seed", [str(2**63), str(2**64 - 1), "-1"])
def test_cli_run_refuses_a_seed_out_of_range(tmp_path, capsys, seed):
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(WORKFLOW))
    rc = cli_main(["run", str(wf), "--run-dir", str(tmp_path / "r"), "--identities", "10", "--seed", seed,
                   "--dry-run"])  # fmt: skip
    assert rc != 0
    err = capsys.readouterr().err
    assert "run --seed" in err and f"seed {seed} is not an integer in 0 .. 2**63-1" in err
    assert str(SEED_MAX) in err and not (tmp_path / "r").exists()


def test_missing_identities_get_repair_rounds_up_to_the_bound(tmp_path, fake):
    """The writer reports what a chunk is missing; the runner queues the same chunk again for just those
    identities (FDTAAttributeSpec.repair = 'ROUND: IDS') until nothing is missing or the bound is
    reached, records every round, and a killed run resumes with the next round, never redoing the chunk."""
    from fdta_core.runner.repair import missing_of, next_repair

    answers = {(0, ""): [3, 7], (0, "1: 3, 7"): [7], (0, "2: 7"): [7], (100, ""): [], (200, ""): []}
    s = fake(missing=lambda start, repair: answers[(start, repair)])
    counts = run(_cfg(tmp_path, [s.url], repair_rounds=2))
    assert counts["done"] == 3
    asked = [(p["1"]["inputs"]["identity_start"], p["1"]["inputs"].get("repair")) for p in s.prompts]
    assert asked == [(0, None), (0, "1: 3, 7"), (0, "2: 7"), (100, None), (200, None)]
    for p in s.prompts:  # the same chunk every time: only the repair input differs
        assert p["1"]["inputs"]["identity_count"] == 100 or p["1"]["inputs"]["identity_start"] == 200
    man = json.loads((tmp_path / "run" / "run-shard0000-of-0001.json").read_text())
    c0 = man["chunks"]["0"]
    assert c0["missing"] == [7] and [r["round"] for r in c0["repairs"]] == [1, 2]
    assert c0["repairs"][0]["identities"] == [3, 7] and c0["repairs"][0]["missing_after"] == [7]
    assert man["chunks"]["1"]["missing"] == [] and man["chunks"]["1"]["repairs"] == []
    assert run(_cfg(tmp_path, [s.url], repair_rounds=2))["done"] == 3 and len(s.prompts) == 5

    # a run killed after chunk 0's first pass resumes with repair round 1 (the chunk is not redone)
    cfg = _cfg(tmp_path / "k", [s.url], repair_rounds=2, identities=100)
    m = RunManifest(cfg.manifest_path(), cfg.run_key(), cfg.chunks())
    m.mark(cfg.chunks()[0], ChunkState.RUNNING, attempts=1, missing=[3, 7])
    before = len(s.prompts)
    assert run(cfg)["done"] == 1
    assert [p["1"]["inputs"].get("repair") for p in s.prompts[before:]] == ["1: 3, 7", "2: 7"]
    # --repair-rounds 0 never repairs; a workflow whose writer reports nothing has nothing to repair
    assert next_repair([3], 0, 0) is None and next_repair([], 0, 2) is None
    assert missing_of({"9": {"text": ["x"]}}) is None and missing_of({"4": {"fdta_missing": [2, 1]}}) == [
        1,
        2,
    ]
    with pytest.raises(ConfigError, match="repair rounds"):
        _cfg(tmp_path, [s.url], repair_rounds=-1)


# ------------------------------------------------------------------ old widget names (issue 19: node set reshaped)
def test_old_widget_names_are_aliases_or_clear_errors():
    """``--set`` with a widget name from before the node set was reshaped: a renamed input is renamed, an
    input that moved to FDTAACGOptions goes to the options node linked into the sampler, and a workflow
    without one is told what to add."""
    from fdta_core.runner.overrides import check_overrides

    sets = ["FDTAAgeLoader.dtype=fp32", "FDTASTGLoader.checkpoint=dcface_3x3.ckpt",
            "FDTAACGSampler.uniqueness_threshold=0.4", "FDTAACGSampler.check_age=false"]  # fmt: skip
    opts = next(k for k, n in SHIPPED.items() if n["class_type"] == "FDTAACGOptions")
    out = check_overrides(SHIPPED, [parse_override(s) for s in sets], None)
    assert out == [
        ("FDTAAgeLoader", "precision", "fp32"),
        ("FDTASTGLoader", "model_name", "dcface_3x3.ckpt"),
        (opts, "uniqueness_threshold", 0.4),
        (opts, "check_age", False),
    ]
    p = patch_workflow(SHIPPED, plan_chunks(10, 5)[0], 1, out)
    assert p[opts]["inputs"]["uniqueness_threshold"] == 0.4 and "uniqueness_threshold" not in p["7"]["inputs"]
    bare = {k: v for k, v in SHIPPED.items() if k != opts}
    bare["7"] = {**bare["7"], "inputs": {k: v for k, v in bare["7"]["inputs"].items() if k != "options"}}
    with pytest.raises(ConfigError, match="moved to FDTAACGOptions.*add a FDTAACGOptions node"):
        check_overrides(bare, [parse_override("FDTAACGSampler.retries=3")], OBJECT_INFO)


def test_an_old_api_workflow_is_upgraded_or_refused(tmp_path):
    from fdta_core.runner.overrides import upgrade_workflow

    old = {"1": {"class_type": "FDTAAgeLoader", "inputs": {"model_name": "sam.pt", "device": "auto", "dtype": "fp16"}},
           "2": {"class_type": "FDTASTGLoader", "inputs": {"checkpoint": "dcface_5x5.ckpt"}}}  # fmt: skip
    up = upgrade_workflow(old)
    assert up["1"]["inputs"] == {"model_name": "sam.pt", "device": "auto", "precision": "fp16"}
    assert up["2"]["inputs"] == {"model_name": "dcface_5x5.ckpt"}
    old["3"] = {"class_type": "FDTAACGSampler", "inputs": {"steps": 2, "control_preprocess": "none"}}
    with pytest.raises(ConfigError, match=r"node 3 \(FDTAACGSampler\) sets control_preprocess, which moved"):
        upgrade_workflow(old)
    wf = tmp_path / "old.json"
    wf.write_text(json.dumps(old))
    with pytest.raises(ConfigError, match="saved with an older FDTA"):
        RunConfig.from_file(wf, run_dir=tmp_path / "r", identities=2, chunk_size=1, seed=1, servers=[])


def test_cli_run_prints_the_per_stage_table_of_the_run_so_far(tmp_path, fake, capsys):
    """After a run, the stage timings every done chunk reported are summed per stage: a table on stderr
    and ``stages`` in the JSON line (``--json``: the JSON only); a resumed run counts earlier chunks."""
    s = fake()
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(WORKFLOW))
    base = ["run", str(wf), "--run-dir", str(tmp_path / "r"), "--chunk-size", "100", "--seed", "3",
            "--server", s.url]  # fmt: skip
    assert cli_main([*base, "--identities", "200"]) == 0
    out, err = capsys.readouterr()
    summary = json.loads(out.strip().splitlines()[-1])["stages"]
    rows = {r["stage"]: r for r in summary["stages"]}
    assert list(rows) == ["stg", "write"]
    assert rows["stg"]["chunks"] == 2 and rows["stg"]["images"] == 20 and rows["stg"]["seconds"] == 4.0
    assert rows["stg"]["images_per_s"] == 5.0 and rows["write"]["images_per_s"] == 20.0
    assert abs(rows["stg"]["share"] - 0.8) < 1e-9 and summary["chunks_done"] == 2
    assert "per-stage time" in err and "FDTASTGMixer" in err and "2 chunk(s) done" in err
    capsys.readouterr()
    assert cli_main([*base, "--identities", "200", "--json"]) == 0  # nothing left to do: the table stays
    out, err = capsys.readouterr()
    assert json.loads(out.strip())["stages"]["stages"][0]["images"] == 20
    assert "per-stage time" not in err


def _index_files(folder, chunks):
    """Run-index files: ``chunks`` maps (start, end) -> {identity: unit vector}."""
    from fdta_core.faces.identity import IdentityIndex, RunIndex

    run = RunIndex(folder)
    for (s, e), vecs in chunks.items():
        idx = IdentityIndex()
        for ident, v in vecs.items():
            idx.add(f"identity {ident}", v, ident)
        run.save_chunk(s, e, idx)


def test_cross_chunk_duplicates_are_pairs_of_different_chunks(tmp_path):
    """Chunks generated at the same time cannot see each other: the end-of-run check finds their shared
    people (and only pairs across chunks, with the exact cosine, a < b)."""
    from fdta_core.runner.finish import cross_chunk_duplicates

    rng = np.random.default_rng(1)
    v = rng.normal(size=(8, 64))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    twin = 0.9 * v[1] + np.sqrt(1 - 0.81) * v[7]  # identity 6 of chunk 5-10 ~ identity 1 of chunk 0-5
    _index_files(tmp_path / "ids", {(0, 5): {0: v[0], 1: v[1], 2: v[2]}, (5, 10): {5: v[3], 6: twin}})
    dups = cross_chunk_duplicates(tmp_path / "ids", 0.5)
    assert [d["identities"] for d in dups] == [[1, 6]]
    assert dups[0]["chunks"] == ["000000000-000000005", "000000005-000000010"]
    assert abs(dups[0]["cosine"] - float(v[1] @ twin / np.linalg.norm(twin))) < 1e-3
    assert cross_chunk_duplicates(tmp_path / "ids", 0.95) == []
    assert cross_chunk_duplicates(tmp_path / "nowhere", 0.5) == []


def test_cli_run_reports_duplicates_between_chunks_with_the_workflows_threshold(tmp_path, fake, capsys):
    """``fdta run`` checks the whole run's identity index at the end, with the options node's threshold
    after --set overrides, and says which identities and how to fix it (stderr, and the JSON line)."""
    rng = np.random.default_rng(2)
    v = rng.normal(size=(4, 64))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    twin = 0.7 * v[0] + np.sqrt(1 - 0.49) * v[3]  # cosine 0.7 to identity 0
    wf_nodes = json.loads(json.dumps(WORKFLOW)) | {
        "5": {"class_type": "FDTAACGOptions", "inputs": {"uniqueness_threshold": 0.3}},
        "6": {"class_type": "FDTAACGSampler", "inputs": {"plan": ["1", 0], "options": ["5", 0], "seed": 1}},
    }
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(wf_nodes))
    for run_dir in ("r", "r2"):
        chunks = {(0, 100): {0: v[0], 1: v[1]}, (100, 200): {150: twin}}
        _index_files(tmp_path / run_dir / "identities", chunks)
    s = fake(object_info=OBJECT_INFO)
    base = ["run", str(wf), "--identities", "200", "--chunk-size", "100", "--seed", "3", "--server", s.url]
    assert cli_main([*base, "--run-dir", str(tmp_path / "r")]) == 0
    out, err = capsys.readouterr()
    summary = json.loads(out.strip().splitlines()[-1])
    assert [d["identities"] for d in summary["cross_chunk_duplicates"]] == [[0, 150]]
    assert "identity 0 (chunk 000000000-000000100) ~ identity 150" in err and "fdta audit" in err
    # a stricter threshold set for the run: the pair is no longer the same person
    assert (
        cli_main(
            [*base, "--run-dir", str(tmp_path / "r2"), "--set", "FDTAACGOptions.uniqueness_threshold=0.8"]
        )
        == 0
    )
    out, err = capsys.readouterr()
    assert json.loads(out.strip().splitlines()[-1])["cross_chunk_duplicates"] == []
    assert "same person" not in err
    # the run's index turned off: nothing to check (not the current folder's files)
    assert cli_main([*base, "--run-dir", str(tmp_path / "r3"), "--identity-index", ""]) == 0
    assert "cross_chunk_duplicates" not in json.loads(capsys.readouterr().out.strip().splitlines()[-1])
