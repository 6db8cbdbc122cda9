"""Small segments are folded into `Other` in everything published (`KPI_MIN_SEGMENT_COUNT`).

A day with OS segments of 1, 4, 5 and 12 blobs and 2 blobs already in `Other`: at the default
threshold of 5, the 1 and the 4 are folded into `Other` (then 7 blobs), with every count summed,
so its ratios and median are those of the 7 blobs, computed by hand below.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

import orjson
import pandas as pd
import pytest
from bs4 import BeautifulSoup

from kpi import buildcache
from kpi.reports import REPORT_COLUMNS, build_reports, fold_small_segments
from kpi.settings import Settings
from kpi.site import render_site
from tests.unit.kpi_helpers import CONFIG, aggregates_of, blob, row

SHOWN = ["screen.rp_info"]  # dialog shown, nobody engaged: outcome bounce
FAILED = ["screen.rp_info", "screen.set_password"]  # new user, engaged, no assertion: fail
SIGNED_UP = ["screen.rp_info", "screen.set_password", "user.user_staged",
             "user.user_confirmed", "assertion_generated"]  # new user via Persona: fallback
DAY, NEXT_DAY = "2026-10-01", "2026-10-02"


def on(os_name: str, events: list[str], sites: float | None, day: str = DAY) -> dict:
    return blob(events, f"{day}T12:00:00", user_agent={"os": os_name},
                number_sites_signed_in=sites)


BLOBS = [
    on("FirefoxOS", SIGNED_UP, 3),  # 1 blob: folded
    on("Android", SHOWN, 1), on("Android", SHOWN, 2),  # 4 blobs: folded
    on("Android", FAILED, 7), on("Android", SIGNED_UP, None),
    on("BeOS", SHOWN, 10), on("BeOS", FAILED, 4),  # not a configured OS: Other already, 2 blobs
    *[on("Linux", SHOWN, 2) for _ in range(5)],  # 5 blobs: kept (fewer than 5 is folded)
    *[on("Windows NT 6.1", SIGNED_UP, 1) for _ in range(12)],  # Windows 7, 12 blobs: kept
    *[on("Android", SHOWN, 6, NEXT_DAY) for _ in range(6)],  # 6 Android blobs the next day
]
FOLDED_BY_HAND = {  # OS Other on DAY: FirefoxOS + Android + BeOS, 7 blobs
    "assertions": (7, None, None),
    "new_user_per_day": (2, None, None),  # N = idp + fallback = 1 + 1
    "new_user_success": (2 / 7, 2, 7),  # D = bounce 3 + fail 2 + fallback 2
    "new_user_bounce": (3 / 7, 3, 7),
    "sites": (27 / 7, 27, 7),  # 3 + 1 + 2 + 7 + 0 (none) + 10 + 4
    "sites_median": (3.5, None, None),  # of 1 2 3 4 7 10 (medians of the parts: 3, 2 and 7)
}


def os_segments(report: pd.DataFrame, day: str = DAY) -> dict[str, object]:
    rows = report[(report.date == day) & (report.segmentation == "OS")]
    return dict(zip(rows.segment, rows.value, strict=True))


@pytest.fixture(scope="module")
def exact():
    return aggregates_of(BLOBS)


def test_segments_under_the_threshold_are_folded_into_other_with_exact_numbers(exact):
    folded = fold_small_segments(exact, 5)
    reports = build_reports(folded, CONFIG)
    assert os_segments(reports["assertions"]) == {"Other": 7, "Linux": 5, "Windows 7": 12}
    for name, expected in FOLDED_BY_HAND.items():
        assert row(reports[name], day=DAY, segmentation="OS", segment="Other") == expected, name
    steps = CONFIG.steps("new_user")
    assert [row(reports["new_user"], step, DAY, "OS", "Other")[0] for step in steps] == [
        4, 2, 2, 2]
    assert os_segments(reports["assertions"], NEXT_DAY) == {"Android": 6}  # per day
    assert folded.min_segment_count == 5
    histogram = folded.sites_histogram
    other = histogram[(histogram.date == DAY) & (histogram.segmentation == "OS")
                      & (histogram.segment == "Other")]
    assert dict(zip(other.sites, other.blobs, strict=True)) == {
        1.0: 1, 2.0: 1, 3.0: 1, 4.0: 1, 7.0: 1, 10.0: 1}


def test_the_exact_aggregates_and_total_are_unchanged(exact):
    before = {name: report.copy() for name, report in build_reports(exact, CONFIG).items()}
    folded = build_reports(fold_small_segments(exact, 5), CONFIG)
    assert os_segments(before["assertions"]) == {  # the input is not modified
        "Android": 4, "FirefoxOS": 1, "Linux": 5, "Other": 2, "Windows 7": 12}
    for name, report in folded.items():
        total = report[report.segmentation == "Total"].reset_index(drop=True)
        pd.testing.assert_frame_equal(
            total, before[name][before[name].segmentation == "Total"].reset_index(drop=True))
    assert row(folded["assertions"], day=DAY) == (24, None, None)
    # every segmentation still adds up to the Total
    blobs = folded["assertions"][folded["assertions"].date == DAY]
    assert set(blobs.groupby("segmentation")["value"].sum()) == {24}


def test_zero_turns_folding_off(exact):
    assert fold_small_segments(exact, 0).groups.equals(exact.groups)
    reports = build_reports(fold_small_segments(exact, 0), CONFIG)
    assert os_segments(reports["assertions"]) == {
        "Android": 4, "FirefoxOS": 1, "Linux": 5, "Other": 2, "Windows 7": 12}
    assert row(reports["sites_median"], day=DAY, segmentation="OS", segment="Android") == (
        2.0, None, None)


def test_a_larger_threshold_folds_larger_segments(exact):
    reports = build_reports(fold_small_segments(exact, 13), CONFIG)
    assert os_segments(reports["assertions"]) == {"Other": 24}
    assert os_segments(reports["assertions"], NEXT_DAY) == {"Other": 6}
    assert row(reports["assertions"], day=NEXT_DAY) == (6, None, None)  # Total: never folded


def published(threshold: int):
    """A build as `kpi build-site` makes it (`kpi.buildcache.update`), from the two days."""
    docs = {day: {"day": day, "_rev": "1-a"} for day in (DAY, NEXT_DAY)}

    def decode(found: list[dict]):
        days = {doc["day"] for doc in found}
        return aggregates_of([b for b in BLOBS if blob_day(b) in days])

    built, _ = buildcache.update(None, {day: "1-a" for day in docs},
                                 lambda days: [docs[d] for d in days], decode, CONFIG,
                                 min_segment_count=threshold)
    return built


def blob_day(value: dict) -> str:
    return datetime.fromtimestamp(value["timestamp"] / 1000, UTC).date().isoformat()


def test_the_published_files_hold_no_segment_under_the_threshold():
    files = published(5).files()
    blobs = {}  # (date, segmentation, segment) → blobs, from the published assertions
    for record in csv.DictReader(io.StringIO(files["assertions"][0])):
        blobs[(record["date"], record["segmentation"], record["segment"])] = int(record["value"])
    assert blobs[(DAY, "OS", "Other")] == 7
    for name, (csv_text, json_bytes) in files.items():
        from_csv = [(r["date"], r["segmentation"], r["segment"])
                    for r in csv.DictReader(io.StringIO(csv_text))]
        from_json = [(r["date"], r["segmentation"], r["segment"]) for r in orjson.loads(json_bytes)]
        assert from_csv == from_json, name
        for group in from_csv:
            assert group in blobs or name == "data_quality", (name, group)
            if group[1] != "Total" and group[2] != "Other":
                assert blobs[group] >= 5, (name, group)
        assert "FirefoxOS" not in csv_text and b"FirefoxOS" not in json_bytes, name
    csv_rows = list(csv.DictReader(io.StringIO(files["sites_median"][0]),))
    median = [r for r in csv_rows if r["date"] == DAY and r["segment"] == "Other"
              and r["segmentation"] == "OS"]
    assert [r["value"] for r in median] == ["3.5"]
    assert list(csv_rows[0]) == REPORT_COLUMNS


def test_the_site_pages_and_view_files_show_no_folded_segment(tmp_path):
    built = published(5)
    render_site(tmp_path / "site", built.aggregates, built.reports, CONFIG,
                datetime(2026, 10, 3, tzinfo=UTC), files=built.files())
    data = [p for p in (tmp_path / "site").rglob("*") if p.is_file()
            and p.suffix in (".csv", ".json") and "FirefoxOS" in p.read_text(encoding="utf-8")]
    assert data == []
    page = BeautifulSoup((tmp_path / "site" / "assertions.html").read_text(encoding="utf-8"),
                         "html.parser")
    segments = json.loads(page.find("script", id="page-config").string)["segments"]["OS"]
    assert sorted(segments) == ["Android", "Linux", "Other", "Windows 7"]  # Android: next day


@pytest.mark.parametrize("threshold", [5, 0])
def test_the_definitions_page_states_the_rule(tmp_path, threshold):
    built = published(threshold)
    render_site(tmp_path / "site", built.aggregates, built.reports, CONFIG,
                datetime(2026, 10, 3, tzinfo=UTC), files=built.files())
    soup = BeautifulSoup((tmp_path / "site" / "definitions.html").read_text(encoding="utf-8"),
                         "html.parser")
    rule = soup.find("li", id="small-segments").get_text(" ", strip=True)
    if threshold:
        assert "fewer than 5 blobs is counted in its segmentation's Other" in rule
        assert "Total is never folded" in rule
    else:
        assert "turned off" in rule


def test_a_threshold_change_rebuilds_everything():
    assert (buildcache.cache_key(CONFIG, "couch kpi", 5)
            != buildcache.cache_key(CONFIG, "couch kpi", 3))
    previous = published(5)
    docs = {day: {"day": day, "_rev": "1-a"} for day in (DAY, NEXT_DAY)}
    built, changed = buildcache.update(
        previous, {day: "1-a" for day in docs}, lambda days: [docs[d] for d in days],
        lambda found: aggregates_of([b for b in BLOBS
                                     if blob_day(b) in {d["day"] for d in found}]),
        CONFIG, min_segment_count=0)
    assert changed == [DAY, NEXT_DAY]
    assert os_segments(built.reports["assertions"])["FirefoxOS"] == 1


def test_the_setting_defaults_to_5_and_must_be_a_whole_number_of_0_or_more():
    assert Settings.from_env({}).min_segment_count == 5
    assert Settings.from_env({"KPI_MIN_SEGMENT_COUNT": "0"}).min_segment_count == 0
    with pytest.raises(ValueError, match="KPI_MIN_SEGMENT_COUNT=-1 must be 0"):
        Settings.from_env({"KPI_MIN_SEGMENT_COUNT": "-1"})
    with pytest.raises(ValueError, match="KPI_MIN_SEGMENT_COUNT='2.5'"):
        Settings.from_env({"KPI_MIN_SEGMENT_COUNT": "2.5"})


def test_the_folded_segments_of_each_day_are_recorded(exact):
    folded = fold_small_segments(exact, 5).folded
    os_rows = folded[folded.segmentation == "OS"]
    assert list(zip(os_rows.date, os_rows.segment, strict=True)) == [
        (DAY, "Android"), (DAY, "FirefoxOS")]  # Other and Total are never "folded"
    assert fold_small_segments(exact, 0).folded.empty


def test_view_files_say_which_shown_segments_were_folded_on_which_day(tmp_path):
    built = published(5)
    render_site(tmp_path / "site", built.aggregates, built.reports, CONFIG,
                datetime(2026, 10, 3, tzinfo=UTC), files=built.files())
    view = json.loads((tmp_path / "site" / "data" / "view" / "assertions" / "OS" / "2026.json")
                      .read_text(encoding="utf-8"))
    # Android is shown on NEXT_DAY, folded on DAY (index 0); FirefoxOS is never shown, so it
    # is named nowhere
    assert view["folded"] == [{"segment": "Android", "days": [0]}]
    assert [s["segment"] for s in view["series"]] == ["Android", "Linux", "Other", "Windows 7"]
    assert view["series"][0]["value"] == [None, 6]  # the existing arrays are unchanged
    total = json.loads((tmp_path / "site" / "data" / "view" / "assertions" / "Total"
                        / "2026.json").read_text(encoding="utf-8"))
    assert total["folded"] == []
