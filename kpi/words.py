"""Counts in words, for pages and command output (standard library only)."""

from __future__ import annotations


def plural(count: int, one: str, many: str | None = None) -> str:
    """A count and its noun, in the singular for exactly 1: "1 row", "1,234 rows"."""
    return f"{count:,} {one if count == 1 else many or one + 's'}"
