"""Read-only views of the data sets under one output folder (ComfyUI's), for the frontend's run panel.

Every path comes from a browser, so :func:`safe_relative` accepts only a plain relative name that stays
inside the root: no absolute path, no ``..``, no NUL, and no symlink (anywhere on the way) that points
out of the root. A refusal is an :class:`~fdta_core.errors.InputError` (the routes answer HTTP 400).
Listing never follows symlinks either, so a link to ``/`` placed in the output folder shows nothing.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from ..errors import DatasetError, InputError
from .info import inspect
from .writer import CHUNK_META, CHUNKS_DIR, DATASET_INDEX, ChunkInfo, parse_chunk_name

log = logging.getLogger(__name__)

#: Files the routes may hand out (reports, plans, previews); everything else is refused.
SERVABLE_SUFFIXES = {
    ".html": "text/html",
    ".json": "application/json",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".txt": "text/plain",
    ".csv": "text/csv",
    ".svg": "image/svg+xml",
}
#: Where ``fdta report DATASET`` writes by default.
REPORT_HTML = Path("report") / "report.html"
_MAX_DEPTH = 4
_MAX_DATASETS = 200


def safe_relative(root: str | os.PathLike, name: str, *, where: str = "path") -> Path:
    """``root / name`` resolved, provided ``name`` is a relative path that stays inside ``root``.

    Refused (InputError): empty names are the root itself only when ``name == ""``; absolute paths (POSIX
    or Windows style), any ``..`` component, NUL bytes, and names whose resolved target (symlinks
    followed) leaves ``root``.
    """
    if not isinstance(name, str):
        raise InputError(f"{name!r} is not a path", where=where, fix="give a relative path as text.")
    if "\x00" in name:
        raise InputError("the path contains a NUL byte", where=where, fix="give a plain relative path.")
    base = Path(root).resolve()
    if name in ("", "."):
        return base
    if (
        name.startswith(("/", "\\", "~"))
        or PurePosixPath(name).is_absolute()
        or PureWindowsPath(name).is_absolute()
        or PureWindowsPath(name).drive
    ):
        raise InputError(
            f"'{name}' is an absolute path",
            where=where,
            fix="give a path relative to ComfyUI's output folder.",
        )
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if any(p == ".." for p in parts):
        raise InputError(f"'{name}' contains '..'", where=where, fix="give a path inside the output folder.")
    target = (base / Path(*parts)).resolve()
    if target != base and base not in target.parents:
        raise InputError(
            f"'{name}' leads outside the output folder (a symlink points to {target})",
            where=where,
            fix="only files inside ComfyUI's output folder can be viewed.",
        )
    return target


def relative_to_root(root: str | os.PathLike, path: str | os.PathLike) -> str:
    """``path`` relative to ``root`` with forward slashes (what the browser sends back)."""
    return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()


@dataclass
class ChunkView:
    """One committed chunk as the run panel lists it, with its ``rec info`` verdict."""

    name: str
    path: str
    start: int
    end: int
    images: int
    classes: int
    created: float
    spec_hash: str = ""
    run_seed: int | None = None
    status: str = "unchecked"  # ok | errors | unchecked
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class DatasetView:
    """A data set under the output root: a folder of chunks (what the writer makes) or a merged record set
    (what ``FDTADatasetMerge`` / ``fdta rec merge`` make), and its report if ``fdta report`` made one."""

    name: str
    path: str
    images: int
    classes: int
    chunks: list[ChunkView]
    kind: str = "chunks"  # chunks | merged
    status: str = "unchecked"  # of a merged set: ok | errors | unchecked
    errors: list[str] = field(default_factory=list)
    report: str | None = None
    report_command: str = ""
    updated: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _InfoCache:
    """``rec info`` verdicts by chunk folder, reused while the chunk's files are unchanged (a chunk is
    committed once; checking it again on every poll of the panel would read every record again)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data: dict[str, tuple[tuple, dict[str, Any]]] = {}

    @staticmethod
    def _key(folder: Path) -> tuple:
        out = []
        for name in ("train.rec", "train.idx", "property", CHUNK_META):
            try:
                st = (folder / name).stat()
                out.append((name, st.st_size, st.st_mtime_ns))
            except OSError:
                out.append((name, None, None))
        return tuple(out)

    def get(self, folder: Path, *, decode: bool) -> dict[str, Any]:
        key = (self._key(folder), decode)
        with self._lock:
            hit = self._data.get(str(folder))
            if hit is not None and hit[0] == key:
                return hit[1]
        report = inspect(folder, decode=decode, workers=1).to_dict()
        with self._lock:
            self._data[str(folder)] = (key, report)
        return report


_CACHE = _InfoCache()


def chunk_info(root: str | os.PathLike, name: str, *, decode: bool = False) -> dict[str, Any]:
    """``rec info`` of one chunk (or data-set) folder under ``root``, its path relative to ``root``."""
    folder = safe_relative(root, name)
    if not folder.is_dir():
        raise FileNotFoundError(f"'{name}' is not a folder under the output folder")
    report = dict(_CACHE.get(folder, decode=decode))
    report["path"] = relative_to_root(root, folder)
    return report


