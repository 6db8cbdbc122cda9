"""Aggregate: staged blobs → additive daily counts per (day, segmentation, segment) (SPEC D7).

Counts only, never ratios, so any date range or segment roll-up is exact: blobs, every flow
step, the five outcomes, the sites sum and count, and a sites histogram for exact medians.

Blobs with identical step flags and outcome form one "profile"; per segmentation we count blobs
per (day, segment, profile) with one `np.bincount` and multiply by the profile's flags, instead
of summing two dozen columns over every blob.

The one float that is a sum, `sites_sum`, is the correctly rounded *exact* sum (`exact_sums`),
not a float sum whose last bit depends on the order of the blobs. So a day aggregated in one
pass, in window parts combined (`combine`), or batch by batch (`DayAggregator`) gives the same
frames (`canonical`) and byte-identical aggregates documents.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from kpi.config import SEGMENTATIONS, Config
from kpi.stage import OUTCOMES, stage, step_columns
from kpi.words import plural

KEYS = ["date", "segmentation", "segment"]
HISTOGRAM_KEYS = [*KEYS, "sites"]
DENSE_LIMIT = 20_000_000  # cells of the (group × profile) table before switching to np.unique
# a float64 significand as two int64 halves, so each half × a count stays within int64
HALF_BITS = 26
MAX_TOTAL_COUNT = 2**36  # 2**27 (a half, at most) × this total of counts < 2**63


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


def exact_sums(codes: np.ndarray, values: np.ndarray, counts: np.ndarray,
               size: int) -> np.ndarray:
    """Per group code in range(`size`), the correctly rounded exact sum of values × counts.

    Equal (code, value, count) rows give equal sums in any order and any split into
    partial rows, unlike a float sum, whose last bit depends on the order of the additions.

    Args:
        codes: the group code of each row.
        values: finite floats.
        counts: non-negative integers, in total below 2**36.

    Returns:
        float64 sums, 0.0 for a group without rows.

    Raises:
        ValueError: a value is not finite, or a count is negative or the counts too many.
    """
    codes = np.asarray(codes, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.int64)
    if not np.isfinite(values).all():
        msg = "cannot sum non-finite values exactly"
        raise ValueError(msg)
    if len(counts) and (counts.min() < 0 or counts.max() >= MAX_TOTAL_COUNT
                        or int(counts.sum()) >= MAX_TOTAL_COUNT):
        msg = f"counts must be non-negative and below {MAX_TOTAL_COUNT} in total"
        raise ValueError(msg)
    integral = values == np.floor(values)
    # Integral values, the usual case, sum exactly in float64 while every partial sum is an
    # integer below 2**53: below max |value| × total count (2**52 leaves a margin for rounding)
    if float(np.abs(values).max(initial=0.0)) * float(counts.sum()) >= 2.0**52:
        integral[:] = False
    if integral.all():
        return np.bincount(codes, weights=values * counts, minlength=size).astype(np.float64)
    sums = np.bincount(codes[integral], weights=values[integral] * counts[integral],
                       minlength=size).astype(np.float64)  # int64 when given no rows
    rest = ~integral
    # Every other value is significand × 2**exponent exactly, the significand an integer below
    # 2**53 split in halves; per (group, exponent) the halves × counts sum exactly in int64.
    fraction, exponent = np.frexp(values[rest])
    significand = (fraction * 2.0**53).astype(np.int64)
    exponent = exponent.astype(np.int64) - 53
    group, count = codes[rest], counts[rest]
    lowest = int(exponent.min())
    run_key = group * (int(exponent.max()) - lowest + 1) + (exponent - lowest)
    if (np.diff(run_key) < 0).any():  # a histogram's rows, by group and value, come in order
        order = np.argsort(run_key, kind="stable")
        run_key, group, exponent = run_key[order], group[order], exponent[order]
        significand, count = significand[order], count[order]
    high = (significand >> HALF_BITS) * count
    low = (significand & ((1 << HALF_BITS) - 1)) * count
    starts = np.flatnonzero(np.r_[True, np.diff(run_key) != 0])  # one run per (group, exponent)
    runs = zip(group[starts].tolist(), exponent[starts].tolist(),
               np.add.reduceat(high, starts).tolist(), np.add.reduceat(low, starts).tolist(),
               strict=True)
    for code, terms in itertools.groupby(runs, key=lambda run: run[0]):
        terms = [(power, (h << HALF_BITS) + lo) for _, power, h, lo in terms]
        terms.append((0, int(sums[code])))  # the group's integral values, summed exactly above
        lowest = min(power for power, _ in terms)
        numerator = sum(n << (power - lowest) for power, n in terms)
        # int / int is correctly rounded in Python, whatever the sizes
        sums[code] = (numerator / (1 << -lowest) if lowest < 0
                      else float(numerator << lowest))
    return sums


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
    `sites_sum` is the exact sum (`exact_sums`): with `sites_histogram`, already `canonical`.
    """
    columns = count_columns(config)
    if staged.empty:
        return _typed_groups(pd.DataFrame(columns=KEYS + columns))
    profile, table = _profiles(staged, config)
    sites = staged["sites"].to_numpy(dtype=float)
    has_sites = ~np.isnan(sites)
    sites_filled = np.where(has_sites, sites, 0.0)  # a blob without a value counts 0 (SPEC)
    once = np.ones(len(staged), dtype=np.int64)
    parts = []
    for grouping in groupings(staged):
        group, n_groups = grouping.codes, grouping.size
        counts = _count_by_group(group, n_groups, profile, table)
        sites_sum = exact_sums(group, sites_filled, once, n_groups)
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
    keys = HISTOGRAM_KEYS
    with_value = staged[staged["sites"].notna()]
    if with_value.empty:
        return _typed_histogram(pd.DataFrame(columns=[*keys, "blobs"]))
    # + 0.0 turns -0.0 into 0.0: np.unique would keep whichever zero came first
    values, value = np.unique(with_value["sites"].to_numpy(dtype=float) + 0.0,
                              return_inverse=True)
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


