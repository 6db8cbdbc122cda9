"""Build reports from hand-written blobs, and read single values back."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd

from kpi.aggregate import daily_aggregates, sites_histogram
from kpi.config import production_config
from kpi.reports import QUALITY_MEASURES, Aggregates, build_reports
from kpi.stage import stage

CONFIG = production_config()


def ms(text: str) -> int:
    """Milliseconds since the epoch of a UTC ISO time."""
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def blob(events: list[str], when: str = "2026-10-01T12:00:00", **fields) -> dict:
    """A blob with these event names (offsets 0, 10, 20, ...) and extra fields."""
    value = {"timestamp": ms(when), "event_stream": [[e, 10 * i] for i, e in enumerate(events)]}
    value.update(fields)
    return value


def aggregates_of(blobs: list[dict]) -> Aggregates:
    staged, counts = stage(blobs, CONFIG)
    quality = staged.groupby("date", observed=True).size().rename("aggregated").reset_index()
    quality["date"] = quality["date"].astype(str)
    for column in QUALITY_MEASURES[:-1]:
        quality[column] = 0
    return Aggregates(daily_aggregates(staged, CONFIG), sites_histogram(staged), quality)


def reports_of(blobs: list[dict]) -> dict[str, pd.DataFrame]:
    return build_reports(aggregates_of(blobs), CONFIG)


def row(report: pd.DataFrame, measure: str = "value", day: str = "2026-10-01",
        segmentation: str = "Total", segment: str = "Total") -> tuple:
    """(value, numerator, denominator) of one report row; AssertionError if absent."""
    found = report[(report.date == day) & (report.segmentation == segmentation)
                   & (report.segment == segment) & (report.measure == measure)]
    assert len(found) == 1, f"{len(found)} rows for {day} {segmentation} {segment} {measure}"
    first = found.iloc[0]
    return first.value, first.numerator, first.denominator


def staged_column(blobs: list[dict], column: str) -> list:
    staged, _ = stage(blobs, CONFIG)
    return [str(v) for v in staged[column]]


def fetch_day(settings, day, client=None) -> list:
    """Every row KPIggybank holds for UTC `day`, window by window (`kpi.source.fetch_rows`),
    ascending."""
    from contextlib import nullcontext

    from kpi.source import KpiggybankClient, day_windows, fetch_rows

    with KpiggybankClient(settings) if client is None else nullcontext(client) as source:
        return [row for window in day_windows(settings, day)
                for row in fetch_rows(source, day, window)]
