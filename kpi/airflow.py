"""Airflow glue: everything the DAGs in dags/ share, and the task entry points they call.

DAG files import this module when Airflow parses them: it needs only the standard library,
`kpi.settings` and `kpi.days` at import time; a task imports the pipeline (pandas and the rest)
when it runs.

- **Defaults**: every task retries twice with exponential backoff (1 minute, doubling, at most
  30), has an execution timeout (`KPI_TASK_TIMEOUT_MINUTES`), and on failing for good
  (`task_failed`) logs the DAG, task, run and error, then calls the deployment's hook when
  `KPI_FAILURE_CALLBACK` names one (`module:function`, called with the Airflow context).
- **The Asset** `kpi_aggregates`: updated by `kpi_nightly`'s aggregate task; `kpi_publish`
  is scheduled on it.
- **Connections**: in Airflow, secrets belong in connections (a secrets backend can hold them,
  and Airflow masks their passwords in task logs). A defined connection wins over the
  environment; an undefined one leaves the setting as the environment gave it:

| connection id | replaces | fields used |
| --- | --- | --- |
| `kpiggybank_default` | `KPI_SOURCE_URL` | host (a host name, or a whole URL), port, schema (`http`/`https`), login, password, extra `{"path": "/wsapi/interaction_data"}` |
| `couchdb_default` | `KPI_COUCHDB_URL` | host (a host name, or a whole URL), port, schema (`http`/`https`), login, password |

- **Which days a run processes**: the run with logical date D processes the UTC day D − 1
  (`processing_day`) and restates the `KPI_RESTATE_DAYS` days before it (`nightly_days`); a
  backfill run or a scheduled run catching up restates none (`run_restate_days`).
"""  # noqa: E501

from __future__ import annotations

import dataclasses
import logging
import os
import socket
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from kpi.days import days_between
from kpi.settings import Settings, load_callback

log = logging.getLogger(__name__)

AGGREGATES_ASSET_NAME = "kpi_aggregates"
# The same whatever the settings: Airflow keeps one active asset per name, and a task whose DAG
# file is parsed again with other settings (another KPI_DB_PREFIX) would otherwise name an
# inactive asset and fail. One Airflow runs one deployment of these DAGs (their ids are fixed).
AGGREGATES_ASSET_URI = "kpi://aggregates"


def aggregates_asset() -> Any:
    """The Asset the aggregate task updates and `kpi_publish` is scheduled on."""
    from airflow.sdk import Asset

    return Asset(name=AGGREGATES_ASSET_NAME, uri=AGGREGATES_ASSET_URI)


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


KPIGGYBANK_CONN_ID = "kpiggybank_default"
COUCHDB_CONN_ID = "couchdb_default"
DEFAULT_SOURCE_PATH = "/wsapi/interaction_data"


def connection_url(connection: Any, default_path: str = "") -> str:
    """The URL an Airflow connection stands for, credentials percent-encoded.

    Args:
        connection: an object with Airflow's `Connection` fields (`conn_type`, `host`, `port`,
            `schema`, `login`, `password`, `extra_dejson`).
        default_path: the path when neither the host nor `extra["path"]` gives one.
    """
    host = connection.host or ""
    extra = getattr(connection, "extra_dejson", None) or {}
    scheme, path, login, password = "", extra.get("path", ""), connection.login, None
    port = connection.port
    if "://" in host:  # a whole URL in the host field (its credentials count if none are set)
        parts = urlsplit(host)
        scheme, host, path = parts.scheme, parts.hostname or "", path or parts.path
        port = port or parts.port
        if not login and parts.username:
            login, password = unquote(parts.username), unquote(parts.password or "")
    password = connection.password if connection.login else password
    schema = (connection.schema or "").strip("/")
    if schema.lower() in ("http", "https"):
        scheme = scheme or schema.lower()
    elif schema and not path:  # Airflow puts a URI's path (e.g. a proxy prefix) in `schema`
        path = schema
    scheme = scheme or (
        connection.conn_type if connection.conn_type in ("http", "https") else "http")
    userinfo = ""
    if login:
        userinfo = quote(login, safe="")
        if password:
            userinfo += ":" + quote(password, safe="")
        userinfo += "@"
    if ":" in host and not host.startswith("["):  # an IPv6 address
        host = f"[{host}]"
    netloc = f"{userinfo}{host}" + (f":{port}" if port else "")
    path = path or default_path
    if path and not path.startswith("/"):
        path = "/" + path
    return f"{scheme}://{netloc}{path}"


def with_connections(settings: Settings,
                     get_connection: Callable[[str], Any | None]) -> Settings:
    """`settings` with the source and CouchDB URLs of the connections that are defined.

    Args:
        settings: settings from the environment.
        get_connection: returns the connection of an id, or None when it is not defined.
    """
    changes = {}
    source = get_connection(KPIGGYBANK_CONN_ID)
    if source is not None:
        changes["source_url"] = connection_url(source, DEFAULT_SOURCE_PATH)
    couchdb = get_connection(COUCHDB_CONN_ID)
    if couchdb is not None:
        changes["couchdb_url"] = connection_url(couchdb)
    return dataclasses.replace(settings, **changes) if changes else settings


def _airflow_connection(conn_id: str) -> Any | None:
    from airflow.sdk import BaseHook

    try:
        return BaseHook.get_connection(conn_id)
    except Exception as exc:  # AirflowNotFoundException's module moved between versions
        if type(exc).__name__ == "AirflowNotFoundException":
            return None
        raise


def airflow_settings() -> Settings:
    """Settings for an Airflow task: the environment, then the defined connections."""
    return with_connections(Settings.from_env(), _airflow_connection)


