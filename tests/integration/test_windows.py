"""A day extracted as windows (the DAG's mapped tasks, possibly at once on several workers) and
closed from their parts equals the same day extracted in one pass: same documents, same files."""

from __future__ import annotations

import copy
import dataclasses
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from kpi import source
from kpi.couch import (
    AGGREGATES,
    DATABASES,
    MANIFESTS,
    PARTS,
    REMOVED,
    CouchStore,
    content_of,
)
from kpi.days import utc_day_of
from kpi.ingest import (
    close_day,
    close_days,
    day_is_done,
    extract_and_store,
    extract_window,
    plan_windows,
)
from kpi.publish import build_site
from kpi.source import blob_of, check_row
from tests.integration.test_restatement import changed_source

pytestmark = pytest.mark.integration
DAYS = [date(2026, 10, 2), date(2026, 10, 3)]
BUILT = datetime(2026, 10, 4, 6, 0, tzinfo=UTC)
FALLBACK = "extracting the day in one pass"


def one_pass_settings(settings, tmp_path):
    """Other databases (cleaned up with the test's prefix) and another site folder."""
    return dataclasses.replace(settings, db_prefix=f"{settings.db_prefix}_one",
                               site_dir=tmp_path / "one_pass_site")


def windowed(days, settings, run, skip=()):
    """The DAG's path without Airflow: plan, extract every window at once (as workers would),
    close each day. `skip`: indexes of windows whose task never ran."""
    plan = plan_windows(days, settings, run)
    assert len(plan) == len(days) * 4  # KPI_FETCH_CHUNK_HOURS=6: four windows a day
    todo = [window for n, window in enumerate(plan) if n not in skip]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda window: extract_window(window, settings), todo))
    return close_days(plan, settings)


def one_pass(days, settings):
    CouchStore(settings).ensure_databases()
    return [extract_and_store(day, settings) for day in days]


def documents(settings):
    """Every document of every database, without revisions; of the parts, not the records
    that a run closed a day (`kpi.parts.mark_closed`), which only the windowed path leaves,
    nor the days' digest records (`kpi.snapshot.write_record`), which only a one pass leaves."""
    store = CouchStore(settings)
    return {kind: [content_of(doc) for doc in store.iter_range(kind, "", None)
                   if not (kind == PARTS and doc["_id"].endswith((":closed", "~digests")))]
            for kind in DATABASES}


HISTORY = ("archive/", "data/changes.csv", "data/changes.json", "changes.html")


def files(site: Path, history: bool = False) -> dict[str, bytes]:
    """The site's files by path. Without `history`, not those made from the site folder's
    previous build (`kpi.changes`: the changes since it and the archive of the last builds),
    so sites built from the same data through different histories compare equal."""
    found = {str(path.relative_to(site)): path for path in sorted(site.rglob("*"))
             if path.is_file()}
    return {name: path.read_bytes() for name, path in found.items()
            if history or not name.startswith(HISTORY)}


def assert_same(windowed_settings, one_pass_settings):
    got, want = documents(windowed_settings), documents(one_pass_settings)
    assert got[PARTS] == [] and want[PARTS] == []  # closed days leave no parts
    for kind in DATABASES:  # the removed rows depend on the day's history, not on the path
        if kind != REMOVED:
            assert got[kind] == want[kind], kind
    assert got["raw"] and got["aggregates"]
    site = files(build_site(windowed_settings, now=BUILT))
    assert site == files(build_site(one_pass_settings, now=BUILT))
    assert "data/new_user.csv" in site


@pytest.mark.parametrize("page_rows", [None, 3])
def test_windows_extracted_at_once_equal_one_pass(settings, tmp_path, caplog, monkeypatch,
                                                  page_rows):
    """Whatever pages the one pass fetches in (3 rows: a page of 10 minutes each)."""
    pages: list[tuple[int, int]] = []
    fetch = source.DayPages.fetch
    monkeypatch.setattr(source.DayPages, "fetch",
                        lambda self, client, page: pages.append(page) or fetch(self, client, page))
    if page_rows:
        monkeypatch.setattr(source, "PAGE_ROWS", page_rows)
    other = one_pass_settings(settings, tmp_path)
    with caplog.at_level(logging.WARNING, logger="kpi.ingest"):
        manifests = windowed(DAYS, settings, "run-1")
    assert FALLBACK not in caplog.text  # closed from the parts, not by a second pass
    assert [m["from_windows"] for m in manifests] == [True, True]
    pages.clear()  # (the mapped windows fetch in pages too) the one pass's pages:
    passes = one_pass(DAYS, other)
    assert [m["stored"] for m in manifests] == [m["stored"] for m in passes]
    assert_same(settings, other)
    if page_rows:  # many small pages
        assert len(pages) >= 3 * 5 * len(DAYS)
    else:  # a small day: its first hour, 2 hours, 3 (its first window's end), 3 windows
        assert len(pages) == 6 * len(DAYS)


