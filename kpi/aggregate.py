"""Aggregate: staged blobs → additive daily counts per (day, segmentation, segment) (SPEC D7).

Counts only, never ratios, so any date range or segment roll-up is exact: blobs, every flow
step, the five outcomes, the sites sum and count, and a sites histogram for exact medians.

Blobs with identical step flags and outcome form one "profile"; per segmentation we count blobs
per (day, segment, profile) with one `np.bincount` and multiply by the profile's flags, instead
of summing two dozen columns over every blob.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from kpi.config import SEGMENTATIONS, Config
from kpi.stage import OUTCOMES, step_columns

KEYS = ["date", "segmentation", "segment"]
DENSE_LIMIT = 20_000_000  # cells of the (group × profile) table before switching to np.unique


def count_columns(config: Config) -> list[str]:
    """The additive count columns of the aggregates frame, in order."""
    outcomes = [f"outcome:{name}" for name in OUTCOMES]
    return ["blobs", *step_columns(config), *outcomes, "sites_sum", "sites_count"]


def _codes(column: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Integer codes and their labels."""
    if not isinstance(column.dtype, pd.CategoricalDtype):
        column = column.astype(str).astype("category")
    return column.cat.codes.to_numpy(dtype=np.int64), [str(c) for c in column.cat.categories]


def _profiles(staged: pd.DataFrame, config: Config) -> tuple[np.ndarray, np.ndarray]:
    """Profile code per blob, and per profile its count-column values (blobs, flags, outcomes)."""
    flags = staged[step_columns(config)].to_numpy(dtype=bool)
    outcome = np.asarray(staged["outcome"], dtype=object)
    outcomes = np.stack([outcome == name for name in OUTCOMES], axis=1)
    matrix = np.concatenate([flags, outcomes], axis=1)
    if matrix.shape[1] > 62:
        msg = f"{matrix.shape[1]} step and outcome columns do not fit one 64-bit profile code"
        raise ValueError(msg)
    packed = matrix.astype(np.int64) @ (np.int64(1) << np.arange(matrix.shape[1], dtype=np.int64))
    unique, codes = np.unique(packed, return_inverse=True)
    bits = (unique[:, None] >> np.arange(matrix.shape[1], dtype=np.int64)) & 1
    table = np.concatenate([np.ones((len(unique), 1), dtype=np.int64), bits], axis=1)
    return codes.reshape(-1).astype(np.int64), table


