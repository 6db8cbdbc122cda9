"""What `make run` shows a first viewer: an outage day in the fake history (flagged by the
nightly check) and a milestone inside the demo's days (drawn on the charts).

`python -m fake_source.demo outage --days N` prints the outage day of a history of N days ending
yesterday (nothing when the history is too short to flag one); `python -m fake_source.demo
config --days N` prints the shipped report configuration plus a milestone inside those days.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, date, datetime, timedelta

from kpi.config import PRODUCTION_CONFIG

MIN_OUTAGE_OFFSET = 14  # days of history before the outage: two weeks of baseline and noise
DEMO_MILESTONE = "Demo milestone: new sign-in dialog"


def first_day(days: int, last_day: date | None = None) -> date:
    """The first day of a history of `days` days ending `last_day` (default: yesterday, UTC)."""
    last_day = last_day or datetime.now(UTC).date() - timedelta(days=1)
    return last_day - timedelta(days=days - 1)


def outage_day(days: int, last_day: date | None = None) -> date | None:
    """The demo's outage day: two thirds into the history, at least two weeks after its first
    day (the anomaly check needs earlier same weekdays), or None for a shorter history."""
    offset = max(MIN_OUTAGE_OFFSET, days * 2 // 3)
    if offset > days - 1:
        return None
    return first_day(days, last_day) + timedelta(days=offset)


def demo_config(days: int, last_day: date | None = None) -> dict:
    """The shipped report configuration plus a milestone a third into the demo's days."""
    config = json.loads(PRODUCTION_CONFIG.read_text(encoding="utf-8"))
    day = first_day(days, last_day) + timedelta(days=days // 3)
    config["milestones"] = [*config["milestones"], [DEMO_MILESTONE, day.isoformat()]]
    return config


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fake_source.demo", description=__doc__)
    parser.add_argument("what", choices=("outage", "config"))
    parser.add_argument("--days", type=int, required=True, help="Days of fake history.")
    args = parser.parse_args(argv)
    if args.what == "outage":
        day = outage_day(args.days)
        print(day.isoformat() if day else "")
    else:
        json.dump(demo_config(args.days), sys.stdout, indent=2)
        print()


if __name__ == "__main__":
    main()
