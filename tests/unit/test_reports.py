"""Given/expected tests: hand-written blobs → staged → daily aggregates → assertions, new_user."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from kpi.aggregate import daily_aggregates, sites_histogram
from kpi.config import production_config
from kpi.reports import REPORT_COLUMNS, Aggregates, build_reports, format_number, to_csv
from kpi.stage import stage

CONFIG = production_config()
STEPS = CONFIG.steps("new_user")


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def blob(when: str, events: list[str], os_name: str | None = None, **fields) -> dict:
    value = {"timestamp": ms(when), "event_stream": [[e, 10 * i] for i, e in enumerate(events)]}
    if os_name is not None:
        value["user_agent"] = {"os": os_name, "browser": "Firefox", "version": "23"}
    value.update(fields)
    return value


NEW_USER = ["screen.rp_info", "screen.set_password", "user.user_staged",
            "user.user_confirmed", "assertion_generated", "window.unload"]
BLOBS = [
    blob("2026-10-01T08:00:00", NEW_USER, "Windows NT 6.1"),  # steps 1-4
    blob("2026-10-01T09:00:00", NEW_USER[:3], "iPhone"),  # steps 1-2
    # an existing user who typed a password: not a new user
    blob("2026-10-01T10:00:00", ["screen.rp_info", "screen.set_password",
                                 "authenticate.enter_password", "assertion_generated"],
         "Windows NT 6.1"),
    # staging continuation with an assertion: steps 3-4 only
    blob("2026-10-01T11:00:00", ["screen.rp_info", "staging_continuation",
                                 "assertion_generated"], "Macintosh"),
    # staging continuation without an assertion: not a new user
    blob("2026-10-01T12:00:00", ["screen.rp_info", "staging_continuation"], "Macintosh"),
    blob("2026-10-01T13:00:00", ["screen.rp_info", "window.unload"]),  # no user agent → Other
    blob("2026-10-01T14:00:00", []),  # empty stream: skipped
    blob("2026-10-02T00:00:00", ["screen.set_password"], "Windows NT 10.0"),  # midnight → 10-02
    blob("2026-10-01T23:59:59.999", ["screen.rp_info"], "Linux"),  # last ms of 10-01
]


@pytest.fixture(scope="module")
def reports():
    staged, counts = stage(BLOBS, CONFIG)
    assert counts.skipped_empty_stream == 1
    quality = staged.groupby("date").size().rename("aggregated").reset_index()
    for column in ("fetched", "stored", "duplicate", "skipped_empty_stream", "rejected_invalid"):
        quality[column] = 0
    aggregates = Aggregates(daily_aggregates(staged, CONFIG), sites_histogram(staged), quality)
    return build_reports(aggregates, CONFIG)


def values(report, segmentation: str, segment: str, day: str) -> dict:
    rows = report[(report.segmentation == segmentation) & (report.segment == segment)
                  & (report.date == day)]
    return dict(zip(rows.measure, rows.value, strict=True))


def test_assertions_counts_every_aggregated_blob(reports):
    report = reports["assertions"]
    assert values(report, "Total", "Total", "2026-10-01") == {"value": 7}
    assert values(report, "Total", "Total", "2026-10-02") == {"value": 1}
    by_os = {
        row.segment: row.value
        for row in report[(report.segmentation == "OS") & (report.date == "2026-10-01")]
        .itertuples()
    }
    assert by_os == {"Windows 7": 2, "iOS": 1, "Macintosh": 2, "Other": 1, "Linux": 1}
    assert values(report, "OS", "Other", "2026-10-02") == {"value": 1}


def steps(counts: list[int]) -> dict:
    return dict(zip(STEPS, counts, strict=True))


def test_new_user_steps_follow_the_special_rules(reports):
    report = reports["new_user"]
    assert values(report, "Total", "Total", "2026-10-01") == steps([2, 2, 2, 2])
    assert values(report, "OS", "Windows 7", "2026-10-01") == steps([1, 1, 1, 1])
    assert values(report, "OS", "iOS", "2026-10-01") == steps([1, 1, 0, 0])
    assert values(report, "OS", "Macintosh", "2026-10-01") == steps([0, 0, 1, 1])
    # a group with blobs but no new user still has every step, 0-filled
    assert values(report, "OS", "Linux", "2026-10-01") == steps([0, 0, 0, 0])
    assert values(report, "Total", "Total", "2026-10-02") == steps([1, 0, 0, 0])


def test_segments_of_every_segmentation_sum_to_total(reports):
    for name in ("assertions", "new_user"):
        report = reports[name]
        totals = report[report.segmentation == "Total"].set_index(["date", "measure"]).value
        for segmentation, rows in report[report.segmentation != "Total"].groupby("segmentation"):
            sums = rows.groupby(["date", "measure"]).value.sum()
            assert sums.to_dict() == totals.to_dict(), (name, segmentation)


def test_reports_are_sorted_in_code_point_order(reports):
    for report in reports.values():
        keys = list(report[["date", "segmentation", "segment", "measure"]].itertuples(index=False))
        assert keys == sorted(keys)
    segmentations = list(dict.fromkeys(reports["assertions"].segmentation))
    assert segmentations == ["API", "Browser", "EmailType", "Emails", "Locale", "OS", "Screen",
                             "Total"]


def test_a_day_with_only_skipped_blobs_has_no_rows():
    staged, counts = stage([blob("2026-10-01T08:00:00", [])], CONFIG)
    assert counts.skipped_empty_stream == 1
    groups = daily_aggregates(staged, CONFIG)
    assert groups.empty
    quality = staged[["date"]].head(0)
    report = build_reports(Aggregates(groups, sites_histogram(staged), quality), CONFIG)
    assert all(frame.empty for frame in report.values())


def test_csv_format(reports):
    text = to_csv(reports["assertions"])
    lines = text.split("\n")
    assert lines[0] == ",".join(REPORT_COLUMNS)
    assert "2026-10-01,Total,Total,value,7,," in lines
    assert text.endswith("\n") and "\r" not in text


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, ""), (float("nan"), ""), (3, "3"), (0.1 + 0.2, "0.30000000000000004"), (0.5, "0.5"),
     (1.0, "1.0")],
)
def test_number_format(value, text):
    assert format_number(value) == text
