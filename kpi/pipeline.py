"""The pipeline's entry points: one UTC day through extract → store → aggregate, and backfills.

Which day a scheduled run processes: the Airflow DAG runs daily at 00:00 UTC; the run whose
logical date is D (00:00 UTC) processes the UTC day that just ended, D − 1 day. So the run at
2026-11-02T00:00Z processes 2026-11-01 (see `processing_day`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd

from kpi.aggregate import DayAggregator, combine, count_columns, daily_aggregates, sites_histogram
from kpi.config import Config, load_config
from kpi.reports import QUALITY_MEASURES, Aggregates
from kpi.settings import Settings
from kpi.source import KpiggybankClient, SourceError, day_windows, fetch_rows, iter_day
from kpi.stage import stage
from kpi.store import (
    AGGREGATES,
    HIGH_KEY,
    MANIFESTS,
    QUARANTINE,
    RAW,
    CouchStore,
    IncompleteMark,
    Snapshot,
    StoreError,
    aggregates_document,
    decode_frames,
    delete_parts,
    encode_frames,
    finish_day,
    put_aggregates,
    read_parts,
    store_day,
    store_rows,
    with_histograms,
    write_part,
)

log = logging.getLogger(__name__)


class PipelineError(RuntimeError):
    """A day cannot be processed (e.g. aggregating a day that was never extracted)."""


def names_the_day(function: Callable) -> Callable:
    """Make a failure of `function(day or window, ...)` name the day, as a KPIggybank failure
    does: the operator must know which day to re-run (a CouchDB error, or any unexpected
    one, re-raised as a StoreError naming the day)."""

    @functools.wraps(function)
    def wrapper(day: date | dict, *args, **kwargs):
        try:
            return function(day, *args, **kwargs)
        except (PipelineError, SourceError):  # these name the day themselves
            raise
        except Exception as exc:
            name = day["day"] if isinstance(day, dict) else day.isoformat()
            msg = f"processing {name} failed: "
            if str(exc).startswith(msg):  # named already (a job calling another)
                raise
            msg += str(exc) if isinstance(exc, StoreError) else f"{type(exc).__name__}: {exc}"
            raise StoreError(msg) from exc

    return wrapper


def processing_day(logical_date: datetime | date | str | None,
                   now: datetime | None = None) -> date:
    """The UTC day a DAG run with this logical date processes: the day before it.

    A run without a logical date (a manual `airflow dags trigger` without `-l`) processes
    yesterday, the last UTC day that has ended at `now` (default: the current time).
    """
    if logical_date is None:
        logical_date = now or datetime.now(UTC)
    if isinstance(logical_date, str):
        logical_date = datetime.fromisoformat(logical_date)
    if isinstance(logical_date, datetime):
        if logical_date.tzinfo is not None:
            logical_date = logical_date.astimezone(UTC)
        logical_date = logical_date.date()
    return logical_date - timedelta(days=1)


EPOCH_DAY = date(1970, 1, 1)


def require_ended(days: list[date], now: datetime | None = None) -> None:
    """Refuse days that have not ended yet in UTC: their data is incomplete, and a stored
    future day would stretch the site's range past today; and days before the Unix epoch,
    which no blob can fall on.

    Raises:
        PipelineError: naming the first such day and the last day that has ended.
    """
    before_epoch = [day for day in days if day < EPOCH_DAY]
    if before_epoch:  # no blob can lie there (timestamps are ms after the epoch)
        msg = (f"day {before_epoch[0]} is before {EPOCH_DAY}: blob timestamps are milliseconds "
               "after the Unix epoch, so no day before it can hold data")
        raise PipelineError(msg)
    today = (now or datetime.now(UTC)).astimezone(UTC).date()
    early = [day for day in days if day >= today]
    if early:
        msg = (f"day {early[0]} has not ended yet (UTC): the last day that can be processed "
               f"is {today - timedelta(days=1)}")
        raise PipelineError(msg)


def days_between(start: date, end: date) -> list[date]:
    """Every UTC day from `start` to `end`, both included."""
    if end < start:
        msg = f"end day {end} is before start day {start}"
        raise ValueError(msg)
    return [start + timedelta(days=n) for n in range((end - start).days + 1)]


@names_the_day
def extract_and_store(day: date, settings: Settings, config: Config | None = None) -> dict:
    """Fetch UTC `day` from KPIggybank, store (restate) it and write its aggregates.

    The aggregates are computed from the blobs as they are stored, batch by batch, so the day is
    read once (from KPIggybank), never back from CouchDB.

    Returns:
        The day's manifest with `written` and `removed` (see `store_day`) and `aggregated`.
    """
    require_ended([day])
    config = config or load_config(settings.config_path)
    store = CouchStore(settings)
    aggregator = DayAggregator(config)

    def write_aggregates(manifest: dict) -> int:  # before the complete manifest
        quality = day_quality(manifest, aggregator.skipped_empty_stream, aggregator.aggregated)
        doc = aggregates_document(day, *aggregator.result(), config, quality)
        return put_aggregates(store, doc)

    def restage(blobs: Iterable[dict]) -> None:  # an id's later delivery replaced its blob
        nonlocal aggregator
        aggregator = DayAggregator(config)
        batch: list[dict] = []
        for blob in blobs:
            batch.append(blob)
            if len(batch) == settings.bulk_size:
                aggregator.add(batch)
                batch = []
        aggregator.add(batch)

    manifest = store_day(store, day, iter_day(settings, day), on_stored=aggregator.add,
                         before_manifest=write_aggregates, restage=restage)
    if not manifest["fetched"]:
        log.warning("KPIggybank returned no row for %s: before its history, or was it down?",
                    day)
    log.info("stored and aggregated %s: %s", day, manifest)
    return {**manifest, "aggregated": aggregator.aggregated}


def day_quality(manifest: dict, skipped_empty_stream: int, aggregated: int) -> dict:
    """A day's data-quality counts: the manifest's extract counts and the staging's."""
    quality = {key: int(manifest.get(key, 0)) for key in QUALITY_MEASURES[:-1]}
    quality["skipped_empty_stream"] = skipped_empty_stream
    quality["aggregated"] = aggregated
    return quality


