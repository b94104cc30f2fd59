"""Capped listings of problem files: the first few one by one, the rest counted per reason.

Shared by the reports of :func:`~finetune.check` and :func:`~finetune.pack` and by the
commands that print them, so that every listing is cut at the same length and ends
with the same kind of line.
"""

from __future__ import annotations

import collections

__all__ = ["MAX_LISTED", "count_line"]

#: Problem files logged (or listed in a summary) one by one before the rest are only counted.
MAX_LISTED = 20


def count_line(n: int, what: str, reasons) -> str:
    """``"... and 9,980 more missing files (9,980 unreadable)"``: the tail of a capped listing.

    Examples
    --------
    >>> count_line(3, "bad", ["truncated", "unreadable", "truncated"])
    '... and 3 more bad (2 truncated, 1 unreadable)'
    """
    counts = collections.Counter(reasons)
    detail = ", ".join(f"{c:,} {r}" for r, c in sorted(counts.items()))
    return f"... and {n:,} more {what} ({detail})"
