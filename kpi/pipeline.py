"""The pipeline's entry points: one UTC day through extract → store → aggregate, and backfills.

Which day a scheduled run processes: the Airflow DAG runs daily at 00:00 UTC; the run whose
logical date is D (00:00 UTC) processes the UTC day that just ended, D − 1 day. So the run at
2026-11-02T00:00Z processes 2026-11-01 (see `processing_day`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd

from kpi.aggregate import count_columns
from kpi.aggregate_docs import with_histograms
from kpi.anomalies import detect_anomalies, history_days, last_steps
from kpi.config import Config, load_config
from kpi.couch import AGGREGATES, MANIFESTS, CouchStore
from kpi.ingest import (  # noqa: F401 (the pipeline's API: its entry points import these)
    PipelineError,
    close_day,
    close_days,
    confirm_aggregated,
    day_is_done,
    extract_and_store,
    extract_window,
    is_done,
    made_with,
    plan_windows,
    reaggregate_day,
    refusal_text,
    require_ended,
    restore_removed_day,
)
from kpi.reports import QUALITY_MEASURES, Aggregates
from kpi.settings import Settings

log = logging.getLogger(__name__)


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


def days_between(start: date, end: date) -> list[date]:
    """Every UTC day from `start` to `end`, both included."""
    if end < start:
        msg = f"end day {end} is before start day {start}"
        raise ValueError(msg)
    return [start + timedelta(days=n) for n in range((end - start).days + 1)]


def load_aggregates(settings: Settings, start: date | None = None, end: date | None = None,
                    config: Config | None = None) -> Aggregates:
    """The stored daily aggregates of [start, end] (all days when None) as frames; days
    aggregated under another configuration are re-aggregated from CouchDB first."""
    config = config or load_config(settings.config_path)
    store = CouchStore(settings)
    store.require_databases((AGGREGATES,))
    days = [doc_id for doc_id in store.iter_range(AGGREGATES, *_day_keys(start, end),
                                                  include_docs=False)
            if ":" not in doc_id]  # the days' documents, not their histogram chunks
    return aggregates_of_docs(current_aggregates(store, days, settings, config), config)


def load_refusals(store: CouchStore, start: date | None = None,
                  end: date | None = None) -> list[dict]:
    """The refused restatements of [start, end] (every day when None) that the days'
    manifests record now, newest day first (`kpi.refusals.refusals_of`): one `_find` on the
    manifests database, one small document per day."""
    from kpi.refusals import MANIFEST_FIELDS, refusals_of

    first, after = _day_keys(start, end)
    days = {"$gte": first} | ({"$lt": after} if after is not None else {})
    return refusals_of(store.find(MANIFESTS, {"_id": days, "refused": {"$exists": True}},
                                  MANIFEST_FIELDS))


def _day_keys(start: date | None, end: date | None) -> tuple[str, str | None]:
    """The `_all_docs` key range [start, end + 1 day) of the day documents of [start, end]."""
    return (start.isoformat() if start else "",
            (end + timedelta(days=1)).isoformat() if end else None)


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
        from kpi.site import day_ranges

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



def run_day(day: date, settings: Settings, config: Config | None = None,
            allow_removals: bool = False) -> dict:
    """Extract, store and aggregate one UTC day; returns its data-quality counts, or, when
    its restatement was refused, `refused` and the counts it kept."""
    manifest = extract_and_store(day, settings, config, allow_removals)
    result = {key: manifest.get(key, 0) for key in QUALITY_MEASURES}
    if "refused" in manifest:  # the counts are those the day kept
        result["refused"] = manifest["refused"]
        result["message"] = refusal_text(manifest)
    elif manifest.get("removed"):  # rows moved to <prefix>_removed, within the guard
        result["removed"] = manifest["removed"]
    return result


def backfill(start: date, end: date, settings: Settings, progress: bool = True,
             parallel: int = 1, skip_done: bool = False,
             allow_removals: bool = False) -> list[dict]:
    """Run every day of [start, end] (inclusive), then publish the site once.

    Args:
        start, end: the UTC days, both included.
        settings: where the source, CouchDB and site are.
        progress: show a progress bar.
        parallel: days processed at once (threads; each day is mostly waiting on the network).
        skip_done: leave out days already extracted and aggregated (`day_is_done`); without
            it every day is restated. A day extracted completely whose aggregates were made
            under another configuration is re-aggregated from CouchDB, not fetched again.
        allow_removals: let restatements remove any number of stored rows (otherwise a day
            whose restatement would remove too many is refused and left as it was).

    Returns:
        The data-quality counts of each day processed, oldest first; a refused day has
        `refused` and `message` (the run goes on with the other days).
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
        days = [day for day in days if not _done_or_reaggregated(day, settings, config)]
    results = []
    pool = ThreadPoolExecutor(parallel)
    try:
        with tqdm(total=len(days), desc="days", unit="day", disable=not progress) as bar:
            futures = {pool.submit(run_day, day, settings, config, allow_removals): day
                       for day in days}
            for future in as_completed(futures):
                results.append({"day": futures[future].isoformat(), **future.result()})
                bar.update()
    finally:  # on a failure, days not started yet are not started
        pool.shutdown(wait=True, cancel_futures=True)
    build_site(settings, config)
    return sorted(results, key=lambda result: result["day"])