@names_the_day
def aggregate_day(day: date, settings: Settings, config: Config | None = None) -> dict:
    """Stage and aggregate the stored blobs of UTC `day`; writes its aggregates document.

    Returns:
        The day's data-quality counts (SPEC D12).
    """
    config = config or load_config(settings.config_path)
    store = CouchStore(settings)
    manifest = store.get(MANIFESTS, day.isoformat())
    if manifest is None:
        msg = f"day {day} has no manifest in {store.name(MANIFESTS)}: extract it first"
        raise PipelineError(msg)
    blobs = (doc["blob"] for doc in store.day_docs(RAW, day))
    staged, counts = stage(blobs, config)
    quality = day_quality(manifest, counts.skipped_empty_stream, len(staged))
    doc = aggregates_document(
        day, daily_aggregates(staged, config), sites_histogram(staged), config, quality
    )
    put_aggregates(store, doc)
    log.info("aggregated %s: %s", day, doc["quality"])
    return doc["quality"]


def load_aggregates(settings: Settings, start: date | None = None, end: date | None = None,
                    config: Config | None = None) -> Aggregates:
    """The stored daily aggregates of [start, end] (all days when None) as frames."""
    config = config or load_config(settings.config_path)
    store = CouchStore(settings)
    store.require_databases((AGGREGATES,))
    low = start.isoformat() if start else ""
    high = end.isoformat() if end else HIGH_KEY
    days = [doc_id for doc_id in store.iter_range(AGGREGATES, low, high, include_docs=False)
            if ":" not in doc_id]  # the days' documents, not their histogram chunks
    size = settings.bulk_size
    docs = (doc for first in range(0, len(days), size)
            for doc in with_histograms(store, store.get_many(AGGREGATES,
                                                             days[first:first + size]).values()))
    return aggregates_of_docs(docs, config)


