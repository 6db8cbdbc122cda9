"""Views: what the browser needs to draw a report page or the overview, and nothing more.

The published report files (`data/<report>.csv|json`) are the public contract and hold every
row of every day; a page that read them would grow with history. So each page instead loads
small *view files*, on demand:

| file | one per | holds |
| --- | --- | --- |
| `data/view/<report>/<segmentation>/<year>.json` | report × segmentation × year | one array |
| | | per (segment, measure), aligned to the calendar days `first_day`..`last_day` of that year; |
| | | `null` where the report has no row; and per segment folded into `Other` on some days, |
| | | those days (indexes into the arrays) |

A page fetches only the years its date range touches, so what it loads does not grow with the
length of the history.
Arrays hold exactly the numbers of the report rows. A ratio ships its numerator and
denominator and the page divides (the same IEEE division as `kpi.reports`, so the value is
identical); a count or a median ships its value. A segment missing on a day is either a
segment without blobs that day (a count of 0) or one folded into `Other` below the privacy
threshold (`KPI_MIN_SEGMENT_COUNT`): `folded` tells them apart, so the page draws the second as
a gap, never as 0. The overview's headline tiles are computed here
too, exactly, from the daily aggregates (a median over a week comes from the summed histograms).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd

from kpi.anomalies import clear_weekly_change
from kpi.config import SEGMENTATIONS, Config
from kpi.days import epoch_day
from kpi.reports import QUALITY_MEASURES, Aggregates, histogram_medians

# How a report's value is made from what the view file ships.
COUNT = "count"  # value is a count; a missing segment on a day with data counts 0
RATIO = "ratio"  # value = numerator / denominator (null when the denominator is 0)
COMPLEMENT = "complement"  # value = 1 − (denominator − numerator) / denominator (bounce rate)
MEDIAN = "median"  # value as shipped (null when no blob had a sites value)

KINDS = {
    "new_user": COUNT,
    "new_user_time": RATIO,
    "new_user_success": RATIO,
    "new_user_per_day": COUNT,
    "password_reset": RATIO,
    "sites": RATIO,
    "sites_median": MEDIAN,
    "assertions": COUNT,
    "new_user_bounce": RATIO,
    "bounce_rate": COMPLEMENT,
    "general_progress_time": RATIO,
    "email_activation": COUNT,
    "data_quality": COUNT,
}
SEGMENTED = frozenset({
    "new_user", "new_user_success", "new_user_bounce", "new_user_per_day", "sites",
    "sites_median", "assertions",
})
FLOWS = {
    "new_user": "new_user", "new_user_time": "new_user", "password_reset": "password_reset",
    "general_progress_time": "general_progress", "email_activation": "email_activation",
}
RECENT_DAYS = 30  # days of history in an overview sparkline
WINDOW_DAYS = 7  # the overview compares the last 7 days with the 7 before


def segmentations_of(report: str) -> tuple[str, ...]:
    """The segmentations a report's page can show, `Total` first."""
    return ("Total", *SEGMENTATIONS) if report in SEGMENTED else ("Total",)


def measures_of(report: str, config: Config) -> tuple[str, ...]:
    """A report's measures in display order (steps in flow order)."""
    if report in FLOWS:
        return config.steps(FLOWS[report])
    if report == "data_quality":
        return QUALITY_MEASURES
    return ("value",)


def day_number(day: str) -> int:
    """Days since 1970-01-01 of a `YYYY-MM-DD` day."""
    return epoch_day(date.fromisoformat(day))


