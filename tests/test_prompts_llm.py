"""The LLM client against a scripted chat-completions server (:mod:`tests.chat_server`): batching,
schema, cache, retries, failure policies, key hygiene."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytest

from fdta_core.errors import ConfigError, ExternalServiceError
from fdta_core.prompts.llm import (
    DescriptionCache,
    LLMSettings,
    describe_plan,
    redact,
    resolve_api_key,
    sanitize_url,
)
from fdta_core.prompts.planner import build_plan
from fdta_core.prompts.spec import default_spec
from tests.chat_server import KEY, ChatServer


@pytest.fixture
def server():
    with ChatServer() as s:
        yield s


@pytest.fixture
def plan():
    return build_plan(default_spec(), 0, 6, 7)


def settings(server, tmp_path, **kw) -> LLMSettings:
    base = dict(
        base_url=server.base_url,
        model="test-model",
        batch_size=3,
        cache_dir=str(tmp_path / "cache"),
        timeout_s=2.0,
        max_attempts=3,
        backoff_base_s=0.01,
        backoff_max_s=0.05,
    )
    base.update(kw)
    return LLMSettings(**base)


def assert_llm(plan_out, plan_in):
    assert [i.index for i in plan_out] == [i.index for i in plan_in]
    for a, b in zip(plan_out, plan_in, strict=True):
        assert a.prompt_source == "llm"
        assert a.attributes == b.attributes and a.gender == b.gender and a.age == b.age
        assert "distinct" in a.prompt and a.prompt != b.prompt
        assert a.extra["description"]["eyes"].startswith("distinct")
        assert a.negative_prompt == b.negative_prompt


def test_success_batches_schema_and_key_header(server, plan, tmp_path):
    out = describe_plan(plan, settings(server, tmp_path), api_key=KEY)
    assert_llm(out, plan)
    assert len(server.requests) == 2  # 6 identities, 3 per request
    req = server.requests[0]
    assert req["auth"] == f"Bearer {KEY}"
    assert req["body"]["response_format"]["type"] == "json_schema"
    schema = req["body"]["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["identities"]["items"]["required"][0] == "id"
    assert req["body"]["model"] == "test-model" and isinstance(req["body"]["seed"], int)


def test_cache_hit_makes_no_request_and_same_result(server, plan, tmp_path):
    s = settings(server, tmp_path)
    first = describe_plan(plan, s, api_key=KEY)
    n = len(server.requests)
    second = describe_plan(plan, s, api_key=KEY)
    assert len(server.requests) == n
    assert first == second and [i.prompt for i in first] == [i.prompt for i in second]
    # a different temperature is a different key -> new requests
    describe_plan(plan, dataclasses.replace(s, temperature=0.3), api_key=KEY)
    assert len(server.requests) > n
    # cache off -> always asks
    m = len(server.requests)
    describe_plan(plan, dataclasses.replace(s, use_cache=False), api_key=KEY)
    assert len(server.requests) == m + 2


def test_malformed_json_splits_the_batch_then_succeeds(server, plan, tmp_path):
    server.script = ["malformed"]
    out = describe_plan(plan, settings(server, tmp_path), api_key=KEY)
    assert_llm(out, plan)
    sizes = [len(json.loads(r["body"]["messages"][-1]["content"])["identities"]) for r in server.requests]
    assert [r["behaviour"] for r in server.requests[:3]] == ["malformed", "ok", "ok"]
    assert sizes == [3, 1, 2, 3]  # the failed batch of 3 was asked again as 1 + 2


def test_malformed_single_identity_is_asked_again(server, plan, tmp_path):
    server.script = ["malformed", "malformed"]
    out = describe_plan(plan, settings(server, tmp_path, batch_size=1), api_key=KEY, sleep=lambda s: None)
    assert_llm(out, plan)
    assert [r["behaviour"] for r in server.requests[:3]] == ["malformed", "malformed", "ok"]


def test_empty_answer_is_asked_again_and_quota_is_permanent(server, plan, tmp_path):
    server.script = ["empty"]
    out = describe_plan(plan, settings(server, tmp_path, batch_size=6), api_key=KEY, sleep=lambda s: None)
    assert_llm(out, plan)
    server.script = ["quota"]
    n = len(server.requests)
    out = describe_plan(plan, settings(server, tmp_path, batch_size=6, use_cache=False), api_key=KEY)
    assert len(server.requests) == n + 1  # no retry: waiting does not refill a quota
    assert (
        all(i.prompt_source == "llm-fallback" for i in out)
        and "quota" in out.identities[0].extra["llm_error"]
    )


def test_description_too_long_for_clip_falls_back(server, plan, tmp_path):
    server.script = ["long"]
    out = describe_plan(plan, settings(server, tmp_path, batch_size=6), api_key=KEY)
    assert all(i.prompt_source == "llm-fallback" for i in out)
    assert "75 CLIP tokens" in out.identities[0].extra["llm_error"]


def test_concurrent_requests_give_the_same_plan(server, plan, tmp_path):
    sequential = describe_plan(plan, settings(server, tmp_path, batch_size=1, use_cache=False), api_key=KEY)
    n = len(server.requests)
    concurrent = describe_plan(
        plan, settings(server, tmp_path, batch_size=1, use_cache=False, concurrency=3), api_key=KEY
    )
    assert len(server.requests) == n + 6
    assert concurrent == sequential


def test_429_then_success_respects_retry_after(server, plan, tmp_path):
    server.script = ["429", "500"]
    waits: list[float] = []
    out = describe_plan(plan, settings(server, tmp_path), api_key=KEY, sleep=waits.append)
    assert_llm(out, plan)
    assert [r["behaviour"] for r in server.requests[:3]] == ["429", "500", "ok"]
    assert len(waits) == 2 and all(0 < w <= 0.05 for w in waits)


def test_retry_after_header_is_honoured(server, plan, tmp_path):
    from fdta_core.prompts import llm

    server.script = ["429:0.5"]
    waits: list[float] = []
    out = describe_plan(plan, settings(server, tmp_path, batch_size=6), api_key=KEY, sleep=waits.append)
    assert_llm(out, plan)
    assert waits == [0.5]  # the server's Retry-After, longer than the 0.01 s backoff
    server.script = ["429:1000"]
    out = describe_plan(plan, settings(server, tmp_path, batch_size=6, use_cache=False), api_key=KEY)
    assert all(i.prompt_source == "llm-fallback" for i in out)
    assert "retry after 1000 s" in out.identities[0].extra["llm_error"]

    class Exc(Exception):
        class response:  # noqa: N801
            headers = {"retry-after": "7"}

    assert llm._retry_after(Exc()) == 7.0
    Exc.response.headers = {"retry-after-ms": "250"}
    assert llm._retry_after(Exc()) == 0.25


def test_timeout_then_success(server, plan, tmp_path):
    server.script = ["sleep:1.5"]
    out = describe_plan(plan, settings(server, tmp_path, timeout_s=0.3), api_key=KEY)
    assert_llm(out, plan)
    assert server.requests[0]["behaviour"] == "sleep:1.5"


def test_schema_refused_downgrades_to_json_object(server, plan, tmp_path):
    server.script = ["400-schema"]
    out = describe_plan(plan, settings(server, tmp_path), api_key=KEY)
    assert_llm(out, plan)
    assert server.requests[1]["body"]["response_format"] == {"type": "json_object"}


def test_plain_text_answers_are_parsed(server, plan, tmp_path):
    out = describe_plan(plan, settings(server, tmp_path, response_format="text"), api_key=KEY)
    assert_llm(out, plan)
    assert "response_format" not in server.requests[0]["body"]


def test_failure_policy_fallback_records_provenance(server, plan, tmp_path):
    server.script = ["500"] * 20
    out = describe_plan(plan, settings(server, tmp_path, max_attempts=2), api_key=KEY, sleep=lambda s: None)
    assert all(i.prompt_source == "llm-fallback" for i in out)
    assert [i.prompt for i in out] == [i.prompt for i in plan]  # grammar prompts kept
    assert (
        "500" in out.identities[0].extra["llm_error"]
        or "InternalServer" in out.identities[0].extra["llm_error"]
    )
    assert KEY not in json.dumps(out.to_dict())


def test_failure_policy_error_raises(server, plan, tmp_path):
    server.script = ["500"] * 20
    with pytest.raises(ExternalServiceError) as err:
        describe_plan(
            plan,
            settings(server, tmp_path, max_attempts=2, failure_policy="error"),
            api_key=KEY,
            sleep=lambda s: None,
        )
    assert "failure_policy" in str(err.value) and KEY not in str(err.value)


def test_auth_error_is_permanent_and_redacted(server, plan, tmp_path):
    server.script = ["401"]
    out = describe_plan(plan, settings(server, tmp_path, batch_size=6), api_key=KEY)
    assert len(server.requests) == 1  # no retry on 401
    assert all(i.prompt_source == "llm-fallback" for i in out)
    assert KEY not in out.identities[0].extra["llm_error"]


def test_invalid_descriptions_are_rejected(server, plan, tmp_path):
    server.script = ["wrong-gender"] * 10
    out = describe_plan(plan, settings(server, tmp_path, max_attempts=2), api_key=KEY, sleep=lambda s: None)
    assert all(i.prompt_source == "llm-fallback" for i in out)
    assert "gender" in out.identities[0].extra["llm_error"]


def test_key_never_on_disk_or_in_logs(server, plan, tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("FDTA_TEST_KEY", KEY)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    caplog.set_level(logging.DEBUG)
    key = resolve_api_key("FDTA_TEST_KEY")
    assert key == KEY
    server.script = ["429", "malformed", "401"]
    s = settings(server, tmp_path, batch_size=2)
    out = describe_plan(plan, s, api_key=key)
    again = describe_plan(plan, s, api_key=key)
    (tmp_path / "plan.json").write_text(json.dumps(again.to_dict()))
    (tmp_path / "plan1.json").write_text(json.dumps(out.to_dict()))
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any("cache" in p.parts for p in files)
    for p in files:
        data = p.read_bytes()
        assert KEY.encode() not in data and b"SECRET" not in data, p
    assert KEY not in caplog.text and "SECRET" not in caplog.text
    assert KEY not in repr(s)


def test_resolve_api_key_and_sanitizers(monkeypatch):
    monkeypatch.delenv("FDTA_NOPE", raising=False)
    assert resolve_api_key("FDTA_NOPE") is None
    assert resolve_api_key("FDTA_NOPE", fallback=" k ") == "k"
    with pytest.raises(ConfigError) as err:
        resolve_api_key("sk-abc123456789")
    assert "sk-abc123456789" not in str(err.value)
    assert sanitize_url("http://user:pw@host:8000/v1/?key=1") == "http://host:8000/v1"
    assert redact(f"Incorrect key {KEY}", KEY) == "Incorrect key ***"
    assert "sk-***" in redact("key sk-abcdefghijkl", None)


def test_no_key_for_openai_default_is_a_clear_error(plan, tmp_path):
    with pytest.raises(ExternalServiceError) as err:
        describe_plan(plan, LLMSettings(cache_dir=str(tmp_path)), api_key=None)
    assert "OPENAI_API_KEY" in str(err.value)


def test_cache_ignores_corrupt_entries(tmp_path):
    cache = DescriptionCache(tmp_path)
    key = cache.key({"a": 1})
    cache.put(key, {"a": 1}, {"eyes": "blue eyes"})
    assert cache.get(key) == {"eyes": "blue eyes"}
    path = next(Path(tmp_path).rglob("*.json"))
    path.write_text("{broken")
    assert cache.get(key) is None


def test_settings_validation():
    with pytest.raises(ConfigError):
        LLMSettings(failure_policy="retry-forever").validate()
    with pytest.raises(ConfigError):
        LLMSettings(base_url="ftp://x").validate()
    with pytest.raises(ConfigError):
        LLMSettings(batch_size=0).validate()


def test_cli_plan_with_llm(server, tmp_path, monkeypatch, capsys):
    from fdta_core.cli import main as cli_main

    monkeypatch.setenv("MY_LLM_KEY", KEY)
    argv = ["plan", "--count", "4", "--seed", "3", "--json", "--llm", "--base-url", server.base_url]
    argv += [
        "--model",
        "m",
        "--cache-dir",
        str(tmp_path / "c"),
        "--api-key-env",
        "MY_LLM_KEY",
        "--concurrency",
        "2",
    ]
    assert cli_main(argv) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["prompt_source"] for r in rows] == ["llm"] * 4
    assert server.requests[0]["auth"] == f"Bearer {KEY}"
    server.script = ["500"] * 50
    argv_err = argv + ["--on-failure", "error", "--no-cache", "--max-attempts", "1"]
    assert cli_main(argv_err) == 2
    err = capsys.readouterr().err
    assert "failed for 4 of 4" in err and KEY not in err
