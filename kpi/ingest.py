"""Ingest: one UTC day from KPIggybank into its raw snapshot, aggregates and manifest.

A day is fetched as windows (`kpi.source.day_windows`). The nightly DAG runs them as mapped
tasks, each leaving a part (`kpi.parts`), and `close_day` combines the parts; `extract_and_store`
fetches the same windows in this process and closes the day with the same code (`_close`,
with `kpi.snapshot.close_snapshot`), so the two cannot drift. Both fetch a window in pages of
about 20,000 rows (`kpi.source.DayPages`: a row belongs to the page of floor(timestamp), so
any cut gives the same rows).

A day with stored rows is *restated*: its windows stage their new and changed rows instead of
writing them, and closing the day applies them only when the restatement guard lets it (SPEC
D13); a refused day keeps every document it had. `reaggregate_day` rebuilds a day's aggregates
and manifest counts from CouchDB alone.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import pandas as pd

from kpi.aggregate import DayAggregator, combine, count_columns
from kpi.aggregate_docs import aggregates_document, decode_frames, encode_frames, put_aggregates
from kpi.config import Config, load_config
from kpi.couch import (
    AGGREGATES,
    MANIFESTS,
    QUARANTINE,
    RAW,
    CouchStore,
    StoreError,
    content_of,
    day_prefix,
    prefix_range,
)
from kpi.days import EPOCH
from kpi.overlap import Ahead
from kpi.parts import closed_by, delete_parts, mark_closed, read_parts, write_part
from kpi.removed import restore_removed
from kpi.reports import QUALITY_MEASURES
from kpi.settings import Settings
from kpi.snapshot import (
    IncompleteMark,
    RestatementGuard,
    Snapshot,
    Staging,
    StagingLost,
    close_snapshot,
    drop_staging,
    known_rows,
    store_rows,
    write_record,
)
from kpi.source import DayPages, KpiggybankClient, SourceError, day_windows

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


def require_ended(days: list[date], now: datetime | None = None) -> None:
    """Refuse days that have not ended yet in UTC: their data is incomplete, and a stored
    future day would stretch the site's range past today; and days before the Unix epoch,
    which no blob can fall on.

    Raises:
        PipelineError: naming the first such day and the last day that has ended.
    """
    before_epoch = [day for day in days if day < EPOCH]
    if before_epoch:  # no blob can lie there (timestamps are ms after the epoch)
        msg = (f"day {before_epoch[0]} is before {EPOCH}: blob timestamps are milliseconds "
               "after the Unix epoch, so no day before it can hold data")
        raise PipelineError(msg)
    today = (now or datetime.now(UTC)).astimezone(UTC).date()
    early = [day for day in days if day >= today]
    if early:
        msg = (f"day {early[0]} has not ended yet (UTC): the last day that can be processed "
               f"is {today - timedelta(days=1)}")
        raise PipelineError(msg)


def guard_of(settings: Settings, allow_removals: bool) -> RestatementGuard:
    """The restatement guard of a run."""
    return RestatementGuard(settings.restate_max_removed, allow_removals)


def refusal_text(manifest: dict) -> str:
    """One line naming a refused restatement, its counts and the override."""
    refused = manifest["refused"]
    stored, would_remove = refused["stored"], refused["would_remove"]
    why = ("none of them would be kept" if would_remove >= stored else
           f"more than KPI_RESTATE_MAX_REMOVED={refused['max_removed']:g} of them")
    return (f"{manifest['day']}: restatement refused: {stored} rows stored (raw and "
            f"quarantined), {refused['fetched']} fetched, would remove {would_remove}: {why}; "
            "nothing of the day was changed. If KPIggybank really dropped them, re-run with "
            "--allow-removals (Airflow: trigger kpi_nightly with allow_removals)")


def day_quality(manifest: dict, skipped_empty_stream: int, aggregated: int) -> dict:
    """A day's data-quality counts: the manifest's extract counts and the staging's."""
    quality = {key: int(manifest.get(key, 0)) for key in QUALITY_MEASURES[:-1]}
    quality["skipped_empty_stream"] = skipped_empty_stream
    quality["aggregated"] = aggregated
    return quality


