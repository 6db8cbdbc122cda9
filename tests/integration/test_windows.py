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

from kpi.pipeline import build_site, close_day, extract_and_store, extract_window, plan_windows
from kpi.source import utc_day_of
from kpi.store import DATABASES, HIGH_KEY, PARTS, CouchStore, content_of
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
    return [close_day(day, [w for w in plan if w["day"] == day.isoformat()], settings)
            for day in days]


def one_pass(days, settings):
    CouchStore(settings).ensure_databases()
    return [extract_and_store(day, settings) for day in days]


def documents(settings):
    """Every document of every database, without revisions."""
    store = CouchStore(settings)
    return {kind: [content_of(doc) for doc in store.iter_range(kind, "", HIGH_KEY)]
            for kind in DATABASES}


def files(site: Path) -> dict[str, bytes]:
    return {str(path.relative_to(site)): path.read_bytes()
            for path in sorted(site.rglob("*")) if path.is_file()}


def assert_same(windowed_settings, one_pass_settings):
    got, want = documents(windowed_settings), documents(one_pass_settings)
    assert got[PARTS] == [] and want[PARTS] == []  # closed days leave no parts
    for kind in DATABASES:
        assert got[kind] == want[kind], kind
    assert got["raw"] and got["aggregates"]
    site = files(build_site(windowed_settings, now=BUILT))
    assert site == files(build_site(one_pass_settings, now=BUILT))
    assert "data/new_user.csv" in site


def test_windows_extracted_at_once_equal_one_pass(settings, tmp_path, caplog):
    other = one_pass_settings(settings, tmp_path)
    with caplog.at_level(logging.WARNING, logger="kpi.pipeline"):
        manifests = windowed(DAYS, settings, "run-1")
    assert FALLBACK not in caplog.text  # closed from the parts, not by a second pass
    assert [m["stored"] for m in manifests] == [m["stored"] for m in one_pass(DAYS, other)]
    assert_same(settings, other)


def test_restating_by_windows_equals_one_pass_over_the_new_rows(settings, fake_app, tmp_path,
                                                                caplog):
    windowed(DAYS, settings, "run-1")
    source = fake_app.state.store
    source.range = changed_source(source.range)  # 2026-10-02 loses, changes and gains rows
    with caplog.at_level(logging.WARNING, logger="kpi.pipeline"):
        restated = windowed(DAYS, settings, "run-2")
    assert FALLBACK not in caplog.text
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
    with caplog.at_level(logging.WARNING, logger="kpi.pipeline"):
        windowed(DAYS, settings, "run-1")
    assert "an id came in two windows" in caplog.text
    other = one_pass_settings(settings, tmp_path)
    one_pass(DAYS, other)
    assert_same(settings, other)
    quarantined = documents(settings)["quarantine"]
    assert any(doc["reason"] == "id delivered twice with different content"
               for doc in quarantined)


def test_a_window_that_never_ran_is_settled_by_one_pass(settings, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="kpi.pipeline"):
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
    with caplog.at_level(logging.WARNING, logger="kpi.pipeline"):
        close_day(DAYS[0], stale, settings)
    assert "a window's part is missing" in caplog.text
    other = one_pass_settings(settings, tmp_path)
    one_pass(DAYS[:1], other)
    assert_same(settings, other)
