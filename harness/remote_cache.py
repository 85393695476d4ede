"""A cache at an fsspec URL (``s3://``, ``gs://``, ``memory://``, ...), mirrored locally.

Entries are read and written in a local staging folder by the ordinary cache code (so the
arrays stay memory-mapped); this module copies whole entries between it and the URL.
Publication discipline: an entry's files are uploaded first and its ``meta.json`` last, and
a reader takes an entry without ``meta.json`` as absent, so no reader ever sees half an
entry, whatever the store's rename semantics (object stores have none).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from urllib.parse import unquote, urlparse

from harness.activations import MANIFEST


def is_url(root: Path | str) -> bool:
    return "://" in str(root)


def local_path(root: Path | str) -> Path | None:
    """The local folder a root names (a plain path or a file:// URL), or None if remote."""
    text = str(root)
    if not is_url(text):
        return Path(text).expanduser()
    parsed = urlparse(text)
    if parsed.scheme == "file":
        return Path(unquote(parsed.netloc + parsed.path))
    return None


def default_staging(url: str) -> Path:
    # One staging folder per URL: it doubles as a local copy of what was fetched before.
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "lmclaims-staging" / digest


class RemoteStore:
    """Whole-entry copies between a local staging folder and an fsspec URL."""

    def __init__(self, url: str) -> None:
        try:
            import fsspec
        except ImportError as exc:  # a dependency, but say what to do if it is missing
            raise RuntimeError(f"cache URL {url}: install fsspec to use URL caches") from exc
        self.url = url.rstrip("/")
        try:
            self.fs, self.base = fsspec.core.url_to_fs(self.url)
        except (ImportError, ValueError) as exc:
            raise RuntimeError(
                f"cache URL {url}: fsspec cannot open it ({exc}); install the filesystem's "
                "package (s3fs for s3://, gcsfs for gs://, ...)"
            ) from exc

    def _remote(self, kind: str, key: str, name: str = "") -> str:
        parts = [self.base.rstrip("/"), kind, key] + ([name] if name else [])
        return "/".join(parts)

    def has(self, kind: str, key: str) -> bool:
        return bool(self.fs.exists(self._remote(kind, key, MANIFEST)))

    def fetch(self, kind: str, key: str, final: Path) -> bool:
        """Copy a published entry to ``final`` (absent locally); False if not published."""
        if not self.has(kind, key):
            return False
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{key}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        tmp.mkdir()
        try:
            for info in self.fs.ls(self._remote(kind, key), detail=True):
                if info.get("type") == "directory":
                    continue
                name = str(info["name"]).rstrip("/").rsplit("/", 1)[-1]
                self.fs.get_file(self._remote(kind, key, name), str(tmp / name))
            try:
                tmp.rename(final)
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)  # fetched meanwhile by another process
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return True

    def push(self, kind: str, key: str, folder: Path) -> None:
        """Upload a local entry: data files first, ``meta.json`` last (the publish step)."""
        if self.has(kind, key):
            return  # another machine published the same content first
        self.fs.makedirs(self._remote(kind, key), exist_ok=True)
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.name != MANIFEST)
        for path in files:
            self.fs.put_file(str(path), self._remote(kind, key, path.name))
        self.fs.put_file(str(folder / MANIFEST), self._remote(kind, key, MANIFEST))

    def discard(self, kind: str, key: str) -> None:
        """Remove a damaged entry: unpublish (meta.json) first, then the rest."""
        try:
            if self.has(kind, key):
                self.fs.rm(self._remote(kind, key, MANIFEST))
            self.fs.rm(self._remote(kind, key), recursive=True)
        except (FileNotFoundError, OSError):
            pass


def open_root(root: Path | str, staging: Path | None = None) -> tuple[RemoteStore | None, Path]:
    """(remote store or None, local folder) for a cache root given as a path or URL."""
    local = local_path(root)
    if local is not None:
        return None, local
    store = RemoteStore(str(root))
    return store, Path(staging) if staging is not None else default_staging(store.url)