@dataclass
class Part:
    """What some windows of a day kept: the snapshot and the partial aggregates of its blobs."""

    snapshot: Snapshot
    groups: pd.DataFrame
    histogram: pd.DataFrame
    skipped_empty_stream: int
    aggregated: int


def _stored_ids(store: CouchStore, day: date) -> tuple[set[str], set[str]]:
    return store.day_ids(RAW, day), store.day_ids(QUARANTINE, day)


def plan_windows(days: list[date], settings: Settings, run: str,
                 now: datetime | None = None) -> list[dict]:
    """The fetch windows of `days`, in order: one mapped extract task each (`extract_window`).

    Args:
        days: the UTC days to extract.
        settings: `fetch_chunk_hours` sets the windows.
        run: a token naming this run (e.g. the Airflow run id); `close_day` only combines
            parts written with it.

    Each window says whether its day has nothing stored yet (`fresh`): its task then writes
    its rows without looking up existing documents first, and the day's manifest is marked
    incomplete here, once (created if missing). A day with stored rows is restated: its
    windows stage their rows until `close_day`.
    """
    require_ended(days, now)
    store = CouchStore(settings)
    store.ensure_databases()
    plan = []
    for day in days:
        fresh = not (store.has_day(RAW, day) or store.has_day(QUARANTINE, day))
        if fresh:  # its windows write directly: in progress until the close
            IncompleteMark(store, day)()
        plan += [{"day": day.isoformat(), "start_ms": low, "end_ms": high, "fresh": fresh,
                  "run": run} for low, high in day_windows(settings, day)]
    return plan


@names_the_day
def extract_window(window: dict, settings: Settings, config: Config | None = None) -> dict:
    """Fetch and store (or stage) one window of a day (a `plan_windows` item) and aggregate
    its rows; leaves the window's part (ids, counts, partial aggregates) for `close_day`.

    Windows of a day can run at once, on any worker: each writes only its own rows and part.
    Returns the window's extract counts.
    """
    config = config or load_config(settings.config_path)
    day = date.fromisoformat(window["day"])
    bounds = (window["start_ms"], window["end_ms"])
    store = CouchStore(settings)
    aggregator = DayAggregator(config)
    attempt = uuid.uuid4().hex
    pages = DayPages(settings, day, windows=[bounds])
    with (KpiggybankClient(settings) as client,
          Ahead(functools.partial(pages.fetch, client, page) for page in pages) as fetched):
        if window["fresh"] and not _closed_since_plan(store, day):
            snapshot = store_rows(store, day, fetched, set(), set(), on_stored=aggregator.add)
        else:
            snapshot = store_rows(store, day, fetched, None, None, on_stored=aggregator.add,
                                  staging=Staging(store, day, window["run"], attempt))
    aggregates = {
        **encode_frames(*aggregator.result(), count_columns(config)),
        "skipped_empty_stream": aggregator.skipped_empty_stream,
        "aggregated": aggregator.aggregated,
    }
    write_part(store, day, bounds, window["run"], snapshot, aggregates, attempt)
    return {"day": window["day"], "start_ms": bounds[0], "end_ms": bounds[1],
            **dict(snapshot.counts), "written": snapshot.written}


def _closed_since_plan(store: CouchStore, day: date) -> bool:
    """Whether a day planned as fresh (its manifest marked in progress by the plan) was closed
    by another run since: its windows must then stage their rows, as a restatement's."""
    manifest = store.get(MANIFESTS, day.isoformat())
    return bool(manifest and manifest.get("complete", True))


