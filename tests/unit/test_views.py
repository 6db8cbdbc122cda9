"""View files (what a report page loads) and the overview tiles, on hand-written blobs."""

from __future__ import annotations

import math
from datetime import date, timedelta

import numpy as np
import pytest

from fake_source.generator import blobs_for_day, history_days
from kpi.anomalies import clear_weekly_change
from kpi.config import SEGMENTATIONS
from kpi.reports import REPORT_COLUMNS, build_reports
from kpi.views import (
    COMPLEMENT,
    COUNT,
    KINDS,
    RATIO,
    headline_tiles,
    measures_of,
    segment_orders,
    segmentations_of,
    view_block,
    view_files,
)
from tests.unit.kpi_helpers import CONFIG, aggregates_of, blob, reports_of

ENGAGED = ["screen.rp_info", "screen.pick_email", "assertion_generated"]
BOUNCE = ["screen.rp_info"]


def _block(report, report_id, segmentation, first_day, last_day):
    rows = report[(report["segmentation"] == segmentation) & (report["date"] >= first_day)
                  & (report["date"] <= last_day)]
    return view_block(rows, report_id, segmentation, first_day, last_day)


def test_arrays_are_aligned_to_calendar_days_with_null_for_missing_days():
    blobs = [
        blob(ENGAGED, "2026-10-01T08:00:00", user_agent={"os": "Windows NT 6.1"}),
        blob(ENGAGED, "2026-10-01T09:00:00", user_agent={"os": "Windows NT 6.1"}),
        blob(BOUNCE, "2026-10-01T10:00:00", user_agent={"os": "Macintosh"}),
        blob(BOUNCE, "2026-10-03T10:00:00", user_agent={"os": "Macintosh"}),
    ]
    reports = reports_of(blobs)
    total = _block(reports["assertions"], "assertions", "Total", "2026-10-01", "2026-10-03")
    assert total["kind"] == COUNT
    assert total["series"] == [{"segment": "Total", "measure": "value", "value": [3, None, 1]}]

    by_os = _block(reports["assertions"], "assertions", "OS", "2026-10-01", "2026-10-03")
    assert [s["segment"] for s in by_os["series"]] == ["Macintosh", "Windows 7"]  # by name
    assert by_os["series"][0]["value"] == [1, None, 1]
    assert by_os["series"][1]["value"] == [2, None, None]
    # the page lists segments by volume: 2 blobs each, ties by name
    assert segment_orders(reports, "assertions")["OS"] == ["Macintosh", "Windows 7"]

    bounce = _block(reports["bounce_rate"], "bounce_rate", "Total", "2026-10-01", "2026-10-03")
    assert bounce["kind"] == COMPLEMENT
    # numerator = shown - engaged, denominator = shown
    assert bounce["series"][0]["numerator"] == [1, None, 1]
    assert bounce["series"][0]["denominator"] == [3, None, 1]


def test_segment_order_by_volume_and_medians_by_blobs():
    blobs = [blob(ENGAGED, f"2026-10-0{d}T08:00:00", user_agent={"os": "Linux"},
                  number_sites_signed_in=0) for d in (1, 2)]
    blobs += [blob(ENGAGED, "2026-10-01T09:00:00", user_agent={"os": "Macintosh"},
                   number_sites_signed_in=1) for _ in range(3)]
    reports = reports_of(blobs)
    assert segment_orders(reports, "assertions")["OS"] == ["Macintosh", "Linux"]
    # both have a median every day they have blobs; the medians rank by blobs: 3 vs 2
    assert segment_orders(reports, "sites_median")["OS"] == ["Macintosh", "Linux"]
    # a ratio ranks by its denominator: new-user success has none here, so by name
    assert segment_orders(reports, "new_user_success")["OS"] == ["Linux", "Macintosh"]


def _value(kind: str, series: dict, i: int):
    """The page script's arithmetic (static/arithmetic.js `valueAt`), in Python."""
    if kind not in (RATIO, COMPLEMENT):
        return series["value"][i]
    n, d = series["numerator"][i], series["denominator"][i]
    if n is None or d is None or d == 0:
        return None
    return 1 - (d - n) / d if kind == COMPLEMENT else n / d