def _typed(frame: pd.DataFrame, types: dict) -> pd.DataFrame:
    """`frame` with these column types, casting only the columns of another type."""
    text = pd.Series([""], dtype=str).dtype  # object, or pandas 3's `str`
    wanted = {column: text if kind is str else np.dtype(kind) for column, kind in types.items()}
    cast = {column: kind for column, kind in wanted.items() if frame[column].dtype != kind}
    return frame.astype(cast) if cast else frame


def _typed_groups(groups: pd.DataFrame) -> pd.DataFrame:
    """Keys as text, `sites_sum` float, every other column an integer count."""
    counts = {column: np.int64 for column in groups.columns if column not in KEYS}
    return _typed(groups, {**dict.fromkeys(KEYS, str), **counts, "sites_sum": np.float64})


def _typed_histogram(histogram: pd.DataFrame) -> pd.DataFrame:
    """Keys as text, `sites` float, `blobs` an integer count."""
    return _typed(histogram, {**dict.fromkeys(KEYS, str), "sites": np.float64,
                              "blobs": np.int64})


def _key_codes(*frames: pd.DataFrame) -> list[np.ndarray]:
    """Per frame, one int64 per row that sorts as its (date, segmentation, segment) do and is
    equal exactly where they are, across the frames: each key column is factorized once."""
    sizes = [len(frame) for frame in frames]
    combined = np.zeros(sum(sizes), dtype=np.int64)
    for column in KEYS:
        codes, labels = pd.factorize(pd.concat([frame[column] for frame in frames],
                                               ignore_index=True), sort=True)
        combined = combined * max(len(labels), 1) + codes
    return np.split(combined, np.cumsum(sizes)[:-1])


def _repeated(frame: pd.DataFrame, keys: list[str], order: np.ndarray,
              same_as_previous: np.ndarray) -> None:
    """Raise when a sorted row repeats the keys of the one before it."""
    if same_as_previous.any():
        first = frame.iloc[int(order[1:][same_as_previous][0])][keys].tolist()
        msg = f"rows repeat the keys {first}: combine them before making them canonical"
        raise ValueError(msg)