def view_block(rows: pd.DataFrame, report_id: str, segmentation: str, first_day: str,
               last_day: str, folded: pd.DataFrame | None = None) -> dict:
    """One view file: a report's rows of one segmentation and one span of days, as arrays.

    Args:
        rows: the report rows of `segmentation` whose date is in [first_day, last_day].
        report_id: the report's id (decides the kind).
        segmentation: `Total` or one segmentation.
        first_day, last_day: the calendar days the arrays cover, both included.
        folded: the segments of `segmentation` folded into `Other` on days in [first_day,
            last_day] (`Aggregates.folded` rows); default none.

    Returns:
        `{report, segmentation, kind, first_day, last_day, series: [...], folded: [...]}`
        where each series is `{segment, measure, value}` (counts, medians) or `{segment,
        measure, numerator, denominator}` (ratios), sorted by segment and measure, `null` where
        there is no row; and each `folded` entry is `{segment, days}`, `days` the ascending
        indexes into those arrays of the days the segment was folded into `Other`, sorted by
        segment.
    """
    kind = KINDS[report_id]
    origin = day_number(first_day)
    length = day_number(last_day) - origin + 1
    codes, days = pd.factorize(rows["date"])
    offsets = np.array([day_number(day) - origin for day in days], dtype=np.int64)[codes]
    columns = ("value",) if kind in (COUNT, MEDIAN) else ("numerator", "denominator")
    numbers = {column: rows[column].to_numpy(dtype=object) for column in columns}
    series = []
    for (segment, measure), index in sorted(
        rows.groupby(["segment", "measure"], sort=False).indices.items()
    ):
        entry = {"segment": segment, "measure": measure}
        for column in columns:
            aligned = np.full(length, None, dtype=object)
            aligned[offsets[index]] = numbers[column][index]
            entry[column] = aligned.tolist()
        series.append(entry)
    folded_days: dict[str, list[int]] = {}
    if folded is not None:
        for day, segment in sorted(zip(folded["date"], folded["segment"], strict=True),
                                   key=lambda pair: (pair[1], pair[0])):
            folded_days.setdefault(segment, []).append(day_number(day) - origin)
    return {
        "report": report_id,
        "segmentation": segmentation,
        "kind": kind,
        "first_day": first_day,
        "last_day": last_day,
        "series": series,
        "folded": [{"segment": segment, "days": days} for segment, days in folded_days.items()],
    }


# A median has no volume of its own: its page ranks segments by their blobs (sign-in attempts).
VOLUME_REPORT = {"sites_median": "assertions"}


def segment_orders(reports: dict[str, pd.DataFrame], report_id: str) -> dict[str, list[str]]:
    """Per segmentation, its segments by volume over the whole history, largest first.

    Volume is the summed count (count reports) or the summed denominator (ratios), of the
    report itself or of the one `VOLUME_REPORT` names; ties go by name. The page colours and
    lists segments in this order, the same for every date range. One pass over the report.
    """
    report_id = VOLUME_REPORT.get(report_id, report_id)
    report = reports[report_id]
    kind = KINDS[report_id]
    column = "value" if kind in (COUNT, MEDIAN) else "denominator"
    values = pd.to_numeric(report[column], errors="coerce")
    weights = values.notna().astype(int) if kind == MEDIAN else values.fillna(0)
    volume = weights.groupby([report["segmentation"], report["segment"]], sort=False).sum()
    orders: dict[str, list[str]] = {}
    for (segmentation, segment), total in volume.items():
        orders.setdefault(segmentation, []).append((-total, segment))
    return {name: [segment for _, segment in sorted(pairs)] for name, pairs in orders.items()}


def view_files(reports: dict[str, pd.DataFrame], days: list[str],
               folded: pd.DataFrame | None = None) -> Iterator[tuple[str, dict]]:
    """(path under `data/`, content) of every view file of a site covering `days`.

    One file per report, segmentation and calendar year from the first to the last day (a
    year without data has a file with no series), so a page loads only the years its date
    range touches, whatever the length of the history. `folded` (`Aggregates.folded`) names
    the segments folded into `Other` per day; a report's files carry those of the segments the
    report publishes under their own name on some day (the page's segments: a segment folded
    on every day is never named anywhere).
    """
    if not days:
        return
    first, last = days[0], days[-1]
    folded_parts = {}
    if folded is not None and len(folded):
        folded_years = folded["date"].to_numpy(dtype="U4")
        folded_parts = folded.groupby([folded["segmentation"].to_numpy(), folded_years],
                                      sort=False).indices
    for report_id, report in reports.items():
        years = report["date"].to_numpy(dtype="U4")  # the first 4 characters: the year
        parts = report.groupby([report["segmentation"].to_numpy(), years], sort=False).indices
        no_rows = report.iloc[:0]
        named = {segmentation: set(segments) for segmentation, segments
                 in report.groupby("segmentation", sort=False)["segment"].unique().items()}
        for segmentation in segmentations_of(report_id):
            for year in range(int(first[:4]), int(last[:4]) + 1):
                index = parts.get((segmentation, f"{year:04d}"))
                rows = no_rows if index is None else report.iloc[index]
                folded_index = folded_parts.get((segmentation, f"{year:04d}"))
                folded_here = None
                if folded_index is not None:
                    folded_here = folded.iloc[folded_index]
                    folded_here = folded_here[folded_here["segment"].isin(
                        named.get(segmentation, set()))]
                block = view_block(rows, report_id, segmentation,
                                   max(first, f"{year:04d}-01-01"), min(last, f"{year:04d}-12-31"),
                                   folded_here)
                yield f"view/{report_id}/{segmentation}/{year}.json", block


