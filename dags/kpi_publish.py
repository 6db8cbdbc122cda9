"""Publish the report site whenever daily aggregates changed (the `kpi_aggregates` Asset).

A catchup or backfill of many days updates the Asset once per day processed, but Airflow
merges the updates that arrive while a publish runs into the next run, so the site is rebuilt
a handful of times, not once per day. The task runs on KPI_PUBLISH_QUEUE: on a multi-worker
deployment, the worker that holds KPI_SITE_DIR (e.g. on the web host).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Asset, dag, task

from kpi.settings import Settings  # these two: standard library only, cheap at parse time
from kpi.tasks import AGGREGATES_ASSET_NAME, aggregates_asset_uri, default_args

SETTINGS = Settings.from_env()
AGGREGATES = Asset(name=AGGREGATES_ASSET_NAME, uri=aggregates_asset_uri(SETTINGS))


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
        from kpi.pipeline import nightly_publish

        return nightly_publish()

    publish_site()


kpi_publish()
