"""Settings come from the environment, fail clearly and hide passwords (tests/unit/test_docs.py
checks that they are all documented)."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest

from kpi.settings import Settings, redact_url, split_credentials


def test_defaults_and_environment():
    assert Settings.from_env({}).db_prefix == "kpi"
    settings = Settings.from_env({
        "KPI_DB_PREFIX": "nightly", "KPI_SITE_DIR": "/srv/site", "KPI_FETCH_CHUNK_HOURS": "2",
        "KPI_START_DATE": "2026-01-05", "KPI_HTTP_TIMEOUT": "2.5",
    })
    assert settings.db_prefix == "nightly"
    assert settings.site_dir == Path("/srv/site")
    assert settings.fetch_chunk_hours == 2
    assert settings.start_date == date(2026, 1, 5)
    assert settings.http_timeout == 2.5


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KPI_DB_PREFIX": "Bad"}, "KPI_DB_PREFIX='Bad'"),
        ({"KPI_FETCH_CHUNK_HOURS": "x"}, "KPI_FETCH_CHUNK_HOURS='x'"),
        ({"KPI_FETCH_CHUNK_HOURS": "25"}, "KPI_FETCH_CHUNK_HOURS=25"),
        ({"KPI_START_DATE": "yesterday"}, "KPI_START_DATE='yesterday'"),
        ({"KPI_EXTRACT_PARALLEL": "0"}, "KPI_EXTRACT_PARALLEL=0"),
        ({"KPI_CA_BUNDLE": "/no/such/ca.pem"}, "KPI_CA_BUNDLE='/no/such/ca.pem' is not a file"),
        ({"KPI_RESTATE_DAYS": "42", "KPI_FETCH_CHUNK_HOURS": "1"},
         "makes 1032 fetch windows per nightly run; Airflow maps at most 1024"),
    ],
)
def test_bad_values_name_the_variable(env, message):
    with pytest.raises(ValueError, match=message):
        Settings.from_env(env)


def test_password_is_redacted():
    settings = Settings(couchdb_url="http://admin:s3cret@db.example:5984")
    assert "s3cret" not in settings.couchdb_url_redacted
    assert settings.couchdb_url_redacted == "http://admin:***@db.example:5984"
    assert redact_url("http://db:5984") == "http://db:5984"
    assert "s3cret" not in repr(Settings(couchdb_url="http://a:s3cret@h"))


def test_no_password_in_the_settings_repr():
    settings = Settings(source_url="https://kpi:s3cret@source.example/wsapi/interaction_data",
                        couchdb_url="http://admin:s3cret@db.example:5984")
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings)


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("http://admin:s3cret@db.example:5984/", "http://admin:***@db.example:5984/"),
        ("https://kpi:s3cret@[::1]:6984", "https://kpi:***@[::1]:6984"),
        ("http://kpi:s3%40cr%3At@DB.example/x?y=1", "http://kpi:***@DB.example/x?y=1"),
        ("http://:s3cret@db", "http://:***@db"),
        ("http://only-user@db", "http://only-user@db"),
    ],
)
def test_redact_url_keeps_all_but_the_password(url, redacted):
    assert redact_url(url) == redacted


def test_redact_replaces_the_passwords_in_any_text_as_written_and_decoded():
    settings = Settings(source_url="http://kpi:p%40ss-word@source.example/wsapi/interaction_data",
                        couchdb_url="http://admin:s3cret@db.example:5984")
    text = ("GET http://kpi:p%40ss-word@source.example failed (auth p@ss-word); "
            "CouchDB http://admin:s3cret@db.example:5984 said s3cret")
    redacted = settings.redact(text)
    assert redacted == ("GET http://kpi:***@source.example failed (auth ***); "
                        "CouchDB http://admin:***@db.example:5984 said ***")
    assert Settings().redact("nothing to hide") == "nothing to hide"


def test_split_credentials_hands_the_client_a_bare_url():
    assert split_credentials("https://kpi:p%40ss@[::1]:8443/wsapi/x?y=1") == (
        "https://[::1]:8443/wsapi/x?y=1", ("kpi", "p@ss"))
    assert split_credentials("http://db:5984") == ("http://db:5984", None)


@pytest.mark.parametrize(("env", "raw", "says"), [
    ("KPI_COUCHDB_WRITERS", "abc", "KPI_COUCHDB_WRITERS='abc' must be an integer"),
    ("KPI_RESTATE_MAX_REMOVED", "lots", "KPI_RESTATE_MAX_REMOVED='lots' must be a number"),
    ("KPI_START_DATE", "2026-13-01", "KPI_START_DATE='2026-13-01' must be a date (YYYY-MM-DD)"),
])
def test_a_value_of_the_wrong_type_says_what_it_must_be(env, raw, says):
    with pytest.raises(ValueError, match=re.escape(says)) as refused:
        Settings.from_env({env: raw})
    assert "invalid literal" not in str(refused.value)