def test_restating_by_windows_equals_one_pass_over_the_new_rows(settings, fake_app, tmp_path,
                                                                caplog):
    windowed(DAYS, settings, "run-1")
    source = fake_app.state.store
    source.range = changed_source(source.range)  # 2026-10-02 loses, changes and gains rows
    with caplog.at_level(logging.WARNING, logger="kpi.ingest"):
        restated = windowed(DAYS, settings, "run-2")
    assert FALLBACK not in caplog.text and all(m["from_windows"] for m in restated)
    assert restated[0]["removed"] > 0
    other = one_pass_settings(settings, tmp_path)
    one_pass(DAYS, other)
    assert_same(settings, other)


def test_an_id_in_two_windows_is_settled_by_one_pass(settings, fake_app, tmp_path, caplog):
    source = fake_app.state.store
    original = source.range
    day_rows = [r for r in original(None, None) if utc_day_of(r["key"]) == DAYS[0]]
    early, late = day_rows[0], day_rows[-1]  # first and last window of the day
    twin = copy.deepcopy(late)
    twin["id"] = twin["value"]["_id"] = early["id"]  # same id, other content, other window

    def with_twin(start, end):
        rows = original(start, end)
        lo, hi = -1 if start is None else start, float("inf") if end is None else end
        return rows + ([twin] if lo <= twin["key"] <= hi else [])

    source.range = with_twin
    with caplog.at_level(logging.WARNING, logger="kpi.ingest"):
        windowed(DAYS, settings, "run-1")
    assert "an id came in two windows" in caplog.text
    other = one_pass_settings(settings, tmp_path)
    one_pass(DAYS, other)
    assert_same(settings, other)
    raw = {doc["kpiggybank_id"]: doc["blob"] for doc in documents(settings)["raw"]}
    assert raw[early["id"]] == blob_of(twin)  # the last delivery of an id wins (SPEC D12)


def test_a_window_that_never_ran_is_settled_by_one_pass(settings, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="kpi.ingest"):
        windowed(DAYS, settings, "run-1", skip={5})
    assert "a window's part is missing" in caplog.text
    other = one_pass_settings(settings, tmp_path)
    one_pass(DAYS, other)
    assert_same(settings, other)


def test_parts_of_another_run_are_not_used(settings, tmp_path, caplog):
    plan = plan_windows(DAYS[:1], settings, "run-1")
    for window in plan:
        extract_window(window, settings)
    stale = [{**window, "run": "run-2"} for window in plan]
    with caplog.at_level(logging.WARNING, logger="kpi.ingest"):
        close_day(DAYS[0], stale, settings)
    assert "a window's part is missing" in caplog.text
    other = one_pass_settings(settings, tmp_path)
    one_pass(DAYS[:1], other)
    assert_same(settings, other)


def test_parts_older_than_the_stored_snapshot_are_never_used(settings, fake_app, tmp_path,
                                                             caplog):
    """A run's windows stored the day, its close failed; then the day was stored again in one
    pass from a changed source (a `kpi backfill`); closing the first run now would undo that.
    Storing a day drops its parts, so the close falls back to one pass of the source."""
    plan = plan_windows(DAYS[:1], settings, "run-1")
    for window in plan:
        extract_window(window, settings)
    source = fake_app.state.store
    source.range = changed_source(source.range)  # rows removed, changed and added
    extract_and_store(DAYS[0], settings)
    with caplog.at_level(logging.WARNING, logger="kpi.ingest"):
        manifest = close_day(DAYS[0], plan, settings)
    assert manifest["from_windows"] is False
    other = one_pass_settings(settings, tmp_path)
    one_pass(DAYS[:1], other)
    assert_same(settings, other)


