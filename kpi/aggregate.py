"""Aggregate: staged blobs → additive daily counts per (day, segmentation, segment) (SPEC D7).

Counts only, never ratios, so any date range or segment roll-up is exact: blobs, every flow
step, the five outcomes, the sites sum and count, and a sites histogram for exact medians.
"""

from __future__ import annotations

import pandas as pd

from kpi.config import SEGMENTATIONS, Config
from kpi.stage import OUTCOMES, step_columns

KEYS = ["date", "segmentation", "segment"]


def count_columns(config: Config) -> list[str]:
    """The additive count columns of the aggregates frame, in order."""
    outcomes = [f"outcome:{name}" for name in OUTCOMES]
    return ["blobs", *step_columns(config), *outcomes, "sites_sum", "sites_count"]


def _with_count_inputs(staged: pd.DataFrame, config: Config) -> pd.DataFrame:
    inputs = {"blobs": 1}
    for name in OUTCOMES:
        inputs[f"outcome:{name}"] = (staged["outcome"] == name).astype("int64")
    inputs["sites_sum"] = staged["sites"].fillna(0.0)
    inputs["sites_count"] = staged["sites"].notna().astype("int64")
    flags = {column: staged[column].astype("int64") for column in step_columns(config)}
    return staged.assign(**flags, **inputs)


def _segmented(staged: pd.DataFrame) -> pd.DataFrame:
    """One row per blob per segmentation (Total included): date, segmentation, segment."""
    parts = [staged.assign(segmentation="Total", segment="Total")]
    for name in SEGMENTATIONS:
        parts.append(staged.assign(segmentation=name, segment=staged[name]))
    return pd.concat(parts, ignore_index=True)


def daily_aggregates(staged: pd.DataFrame, config: Config) -> pd.DataFrame:
    """One row per day per segmentation per segment (Total included), additive counts.

    Only groups with at least one blob appear. Sorted by date, segmentation, segment.
    """
    columns = count_columns(config)
    if staged.empty:
        return pd.DataFrame(columns=KEYS + columns)
    long = _segmented(_with_count_inputs(staged, config))
    grouped = long.groupby(KEYS, sort=True)[columns].sum().reset_index()
    integer = [c for c in columns if c != "sites_sum"]
    grouped[integer] = grouped[integer].astype("int64")
    return grouped


def sites_histogram(staged: pd.DataFrame) -> pd.DataFrame:
    """One row per day per segmentation per segment per sites value: how many blobs had it."""
    keys = [*KEYS, "sites"]
    if staged.empty:
        return pd.DataFrame(columns=[*keys, "blobs"])
    with_value = staged[staged["sites"].notna()]
    long = _segmented(with_value)
    return long.groupby(keys, sort=True).size().rename("blobs").reset_index()
