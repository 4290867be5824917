"""CLIP tokenizer fidelity and the 77-token guarantee of the grammar prompts."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from fdta_core.errors import ConfigError
from fdta_core.prompts import clip_tokenizer as ct
from fdta_core.prompts.grammar import article, assemble, sanitize_phrase
from fdta_core.prompts.planner import build_plan
from fdta_core.prompts.spec import default_spec, parse_spec

REFERENCE = Path(__file__).with_name("data") / "clip_tokens_reference.json"


def test_token_ids_match_transformers_clip_tokenizer():
    cases = json.loads(REFERENCE.read_text(encoding="utf-8"))["cases"]
    tok = ct.get_tokenizer()
    assert len(cases) >= 30
    for case in cases:
        assert tok.encode(case["text"]) == case["ids"], case["text"]
    assert tok.bos_id == 49406 and tok.eos_id == 49407
    assert tok.decode(tok.encode("a photo of a cat")) == "a photo of a cat"


def test_ascii_fast_path_equals_unicode_scanner():
    r = random.Random(0)
    alphabet = "abcXYZ019 ,.-'!<|>_\t\n"
    for _ in range(5000):
        text = "".join(r.choice(alphabet) for _ in range(r.randint(0, 30)))
        text += r.choice(["", "'s", "<|endoftext|>", "'LL"])
        text = text.lower()
        assert ct._ASCII_PAT.findall(text) == ct._split_unicode(text), text


def test_vocab_integrity_is_checked():
    with pytest.raises(ValueError):
        ct.CLIPTokenizer(b"not the vocabulary")


def test_every_prompt_of_10000_identities_fits_the_clip_window():
    spec = default_spec()
    plan = build_plan(spec, 0, 10_000, 31337)
    tok = ct.get_tokenizer()
    tok._counts.clear()  # count every prompt afresh
    allowed = {spec.style.prefix}
    for f in spec.fields.values():
        allowed.update(f.phrase(v) for v in f.all_values())
    allowed.update(spec.style.suffix)
    negative = plan.identities[0].negative_prompt
    assert len(tok.encode(negative)) <= ct.MAX_CONTENT_TOKENS
    for ident in plan:
        ids = tok.encode(ident.prompt)
        assert len(ids) + 2 <= ct.CONTEXT_LENGTH, ident.prompt
        assert ident.negative_prompt == negative
        # nothing cut mid-word: after the subject, every ", "-separated part is a whole phrase
        parts = ident.prompt.split(", ")
        head = ", ".join(parts[:2])
        assert head.startswith(spec.style.prefix) and head.endswith(("woman", "man"))
        for part in parts[2:]:
            assert part in allowed, part
        # fields keep priority order: a dropped field is never followed by a lower-priority field
        dropped = ident.extra.get("dropped", [])
        assert all(d.startswith("style:") for d in dropped)  # the default spec always fits all 12 fields


def test_long_phrases_drop_lowest_priority_whole():
    long = "extraordinarily luminous iridescent multicolored kaleidoscopic"
    phrases = {
        "gender": "woman",
        "age": "40-year-old",
        "race": "Black",
        **{
            f: f"{long} {f}"
            for f in (
                "eyes",
                "eyebrows",
                "nose",
                "face_shape",
                "lips",
                "hair",
                "jawline",
                "cheeks",
                "expression",
            )
        },
    }
    fp = assemble(phrases, prefix="photo of", suffix=("sharp focus",), negative="blurry, cartoon")
    assert fp.tokens <= 75 and ct.count_tokens(fp.prompt) == fp.tokens
    kept = [p for p in fp.prompt.split(", ")[1:]]
    assert (
        kept
        == [
            phrases[f]
            for f in (
                "eyes",
                "eyebrows",
                "nose",
                "face_shape",
                "lips",
                "hair",
                "jawline",
                "cheeks",
                "expression",
            )
        ][: len(kept)]
    )
    assert fp.dropped and fp.dropped[-1] == "style:sharp focus"
    assert fp.negative_prompt == "blurry, cartoon"


def test_negative_prompt_is_trimmed_by_whole_terms():
    terms = [f"bad thing number{i}" for i in range(60)]
    fp = assemble({"gender": "man"}, negative=", ".join(terms))
    assert ct.count_tokens(fp.negative_prompt) <= 75
    assert all(t in terms for t in fp.negative_prompt.split(", "))


def test_article_and_sanitizer():
    assert article("18-year-old") == "an" and article("80-year-old") == "an" and article("8-year-old") == "an"
    assert article("34-year-old") == "a" and article("East Asian") == "an" and article("Black") == "a"
    assert sanitize_phrase("  (bright:1.4) [blue]\n eyes, wide. ") == "bright 1.4 blue eyes wide"
    assert sanitize_phrase("embedding:evil") == "embedding evil"  # no colon: not ComfyUI's embedding syntax


def test_spec_whose_subject_cannot_fit_is_refused():
    with pytest.raises(ConfigError) as err:
        parse_spec({"fields": {"race": {"values": ["word " * 40]}}})
    assert "CLIP tokens" in str(err.value) or "60 characters" in str(err.value)
    with pytest.raises(ConfigError):
        parse_spec({"fields": {"gender": ["male"]}, "prompt": {"prefix": "very " * 74}})