def processing_day(logical_date: datetime | date | str | None,
                   now: datetime | None = None) -> date:
    """The UTC day a DAG run with this logical date processes: the day before it.

    A run without a logical date (a manual `airflow dags trigger` without `-l`) processes
    yesterday, the last UTC day that has ended at `now` (default: the current time).
    """
    if logical_date is None:
        logical_date = now or datetime.now(UTC)
    if isinstance(logical_date, str):
        logical_date = datetime.fromisoformat(logical_date)
    if isinstance(logical_date, datetime):
        if logical_date.tzinfo is not None:
            logical_date = logical_date.astimezone(UTC)
        logical_date = logical_date.date()
    return logical_date - timedelta(days=1)


def nightly_days(logical_date: datetime | date | str | None, settings: Settings,
                 now: datetime | None = None, restate_days: int | None = None) -> list[date]:
    """The UTC days a nightly run restates and processes, oldest first.

    Its own day (`processing_day`) and the `restate_days` before it (default: the setting),
    never before `start_date`: late rows (a session that started before midnight and was sent
    after it) and corrected rows reach their day within that many nights.
    """
    day = processing_day(logical_date, now)
    restate = settings.restate_days if restate_days is None else restate_days
    first = max(day - timedelta(days=restate), settings.start_date)
    return days_between(first, day) if first <= day else []


def run_restate_days(run_type: object, day: date, asked: int | None, settings: Settings,
                     now: datetime) -> int:
    """How many days before its own a DAG run restates (`run_type`: Airflow's `DagRunType`,
    or its value).

    `asked` (the run's `restate_days` Param) when given; else 0 for a backfill run and for a
    scheduled run catching up (its day is not the last one that has ended at `now`: the runs
    after it process the next days, each of them once), and `KPI_RESTATE_DAYS` for the
    scheduled run of the night and a manual run. So a catch-up of 30 nights, or a backfill of
    30 days, fetches each day once, not 1 + KPI_RESTATE_DAYS times; only the nightly run
    restates.
    """
    run_type = getattr(run_type, "value", run_type)  # the Task SDK's enum prints its name
    if asked is not None:
        return asked
    if run_type == "backfill":
        return 0
    if run_type == "scheduled" and day < processing_day(None, now):
        return 0
    return settings.restate_days


# Task entry points: one call each from dags/. Settings come from the environment and, when
# defined, the Airflow connections (`airflow_settings`). The pipeline is imported when a task
# runs, not when a DAG file is parsed.


def nightly_plan(logical_date: datetime | None, run_after: datetime | None,
                 run_id: str, run_type: object = "manual",
                 restate_days: int | None = None) -> list[dict]:
    """Airflow task: the fetch windows of the run's days (`nightly_days`, restating
    `run_restate_days` days), for the mapped extract tasks.

    `run_after` (the run's own time, fixed for all its tasks) decides the days of a run without
    a logical date, so a manual run works on the same days even when it crosses midnight.
    """
    from kpi.ingest import plan_windows

    settings = airflow_settings()
    now = datetime.now(UTC)  # a worker's clock a little behind the scheduler's is no reason to
    now = max(now, run_after) if run_after else now  # refuse the day that just ended
    day = processing_day(logical_date, run_after)
    restate = run_restate_days(run_type, day, restate_days, settings, now)
    if restate != settings.restate_days:
        log.info("run %s (%s) restates %d days before %s", run_id, run_type, restate, day)
    return plan_windows(nightly_days(logical_date, settings, now=run_after,
                                     restate_days=restate), settings, run_id, now)


def nightly_extract_window(window: dict) -> dict:
    """Airflow task (mapped): extract and store one window; its counts."""
    from kpi.ingest import extract_window

    return extract_window(window, airflow_settings())


def nightly_aggregate(windows: list[dict], allow_removals: bool = False) -> list[dict]:
    """Airflow task: close the planned days from their windows' parts (`close_days`) and
    confirm their aggregates; per day its data-quality counts, the documents written and
    removed, and whether it was closed from the windows (else in one pass). A refused day
    gives `refused` and `message` instead: the task still succeeds, so the Asset publishes
    the other days and the refusal, and `nightly_check_restatements` fails the run."""
    from kpi.config import load_config
    from kpi.ingest import close_days, confirm_aggregated, refusal_text

    settings = airflow_settings()
    config = load_config(settings.config_path)
    results = []
    for manifest in close_days(windows, settings, config, allow_removals):
        day = date.fromisoformat(manifest["day"])
        if "refused" in manifest:
            results.append({"day": manifest["day"], "refused": manifest["refused"],
                            "message": refusal_text(manifest)})
            continue
        results.append({"day": manifest["day"], **confirm_aggregated(day, settings, config),
                        **{key: manifest[key] for key in ("written", "removed", "from_windows")}})
    return results


def nightly_check_restatements(results: list[dict]) -> list[str]:
    """Airflow task: the days checked; when `nightly_aggregate` refused some days'
    restatements, fails for good (`AirflowFailException`, no retry: a retry would be refused
    again), naming each day with its counts and the override."""
    from airflow.sdk.exceptions import AirflowFailException

    refused = [result["message"] for result in results if "refused" in result]
    if refused:
        raise AirflowFailException("\n".join(refused))
    return [result["day"] for result in results]


def nightly_check_anomalies(results: list[dict], context: dict | None = None) -> list[dict]:
    """Airflow task: flag the run's days (`check_anomalies`), after their aggregation."""
    from kpi.alerts import check_anomalies

    days = [date.fromisoformat(result["day"]) for result in results]
    return check_anomalies(days, airflow_settings(), context=context)


def nightly_publish() -> str:
    """Airflow task: rebuild and publish the site from every stored aggregate."""
    from kpi.publish import build_site

    return str(build_site(airflow_settings()))
