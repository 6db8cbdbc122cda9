"""Airflow's own task retries, not only the HTTP client's: under `dag.test()` a task that fails
goes to `up_for_retry` and runs again once its retry delay has passed (Airflow 3.3's
`dag.test` loop schedules it like the scheduler does). The delay is shortened to 1 s here; the
DAG's retry count, backoff and failure hook are the shipped ones."""

from __future__ import annotations

from datetime import date, timedelta

import pendulum
import pytest

from kpi.couch import MANIFESTS, RAW, CouchStore
from tests.integration.exactness import assert_exact

pytestmark = pytest.mark.dags

DAY = date(2026, 10, 2)  # the day the run with logical date 2026-10-03 processes
FAILURES: list[str] = []


def record_failure(context: dict) -> None:
    """A `KPI_FAILURE_CALLBACK`: what failed for good, as the hook receives it."""
    FAILURES.append(f"{context['task_instance'].task_id}: {context.get('exception')}")


@pytest.fixture
def nightly(dagbag, settings, monkeypatch):
    """kpi_nightly against the test servers: each day one window per `hours`, 2 attempts per
    request, Airflow retry delay 1 s (2 retries, exponential backoff, as shipped)."""

    def configure(hours: int):
        for env, value in {
            "KPI_SOURCE_URL": settings.source_url, "KPI_COUCHDB_URL": settings.couchdb_url,
            "KPI_DB_PREFIX": settings.db_prefix, "KPI_SITE_DIR": str(settings.site_dir),
            "KPI_RESTATE_DAYS": "0", "KPI_RETRY_ATTEMPTS": "2", "KPI_RETRY_BACKOFF": "0.01",
            "KPI_FETCH_CHUNK_HOURS": str(hours),
            "KPI_FAILURE_CALLBACK": f"{__name__}:record_failure",
        }.items():
            monkeypatch.setenv(env, value)
        dag = dagbag.dags["kpi_nightly"]
        for task in dag.tasks:
            assert task.retries == 2 and task.retry_exponential_backoff
            monkeypatch.setattr(task, "retry_delay", timedelta(seconds=1))
        FAILURES.clear()
        return dag

    return configure


def _run(dag):
    run = dag.test(logical_date=pendulum.datetime(2026, 10, 3, tz="UTC"))
    tries = {(ti.task_id, ti.map_index): (ti.state, ti.try_number)
             for ti in run.get_task_instances()}
    return run, tries


def test_a_window_failing_past_the_client_retries_succeeds_on_the_task_retry(
    airflow_db, nightly, settings, fake_app
):
    dag = nightly(12)  # 2 windows
    fake_app.state.faults.script("500", "503")  # the first window's 2 attempts both fail
    run, tries = _run(dag)
    assert run.state == "success", tries
    # the window that asked first failed once and was retried by Airflow (dag.test may run
    # the mapped windows in either order)
    assert sorted([tries[("extract_and_store", 0)], tries[("extract_and_store", 1)]]) == [
        ("success", 1), ("success", 2)]
    assert tries[("plan", -1)] == tries[("aggregate", -1)] == ("success", 1)
    assert fake_app.state.faults.injected == ["500", "503"]
    assert FAILURES == []  # a retried failure is not a failure for good
    assert_exact(settings, fake_app, DAY)


def test_a_task_failing_every_try_fails_the_run_naming_the_day_and_a_rerun_repairs_it(
    airflow_db, nightly, settings, fake_app
):
    dag = nightly(24)  # 1 window: 3 tries × 2 attempts, all failing
    fake_app.state.faults.script(*["500", "garbage", "truncate"] * 2)
    run, tries = _run(dag)
    assert run.state == "failed"
    assert tries[("extract_and_store", 0)] == ("failed", 3)
    assert tries[("aggregate", -1)][0] == "upstream_failed"
    assert len(FAILURES) == 1 and FAILURES[0].startswith("extract_and_store")
    assert DAY.isoformat() in FAILURES[0]
    store = CouchStore(settings)
    manifest = store.get(MANIFESTS, DAY.isoformat())  # only the plan's in-progress mark
    assert manifest["complete"] is False and "stored" not in manifest
    assert store.day_ids(RAW, DAY) == set()  # nothing stored
    FAILURES.clear()
    run, tries = _run(dag)  # a new run of the same date: the source answers now
    assert run.state == "success"
    assert FAILURES == []
    assert_exact(settings, fake_app, DAY)