def aggregates_of_docs(docs: Iterable[dict], config: Config) -> Aggregates:
    """Aggregates documents (ascending days) as frames, with fixed column types: counts are
    integers, `sites_sum` and `sites` floats, whatever the documents hold.

    Raises:
        PipelineError: some documents were made with another configuration (restate them).
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
        from kpi.site import day_ranges

        spans = ", ".join(a if a == b else f"{a} to {b}" for a, b in day_ranges(stale))
        msg = (
            f"the aggregates of {len(stale)} days ({spans}) were computed with another "
            "configuration (segments, aliases or flows); restate them with "
            f"`kpi backfill --start {stale[0]} --end {stale[-1]} --skip-done` (only those days "
            "are redone)"
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



def plan_windows(days: list[date], settings: Settings, run: str,
                 now: datetime | None = None) -> list[dict]:
    """The fetch windows of `days`, in order: one mapped extract task each (`extract_window`).

    Args:
        days: the UTC days to extract.
        settings: `fetch_chunk_hours` sets the windows (24 / it per day).
        run: a token naming this run (e.g. the Airflow run id); `close_day` only combines
            parts written with it.

    Each window says whether its day has nothing stored yet (`fresh`), so its task writes
    without looking up existing documents first.
    """
    require_ended(days, now)
    store = CouchStore(settings)
    store.ensure_databases()
    plan = []
    for day in days:
        fresh = not (store.has_day(RAW, day) or store.has_day(QUARANTINE, day))
        plan += [{"day": day.isoformat(), "start_ms": low, "end_ms": high, "fresh": fresh,
                  "run": run} for low, high in day_windows(settings, day)]
    return plan


@names_the_day
def extract_window(window: dict, settings: Settings, config: Config | None = None) -> dict:
    """Fetch and store one window of a day (a `plan_windows` item) and aggregate its rows;
    leaves the window's part (ids, counts, partial aggregates) for `close_day`.

    Windows of a day can run at once, on any worker: each writes only its own rows and part.
    Returns the window's extract counts.
    """
    config = config or load_config(settings.config_path)
    day = date.fromisoformat(window["day"])
    bounds = (window["start_ms"], window["end_ms"])
    store = CouchStore(settings)
    present = set() if window["fresh"] else None  # None: look every batch up
    aggregator = DayAggregator(config)
    with KpiggybankClient(settings) as client:
        rows = fetch_rows(client, day, bounds)
    snapshot = store_rows(store, day, [rows], present, present, IncompleteMark(store, day),
                          aggregator.add)
    aggregates = {
        **encode_frames(*aggregator.result(), count_columns(config)),
        "skipped_empty_stream": aggregator.skipped_empty_stream,
        "aggregated": aggregator.aggregated,
    }
    write_part(store, day, bounds, window["run"], snapshot, aggregates)
    return {"day": window["day"], "start_ms": bounds[0], "end_ms": bounds[1],
            **dict(snapshot.counts), "written": snapshot.written}


@names_the_day
def close_day(day: date, windows: list[dict], settings: Settings,
              config: Config | None = None) -> dict:
    """Combine the parts `extract_window` left for `day` into the day's snapshot: delete rows
    the source no longer returns, write the aggregates (the window parts' sum, exact because
    counts are additive), then the complete manifest. The parts stay (`close_days` drops
    them), so closing again, e.g. on a retry, gives the same result.

    Identical to `extract_and_store` of the whole day. When the parts cannot say it exactly,
    the day is extracted again in one pass instead: a window's part is missing (e.g. the day was
    stored again since, by a one-pass store or another run's windows, which drop older parts),
    a row a part stored is gone (another writer restated the day meanwhile), or an id came in
    two windows (only one pass over the day can settle which copy is kept).

    Returns:
        The day's manifest, as `extract_and_store` returns it, plus `from_windows`.
    """
    config = config or load_config(settings.config_path)
    store = CouchStore(settings)
    bounds = [(window["start_ms"], window["end_ms"]) for window in windows]
    parts = read_parts(store, day, bounds, windows[0]["run"]) if windows else None
    present_raw, present_quarantined = store.day_ids(RAW, day), store.day_ids(QUARANTINE, day)
    problem = ("a window's part is missing" if parts is None
               else _overlap(parts) or _gone(parts, present_raw, present_quarantined))
    if problem:
        log.warning("%s: %s; extracting the day in one pass", day, problem)
        return {**extract_and_store(day, settings, config), "from_windows": False}
    snapshot = Snapshot()
    for part, _ in parts:
        snapshot.raw_ids |= part.raw_ids
        snapshot.quarantine_ids |= part.quarantine_ids
        snapshot.counts.update(part.counts)
        snapshot.reasons.update(part.reasons)
        snapshot.written += part.written
    columns = count_columns(config)
    aggregated = sum(a["aggregated"] for _, a in parts)

    def write_aggregates(manifest: dict) -> int:  # before the complete manifest
        groups, histogram = combine(
            [decode_frames(day.isoformat(), aggregates, columns) for _, aggregates in parts]
        )
        quality = day_quality(manifest, sum(a["skipped_empty_stream"] for _, a in parts),
                              aggregated)
        doc = aggregates_document(day, groups, histogram, config, quality)
        return put_aggregates(store, doc)

    manifest = finish_day(store, day, snapshot, present_raw, present_quarantined,
                          IncompleteMark(store, day), write_aggregates)
    manifest["aggregated"] = aggregated
    log.info("closed %s from %d windows: %s", day, len(parts), manifest)
    return {**manifest, "from_windows": True}


def close_days(windows: list[dict], settings: Settings,
               config: Config | None = None) -> list[dict]:
    """Close every day of a plan (`close_day`), then drop their parts; the days' manifests.

    Parts are dropped only once every day is closed, so a retry after a failure half-way closes
    the days already done again from their parts, cheaply, instead of re-extracting them.
    """
    config = config or load_config(settings.config_path)
    days = sorted({window["day"] for window in windows})
    manifests = [close_day(date.fromisoformat(day), [w for w in windows if w["day"] == day],
                           settings, config) for day in days]
    store = CouchStore(settings)
    for day in days:
        delete_parts(store, date.fromisoformat(day))
    return manifests


def _gone(parts: list[tuple[Snapshot, dict]], present_raw: set[str],
          present_quarantined: set[str]) -> str:
    """Why the parts no longer describe the stored day ('' when they do): a row they stored
    is gone, so someone else (a one-pass store) restated the day after them."""
    for part, _ in parts:
        if not (part.raw_ids <= present_raw and part.quarantine_ids <= present_quarantined):
            return "the stored day changed after its windows were stored"
    return ""


def _overlap(parts: list[tuple[Snapshot, dict]]) -> str:
    """Why the window parts cannot be combined as they are ('' when they can)."""
    sets = [part.raw_ids | part.quarantine_ids for part, _ in parts]  # an id may change class
    if sum(map(len, sets)) != len(set().union(*sets)):
        return "an id came in two windows"
    return ""


def run_day(day: date, settings: Settings, config: Config | None = None) -> dict:
    """Extract, store and aggregate one UTC day; returns its data-quality counts."""
    manifest = extract_and_store(day, settings, config)
    return {key: manifest[key] for key in QUALITY_MEASURES}


def confirm_aggregated(day: date, settings: Settings, config: Config | None = None) -> dict:
    """The day's data-quality counts, re-aggregating from CouchDB only if its aggregates are
    missing or do not account for the stored blobs."""
    config = config or load_config(settings.config_path)
    manifest, aggregates = _day_docs(day, settings)
    if is_done(manifest, aggregates, config):
        return aggregates["quality"]
    if manifest is not None and not manifest.get("complete", True):
        msg = f"storing {day} was interrupted half-way: extract it again (retry the run)"
        raise PipelineError(msg)
    log.warning("aggregates of %s missing or stale: aggregating from CouchDB", day)
    return aggregate_day(day, settings, config)


def made_with(aggregates: dict, config: Config, columns: list[str] | None = None) -> bool:
    """Whether an aggregates document was computed with this configuration.

    Documents from before fingerprints existed (no `config_fingerprint`) are judged by their
    columns alone, so an upgrade does not refuse every stored day. `columns`: the
    configuration's `count_columns`, when the caller has them already.
    """
    if aggregates.get("columns") != (columns or count_columns(config)):
        return False
    fingerprint = aggregates.get("config_fingerprint")
    return fingerprint is None or fingerprint == config.fingerprint


def _day_docs(day: date, settings: Settings) -> tuple[dict | None, dict | None]:
    """The day's manifest and aggregates documents (None when missing)."""
    store = CouchStore(settings)
    return store.get(MANIFESTS, day.isoformat()), store.get(AGGREGATES, day.isoformat())


