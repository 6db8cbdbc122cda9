"""Airflow connections for KPIggybank and CouchDB, over the `KPI_*` settings.

In Airflow, secrets belong in connections (a secrets backend can hold them, and Airflow masks
their passwords in task logs). When a connection is defined it wins over the environment:

| connection id | replaces | fields used |
| --- | --- | --- |
| `kpiggybank_default` | `KPI_SOURCE_URL` | host (a host name, or a whole URL), port, schema (`http`/`https`), login, password, extra `{"path": "/wsapi/interaction_data"}` |
| `couchdb_default` | `KPI_COUCHDB_URL` | host (a host name, or a whole URL), port, schema (`http`/`https`), login, password |

An undefined connection leaves the setting as the environment (or its default) gave it. This
module needs no Airflow; `airflow_settings` imports it only when called inside a task.
"""  # noqa: E501

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from kpi.settings import Settings

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