def _rows_from_view(content: dict) -> list[tuple]:
    """The report rows a view file stands for (a null median cannot be told from no row)."""
    first = date.fromisoformat(content["first_day"])
    rows = []
    for series in content["series"]:
        key = "value" if "value" in series else "denominator"
        for i, marker in enumerate(series[key]):
            if marker is None:
                continue
            day = (first + timedelta(days=i)).isoformat()
            rows.append((day, content["segmentation"], series["segment"], series["measure"],
                         _value(content["kind"], series, i), series.get("numerator", {i: None})[i],
                         series.get("denominator", {i: None})[i]))
    return rows


@pytest.fixture(scope="module")
def fake_reports():
    days = [d for d in history_days(date(2026, 10, 20), 12) if d != date(2026, 10, 14)]
    blobs = [b for day in days for _, b in blobs_for_day(11, day, 120, bad_rate=0.0)]
    aggregates = aggregates_of(blobs)
    return aggregates, build_reports(aggregates, CONFIG)


def _same(a, b) -> bool:
    if a is None or b is None or (isinstance(b, float) and math.isnan(b)):
        return (a is None) == (b is None or (isinstance(b, float) and math.isnan(b)))
    return float(a) == float(b)


def test_view_files_hold_exactly_the_report_rows(fake_reports):
    aggregates, reports = fake_reports
    files = dict(view_files(reports, aggregates.days))
    expected_paths = {f"view/{r}/{s}/2026.json" for r in reports for s in segmentations_of(r)}
    assert set(files) == expected_paths
    for report_id, report in reports.items():
        for segmentation in segmentations_of(report_id):
            content = files[f"view/{report_id}/{segmentation}/2026.json"]
            assert (content["first_day"], content["last_day"]) == ("2026-10-09", "2026-10-20")
            got = sorted(_rows_from_view(content), key=lambda r: r[:4])
            part = report[report["segmentation"] == segmentation]
            if KINDS[report_id] == "median":  # null medians are not recoverable as rows
                part = part[part["value"].notna()]
            want = sorted(part[REPORT_COLUMNS].itertuples(index=False, name=None),
                          key=lambda r: r[:4])
            assert len(got) == len(want), (report_id, segmentation)
            for g, w in zip(got, want, strict=True):
                assert g[:4] == w[:4]
                assert all(_same(x, y) for x, y in zip(g[4:], w[4:], strict=True)), (g, w)


def test_a_missing_day_is_null_in_every_array(fake_reports):
    aggregates, reports = fake_reports
    content = _block(reports["new_user"], "new_user", "Total", aggregates.days[0],
                     aggregates.days[-1])
    gap = (date(2026, 10, 14) - date.fromisoformat(content["first_day"])).days
    assert [s["measure"] for s in content["series"]] == sorted(CONFIG.steps("new_user"))
    assert all(s["value"][gap] is None for s in content["series"])
    assert all(s["value"][gap - 1] is not None for s in content["series"])


def test_segmentations_and_measures_per_report():
    assert segmentations_of("assertions") == ("Total", *SEGMENTATIONS)
    assert segmentations_of("bounce_rate") == ("Total",)
    assert measures_of("password_reset", CONFIG) == CONFIG.steps("password_reset")
    assert measures_of("data_quality", CONFIG)[0] == "fetched"
    assert measures_of("sites", CONFIG) == ("value",)


# --- overview tiles ------------------------------------------------------------------------

def _week_blobs(scale: int = 1) -> list[dict]:
    """15 days: day d has `scale` × d engaged blobs (sites = d) and `scale` bounces (no sites
    value)."""
    blobs = []
    for d in range(1, 16):
        when = f"2026-10-{d:02d}T12:00:00"
        blobs += [blob(ENGAGED, when, number_sites_signed_in=d) for _ in range(scale * d)]
        blobs += [blob(BOUNCE, when) for _ in range(scale)]
    return blobs