def test_closing_again_after_a_failure_half_way_reuses_the_parts(settings, monkeypatch):
    """`close_days` drops the parts only at the end: a retry closes the first day again from
    its parts (nothing to write) instead of extracting it again."""
    plan = plan_windows(DAYS, settings, "run-1")
    for window in plan:
        extract_window(window, settings)
    real = close_day

    def second_day_fails(day, *args, **kwargs):
        if day == DAYS[1]:
            raise RuntimeError("worker lost")
        return real(day, *args, **kwargs)

    import kpi.ingest

    with monkeypatch.context() as patch:
        patch.setattr(kpi.ingest, "close_day", second_day_fails)
        with pytest.raises(RuntimeError, match="worker lost"):
            close_days(plan, settings)
    store = CouchStore(settings)
    closed = [store.get(kind, DAYS[0].isoformat())["_rev"] for kind in (MANIFESTS, AGGREGATES)]
    retried = close_days(plan, settings)
    assert [m["from_windows"] for m in retried] == [True, True]
    assert retried[0]["removed"] == 0  # the first day: nothing rewritten
    assert [store.get(kind, DAYS[0].isoformat())["_rev"]
            for kind in (MANIFESTS, AGGREGATES)] == closed
    assert all(day_is_done(day, settings) for day in DAYS)


@pytest.mark.parametrize("mode", ["windows", "one pass"])
def test_a_close_that_dies_before_its_aggregates_is_not_a_finished_day(settings, fake_app,
                                                                       monkeypatch, mode):
    """Rows changed, counts did not: if the aggregates are not written, the manifest must not
    say complete (it is written last)."""
    before = extract_and_store(DAYS[0], settings)
    source = fake_app.state.store
    original = source.range

    def same_counts_other_content(start, end):
        rows = original(start, end)
        ok = [n for n, r in enumerate(rows) if check_row(r).status == "ok"][:5]  # stay valid
        return [{**r, "value": {**r["value"], "event_stream": [["screen.rp_info", 1]]}}
                if n in ok else r for n, r in enumerate(rows)]

    source.range = same_counts_other_content
    plan = plan_windows(DAYS[:1], settings, "run-1")
    if mode == "windows":
        for window in plan:
            extract_window(window, settings)
    real_upsert = CouchStore.upsert

    def aggregates_lost(self, kind, docs, *args, **kwargs):
        if kind == AGGREGATES:
            raise RuntimeError("CouchDB went away")
        return real_upsert(self, kind, docs, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(CouchStore, "upsert", aggregates_lost)
        with pytest.raises(RuntimeError, match="went away"):
            if mode == "windows":
                close_day(DAYS[0], plan, settings)
            else:
                extract_and_store(DAYS[0], settings)
    after = CouchStore(settings).get(MANIFESTS, DAYS[0].isoformat())
    counts = ("fetched", "stored", "skipped_empty_stream", "rejected_invalid")
    assert [after[k] for k in counts] == [before[k] for k in counts]  # only content changed
    assert not day_is_done(DAYS[0], settings)


def test_a_one_pass_store_running_alongside_the_windows_wins(settings, fake_app, tmp_path,
                                                             monkeypatch, caplog):
    """A `kpi backfill` that started before the windows wrote their parts (so it found none to
    drop) restates the day from a source that lost rows; the windows' close must not undo it."""
    plan = plan_windows(DAYS[:1], settings, "run-1")
    for window in plan:
        extract_window(window, settings)
    source = fake_app.state.store
    source.range = changed_source(source.range)
    import kpi.ingest

    with monkeypatch.context() as patch:  # as if the parts did not exist yet when it began
        patch.setattr(kpi.ingest, "delete_parts", lambda store, day: 0)
        assert extract_and_store(DAYS[0], settings)["removed"] > 0
    with caplog.at_level(logging.WARNING, logger="kpi.ingest"):
        assert close_day(DAYS[0], plan, settings)["from_windows"] is False
    assert "changed after its windows were stored" in caplog.text
    other = one_pass_settings(settings, tmp_path)
    one_pass(DAYS[:1], other)
    assert_same(settings, other)


def test_a_newer_run_drops_the_parts_of_an_older_one(settings, tmp_path, caplog):
    """Two runs left parts (both failed to close); the newer one's windows (here with other
    window sizes) drop the older run's, so closing the older run later falls back."""
    older = plan_windows(DAYS[:1], settings, "run-1")
    for window in older:
        extract_window(window, settings)
    wider = dataclasses.replace(settings, fetch_chunk_hours=12)
    newer = plan_windows(DAYS[:1], wider, "run-2")
    assert len(newer) == 2
    extract_window(newer[0], wider)
    with caplog.at_level(logging.WARNING, logger="kpi.ingest"):
        assert close_day(DAYS[0], older, settings)["from_windows"] is False
    assert "part is missing" in caplog.text
