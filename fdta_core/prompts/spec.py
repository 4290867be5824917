"""The attribute spec: which population of identities to make (proportions and vocabularies).

A spec is JSON text (editable in the ``FDTAAttributeSpec`` node, or a file for ``fdta plan --spec``)::

    {"format": "fdta-attribute-spec/1",
     "prompt": {"prefix": "RAW photo, close-up portrait of", "suffix": [...], "negative": "..."},
     "fields": {"gender": {"values": {"female": 0.5, "male": 0.5}},
                "age": {"min": 18, "max": 80, "distribution": "uniform", "bin_width": 10},
                "eyes": {"template": "{value} eyes", "values": ["brown", "blue"]}, ...}}

``values`` is a list (equal shares) or an object ``value -> weight`` (weights are normalised); a bare
list is short for ``{"values": [...]}``. A field that is omitted or ``null`` is left out of the
description. A descriptive field may take its vocabulary from an earlier field:
``{"by": "gender", "cases": {"male": [...], "female": [...]}, "values": [...default...]}`` (``by`` is
gender, race or age; age cases are bin labels); balance then holds within each group. Age is a range with either
``"distribution": "uniform"`` (bins of ``bin_width`` years, weighted by width) or explicit
``"bins": {"18-29": 0.3, ...}``; balance applies to the bins, the exact age inside a bin is drawn from
the run seed. Validation errors name the bad entry (``spec.fields.eyes.values[3]``) and the fix.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from fractions import Fraction
from functools import reduce
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import ConfigError, check_choice
from ..plan import FIELDS

SPEC_FORMAT = "fdta-attribute-spec/1"
GENDERS = ("female", "male")
#: Characters that ComfyUI's prompt parser (weights, escapes, embeddings) or CLIP's specials give meaning.
_FORBIDDEN = re.compile(r"[()\[\]{}\\:<>|]")
_MAX_VALUE_CHARS = 60
_AGE_LIMITS = (0, 120)


@dataclass(frozen=True)
class FieldSpec:
    """One categorical field: its values, exact integer weights (proportion = weight / sum) and the
    template that turns a value into a prompt phrase."""

    name: str
    values: tuple[str, ...]
    weights: tuple[int, ...]
    template: str = "{value}"
    #: Conditional vocabularies: ``by`` names an earlier field (gender, race or age); ``cases`` maps a
    #: value of it (an age bin label for age) to its own (values, weights). Other cases use ``values``.
    by: str | None = None
    cases: tuple[tuple[str, tuple[str, ...], tuple[int, ...]], ...] = ()

    def vocabulary(self, case: str | None) -> tuple[tuple[str, ...], tuple[int, ...]]:
        """(values, weights) used for identities whose ``by`` field is ``case``."""
        for key, values, weights in self.cases:
            if key == case:
                return values, weights
        return self.values, self.weights

    def all_values(self) -> tuple[str, ...]:
        seen = dict.fromkeys(self.values)
        for _, values, _ in self.cases:
            seen.update(dict.fromkeys(values))
        return tuple(seen)

    def phrase(self, value: str) -> str:
        return self.template.replace("{value}", value)

    def proportions(self) -> tuple[float, ...]:
        total = sum(self.weights)
        return tuple(w / total for w in self.weights)


@dataclass(frozen=True)
class AgeSpec:
    """Age range ``[min, max]`` (years, inclusive) split into bins with integer weights."""

    min: int
    max: int
    bins: tuple[tuple[int, int], ...]
    weights: tuple[int, ...]

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(f"{lo}-{hi}" for lo, hi in self.bins)


@dataclass(frozen=True)
class PromptStyle:
    prefix: str
    suffix: tuple[str, ...]
    negative: str


@dataclass(frozen=True)
class AttributeSpec:
    """A validated spec. ``canonical`` is the normalised JSON-able form; ``hash`` identifies it."""

    fields: dict[str, FieldSpec]
    age: AgeSpec | None
    style: PromptStyle
    canonical: dict[str, Any]
    hash: str

    @property
    def enabled_fields(self) -> tuple[str, ...]:
        return tuple(f for f in FIELDS if f in self.fields or (f == "age" and self.age is not None))

    def to_json(self) -> str:
        return json.dumps(self.canonical, indent=2, ensure_ascii=False)


def default_spec_text() -> str:
    """The shipped default spec (``fdta_core/prompts/default_spec.json``) as text."""
    return resources.files(__package__).joinpath("default_spec.json").read_text(encoding="utf-8")


def default_spec() -> AttributeSpec:
    return parse_spec(default_spec_text())


def load_spec(path: str | Path | None) -> AttributeSpec:
    """Parse a spec file (the default spec when ``path`` is None)."""
    if path is None:
        return default_spec()
    p = Path(path)
    if not p.is_file():
        raise ConfigError(
            f"spec file {p} does not exist", where="--spec", fix="give the path of a JSON spec file."
        )
    return parse_spec(p.read_text(encoding="utf-8"), source=str(p))


# ----------------------------------------------------------------------------------------- parsing
def _err(where: str, message: str, fix: str) -> ConfigError:
    return ConfigError(message, where=where, fix=fix)


def _exact_weight(value: Any, where: str) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _err(where, f"weight {value!r} is not a number", "use a positive number such as 0.25 or 3.")
    if not math.isfinite(value) or value <= 0:
        raise _err(where, f"weight {value!r} must be positive", "use a positive number, or remove the value.")
    # str() gives the shortest decimal that round-trips, so 0.1 becomes exactly 1/10.
    return Fraction(str(value)) if isinstance(value, float) else Fraction(value)


def _int_weights(fracs: list[Fraction]) -> tuple[int, ...]:
    denom = reduce(math.lcm, (f.denominator for f in fracs), 1)
    ints = [int(f * denom) for f in fracs]
    g = reduce(math.gcd, ints)
    return tuple(i // g for i in ints)


def _check_text(text: Any, where: str, *, allow_empty: bool = False) -> str:
    if not isinstance(text, str):
        raise _err(
            where,
            f"expected text, got {type(text).__name__} {text!r}",
            'write it as a JSON string in "quotes".',
        )
    text = " ".join(text.split())
    if not text and not allow_empty:
        raise _err(where, "the text is empty", "write a short phrase, or remove the entry.")
    bad = _FORBIDDEN.search(text)
    if bad:
        raise _err(
            where,
            f"{text!r} contains {bad.group(0)!r}, which ComfyUI's prompt syntax or CLIP treat specially",
            "remove brackets, braces, backslashes, colons, '<', '>' and '|'.",
        )
    return text


def _parse_values(raw: Any, where: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    if isinstance(raw, list):
        items = [(v, 1) for v in raw]
        label = lambda i, v: f"{where}[{i}]"  # noqa: E731
    elif isinstance(raw, dict):
        items = list(raw.items())
        label = lambda i, v: f"{where}.{v}"  # noqa: E731
    else:
        raise _err(
            where,
            f"expected a list of values or an object value -> weight, got {type(raw).__name__}",
            'write e.g. ["brown", "blue"] (equal shares) or {"brown": 0.7, "blue": 0.3}.',
        )
    if not items:
        raise _err(
            where, "no values given", "list at least one value, or set the field to null to leave it out."
        )
    values: list[str] = []
    fracs: list[Fraction] = []
    seen: set[str] = set()
    for i, (value, weight) in enumerate(items):
        at = label(i, value)
        text = _check_text(value, at)
        if len(text) > _MAX_VALUE_CHARS:
            raise _err(
                at,
                f"{text[:30]!r}... is {len(text)} characters long",
                f"keep values under {_MAX_VALUE_CHARS} characters.",
            )
        if text.lower() in seen:
            raise _err(at, f"value {text!r} appears twice", "list each value once (merge their weights).")
        seen.add(text.lower())
        values.append(text)
        fracs.append(_exact_weight(weight, at))
    return tuple(values), _int_weights(fracs)


def _parse_field(name: str, raw: Any) -> FieldSpec:
    where = f"spec.fields.{name}"
    if isinstance(raw, list):  # shorthand: a plain list of values with equal shares
        raw = {"values": raw}
    if not isinstance(raw, dict):
        raise _err(
            where,
            f"expected an object, got {type(raw).__name__}",
            '{"values": [...], "template": "{value} eyes"}',
        )
    unknown = sorted(set(raw) - {"values", "template", "by", "cases"})
    if unknown:
        raise _err(
            f"{where}.{unknown[0]}",
            f"unknown key {unknown[0]!r}",
            'use only "values", "template", "by" and "cases".',
        )
    by = raw.get("by")
    cases_raw = raw.get("cases")
    if (by is None) != (cases_raw is None):
        raise _err(
            where,
            '"by" and "cases" go together',
            'write e.g. "by": "gender", "cases": {"male": [...], "female": [...]}.',
        )
    if by is not None and name in ("gender", "race", "age"):
        raise _err(f"{where}.by", f"{name} cannot be conditional", 'use "by" only on the descriptive fields.')
    if by is not None and by not in ("gender", "race", "age"):
        raise _err(f"{where}.by", f"cannot condition on {by!r}", 'use "gender", "race" or "age".')
    cases: list[tuple[str, tuple[str, ...], tuple[int, ...]]] = []
    if cases_raw is not None:
        if not isinstance(cases_raw, dict) or not cases_raw:
            raise _err(
                f"{where}.cases", "cases must be a non-empty object", '{"male": [...], "female": [...]}'
            )
        for key, sub in cases_raw.items():
            cases.append((str(key), *_parse_values(sub, f"{where}.cases.{key}")))
    if "values" in raw:
        values, weights = _parse_values(raw["values"], f"{where}.values")
    elif cases:
        values, weights = (), ()  # every case must then be listed (checked once the by-field is known)
    else:
        raise _err(where, 'has no "values"', 'add "values": ["a", "b"] or {"a": 0.6, "b": 0.4}.')
    template = raw.get("template", "{value}")
    template = _check_text(
        template.replace("{value}", "VALUE") if isinstance(template, str) else template, f"{where}.template"
    )
    if template.count("VALUE") != 1:
        raise _err(
            f"{where}.template",
            f"template {raw.get('template')!r} must contain {{value}} exactly once",
            'write e.g. "{value} eyes".',
        )
    template = template.replace("VALUE", "{value}")
    if name == "gender":
        bad = [v for v in values if v not in GENDERS]
        if bad:
            raise _err(
                f"{where}.values",
                f"gender value {bad[0]!r} is not one of {', '.join(GENDERS)}",
                'use "female" and/or "male" (the ACG selection checks these targets).',
            )
    return FieldSpec(name=name, values=values, weights=weights, template=template, by=by, cases=tuple(cases))


def _check_cases(f: FieldSpec, fields: dict[str, FieldSpec], age: AgeSpec | None) -> None:
    """The conditioning field must be enabled, case keys must be its values, and every value of it
    needs a vocabulary (a case or the default ``values``)."""
    if f.by is None:
        return
    where = f"spec.fields.{f.name}"
    if f.by == "age":
        if age is None:
            raise _err(f"{where}.by", "conditions on age, but age is not in the spec", "add an age field.")
        keys = age.labels
    elif f.by in fields:
        keys = fields[f.by].values
    else:
        raise _err(f"{where}.by", f"conditions on {f.by!r}, which is not in the spec", f"add a {f.by} field.")
    for key, _, _ in f.cases:
        check_choice(
            None, f"{where}.cases.{key}", key, keys, what=f"{f.by} value (or age bin)", error=ConfigError
        )
    missing = [k for k in keys if k not in {c[0] for c in f.cases}]
    if missing and not f.values:
        raise _err(
            f"{where}.cases",
            f"no vocabulary for {f.by} {missing[0]!r}",
            'add that case, or a default "values" list for the cases not listed.',
        )


def _parse_age(raw: Any) -> AgeSpec:
    where = "spec.fields.age"
    if not isinstance(raw, dict):
        raise _err(
            where,
            f"expected an object, got {type(raw).__name__}",
            '{"min": 18, "max": 80, "distribution": "uniform"}',
        )
    unknown = sorted(set(raw) - {"min", "max", "distribution", "bin_width", "bins"})
    if unknown:
        raise _err(
            f"{where}.{unknown[0]}",
            f"unknown key {unknown[0]!r}",
            'use "min", "max", "distribution", "bin_width" or "bins".',
        )
    lo_lim, hi_lim = _AGE_LIMITS
    bins_raw = raw.get("bins")
    if bins_raw is not None:
        if not isinstance(bins_raw, dict) or not bins_raw:
            raise _err(
                f"{where}.bins",
                'bins must be a non-empty object "lo-hi" -> weight',
                'write e.g. {"18-29": 0.3, "30-49": 0.4, "50-80": 0.3}.',
            )
        bins: list[tuple[int, int]] = []
        fracs: list[Fraction] = []
        for label, weight in bins_raw.items():
            at = f"{where}.bins.{label}"
            m = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", str(label))
            if not m:
                raise _err(
                    at, f"bin {label!r} is not a range", 'name bins "lo-hi" in whole years, e.g. "18-29".'
                )
            lo, hi = int(m.group(1)), int(m.group(2))
            if not (lo_lim <= lo <= hi <= hi_lim):
                raise _err(
                    at, f"bin {label!r} is empty or outside {lo_lim}-{hi_lim}", "use lo <= hi within 0-120."
                )
            bins.append((lo, hi))
            fracs.append(_exact_weight(weight, at))
        order = sorted(range(len(bins)), key=lambda i: bins[i])
        bins = [bins[i] for i in order]
        fracs = [fracs[i] for i in order]
        for (alo, ahi), (blo, bhi) in zip(bins, bins[1:], strict=False):
            if blo <= ahi:
                raise _err(
                    f"{where}.bins", f"bins {alo}-{ahi} and {blo}-{bhi} overlap", "make the bins disjoint."
                )
        for key in ("min", "max"):
            if key in raw and raw[key] != (bins[0][0] if key == "min" else bins[-1][1]):
                raise _err(
                    f"{where}.{key}",
                    f"{key} {raw[key]!r} disagrees with the bins",
                    f'drop "{key}" or make it match the bins.',
                )
        return AgeSpec(min=bins[0][0], max=bins[-1][1], bins=tuple(bins), weights=_int_weights(fracs))
    lo, hi = raw.get("min", 18), raw.get("max", 80)
    for key, v in (("min", lo), ("max", hi)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise _err(
                f"{where}.{key}", f"{key} {v!r} is not a whole number of years", "use an integer such as 18."
            )
    if not (lo_lim <= lo <= hi <= hi_lim):
        raise _err(
            where, f"age range {lo}-{hi} is empty or outside {lo_lim}-{hi_lim}", "use 0 <= min <= max <= 120."
        )
    dist = raw.get("distribution", "uniform")
    if dist != "uniform":
        raise _err(
            f"{where}.distribution",
            f"unknown distribution {dist!r}",
            'use "uniform", or give explicit "bins" with proportions.',
        )
    width = raw.get("bin_width", 10)
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise _err(
            f"{where}.bin_width",
            f"bin_width {width!r} must be a positive integer",
            "use e.g. 10 (years per balanced bin).",
        )
    bins = [(a, min(a + width - 1, hi)) for a in range(lo, hi + 1, width)]
    # Uniform over years: each bin's share is its width.
    return AgeSpec(
        min=lo, max=hi, bins=tuple(bins), weights=_int_weights([Fraction(b - a + 1) for a, b in bins])
    )


def _parse_style(raw: Any) -> PromptStyle:
    where = "spec.prompt"
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise _err(
            where,
            f"expected an object, got {type(raw).__name__}",
            '{"prefix": "...", "suffix": [...], "negative": "..."}',
        )
    unknown = sorted(set(raw) - {"prefix", "suffix", "negative"})
    if unknown:
        raise _err(
            f"{where}.{unknown[0]}", f"unknown key {unknown[0]!r}", 'use "prefix", "suffix" and "negative".'
        )
    prefix = _check_text(raw.get("prefix", "photo portrait of"), f"{where}.prefix", allow_empty=True)
    suffix_raw = raw.get("suffix", [])
    if isinstance(suffix_raw, str):
        suffix_raw = [s for s in suffix_raw.split(",")]
    if not isinstance(suffix_raw, list):
        raise _err(
            f"{where}.suffix",
            "suffix must be a list of short phrases",
            'write e.g. ["plain background", "sharp focus"].',
        )
    suffix = tuple(_check_text(s, f"{where}.suffix[{i}]") for i, s in enumerate(suffix_raw))
    negative = _check_text(raw.get("negative", ""), f"{where}.negative", allow_empty=True)
    return PromptStyle(prefix=prefix, suffix=suffix, negative=negative)


def parse_spec(text: str | dict[str, Any], *, source: str = "spec") -> AttributeSpec:
    """Validate spec text (JSON) or an already-parsed dict; raise :class:`ConfigError` naming the bad entry."""
    if isinstance(text, str):
        if not text.strip():
            raise _err(
                source,
                "the spec is empty",
                "paste a JSON spec, or use the default (fdta plan --default-spec).",
            )
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            line = text.splitlines()[exc.lineno - 1] if 0 < exc.lineno <= len(text.splitlines()) else ""
            raise _err(
                f"{source} line {exc.lineno} column {exc.colno}",
                f"not valid JSON ({exc.msg}) near: {line.strip()[:80]!r}",
                "check quotes, commas (no trailing comma before } or ]) and brackets.",
            ) from None
    else:
        raw = text
    if not isinstance(raw, dict):
        raise _err(
            source, f"expected a JSON object, got {type(raw).__name__}", '{"fields": {...}, "prompt": {...}}'
        )
    unknown = sorted(set(raw) - {"format", "fields", "prompt", "comment"})
    if unknown:
        raise _err(
            f"spec.{unknown[0]}",
            f"unknown key {unknown[0]!r}",
            'use "format", "fields", "prompt" (and "comment").',
        )
    fmt = raw.get("format", SPEC_FORMAT)
    if fmt != SPEC_FORMAT:
        raise _err("spec.format", f"unsupported format {fmt!r}", f'use "{SPEC_FORMAT}".')
    fields_raw = raw.get("fields")
    if not isinstance(fields_raw, dict) or not fields_raw:
        raise _err("spec.fields", "missing or empty", f"give at least one of: {', '.join(FIELDS)}.")
    for name in fields_raw:
        check_choice(None, f"spec.fields.{name}", name, FIELDS, what="field", error=ConfigError)
    fields: dict[str, FieldSpec] = {}
    age: AgeSpec | None = None
    for name in FIELDS:
        sub = fields_raw.get(name)
        if sub is None:
            continue
        if name == "age":
            age = _parse_age(sub)
        else:
            fields[name] = _parse_field(name, sub)
    for f in fields.values():
        _check_cases(f, fields, age)
    style = _parse_style(raw.get("prompt"))
    canonical: dict[str, Any] = {
        "format": SPEC_FORMAT,
        "prompt": {"prefix": style.prefix, "suffix": list(style.suffix), "negative": style.negative},
        "fields": {},
    }
    for name in FIELDS:
        if name == "age" and age is not None:
            canonical["fields"]["age"] = {"bins": dict(zip(age.labels, age.weights, strict=True))}
        elif name in fields:
            f = fields[name]
            entry: dict[str, Any] = {"template": f.template}
            if f.values:
                entry["values"] = dict(zip(f.values, f.weights, strict=True))
            if f.by is not None:
                entry["by"] = f.by
                entry["cases"] = {k: dict(zip(v, w, strict=True)) for k, v, w in f.cases}
            canonical["fields"][name] = entry
    digest = hashlib.sha256(json.dumps(canonical, sort_keys=True, ensure_ascii=True).encode()).hexdigest()[
        :16
    ]
    spec = AttributeSpec(fields=fields, age=age, style=style, canonical=canonical, hash=digest)
    from .grammar import check_spec_fits  # late import: grammar depends on this module

    check_spec_fits(spec)
    return spec
