"""A day whose source changed between two backfills is named in changes.csv with its old and
new values, and the previous build's files stay readable under archive/."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta

import pytest

from kpi.backfill import backfill
from kpi.changes import CHANGE_COLUMNS
from kpi.publish import build_site
from tests.integration.test_restatement import CHANGED_DAY, DAYS, changed_source

pytestmark = pytest.mark.integration


def rows(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_a_restated_day_appears_in_changes_with_old_and_new_values(settings, fake_app):
    backfill(DAYS[0], DAYS[-1], settings, progress=False)
    site = settings.site_dir
    first = json.loads((site / "data" / "manifest.json").read_text())["build_id"]
    first_files = {p.name: p.read_bytes() for p in (site / "data").iterdir() if p.is_file()}
    assert rows(site / "data" / "changes.csv") == []  # no previous build: header only
    assert (site / "data" / "changes.csv").read_text() == ",".join(CHANGE_COLUMNS) + "\n"

    source = fake_app.state.store
    source.range = changed_source(source.range)
    backfill(DAYS[0], DAYS[-1], settings, progress=False)

    changes = rows(site / "data" / "changes.csv")
    assert {row["date"] for row in changes} == {CHANGED_DAY.isoformat()}
    total = [r for r in changes if (r["report"], r["segmentation"], r["measure"])
             == ("data_quality", "Total", "fetched")]
    old = {r["measure"]: r["value"] for r in rows(site / "archive" / first / "data"
                                                    / "data_quality.csv")
           if r["date"] == CHANGED_DAY.isoformat() and r["segmentation"] == "Total"}
    new = {r["measure"]: r["value"] for r in rows(site / "data" / "data_quality.csv")
           if r["date"] == CHANGED_DAY.isoformat() and r["segmentation"] == "Total"}
    assert old["fetched"] != new["fetched"]
    assert [(r["old_value"], r["new_value"]) for r in total] == [(old["fetched"],
                                                                  new["fetched"])]
    assert any(r["report"] == "assertions" for r in changes)
    page = (site / "changes.html").read_text()
    assert CHANGED_DAY.isoformat() in page and f"archive/{first}/" in page
    # the previous build's data files, as published, under archive/<its build id>/
    archived = site / "archive" / first / "data"
    assert {p.name: p.read_bytes() for p in archived.iterdir()} == first_files
    index = json.loads((site / "archive" / "index.json").read_text())
    assert [entry["build_id"] for entry in index][1] == first


def test_archives_rotate_over_16_builds(settings):
    backfill(DAYS[0], DAYS[0], settings, progress=False)  # the first of 17 builds
    start = datetime(2026, 10, 5, tzinfo=UTC)
    ids = []
    for n in range(16):  # 16 more
        site = build_site(settings, now=start + timedelta(hours=n))
        ids.append(json.loads((site / "data" / "manifest.json").read_text())["build_id"])
    index = json.loads((site / "archive" / "index.json").read_text())
    assert [entry["build_id"] for entry in index] == ids[::-1][:14]  # the oldest gone
    assert sorted(p.name for p in (site / "archive").iterdir() if p.is_dir()) == ids[2:]
    assert (site / "archive" / ids[2] / "data" / "manifest.json").is_file()


def test_a_range_build_makes_the_next_full_build_report_only_real_changes(settings):
    """`kpi build-site --start/--end` publishes a site of the range's days: neither it nor the
    full build after it may call the other days new or removed (they were published before and
    did not change)."""
    backfill(DAYS[0], DAYS[-1], settings, progress=False)  # full build
    site = settings.site_dir
    every_day = {day.isoformat() for day in DAYS}
    start = datetime(2026, 10, 5, tzinfo=UTC)
    build_site(settings, now=start, start=DAYS[1], end=DAYS[1])  # a range build
    assert json.loads((site / "data" / "manifest.json").read_text())["days"] == [
        [DAYS[1].isoformat(), DAYS[1].isoformat()]]
    assert rows(site / "data" / "changes.csv") == []
    assert "Days no longer published" not in (site / "changes.html").read_text()

    build_site(settings, now=start + timedelta(hours=1))  # full again
    assert rows(site / "data" / "data_quality.csv")  # every day is shown again
    assert {r["date"] for r in rows(site / "data" / "data_quality.csv")} == every_day
    assert rows(site / "data" / "changes.csv") == []
    page = (site / "changes.html").read_text()
    assert "No change since the previous build." in page and "New days" not in page