def _is_dataset(folder: Path) -> bool:
    return (folder / DATASET_INDEX).is_file() or (folder / CHUNKS_DIR).is_dir() or _is_merged(folder)


def _is_merged(folder: Path) -> bool:
    return (folder / "train.rec").is_file() and (folder / "property").is_file()


def _find_datasets(root: Path) -> list[Path]:
    """Data-set folders under ``root`` (depth-limited walk that never follows symlinks)."""
    found: list[Path] = []
    stack: list[tuple[Path, int]] = [(root, 0)]
    while stack and len(found) < _MAX_DATASETS:
        folder, depth = stack.pop()
        if _is_dataset(folder):
            found.append(folder)
            continue
        if depth >= _MAX_DEPTH:
            continue
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name, reverse=True)
        except OSError:
            continue
        for e in entries:
            if e.name.startswith(".") or not e.is_dir(follow_symlinks=False):
                continue
            stack.append((Path(e.path), depth + 1))
    return sorted(found)


def _chunk_views(root: Path, dataset: Path, *, check: bool) -> list[ChunkView]:
    chunks_dir = dataset / CHUNKS_DIR
    views: list[ChunkView] = []
    if not chunks_dir.is_dir() or chunks_dir.is_symlink():
        return views
    for entry in sorted(os.scandir(chunks_dir), key=lambda e: e.name):
        if parse_chunk_name(entry.name) is None or not entry.is_dir(follow_symlinks=False):
            continue
        folder = Path(entry.path)
        try:
            info = ChunkInfo.load(folder)
        except (DatasetError, OSError, ValueError, TypeError) as exc:
            log.debug("skipping %s: %s", folder, exc)
            continue
        view = ChunkView(
            name=info.name,
            path=relative_to_root(root, folder),
            start=info.start,
            end=info.end,
            images=info.images,
            classes=info.classes,
            created=info.created,
            spec_hash=info.spec_hash,
            run_seed=info.run_seed,
        )
        if check:
            report = _CACHE.get(folder, decode=False)
            view.status = "ok" if report.get("ok") else "errors"
            view.errors = list(report.get("errors", []))[:5]
            view.warnings = list(report.get("warnings", []))[:5]
        views.append(view)
    return views


def list_datasets(root: str | os.PathLike, *, check: bool = True) -> list[dict[str, Any]]:
    """Every data set under ``root`` with its committed chunks (and their ``rec info`` verdict when
    ``check``) and the link to its report; newest first."""
    base = Path(root).resolve()
    if not base.is_dir():
        return []
    out: list[DatasetView] = []
    for folder in _find_datasets(base):
        if _is_merged(folder) and not (folder / CHUNKS_DIR).is_dir():
            out.append(_merged_view(base, folder, check=check))
            continue
        chunks = _chunk_views(base, folder, check=check)
        updated = 0.0
        try:
            updated = float(json.loads((folder / DATASET_INDEX).read_text()).get("updated", 0.0))
        except (OSError, ValueError, AttributeError):
            updated = max((c.created for c in chunks), default=0.0)
        report = folder / REPORT_HTML
        rel = relative_to_root(base, folder)
        out.append(
            DatasetView(
                name=rel,
                path=rel,
                images=sum(c.images for c in chunks),
                classes=sum(c.classes for c in chunks),
                chunks=chunks,
                report=relative_to_root(base, report)
                if report.is_file() and not report.is_symlink()
                else None,
                report_command=f"fdta rec merge {folder}_merged {folder} && fdta report {folder}_merged",
                updated=updated,
            )
        )
    out.sort(key=lambda d: d.updated, reverse=True)
    return [d.to_dict() for d in out]


def _merged_view(base: Path, folder: Path, *, check: bool) -> DatasetView:
    rel = relative_to_root(base, folder)
    view = DatasetView(name=rel, path=rel, images=0, classes=0, chunks=[], kind="merged")
    try:
        view.updated = (folder / "train.rec").stat().st_mtime
    except OSError:
        pass
    if check:
        report = _CACHE.get(folder, decode=False)
        view.images, view.classes = int(report.get("images", 0)), int(report.get("classes", 0))
        view.status = "ok" if report.get("ok") else "errors"
        view.errors = list(report.get("errors", []))[:5]
    html = folder / REPORT_HTML
    view.report = relative_to_root(base, html) if html.is_file() and not html.is_symlink() else None
    view.report_command = f"fdta report {folder}"
    return view


def servable_file(root: str | os.PathLike, name: str) -> tuple[Path, str]:
    """``(path, content type)`` of a report, plan or preview file under ``root``; anything else refused."""
    path = safe_relative(root, name)
    kind = SERVABLE_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise InputError(
            f"'{name}' is not a report, plan or image file",
            where="path",
            fix=f"only {', '.join(sorted(SERVABLE_SUFFIXES))} files are served.",
        )
    if not path.is_file():
        raise FileNotFoundError(f"'{name}' does not exist under the output folder")
    return path, kind
