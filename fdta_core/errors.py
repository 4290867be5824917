"""One exception type per failure kind.

Every message says *what* went wrong, *where* (node, input, file) and *how to fix it*. Nodes re-raise
these unchanged, so ComfyUI shows the same text a CLI user sees.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class FDTAError(Exception):
    """Base class of all FDTA errors.

    ``where`` names the node and/or input (``"FDTACSIMFilter.threshold"``), ``fix`` tells the user what to do.
    """

    def __init__(self, message: str, *, where: str | None = None, fix: str | None = None) -> None:
        self.message = message
        self.where = where
        self.fix = fix
        super().__init__(self._render())

    def _render(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.fix:
            text += f" Fix: {self.fix}"
        return text

    def at(self, where: str) -> FDTAError:
        """Return the same error with ``where`` prefixed (used by nodes to add their id)."""
        if self.where and not self.where.startswith(where):
            self.where = f"{where}.{self.where}"
        elif not self.where:
            self.where = where
        self.args = (self._render(),)
        return self


class InputError(FDTAError, ValueError):
    """A value given by the user (a widget, a faceset, a file name) is not acceptable."""


class ConfigError(FDTAError, ValueError):
    """A spec, recipe or settings file does not validate."""


class ModelNotFoundError(FDTAError, FileNotFoundError):
    """A model file or pack is missing; the message lists the folders searched and the expected files."""

    def __init__(
        self,
        what: str,
        *,
        searched: Sequence[str | Path],
        expected: Iterable[str],
        where: str | None = None,
        fix: str | None = None,
    ) -> None:
        self.searched = [str(p) for p in searched]
        self.expected = list(expected)
        folders = ", ".join(self.searched) if self.searched else "(no folder registered)"
        files = ", ".join(self.expected)
        message = f"{what} not found. Looked in: {folders}. Expected file(s): {files}."
        super().__init__(
            message, where=where, fix=fix or "download the model and place it in one of those folders."
        )


class ModelFormatError(FDTAError, ValueError):
    """A model file exists but has the wrong layout, shapes or signature."""


class DatasetError(FDTAError, ValueError):
    """A data set on disk (``.rec``, ``.idx``, manifest, ``.bin``) is missing, truncated or corrupt."""


class UnsafeFileError(FDTAError, ValueError):
    """A file would need code execution to load (a pickle that references disallowed globals)."""


class ExternalServiceError(FDTAError, RuntimeError):
    """An external service (an LLM endpoint, a ComfyUI server, torchrun) failed."""


def check_choice(
    node: str | None,
    input: str,
    value: T,
    choices: Iterable[T],
    *,
    what: str | None = None,
    error: type[FDTAError] = InputError,
    fix: str | None = None,
) -> T:
    """Return ``value`` if it is one of ``choices``, else raise ``error`` ("unknown X 'v'", "use one of ...").

    The one place that words a bad choice, so CLI flags, node widgets and queue-time validation all say the
    same thing. ``node`` (may be ``None`` in library code; nodes add their id with :meth:`FDTAError.at`) and
    ``input`` form ``where``; ``what`` names the thing in the message (default: ``input`` with spaces). A
    close spelling adds "did you mean"; ``fix`` is appended after the list (e.g. another way out).
    """
    options = list(choices)
    if value in options:
        return value
    names = [str(c) for c in options]
    where = f"{node}.{input}" if node else input
    label = what or input.replace("_", " ")
    hint = f"use one of {', '.join(names)}" if names else "no choice is available"
    close = difflib.get_close_matches(str(value), names, n=1, cutoff=0.6)
    if close:
        hint = f"did you mean {close[0]!r}? {hint[0].upper()}{hint[1:]}"
    hint += f" ({fix})." if fix else "."
    raise error(f"unknown {label} {value!r}", where=where, fix=hint)
