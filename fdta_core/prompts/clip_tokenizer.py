"""The CLIP byte-pair-encoding tokenizer of Stable Diffusion 1.5, implemented from its vocabulary file.

Why our own: prompts must fit CLIP's 77-token window (BOS + 75 content tokens + EOS), and the only
trustworthy way to count is the real tokenizer. The vocabulary (``data/bpe_simple_vocab_16e6.txt.gz``,
MIT, OpenAI) is vendored unchanged, so counting needs no torch, no ``regex``/``ftfy`` packages and no
download. Token ids equal those of ``transformers.CLIPTokenizer`` (the tokenizer ComfyUI's SD 1.5
text encoder uses) for all text FDTA produces; ``tests/data/clip_tokens_reference.json`` pins that.

Differences from OpenAI's reference: no ``ftfy.fix_text`` (mojibake repair) and no HTML unescaping
(transformers does neither without ftfy), and the ``\\p{L}`` / ``\\p{N}`` classes come from Python's
``unicodedata`` instead of the ``regex`` module; these only matter for broken or exotic Unicode, never
for the ASCII prompts the grammar writes.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import re
import threading
import unicodedata
from importlib import resources

#: CLIP's context length: BOS + 75 content tokens + EOS.
CONTEXT_LENGTH = 77
#: Content tokens that fit one CLIP window.
MAX_CONTENT_TOKENS = CONTEXT_LENGTH - 2
#: sha256 of the vendored vocabulary file (checked when it is loaded).
VOCAB_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
_VOCAB_RESOURCE = "bpe_simple_vocab_16e6.txt.gz"
#: CLIP uses the first 49152 - 256 - 2 merges of the file (after its version line).
_N_MERGES = 49152 - 256 - 2
_SPECIALS = ("<|startoftext|>", "<|endoftext|>")
_CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")
_WS = re.compile(r"\s+")
#: CLIP's pattern restricted to ASCII text (letters [a-z], numbers [0-9]): the fast path.
_ASCII_PAT = re.compile(
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[a-z]+|[0-9]|[^\sa-z0-9]+", re.IGNORECASE
)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte -> printable character table (printable Latin-1 bytes map to themselves)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("\u00a1"), ord("\u00ac") + 1))
        + list(range(ord("\u00ae"), ord("\u00ff") + 1))
    )
    table: dict[int, str] = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table  # insertion order (printable bytes first) is the id order of the base vocabulary


def _char_class(ch: str) -> str:
    """'L' letter, 'N' number, 'S' whitespace, 'O' anything else (the classes of CLIP's regex)."""
    if ch.isspace():
        return "S"
    cat = unicodedata.category(ch)[0]
    return cat if cat in ("L", "N") else "O"


def _split(text: str) -> list[str]:
    """Pre-tokenise like CLIP's pattern ``specials|'s|'t|'re|'ve|'m|'ll|'d|\\p{L}+|\\p{N}|[^\\s\\p{L}\\p{N}]+``."""
    if text.isascii():
        return _ASCII_PAT.findall(text)
    return _split_unicode(text)


def _split_unicode(text: str) -> list[str]:
    """The general scanner (any Unicode); :func:`_split` uses a regex fast path for ASCII."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        cls = _char_class(ch)
        if cls == "S":
            i += 1
            continue
        matched = next((s for s in _SPECIALS if text.startswith(s, i)), None)
        if matched is None and ch == "'":
            matched = next((c for c in _CONTRACTIONS if text.startswith(c, i)), None)
        if matched is not None:
            out.append(matched)
            i += len(matched)
            continue
        if cls == "N":
            out.append(ch)
            i += 1
            continue
        j = i + 1
        while j < n and _char_class(text[j]) == cls:
            j += 1
        out.append(text[i:j])
        i = j
    return out


def clean_text(text: str) -> str:
    """Collapse whitespace and lower-case, as ``transformers.CLIPTokenizer`` (ComfyUI's) does.

    OpenAI's reference also HTML-unescapes; transformers does not, and ComfyUI's count is the one that
    decides whether a prompt fits. Unescaping only ever shortens text, so this count is the safe one.
    """
    return _WS.sub(" ", text).strip().lower()


class CLIPTokenizer:
    """Byte-level BPE with CLIP's vocabulary; ``encode`` returns content token ids (no BOS/EOS)."""

    def __init__(self, vocab_gz: bytes) -> None:
        digest = hashlib.sha256(vocab_gz).hexdigest()
        if digest != VOCAB_SHA256:
            raise ValueError(f"CLIP vocabulary has sha256 {digest}, expected {VOCAB_SHA256}")
        lines = gzip.decompress(vocab_gz).decode("utf-8").split("\n")[1 : _N_MERGES + 1]
        merges = [tuple(line.split()) for line in lines]
        self.byte_encoder = _bytes_to_unicode()
        base = list(self.byte_encoder.values())
        vocab = base + [b + "</w>" for b in base] + ["".join(m) for m in merges] + list(_SPECIALS)
        self.encoder: dict[str, int] = {tok: i for i, tok in enumerate(vocab)}
        self.decoder: dict[int, str] = {i: tok for tok, i in self.encoder.items()}
        self.bpe_ranks: dict[tuple[str, ...], int] = {m: i for i, m in enumerate(merges)}
        self.bos_id = self.encoder[_SPECIALS[0]]
        self.eos_id = self.encoder[_SPECIALS[1]]
        self._cache: dict[str, tuple[str, ...]] = {s: (s,) for s in _SPECIALS}
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}

    def _bpe(self, token: str) -> tuple[str, ...]:
        cached = self._cache.get(token)
        if cached is not None:
            return cached
        word: list[str] = list(token[:-1]) + [token[-1] + "</w>"]
        while len(word) > 1:
            ranked = [(self.bpe_ranks.get((word[k], word[k + 1])), k) for k in range(len(word) - 1)]
            ranked = [(r, k) for r, k in ranked if r is not None]
            if not ranked:
                break
            best = min(ranked)[0]
            first, second = next((word[k], word[k + 1]) for r, k in ranked if r == best)
            merged: list[str] = []
            k = 0
            while k < len(word):
                if k < len(word) - 1 and word[k] == first and word[k + 1] == second:
                    merged.append(first + second)
                    k += 2
                else:
                    merged.append(word[k])
                    k += 1
            word = merged
        result = tuple(word)
        with self._lock:
            if len(self._cache) < 200_000:
                self._cache[token] = result
        return result

    def tokenize(self, text: str) -> list[str]:
        """BPE pieces of ``text`` (``</w>`` marks the end of a word)."""
        pieces: list[str] = []
        for chunk in _split(clean_text(text)):
            if chunk in _SPECIALS:
                pieces.append(chunk)
                continue
            mapped = "".join(self.byte_encoder[b] for b in chunk.encode("utf-8"))
            pieces.extend(self._bpe(mapped))
        return pieces

    def encode(self, text: str) -> list[int]:
        """Content token ids of ``text`` (without BOS/EOS)."""
        return [self.encoder[p] for p in self.tokenize(text)]

    def count(self, text: str) -> int:
        """Number of content tokens; a prompt fits one SD 1.5 window when this is <= 75."""
        cached = self._counts.get(text)
        if cached is None:
            cached = len(self.tokenize(text))
            if len(self._counts) < 100_000:
                self._counts[text] = cached
        return cached

    def decode(self, ids: list[int]) -> str:
        byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        text = "".join(self.decoder[i] for i in ids)
        raw = bytearray(byte_decoder[c] for c in text if c in byte_decoder)
        return raw.decode("utf-8", errors="replace").replace("</w>", " ").strip()


@functools.lru_cache(maxsize=1)
def get_tokenizer() -> CLIPTokenizer:
    """The shared tokenizer (vocabulary loaded once per process, ~0.3 s)."""
    data = resources.files(__package__).joinpath("data", _VOCAB_RESOURCE).read_bytes()
    return CLIPTokenizer(data)


def count_tokens(text: str) -> int:
    """CLIP content tokens of ``text``."""
    return get_tokenizer().count(text)