def _count_by_group(group: np.ndarray, n_groups: int, profile: np.ndarray,
                    table: np.ndarray) -> np.ndarray:
    """Sum of profile rows per group: (n_groups × columns)."""
    n_profiles = len(table)
    pairs = group * n_profiles + profile
    if n_groups * n_profiles <= DENSE_LIMIT:
        per_pair = np.bincount(pairs, minlength=n_groups * n_profiles)
        return per_pair.reshape(n_groups, n_profiles) @ table
    unique, counts = np.unique(pairs, return_counts=True)
    result = np.zeros((n_groups, table.shape[1]), dtype=np.int64)
    np.add.at(result, unique // n_profiles, table[unique % n_profiles] * counts[:, None])
    return result


@dataclass(frozen=True)
class Grouping:
    """One segmentation's groups: a group code per row, numbered day-major."""

    segmentation: str
    codes: np.ndarray  # per row: day * len(segments) + segment
    days: list[str]
    segments: list[str]

    @property
    def size(self) -> int:
        return len(self.days) * len(self.segments)

    def labels(self, groups: np.ndarray) -> tuple[list[str], list[str]]:
        """The (dates, segments) of these group codes."""
        width = len(self.segments)
        return [self.days[g // width] for g in groups], [self.segments[g % width] for g in groups]


def groupings(frame: pd.DataFrame) -> Iterator[Grouping]:
    """Total, then each segmentation, as group codes over the rows of a staged frame."""
    day, days = _codes(frame["date"])
    for segmentation in ["Total", *SEGMENTATIONS]:
        if segmentation == "Total":
            segment, segments = np.zeros(len(frame), dtype=np.int64), ["Total"]
        else:
            segment, segments = _codes(frame[segmentation])
        yield Grouping(segmentation, day * len(segments) + segment, days, segments)


def daily_aggregates(staged: pd.DataFrame, config: Config) -> pd.DataFrame:
    """One row per day per segmentation per segment (Total included), additive counts.

    Only groups with at least one blob appear. Sorted by date, segmentation, segment.
    """
    columns = count_columns(config)
    if staged.empty:
        return pd.DataFrame(columns=KEYS + columns)
    profile, table = _profiles(staged, config)
    sites = staged["sites"].to_numpy(dtype=float)
    has_sites = ~np.isnan(sites)
    sites_filled = np.where(has_sites, sites, 0.0)
    parts = []
    for grouping in groupings(staged):
        group, n_groups = grouping.codes, grouping.size
        counts = _count_by_group(group, n_groups, profile, table)
        sites_sum = np.bincount(group, weights=sites_filled, minlength=n_groups)
        sites_count = np.bincount(group, weights=has_sites, minlength=n_groups)
        present = np.flatnonzero(counts[:, 0])
        dates, segments = grouping.labels(present)
        part = pd.DataFrame(counts[present], columns=columns[:-2])
        part.insert(0, "segment", segments)
        part.insert(0, "segmentation", grouping.segmentation)
        part.insert(0, "date", dates)
        part["sites_sum"] = sites_sum[present]
        part["sites_count"] = sites_count[present].astype(np.int64)
        parts.append(part)
    frame = pd.concat(parts, ignore_index=True)
    return frame.sort_values(KEYS, kind="stable", ignore_index=True)


def sites_histogram(staged: pd.DataFrame) -> pd.DataFrame:
    """One row per day per segmentation per segment per sites value: how many blobs had it."""
    keys = [*KEYS, "sites"]
    with_value = staged[staged["sites"].notna()]
    if with_value.empty:
        return pd.DataFrame(columns=[*keys, "blobs"])
    values, value = np.unique(with_value["sites"].to_numpy(dtype=float), return_inverse=True)
    value = value.reshape(-1)
    parts = []
    for grouping in groupings(with_value):
        cells = grouping.codes * len(values) + value
        unique, counts = np.unique(cells, return_counts=True)
        dates, segments = grouping.labels(unique // len(values))
        parts.append(pd.DataFrame({
            "date": dates,
            "segmentation": grouping.segmentation,
            "segment": segments,
            "sites": values[unique % len(values)],
            "blobs": counts.astype(np.int64),
        }))
    frame = pd.concat(parts, ignore_index=True)
    return frame.sort_values(keys, kind="stable", ignore_index=True)


def combine(parts: list[tuple[pd.DataFrame, pd.DataFrame]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Sum (daily_aggregates, sites_histogram) pairs computed over disjoint sets of blobs.

    Counts are additive (D7), so staging a day in pieces (in parallel, say) and combining equals
    staging it at once.
    """
    groups = [g for g, _ in parts if not g.empty]
    histograms = [h for _, h in parts if not h.empty]
    if not groups:
        return parts[0][0].head(0), parts[0][1].head(0)
    summed = pd.concat(groups, ignore_index=True).groupby(KEYS, sort=True).sum().reset_index()
    if not histograms:
        return summed, parts[0][1].head(0)
    histogram = (
        pd.concat(histograms, ignore_index=True)
        .groupby([*KEYS, "sites"], sort=True)["blobs"].sum().reset_index()
    )
    return summed, histogram


class DayAggregator:
    """Aggregates a day batch by batch, as its blobs are stored (no second read of the day).

    `add` each batch of stored blobs; `result` combines the batches' additive counts, which
    equals aggregating the whole day at once.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.parts: list[tuple[pd.DataFrame, pd.DataFrame]] = []
        self.skipped_empty_stream = 0
        self.aggregated = 0

    def add(self, blobs: list[dict]) -> None:
        """Stage and aggregate one batch of stored blobs."""
        from kpi.stage import stage

        staged, counts = stage(blobs, self.config)
        self.skipped_empty_stream += counts.skipped_empty_stream
        self.aggregated += len(staged)
        self.parts.append((daily_aggregates(staged, self.config), sites_histogram(staged)))

    def result(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The day's (daily_aggregates, sites_histogram)."""
        if not self.parts:
            self.add([])
        return combine(self.parts)
