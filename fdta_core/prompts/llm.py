"""LLM-written face descriptions through ChatGPT or any OpenAI-compatible chat-completions server.

As in FDTA, a language model writes the 12-field description of each identity from its stratified
attributes; the grammar then assembles the SD 1.5 prompt from those phrases (so it still fits CLIP's
window). Design points, each for a reason:

* Several identities per request, structured JSON validated against a schema: ``response_format``
  ``json_schema`` where the server supports it, else ``json_object``, else plain text parsing (the
  downgrade happens on a 400/422 answer and is remembered for the session).
* A disk cache entry per identity, keyed by everything that affects the answer (model, sanitised
  base_url, template version, the request text, attributes, index, seed, temperature, batch size) and
  never by the key: reruns and resumed runs cost nothing and give the same prompts.
* Answers are validated per identity (schema, phrase length, gender word, age number, race wording);
  invalid ones are asked again, and an answer that is not JSON at all (often cut off by an output
  limit) splits its batch in halves. ``concurrency`` > 1 keeps several requests in flight; the
  result does not depend on it.
* Retries with exponential backoff on 429, 5xx, timeouts and connection errors, honouring
  ``Retry-After`` (a 429 for an exhausted quota is not retried); then the failure policy: ``"fallback"`` keeps the grammar prompt and records
  ``prompt_source="llm-fallback"`` (and so provenance), ``"error"`` raises :class:`ExternalServiceError`.
* The API key is an argument (resolved from the environment by :func:`resolve_api_key`), never part of
  :class:`LLMSettings`, the cache, the plan or a log line; error texts are redacted before use.

``openai`` is imported lazily so the rest of FDTA works without it.
"""

from __future__ import annotations

import dataclasses
import email.utils
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..errors import ConfigError, ExternalServiceError, check_choice
from ..fsutil import atomic_write_text
from ..plan import FIELDS, IdentityPlan, IdentitySpec
from ..seeds import derive_seed
from .grammar import GRAMMAR_VERSION, assemble, sanitize_phrase
from .spec import default_spec, parse_spec

log = logging.getLogger(__name__)

#: Bump whenever the request wording or schema changes: it is part of every cache key.
TEMPLATE_VERSION = "fdta-llm/1"
POLICIES = ("fallback", "error")
RESPONSE_FORMATS = ("auto", "json_schema", "json_object", "text")
DEFAULT_ENV_VAR = "OPENAI_API_KEY"
_MAX_PHRASE_CHARS = 80
_MAX_PHRASE_WORDS = 12
_GENDER_WORDS = {
    "female": ({"woman", "female", "lady", "girl"}, {"man", "male", "gentleman", "boy"}),
    "male": ({"man", "male", "gentleman", "boy"}, {"woman", "female", "lady", "girl"}),
}

SYSTEM_PROMPT = """You describe synthetic human faces for a Stable Diffusion 1.5 photo prompt.
For every identity you receive its id and target attributes. Return JSON: an object with the key
"identities", a list holding one object per identity with its "id" and one short phrase per field:
{fields}.
Rules for each phrase: English, 1 to 8 words, concrete and visual, no full sentences, no names, no
brackets, no colons, no commas. Keep every given attribute value verbatim inside its phrase and add
consistent visual detail (for example eyes "hazel" -> "bright hazel eyes"). "gender" is "woman" or
"man" as given; "age" is "<N>-year-old" with the given number; "race" keeps the given wording.
Make identities within one request clearly different from each other."""