@names_the_day
def extract_and_store(day: date, settings: Settings, config: Config | None = None,
                      allow_removals: bool = False) -> dict:
    """Fetch UTC `day` from KPIggybank, store (restate) it and write its aggregates: the day's
    windows run in this process, then the day is closed as `close_day` closes it.

    The aggregates are computed from the blobs as they are stored, batch by batch, so the day is
    read once (from KPIggybank), never back from CouchDB.

    Returns:
        The day's manifest with `written`, `removed` and `aggregated`, and `refused` when the
        restatement was refused (nothing of the day changed).
    """
    require_ended([day])
    config = config or load_config(settings.config_path)
    store = CouchStore(settings)
    store.ensure_databases()
    for _ in range(ONE_PASS_ROUNDS):
        try:
            manifest = _one_pass(store, day, settings, config, allow_removals)
            break
        except StagingLost as exc:  # another run of the day started after this one: redo
            log.warning("%s; extracting the day again", exc)
    else:
        msg = (f"{day}: other runs of the day kept dropping this run's staged rows "
               f"({ONE_PASS_ROUNDS} rounds): let them finish, then run it again")
        raise PipelineError(msg)
    if not manifest.get("fetched") and not manifest.get("refused"):
        log.warning("KPIggybank returned no row for %s: before its history, or was it down?",
                    day)
    log.info("stored and aggregated %s: %s", day, manifest)
    return manifest


ONE_PASS_ROUNDS = 3  # a one pass whose staged rows another run dropped is redone this often


def _one_pass(store: CouchStore, day: date, settings: Settings, config: Config,
              allow_removals: bool) -> dict:
    """Fetch, store or stage, and close `day` in one pass (`extract_and_store`).

    Raises:
        StagingLost: another run of the day dropped rows this pass staged (nothing applied).
    """
    run = f"one-pass:{uuid.uuid4().hex}"
    aggregator = DayAggregator(config)
    written = store.track_revisions((RAW, QUARANTINE))
    pages = DayPages(settings, day)  # of about PAGE_ROWS rows, by the page before's rate
    with (KpiggybankClient(settings) as client,
          Ahead(functools.partial(pages.fetch, client, page)
                for page in pages) as windows):  # fetched ahead, the first while the stored
        # day is read
        delete_parts(store, day)  # they describe an older snapshot than this one
        revisions = {kind: store.revisions(kind, *prefix_range(day_prefix(day)))
                     for kind in (RAW, QUARANTINE)}  # ids and revisions only
        stored = len(revisions[RAW]) + len(revisions[QUARANTINE])
        known = known_rows(store, day, revisions) if stored else {}
        if 2 * len(known) >= stored:  # the digest record knows (most of) the stored rows
            present_raw, present_quarantined = set(revisions[RAW]), set(revisions[QUARANTINE])
        else:  # the stored rows' digests: read once, by key range (not each row by id)
            present_raw, present_quarantined = (store.digests(RAW, day),
                                                store.digests(QUARANTINE, day))
        fresh = not stored
        staging = None if fresh else Staging(store, day, run, "one-pass")
        snapshot = store_rows(store, day, windows, present_raw, present_quarantined,
                              IncompleteMark(store, day), aggregator.add, staging,
                              known=known)
    all_known = len(known) == stored
    del known, present_raw, present_quarantined
    part = Part(snapshot, *aggregator.result(), aggregator.skipped_empty_stream,
                aggregator.aggregated)
    try:
        manifest = _close(store, day, [part], set(revisions[RAW]), set(revisions[QUARANTINE]),
                          [staging] if staging else [], fresh,
                          guard_of(settings, allow_removals), run, config)
    finally:
        drop_staging(store, day, run)
    unchanged = all_known and not any(written.values()) and len(snapshot.rows or ()) == stored
    if "refused" not in manifest and snapshot.rows is not None and not unchanged:
        try:
            write_record(store, day, snapshot.rows, revisions, written)
        except StoreError as exc:  # the day is closed: without a record, a re-run reads it
            log.warning("%s: the digest record was not written (%s); the next run of the "
                        "day reads its documents", day, exc)
    return manifest


