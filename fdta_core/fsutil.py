"""Crash-safe file helpers: write to a temporary name, fsync, rename.

A reader never sees a half-written file under its final name; a killed process leaves at most a
``*.tmp-<pid>`` file that the next run removes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from .errors import InputError


def fsync_dir(path: str | os.PathLike) -> None:
    """fsync a directory so that a rename inside it is durable (no-op where unsupported)."""
    try:
        fd = os.open(os.fspath(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", *, fsync: bool = True) -> Iterator[IO]:
    """Open ``path.tmp-<pid>`` for writing; on success fsync and rename it to ``path``.

    On an exception the temporary file is removed and ``path`` keeps its old content.
    """
    if "w" not in mode:
        raise ValueError("atomic_open is for writing")
    final = Path(path)
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    f = open(tmp, mode)  # noqa: SIM115
    try:
        yield f
        f.flush()
        if fsync:
            os.fsync(f.fileno())
        f.close()
        os.replace(tmp, final)
        if fsync:
            fsync_dir(final.parent)
    except BaseException:
        f.close()
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = True) -> None:
    with atomic_open(path, "wb", fsync=fsync) as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str, *, fsync: bool = True) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)


def swap_folder(
    tmp: str | os.PathLike, final: str | os.PathLike, *, old: str | os.PathLike | None = None
) -> bool:
    """Rename the finished folder ``tmp`` to ``final``; returns whether an earlier ``final`` was replaced.

    An earlier non-empty ``final`` is first renamed aside to ``old`` (default ``.<name>.old-<pid>`` beside
    it) and deleted only after the new folder is in place and the rename is fsynced, so ``final`` is at
    every moment absent, the old complete folder or the new one, never a mix; a process killed between
    the two renames leaves the old copy under ``old`` for its caller's recovery. An empty ``final`` is
    simply removed. What may be replaced is the caller's decision, checked before calling.
    """
    tmp, final = Path(tmp), Path(final)
    old = Path(old) if old is not None else final.with_name(f".{final.name}.old-{os.getpid()}")
    replaced = False
    if final.exists():
        if final.is_dir() and not any(final.iterdir()):
            final.rmdir()
        else:
            if old.exists():  # a leftover of an earlier crash of this same pid name
                shutil.rmtree(old)
            os.replace(final, old)
            replaced = True
    os.replace(tmp, final)
    fsync_dir(final.parent)
    if replaced:
        shutil.rmtree(old, ignore_errors=True)
    return replaced


def resolve_inside(
    name: str, roots: list[str | os.PathLike], *, where: str = "output", default_root: int = 0
) -> Path:
    """Resolve a user-given output name so that it stays inside one of ``roots``.

    A relative name is taken under ``roots[default_root]``; an absolute one must already lie inside one
    of the roots. ``..`` components and symlinks that escape are refused, so a workflow shared by
    someone else cannot write outside ComfyUI's output folders.
    """
    if not name or not str(name).strip():
        raise InputError(
            "the name is empty", where=where, fix="give a folder name such as 'fdta/my_dataset'."
        )
    if "\x00" in name:
        raise InputError("the name contains a NUL byte", where=where)
    resolved_roots = [Path(r).resolve() for r in roots]
    raw = Path(os.path.expanduser(str(name).strip()))
    if any(part == ".." for part in raw.parts):
        raise InputError(
            f"'{name}' contains '..'", where=where, fix="use a plain relative name under the output folder."
        )
    candidate = raw if raw.is_absolute() else resolved_roots[default_root] / raw
    target = candidate.resolve()
    for root in resolved_roots:
        if target == root or root in target.parents:
            return target
    allowed = ", ".join(str(r) for r in resolved_roots)
    raise InputError(
        f"'{name}' resolves to {target}, outside the allowed folders ({allowed})",
        where=where,
        fix="use a relative name (it is created under ComfyUI's output folder) or a path inside an allowed folder.",
    )