def _done_or_reaggregated(day: date, settings: Settings, config: Config) -> bool:
    """Whether `day` needs no extract: it is done, or was extracted completely and only its
    aggregates are stale (then re-aggregated here, from CouchDB)."""
    store = CouchStore(settings)
    manifest, aggregates = (store.get(kind, day.isoformat()) for kind in (MANIFESTS, AGGREGATES))
    if is_done(manifest, aggregates, config):
        return True
    if manifest is None or not manifest.get("complete", True) or "refused" in manifest:
        return False
    reaggregate_day(day, settings, config)
    return day_is_done(day, settings, config)


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
    from kpi import buildcache, chartcache
    from kpi.site import publish, publish_lock, published_build, render_site

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
                                                         *_day_keys(start, end)).items()
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


def judged_flags(settings: Settings, config: Config, start: date,
                 end: date | None) -> pd.DataFrame:
    """The flagged days of [start, end] (`kpi.anomalies`), judged with the weeks before
    `start` they need (`history_days`) and small segments folded as the site folds them: what
    a build of every day flags on those days."""
    from kpi.reports import build_reports, fold_small_segments

    first = start - timedelta(days=history_days(config.anomalies))
    aggregates = fold_small_segments(load_aggregates(settings, first, end, config),
                                     settings.min_segment_count)
    flags = detect_anomalies(build_reports(aggregates, config), aggregates.days,
                             config.anomalies, last_steps(config))
    shown = (flags["date"] >= start.isoformat()) & (
        flags["date"] <= end.isoformat() if end is not None else True)
    return flags[shown].reset_index(drop=True)


def nightly_days(logical_date: datetime | date | str | None, settings: Settings,
                 now: datetime | None = None, restate_days: int | None = None) -> list[date]:
    """The UTC days a nightly run restates and processes, oldest first.

    Its own day (`processing_day`) and the `restate_days` before it (default: the setting),
    never before `start_date`: late rows (a session that started before midnight and was sent
    after it) and corrected rows reach their day within that many nights.
    """
    day = processing_day(logical_date, now)
    restate = settings.restate_days if restate_days is None else restate_days
    first = max(day - timedelta(days=restate), settings.start_date)
    return days_between(first, day) if first <= day else []


