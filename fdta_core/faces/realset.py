"""A plain image folder as a real set: the people no synthetic identity may resemble.

Layout (decided here, documented in docs/faces.md)::

    real/
      alice/            a subfolder is one person: every image under it (any depth) shows that person
        1.jpg 2.png
      bob/...
      carol.jpg         an image directly in the folder is one person of its own (named by its file)

Every image is read, the largest, most central face detected and aligned (a 112x112 image is taken as
already aligned), embedded with the face pack's recogniser, and each person's identity embedding is the
mean of its unit image embeddings, normalised again (DESIGN 5.8). An image without a face is skipped
with a warning; a person without any face is left out with a warning; a folder without any face is an
error that names it.

Embedding a real set is slow, and the same set is used by every chunk of a run, so the result is cached
in ``cache_dir`` (the run's or ComfyUI's output folder, never the user's folder) under a key made of the
folder's absolute path, every image's relative path, size and modification time, and the face pack: a
changed folder or another recogniser is embedded again.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError, InputError

log = logging.getLogger(__name__)

#: Image files a real-set folder may hold (others are ignored).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
#: Where the ACG node caches image-folder embeddings, inside ComfyUI's output folder.
REAL_SET_CACHE = "fdta/real_set_cache"
#: Cache file format version (bump when the embedding recipe changes).
CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """The CLI's cache of photo-folder embeddings: ``$FDTA_CACHE_DIR``, else ``~/.cache/fdta/real_sets``."""
    env = os.environ.get("FDTA_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fdta" / "real_sets"


@dataclass
class FolderPeople:
    """People of an image folder: ``names[i]`` has the image files ``files[i]`` (relative paths)."""

    root: Path
    names: list[str]
    files: list[list[str]]


def is_image_folder(path: str | os.PathLike) -> bool:
    """A folder that is not an FDTA/insightface data set (no ``train.rec``, no ``chunks/``)."""
    p = Path(path)
    return p.is_dir() and not (p / "train.rec").is_file() and not (p / "chunks").is_dir()


def list_people(folder: str | os.PathLike, *, where: str = "--real") -> FolderPeople:
    """The people of an image folder (subfolder = one person, top-level image = one person), sorted."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root} is not a folder", where=where)
    people: dict[str, list[str]] = {}
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            files = sorted(
                p.relative_to(root).as_posix()
                for p in entry.rglob("*")
                if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
            )
            if files:
                people[entry.name] = files
            else:
                log.warning(
                    "real set %s: %s holds no image (%s); ignored",
                    root,
                    entry.name,
                    ", ".join(IMAGE_EXTENSIONS),
                )
        elif entry.is_file() and entry.suffix.lower() in IMAGE_EXTENSIONS:
            name = entry.stem if entry.stem not in people else entry.name
            people[name] = [entry.name]
    if not people:
        raise InputError(
            f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {root}",
            where=where,
            fix="put one subfolder of photos per person (or one photo per person) in the folder.",
        )
    names = sorted(people)
    return FolderPeople(root, names, [people[n] for n in names])


def cache_key(people: FolderPeople, models: Any) -> str:
    """What the cached embeddings depend on: the folder, its files (size, mtime) and the face pack."""
    h = hashlib.sha256()
    h.update(f"v{CACHE_VERSION}\0{people.root.resolve()}\0".encode())
    describe = getattr(models, "describe", None)
    h.update(str(describe() if callable(describe) else type(models).__name__).encode())
    for name, files in zip(people.names, people.files, strict=True):
        h.update(f"\0{name}".encode())
        for rel in files:
            st = (people.root / rel).stat()
            h.update(f"\0{rel}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def _check_cache_dir(cache_dir: Path, root: Path) -> None:
    c, r = cache_dir.resolve(), root.resolve()
    if c == r or r in c.parents:
        raise InputError(
            f"the embedding cache {cache_dir} lies inside the real set {root}: FDTA never writes into a "
            "user's photo folder",
            where="cache",
            fix="choose a cache folder outside the real set (the run or output folder).",
        )


def embed_people(
    people: FolderPeople,
    models: Any,
    *,
    batch_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
    where: str = "--real",
) -> tuple[list[str], np.ndarray, list[int], list[str]]:
    """``(names, unit centres [P, D], faces used per person, problems)`` of the people with a face."""
    from ..imagecodec import read_image
    from .identity import unit_rows

    if models is None or not callable(getattr(models, "align_batch", None)):
        raise InputError(
            f"{people.root} is an image folder: detecting and embedding its faces needs a face pack",
            where=where,
            fix="pass --pack (fdta audit) or connect face_models (ACG).",
        )
    names, centers, counts, problems = [], [], [], []
    total = sum(len(f) for f in people.files)
    done = 0
    for name, files in zip(people.names, people.files, strict=True):
        imgs = []
        for rel in files:
            try:
                imgs.append(read_image(people.root / rel, where=f"real set {people.root}"))
            except DatasetError as exc:
                problems.append(f"{rel}: {exc}")
        aligned = models.align_batch(imgs, assume_aligned=True) if imgs else None
        if aligned is not None:
            for d in aligned.dropped:
                problems.append(f"{files[d.index]}: {d.reason}")
        done += len(files)
        if progress is not None:
            progress(done, total)
        if aligned is None or not len(aligned.faces):
            problems.append(f"{name}: no face found in any of its {len(files)} image(s); left out")
            continue
        emb = unit_rows(np.asarray(models.embed(aligned.faces, batch_size=batch_size)), f"real set {name}")
        names.append(name)
        centers.append(emb.mean(axis=0))
        counts.append(len(aligned.faces))
    for p in problems:
        log.warning("real set %s: %s", people.root, p)
    if not names:
        raise InputError(
            f"no faces found in {people.root} ({total} image(s) of {len(people.names)} people)",
            where=where,
            fix="use photos that show a face (a detector must find it), or 112x112 aligned crops.",
        )
    return names, unit_rows(np.stack(centers), "real set"), counts, problems


def folder_identities(
    folder: str | os.PathLike,
    models: Any,
    *,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
    where: str = "--real",
) -> tuple[list[str], np.ndarray]:
    """``(person names, unit identity embeddings)`` of an image folder, from the cache when it is fresh."""
    from ..fsutil import atomic_write_bytes

    people = list_people(folder, where=where)
    cache: Path | None = None
    if cache_dir is not None:
        _check_cache_dir(Path(cache_dir), people.root)
        cache = Path(cache_dir) / f"real-{cache_key(people, models)}.npz"
        if cache.is_file():
            try:
                with np.load(cache, allow_pickle=False) as z:
                    names = [str(x) for x in z["names"].tolist()]
                    centers = np.asarray(z["centers"], np.float32)
                log.info("real set %s: %d people from the cache %s", people.root, len(names), cache)
                return names, centers
            except (OSError, ValueError, KeyError) as exc:
                log.warning("real set cache %s unreadable (%s); embedding again", cache, exc)
    names, centers, counts, problems = embed_people(
        people, models, batch_size=batch_size, progress=progress, where=where
    )
    if cache is not None:
        buf = io.BytesIO()
        np.savez(
            buf,
            names=np.array(names),
            centers=centers,
            counts=np.array(counts, np.int64),
            source=np.array(json.dumps({"folder": str(people.root.resolve()), "problems": problems[:100]})),
        )
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(cache, buf.getvalue())
        log.info("real set %s: %d people embedded, cached in %s", people.root, len(names), cache)
    return names, centers
