"""Runs that overlap end as one run: two backfills of the same days at once, and the nightly DAG's
path (windows, then closing the days) during a backfill, leave the same documents in every
database and the same site files as a single backfill."""

from __future__ import annotations

import dataclasses
import threading
from datetime import UTC, date, datetime

import pytest

from kpi.backfill import backfill
from kpi.couch import PARTS
from kpi.publish import build_site
from tests.integration.test_windows import documents, files, windowed

pytestmark = pytest.mark.integration
START, END = date(2026, 10, 1), date(2026, 10, 3)
DAYS = [date(2026, 10, 1), date(2026, 10, 2), date(2026, 10, 3)]
BUILT = datetime(2026, 10, 4, 6, 0, tzinfo=UTC)


@pytest.fixture
def single_run(settings, tmp_path):
    """What one backfill leaves (other databases, another site folder)."""
    alone = dataclasses.replace(settings, db_prefix=f"{settings.db_prefix}_alone",
                                site_dir=tmp_path / "alone" / "site")
    backfill(START, END, alone, progress=False)
    build_site(alone, now=BUILT)
    return documents(alone), files(alone.site_dir)


def at_once(*calls):
    """Run the calls in threads started together; re-raise the first failure."""
    errors: list[BaseException] = []
    start = threading.Barrier(len(calls))

    def run(call):
        start.wait()
        try:
            call()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def assert_as_one_run(settings, single_run):
    want_documents, want_files = single_run
    got = documents(settings)
    assert got[PARTS] == []
    assert got == want_documents
    build_site(settings, now=BUILT)
    assert files(settings.site_dir) == want_files


@pytest.mark.parametrize("round_", [1, 2])
def test_two_backfills_of_the_same_days_at_once_end_as_one(settings, single_run, round_):
    at_once(lambda: backfill(START, END, settings, progress=False),
            lambda: backfill(START, END, settings, progress=False))
    assert_as_one_run(settings, single_run)


@pytest.mark.parametrize("round_", [1, 2])
def test_a_nightly_run_during_a_backfill_ends_as_one(settings, single_run, round_):
    at_once(lambda: backfill(START, END, settings, progress=False),
            lambda: windowed(DAYS, settings, f"scheduled__2026-10-04T00:00:00+00:00#{round_}"))
    assert_as_one_run(settings, single_run)