def is_done(manifest: dict | None, aggregates: dict | None, config: Config) -> bool:
    """A complete manifest and aggregates, made with this configuration, that account for every
    stored blob (manifests from before the `complete` flag existed count as complete)."""
    if manifest is None or aggregates is None or not manifest.get("complete", True):
        return False
    if not made_with(aggregates, config):
        return False
    expected = manifest["stored"] - manifest["skipped_empty_stream"]
    return aggregates["quality"].get("aggregated") == expected


def day_is_done(day: date, settings: Settings, config: Config | None = None) -> bool:
    """Whether the stored day is done (`is_done`): nothing to redo."""
    return is_done(*_day_docs(day, settings), config or load_config(settings.config_path))


def backfill(start: date, end: date, settings: Settings, progress: bool = True,
             parallel: int = 1, skip_done: bool = False) -> list[dict]:
    """Run every day of [start, end] (inclusive), then publish the site once.

    Args:
        start, end: the UTC days, both included.
        settings: where the source, CouchDB and site are.
        progress: show a progress bar.
        parallel: days processed at once (threads; each day is mostly waiting on the network).
        skip_done: leave out days already extracted and aggregated (`day_is_done`); without
            it every day is restated.

    Returns:
        The data-quality counts of each day processed, oldest first.
    """
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from tqdm import tqdm

    if parallel < 1:
        msg = f"parallel must be at least 1, not {parallel}"
        raise ValueError(msg)
    config = load_config(settings.config_path)
    days = days_between(start, end)
    require_ended(days)
    CouchStore(settings).ensure_databases()
    if skip_done:
        days = [day for day in days if not day_is_done(day, settings, config)]
    results = []
    pool = ThreadPoolExecutor(parallel)
    try:
        with tqdm(total=len(days), desc="days", unit="day", disable=not progress) as bar:
            futures = {pool.submit(run_day, day, settings, config): day for day in days}
            for future in as_completed(futures):
                results.append({"day": futures[future].isoformat(), **future.result()})
                bar.update()
    finally:  # on a failure, days not started yet are not started
        pool.shutdown(wait=True, cancel_futures=True)
    build_site(settings, config)
    return sorted(results, key=lambda result: result["day"])


