"""Which days a nightly run processes, Airflow connections over settings, the failure hook."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import pytest

from kpi.airflow import (
    connection_url,
    nightly_days,
    processing_day,
    run_restate_days,
    task_failed,
    with_connections,
)
from kpi.settings import Settings, load_callback


def test_a_run_without_a_logical_date_processes_yesterday():
    now = datetime(2026, 11, 27, 0, 30, tzinfo=UTC)
    assert processing_day(None, now=now) == date(2026, 11, 26)
    assert processing_day(datetime(2026, 11, 27, tzinfo=UTC)) == date(2026, 11, 26)


@pytest.mark.parametrize(("restate", "expected"), [
    (0, ["2026-10-09"]),
    (2, ["2026-10-07", "2026-10-08", "2026-10-09"]),
])
def test_nightly_days_restate_the_days_before(restate, expected):
    settings = Settings(restate_days=restate, start_date=date(2026, 10, 1))
    days = nightly_days(datetime(2026, 10, 10, tzinfo=UTC), settings)
    assert [d.isoformat() for d in days] == expected


def test_nightly_days_never_go_before_the_start_date():
    settings = Settings(restate_days=5, start_date=date(2026, 10, 1))
    days = nightly_days(datetime(2026, 10, 3, tzinfo=UTC), settings)
    assert [d.isoformat() for d in days] == ["2026-10-01", "2026-10-02"]
    assert nightly_days(datetime(2026, 9, 20, tzinfo=UTC), settings) == []


def test_a_manual_run_takes_its_days_from_its_own_time():
    settings = Settings(restate_days=0, start_date=date(2026, 10, 1))
    run_after = datetime(2026, 11, 26, 23, 59, 59, tzinfo=UTC)
    assert nightly_days(None, settings, now=run_after) == [date(2026, 11, 25)]


@pytest.mark.parametrize(("run_type", "day", "asked", "expected"), [
    ("scheduled", date(2026, 11, 26), None, 3),  # the night's run: its day just ended
    ("scheduled", date(2026, 11, 20), None, 0),  # catching up: the next runs follow
    ("backfill", date(2026, 11, 26), None, 0),
    ("manual", date(2026, 11, 20), None, 3),
    ("backfill", date(2026, 11, 20), 2, 2),  # the Param decides when given
    ("scheduled", date(2026, 11, 26), 0, 0),
])
def test_only_the_nights_own_run_restates_unless_asked(run_type, day, asked, expected):
    """A catch-up of 30 nights or a backfill of 30 days fetches each day once, not
    1 + KPI_RESTATE_DAYS times."""
    settings = Settings(restate_days=3, start_date=date(2026, 10, 1))
    now = datetime(2026, 11, 27, 0, 40, tzinfo=UTC)
    assert run_restate_days(run_type, day, asked, settings, now) == expected
    logical = datetime.combine(day, datetime.min.time(), UTC) + timedelta(days=1)
    assert len(nightly_days(logical, settings, restate_days=expected)) == 1 + expected


def test_the_run_type_is_read_from_the_task_sdks_enum():
    from airflow.sdk.api.datamodels._generated import DagRunType

    settings = Settings(restate_days=3, start_date=date(2026, 10, 1))
    now = datetime(2026, 11, 27, 0, 40, tzinfo=UTC)
    assert str(DagRunType.BACKFILL) != "backfill"  # why its value is read, not its text
    assert run_restate_days(DagRunType.BACKFILL, date(2026, 11, 26), None, settings, now) == 0
    assert run_restate_days(DagRunType.SCHEDULED, date(2026, 11, 26), None, settings, now) == 3


def test_nightly_time_is_a_utc_cron_and_is_validated():
    assert Settings(nightly_at="02:30").nightly_cron == "30 2 * * *"
    for bad in ("2:30", "24:00", "noon"):
        with pytest.raises(ValueError, match="KPI_NIGHTLY_AT"):
            Settings(nightly_at=bad)
    with pytest.raises(ValueError, match="KPI_RESTATE_DAYS"):
        Settings(restate_days=-1)


@dataclass
class Connection:
    """The fields of an Airflow connection that kpi reads."""

    conn_type: str = "http"
    host: str = ""
    port: int | None = None
    schema: str = ""
    login: str | None = None
    password: str | None = None
    extra_dejson: dict = field(default_factory=dict)


def test_connection_urls_encode_credentials_and_default_the_path():
    couch = Connection(host="couch.example.org", port=6984, schema="https", login="kpi",
                       password="p@ss/word:1")
    assert connection_url(couch) == "https://kpi:p%40ss%2Fword%3A1@couch.example.org:6984"
    source = Connection(host="https://kpiggybank.example.org")
    assert connection_url(source, "/wsapi/interaction_data") == (
        "https://kpiggybank.example.org/wsapi/interaction_data")
    custom = Connection(host="127.0.0.1", port=3435, extra_dejson={"path": "/custom"})
    assert connection_url(custom, "/wsapi/interaction_data") == "http://127.0.0.1:3435/custom"


def test_connection_urls_for_ipv6_whole_urls_and_uri_paths():
    assert connection_url(Connection(host="::1", port=5984)) == "http://[::1]:5984"
    assert connection_url(Connection(host="http://[::1]:5984")) == "http://[::1]:5984"
    whole = Connection(host="https://admin:p%40ss@couch.example.org:6984")
    assert connection_url(whole) == "https://admin:p%40ss@couch.example.org:6984"
    # `airflow connections add --conn-uri https://u:p@host/couchdb` keeps "couchdb" in schema
    proxied = Connection(conn_type="https", host="host", schema="couchdb", login="u",
                         password="p")
    assert connection_url(proxied) == "https://u:p@host/couchdb"


def test_defined_connections_win_over_the_environment():
    env = Settings.from_env({"KPI_SOURCE_URL": "http://env-source/wsapi/interaction_data",
                             "KPI_COUCHDB_URL": "http://env:secret@env-couch:5984"})
    connections = {"couchdb_default": Connection(host="conn-couch", port=5984, login="admin",
                                                 password="s3cret")}
    settings = with_connections(env, connections.get)
    assert settings.couchdb_url == "http://admin:s3cret@conn-couch:5984"
    assert settings.couchdb_url_redacted == "http://admin:***@conn-couch:5984"
    assert settings.source_url == "http://env-source/wsapi/interaction_data"  # not defined
    assert with_connections(env, {}.get) is env  # none defined: the environment as is
    both = with_connections(env, {**connections, "kpiggybank_default": Connection(
        host="kpiggybank.example.org", schema="https")}.get)
    assert both.source_url == "https://kpiggybank.example.org/wsapi/interaction_data"


calls: list[dict] = []


def record_failure(context: dict) -> None:
    calls.append(context)


def test_the_failure_hook_logs_and_calls_the_configured_function(monkeypatch, caplog):
    context = {"run_id": "scheduled__2026-10-03", "exception": RuntimeError("CouchDB down")}
    task_failed(context)  # no hook configured: logs only
    assert "CouchDB down" in caplog.text and calls == []
    monkeypatch.setenv("KPI_FAILURE_CALLBACK", f"{__name__}:record_failure")
    task_failed(context)
    assert calls == [context]
    with pytest.raises(ValueError, match="module:function|package.module:function"):
        load_callback("no_colon")


def test_aggregates_from_before_fingerprints_still_load():
    from kpi.aggregate import count_columns
    from kpi.config import production_config
    from kpi.ingest import made_with

    config = production_config()
    legacy = {"columns": count_columns(config)}  # written before fingerprints existed
    assert made_with(legacy, config)
    assert made_with({**legacy, "config_fingerprint": config.fingerprint}, config)
    assert not made_with({**legacy, "config_fingerprint": "0123456789abcdef"}, config)
    assert not made_with({"columns": ["blobs"]}, config)