def _close(store: CouchStore, day: date, parts: list[Part], present_raw: set[str],
           present_quarantined: set[str], stagings: list[Staging], fresh: bool,
           guard: RestatementGuard, run: str, config: Config) -> dict:
    """Close `day` from its parts (every window's): the one close of both ingest paths."""
    snapshot = Snapshot()
    if len(parts) == 1:  # its id sets as they are (a big day's million ids: not copied)
        snapshot.raw_ids = parts[0].snapshot.raw_ids
        snapshot.quarantine_ids = parts[0].snapshot.quarantine_ids
    else:
        snapshot.raw_ids = set().union(*(part.snapshot.raw_ids for part in parts))
        snapshot.quarantine_ids = set().union(*(part.snapshot.quarantine_ids for part in parts))
    for part in parts:
        snapshot.counts.update(part.snapshot.counts)
        snapshot.reasons.update(part.snapshot.reasons)
        snapshot.written += part.snapshot.written
        snapshot.restage |= part.snapshot.restage
    aggregated = sum(part.aggregated for part in parts)

    def write_aggregates(manifest: dict) -> int:  # before the complete manifest
        nonlocal aggregated
        if snapshot.restage:  # a blob aggregated early was replaced by a later delivery
            groups, histogram, skipped, aggregated = aggregate_stored_day(store, day, config)
        else:
            groups, histogram = combine([(part.groups, part.histogram) for part in parts])
            skipped = sum(part.skipped_empty_stream for part in parts)
        quality = day_quality(manifest, skipped, aggregated)
        return put_aggregates(store, aggregates_document(day, groups, histogram, config,
                                                         quality))

    manifest = close_snapshot(store, day, snapshot, present_raw, present_quarantined, guard,
                              run, stagings, write_aggregates, fresh)
    if "refused" in manifest:
        log.info(refusal_text(manifest))  # callers report it (CLI: stderr; Airflow: the task)
        return manifest
    return {**manifest, "aggregated": aggregated}


def aggregate_stored_day(store: CouchStore, day: date,
                         config: Config) -> tuple[pd.DataFrame, pd.DataFrame, int, int]:
    """The day's (daily_aggregates, sites_histogram, skipped_empty_stream, aggregated),
    computed from its raw documents in CouchDB, page by page."""
    aggregator = DayAggregator(config)
    batch: list[dict] = []
    for doc in store.day_docs(RAW, day):
        batch.append(doc["blob"])
        if len(batch) == store.settings.bulk_size:
            aggregator.add(batch)
            batch = []
    aggregator.add(batch)
    return (*aggregator.result(), aggregator.skipped_empty_stream, aggregator.aggregated)