def _published_days(site_dir: Path) -> bool:
    """Whether the site published at `site_dir` shows any day."""
    import orjson

    try:
        return bool(orjson.loads((Path(site_dir) / "data" / "manifest.json").read_bytes())
                    .get("last_day"))
    except (OSError, ValueError, AttributeError):
        return False


def build_site(settings: Settings, config: Config | None = None, now: datetime | None = None,
               start: date | None = None, end: date | None = None,
               allow_empty: bool = False) -> Path:
    """Rebuild and publish the site from the stored daily aggregates of [start, end].

    Incremental (`kpi.buildcache`): only the days whose aggregates changed since the previous
    build are read from CouchDB and recomputed; the result equals a build from scratch.

    Args:
        settings: where the aggregates are and where the site goes.
        config: the report configuration (default: the one `settings` names).
        now: the build time written to the manifest (default: now).
        start, end: the UTC days shown, both included (default: every stored day).
        allow_empty: replace a published site that shows days with one that shows none
            (refused otherwise: it is almost always a wrong server or prefix).

    Raises:
        StoreError: the aggregates database does not exist (it is never created here).
        PipelineError: the build has no day but the published site has some.

    Returns:
        The published site folder.
    """
    from kpi import buildcache
    from kpi.site import publish, publish_lock, published_build, render_site

    config = config or load_config(settings.config_path)
    store = CouchStore(settings)
    store.require_databases((AGGREGATES,))
    low = start.isoformat() if start else ""
    high = end.isoformat() if end else HIGH_KEY
    cache = buildcache.cache_path(settings.site_dir)
    key = buildcache.cache_key(config, f"{settings.couchdb_url_redacted} {store.name(AGGREGATES)}",
                               settings.min_segment_count)
    whole = start is None and end is None  # a partial site is built from scratch, not cached

    def fetch(days: list[str]) -> list[dict]:
        size = settings.bulk_size
        return [doc for first in range(0, len(days), size)
                for doc in with_histograms(
                    store, store.get_many(AGGREGATES, days[first:first + size]).values())]

    # the data is read and the build time stamped under the lock: builds publish in the order
    # they read, so an older build never replaces a newer one
    with publish_lock(settings.site_dir):
        previous = buildcache.read(cache, key) if whole else None
        revs = {day: rev for day, rev in store.revisions(AGGREGATES, low, high).items()
                if ":" not in day}  # not the histogram chunks: a day's document names its own
        built, changed = buildcache.update(
            previous, revs, fetch, lambda docs: aggregates_of_docs(docs, config), config,
            min_segment_count=settings.min_segment_count,
        )
        if not built.aggregates.days and not allow_empty and _published_days(settings.site_dir):
            msg = (f"no aggregates in {store.name(AGGREGATES)} (for the days asked), but the site "
                   f"at {settings.site_dir} shows days: not replaced by an empty site (check "
                   "KPI_COUCHDB_URL and KPI_DB_PREFIX; `kpi build-site --allow-empty` forces it)")
            raise PipelineError(msg)
        built_at = now or datetime.now(UTC)
        shown = published_build(settings.site_dir)  # what changes.csv compares with
        site = publish(
            lambda target: render_site(target, built.aggregates, built.reports, config,
                                       built_at, files=built.files(), previous=shown),
            settings.site_dir,
        )
        if whole:
            buildcache.write(cache, key, built)
    log.info("published %s (%d days, %d recomputed)", site, len(built.aggregates.days),
             len(changed))
    return site


