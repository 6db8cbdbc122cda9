"""Incremental publishing: a site build reuses what the previous build computed for every day
whose aggregates did not change.

Every report row depends on its own day's aggregates only, and the report files list days in
date order, so a build fetches, reports and formats only the days whose aggregates document has
another CouchDB revision than the one the previous build used (a nightly run restates a few
days), and splices them into the previous build's frames and file blocks. The result is the
same, byte for byte, as a build from scratch (tested); the cost of a night no longer grows with
the length of the history, except for the view files: every year's is rewritten on each
publish.

The cache is one file beside the published site (`.<site folder>.cache`), written atomically
after a successful publish. It is keyed by the pipeline's code, the report configuration, the
small-segment threshold (`KPI_MIN_SEGMENT_COUNT`) and the aggregates database it was built
from: after an upgrade, a configuration or threshold change or a switch to other databases, or
when it is missing or unreadable, the next build starts from scratch. It is a pickle: keep it
where only the pipeline writes.

Every build folds small segments into `Other` here, once, as it decodes the changed days
(`kpi.reports.fold_small_segments`): the cached frames, reports and file blocks are folded,
and since folding is per day, splicing folded days equals folding every day at once.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from kpi import __version__
from kpi.config import Config
from kpi.reports import (
    Aggregates,
    build_reports,
    csv_blocks,
    fold_small_segments,
    join_csv,
    join_json,
    json_blocks,
)
from kpi.sitedir import site_path
from kpi.views import WINDOW_DAYS

log = logging.getLogger(__name__)
FORMAT = 1


DETAIL_DAYS = 2 * WINDOW_DAYS  # the overview compares the last two weeks' sites medians


@dataclass
class Built:
    """What a build computed: the revision of each day's aggregates it used, the frames, and
    the report files' per-day blocks.

    `aggregates` holds every day's quality counts and folded segments but the groups and sites
    histogram of the last `DETAIL_DAYS` only (from `detail_from`): all the site needs besides
    the reports (the overview's medians, the folded days of the view files), and the cache
    stays small.
    """

    revs: dict[str, str]
    aggregates: Aggregates
    detail_from: str
    reports: dict[str, pd.DataFrame]
    csv: dict[str, dict[str, str]]  # report → day → CSV rows
    json: dict[str, dict[str, bytes]]  # report → day → JSON records

    def files(self) -> dict[str, tuple[str, bytes]]:
        """Each report's CSV and JSON file contents."""
        return {name: (join_csv(self.csv[name]), join_json(self.json[name]))
                for name in self.reports}


def cache_path(site_dir: Path) -> Path:
    """Where the build cache of the site published at `site_dir` lives."""
    site_dir = site_path(site_dir)
    return site_dir.parent / f".{site_dir.name}.cache"


@functools.cache
def code_digest() -> str:
    """A digest of this package's code (every module of `kpi/`) and version: what the caches
    of a site (this one, `kpi.chartcache`) are stamped with."""
    digest = hashlib.sha256(f"{FORMAT}:{__version__}".encode())
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def cache_key(config: Config, source: str, min_segment_count: int) -> str:
    """What a cache must have been made with to be reused: this code, this configuration, the
    same aggregates (`source`: e.g. the CouchDB server and database prefix) and the same
    small-segment threshold (`KPI_MIN_SEGMENT_COUNT`)."""
    where = hashlib.sha256(source.encode()).hexdigest()[:16]
    return f"{code_digest()}:{config.fingerprint}:{where}:min{min_segment_count}"


def read(path: Path, key: str) -> Built | None:
    """The previous build, or None (missing, unreadable, or made by other code/configuration)."""
    try:
        with open(path, "rb") as handle:
            stored_key, built = pickle.load(handle)
    except FileNotFoundError:
        return None
    except Exception as exc:  # a damaged cache only costs a build from scratch
        log.warning("ignoring the unreadable build cache %s: %s", path, exc)
        return None
    return built if stored_key == key and isinstance(built, Built) else None


def write(path: Path, key: str, built: Built) -> None:
    """Replace the cache atomically (a reader sees the old or the new one, never a part)."""
    partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(partial, "wb") as handle:
            pickle.dump((key, built), handle, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def update(previous: Built | None, revs: dict[str, str],
           fetch: Callable[[list[str]], list[dict]],
           decode: Callable[[list[dict]], Aggregates], config: Config, *,
           min_segment_count: int) -> tuple[Built, list[str]]:
    """This build: the previous one with the days whose revision changed recomputed.

    Args:
        previous: the previous build (None: compute every day).
        revs: the current revision of every day's aggregates document, by day.
        fetch: reads the aggregates documents of some days (with their `_rev`).
        decode: turns documents into frames (`kpi.publish.aggregates_of_docs`).
        config: the report configuration.
        min_segment_count: `KPI_MIN_SEGMENT_COUNT`: the decoded days' segments with fewer
            blobs on a day are folded into `Other` (0: none is).

    Returns:
        The build and the days recomputed.
    """
    if previous is not None and previous.aggregates.min_segment_count != min_segment_count:
        previous = None  # folded with another threshold (the cache key tells it too)
    known = previous.revs if previous is not None else {}
    changed = [day for day, rev in sorted(revs.items()) if known.get(day) != rev]
    dropped = set(changed) | (set(known) - set(revs))
    kept = {day: rev for day, rev in known.items() if day not in dropped}
    if previous is not None and revs:
        since = _detail_from(max(revs))
        if any(since <= day < previous.detail_from for day in kept):  # the last days went
            return update(None, revs, fetch, decode, config,  # back: details are missing
                          min_segment_count=min_segment_count)
    docs = sorted(fetch(changed), key=lambda doc: doc["day"]) if changed else []
    fresh = fold_small_segments(decode(docs), min_segment_count)
    fresh_reports = build_reports(fresh, config)
    fresh_revs = {doc["day"]: doc["_rev"] for doc in docs}
    if previous is None:
        return Built(fresh_revs, *_recent(fresh), fresh_reports,
                     {name: csv_blocks(r) for name, r in fresh_reports.items()},
                     {name: json_blocks(r) for name, r in fresh_reports.items()}), changed
    aggregates = Aggregates(
        *(_splice(getattr(previous.aggregates, part), getattr(fresh, part), dropped)
          for part in ("groups", "sites_histogram", "quality")),
        min_segment_count=fresh.min_segment_count,
        folded=_splice(previous.aggregates.folded, fresh.folded, dropped),
    )
    reports = {name: _splice(previous.reports[name], fresh_reports[name], dropped)
               for name in fresh_reports}
    csv = {name: _merge(previous.csv[name], csv_blocks(r), dropped)
           for name, r in fresh_reports.items()}
    json = {name: _merge(previous.json[name], json_blocks(r), dropped)
            for name, r in fresh_reports.items()}
    return Built(kept | fresh_revs, *_recent(aggregates), reports, csv, json), changed


def _detail_from(last_day: str) -> str:
    return (date.fromisoformat(last_day) - timedelta(days=DETAIL_DAYS - 1)).isoformat()


def _recent(aggregates: Aggregates) -> tuple[Aggregates, str]:
    """The aggregates with groups and histogram of the last `DETAIL_DAYS` only, and that
    first day ('' when there are no days)."""
    days = aggregates.days
    if not days:
        return aggregates, ""
    since = _detail_from(days[-1])
    groups, histogram = aggregates.groups, aggregates.sites_histogram
    return dataclasses.replace(
        aggregates,
        groups=groups[groups["date"] >= since].reset_index(drop=True),
        sites_histogram=histogram[histogram["date"] >= since].reset_index(drop=True),
    ), since


def _splice(old: pd.DataFrame, new: pd.DataFrame, dropped: set[str]) -> pd.DataFrame:
    """`old` without the `dropped` days plus `new`, in date order (each day's rows keep their
    order, as a build from scratch has them)."""
    kept = old[~old["date"].isin(dropped)]
    if not len(new):
        return kept.reset_index(drop=True)
    frame = pd.concat([kept, new], ignore_index=True)
    if not len(kept) or kept["date"].iloc[-1] < new["date"].iloc[0]:
        return frame  # the usual night: the new days come after every kept one
    order = np.argsort(frame["date"].to_numpy(dtype=str), kind="stable")
    return frame.iloc[order].reset_index(drop=True)


def _merge(old: dict, new: dict, dropped: set[str]) -> dict:
    return {day: block for day, block in old.items() if day not in dropped} | new