@names_the_day
def close_day(day: date, windows: list[dict], settings: Settings,
              config: Config | None = None, allow_removals: bool = False) -> dict:
    """Combine the parts `extract_window` left for `day` and close the day as
    `extract_and_store` does: apply or refuse the restatement, write the aggregates (the
    window parts' sum, exact because counts are additive), then the manifest. The parts stay
    (`close_days` drops them), so closing again, e.g. on a retry, gives the same result.

    When the parts are gone because this run closed the day already (a retry of the task), or
    its restatement was refused in this run, the day is left as it is: a retry never fetches a
    closed day again. When the parts cannot say it exactly, the day is extracted again in one
    pass instead: a window's part is missing, a row a part stored is gone (another writer
    restated the day meanwhile), an id came in two windows (only one pass over the day can
    settle which copy is kept), some windows wrote while others staged, or staged rows are
    gone.

    Returns:
        The day's manifest, as `extract_and_store` returns it, plus `from_windows`.
    """
    config = config or load_config(settings.config_path)
    store = CouchStore(settings)
    run = windows[0]["run"] if windows else ""
    bounds = [(window["start_ms"], window["end_ms"]) for window in windows]
    manifest, aggregates = _day_docs(store, day)
    found = read_parts(store, day, bounds, run) if windows else None
    if found is None and run and (manifest or {}).get("refused", {}).get("run") == run:
        return {**content_of(manifest), "written": 0, "removed": 0, "from_windows": True}
    if found is None and run and closed_by(store, day, run):  # a retry after the close
        if is_done(manifest, aggregates, config):
            log.info("%s: already closed by this run (its parts are gone); left as it is", day)
            return {**content_of(manifest), "written": 0, "removed": 0,
                    "aggregated": aggregates["quality"]["aggregated"], "from_windows": True}
    parts = [Part(snapshot, *decode_frames(day.isoformat(), encoded, count_columns(config)),
                  encoded["skipped_empty_stream"], encoded["aggregated"])
             for snapshot, encoded in found or []]
    present_raw, present_quarantined = _stored_ids(store, day)
    stagings = [Staging(store, day, run, part.snapshot.staging, part.snapshot.staged_rows)
                for part in parts if part.snapshot.staging]
    fresh = not stagings
    problem = ("a window's part is missing" if found is None
               else _overlap(parts) or _mixed(parts, stagings)
               or ("" if stagings else _gone(parts, present_raw, present_quarantined)))
    if problem:
        log.warning("%s: %s; extracting the day in one pass", day, problem)
        return {**extract_and_store(day, settings, config, allow_removals),
                "from_windows": False}
    manifest = _close(store, day, parts, present_raw, present_quarantined, stagings, fresh,
                      guard_of(settings, allow_removals), run, config)
    if "refused" not in manifest:  # a refused day's staged rows stay for a retry of the close
        drop_staging(store, day, run)
        mark_closed(store, day, run)
    log.info("closed %s from %d windows: %s", day, len(parts), manifest)
    return {**manifest, "from_windows": True}


def close_days(windows: list[dict], settings: Settings, config: Config | None = None,
               allow_removals: bool = False) -> list[dict]:
    """Close every day of a plan (`close_day`), then drop their parts; the days' manifests.

    Parts are dropped only once every day is closed, so a retry after a failure half-way closes
    the days already done again from their parts, cheaply, instead of re-extracting them.
    """
    config = config or load_config(settings.config_path)
    days = sorted({window["day"] for window in windows})
    manifests = [close_day(date.fromisoformat(day), [w for w in windows if w["day"] == day],
                           settings, config, allow_removals) for day in days]
    store = CouchStore(settings)
    run = windows[0]["run"] if windows else None
    for day in days:
        delete_parts(store, date.fromisoformat(day), keep_closed=run)
    return manifests


def _gone(parts: list[Part], present_raw: set[str], present_quarantined: set[str]) -> str:
    """Why the parts no longer describe the stored day ('' when they do): a row they stored
    is gone, so someone else (a one-pass store) restated the day after them."""
    for part in parts:
        if not (part.snapshot.raw_ids <= present_raw
                and part.snapshot.quarantine_ids <= present_quarantined):
            return "the stored day changed after its windows were stored"
    return ""


def _mixed(parts: list[Part], stagings: list[Staging]) -> str:
    """Why the parts cannot be closed as they are ('' when they can): some windows wrote
    directly and others staged (another run closed the day while they ran), or rows a window
    staged are gone (another run of the day dropped them)."""
    if stagings and len(stagings) != len(parts):
        return "the day was closed by another run while its windows ran"
    if not all(staging.complete() for staging in stagings):
        return "rows a window staged are gone"
    return ""


def _overlap(parts: list[Part]) -> str:
    """Why the window parts cannot be combined as they are ('' when they can)."""
    sets = [part.snapshot.raw_ids | part.snapshot.quarantine_ids for part in parts]
    if sum(map(len, sets)) != len(set().union(*sets)):  # an id may change class
        return "an id came in two windows"
    return ""


