"""A float32 ``.npy`` file filled in place, so that extraction's memory does not grow with
the number of sentences.

Extraction writes each batch's rows straight into the file through a shared mapping.
Written pages would stay in the process's resident set until the mapping closes (the
whole array, at the end), so :meth:`NpyFile.release` drops them after every batch: they
stay in the kernel's page cache and reach the disk, but leave this process's RSS.
"""

from __future__ import annotations

import mmap
from pathlib import Path
from typing import Any

import numpy as np

DTYPE = np.dtype("<f4")


class NpyFile:
    """``allocate(shape)`` creates the file and returns its array; ``release()`` after each
    batch; ``flush()`` once it is full. The array keeps the mapping alive for as long as
    anyone holds it, so it stays valid after the file is renamed."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._map: mmap.mmap | None = None

    def allocate(self, shape: tuple[int, ...]) -> np.ndarray:
        if self._map is not None:
            raise RuntimeError(f"{self.path} is already allocated")
        header: dict[str, Any] = {
            "descr": np.lib.format.dtype_to_descr(DTYPE),
            "fortran_order": False,
        }
        header["shape"] = tuple(int(n) for n in shape)
        nbytes = int(np.prod(shape, dtype=np.int64)) * DTYPE.itemsize
        with open(self.path, "wb+") as handle:
            np.lib.format.write_array_header_1_0(handle, header)
            offset = handle.tell()
            # Sparse until written: no pass over the whole file before the first batch.
            handle.truncate(offset + nbytes)
            if nbytes == 0:  # an empty file cannot be mapped; nothing to write anyway
                return np.zeros(shape, dtype=DTYPE)
            self._map = mmap.mmap(handle.fileno(), offset + nbytes)
        return np.ndarray(shape, dtype=DTYPE, buffer=self._map, offset=offset)

    def release(self) -> None:
        """Drop the written pages from this process's RSS (they are kept in the file)."""
        # MADV_DONTNEED on a shared file mapping only unmaps: the dirty pages stay in the
        # page cache and are written back. (It would discard data on a private mapping.)
        if self._map is not None and hasattr(mmap, "MADV_DONTNEED"):
            self._map.madvise(mmap.MADV_DONTNEED)

    def flush(self) -> None:
        """Write everything to the file (before its checksum is taken and it is published)."""
        if self._map is not None:
            self._map.flush()
            self.release()
