"""Reports: daily aggregates over any date range → the published data files (SPEC §9).

Every report is a long frame with the columns of `REPORT_COLUMNS`, one row per
(date, segmentation, segment, measure), sorted by those four in code-point order. Values are
Python ints for counts and floats for means and ratios; None is a null (empty in CSV).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from dataclasses import dataclass

import orjson
import pandas as pd

from kpi.aggregate import KEYS
from kpi.config import Config

REPORT_COLUMNS = ["date", "segmentation", "segment", "measure", "value", "numerator", "denominator"]
QUALITY_MEASURES = (
    "fetched", "stored", "duplicate", "skipped_empty_stream", "rejected_invalid", "aggregated",
)


@dataclass(frozen=True)
class Aggregates:
    """Daily aggregates of a date range: groups (counts), sites histogram, data quality."""

    groups: pd.DataFrame  # one row per day per segmentation per segment
    sites_histogram: pd.DataFrame  # one row per day per segmentation per segment per value
    quality: pd.DataFrame  # one row per day: the D12 counts

    @property
    def days(self) -> list[str]:
        """The days covered, ascending."""
        return sorted(self.quality["date"].unique()) if not self.quality.empty else []


def _rows_frame(rows: list[list]) -> pd.DataFrame:
    rows.sort(key=lambda row: (row[0], row[1], row[2], row[3]))
    return pd.DataFrame(rows, columns=REPORT_COLUMNS, dtype=object)


def _groups(aggregates: Aggregates, segmented: bool) -> pd.DataFrame:
    groups = aggregates.groups
    groups = groups[groups["blobs"] > 0]
    if not segmented:
        groups = groups[groups["segmentation"] == "Total"]
    return groups


def assertions(aggregates: Aggregates, config: Config) -> pd.DataFrame:
    """Sign-in attempts: one row per group, value = aggregated blobs (SPEC §4.3, §9)."""
    rows = [
        [g.date, g.segmentation, g.segment, "value", int(g.blobs), None, None]
        for g in _groups(aggregates, segmented=True).itertuples(index=False)
    ]
    return _rows_frame(rows)


def new_user(aggregates: Aggregates, config: Config) -> pd.DataFrame:
    """New user flow: one row per group per step, value = blobs reaching the step."""
    groups = _groups(aggregates, segmented=True)
    rows = []
    for step in config.steps("new_user"):
        counts = groups[f"new_user:{step}"].tolist()
        for key, count in zip(groups[KEYS].itertuples(index=False), counts, strict=True):
            rows.append([key.date, key.segmentation, key.segment, step, int(count), None, None])
    return _rows_frame(rows)


def data_quality(aggregates: Aggregates, config: Config) -> pd.DataFrame:
    """Per-day reconciliation (SPEC D12): one row per day per measure, Total only."""
    rows = [
        [day.date, "Total", "Total", measure, int(getattr(day, measure)), None, None]
        for day in aggregates.quality.itertuples(index=False)
        for measure in QUALITY_MEASURES
    ]
    return _rows_frame(rows)


REPORTS: dict[str, Callable[[Aggregates, Config], pd.DataFrame]] = {
    "new_user": new_user,
    "assertions": assertions,
    "data_quality": data_quality,
}


def build_reports(aggregates: Aggregates, config: Config) -> dict[str, pd.DataFrame]:
    """Every report, by id."""
    return {name: build(aggregates, config) for name, build in REPORTS.items()}


def format_number(value: object) -> str:
    """Counts as integers, other numbers as the shortest round-tripping decimal, null as ''."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        msg = f"a report value must be a number, not {value!r}"
        raise TypeError(msg)
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


def to_csv(report: pd.DataFrame) -> str:
    """The report as UTF-8 CSV text: header, `\\n` line ends, minimal quoting."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(REPORT_COLUMNS)
    for row in report.itertuples(index=False):
        writer.writerow([*row[:4], *(format_number(v) for v in row[4:])])
    return out.getvalue()


def to_json(report: pd.DataFrame) -> bytes:
    """The report as a JSON array of objects with the CSV's keys (nulls as null)."""
    records = [
        dict(zip(REPORT_COLUMNS, row, strict=True)) for row in report.itertuples(index=False)
    ]
    return orjson.dumps(records)
