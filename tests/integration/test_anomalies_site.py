"""Flagged days end to end: five weeks of fake data with an outage day, back-filled by the real
pipeline; the published anomalies.csv flags that day low and (almost) nothing else."""

from __future__ import annotations

import csv
import dataclasses
from datetime import UTC, date, datetime, timedelta

import pytest

from fake_source import create_app
from fake_source.server import running_in_thread
from kpi.backfill import backfill
from kpi.publish import build_site

pytestmark = pytest.mark.integration
LAST = date(2026, 10, 31)
FIRST = LAST - timedelta(days=34)
OUTAGE = date(2026, 10, 20)


def test_an_outage_day_is_flagged_low_and_normal_weeks_are_not(settings):
    app = create_app(seed=9, per_day=300, days=35, last_day=LAST, bad_rate=0.01)
    whole = app.state.store.range
    start = int(datetime(OUTAGE.year, OUTAGE.month, OUTAGE.day, tzinfo=UTC).timestamp() * 1000)

    def outage(low, high):  # most of the outage day's blobs never reached KPIggybank
        rows = whole(low, high)
        return [row for n, row in enumerate(rows)
                if not start <= row["key"] < start + 86_400_000 or n % 8 == 0]

    app.state.store.range = outage
    with running_in_thread(app) as base:
        here = dataclasses.replace(settings, source_url=f"{base}/wsapi/interaction_data")
        backfill(FIRST, LAST, here, progress=False)
    with open(settings.site_dir / "data" / "anomalies.csv", encoding="utf-8") as handle:
        flags = list(csv.DictReader(handle))
    assert {(f["date"], f["direction"]) for f in flags
            if f["report"] == "assertions" and f["segmentation"] == "Total"} == {
        (OUTAGE.isoformat(), "low")}
    first_week = {(FIRST + timedelta(days=n)).isoformat() for n in range(7)}
    assert not [f for f in flags if f["date"] in first_week]
    assert len({f["date"] for f in flags} - {OUTAGE.isoformat()}) <= 1, flags

    # a range build of the outage's week judges its days with the weeks before it, as the full
    # build did: the same flags on those days
    week = [OUTAGE - timedelta(days=2), OUTAGE + timedelta(days=4)]
    build_site(here, start=week[0], end=week[1])
    with open(settings.site_dir / "data" / "anomalies.csv", encoding="utf-8") as handle:
        ranged = list(csv.DictReader(handle))
    in_week = [f for f in flags if week[0].isoformat() <= f["date"] <= week[1].isoformat()]
    assert ranged == in_week and any(f["date"] == OUTAGE.isoformat() for f in ranged)
