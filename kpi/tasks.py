"""What every Airflow task of kpi shares: retries, timeouts, the aggregates Asset, and what
happens when a task fails for good (after its retries). Standard library only, so DAG files
import it at parse time.

Every DAG task has `on_failure_callback=task_failed`. It logs the DAG, task, run and error,
then calls the deployment's own hook if `KPI_FAILURE_CALLBACK` names one (`module:function`,
called with the Airflow context), e.g. to page someone or post to a chat room. The hook is
imported when a failure happens, never when the DAG file is parsed.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
from collections.abc import Callable
from datetime import timedelta

from kpi.settings import Settings

log = logging.getLogger(__name__)


def load_callback(path: str, setting: str = "KPI_FAILURE_CALLBACK") -> Callable[..., object]:
    """The function a `module:function` path names (ValueError when malformed)."""
    module, _, name = path.partition(":")
    if not module or not name:
        msg = f"{setting}={path!r} must look like package.module:function"
        raise ValueError(msg)
    return getattr(importlib.import_module(module), name)


def task_failed(context: dict) -> None:
    """Airflow `on_failure_callback`: log the failure and call the configured hook, if any."""
    task = context.get("task_instance")
    log.error(
        "kpi task failed for good: dag=%s task=%s run=%s error=%s",
        getattr(task, "dag_id", "?"), getattr(task, "task_id", "?"),
        context.get("run_id", "?"), context.get("exception"),
    )
    path = Settings.from_env().failure_callback
    if path:
        load_callback(path)(context)


def worker_hostname() -> str:
    """The host name a task reports to Airflow (`[core] hostname_callable`): the worker's own
    name in `KPI_WORKER_NAME` when set (`make run-distributed` runs two Celery workers on one
    machine, told apart by it), else the machine's, as Airflow's default gives it."""
    return os.environ.get("KPI_WORKER_NAME") or socket.getfqdn()


AGGREGATES_ASSET_NAME = "kpi_aggregates"


def aggregates_asset_uri(settings: Settings) -> str:
    """The URI of the Asset the aggregate task updates and `kpi_publish` is scheduled on.

    The same whatever the settings: Airflow keeps one active asset per name, and a task whose
    DAG file is parsed again with other settings (another `KPI_DB_PREFIX`) would otherwise
    name an inactive asset and fail. One Airflow runs one deployment of these DAGs anyway
    (their ids are fixed)."""
    del settings
    return "kpi://aggregates"


def default_args(settings: Settings) -> dict:
    """The tasks' `default_args`: 2 retries with exponential backoff (1 minute, doubling, at
    most 30), an execution timeout, and the failure hook."""
    return {
        "retries": 2,
        "retry_delay": timedelta(minutes=1),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=30),
        "execution_timeout": timedelta(minutes=settings.task_timeout_minutes),
        "on_failure_callback": task_failed,
    }