def run_restate_days(run_type: object, day: date, asked: int | None, settings: Settings,
                     now: datetime) -> int:
    """How many days before its own a DAG run restates (`run_type`: Airflow's `DagRunType`,
    or its value).

    `asked` (the run's `restate_days` Param) when given; else 0 for a backfill run and for a
    scheduled run catching up (its day is not the last one that has ended at `now`: the runs
    after it process the next days, each of them once), and `KPI_RESTATE_DAYS` for the
    scheduled run of the night and a manual run. So a catch-up of 30 nights, or a backfill of
    30 days, fetches each day once, not 1 + KPI_RESTATE_DAYS times; only the nightly run
    restates.
    """
    run_type = getattr(run_type, "value", run_type)  # the Task SDK's enum prints its name
    if asked is not None:
        return asked
    if run_type == "backfill":
        return 0
    if run_type == "scheduled" and day < processing_day(None, now):
        return 0
    return settings.restate_days


# Airflow task entry points: one call each from dags/. Settings come from the environment and,
# when defined, the Airflow connections (kpi.connections).


def nightly_plan(logical_date: datetime | None, run_after: datetime | None,
                 run_id: str, run_type: object = "manual",
                 restate_days: int | None = None) -> list[dict]:
    """Airflow task: the fetch windows of the run's days (`nightly_days`, restating
    `run_restate_days` days), for the mapped extract tasks.

    `run_after` (the run's own time, fixed for all its tasks) decides the days of a run without
    a logical date, so a manual run works on the same days even when it crosses midnight.
    """
    from kpi.connections import airflow_settings

    settings = airflow_settings()
    now = datetime.now(UTC)  # a worker's clock a little behind the scheduler's is no reason to
    now = max(now, run_after) if run_after else now  # refuse the day that just ended
    day = processing_day(logical_date, run_after)
    restate = run_restate_days(run_type, day, restate_days, settings, now)
    if restate != settings.restate_days:
        log.info("run %s (%s) restates %d days before %s", run_id, run_type, restate, day)
    return plan_windows(nightly_days(logical_date, settings, now=run_after,
                                     restate_days=restate), settings, run_id, now)


def nightly_extract_window(window: dict) -> dict:
    """Airflow task (mapped): extract and store one window; its counts."""
    from kpi.connections import airflow_settings

    return extract_window(window, airflow_settings())


def nightly_aggregate(windows: list[dict], allow_removals: bool = False) -> list[dict]:
    """Airflow task: close the planned days from their windows' parts (`close_days`) and
    confirm their aggregates; per day its data-quality counts, the documents written and
    removed, and whether it was closed from the windows (else in one pass). A refused day
    gives `refused` and `message` instead: the task still succeeds, so the Asset publishes
    the other days and the refusal, and `nightly_check_restatements` fails the run."""
    from kpi.connections import airflow_settings

    settings = airflow_settings()
    config = load_config(settings.config_path)
    results = []
    for manifest in close_days(windows, settings, config, allow_removals):
        day = date.fromisoformat(manifest["day"])
        if "refused" in manifest:
            results.append({"day": manifest["day"], "refused": manifest["refused"],
                            "message": refusal_text(manifest)})
            continue
        results.append({"day": manifest["day"], **confirm_aggregated(day, settings, config),
                        **{key: manifest[key] for key in ("written", "removed", "from_windows")}})
    return results


def nightly_check_restatements(results: list[dict]) -> list[str]:
    """Airflow task: the days checked; when `nightly_aggregate` refused some days'
    restatements, raises RestatementRefused naming each with its counts and the override (the
    DAG fails the task without retrying: a retry would be refused again)."""
    refused = [result["message"] for result in results if "refused" in result]
    if refused:
        raise RestatementRefused("\n".join(refused))
    return [result["day"] for result in results]


class RestatementRefused(PipelineError):
    """Some days' restatements were refused (SPEC D13); the other days are done."""


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
    from kpi.tasks import load_callback

    if not days:
        return []
    config = config or load_config(settings.config_path)
    flags = judged_flags(settings, config, min(days), max(days))
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
