"""Progress bars for long stages."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

# (total, description, unit) -> a context manager yielding an object with .update(n)
ProgressFactory = Callable[[int, str, str], AbstractContextManager[Any]]


@contextmanager
def tqdm_bar(total: int, desc: str, unit: str) -> Iterator[Any]:
    from tqdm.auto import tqdm

    with tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True) as bar:
        yield bar


class _Silent:
    def update(self, n: int = 1) -> None:
        pass


@contextmanager
def silent(total: int, desc: str, unit: str) -> Iterator[Any]:
    yield _Silent()
