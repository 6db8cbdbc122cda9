"""Anomaly flags: days whose headline measures lie far outside their recent baseline.

For each headline measure (the `HEADLINES` below), Total and each segment with enough volume,
each day is compared with the same measure on the same weekday in the previous weeks (KPIs
follow a weekly rhythm: weekends are quieter): the baseline is the median of those values and
their spread 1.4826 × their median absolute deviation (a robust standard deviation); while
fewer than 3 such days exist (the first weeks), a day must lie beyond all of them. A day is
flagged when it differs from the baseline by more than `spread_factor` spreads, more than
`spread_factor` times its sampling noise (Poisson for a count, binomial for a rate: small
segments are noisy) and more than `min_change` × the baseline; `low` below it, `high` above.
No verdict without `min_history_days` days of history before the day, nor for a segment whose
baseline volume (blobs; for a ratio, its denominator, on the day too) is under `min_volume`. On
Total, a processed day with no row at all (no blob) counts as 0 for the count measures, so a
day the source lost entirely is flagged too.

The thresholds are configuration (`anomalies` in the report configuration) and are stated on
the site's Definitions page. Flags are computed from the published reports, so they are exact
functions of the data files.
"""

from __future__ import annotations

import csv
import io
import warnings
from dataclasses import dataclass

import numpy as np
import orjson
import pandas as pd

WEEKDAY_POINTS = 3  # same-weekday values for a robust median; fewer: beyond all of them
OVERDISPERSION = 2.0  # daily KPIs vary more than pure sampling noise: variance × 2
COLUMNS = ["date", "report", "segmentation", "segment", "measure", "value", "baseline",
           "direction"]


@dataclass(frozen=True)
class AnomalyRules:
    """The flagging rule's thresholds (configuration key `anomalies`)."""

    weeks: int = 4  # same weekday in this many previous weeks
    min_history_days: int = 7  # processed days before a day, else no verdict
    spread_factor: float = 4.0  # robust standard deviations
    min_change: float = 0.4  # and this share of the baseline
    min_volume: int = 100  # blobs (or ratio denominator) a segment needs

    def describe(self) -> str:
        """The rule in words, for the Definitions page."""
        return (
            f"A day is flagged when a headline measure differs from its baseline (the median "
            f"of the same measure on the same weekday in the previous {self.weeks} weeks; "
            "while fewer than 3 such days exist, beyond all of them) by "
            f"more than {self.spread_factor:g} robust standard deviations (1.4826 × the median "
            f"absolute deviation of those days), more than {self.spread_factor:g} times its "
            "sampling noise (√(baseline) for a count, √(baseline × (1 − baseline) / "
            f"denominator) for a rate, at the larger of the day and its baseline) and more than "
            f"{self.min_change:.0%} of the baseline. No verdict before "
            f"{self.min_history_days} days of history, nor for a "
            f"segment with fewer than {self.min_volume} blobs (for a rate, in its denominator) "
            "in its baseline or, for a rate, on the day."
        )


@dataclass(frozen=True)
class Headline:
    report: str
    measure: str | None  # None: the last step of the report's flow
    ratio: bool
    segmented: bool


HEADLINES = (
    Headline("assertions", "value", ratio=False, segmented=True),
    Headline("new_user_per_day", "value", ratio=False, segmented=True),
    Headline("new_user_success", "value", ratio=True, segmented=True),
    Headline("bounce_rate", "value", ratio=True, segmented=False),
    Headline("password_reset", None, ratio=True, segmented=False),  # completion
    Headline("data_quality", "fetched", ratio=False, segmented=False),
)


def detect_anomalies(reports: dict[str, pd.DataFrame], days: list[str],
                     rules: AnomalyRules, last_steps: dict[str, str]) -> pd.DataFrame:
    """Flagged days. One row per (date, report, segmentation, segment, measure) flagged.

    Args:
        reports: the published reports (`build_reports`).
        days: every processed day (the days of the site), ascending.
        rules: the thresholds.
        last_steps: each step report's last step name (its completion measure).

    Returns:
        COLUMNS, sorted by the first five in code-point order; no row when nothing is flagged.
    """
    calendar = pd.DatetimeIndex(pd.to_datetime(days)) if days else pd.DatetimeIndex([])
    found = []
    for headline in HEADLINES:
        report = reports.get(headline.report)
        measure = headline.measure or last_steps.get(headline.report)
        if report is None or measure is None or report.empty:
            continue
        rows = report[report["measure"] == measure]
        if not headline.segmented:
            rows = rows[rows["segmentation"] == "Total"]
        for (segmentation, segment), series in rows.groupby(["segmentation", "segment"],
                                                            sort=True, observed=True):
            flags = _flag_series(series, calendar, rules, headline.ratio,
                                 zero_fill=segmentation == "Total" and not headline.ratio)
            if len(flags):
                found.append(flags.assign(report=headline.report, segmentation=segmentation,
                                          segment=segment, measure=measure))
    if not found:
        return pd.DataFrame(columns=COLUMNS)
    flagged = pd.concat(found, ignore_index=True)[COLUMNS]
    return flagged.sort_values(COLUMNS[:5], kind="stable", key=_code_points,
                               ignore_index=True)