@dataclass(frozen=True)
class Headline:
    """An overview tile: which report and measure, how a week is summed, which way is good."""

    id: str
    label: str
    report: str
    measure: str
    summary: str  # "mean per day", "ratio of sums" or "median"
    up_is_good: bool
    percent: bool = False


def headlines(config: Config) -> tuple[Headline, ...]:
    """The overview's headline KPIs, in display order."""
    reset_done = config.steps("password_reset")[-1]
    return (
        Headline("new_users", "New users per day", "new_user_per_day", "value",
                 "mean per day", up_is_good=True),
        Headline("new_user_success", "New-user success rate", "new_user_success", "value",
                 "ratio of sums", up_is_good=True, percent=True),
        Headline("password_reset", "Password-reset completion", "password_reset", reset_done,
                 "ratio of sums", up_is_good=True, percent=True),
        Headline("bounce_rate", "Bounce rate", "bounce_rate", "value", "ratio of sums",
                 up_is_good=False, percent=True),
        Headline("assertions", "Sign-in attempts per day", "assertions", "value",
                 "mean per day", up_is_good=True),
        Headline("sites_median", "Median sites signed in", "sites_median", "value", "median",
                 up_is_good=True),
    )


def _window(last_day: str, end_offset: int, left_out: frozenset[str] = frozenset()) -> list[str]:
    """The 7 days ending `end_offset` days before `last_day`, but those `left_out`."""
    end = date.fromisoformat(last_day) - timedelta(days=end_offset)
    days = [(end - timedelta(days=n)).isoformat() for n in range(WINDOW_DAYS - 1, -1, -1)]
    return [day for day in days if day not in left_out]


def _left_out(headline: Headline, flags: pd.DataFrame | None) -> frozenset[str]:
    """The days a tile leaves out of its weeks: those flagged for its own measure (Total), and
    those whose rows fetched were flagged (the source lost or doubled a day: every measure of
    it is off)."""
    if flags is None or flags.empty:
        return frozenset()
    total = flags[flags["segmentation"] == "Total"]
    own = (total["report"] == headline.report) & (total["measure"] == headline.measure)
    fetched = (total["report"] == "data_quality") & (total["measure"] == "fetched")
    return frozenset(total.loc[own | fetched, "date"])


def _summary(headline: Headline, total: pd.DataFrame, aggregates: Aggregates,
             window: list[str]) -> float | None:
    """The headline over the days of `window` (None when no day of it has a value)."""
    rows = total[total["date"].isin(window)]
    if rows.empty:
        return None
    if headline.summary == "mean per day":  # over the days that have data (a gap is no 0)
        return sum(rows["value"]) / len(rows)
    if headline.summary == "ratio of sums":
        numerator, denominator = sum(rows["numerator"]), sum(rows["denominator"])
        if not denominator:
            return None
        if headline.report == "bounce_rate":  # the report's own formula: 1 − engaged / shown
            return 1 - (denominator - numerator) / denominator
        return numerator / denominator
    histogram = aggregates.sites_histogram
    histogram = histogram[(histogram["segmentation"] == "Total") & histogram["date"].isin(window)]
    if histogram.empty:
        return None
    summed = histogram.groupby(["segmentation", "segment", "sites"], as_index=False)["blobs"].sum()
    medians = histogram_medians(summed.assign(date="window"))
    return float(medians["median"].iloc[0])