def nightly_days(logical_date: datetime | date | str | None, settings: Settings,
                 now: datetime | None = None) -> list[date]:
    """The UTC days a nightly run restates and processes, oldest first.

    Its own day (`processing_day`) and the `restate_days` before it, never before
    `start_date`: late rows (a session that started before midnight and was sent after it)
    and corrected rows reach their day within that many nights.
    """
    day = processing_day(logical_date, now)
    first = max(day - timedelta(days=settings.restate_days), settings.start_date)
    return days_between(first, day) if first <= day else []


# Airflow task entry points: one call each from dags/. Settings come from the environment and,
# when defined, the Airflow connections (kpi.connections).


def nightly_plan(logical_date: datetime | None, run_after: datetime | None,
                 run_id: str) -> list[dict]:
    """Airflow task: the fetch windows of the run's days (`nightly_days`), for the mapped
    extract tasks.

    `run_after` (the run's own time, fixed for all its tasks) decides the days of a run without
    a logical date, so a manual run works on the same days even when it crosses midnight.
    """
    from kpi.connections import airflow_settings

    settings = airflow_settings()
    now = datetime.now(UTC)  # a worker's clock a little behind the scheduler's is no reason to
    now = max(now, run_after) if run_after else now  # refuse the day that just ended
    return plan_windows(nightly_days(logical_date, settings, now=run_after), settings, run_id,
                        now)


