"""Nightly KPI pipeline: extract → store → aggregate the UTC day that ended, and restate the
days before it. Publishing the site is `kpi_publish`, scheduled on the aggregates Asset.

Tasks: `plan` lists the fetch windows of the run's days (KPI_FETCH_CHUNK_HOURS each);
`extract_and_store` is mapped over them, so an executor with several workers spreads a large
day over them (at most KPI_EXTRACT_PARALLEL at once per run); `aggregate` combines each day's
windows (counts are additive, so the sum is exact), restates it and updates the Asset. A
restatement that would remove too many stored rows is refused (the day is left as it was):
`aggregate` closes the other days and updates the Asset (so the site shows them and the
refusal), then `check_restatements` fails the run, naming each refused day; trigger the DAG with
`allow_removals` to apply it.

Which days a run processes: the run with logical date D (at KPI_NIGHTLY_AT, UTC, daily)
processes the UTC day D − 1 (`kpi.airflow.processing_day`) and restates the KPI_RESTATE_DAYS
days before it (`kpi.airflow.nightly_days`); a backfill run and a scheduled run catching up
restate none (`kpi.airflow.run_restate_days`; the `restate_days` Param overrides). A manual
trigger without a logical date processes yesterday. Catchup starts at KPI_START_DATE: the first
run (logical date KPI_START_DATE + 1 day) processes KPI_START_DATE itself. Every task is one
call into `kpi.airflow`; logic and tests live in `kpi/`.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import CronTriggerTimetable, Param, dag, task

from kpi.airflow import (  # standard library only at import: cheap when Airflow parses this
    aggregates_asset,
    default_args,
    nightly_aggregate,
    nightly_check_anomalies,
    nightly_check_restatements,
    nightly_extract_window,
    nightly_plan,
)
from kpi.settings import Settings

SETTINGS = Settings.from_env()
START_DAY = SETTINGS.start_date
AGGREGATES = aggregates_asset()


@dag(
    dag_id="kpi_nightly",
    schedule=CronTriggerTimetable(SETTINGS.nightly_cron, timezone="UTC"),
    start_date=pendulum.datetime(START_DAY.year, START_DAY.month, START_DAY.day, tz="UTC")
    + timedelta(days=1),
    catchup=True,
    max_active_runs=1,  # runs restate overlapping days: one at a time
    default_args=default_args(SETTINGS),
    tags=["kpi", "persona"],
    doc_md=__doc__,
    params={
        "allow_removals": Param(
            False, type="boolean",
            description="Let this run's restatements remove any number of stored rows (a "
                        "restatement removing more than KPI_RESTATE_MAX_REMOVED of a day, or "
                        "all of it, is refused otherwise).",
        ),
        "restate_days": Param(
            None, type=["null", "integer"], minimum=0,
            description="Days before its own this run restates. Empty: KPI_RESTATE_DAYS for "
                        "the night's scheduled run and a manual run, 0 for a backfill run and "
                        "a scheduled run catching up (each day is fetched once).",
        ),
    },
)
def kpi_nightly():
    @task
    def plan(logical_date=None, dag_run=None, params=None) -> list[dict]:
        return nightly_plan(logical_date, dag_run.run_after, dag_run.run_id,
                            dag_run.run_type, params["restate_days"])

    @task(max_active_tis_per_dagrun=SETTINGS.extract_parallel)
    def extract_and_store(window: dict) -> dict:
        return nightly_extract_window(window)

    @task(outlets=[AGGREGATES])
    def aggregate(windows: list[dict], params=None) -> list[dict]:
        return nightly_aggregate(windows, bool(params["allow_removals"]))

    @task
    def check_anomalies(results: list[dict], **context) -> list[dict]:
        return nightly_check_anomalies(results, context)

    @task
    def check_restatements(results: list[dict]) -> list[str]:
        return nightly_check_restatements(results)  # fails for good: a retry is refused again

    windows = plan()
    aggregated = aggregate(windows)
    extract_and_store.expand(window=windows) >> aggregated
    check_anomalies(aggregated)
    check_restatements(aggregated)


kpi_nightly()