@names_the_day
def reaggregate_day(day: date, settings: Settings, config: Config | None = None) -> dict | None:
    """Recompute UTC `day`'s aggregates and manifest counts from its raw and quarantine
    documents in CouchDB alone (no request to KPIggybank).

    The manifest keeps what only the extract knew (`duplicate`; `fetched` is then stored +
    rejected + duplicate), a refusal it records, and its `complete` flag (an interrupted
    extract stays to be redone).

    Returns:
        The day's data-quality counts; None when nothing is stored for the day.
    """
    config = config or load_config(settings.config_path)
    store = CouchStore(settings)
    old = store.get(MANIFESTS, day.isoformat())
    quarantined = list(store.day_docs(QUARANTINE, day))
    groups, histogram, skipped, aggregated = aggregate_stored_day(store, day, config)
    stored = aggregated + skipped
    if old is None and not stored and not quarantined:
        return None
    reasons: dict[str, int] = {}
    for doc in quarantined:
        reasons[doc["reason"]] = reasons.get(doc["reason"], 0) + 1
    duplicate = int((old or {}).get("duplicate", 0))
    manifest = {
        **({"refused": old["refused"]} if old and "refused" in old else {}),
        "_id": day.isoformat(), "day": day.isoformat(),
        "fetched": stored + len(quarantined) + duplicate, "stored": stored,
        "duplicate": duplicate, "skipped_empty_stream": skipped,
        "rejected_invalid": len(quarantined), "rejected_reasons": dict(sorted(reasons.items())),
        "complete": bool(old.get("complete", True)) if old else False,
    }
    quality = day_quality(manifest, skipped, aggregated)
    put_aggregates(store, aggregates_document(day, groups, histogram, config, quality))
    store.upsert(MANIFESTS, [manifest])
    log.info("re-aggregated %s from CouchDB: %s", day, quality)
    return quality


@names_the_day
def restore_removed_day(day: date, settings: Settings,
                        config: Config | None = None) -> dict:
    """Put back the rows restatements removed from UTC `day` (`<prefix>_removed`), then
    re-aggregate the day from CouchDB. Returns `restored`, `kept` (a newer row of the same id
    is stored) and the day's data-quality counts."""
    store = CouchStore(settings)
    store.require_databases()
    restored, kept = restore_removed(store, day)
    quality = reaggregate_day(day, settings, config) if restored else None
    return {"day": day.isoformat(), "restored": restored, "kept": kept, "quality": quality}


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


def _day_docs(store: CouchStore, day: date) -> tuple[dict | None, dict | None]:
    """The day's manifest and aggregates documents (None when missing)."""
    return store.get(MANIFESTS, day.isoformat()), store.get(AGGREGATES, day.isoformat())


def is_done(manifest: dict | None, aggregates: dict | None, config: Config) -> bool:
    """A complete manifest and aggregates, made with this configuration, that account for every
    stored blob (manifests from before the `complete` flag existed count as complete)."""
    if (manifest is None or aggregates is None or not manifest.get("complete", True)
            or "stored" not in manifest):
        return False
    if not made_with(aggregates, config):
        return False
    expected = manifest.get("stored", 0) - manifest.get("skipped_empty_stream", 0)
    return aggregates["quality"].get("aggregated") == expected


def day_is_done(day: date, settings: Settings, config: Config | None = None) -> bool:
    """Whether the stored day is done (`is_done`): nothing to redo."""
    return is_done(*_day_docs(CouchStore(settings), day),
                   config or load_config(settings.config_path))


def confirm_aggregated(day: date, settings: Settings, config: Config | None = None) -> dict:
    """The day's data-quality counts, re-aggregating from CouchDB only if its aggregates are
    missing or do not account for the stored blobs."""
    config = config or load_config(settings.config_path)
    manifest, aggregates = _day_docs(CouchStore(settings), day)
    if is_done(manifest, aggregates, config):
        return aggregates["quality"]
    if manifest is not None and not manifest.get("complete", True):
        msg = f"storing {day} was interrupted half-way: extract it again (retry the run)"
        raise PipelineError(msg)
    log.warning("aggregates of %s missing or stale: re-aggregating from CouchDB", day)
    quality = reaggregate_day(day, settings, config)
    if quality is None:
        msg = f"day {day} has nothing stored in CouchDB: extract it first"
        raise PipelineError(msg)
    return quality
