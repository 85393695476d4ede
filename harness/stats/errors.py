"""The one error a statistic raises when the data cannot decide it."""

from __future__ import annotations


class InsufficientDataError(ValueError):
    """Too few values, rows, layers or groups, or no spread, for this statistic: the data
    cannot answer the question, so a claim resting on it reads INCONCLUSIVE (with this
    message as the reason) instead of crashing. A ValueError, so callers that already
    catch ValueError keep working."""