def _tiles(scale: int) -> dict[str, dict]:
    aggregates = aggregates_of(_week_blobs(scale))
    return {t["id"]: t for t in headline_tiles(build_reports(aggregates, CONFIG), aggregates,
                                               CONFIG)}


@pytest.fixture(scope="module")
def tiles():
    return _tiles(1)


@pytest.fixture(scope="module")
def tiles_at_scale():
    """The same days with 40 times the blobs: the same rates and medians, less sampling noise."""
    return _tiles(40)


def test_sign_in_attempts_tile_compares_mean_per_day(tiles):
    tile = tiles["assertions"]
    assert tile["last_day"] == "2026-10-15"
    assert tile["last_value"] == 16
    assert tile["current"] == 91 / 7  # days 9..15: sum(d + 1) = 91, over 7 days with data
    assert tile["previous"] == 42 / 7  # days 2..8: 35 + 7
    assert tile["change"] == (91 / 7 - 42 / 7) / (42 / 7)
    # 91 blobs against 42: within 4 × the Poisson noise of two so small weeks (×1.05 in
    # logarithms, 0.77 apart), so no verdict; 40 times the blobs make the same rise clear
    assert (tile["direction"], tile["beyond_noise"], tile["good"]) == ("up", False, None)
    assert len(tile["recent"]) == 15 and tile["recent"][-1] == ["2026-10-15", 16]


def test_a_change_beyond_the_noise_is_good_or_bad_news(tiles_at_scale):
    for name, direction in [("assertions", "up"), ("bounce_rate", "down")]:
        tile = tiles_at_scale[name]
        verdict = (tile["direction"], tile["beyond_noise"], tile["good"])
        assert verdict == (direction, True, True), name


def test_bounce_rate_tile_is_a_ratio_of_sums_and_down_is_good(tiles):
    tile = tiles["bounce_rate"]
    assert tile["current"] == 1 - 84 / 91  # 1 − engaged / shown over days 9..15
    assert tile["previous"] == 1 - 35 / 42
    assert (tile["direction"], tile["beyond_noise"], tile["good"]) == ("down", False, None)
    assert tile["last_value"] == 1 - 15 / 16


def test_median_sites_tile_is_exact_over_the_week(tiles):
    tile = tiles["sites_median"]
    assert tile["last_value"] == 15
    assert tile["current"] == 12.5  # 9×9, 10×10 … 15×15: 84 values, 42nd = 12, 43rd = 13
    assert tile["previous"] == 6  # 2×2 … 8×8: 35 values, the 18th is 6
    assert tile["change"] == 6.5


def test_tiles_without_data_or_history_say_so(tiles):
    success = tiles["new_user_success"]  # bounces count in D, nobody succeeds: 0% both weeks
    assert (success["current"], success["previous"]) == (0.0, 0.0)
    assert (success["direction"], success["good"]) == ("flat", None)
    assert tiles["password_reset"]["current"] is None  # nobody began a reset: 0/0
    assert tiles["password_reset"]["direction"] is None
    new_users = tiles["new_users"]  # 0 new users a day in both weeks: flat, no relative change
    assert (new_users["previous"], new_users["change"], new_users["direction"]) == (0, None, "flat")
    short = aggregates_of(_week_blobs()[:30])  # days 1..7 only
    short_tiles = headline_tiles(build_reports(short, CONFIG), short, CONFIG)
    assert all(t["direction"] is None for t in short_tiles)
    empty = aggregates_of([])
    empty_tiles = headline_tiles(build_reports(empty, CONFIG), empty, CONFIG)
    assert all(t["last_day"] is None and t["recent"] == [] for t in empty_tiles)


def test_view_files_split_by_calendar_year():
    blobs = [blob(ENGAGED, f"{day}T08:00:00") for day in ("2025-12-30", "2026-01-02")]
    aggregates = aggregates_of(blobs)
    files = dict(view_files(build_reports(aggregates, CONFIG), aggregates.days))
    old, new = files["view/assertions/Total/2025.json"], files["view/assertions/Total/2026.json"]
    assert (old["first_day"], old["last_day"]) == ("2025-12-30", "2025-12-31")
    assert old["series"][0]["value"] == [1, None]
    assert (new["first_day"], new["last_day"]) == ("2026-01-01", "2026-01-02")
    assert new["series"][0]["value"] == [None, 1]
    assert files["view/assertions/OS/2026.json"]["series"][0]["segment"] == "Other"


