"""Formulated prompts: the 12-field description -> an SD 1.5 prompt and negative prompt.

The prompt is ``prefix`` + the subject (age, race, gender as one phrase) + one phrase per field in
priority order (:data:`fdta_core.plan.FIELDS`) + optional style phrases, joined by ", ". Phrases are
atomic: one that would push the prompt past CLIP's 75 content tokens is left out whole (the next,
shorter one may still fit), so nothing is ever cut mid-word. Counting uses the real CLIP BPE
(:mod:`.clip_tokenizer`). Works offline, deterministic, no key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import ConfigError
from ..plan import FIELDS
from .clip_tokenizer import MAX_CONTENT_TOKENS, get_tokenizer

#: Bump when the wording changes (it is part of the LLM cache key and of provenance).
GRAMMAR_VERSION = "fdta-grammar/1"
_NOUNS = {"female": "woman", "male": "man"}
_SEP = ", "
_SAFE = re.compile(r"[()\[\]{}\\:<>|]")


@dataclass(frozen=True)
class FormulatedPrompt:
    prompt: str
    negative_prompt: str
    tokens: int
    dropped: tuple[str, ...]  # fields / style phrases left out to fit the window


def article(word: str) -> str:
    """'a' or 'an' for the spoken form of ``word`` (digits included: 'an 18-year-old', 'an 80-year-old')."""
    w = word.strip().lower()
    if not w:
        return "a"
    m = re.match(r"\d+", w)
    if m:
        digits = m.group(0)
        return "an" if digits.startswith("8") or digits in ("11", "18") else "a"
    if w.startswith(("uni", "use", "usu", "eu", "one", "ony")):
        return "a"
    if w.startswith(("hour", "honest", "heir")):
        return "an"
    return "an" if w[0] in "aeiou" else "a"


def sanitize_phrase(text: str) -> str:
    """Make free text (from an LLM) safe inside a prompt: no ComfyUI syntax, single spaces, no
    leading/trailing punctuation."""
    text = _SAFE.sub(" ", str(text)).replace(",", " ").replace("\n", " ")
    return " ".join(text.split()).strip(" .;-")


def subject_phrase(parts: Mapping[str, str]) -> str:
    """'an 18-year-old East Asian woman' from the (already phrased) age, race and gender parts."""
    words = [p for p in (parts.get("age"), parts.get("race"), parts.get("gender") or "person") if p]
    body = " ".join(words)
    return f"{article(body)} {body}"


def _fit(
    head: str, optional: list[tuple[str, str]], budget: int, *, exact: bool = False
) -> tuple[str, int, tuple[str, ...]]:
    """Append ``optional`` (name, phrase) pairs to ``head`` in order while the CLIP count stays <= budget."""
    tok = get_tokenizer()
    text = head
    used = tok.count(text)
    if used > budget:
        raise ConfigError(
            f"the fixed part of the prompt already has {used} CLIP tokens (limit {budget}): {head!r}",
            where="spec.prompt",
            fix="shorten the prefix or the age/race/gender values.",
        )
    dropped: list[str] = []
    for name, phrase in optional:
        if not phrase:
            continue
        candidate = f"{text}{_SEP}{phrase}" if text else phrase
        # Phrases are separated by ", " so counts add up; verify the exact count only near the limit.
        est = used + (1 if text else 0) + tok.count(phrase)
        n = est if (est <= budget - 2 and not exact) else tok.count(candidate)
        if n <= budget:
            text, used = candidate, n
        else:
            dropped.append(name)
    if not exact:
        real = tok.count(text)
        if real != used:  # a phrase ending in punctuation merged with the separator: count exactly
            return _fit(head, optional, budget, exact=True)
    return text, used, tuple(dropped)


def assemble(
    phrases: Mapping[str, str],
    *,
    prefix: str = "",
    suffix: tuple[str, ...] = (),
    negative: str = "",
    budget: int = MAX_CONTENT_TOKENS,
) -> FormulatedPrompt:
    """Build the prompt from per-field phrases (field -> phrase; absent/empty fields are skipped)."""
    subject = subject_phrase({k: phrases.get(k, "") for k in ("age", "race", "gender")})
    head = f"{prefix} {subject}".strip() if prefix else subject
    optional = [(f, phrases.get(f, "")) for f in FIELDS if f not in ("gender", "race", "age")]
    optional += [(f"style:{s}", s) for s in suffix]
    text, used, dropped = _fit(head, optional, budget)
    neg, _, _ = _fit("", [(f"negative:{t}", t.strip()) for t in negative.split(",")], budget)
    return FormulatedPrompt(prompt=text, negative_prompt=neg, tokens=used, dropped=dropped)


def grammar_phrases(spec, attributes: Mapping[str, str]) -> dict[str, str]:
    """Per-field phrases from a spec's templates: {'eyes': 'hazel eyes', 'age': '34-year-old', ...}."""
    out: dict[str, str] = {}
    for name, value in attributes.items():
        if name == "gender":
            out[name] = _NOUNS.get(value, value)
        elif name == "age":
            out[name] = f"{value}-year-old"
        elif name in spec.fields:
            out[name] = spec.fields[name].phrase(value)
    return out


def formulate(spec, attributes: Mapping[str, str]) -> FormulatedPrompt:
    """The grammar prompt of one identity."""
    st = spec.style
    return assemble(
        grammar_phrases(spec, attributes), prefix=st.prefix, suffix=st.suffix, negative=st.negative
    )


def check_spec_fits(spec) -> None:
    """Refuse specs whose fixed part (prefix + longest subject) or negative prompt cannot fit."""
    tok = get_tokenizer()
    races = spec.fields["race"].values if "race" in spec.fields else ("",)
    ages = [str(spec.age.max), str(spec.age.min)] if spec.age else [""]
    genders = spec.fields["gender"].values if "gender" in spec.fields else ("",)
    worst = max(
        (
            subject_phrase({"age": f"{a}-year-old" if a else "", "race": r, "gender": _NOUNS.get(g, "")})
            for a in ages
            for r in races
            for g in genders
        ),
        key=tok.count,
    )
    head = f"{spec.style.prefix} {worst}".strip()
    if tok.count(head) > MAX_CONTENT_TOKENS:
        raise ConfigError(
            f"prefix + subject {head!r} has {tok.count(head)} CLIP tokens, more than {MAX_CONTENT_TOKENS}",
            where="spec.prompt.prefix",
            fix="shorten the prefix or the race values.",
        )
    for term in spec.style.negative.split(","):
        if tok.count(term) > MAX_CONTENT_TOKENS:
            raise ConfigError(
                f"negative term {term.strip()[:40]!r}... alone exceeds {MAX_CONTENT_TOKENS} CLIP tokens",
                where="spec.prompt.negative",
                fix="split it into shorter comma-separated terms.",
            )
