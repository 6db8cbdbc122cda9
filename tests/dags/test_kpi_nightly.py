"""The DAGs import cleanly and cheaply, are wired as documented, and run end to end."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from datetime import date, timedelta

import pendulum
import pytest

from kpi.couch import AGGREGATES, MANIFESTS, RAW, REMOVED, CouchStore
from tests.dags.conftest import DAGS_FOLDER

pytestmark = pytest.mark.dags


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert {"kpi_nightly", "kpi_publish"} <= set(dagbag.dags)


def test_dag_files_import_nothing_heavy():
    """Parsing a DAG file imports Airflow and the standard library, not the pipeline's stack."""
    code = (
        "import sys, runpy\n"
        f"for name in ('kpi_nightly', 'kpi_publish'): runpy.run_path('{DAGS_FOLDER}/' + name"
        " + '.py')\n"
        "heavy = {'pandas', 'numpy', 'altair', 'vl_convert'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
        "print(sorted(m for m in sys.modules if m == 'kpi' or m.startswith('kpi.')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    heavy, ours = result.stdout.strip().splitlines()[-2:]
    assert heavy == "[]"
    assert ours == str(["kpi", "kpi.airflow", "kpi.days", "kpi.settings"])


def test_nightly_graph_retries_timeouts_and_schedule(dagbag):
    dag = dagbag.dags["kpi_nightly"]
    assert set(dag.task_dict) == {"plan", "extract_and_store", "aggregate", "check_anomalies",
                                  "check_restatements"}
    assert dag.task_dict["plan"].downstream_task_ids == {"extract_and_store", "aggregate"}
    assert dag.task_dict["extract_and_store"].downstream_task_ids == {"aggregate"}
    assert dag.task_dict["aggregate"].downstream_task_ids == {"check_anomalies",
                                                              "check_restatements"}
    # extract_and_store is mapped over the plan's windows, a bounded number at once
    assert type(dag.task_dict["extract_and_store"]).__name__.endswith("MappedOperator")
    assert dag.task_dict["extract_and_store"].max_active_tis_per_dagrun == 4
    assert [a.name for a in dag.task_dict["aggregate"].outlets] == ["kpi_aggregates"]
    for task in dag.tasks:
        assert task.retries >= 2 and task.retry_exponential_backoff
        assert task.execution_timeout == timedelta(minutes=120)
        assert task.on_failure_callback
    assert dag.catchup is True and dag.max_active_runs == 1
    assert "kpi" in dag.tags
    assert dag.timetable.expression == "0 0 * * *" and str(dag.timezone) == "UTC"


def test_publish_runs_on_the_aggregates_asset(dagbag):
    dag = dagbag.dags["kpi_publish"]
    assert set(dag.task_dict) == {"publish_site"}
    assert "kpi_aggregates" in str(dag.timetable.asset_condition)
    assert dag.task_dict["publish_site"].queue == "default"
    assert dag.max_active_runs == 1 and dag.catchup is False


def _environment(monkeypatch, settings, **extra):
    for env, value in {
        "KPI_SOURCE_URL": settings.source_url,
        "KPI_COUCHDB_URL": settings.couchdb_url,
        "KPI_DB_PREFIX": settings.db_prefix,
        "KPI_SITE_DIR": str(settings.site_dir),
        "KPI_RETRY_BACKOFF": "0.01",
        **extra,
    }.items():
        monkeypatch.setenv(env, value)


def test_a_nightly_run_processes_the_day_before_its_logical_date(
    airflow_db, dagbag, settings, monkeypatch
):
    _environment(monkeypatch, settings, KPI_RESTATE_DAYS="0")
    run = dagbag.dags["kpi_nightly"].test(logical_date=pendulum.datetime(2026, 10, 3, tz="UTC"))
    assert run.state == "success"
    store = CouchStore(settings)
    assert store.get(MANIFESTS, "2026-10-02") is not None
    assert store.get(AGGREGATES, "2026-10-02")["quality"]["aggregated"] > 0
    for other in ("2026-10-01", "2026-10-03"):
        assert store.get(MANIFESTS, other) is None


def test_a_nightly_run_restates_the_days_before_and_publish_builds_the_site(
    airflow_db, dagbag, settings, monkeypatch
):
    _environment(monkeypatch, settings, KPI_RESTATE_DAYS="1")
    run = dagbag.dags["kpi_nightly"].test(logical_date=pendulum.datetime(2026, 10, 3, tz="UTC"))
    assert run.state == "success"
    store = CouchStore(settings)
    assert [d for d in ("2026-09-30", "2026-10-01", "2026-10-02")
            if store.get(AGGREGATES, d)] == ["2026-10-01", "2026-10-02"]
    published = dagbag.dags["kpi_publish"].test()
    assert published.state == "success"
    manifest = (settings.site_dir / "data" / "manifest.json").read_text()
    assert '"first_day": "2026-10-01"' in manifest and '"last_day": "2026-10-02"' in manifest


NOTIFIED: list[list[dict]] = []


def notify(flags: list[dict], context: dict) -> None:
    """A `KPI_ANOMALY_CALLBACK`: what the check handed over, and for which run."""
    NOTIFIED.append([{**flag, "run_id": context["run_id"]} for flag in flags])


def broken_notifier(flags: list[dict], context: dict) -> None:
    raise RuntimeError("the chat room is down")


@pytest.mark.parametrize("hook", ["notify", "broken_notifier"])
def test_a_run_whose_own_day_lost_most_of_its_blobs_flags_it_and_calls_the_notifier(
    airflow_db, dagbag, settings, monkeypatch, tmp_path, hook
):
    """Three weeks of history, then a night whose day lost nine tenths of its blobs: the
    check_anomalies task flags it low and calls the configured notifier, and the run still
    succeeds (also when the notifier fails)."""
    from fake_source import create_app
    from fake_source.server import running_in_thread
    from kpi.backfill import backfill

    last = date(2026, 10, 22)
    app = create_app(seed=3, per_day=300, days=22, last_day=last, bad_rate=0.0)
    whole = app.state.store.range

    def outage(start, end):  # the night's own day: only one row in ten arrived
        rows = whole(start, end)
        return [row for n, row in enumerate(rows)
                if row["value"]["timestamp"] < 1792627200000 or n % 10 == 0]

    app.state.store.range = outage
    with running_in_thread(app) as base:
        here = dataclasses.replace(settings, source_url=f"{base}/wsapi/interaction_data")
        backfill(last - timedelta(days=21), last - timedelta(days=1), here, progress=False)
        _environment(monkeypatch, here, KPI_RESTATE_DAYS="0",
                     KPI_ANOMALY_CALLBACK=f"{__name__}:{hook}")
        NOTIFIED.clear()
        run = dagbag.dags["kpi_nightly"].test(
            logical_date=pendulum.datetime(2026, 10, 23, tz="UTC"))
    assert run.state == "success"
    [check] = [ti for ti in run.get_task_instances() if ti.task_id == "check_anomalies"]
    flags = check.xcom_pull(task_ids="check_anomalies")
    total = [f for f in flags if f["report"] == "assertions" and f["segmentation"] == "Total"]
    assert [(f["date"], f["direction"]) for f in total] == [("2026-10-22", "low")]
    if hook == "notify":
        [notified] = NOTIFIED
        assert {f["date"] for f in notified} == {"2026-10-22"} and notified[0]["run_id"]
        assert any(f["report"] == "assertions" for f in notified)
    else:
        assert NOTIFIED == []


FAILURES: list[dict] = []


def record_failure(context: dict) -> None:
    """A `KPI_FAILURE_CALLBACK`: which task failed, with which error."""
    FAILURES.append({"task": context["task_instance"].task_id,
                     "error": str(context.get("exception"))})


def test_a_refused_restatement_fails_the_run_after_the_other_days_are_closed(
    airflow_db, dagbag, settings, monkeypatch, fake_app
):
    """The source lost all of 2026-10-01 (stored before) and gained a row on 2026-10-02: the
    run closes 2026-10-02, leaves 2026-10-01 as it was, `aggregate` succeeds (the Asset
    publishes both days and the refusal), and `check_restatements` fails at once (no retry),
    so the failure callback fires. Triggered with `allow_removals`, it applies it."""
    from kpi.backfill import backfill

    backfill(date(2026, 10, 1), date(2026, 10, 2), settings, progress=False)
    store = CouchStore(settings)
    kept = {doc["_id"]: doc["_rev"] for doc in store.day_docs(RAW, date(2026, 10, 1))}
    source = fake_app.state.store
    whole = source.range
    late = next(r for r in whole(None, None) if r["key"] >= 1790899200000)  # on 2026-10-02
    late = {**late, "id": "late-arrival", "value": {**late["value"], "_id": "late-arrival"}}

    def changed(start, end):
        rows = [r for r in whole(start, end) if r["key"] >= 1790899200000]  # 10-01 lost
        return rows + ([late] if start <= late["key"] <= end else [])

    source.range = changed
    _environment(monkeypatch, settings, KPI_RESTATE_DAYS="1",
                 KPI_FAILURE_CALLBACK=f"{__name__}:record_failure")
    FAILURES.clear()
    dag = dagbag.dags["kpi_nightly"]
    run = dag.test(logical_date=pendulum.datetime(2026, 10, 3, tz="UTC"))
    assert run.state == "failed"
    states = {ti.task_id: ti for ti in run.get_task_instances()}
    assert states["aggregate"].state == "success"
    check = states["check_restatements"]
    assert check.state == "failed" and check.try_number == 1  # no retry
    [failure] = FAILURES
    assert failure["task"] == "check_restatements"
    assert "2026-10-01: restatement refused" in failure["error"]
    assert "allow_removals" in failure["error"]
    assert {d["_id"]: d["_rev"] for d in store.day_docs(RAW, date(2026, 10, 1))} == kept
    assert store.get(RAW, "2026-10-02:late-arrival") is not None  # the other day is closed
    assert store.get(MANIFESTS, "2026-10-02")["complete"] is True
    published = dagbag.dags["kpi_publish"].test()  # what the Asset update triggers
    assert published.state == "success"
    refusals = (settings.site_dir / "data" / "refusals.csv").read_text()
    assert refusals.splitlines()[1].startswith("2026-10-01,")

    FAILURES.clear()
    run = dag.test(logical_date=pendulum.datetime(2026, 10, 3, tz="UTC"),
                   run_conf={"allow_removals": True})
    assert run.state == "success" and FAILURES == []
    assert store.day_ids(RAW, date(2026, 10, 1)) == set()
    assert len(store.day_ids(REMOVED, date(2026, 10, 1))) >= len(kept)