@dataclass(frozen=True)
class LLMSettings:
    """Everything about the LLM call except the key (which is passed separately, never stored)."""

    model: str = "gpt-4o-mini"
    base_url: str | None = None
    temperature: float = 0.7
    batch_size: int = 8
    concurrency: int = 1
    failure_policy: str = "fallback"
    use_cache: bool = True
    cache_dir: str | None = None
    timeout_s: float = 60.0
    max_attempts: int = 5
    backoff_base_s: float = 1.0
    backoff_max_s: float = 30.0
    max_retry_after_s: float = 120.0
    response_format: str = "auto"

    def validate(self) -> LLMSettings:
        if not self.model or not self.model.strip():
            raise ConfigError(
                "model name is empty", where="model", fix="give a model such as gpt-4o-mini or llama3.1."
            )
        check_choice(None, "failure_policy", self.failure_policy, POLICIES, error=ConfigError)
        check_choice(None, "response_format", self.response_format, RESPONSE_FORMATS, error=ConfigError)
        if not 1 <= int(self.batch_size) <= 64:
            raise ConfigError(
                f"batch_size {self.batch_size} out of range", where="batch_size", fix="use 1 to 64."
            )
        if not 1 <= int(self.concurrency) <= 32:
            raise ConfigError(
                f"concurrency {self.concurrency} out of range", where="concurrency", fix="use 1 to 32."
            )
        if not 0.0 <= float(self.temperature) <= 2.0:
            raise ConfigError(
                f"temperature {self.temperature} out of range", where="temperature", fix="use 0 to 2."
            )
        if self.max_attempts < 1 or self.timeout_s <= 0:
            raise ConfigError("max_attempts must be >= 1 and timeout_s > 0", where="llm settings")
        if self.base_url:
            parts = urlsplit(self.base_url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ConfigError(
                    f"base_url {sanitize_url(self.base_url)!r} is not an http(s) URL",
                    where="base_url",
                    fix="use e.g. http://127.0.0.1:11434/v1 (Ollama) or leave it empty for OpenAI.",
                )
        return self


# ------------------------------------------------------------------------------------- secrets
def resolve_api_key(env_var: str | None = DEFAULT_ENV_VAR, *, fallback: str | None = None) -> str | None:
    """The API key from the environment variable ``env_var`` (default ``OPENAI_API_KEY``), else
    ``fallback`` (e.g. a ComfyUI user setting); None when neither is set."""
    name = (env_var or DEFAULT_ENV_VAR).strip()
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ConfigError(
            f"{name[:3]}... is not an environment variable name",
            where="api_key_env",
            fix="give the NAME of the variable that holds the key (e.g. OPENAI_API_KEY), never the key itself.",
        )
    value = os.environ.get(name, "").strip()
    if value:
        return value
    return fallback.strip() if fallback and fallback.strip() else None


def redact(text: str, secret: str | None) -> str:
    """``text`` with ``secret`` (and anything that looks like an ``sk-`` key) replaced by ``***``."""
    if secret:
        text = text.replace(secret, "***")
    return re.sub(r"sk-[A-Za-z0-9_\-]{8,}", "sk-***", text)


def sanitize_url(url: str | None) -> str:
    """``url`` without user info, query or fragment (a key there must never reach a cache or a log)."""
    if not url:
        return "https://api.openai.com/v1"
    parts = urlsplit(url.strip())
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


# ------------------------------------------------------------------------------------- cache
def default_cache_dir() -> Path:
    env = os.environ.get("FDTA_CACHE_DIR")
    base = Path(env) if env else Path(os.path.expanduser("~")) / ".cache" / "fdta"
    return base / "llm"


class DescriptionCache:
    """One JSON file per identity description under ``root/<2 hex>/<sha256>.json`` (atomic writes)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    @staticmethod
    def key(material: Mapping[str, Any]) -> str:
        return hashlib.sha256(json.dumps(material, sort_keys=True, ensure_ascii=True).encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, str] | None:
        path = self._path(key)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable LLM cache entry %s (%s)", path, exc)
            return None
        desc = data.get("description") if isinstance(data, dict) else None
        if not isinstance(desc, dict) or not all(isinstance(v, str) for v in desc.values()):
            return None
        return desc

    def put(self, key: str, material: Mapping[str, Any], description: Mapping[str, str]) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {"format": "fdta-llm-cache/1", "material": dict(material), "description": dict(description)}
        atomic_write_text(path, json.dumps(record, indent=1, ensure_ascii=False, sort_keys=True), fsync=False)


# ------------------------------------------------------------------------------------- request
def response_schema(fields: Sequence[str]) -> dict[str, Any]:
    item = {
        "type": "object",
        "properties": {"id": {"type": "integer"}, **{f: {"type": "string"} for f in fields}},
        "required": ["id", *fields],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {"identities": {"type": "array", "items": item}},
        "required": ["identities"],
        "additionalProperties": False,
    }


def build_messages(batch: Sequence[IdentitySpec], fields: Sequence[str]) -> list[dict[str, str]]:
    payload = {
        "identities": [{"id": i.index, "attributes": {f: i.attributes[f] for f in fields}} for i in batch]
    }
    return [
        {"role": "system", "content": SYSTEM_PROMPT.format(fields=", ".join(f'"{f}"' for f in fields))},
        {"role": "user", "content": json.dumps(payload, ensure_ascii=False)},
    ]


_SYSTEM_HASH = hashlib.sha256(SYSTEM_PROMPT.encode()).hexdigest()[:16]


def _extract_json(text: str) -> Any:
    text = text.strip()
    fence = re.search(r"```(?:json)?\s*(.*?)```", text, re.S)
    if fence:
        text = fence.group(1).strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        start, end = text.find("{"), text.rfind("}")
        if 0 <= start < end:
            return json.loads(text[start : end + 1])
        raise


def validate_item(item: Any, ident: IdentitySpec, fields: Sequence[str]) -> dict[str, str]:
    """Check one returned description against the schema and the identity's targets; return the
    sanitised phrases or raise ValueError saying what is wrong."""
    if not isinstance(item, dict):
        raise ValueError("item is not an object")
    out: dict[str, str] = {}
    for f in fields:
        raw = item.get(f)
        if not isinstance(raw, str):
            raise ValueError(f"field {f!r} missing or not a string")
        phrase = sanitize_phrase(raw)
        if not phrase:
            raise ValueError(f"field {f!r} is empty")
        if len(phrase) > _MAX_PHRASE_CHARS or len(phrase.split()) > _MAX_PHRASE_WORDS:
            raise ValueError(f"field {f!r} is too long ({len(phrase.split())} words)")
        out[f] = phrase
    words = lambda s: set(re.findall(r"[a-z]+", s.lower()))  # noqa: E731
    if "gender" in out and ident.gender in _GENDER_WORDS:
        want, other = _GENDER_WORDS[ident.gender]
        w = words(out["gender"])
        if not (w & want) or (w & other):
            raise ValueError(f"gender phrase {out['gender']!r} does not say {ident.gender}")
    if "age" in out and ident.age is not None and str(ident.age) not in re.findall(r"\d+", out["age"]):
        raise ValueError(f"age phrase {out['age']!r} does not state {ident.age}")
    if (
        "race" in out
        and "race" in ident.attributes
        and ident.attributes["race"].lower() not in out["race"].lower()
    ):
        raise ValueError(f"race phrase {out['race']!r} does not keep {ident.attributes['race']!r}")
    return out


# ------------------------------------------------------------------------------------- client
class _Permanent(Exception):
    """A failure that retrying cannot fix (bad key, unknown model, refused request)."""


class _GaveUp(Exception):
    """Transient failures outlasted the retries."""


def _retry_after(exc: Exception) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000.0
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - time.time())
        except (TypeError, ValueError):
            return None


class LLMDescriber:
    """Writes descriptions for identities through one OpenAI-compatible endpoint (sequential requests)."""

    def __init__(
        self,
        settings: LLMSettings,
        *,
        api_key: str | None,
        sleep: Callable[[float], None] = time.sleep,
        client: Any | None = None,
    ) -> None:
        self.settings = settings.validate()
        self._key = api_key
        self._sleep = sleep
        self._client = client
        self._format = "json_schema" if settings.response_format == "auto" else settings.response_format
        self.requests = 0  # HTTP requests made (for tests and logs)
        self._lock = threading.Lock()
        cache_root = settings.cache_dir or default_cache_dir()
        self.cache = DescriptionCache(cache_root) if settings.use_cache else None

    # -- plumbing -------------------------------------------------------------------------------
    def _get_client(self):
        if self._client is None:
            try:
                import openai
            except ImportError as exc:
                raise ExternalServiceError(
                    "the 'openai' package is not installed",
                    where="FDTAAttributePrompt",
                    fix="pip install openai (in ComfyUI's Python), or disable the LLM.",
                ) from exc
            key = self._key
            if not key:
                if self.settings.base_url:
                    key = "no-key"  # local servers (Ollama, vLLM, LM Studio) accept any key
                    log.info(
                        "no API key found; sending a placeholder to %s", sanitize_url(self.settings.base_url)
                    )
                else:
                    raise ExternalServiceError(
                        "no OpenAI API key found",
                        where="FDTAAttributePrompt",
                        fix=f"set the environment variable {DEFAULT_ENV_VAR} (or the variable named in api_key_env) "
                        "before starting ComfyUI, or set base_url to a local OpenAI-compatible server.",
                    )
            self._client = openai.OpenAI(
                api_key=key,
                base_url=self.settings.base_url or None,
                timeout=self.settings.timeout_s,
                max_retries=0,
            )
        return self._client

    def _material(self, ident: IdentitySpec, run_seed: int, fields: Sequence[str]) -> dict[str, Any]:
        s = self.settings
        return {
            "template": TEMPLATE_VERSION,
            "system": _SYSTEM_HASH,
            "model": s.model.strip(),
            "base_url": sanitize_url(s.base_url),
            "temperature": round(float(s.temperature), 4),
            "batch_size": int(s.batch_size),
            "seed": derive_seed(run_seed, "llm", ident.index),
            "index": ident.index,
            "fields": list(fields),
            "attributes": {f: ident.attributes[f] for f in fields},
        }

    def _response_format(self, fields: Sequence[str]) -> dict[str, Any] | None:
        if self._format == "json_schema":
            return {
                "type": "json_schema",
                "json_schema": {
                    "name": "fdta_face_descriptions",
                    "strict": True,
                    "schema": response_schema(fields),
                },
            }
        if self._format == "json_object":
            return {"type": "json_object"}
        return None

    def _downgrade(self, reason: str) -> bool:
        order = ["json_schema", "json_object", "text"]
        if self.settings.response_format != "auto" or self._format == "text":
            return False
        new = order[order.index(self._format) + 1]
        log.warning("server refused response_format=%s (%s); retrying with %s", self._format, reason, new)
        self._format = new
        return True

    def _request(self, batch: Sequence[IdentitySpec], fields: Sequence[str], seed: int) -> str:
        """One chat-completions call with retries; returns the message text or raises."""
        import openai

        s = self.settings
        client = self._get_client()
        attempt = 0
        last = "no attempt made"
        while True:
            kwargs: dict[str, Any] = {
                "model": s.model.strip(),
                "messages": build_messages(batch, fields),
                "temperature": float(s.temperature),
                "seed": seed,
            }
            fmt = self._response_format(fields)
            if fmt is not None:
                kwargs["response_format"] = fmt
            with self._lock:
                self.requests += 1
            try:
                completion = client.chat.completions.create(**kwargs)
                choice = completion.choices[0] if completion.choices else None
                text = choice.message.content if choice is not None and choice.message is not None else None
                return text or ""  # an empty answer is judged (and asked again) like any invalid one
            except (openai.BadRequestError, openai.UnprocessableEntityError) as exc:
                msg = redact(str(exc), self._key)
                if fmt is not None and self._downgrade(msg[:120]):
                    continue
                raise _Permanent(f"request refused: {msg[:300]}") from None
            except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as exc:
                raise _Permanent(f"{type(exc).__name__}: {redact(str(exc), self._key)[:300]}") from None
            except (
                openai.RateLimitError,
                openai.InternalServerError,
                openai.APITimeoutError,
                openai.APIConnectionError,
            ) as exc:
                if getattr(exc, "code", None) == "insufficient_quota":  # a 429 that waiting cannot fix
                    raise _Permanent(f"quota exhausted: {redact(str(exc), self._key)[:300]}") from None
                wait_hint = _retry_after(exc)
                last = f"{type(exc).__name__}: {redact(str(exc), self._key)[:200]}"
            except openai.APIStatusError as exc:
                if exc.status_code not in (408, 409) and exc.status_code < 500:
                    raise _Permanent(f"HTTP {exc.status_code}: {redact(str(exc), self._key)[:300]}") from None
                wait_hint = _retry_after(exc)
                last = f"HTTP {exc.status_code}: {redact(str(exc), self._key)[:200]}"
            except openai.OpenAIError as exc:  # anything else the client raises (e.g. an unparsable body)
                raise _Permanent(f"{type(exc).__name__}: {redact(str(exc), self._key)[:300]}") from None
            attempt += 1
            if attempt >= s.max_attempts:
                raise _GaveUp(f"gave up after {attempt} attempts; last error: {last}")
            if wait_hint is not None and wait_hint > s.max_retry_after_s:
                raise _GaveUp(
                    f"server asked to retry after {wait_hint:.0f} s (limit {s.max_retry_after_s:.0f} s); {last}"
                )
            backoff = min(s.backoff_max_s, s.backoff_base_s * (2 ** (attempt - 1)))
            wait = max(backoff, wait_hint or 0.0)
            log.warning(
                "LLM request failed (%s); retry %d/%d in %.2f s", last, attempt, s.max_attempts - 1, wait
            )
            self._sleep(wait)

    # -- public -------------------------------------------------------------------------------
    def describe(
        self,
        identities: Sequence[IdentitySpec],
        run_seed: int,
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> tuple[dict[int, dict[str, str]], dict[int, str]]:
        """Descriptions (index -> field -> phrase) for ``identities`` and errors (index -> reason) for
        those that could not be described. Cached identities make no request."""
        s = self.settings
        total = len(identities)
        results: dict[int, dict[str, str]] = {}
        errors: dict[int, str] = {}
        todo: list[IdentitySpec] = []
        keys: dict[int, tuple[str, dict[str, Any]]] = {}
        for ident in identities:
            fields = [f for f in FIELDS if f in ident.attributes]
            material = self._material(ident, run_seed, fields)
            key = DescriptionCache.key(material)
            keys[ident.index] = (key, material)
            hit = self.cache.get(key) if self.cache else None
            if hit is not None and set(hit) == set(fields):
                results[ident.index] = hit
            else:
                todo.append(ident)
        if len(results):
            log.info("LLM cache: %d of %d descriptions found", len(results), total)
        if progress is not None:
            progress(len(results), total)
        if todo:
            self._get_client()  # configuration problems (no key, no openai) raise whatever the policy
        batches = [todo[b : b + s.batch_size] for b in range(0, len(todo), s.batch_size)]
        done = len(results)

        def work(batch: list[IdentitySpec]) -> tuple[dict[int, dict[str, str]], dict[int, str]]:
            return self._describe_batch(batch, run_seed, keys)

        if s.concurrency <= 1 or len(batches) <= 1:
            outcomes = (work(b) for b in batches)
            for got, failed in outcomes:
                results.update(got)
                errors.update(failed)
                done += len(got) + len(failed)
                if progress is not None:
                    progress(done, total)
        else:
            from concurrent.futures import ThreadPoolExecutor, as_completed

            with ThreadPoolExecutor(max_workers=min(s.concurrency, len(batches))) as pool:
                futures = [pool.submit(work, b) for b in batches]
                try:
                    for fut in as_completed(futures):
                        got, failed = fut.result()
                        results.update(got)
                        errors.update(failed)
                        done += len(got) + len(failed)
                        if progress is not None:  # called on this thread: ComfyUI's interrupt check
                            progress(done, total)
                except BaseException:
                    for fut in futures:
                        fut.cancel()
                    raise
        return results, errors

    def _describe_batch(
        self, batch: list[IdentitySpec], run_seed: int, keys: dict[int, tuple[str, dict[str, Any]]]
    ) -> tuple[dict[int, dict[str, str]], dict[int, str]]:
        """Describe one batch. An answer that is not JSON at all (often cut off by the server's output
        limit) splits a multi-identity batch in halves; other invalid answers are asked again."""
        s = self.settings
        fields = [f for f in FIELDS if f in batch[0].attributes]
        results: dict[int, dict[str, str]] = {}
        errors: dict[int, str] = {}
        work: list[tuple[list[IdentitySpec], int]] = [(batch, s.max_attempts)]
        while work:
            part, attempts_left = work.pop(0)
            pending = {i.index: i for i in part}
            seed = derive_seed(run_seed, "llm", part[0].index) & 0x7FFFFFFF
            try:
                text = self._request(part, fields, seed)
            except (_Permanent, _GaveUp) as exc:
                errors.update({i: str(exc) for i in pending})
                continue
            problems, parsed = self._accept(text, pending, fields, results, keys)
            if not pending:
                continue
            reason = "; ".join(problems[:3]) or "identities missing from the answer"
            rest = list(pending.values())
            if not parsed and len(rest) > 1:
                half = len(rest) // 2
                log.warning(
                    "LLM answer is not JSON (%s); splitting %d identities in two requests", reason, len(rest)
                )
                work[:0] = [(rest[:half], attempts_left), (rest[half:], attempts_left)]
            elif attempts_left > 1:
                log.warning("LLM answer invalid for %d identities (%s); asking again", len(rest), reason)
                self._sleep(min(s.backoff_max_s, s.backoff_base_s))
                work.insert(0, (rest, attempts_left - 1))
            else:
                errors.update({i: f"invalid answer: {reason}" for i in pending})
        return results, errors

    def _accept(self, text, pending, fields, results, keys) -> tuple[list[str], bool]:
        """Take the valid descriptions out of ``text`` (removing them from ``pending``); return the
        problems found and whether the answer was JSON at all."""
        try:
            data = _extract_json(text)
        except (json.JSONDecodeError, ValueError):
            return [f"answer is not JSON ({text[:60]!r})"], False
        items = data.get("identities") if isinstance(data, dict) else data if isinstance(data, list) else None
        if not isinstance(items, list):
            return ["answer has no 'identities' list"], True
        problems = []
        for item in items:
            idx = item.get("id") if isinstance(item, dict) else None
            if isinstance(idx, str) and idx.strip().isdigit():
                idx = int(idx)
            if not isinstance(idx, int) or idx not in pending:
                problems.append(f"unexpected id {idx!r}")
                continue
            try:
                desc = validate_item(item, pending[idx], fields)
            except ValueError as exc:
                problems.append(f"id {idx}: {exc}")
                continue
            results[idx] = desc
            del pending[idx]
            if self.cache:
                key, material = keys[idx]
                self.cache.put(key, material, desc)
        return problems, True


def _style(plan: IdentityPlan):
    spec = parse_spec(plan.spec, source="plan.spec") if plan.spec else default_spec()
    return spec.style


def describe_plan(
    plan: IdentityPlan,
    settings: LLMSettings,
    *,
    api_key: str | None,
    progress: Callable[[int, int], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    client: Any | None = None,
) -> IdentityPlan:
    """Return ``plan`` with LLM-written prompts (``prompt_source="llm"``).

    Identities the LLM could not describe keep their grammar prompt with ``prompt_source=
    "llm-fallback"`` and ``extra["llm_error"]`` when ``settings.failure_policy == "fallback"``; with
    ``"error"`` an :class:`ExternalServiceError` is raised instead.
    """
    describer = LLMDescriber(settings, api_key=api_key, sleep=sleep, client=client)
    results, errors = describer.describe(list(plan.identities), plan.run_seed, progress=progress)
    style = _style(plan)
    prompts = {}
    for index, desc in results.items():
        try:
            prompts[index] = assemble(desc, prefix=style.prefix, suffix=style.suffix, negative=style.negative)
        except ConfigError:  # the LLM's subject (age, race, gender phrases) alone overflows the window
            errors[index] = (
                "description too long: prefix + age, race and gender phrases exceed 75 CLIP tokens"
            )
    if errors and settings.failure_policy == "error":
        first = min(errors)
        raise ExternalServiceError(
            f"the LLM at {sanitize_url(settings.base_url)} (model {settings.model}) failed for {len(errors)} of "
            f"{plan.count} identities; first (#{first}): {errors[first]}",
            where="FDTAAttributePrompt",
            fix="check base_url, model and the API key environment variable, or set failure_policy to "
            "'fallback' to use the grammar prompts for failed identities.",
        )
    out: list[IdentitySpec] = []
    llm_meta = {
        "model": settings.model.strip(),
        "template": TEMPLATE_VERSION,
        "base_url": sanitize_url(settings.base_url),
    }
    for ident in plan.identities:
        if ident.index in prompts:
            desc = results[ident.index]
            fp = prompts[ident.index]
            extra = {**ident.extra, "grammar": GRAMMAR_VERSION, "description": desc, "llm": llm_meta}
            extra.pop("dropped", None)
            if fp.dropped:
                extra["dropped"] = list(fp.dropped)
            out.append(
                dataclasses.replace(
                    ident,
                    prompt=fp.prompt,
                    negative_prompt=fp.negative_prompt,
                    prompt_source="llm",
                    extra=extra,
                )
            )
        else:
            reason = errors.get(ident.index, "not described")
            extra = {**ident.extra, "llm": llm_meta, "llm_error": redact(reason, api_key)[:300]}
            out.append(dataclasses.replace(ident, prompt_source="llm-fallback", extra=extra))
    if errors:
        log.warning(
            "LLM failed for %d of %d identities; using grammar prompts for them (policy 'fallback')",
            len(errors),
            plan.count,
        )
    return dataclasses.replace(plan, identities=tuple(out))
