"""The DAG imports cleanly, is wired as documented, and runs one day end to end."""

from __future__ import annotations

import pendulum
import pytest

from kpi.store import AGGREGATES, MANIFESTS, CouchStore

pytestmark = pytest.mark.dags


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert "kpi_nightly" in dagbag.dags


def test_task_graph_retries_and_schedule(dagbag):
    dag = dagbag.dags["kpi_nightly"]
    assert set(dag.task_dict) == {"extract_and_store", "aggregate", "publish_site"}
    assert dag.task_dict["extract_and_store"].downstream_task_ids == {"aggregate"}
    assert dag.task_dict["aggregate"].downstream_task_ids == {"publish_site"}
    assert dag.task_dict["publish_site"].downstream_task_ids == set()
    assert all(task.retries >= 2 for task in dag.tasks)
    assert dag.catchup is True
    assert "kpi" in dag.tags
    assert str(dag.timezone) == "UTC"


def test_dag_test_processes_the_day_before_the_logical_date(
    airflow_db, dagbag, settings, monkeypatch
):
    for env, value in {
        "KPI_SOURCE_URL": settings.source_url,
        "KPI_COUCHDB_URL": settings.couchdb_url,
        "KPI_DB_PREFIX": settings.db_prefix,
        "KPI_SITE_DIR": str(settings.site_dir),
        "KPI_RETRY_BACKOFF": "0.01",
    }.items():
        monkeypatch.setenv(env, value)
    dag = dagbag.dags["kpi_nightly"]
    run = dag.test(logical_date=pendulum.datetime(2026, 10, 3, tz="UTC"))
    assert run.state == "success"
    store = CouchStore(settings)
    assert store.get(MANIFESTS, "2026-10-02") is not None
    assert store.get(AGGREGATES, "2026-10-02")["quality"]["aggregated"] > 0
    assert store.get(AGGREGATES, "2026-10-03") is None
    manifest = (settings.site_dir / "data" / "manifest.json").read_text()
    assert '"last_day": "2026-10-02"' in manifest
