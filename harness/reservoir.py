"""Streaming reservoir sampling of token positions (``--lm-tokens all``).

Every token of every sentence is a candidate; each (subject, attribute) pair keeps a
uniform sample of at most ``reservoir`` of its candidates (Algorithm R, one reservoir per
pair). Decisions depend only on how many candidates each pair has seen, never on their
values, so extraction makes them for a whole batch before its forward pass and the hooks
write only the kept vectors. State is O(pairs + slots): no list of candidates is ever held.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Fixed, not --lm-seed: which tokens are kept decides what is measured (like the
# --lm-sentences-per-pair subset), and --lm-seed must change only resampled quantities.
RESERVOIR_SEED = 0


class Reservoir:
    """Per-pair reservoirs laid out one after another in one block of output rows.

    ``capacities[p]``: slots of pair ``p`` (``min(reservoir, candidates of p)``, known from
    the token plans before any forward pass). Pair ``p`` owns rows ``offsets[p]`` to
    ``offsets[p] + capacities[p] - 1``; once its stream has ended every one of them is
    filled, since a pair never has fewer candidates than slots.
    """

    def __init__(self, capacities: Sequence[int] | np.ndarray, seed: int = RESERVOIR_SEED) -> None:
        self.capacities = np.asarray(capacities, dtype=np.int64)
        if self.capacities.ndim != 1 or (self.capacities < 0).any():
            raise ValueError("capacities must be a 1-D sequence of non-negative counts")
        self.offsets = np.concatenate([[0], np.cumsum(self.capacities)[:-1]]).astype(np.int64)
        self.seen = np.zeros(len(self.capacities), dtype=np.int64)
        self.rng = np.random.default_rng(seed)

    @property
    def total(self) -> int:
        """Output rows over all pairs."""
        return int(self.capacities.sum())

    def assign(self, pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Decide the next candidates, in stream order; ``pairs[i]``: candidate i's pair.

        Returns ``(candidates, rows)``: the indices into ``pairs`` that are kept and the
        global output row each one overwrites. Where two candidates of this call land on
        the same row only the later one is returned, so writing them all at once gives what
        one-at-a-time Algorithm R would.
        """
        pairs = np.asarray(pairs, dtype=np.int64)
        if pairs.size == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        # Each candidate's 0-based index in its pair's stream: the pair's count so far plus
        # the candidates of that pair earlier in this call (a stable sort keeps order).
        order = np.argsort(pairs, kind="stable")
        sorted_pairs = pairs[order]
        starts = np.flatnonzero(np.r_[True, sorted_pairs[1:] != sorted_pairs[:-1]])
        run = np.arange(len(pairs)) - np.repeat(starts, np.diff(np.r_[starts, len(pairs)]))
        index = np.empty(len(pairs), dtype=np.int64)
        index[order] = run
        index += self.seen[pairs]
        self.seen += np.bincount(pairs, minlength=len(self.seen))
        capacity = self.capacities[pairs]
        # Algorithm R: candidate i (0-based) fills slot i while the reservoir is not full,
        # then replaces a uniform slot j in 0..i when j < capacity. One 64-bit draw per
        # candidate, in order: the decisions do not depend on how the stream is cut into
        # batches (the batch size is not part of the cache key). floor(u * (i + 1)) is
        # uniform on 0..i up to 2^-53.
        draw = np.floor(self.rng.random(len(pairs)) * (index + 1)).astype(np.int64)
        slot = np.where(index < capacity, index, draw)
        kept = np.flatnonzero(slot < capacity)
        rows = self.offsets[pairs[kept]] + slot[kept]
        # Keep the last candidate per row: unique on the reversed arrays finds last ones.
        _, last = np.unique(rows[::-1], return_index=True)
        chosen = np.sort(len(rows) - 1 - last)
        return kept[chosen], rows[chosen]


def capacities(counts: Sequence[int] | np.ndarray, reservoir: int) -> np.ndarray:
    """Slots per pair: ``min(reservoir, candidates)``."""
    if reservoir < 1:
        raise ValueError(f"reservoir must be >= 1, got {reservoir}")
    return np.minimum(np.asarray(counts, dtype=np.int64), reservoir)
