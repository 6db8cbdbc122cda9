"""Publish the report site whenever daily aggregates changed (the `kpi_aggregates` Asset).

A catchup or backfill of many days updates the Asset once per day processed, but Airflow
merges the updates that arrive while a publish runs into the next run, so the site is rebuilt
a handful of times, not once per day. The task runs on KPI_PUBLISH_QUEUE: on a multi-worker
deployment, the worker that holds KPI_SITE_DIR (e.g. on the web host).
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, dag, task

from kpi.notify import task_failed  # standard library only: cheap at parse time
from kpi.settings import Settings

SETTINGS = Settings.from_env()
AGGREGATES = Asset(name="kpi_aggregates", uri=f"kpi://{SETTINGS.db_prefix}/aggregates")


@dag(
    dag_id="kpi_publish",
    schedule=[AGGREGATES],
    start_date=pendulum.datetime(2013, 7, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={
        "retries": 2,
        "retry_delay": timedelta(minutes=1),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=30),
        "execution_timeout": timedelta(minutes=SETTINGS.task_timeout_minutes),
        "on_failure_callback": task_failed,
    },
    tags=["kpi", "persona"],
    doc_md=__doc__,
)
def kpi_publish():
    @task(queue=SETTINGS.publish_queue)
    def publish_site() -> str:
        from kpi.pipeline import nightly_publish

        return nightly_publish()

    publish_site()


kpi_publish()