def _code_points(column: pd.Series) -> pd.Series:
    return column.astype(str).map(lambda text: text.encode("utf-32-be"))


def _column_medians(rows: np.ndarray) -> np.ndarray:
    """The median of each column's non-NaN values (NaN when none): `np.nanmedian` of a few
    rows, without its masked-array cost."""
    ordered = np.sort(rows, axis=0)  # NaN last
    count = (~np.isnan(rows)).sum(axis=0)
    low = np.take_along_axis(ordered, np.maximum(count - 1, 0)[None, :] // 2, axis=0)[0]
    high = np.take_along_axis(ordered, (count // 2)[None, :], axis=0)[0]
    return np.where(count > 0, (low + high) / 2, np.nan)


def _flag_series(series: pd.DataFrame, calendar: pd.DatetimeIndex, rules: AnomalyRules,
                 ratio: bool, zero_fill: bool) -> pd.DataFrame:
    """The flagged days of one measure's daily series (date, value, baseline, direction),
    computed on a daily grid, all days at once."""
    by_day = series.assign(when=pd.to_datetime(series["date"])).set_index("when")
    dates = calendar.union(by_day.index) if len(calendar) else by_day.index
    grid = pd.date_range(dates[0], dates[-1], freq="D")
    value = pd.to_numeric(by_day["value"], errors="coerce").reindex(grid)
    volume = pd.to_numeric(by_day["denominator" if ratio else "value"],
                           errors="coerce").reindex(grid)
    if zero_fill:  # a processed day without any blob: nothing arrived
        processed = grid.isin(dates)
        value = value.where(~processed | value.notna(), 0.0)
        volume = volume.where(~processed | volume.notna(), 0.0)
    values, volumes = value.to_numpy(dtype=float), volume.to_numpy(dtype=float)
    n = len(grid)
    earlier = np.full((rules.weeks, n), np.nan)  # row k-1: the value k weeks before
    earlier_volume = np.full((rules.weeks, n), np.nan)
    for k in range(1, rules.weeks + 1):
        if 7 * k < n:
            earlier[k - 1, 7 * k:] = values[: n - 7 * k]
            earlier_volume[k - 1, 7 * k:] = volumes[: n - 7 * k]
    points = (~np.isnan(earlier)).sum(axis=0)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: no baseline
        baseline = _column_medians(earlier)
        spread = 1.4826 * _column_medians(np.abs(earlier - baseline))
        base_volume = _column_medians(np.where(np.isnan(earlier), np.nan, earlier_volume))
    history = (grid - grid[0]).days.to_numpy() >= rules.min_history_days
    has_base = ~np.isnan(baseline)
    enough = base_volume >= rules.min_volume
    if ratio:
        enough &= volumes >= rules.min_volume
    # with fewer than WEEKDAY_POINTS same weekdays (the first weeks) a median is not robust yet:
    # a day must then lie beyond all of them (one of two may be an outage itself)
    few = points < WEEKDAY_POINTS
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lowest, highest = np.nanmin(earlier, axis=0), np.nanmax(earlier, axis=0)
    change = values - baseline
    with np.errstate(all="ignore"):  # sampling noise: binomial for a rate, Poisson for a count,
        level = np.fmax(np.abs(baseline), np.abs(values))  # at the larger of day and baseline
        noise = np.sqrt(OVERDISPERSION * (level * (1 - level) / volumes if ratio else level))
        noise = np.nan_to_num(noise, nan=0.0, posinf=0.0)
    limit = np.maximum.reduce([rules.spread_factor * spread, rules.spread_factor * noise,
                               rules.min_change * np.abs(baseline)])
    beyond = np.where(few, np.where(change < 0, lowest - values, values - highest),
                      np.abs(change))
    flagged = (~np.isnan(values) & has_base & history & enough & (limit > 0) & (beyond > limit))
    where = np.flatnonzero(flagged)
    return pd.DataFrame({
        "date": grid[where].strftime("%Y-%m-%d"),
        "value": values[where],
        "baseline": baseline[where],
        "direction": np.where(change[where] < 0, "low", "high"),
    })


def anomalies_csv(flags: pd.DataFrame) -> str:
    """`data/anomalies.csv`: COLUMNS, numbers as in the report files (header only if empty)."""
    from kpi.reports import format_number

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(COLUMNS)
    for row in flags.itertuples(index=False):
        writer.writerow([row.date, row.report, row.segmentation, row.segment, row.measure,
                         format_number(row.value), format_number(row.baseline), row.direction])
    return out.getvalue()


def anomalies_json(flags: pd.DataFrame) -> bytes:
    """`data/anomalies.json`: an array of objects with the CSV's keys."""
    from kpi.reports import plain_number

    return orjson.dumps([
        {**row, "value": plain_number(row["value"]), "baseline": plain_number(row["baseline"])}
        for row in flags.to_dict("records")])
