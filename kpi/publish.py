"""Publish: build the report site from the aggregates CouchDB holds, and swap it in.

`build_site` reads the stored daily aggregates (days aggregated under another configuration
are re-aggregated from their raw documents first, never fetched again), reuses what the last
build computed for every unchanged day (`kpi.buildcache`), renders the pages and data files
(`kpi.site`) into a new build and makes it the live site in one step (`kpi.sitedir`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import orjson
import pandas as pd

from kpi import buildcache, chartcache
from kpi.aggregate import count_columns
from kpi.aggregate_docs import with_histograms
from kpi.anomalies import detect_anomalies, history_days, last_steps
from kpi.config import Config, load_config
from kpi.couch import AGGREGATES, MANIFESTS, CouchStore
from kpi.days import day_keys, day_ranges
from kpi.ingest import PipelineError, made_with, reaggregate_day
from kpi.refusals import load_refusals
from kpi.reports import QUALITY_MEASURES, Aggregates, build_reports, fold_small_segments
from kpi.settings import Settings
from kpi.site import render_site
from kpi.sitedir import publish, publish_lock, published_build

log = logging.getLogger(__name__)


def load_aggregates(settings: Settings, start: date | None = None, end: date | None = None,
                    config: Config | None = None) -> Aggregates:
    """The stored daily aggregates of [start, end] (all days when None) as frames; days
    aggregated under another configuration are re-aggregated from CouchDB first."""
    config = config or load_config(settings.config_path)
    store = CouchStore(settings)
    store.require_databases((AGGREGATES,))
    days = [doc_id for doc_id in store.iter_range(AGGREGATES, *day_keys(start, end),
                                                  include_docs=False)
            if ":" not in doc_id]  # the days' documents, not their histogram chunks
    return aggregates_of_docs(current_aggregates(store, days, settings, config), config)


def current_aggregates(store: CouchStore, days: list[str], settings: Settings,
                       config: Config) -> list[dict]:
    """The aggregates documents of `days` (ascending), with histograms joined; days
    aggregated under another configuration (segments, aliases, flows) are re-aggregated from
    their raw documents in CouchDB first, never fetched again from KPIggybank."""
    def fetch(wanted: list[str]) -> list[dict]:
        size = settings.bulk_size
        return [doc for first in range(0, len(wanted), size)
                for doc in with_histograms(
                    store, store.get_many(AGGREGATES, wanted[first:first + size]).values())]

    docs = fetch(days)
    columns = count_columns(config)
    stale = [doc["day"] for doc in docs if not made_with(doc, config, columns)]
    if stale:
        log.warning("re-aggregating %d days from CouchDB (aggregated under another "
                    "configuration): %s", len(stale), ", ".join(stale))
        with ThreadPoolExecutor(4) as pool:  # each day mostly waits on CouchDB
            list(pool.map(lambda day: reaggregate_day(date.fromisoformat(day), settings, config),
                          stale))
        redone = {doc["day"]: doc for doc in fetch(stale)}
        docs = [redone.get(doc["day"], doc) for doc in docs]
    return docs


def aggregates_of_docs(docs: Iterable[dict], config: Config) -> Aggregates:
    """Aggregates documents (ascending days) as frames, with fixed column types: counts are
    integers, `sites_sum` and `sites` floats, whatever the documents hold.

    Raises:
        PipelineError: some documents were made with another configuration
            (`current_aggregates` re-aggregates them first).
    """
    columns = count_columns(config)
    groups, histogram, quality = [], [], []
    stale = []
    for doc in docs:
        day = doc["day"]
        if not made_with(doc, config, columns):
            stale.append(day)
            continue
        groups.extend([day, *row] for row in doc["groups"])
        histogram.extend([day, *row] for row in doc["sites_histogram"])
        quality.append({"date": day, **doc["quality"]})
    if stale:
        spans = ", ".join(a if a == b else f"{a} to {b}" for a, b in day_ranges(stale))
        msg = (
            f"the aggregates of {len(stale)} days ({spans}) were computed with another "
            "configuration (segments, aliases or flows); rebuild them from CouchDB with "
            f"`kpi reaggregate --start {stale[0]} --end {stale[-1]}`"
        )
        raise PipelineError(msg)
    counts = {column: "int64" for column in columns} | {"sites_sum": "float64"}
    return Aggregates(
        groups=pd.DataFrame(groups, columns=["date", "segmentation", "segment", *columns])
        .astype(counts),
        sites_histogram=pd.DataFrame(
            histogram, columns=["date", "segmentation", "segment", "sites", "blobs"]
        ).astype({"sites": "float64", "blobs": "int64"}),
        quality=pd.DataFrame(quality, columns=["date", *QUALITY_MEASURES])
        .astype(dict.fromkeys(QUALITY_MEASURES, "int64")),
    )


def build_site(settings: Settings, config: Config | None = None, now: datetime | None = None,
               start: date | None = None, end: date | None = None,
               allow_empty: bool = False) -> Path:
    """Rebuild and publish the site from the stored daily aggregates of [start, end].

    Incremental (`kpi.buildcache`): only the days whose aggregates changed since the previous
    build are read from CouchDB and recomputed; the result equals a build from scratch. The
    refused restatements (`load_refusals`) are read whole at every build, so a refusal made or
    cleared shows at the next build even when no aggregates changed (a refusal changes
    nothing of its day but the manifest).

    Args:
        settings: where the aggregates are and where the site goes.
        config: the report configuration (default: the one `settings` names).
        now: the build time written to the manifest (default: now).
        start, end: the UTC days shown, both included (default: every stored day).
        allow_empty: replace a published site that shows days with one that shows none
            (refused otherwise: it is almost always a wrong server or prefix).

    Raises:
        StoreError: the aggregates or manifests database does not exist (they are never
            created here).
        PipelineError: the build has no day but the published site has some.

    Returns:
        The published site folder.
    """
    config = config or load_config(settings.config_path)
    store = CouchStore(settings)
    store.require_databases((AGGREGATES, MANIFESTS))
    cache = buildcache.cache_path(settings.site_dir)
    key = buildcache.cache_key(config, f"{settings.couchdb_url_redacted} {store.name(AGGREGATES)}",
                               settings.min_segment_count)
    whole = start is None and end is None  # a partial site is built from scratch, not cached
    range_asked = None if whole else (start and start.isoformat(), end and end.isoformat())

    def fetch(days: list[str]) -> list[dict]:
        return current_aggregates(store, days, settings, config)

    # the data is read and the build time stamped under the lock: builds publish in the order
    # they read, so an older build never replaces a newer one
    with publish_lock(settings.site_dir):
        previous = buildcache.read(cache, key) if whole else None
        revs = {day: rev for day, rev in store.revisions(AGGREGATES,
                                                         *day_keys(start, end)).items()
                if ":" not in day}  # not the histogram chunks: a day's document names its own
        built, changed = buildcache.update(
            previous, revs, fetch, lambda docs: aggregates_of_docs(docs, config), config,
            min_segment_count=settings.min_segment_count,
        )
        refusals = load_refusals(store, start, end)
        if not built.aggregates.days and not allow_empty and _published_days(settings.site_dir):
            msg = (f"no aggregates in {store.name(AGGREGATES)} (for the days asked), but the site "
                   f"at {settings.site_dir} shows days: not replaced by an empty site (check "
                   "KPI_COUCHDB_URL and KPI_DB_PREFIX; `kpi build-site --allow-empty` forces it)")
            raise PipelineError(msg)
        built_at = now or datetime.now(UTC)
        shown = published_build(settings.site_dir)  # what changes.csv compares with
        # a range build's first days are judged with the weeks before it, as a full build would
        flags = (judged_flags(settings, config, start, end)
                 if start is not None and built.aggregates.days else None)
        site = publish(
            lambda target: render_site(target, built.aggregates, built.reports, config,
                                       built_at, files=built.files(), previous=shown,
                                       refusals=refusals, range_asked=range_asked,
                                       flags=flags,
                                       chart_cache=chartcache.cache_path()),
            settings.site_dir,
        )
        if whole:
            buildcache.write(cache, key, built)
    log.info("published %s (%d days, %d recomputed)", site, len(built.aggregates.days),
             len(changed))
    return site


def _published_days(site_dir: Path) -> bool:
    """Whether the site published at `site_dir` shows any day."""
    try:
        return bool(orjson.loads((Path(site_dir) / "data" / "manifest.json").read_bytes())
                    .get("last_day"))
    except (OSError, ValueError, AttributeError):
        return False


def judged_flags(settings: Settings, config: Config, start: date,
                 end: date | None) -> pd.DataFrame:
    """The flagged days of [start, end] (`kpi.anomalies`), judged with the weeks before
    `start` they need (`history_days`) and small segments folded as the site folds them: what
    a build of every day flags on those days."""
    first = start - timedelta(days=history_days(config.anomalies))
    aggregates = fold_small_segments(load_aggregates(settings, first, end, config),
                                     settings.min_segment_count)
    flags = detect_anomalies(build_reports(aggregates, config), aggregates.days,
                             config.anomalies, last_steps(config))
    shown = (flags["date"] >= start.isoformat()) & (
        flags["date"] <= end.isoformat() if end is not None else True)
    return flags[shown].reset_index(drop=True)
