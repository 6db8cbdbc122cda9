"""Anomaly flags: days whose headline measures lie far outside their recent baseline.

For each headline measure (the `HEADLINES` below), Total and each segment with enough volume,
each day is compared with two baselines: its recent level (the median of the previous 7 days)
and its weekly rhythm (the median of the same weekday in the previous `weeks` weeks; the recent
level stands in when no such day has a value). A day is flagged only when it lies beyond both,
on the same side, by more than the threshold: a quiet Sunday is low against the week but not
against the Sundays before it, and a normal day after an outage is high against that one
weekday but not against the week. Counts are compared as ratios (logarithms: their noise grows
with their size), rates as differences.

The threshold is the largest of:
- `spread_factor` × the measure's day-to-day noise, estimated from all recent days: 1.4826 ×
  the median absolute deviation of the day-to-day changes over the previous `weeks` weeks,
  divided by √2 (a change is the difference of two days' noise). Changes between consecutive
  days hold little of the weekly rhythm, and the median ignores an outage or two among them, so
  the estimate needs neither weeks of history nor a smooth series;
- `sampling_factor` × the sampling noise, variance doubled (daily KPIs vary more than pure
  sampling): Poisson for a count (√(2 / baseline) as a ratio), binomial for a rate (√(2 p (1 − p)
  / denominator), at the largest p (1 − p) between the day and its baseline);
- the smallest change worth a flag: a count below (1 − `min_change`) × its baseline or above it
  divided by that; a rate `min_rate_change` × its baseline away from it.

No verdict before the series has `min_history_days` days with a value (a segment that appears
late waits its own week), nor before its noise rests on 5 day-to-day changes, nor for a segment
whose recent volume (blobs; for a rate its denominator, on the day too) is under `min_volume`. On
Total, a processed day with no row at all (no blob) counts as 0 for the count measures, so a
day the source lost entirely is flagged too.

The thresholds are configuration (`anomalies` in the report configuration) and are stated on
the site's Definitions page. Flags are computed from the published reports, so they are exact
functions of the data files. `tests/unit/test_anomaly_properties.py` measures the rule on
hundreds of seeded noisy series and prints how often it catches an outage and how often it
flags a normal day.
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from dataclasses import dataclass

import numpy as np
import orjson
import pandas as pd

from kpi.config import AnomalyRules
from kpi.formats import format_number, plain_number
from kpi.words import plural

LEVEL_DAYS = 7  # the recent level: the median of this many previous days
MIN_CHANGES = 5  # day-to-day changes the noise needs before a day gets a verdict
OVERDISPERSION = 2.0  # daily KPIs vary more than pure sampling noise: variance × 2
ROBUST_SD = 1.4826  # median absolute deviation → standard deviation, for normal noise
COLUMNS = ["date", "report", "segmentation", "segment", "measure", "value", "baseline",
           "direction"]


def describe_rules(rules: AnomalyRules) -> str:
    """The flagging rule with `rules`' thresholds, in words, for the Definitions page."""
    low = 1 - rules.min_change
    weeks = plural(rules.weeks, "week")
    count_change = (f"a fall below {low:.0%} of the baseline or a rise above "
                    f"{1 / low:.0%} of it" if low > 0 else "no change at all (never flagged)")
    return (
        "Each day is compared with two baselines: its recent level (the median of the "
        f"previous {LEVEL_DAYS} days) and its weekly rhythm (the median of the same weekday "
        f"in the previous {weeks}). A day is flagged low (or high) only when it "
        "lies below (or above) both by more than the largest of: "
        f"{rules.spread_factor:g} times the measure's day-to-day noise (1.4826 × the median "
        "absolute deviation of its day-to-day changes over the previous "
        f"{weeks}, divided by √2); {rules.sampling_factor:g} times its sampling "
        "noise (Poisson for a count, binomial for a rate at the largest p (1 − p) between "
        f"the day and its baseline, variance doubled); and, for a count, {count_change}; "
        f"for a rate, a change of {rules.min_rate_change:.0%} of the baseline. Counts are "
        "compared as ratios, rates as differences. No verdict before the series has "
        f"{plural(rules.min_history_days, 'day')} with a value and {MIN_CHANGES} "
        "day-to-day changes to measure its noise on, nor for a segment with fewer "
        f"than {plural(rules.min_volume, 'blob')} (for a rate, in its denominator) over its "
        "recent days or, for a rate, on the day."
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


def history_days(rules: AnomalyRules) -> int:
    """The days before a day that its verdict can read (its weekdays, its noise, its level)."""
    return max(7 * rules.weeks + 1, LEVEL_DAYS, rules.min_history_days)


def last_steps(config) -> dict[str, str]:
    """The step reports' completion measures `detect_anomalies` watches (`config`: a
    `kpi.config.Config`)."""
    return {"password_reset": config.steps("password_reset")[-1]}


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
    calendar = _day_numbers(days)
    found = []
    for headline in HEADLINES:
        report = reports.get(headline.report)
        measure = headline.measure or last_steps.get(headline.report)
        if report is None or measure is None or report.empty:
            continue
        rows = report[report["measure"] == measure]
        if not headline.segmented:
            rows = rows[rows["segmentation"] == "Total"]
        # every series of the report at once: parsing and converting per series costs more
        # than judging it
        when = _day_numbers(rows["date"])
        values = _numbers(rows["value"])
        volumes = _numbers(rows["denominator"]) if headline.ratio else values
        for (segmentation, segment), at in rows.groupby(["segmentation", "segment"],
                                                        sort=True, observed=True).indices.items():
            flags = _flag_series(when[at], values[at], volumes[at], calendar, rules,
                                 headline.ratio,
                                 zero_fill=segmentation == "Total" and not headline.ratio)
            if flags is not None:
                found.append(flags.assign(report=headline.report, segmentation=segmentation,
                                          segment=segment, measure=measure))
    if not found:
        return pd.DataFrame(columns=COLUMNS)
    flagged = pd.concat(found, ignore_index=True)[COLUMNS]
    return flagged.sort_values(COLUMNS[:5], kind="stable", key=_code_points,
                               ignore_index=True)


def _day_numbers(dates) -> np.ndarray:
    """Each date (`YYYY-MM-DD`) as its number of days since 1970-01-01."""
    if not len(dates):
        return np.array([], dtype=np.int64)
    return pd.to_datetime(pd.Index(dates)).to_numpy().astype("datetime64[D]").astype(np.int64)


def _numbers(column: pd.Series) -> np.ndarray:
    """A column as floats (NaN where it holds no number)."""
    return pd.to_numeric(column, errors="coerce").to_numpy(dtype=float)


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


def _lagged(values: np.ndarray, lags) -> np.ndarray:
    """One row per lag: `values` shifted that many days later (NaN before the first day)."""
    lags = list(lags)
    n = len(values)
    out = np.full((len(lags), n), np.nan)
    for row, lag in enumerate(lags):
        if lag < n:
            out[row, lag:] = values[: n - lag]
    return out


def _scale(values: np.ndarray) -> np.ndarray:
    """Each day's noise: 1.4826 × the median absolute deviation of the day-to-day changes of
    `values` among the days before it (a `rows` × days matrix of them), / √2."""
    center = _column_medians(values)
    return ROBUST_SD * _column_medians(np.abs(values - center)) / math.sqrt(2)


def day_to_day_noise(values: np.ndarray, days: int) -> tuple[np.ndarray, np.ndarray]:
    """The noise of each day's value, from the day-to-day changes among the `days` days before
    it (see the module's docstring), and how many changes it rests on (NaN with none)."""
    changes = _lagged(values - _lagged(values, [1])[0], range(1, days + 1))
    return _scale(changes), (~np.isnan(changes)).sum(axis=0)


def _as_logs(values: np.ndarray) -> np.ndarray:
    """Counts as logarithms (a day without any blob as half a blob, so it stays finite; a day
    without a value stays NaN)."""
    return np.log(np.where(np.isnan(values), np.nan, np.fmax(values, 0.5)))


def _largest_spread(day: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    """The largest p (1 − p) between a rate and its baseline (0.25 when 0.5 lies between)."""
    low, high = np.fmin(day, baseline), np.fmax(day, baseline)
    return np.where((low <= 0.5) & (high >= 0.5), 0.25,
                    np.fmax(low * (1 - low), high * (1 - high)))


def _flag_series(when: np.ndarray, value: np.ndarray, volume: np.ndarray,
                 calendar: np.ndarray, rules: AnomalyRules, ratio: bool,
                 zero_fill: bool) -> pd.DataFrame | None:
    """The flagged days of one measure's daily series (date, value, baseline, direction), or
    None, computed on a daily grid, all days at once.

    `when` holds the series' days (`_day_numbers`), `value` and `volume` (the ratio's
    denominator, or the value) their figures, `calendar` the processed days, ascending.
    """
    if len(np.unique(when)) < len(when):
        msg = "a series has more than one row for a day"
        raise ValueError(msg)
    # the grid: every day from the first to the last one processed or of the series
    first, last = ((min(calendar.min(), when.min()), max(calendar.max(), when.max()))
                   if len(calendar) else (when[0], when[-1]))
    n = max(int(last - first) + 1, 0)
    if n == 0:
        return None
    inside = (when >= first) & (when <= last)
    at = (when[inside] - first).astype(np.intp)
    values, volumes = np.full(n, np.nan), np.full(n, np.nan)
    values[at], volumes[at] = value[inside], volume[inside]
    if zero_fill:  # a processed day without any blob: nothing arrived
        processed = np.zeros(n, dtype=bool)
        processed[(calendar - first).astype(np.intp)] = True
        processed[at] = True
        values[processed & np.isnan(values)] = 0.0
        volumes[processed & np.isnan(volumes)] = 0.0
    scaled = values if ratio else _as_logs(values)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: no baseline
        shown_level = _column_medians(_lagged(values, range(1, LEVEL_DAYS + 1)))
        shown_rhythm = _column_medians(_lagged(values, [7 * k for k in range(1, rules.weeks + 1)]))
        base_volume = _column_medians(_lagged(volumes, range(1, LEVEL_DAYS + 1)))
        noise, changes = day_to_day_noise(scaled, 7 * rules.weeks)
        level, rhythm = ((shown_level, shown_rhythm) if ratio
                         else (_as_logs(shown_level), _as_logs(shown_rhythm)))
        above_level = scaled - level
        # no same weekday in the previous weeks (days missing): the recent level alone
        above_rhythm = np.where(np.isnan(rhythm), above_level, scaled - rhythm)
        shown_rhythm = np.where(np.isnan(rhythm), shown_level, shown_rhythm)
        rhythm = np.where(np.isnan(rhythm), level, rhythm)
        # the baseline the day is judged against: the nearer one, when the day lies on the
        # same side of both (else it is within its normal range: no verdict needed)
        nearer_is_level = np.abs(above_level) <= np.abs(above_rhythm)
        baseline = np.where(nearer_is_level, level, rhythm)
        change = np.where(nearer_is_level, above_level, above_rhythm)
        same_side = np.sign(above_level) == np.sign(above_rhythm)
        if ratio:
            sampling = np.sqrt(OVERDISPERSION * _largest_spread(values, baseline) / volumes)
            smallest = rules.min_rate_change * np.abs(baseline)
        else:
            sampling = np.sqrt(OVERDISPERSION / base_volume)
            smallest = np.full(n, -math.log(1 - rules.min_change)
                               if rules.min_change < 1 else np.inf)
        sampling = np.nan_to_num(sampling, nan=0.0, posinf=0.0)
        limit = np.fmax.reduce([rules.spread_factor * np.nan_to_num(noise, nan=0.0),
                                rules.sampling_factor * sampling, smallest])
    # history: the series' own days with a value before the day (a segment that appears late
    # waits as long as the site did), and enough day-to-day changes to know its noise
    valued = ~np.isnan(values)
    history = ((np.cumsum(valued) - valued) >= rules.min_history_days) & (changes >= MIN_CHANGES)
    enough = base_volume >= rules.min_volume
    if ratio:
        enough &= volumes >= rules.min_volume
    flagged = (valued & ~np.isnan(baseline) & history & enough & same_side
               & (limit > 0) & (np.abs(change) > limit))
    where = np.flatnonzero(flagged)
    shown = np.where(nearer_is_level, shown_level, shown_rhythm)
    if not len(where):
        return None
    return pd.DataFrame({
        "date": np.datetime_as_string((first + where).astype("datetime64[D]"), unit="D"),
        "value": values[where],
        "baseline": shown[where],
        "direction": np.where(change[where] < 0, "low", "high"),
    })


def clear_weekly_change(daily: list[float | None], current: float, previous: float,
                        kind: str, volumes: tuple[float, float] | None,
                        rules: AnomalyRules) -> bool:
    """Whether a change from one week's figure to the next lies beyond the measure's noise,
    by the flags' noise model: the overview colours a change only when this holds.

    The noise of a 7-day figure against the 7 days before is √(2/7) × the day-to-day noise of
    `daily` (the measure's last `weeks` weeks, oldest first, None for a day without a value);
    the change must exceed `spread_factor` times it and `sampling_factor` times the sampling
    noise of the two weeks (variance doubled, as for the flags).

    Args:
        daily: the measure's daily values.
        current, previous: the two weeks' figures (a mean per day, a ratio of sums, a median).
        kind: "count" (compared as a ratio, Poisson noise on `volumes`, each week's number of
            blobs), "rate" (a difference, binomial noise on `volumes`, each week's denominator)
            or "value" (a difference, no sampling term).
        volumes: the two weeks' volumes (current, previous), for "count" and "rate".
        rules: the thresholds.
    """
    values = np.array([np.nan if v is None else v for v in daily], dtype=float)
    if kind == "count":
        values = np.where(np.isnan(values), np.nan, _as_logs(values))
        change = float(_as_logs(np.array([current]))[0] - _as_logs(np.array([previous]))[0])
    else:
        change = current - previous
    changes = np.diff(values)[-7 * rules.weeks:]
    noise = float(_scale(changes[:, None])[0]) if len(changes) else math.nan
    sampling = 0.0
    if kind == "count" and volumes:
        sampling = math.sqrt(OVERDISPERSION * sum(1 / max(v, 0.5) for v in volumes))
    elif kind == "rate" and volumes and min(volumes) > 0:
        spread = float(_largest_spread(np.array(current), np.array(previous)))
        sampling = math.sqrt(OVERDISPERSION * spread * sum(1 / v for v in volumes))
    limit = max(rules.spread_factor * math.sqrt(2 / 7) * (0.0 if math.isnan(noise) else noise),
                rules.sampling_factor * sampling)
    return abs(change) > limit


def anomalies_csv(flags: pd.DataFrame) -> str:
    """`data/anomalies.csv`: COLUMNS, numbers as in the report files (header only if empty)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(COLUMNS)
    for row in flags.itertuples(index=False):
        writer.writerow([row.date, row.report, row.segmentation, row.segment, row.measure,
                         format_number(row.value), format_number(row.baseline), row.direction])
    return out.getvalue()


def anomalies_json(flags: pd.DataFrame) -> bytes:
    """`data/anomalies.json`: an array of objects with the CSV's keys."""
    return orjson.dumps([
        {**row, "value": plain_number(row["value"]), "baseline": plain_number(row["baseline"])}
        for row in flags.to_dict("records")])
