"""UTC days: the unit of everything the pipeline stores, and their millisecond bounds.

A blob belongs to the UTC day of floor(timestamp / 1000) seconds; a day's documents are keyed
`YYYY-MM-DD`. Standard library only.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

DAY_MS = 86_400_000
EPOCH = date(1970, 1, 1)  # day 0 of blob timestamps
EPOCH_ORDINAL = EPOCH.toordinal()


def epoch_day(day: date) -> int:
    """Days from 1970-01-01 to `day`."""
    return day.toordinal() - EPOCH_ORDINAL


def day_start_ms(day: date) -> int:
    """Milliseconds since the epoch at 00:00 UTC of `day`."""
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 1000


def day_window_ms(day: date) -> tuple[int, int]:
    """First and last millisecond of UTC `day` (inclusive)."""
    start = day_start_ms(day)
    return start, start + DAY_MS - 1


def utc_day_of(timestamp_ms: float) -> date:
    """UTC calendar day of floor(timestamp / 1000) seconds (SPEC §3.2 step 6)."""
    return datetime.fromtimestamp(int(timestamp_ms // 1000), tz=UTC).date()


def days_between(start: date, end: date) -> list[date]:
    """Every UTC day from `start` to `end`, both included."""
    if end < start:
        msg = f"end day {end} is before start day {start}"
        raise ValueError(msg)
    return [start + timedelta(days=n) for n in range((end - start).days + 1)]


def day_ranges(days: list[str]) -> list[list[str]]:
    """The days (`YYYY-MM-DD`, ascending) as `[first, last]` runs of consecutive days."""
    runs: list[list[str]] = []
    for day in days:
        if runs and date.fromisoformat(day) - date.fromisoformat(runs[-1][1]) == timedelta(1):
            runs[-1][1] = day
        else:
            runs.append([day, day])
    return runs


def day_keys(start: date | None, end: date | None) -> tuple[str, str | None]:
    """The document key range [start, end + 1 day) of the day documents (`YYYY-MM-DD`) of
    [start, end] (open-ended when None)."""
    return (start.isoformat() if start else "",
            (end + timedelta(days=1)).isoformat() if end else None)
