"""Run days and backfills outside Airflow (`kpi run-day`, `kpi backfill`): each day through
`kpi.ingest` (several at once, in threads), then the site published once (`kpi.publish`)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import date

from tqdm import tqdm

from kpi.config import Config, load_config
from kpi.couch import AGGREGATES, MANIFESTS, CouchStore
from kpi.days import days_between
from kpi.ingest import (
    day_is_done,
    extract_and_store,
    is_done,
    reaggregate_day,
    refusal_text,
    require_ended,
)
from kpi.publish import build_site
from kpi.reports import QUALITY_MEASURES
from kpi.settings import Settings


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