def test_segmentations_and_measures_match_what_the_reports_produce(fake_reports):
    _, reports = fake_reports  # a drift here would mean missing view files or empty pages
    for report_id, report in reports.items():
        assert set(report["segmentation"]) == set(segmentations_of(report_id)), report_id
        assert set(report["measure"]) == set(measures_of(report_id, CONFIG)), report_id


def test_kinds_cover_every_report():
    from kpi.reports import REPORTS

    assert set(KINDS) == set(REPORTS)


def test_a_week_within_the_daily_noise_is_no_clear_change():
    """±20 % days: a week 0.5 % lower is noise, 40 % lower is news; rates likewise."""
    rules = CONFIG.anomalies
    rng = np.random.default_rng(3)
    daily = list(500 * rng.lognormal(0, 0.2, 28))
    week = sum(daily[-7:])
    assert not clear_weekly_change(daily, week / 7 * 0.995, week / 7, "count",
                                   (week * 0.995, week), rules)
    assert clear_weekly_change(daily, week / 7 * 0.6, week / 7, "count", (week * 0.6, week),
                               rules)
    rates = list(0.53 + rng.normal(0, 0.01, 28))
    assert not clear_weekly_change(rates, 0.5327009485771343, 0.532967032967033, "rate",
                                   (3640, 3640), rules)
    assert clear_weekly_change(rates, 0.45, 0.53, "rate", (3640, 3640), rules)
    # a flat history and big weeks: the binomial noise at the largest p (1 − p) decides
    flat = [0.5] * 28
    limit = 4 * (2 * 0.25 * (1 / 700 + 1 / 700)) ** 0.5  # 0.0756
    assert not clear_weekly_change(flat, 0.5 + limit * 0.95, 0.5, "rate", (700, 700), rules)
    assert clear_weekly_change(flat, 0.5 + limit * 1.05, 0.5, "rate", (700, 700), rules)


def test_tiles_leave_flagged_days_out_of_both_weeks():
    """A week after an outage is no better news for recovering from it: the day flagged low
    (its own measure or rows fetched) is left out, and the tile says which day."""
    import pandas as pd

    aggregates = aggregates_of(_week_blobs(40))
    reports = build_reports(aggregates, CONFIG)
    plain = {t["id"]: t for t in headline_tiles(reports, aggregates, CONFIG)}
    flags = pd.DataFrame([
        {"date": "2026-10-05", "report": "data_quality", "segmentation": "Total",
         "segment": "Total", "measure": "fetched", "value": 1.0, "baseline": 9.0,
         "direction": "low"},
        {"date": "2026-10-12", "report": "assertions", "segmentation": "Total",
         "segment": "Total", "measure": "value", "value": 1.0, "baseline": 9.0,
         "direction": "low"},
        {"date": "2026-10-11", "report": "assertions", "segmentation": "OS",
         "segment": "Linux", "measure": "value", "value": 1.0, "baseline": 9.0,
         "direction": "low"}])
    tiles = {t["id"]: t for t in headline_tiles(reports, aggregates, CONFIG, flags)}
    tile = tiles["assertions"]
    assert tile["left_out"] == ["2026-10-05", "2026-10-12"]  # not a segment's flag
    # days 9..15 but 12: 40 × (10 + 11 + 12 + 14 + 15 + 16) over 6 days with data
    assert tile["current"] == 40 * (10 + 11 + 12 + 14 + 15 + 16) / 6
    assert tile["previous"] == 40 * (3 + 4 + 5 + 7 + 8 + 9) / 6  # days 2..8 but 5
    assert plain["assertions"]["current"] == 40 * 91 / 7 and plain["assertions"]["left_out"] == []
    assert tiles["bounce_rate"]["left_out"] == ["2026-10-05"]  # rows fetched: every tile
