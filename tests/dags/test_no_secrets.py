"""Passwords given to the DAGs (in `KPI_*` URLs, which Airflow does not mask, and in an Airflow
connection) never reach Airflow's metadata DB (XComs and every other table), the task logs
(dag.test runs the tasks in the test's process: its output and log records), also when a task
fails."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from pathlib import Path

import pendulum
import pytest

from tests.dags.conftest import DAGS_FOLDER
from tests.integration.test_secrets import (  # noqa: F401 (guarded_couchdb: a fixture)
    SECRET,
    assert_no_secret,
    guarded_couchdb,
    with_password,
)

pytestmark = pytest.mark.dags
CONNECTION_SECRET = f"{SECRET}:@/#x"  # characters a URL must percent-encode


@pytest.fixture(scope="module")
def own_dagbag():
    """DAGs of this module's own: their tasks' retries are turned off below."""
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_FOLDER))


def _environment(monkeypatch, settings, fake_source_url, couchdb_url):
    host, port = fake_source_url.removeprefix("http://").split(":")
    for env, value in {
        # CouchDB's password in the environment: Airflow knows nothing of it
        "KPI_COUCHDB_URL": with_password(couchdb_url, "admin"),
        "KPI_SOURCE_URL": with_password(settings.source_url, "kpi"),
        # KPIggybank's in a connection (it wins over KPI_SOURCE_URL)
        "AIRFLOW_CONN_KPIGGYBANK_DEFAULT": json.dumps({
            "conn_type": "http", "host": host, "port": int(port), "login": "kpi",
            "password": CONNECTION_SECRET}),
        "KPI_DB_PREFIX": settings.db_prefix,
        "KPI_SITE_DIR": str(settings.site_dir),
        "KPI_RETRY_ATTEMPTS": "2",
        "KPI_RETRY_BACKOFF": "0.01",
        "KPI_RESTATE_DAYS": "0",
    }.items():
        monkeypatch.setenv(env, value)


def assert_no_secrets(text: str | bytes, where: str) -> None:
    assert_no_secret(text, where)
    assert_no_secret(text, where, CONNECTION_SECRET)


def test_dag_runs_keep_passwords_out_of_airflow(
    airflow_db, own_dagbag, settings, fake_app, fake_source_url,
    guarded_couchdb,  # noqa: F811 (the fixture imported above)
    monkeypatch,
    caplog, capfd,
):
    caplog.set_level(logging.DEBUG)
    _environment(monkeypatch, settings, fake_source_url, guarded_couchdb)
    nightly, publish = own_dagbag.dags["kpi_nightly"], own_dagbag.dags["kpi_publish"]
    for task in [*nightly.tasks, *publish.tasks]:
        task.retries = 0  # a failure fails the run at once (dag.test would wait a minute)

    assert nightly.test(logical_date=pendulum.datetime(2026, 10, 3, tz="UTC")).state == "success"
    assert publish.test().state == "success"
    assert (settings.site_dir / "data" / "manifest.json").is_file()
    # a failing run: KPIggybank answers 500 until the retries run out
    fake_app.state.faults.script(*["500"] * 50)
    failed = nightly.test(logical_date=pendulum.datetime(2026, 10, 4, tz="UTC"))
    assert failed.state == "failed"

    home = Path(os.environ["AIRFLOW_HOME"])
    with sqlite3.connect(home / "airflow.db") as db:
        xcoms = db.execute("select dag_id, task_id, value from xcom "
                           "where dag_id in ('kpi_nightly', 'kpi_publish')").fetchall()
        assert {task for _, task, _ in xcoms} >= {"plan", "extract_and_store", "aggregate",
                                                 "publish_site"}
        for dag_id, task_id, value in xcoms:
            assert_no_secrets(str(value), f"the XCom of {dag_id}.{task_id}")
        for (table,) in db.execute("select name from sqlite_master where type = 'table'"):
            for row in db.execute(f'select * from "{table}"'):  # noqa: S608 (table names)
                assert_no_secrets(repr(row), f"Airflow's table {table}")

    # dag.test runs the tasks in this process: their task log is this process's output
    task_log = "".join(capfd.readouterr())
    assert "SourceError: extract of 2026-10-03 failed: KPIggybank http://kpi:***@" in task_log
    assert_no_secrets(task_log, "the task log")
    for path in (home / "logs").rglob("*"):
        if path.is_file():
            assert_no_secrets(path.read_bytes(), str(path))
    assert any(record.name.startswith("kpi.") for record in caplog.records)
    for record in caplog.records:
        assert_no_secrets(record.getMessage(), f"a log record of {record.name}")
    assert_no_secrets(caplog.text, "the captured log")
