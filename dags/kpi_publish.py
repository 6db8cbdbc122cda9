"""Publish the report site whenever daily aggregates changed (the `kpi_aggregates` Asset).

A catchup or backfill of many days updates the Asset once per run, and each update queues a
publish: a 30-day catch-up publishes about 30 times (each build is incremental: it recomputes
only the days whose aggregates changed). The task runs on KPI_PUBLISH_QUEUE: on a multi-worker
deployment, the worker that holds KPI_SITE_DIR (e.g. on the web host).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task

from kpi.airflow import aggregates_asset, default_args, nightly_publish  # cheap at parse time
from kpi.settings import Settings

SETTINGS = Settings.from_env()
AGGREGATES = aggregates_asset()


@dag(
    dag_id="kpi_publish",
    schedule=[AGGREGATES],
    start_date=pendulum.datetime(2013, 7, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(SETTINGS),
    tags=["kpi", "persona"],
    doc_md=__doc__,
)
def kpi_publish():
    @task(queue=SETTINGS.publish_queue)
    def publish_site() -> str:
        return nightly_publish()

    publish_site()


kpi_publish()