def canonical(groups: pd.DataFrame,
              histogram: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(daily_aggregates, sites_histogram) frames in the one form equal blobs always give.

    One row per day per segmentation per segment (per sites value in the histogram), sorted
    by those keys, with fixed column types; histogram `sites` 0.0 rather than -0.0; and each
    group's `sites_sum` the correctly rounded exact sum of sites × blobs over its histogram
    rows (`exact_sums`), so no longer dependent on the order in which its blobs were summed.

    The histogram holds every blob with a sites value and only those, and a blob without one
    counts 0 in the sum, so the histogram's exact sum is the group's true sum. This is
    checked: each group's `sites_count` must equal its histogram blobs.

    Returns:
        New (groups, histogram) frames; the inputs are not changed.

    Raises:
        ValueError: a key repeats, a histogram row has no group, a group's histogram does not
            hold its `sites_count` blobs, or its `sites_sum` is not that histogram's sum.
    """
    groups, histogram = _typed_groups(groups), _typed_histogram(histogram)
    group_key, histogram_key = _key_codes(groups, histogram)
    group_order = np.argsort(group_key, kind="stable")
    group_key = group_key[group_order]
    _repeated(groups, KEYS, group_order, np.diff(group_key) == 0)
    sites = histogram["sites"].to_numpy() + 0.0  # -0.0 → 0.0
    histogram_order = np.lexsort((sites, histogram_key))
    histogram_key, sites = histogram_key[histogram_order], sites[histogram_order]
    _repeated(histogram, HISTOGRAM_KEYS, histogram_order,
              (np.diff(histogram_key) == 0) & (np.diff(sites) == 0))
    groups = groups.take(group_order).reset_index(drop=True)
    histogram = histogram.take(histogram_order).reset_index(drop=True).assign(sites=sites)

    code = np.searchsorted(group_key, histogram_key)
    orphan = code >= len(group_key)
    orphan[~orphan] = group_key[code[~orphan]] != histogram_key[~orphan]
    if orphan.any():
        keys = histogram[KEYS].iloc[int(np.argmax(orphan))].tolist()
        msg = f"sites histogram rows for {keys}, which has no group row"
        raise ValueError(msg)
    blobs = histogram["blobs"].to_numpy()
    in_histogram = np.bincount(code, weights=blobs, minlength=len(groups))
    wrong = in_histogram != groups["sites_count"].to_numpy()
    if wrong.any():
        first = int(np.argmax(wrong))
        msg = (
            f"the sites histogram of {groups[KEYS].iloc[first].tolist()} holds "
            f"{plural(int(in_histogram[first]), 'blob')}, its sites_count "
            f"{groups['sites_count'].iloc[first]}: the histogram must hold exactly the blobs "
            "with a sites value"
        )
        raise ValueError(msg)
    sites_sum = exact_sums(code, sites, blobs, len(groups))
    # float sums of the same values differ from the exact one by rounding only: a larger
    # difference means a histogram of other values than the ones summed
    off = ~np.isclose(groups["sites_sum"].to_numpy(), sites_sum, rtol=1e-6, atol=1e-9)
    if off.any():
        first = int(np.argmax(off))
        msg = (
            f"sites_sum {groups['sites_sum'].iloc[first]!r} of "
            f"{groups[KEYS].iloc[first].tolist()} is not the sum of its sites histogram, "
            f"{sites_sum[first]!r}"
        )
        raise ValueError(msg)
    return groups.assign(sites_sum=sites_sum), histogram


def combine(parts: list[tuple[pd.DataFrame, pd.DataFrame]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Sum (daily_aggregates, sites_histogram) pairs computed over disjoint sets of blobs.

    Counts are additive (D7), so staging a day in pieces (in parallel, say) and combining equals
    staging it at once: the result is `canonical`, the frames `daily_aggregates` and
    `sites_histogram` give for all the blobs at once, float sums included.
    """
    groups = [g for g, _ in parts if not g.empty]
    histograms = [h for _, h in parts if not h.empty]
    if not groups:
        return canonical(parts[0][0].head(0), parts[0][1].head(0))
    summed = pd.concat(groups, ignore_index=True).groupby(KEYS, sort=True).sum().reset_index()
    if not histograms:
        return canonical(summed, parts[0][1].head(0))
    histogram = pd.concat(histograms, ignore_index=True)
    histogram = (
        histogram.assign(sites=histogram["sites"].astype("float64") + 0.0)  # one zero, not two
        .groupby(HISTOGRAM_KEYS, sort=True)["blobs"].sum().reset_index()
    )
    return canonical(summed, histogram)


class DayAggregator:
    """Aggregates a day batch by batch, as its blobs are stored (no second read of the day).

    `add` each batch of stored blobs; `result` combines the batches' additive counts, which
    equals aggregating the whole day at once. Small batches (a quiet hour's window) are pooled
    up to `STAGE_BLOBS` blobs before staging: a frame's fixed cost is paid per pool, not per
    batch.
    """

    STAGE_BLOBS = 5_000

    def __init__(self, config: Config) -> None:
        self.config = config
        self.parts: list[tuple[pd.DataFrame, pd.DataFrame]] = []
        self.skipped_empty_stream = 0
        self.aggregated = 0
        self._pool: list[dict] = []

    def add(self, blobs: list[dict]) -> None:
        """Stage and aggregate one batch of stored blobs (pooled while they are few, and
        staged `STAGE_BLOBS` at a time when they are many)."""
        for first in range(0, len(blobs), self.STAGE_BLOBS):
            self._pool.extend(blobs[first:first + self.STAGE_BLOBS])
            if len(self._pool) >= self.STAGE_BLOBS:
                self._stage()

    def _stage(self) -> None:
        staged, counts = stage(self._pool, self.config)
        self._pool = []
        self.skipped_empty_stream += counts.skipped_empty_stream
        self.aggregated += len(staged)
        self.parts.append((daily_aggregates(staged, self.config), sites_histogram(staged)))

    def result(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The day's (daily_aggregates, sites_histogram), `canonical`."""
        if self._pool or not self.parts:
            self._stage()
        return combine(self.parts)
