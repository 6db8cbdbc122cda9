"""Reports: daily aggregates over any date range → the published data files (SPEC §9).

Every report is a long frame with the columns of `REPORT_COLUMNS`, one row per
(date, segmentation, segment, measure), sorted by those four in code-point order. Values are
Python ints for counts and floats for means and ratios; None is a null (empty in CSV).

Published files hold aggregates only, and no small segment (SPEC D11): before the reports of a
site are built, `fold_small_segments` folds every segment with fewer than
`KPI_MIN_SEGMENT_COUNT` blobs on a day into `Other` (`kpi.buildcache.update` does it once, for
every build). The reports themselves compute exactly what they are given.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from operator import itemgetter

import numpy as np
import orjson
import pandas as pd

from kpi.aggregate import KEYS
from kpi.config import Config
from kpi.formats import format_number, plain_number

REPORT_COLUMNS = ["date", "segmentation", "segment", "measure", "value", "numerator", "denominator"]
QUALITY_MEASURES = (
    "fetched", "stored", "duplicate", "skipped_empty_stream", "rejected_invalid", "aggregated",
)
QUALITY_LABELS = {  # what the pages call them
    "fetched": "Fetched", "stored": "Stored", "duplicate": "Duplicates",
    "skipped_empty_stream": "Skipped (empty stream)", "rejected_invalid": "Rejected (quarantined)",
    "aggregated": "Aggregated",
}
PROBLEM_MEASURES = ("duplicate", "skipped_empty_stream", "rejected_invalid")  # bad rows
# a day's bad rows make it a problem day from this share of its rows fetched on (any on a day
# without fetched rows): a steady trickle is normal and stays in the chart and the table
PROBLEM_SHARE = 0.02
OTHER = "Other"  # the catch-all segment of every segmentation (SPEC 3.3)
FOLDED_COLUMNS = ["date", "segmentation", "segment"]


def no_folded() -> pd.DataFrame:
    """An empty `Aggregates.folded` frame."""
    return pd.DataFrame({column: pd.Series(dtype=object) for column in FOLDED_COLUMNS})


@dataclass(frozen=True)
class Aggregates:
    """Daily aggregates of a date range: groups (counts), sites histogram, data quality."""

    groups: pd.DataFrame  # one row per day per segmentation per segment
    sites_histogram: pd.DataFrame  # one row per day per segmentation per segment per value
    quality: pd.DataFrame  # one row per day: the D12 counts
    min_segment_count: int = 0  # the threshold `fold_small_segments` applied (0: not folded)
    # one row per day per segmentation per segment that had blobs and was folded into Other
    folded: pd.DataFrame = field(default_factory=no_folded)

    @property
    def days(self) -> list[str]:
        """The days covered, ascending."""
        return sorted(self.quality["date"].unique()) if not self.quality.empty else []


def fold_small_segments(aggregates: Aggregates, min_count: int) -> Aggregates:
    """Aggregates in which no segment has fewer than `min_count` blobs on a day, except `Other`.

    One row per day per segmentation per segment, as the input, with fewer segments: per day
    and per segmentation, every segment whose `blobs` count is below `min_count` is folded into
    `Other` (merged with the segmentation's own `Other` when it has one). The counts are
    additive (SPEC D7), so folding sums them, the sites histogram included: the folded
    `Other`'s ratios and median are exact, computed from its summed numerators, denominators
    and histogram. `Other` names no value, so it stays even when it holds fewer than
    `min_count` blobs; the Total segmentation is never folded; the quality counts are per day
    and untouched.

    Folding happens at publish time, on frames read from the stored aggregates, which stay exact
    and unfolded: another threshold needs no re-extract. It is per day (a segment can be
    folded on its small days only), so folding any set of days gives the rows a fold of all
    of them gives for those days, and an incremental build still equals one from scratch.

    Args:
        aggregates: daily aggregates, unfolded.
        min_count: `KPI_MIN_SEGMENT_COUNT`; 0 (or less) folds nothing.

    Returns:
        The folded aggregates (`min_segment_count` records `min_count`), rows sorted by date,
        segmentation and segment (and sites value in the histogram), as stored; `folded` names
        the segments folded on each day that had at least one blob (so a page can tell "folded
        into Other" from "no blob"), one row per day per segmentation per segment, sorted.
    """
    groups, histogram = aggregates.groups, aggregates.sites_histogram
    folded = replace(aggregates, min_segment_count=min_count)
    if min_count <= 0 or groups.empty:
        return folded
    small = ((groups["blobs"] < min_count) & (groups["segmentation"] != "Total")
             & (groups["segment"] != OTHER))
    if not small.any():
        return folded
    named_small = groups.loc[small & (groups["blobs"] > 0), FOLDED_COLUMNS]
    folded = replace(folded, folded=named_small.astype(object).sort_values(FOLDED_COLUMNS)
                     .reset_index(drop=True))
    small_keys = pd.MultiIndex.from_frame(groups.loc[small, KEYS])
    named = histogram["segment"].isin(small_keys.unique(level="segment")).to_numpy()
    small_cells = np.zeros(len(histogram), dtype=bool)  # matched on the few named rows only
    small_cells[named] = pd.MultiIndex.from_frame(histogram.loc[named, KEYS]).isin(small_keys)
    return replace(
        folded,
        groups=_fold(groups, small.to_numpy(), KEYS),
        sites_histogram=_fold(histogram, small_cells, [*KEYS, "sites"]),
    )


def _fold(frame: pd.DataFrame, small: np.ndarray, keys: list[str]) -> pd.DataFrame:
    """`frame` with the `small` rows relabelled `Other` and summed per key.

    Rows come out grouped by (date, segmentation), in the order these blocks first appear;
    only the blocks holding a small row are regrouped (and sorted by `keys`), the others keep
    their rows' order. So a frame sorted by `keys`, as stored, stays sorted.
    """
    block = frame.groupby(["date", "segmentation"], sort=False).ngroup().to_numpy()
    touched = np.isin(block, np.unique(block[small]))
    relabelled = frame[touched].assign(
        segment=frame["segment"][touched].where(~small[touched], OTHER), _block=block[touched])
    merged = relabelled.groupby(["_block", *keys], sort=True, as_index=False).sum()
    rows = pd.concat([frame[~touched].assign(_block=block[~touched]), merged],
                     ignore_index=True)
    order = np.argsort(rows["_block"].to_numpy(), kind="stable")
    return rows.iloc[order][list(frame.columns)].astype(frame.dtypes.to_dict()).reset_index(
        drop=True)


def _rows_frame(rows: list[list]) -> pd.DataFrame:
    rows.sort(key=lambda row: (row[0], row[1], row[2], row[3]))
    return pd.DataFrame(rows, columns=REPORT_COLUMNS, dtype=object)


def _groups(aggregates: Aggregates, segmented: bool) -> pd.DataFrame:
    """The row universe: groups with at least one aggregated blob (Total only if unsegmented)."""
    groups = aggregates.groups
    groups = groups[groups["blobs"] > 0]
    if not segmented:
        groups = groups[groups["segmentation"] == "Total"]
    return groups


def _keys(groups: pd.DataFrame) -> list[tuple[str, str, str]]:
    columns = (groups[c].astype(object).tolist() for c in ("date", "segmentation", "segment"))
    return list(zip(*columns, strict=True))


def _counts(groups: pd.DataFrame, measures: dict[str, pd.Series]) -> list[list]:
    """Count rows: value = the count, numerator and denominator empty."""
    keys = _keys(groups)
    rows = []
    for measure, counts in measures.items():
        for key, count in zip(keys, counts.tolist(), strict=True):
            rows.append([*key, measure, int(count), None, None])
    return rows


def _ratios(groups: pd.DataFrame, measures: dict[str, tuple[pd.Series, pd.Series]]) -> list[list]:
    """Ratio rows: value = numerator / denominator, null when the denominator is 0 (D5)."""
    keys = _keys(groups)
    rows = []
    for measure, (numerators, denominators) in measures.items():
        pairs = zip(keys, numerators.tolist(), denominators.tolist(), strict=True)
        for key, numerator, denominator in pairs:
            value = numerator / denominator if denominator else None
            rows.append([*key, measure, value, plain_number(numerator), plain_number(denominator)])
    return rows


def _flow(groups: pd.DataFrame, config: Config, flow: str) -> dict[str, pd.Series]:
    return {step: groups[f"{flow}:{step}"] for step in config.steps(flow)}


def _of_first_step(groups: pd.DataFrame, config: Config, flow: str) -> dict:
    steps = _flow(groups, config, flow)
    first = steps[config.steps(flow)[0]]
    return {step: (count, first) for step, count in steps.items()}


def _new_user_outcomes(groups: pd.DataFrame) -> tuple[pd.Series, pd.Series, pd.Series]:
    """N (idp + fallback), D (bounce + fail + idp + fallback) and bounce (SPEC §4.2)."""
    successes = groups["outcome:idp"] + groups["outcome:fallback"]
    universe = successes + groups["outcome:bounce"] + groups["outcome:fail"]
    return successes, universe, groups["outcome:bounce"]


def new_user(aggregates: Aggregates, config: Config) -> pd.DataFrame:
    """New user flow: per group and step, blobs with non-empty newUserSteps reaching the step."""
    groups = _groups(aggregates, segmented=True)
    return _rows_frame(_counts(groups, _flow(groups, config, "new_user")))


def new_user_time(aggregates: Aggregates, config: Config) -> pd.DataFrame:
    """New user flow over time: count(step) / count(step 1), Total only; may exceed 1."""
    groups = _groups(aggregates, segmented=False)
    return _rows_frame(_ratios(groups, _of_first_step(groups, config, "new_user")))


def new_user_success(aggregates: Aggregates, config: Config) -> pd.DataFrame:
    """New user success: N / D per group."""
    groups = _groups(aggregates, segmented=True)
    successes, universe, _ = _new_user_outcomes(groups)
    return _rows_frame(_ratios(groups, {"value": (successes, universe)}))


def new_user_per_day(aggregates: Aggregates, config: Config) -> pd.DataFrame:
    """New users per day: N (idp + fallback successes) per group."""
    groups = _groups(aggregates, segmented=True)
    successes, _, _ = _new_user_outcomes(groups)
    return _rows_frame(_counts(groups, {"value": successes}))


def new_user_bounce(aggregates: Aggregates, config: Config) -> pd.DataFrame:
    """New user bounce rate: bounce / D per group."""
    groups = _groups(aggregates, segmented=True)
    _, universe, bounces = _new_user_outcomes(groups)
    return _rows_frame(_ratios(groups, {"value": (bounces, universe)}))


def password_reset(aggregates: Aggregates, config: Config) -> pd.DataFrame:
    """Password reset flow: count(step) / count(step 1), Total only."""
    groups = _groups(aggregates, segmented=False)
    return _rows_frame(_ratios(groups, _of_first_step(groups, config, "password_reset")))


def general_progress_time(aggregates: Aggregates, config: Config) -> pd.DataFrame:
    """General progress: count(step) / count(`0 - Blob sent`), Total only."""
    groups = _groups(aggregates, segmented=False)
    return _rows_frame(_ratios(groups, _of_first_step(groups, config, "general_progress")))


def bounce_rate(aggregates: Aggregates, config: Config) -> pd.DataFrame:
    """Bounce rate: 1 − engaged / shown over all blobs, Total only; null when none was shown."""
    groups = _groups(aggregates, segmented=False)
    progress = config.steps("general_progress")
    shown = groups[f"general_progress:{progress[1]}"].tolist()
    engaged = groups[f"general_progress:{progress[2]}"].tolist()
    rows = [
        [*key, "value", 1 - e / s if s else None, int(s - e), int(s)]
        for key, s, e in zip(_keys(groups), shown, engaged, strict=True)
    ]
    return _rows_frame(rows)


def sites(aggregates: Aggregates, config: Config) -> pd.DataFrame:
    """Persona adoption: mean of the sites value over all aggregated blobs (none counts 0)."""
    groups = _groups(aggregates, segmented=True)
    return _rows_frame(_ratios(groups, {"value": (groups["sites_sum"], groups["blobs"])}))


def histogram_medians(histogram: pd.DataFrame) -> pd.DataFrame:
    """One row per (date, segmentation, segment): the median sites value of its histogram.

    With an even number of values, the mean of the two middle ones.
    """
    if histogram.empty:
        return pd.DataFrame(columns=[*KEYS, "median"])
    ordered = histogram.sort_values([*KEYS, "sites"], ignore_index=True)
    grouped = ordered.groupby(KEYS, sort=False)["blobs"]
    upto = grouped.cumsum()
    before = upto - ordered["blobs"]
    total = grouped.transform("sum")
    lower, upper = (total - 1) // 2, total // 2  # 0-based ranks of the middle values
    low = ordered[(before <= lower) & (upto > lower)].set_index(KEYS)["sites"]
    high = ordered[(before <= upper) & (upto > upper)].set_index(KEYS)["sites"]
    return ((low + high) / 2).rename("median").reset_index()


def sites_median(aggregates: Aggregates, config: Config) -> pd.DataFrame:
    """Median sites value over blobs that have one; null when none has."""
    groups = _groups(aggregates, segmented=True)
    medians = histogram_medians(aggregates.sites_histogram)
    lookup = {
        (d, s, g): m
        for d, s, g, m in zip(medians["date"], medians["segmentation"], medians["segment"],
                              medians["median"].tolist(), strict=True)
    }
    rows = [[*key, "value", lookup.get(key), None, None] for key in _keys(groups)]
    return _rows_frame(rows)


def assertions(aggregates: Aggregates, config: Config) -> pd.DataFrame:
    """Sign-in attempts: the number of aggregated blobs per group (not only assertions)."""
    groups = _groups(aggregates, segmented=True)
    return _rows_frame(_counts(groups, {"value": groups["blobs"]}))


def email_activation(aggregates: Aggregates, config: Config) -> pd.DataFrame:
    """Additional-email activation: per day and step, blobs with `user.email_staged`."""
    groups = _groups(aggregates, segmented=False)
    return _rows_frame(_counts(groups, _flow(groups, config, "email_activation")))


def data_quality(aggregates: Aggregates, config: Config) -> pd.DataFrame:
    """Per-day reconciliation (SPEC D12): one row per day per measure, Total only.

    Days on which KPIggybank delivered nothing at all are absent, as in every report.
    """
    rows = [
        [day.date, "Total", "Total", measure, int(getattr(day, measure)), None, None]
        for day in aggregates.quality.itertuples(index=False)
        if day.fetched or day.aggregated
        for measure in QUALITY_MEASURES
    ]
    return _rows_frame(rows)


REPORTS: dict[str, Callable[[Aggregates, Config], pd.DataFrame]] = {
    "new_user": new_user,
    "new_user_time": new_user_time,
    "new_user_success": new_user_success,
    "new_user_per_day": new_user_per_day,
    "password_reset": password_reset,
    "sites": sites,
    "sites_median": sites_median,
    "assertions": assertions,
    "new_user_bounce": new_user_bounce,
    "bounce_rate": bounce_rate,
    "general_progress_time": general_progress_time,
    "email_activation": email_activation,
    "data_quality": data_quality,
}


def build_reports(aggregates: Aggregates, config: Config) -> dict[str, pd.DataFrame]:
    """Every report, by id."""
    return {name: build(aggregates, config) for name, build in REPORTS.items()}


def _columns(report: pd.DataFrame) -> list[list]:
    """The report's columns as plain Python lists, in `REPORT_COLUMNS` order."""
    return [report[column].astype(object).tolist() for column in REPORT_COLUMNS]


def csv_blocks(report: pd.DataFrame) -> dict[str, str]:
    """The report's CSV rows (no header) per day: the file is the header and the days' blocks
    in date order (report rows are sorted by date first), so a build can reuse the blocks of
    days that did not change."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    columns = _columns(report)
    keys, numbers = columns[:4], columns[4:]
    formatted = [[format_number(v) for v in column] for column in numbers]
    blocks = {}
    for day, rows in itertools.groupby(zip(*keys, *formatted, strict=True), key=itemgetter(0)):
        writer.writerows(rows)
        blocks[day] = out.getvalue()
        out.seek(0)
        out.truncate()
    return blocks


def join_csv(blocks: dict[str, str]) -> str:
    """The CSV file of a report from its days' blocks (`csv_blocks`)."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_MINIMAL).writerow(REPORT_COLUMNS)
    return out.getvalue() + "".join(blocks[day] for day in sorted(blocks))


def json_blocks(report: pd.DataFrame) -> dict[str, bytes]:
    """The report's JSON records per day, each day's as `{...},{...}` (see `csv_blocks`)."""
    names = REPORT_COLUMNS
    blocks = {}
    for day, rows in itertools.groupby(zip(*_columns(report), strict=True), key=itemgetter(0)):
        blocks[day] = orjson.dumps([dict(zip(names, row, strict=True)) for row in rows])[1:-1]
    return blocks


def join_json(blocks: dict[str, bytes]) -> bytes:
    """The JSON file of a report from its days' blocks (`json_blocks`)."""
    return b"[" + b",".join(blocks[day] for day in sorted(blocks)) + b"]"


def to_csv(report: pd.DataFrame) -> str:
    """The report as UTF-8 CSV text: header, `\n` line ends, minimal quoting."""
    return join_csv(csv_blocks(report))


def to_json(report: pd.DataFrame) -> bytes:
    """The report as a JSON array of objects with the CSV's keys (nulls as null)."""
    return join_json(json_blocks(report))
