"""Progress bars for long stages: a redrawn bar on a terminal, a plain line every half
minute (and one at the end) in a log, where thousands of carriage-return redraws would be
noise (a cold run's CI log was ~125 kB of them)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, TextIO

PLAIN_EVERY_S = 30.0

# (total, description, unit) -> a context manager yielding an object with .update(n)
ProgressFactory = Callable[[int, str, str], AbstractContextManager[Any]]


@contextmanager
def tqdm_bar(total: int, desc: str, unit: str) -> Iterator[Any]:
    """A tqdm bar on a terminal; plain lines (``plain_lines``) when stderr is not one."""
    if not sys.stderr.isatty():
        with plain_lines(total, desc, unit) as lines:
            yield lines
        return
    from tqdm.auto import tqdm

    with tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True) as bar:
        yield bar


class _PlainLines:
    def __init__(self, total: int, desc: str, unit: str, stream: TextIO, every: float) -> None:
        self.total, self.desc, self.unit, self.stream, self.every = total, desc, unit, stream, every
        self.done = 0
        self.started = self.last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self.write(now)

    def write(self, now: float) -> None:
        share = f" ({self.done / self.total:.0%})" if self.total else ""
        self.stream.write(
            f"{self.desc}: {self.done}/{self.total} {self.unit}s{share}, "
            f"{now - self.started:.0f} s\n"
        )
        self.stream.flush()


@contextmanager
def plain_lines(
    total: int, desc: str, unit: str, stream: TextIO | None = None, every: float = PLAIN_EVERY_S
) -> Iterator[Any]:
    """Progress as a plain line every ``every`` seconds and one when the stage ends."""
    lines = _PlainLines(total, desc, unit, stream or sys.stderr, every)
    yield lines
    lines.write(time.monotonic())


class _Silent:
    def update(self, n: int = 1) -> None:
        pass


@contextmanager
def silent(total: int, desc: str, unit: str) -> Iterator[Any]:
    yield _Silent()
