"""`kpi.buildcache.update`: splicing the changed days into the previous build gives the same
frames and files as computing every day from scratch."""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd
import pytest

from fake_source.generator import blobs_for_day
from kpi import buildcache
from kpi.aggregate import daily_aggregates, sites_histogram
from kpi.aggregate_docs import aggregates_document
from kpi.publish import aggregates_of_docs
from kpi.reports import QUALITY_MEASURES
from kpi.stage import stage
from tests.unit.kpi_helpers import CONFIG, blob

FIRST = date(2026, 10, 1)


def day_doc(day: date, seed: int, fractional: bool = False) -> dict:
    """The aggregates document of a generated day (with fractional sites values if asked)."""
    blobs = [b for _, b in blobs_for_day(seed, day, 60, bad_rate=0.0)]
    if fractional:
        blobs += [blob(["screen.rp_info"], f"{day}T10:00:00", number_sites_signed_in=2.5)]
    staged, counts = stage(blobs, CONFIG)
    quality = dict.fromkeys(QUALITY_MEASURES, 0) | {"aggregated": len(staged)}
    doc = aggregates_document(day, daily_aggregates(staged, CONFIG), sites_histogram(staged),
                              CONFIG, quality)
    return doc | {"_rev": f"1-{seed}"}


def build(docs: dict[str, dict], previous=None, min_segment_count: int = 0):
    revs = {day: doc["_rev"] for day, doc in docs.items()}
    return buildcache.update(previous, revs, lambda days: [docs[d] for d in days],
                             lambda found: aggregates_of_docs(found, CONFIG), CONFIG,
                             min_segment_count=min_segment_count)


@pytest.mark.parametrize("min_segment_count", [0, 5])
@pytest.mark.parametrize("fractional_day", [None, 1, 4])
def test_splicing_changed_days_equals_a_build_from_scratch(fractional_day, min_segment_count):
    days = [FIRST + timedelta(days=n) for n in range(5)]
    docs = {d.isoformat(): day_doc(d, n, fractional=n == fractional_day)
            for n, d in enumerate(days)}
    previous, changed = build(docs, min_segment_count=min_segment_count)
    assert changed == sorted(docs)

    later = dict(docs)
    later["2026-10-02"] = day_doc(days[1], 99)  # restated: another revision
    del later["2026-10-04"]  # gone
    later["2026-10-09"] = day_doc(date(2026, 10, 9), 7, fractional=True)  # new, after a gap
    spliced, changed = build(later, previous, min_segment_count)
    assert changed == ["2026-10-02", "2026-10-09"]
    scratch, _ = build(later, min_segment_count=min_segment_count)
    named = scratch.aggregates.groups.query("segmentation != 'Total' and segment != 'Other'")
    assert (named["blobs"] < 5).any() == (min_segment_count == 0)  # small segments, or folded

    assert spliced.revs == scratch.revs
    for part in ("groups", "sites_histogram", "quality", "folded"):
        pd.testing.assert_frame_equal(getattr(spliced.aggregates, part),
                                      getattr(scratch.aggregates, part))
    assert (len(scratch.aggregates.folded) > 0) == (min_segment_count > 0)
    for name, report in scratch.reports.items():
        pd.testing.assert_frame_equal(spliced.reports[name], report)
    assert spliced.files() == scratch.files()
    assert "2026-10-04" not in spliced.files()["assertions"][0]


def test_nothing_changed_recomputes_nothing():
    docs = {d.isoformat(): day_doc(d, 1) for d in (FIRST, FIRST + timedelta(days=1))}
    previous, _ = build(docs)
    again, changed = build(docs, previous)
    assert changed == []
    assert again.files() == previous.files()


def test_when_the_last_days_go_the_overview_weeks_are_recomputed_from_every_day():
    """The cache keeps the groups and histogram of the last two weeks only; if the last days
    disappear, the weeks before them are not in it, and the build starts from scratch."""
    days = [FIRST + timedelta(days=n) for n in range(20)]
    docs = {d.isoformat(): day_doc(d, n, fractional=n % 3 == 0) for n, d in enumerate(days)}
    previous, _ = build(docs)
    assert previous.detail_from == "2026-10-07"
    assert previous.aggregates.sites_histogram["date"].min() == "2026-10-07"
    shorter = {day: doc for day, doc in docs.items() if day <= "2026-10-15"}
    spliced, changed = build(shorter, previous)
    assert changed == sorted(shorter)  # every day recomputed
    scratch, _ = build(shorter)
    assert spliced.detail_from == scratch.detail_from == "2026-10-02"
    pd.testing.assert_frame_equal(spliced.aggregates.sites_histogram,
                                  scratch.aggregates.sites_histogram)
    assert spliced.files() == scratch.files()

    longer = shorter | {"2026-10-25": day_doc(date(2026, 10, 25), 5)}  # forward: only the day
    ahead, changed = build(longer, scratch)
    assert changed == ["2026-10-25"]
    assert ahead.files() == build(longer)[0].files()