def headline_tiles(reports: dict[str, pd.DataFrame], aggregates: Aggregates,
                   config: Config, flags: pd.DataFrame | None = None) -> list[dict]:
    """The overview tiles: last complete day, last 7 days vs the 7 before, and a sparkline.

    The two weeks leave out the flagged days (`_left_out`; `flags` as `detect_anomalies`
    returns them): a week is not better news for recovering from an outage in the one before.

    Returns:
        One dict per headline: `id, label, report, measure, percent, up_is_good, summary, last_day,
        last_value, current, previous, change, direction, good, recent` where `change` is the
        current week minus the previous one (relative for per-day means, None when the previous
        mean was 0; absolute for rates and medians), `direction` is `up`, `down` or `flat`
        (None unless both weeks have a value), `beyond_noise` whether the change lies beyond the
        measure's noise (`clear_weekly_change`), `good` whether that direction is good news
        (None unless the change is clear), and `recent` is `[day, value]` pairs of the
        last 30 calendar days (null for days without a value).
    """
    days = aggregates.days
    tiles = []
    totals = {}  # each report's Total rows, found once
    for headline in headlines(config):
        if headline.report not in totals:
            report = reports[headline.report]
            totals[headline.report] = report[report["segmentation"] == "Total"]
        report = totals[headline.report]
        total = report[report["measure"] == headline.measure]
        total = total[total["value"].notna()] if headline.summary != "ratio of sums" else total
        last_day = days[-1] if days else None
        values = dict(zip(total["date"], total["value"], strict=True))
        current = previous = change = direction = good = None
        clear = False
        left_out = _left_out(headline, flags)
        if last_day:
            current = _summary(headline, total, aggregates, _window(last_day, 0, left_out))
            previous = _summary(headline, total, aggregates,
                                _window(last_day, WINDOW_DAYS, left_out))
        if current is not None and previous is not None:
            difference = current - previous
            direction = "up" if difference > 0 else "down" if difference < 0 else "flat"
            clear = direction != "flat" and _clear(headline, total, values, last_day, current,
                                                   previous, config, left_out)
            good = (direction == "up") == headline.up_is_good if clear else None
            if headline.summary == "mean per day":  # relative; none from a week of zeros
                change = difference / previous if previous else None
            else:
                change = difference
        recent = []
        if last_day:
            end = date.fromisoformat(last_day)
            for n in range(RECENT_DAYS - 1, -1, -1):
                day = (end - timedelta(days=n)).isoformat()
                if days and day >= days[0]:
                    recent.append([day, values.get(day)])
        tiles.append({
            "id": headline.id, "label": headline.label, "report": headline.report,
            "measure": headline.measure, "percent": headline.percent,
            "up_is_good": headline.up_is_good, "summary": headline.summary, "last_day": last_day,
            "last_value": values.get(last_day), "current": current, "previous": previous,
            "change": change, "direction": direction, "beyond_noise": clear, "good": good,
            "recent": recent,
            "left_out": sorted(day for day in left_out if last_day and _in_weeks(day, last_day)),
        })
    return tiles


def _in_weeks(day: str, last_day: str) -> bool:
    """Whether `day` is in the two weeks a tile compares."""
    return 0 <= (date.fromisoformat(last_day) - date.fromisoformat(day)).days < 2 * WINDOW_DAYS


def _clear(headline: Headline, total: pd.DataFrame, values: dict[str, float], last_day: str,
           current: float, previous: float, config: Config,
           left_out: frozenset[str] = frozenset()) -> bool:
    """Whether the week-over-week change lies beyond the measure's noise (the flags' noise
    model, `clear_weekly_change`): its daily values over the anomaly rule's weeks, and each
    week's blobs (a count) or denominator (a rate)."""
    weeks = config.anomalies.weeks
    end = date.fromisoformat(last_day)
    daily = [values.get((end - timedelta(days=n)).isoformat())
             for n in range(7 * weeks - 1, -1, -1)]
    if headline.summary == "median":
        return clear_weekly_change(daily, current, previous, "value", None, config.anomalies)
    column = "value" if headline.summary == "mean per day" else "denominator"
    volumes = tuple(float(total.loc[total["date"].isin(_window(last_day, offset, left_out)),
                                    column].sum())
                    for offset in (0, WINDOW_DAYS))
    kind = "count" if headline.summary == "mean per day" else "rate"
    return clear_weekly_change(daily, current, previous, kind, volumes, config.anomalies)