def nightly_extract_window(window: dict) -> dict:
    """Airflow task (mapped): extract and store one window; its counts."""
    from kpi.connections import airflow_settings

    return extract_window(window, airflow_settings())


def nightly_aggregate(windows: list[dict]) -> list[dict]:
    """Airflow task: close the planned days from their windows' parts (`close_days`) and
    confirm their aggregates; per day its data-quality counts, the documents written and
    removed, and whether it was closed from the windows (else in one pass)."""
    from kpi.connections import airflow_settings

    settings = airflow_settings()
    config = load_config(settings.config_path)
    results = []
    for manifest in close_days(windows, settings, config):
        day = date.fromisoformat(manifest["day"])
        results.append({"day": manifest["day"], **confirm_aggregated(day, settings, config),
                        **{key: manifest[key] for key in ("written", "removed", "from_windows")}})
    return results


def check_anomalies(days: list[date], settings: Settings, config: Config | None = None,
                    context: dict | None = None) -> list[dict]:
    """The flags (`kpi.anomalies`) that concern `days`, as the site computes them (same
    reports, small segments folded the same way), each logged as a warning; when one concerns
    the last of `days` (a nightly run's own day), the `KPI_ANOMALY_CALLBACK` hook is called
    with them and `context`. Never raises for a flag or a failing hook: a flag is news, not a
    failure of the pipeline.

    Returns:
        The flags of `days` (dicts with `kpi.anomalies.COLUMNS`).
    """
    from kpi.anomalies import detect_anomalies
    from kpi.reports import build_reports, fold_small_segments
    from kpi.tasks import load_callback

    if not days:
        return []
    config = config or load_config(settings.config_path)
    rules = config.anomalies
    first = min(days) - timedelta(days=7 * rules.weeks + rules.min_history_days)
    aggregates = fold_small_segments(load_aggregates(settings, first, max(days), config),
                                     settings.min_segment_count)
    flags = detect_anomalies(build_reports(aggregates, config), aggregates.days, rules,
                             {"password_reset": config.steps("password_reset")[-1]})
    wanted = {day.isoformat() for day in days}
    mine = [flag for flag in flags.to_dict("records") if flag["date"] in wanted]
    for flag in mine:
        log.warning("flagged %(direction)s: %(date)s %(report)s %(segmentation)s/%(segment)s "
                    "%(measure)s = %(value)s against a baseline of %(baseline)s", flag)
    own = [flag for flag in mine if flag["date"] == max(days).isoformat()]
    if own and settings.anomaly_callback:
        try:
            load_callback(settings.anomaly_callback, "KPI_ANOMALY_CALLBACK")(own, context or {})
        except Exception:  # a notifier's failure must not fail the pipeline
            log.exception("KPI_ANOMALY_CALLBACK %s failed", settings.anomaly_callback)
    return mine


def nightly_check_anomalies(results: list[dict], context: dict | None = None) -> list[dict]:
    """Airflow task: flag the run's days (`check_anomalies`), after their aggregation."""
    from kpi.connections import airflow_settings

    days = [date.fromisoformat(result["day"]) for result in results]
    return check_anomalies(days, airflow_settings(), context=context)


def nightly_publish() -> str:
    """Airflow task: rebuild and publish the site from every stored aggregate."""
    from kpi.connections import airflow_settings

    return str(build_site(airflow_settings()))
