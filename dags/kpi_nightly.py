"""Nightly KPI pipeline: extract → store → aggregate one UTC day, then publish the site.

Which day a run processes: the run with logical date D (00:00 UTC, daily) processes the UTC
day that just ended, D − 1 day (`kpi.pipeline.processing_day`). Catchup starts at
KPI_START_DATE, so the first run (logical date KPI_START_DATE + 1 day) processes KPI_START_DATE.
Every task is one call into `kpi/`; all logic and its tests live there.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag, task

from kpi.settings import Settings  # standard library only: cheap at parse time

START_DAY = Settings.from_env().start_date


@dag(
    dag_id="kpi_nightly",
    schedule="@daily",
    start_date=pendulum.datetime(START_DAY.year, START_DAY.month, START_DAY.day, tz="UTC")
    + timedelta(days=1),
    catchup=True,
    max_active_runs=2,
    default_args={
        "retries": 2,
        "retry_delay": timedelta(minutes=1),
        "retry_exponential_backoff": True,
    },
    tags=["kpi", "persona"],
    doc_md=__doc__,
)
def kpi_nightly():
    @task
    def extract_and_store(logical_date=None) -> dict:
        from kpi.pipeline import nightly_extract_and_store

        return nightly_extract_and_store(logical_date)

    @task
    def aggregate(logical_date=None) -> dict:
        from kpi.pipeline import nightly_aggregate

        return nightly_aggregate(logical_date)

    @task
    def publish_site() -> str:
        from kpi.pipeline import nightly_publish

        return nightly_publish()

    extract_and_store() >> aggregate() >> publish_site()


kpi_nightly()
