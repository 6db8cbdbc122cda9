"""Shared fixtures: the dev CouchDB (pouchdb-server, started once per session) and the fake
KPIggybank (in-process, on a free port). Unit tests use neither."""

from __future__ import annotations

import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import date

import httpx
import pytest

from kpi.settings import Settings

FAKE_SEED = 7
FAKE_PER_DAY = 300
FAKE_DAYS = 4
FAKE_LAST_DAY = date(2026, 10, 3)
FAKE_BAD_RATE = 0.02


@pytest.fixture(scope="session", autouse=True)
def user_cache_folder(tmp_path_factory):
    """The tests' own user cache folder (the Vega bundle, the chart templates), for every
    process they start too: never the user's `~/.cache/kpi`."""
    folder = tmp_path_factory.mktemp("xdg-cache")
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = before


@pytest.fixture(scope="session")
def couchdb_url():
    """A CouchDB-compatible server: $KPI_TEST_COUCHDB_URL, or a fresh in-memory pouchdb-server."""
    external = os.environ.get("KPI_TEST_COUCHDB_URL")
    if external:
        yield external
        return
    from kpi.devserver import free_port, start_dev_couchdb

    port = free_port()
    process = start_dev_couchdb(port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def db_prefix(couchdb_url):
    """A database prefix no other test uses; its databases are deleted afterwards."""
    prefix = f"test{uuid.uuid4().hex[:10]}"
    yield prefix
    names = httpx.get(f"{couchdb_url}/_all_dbs", timeout=10).json()
    mine = [name for name in names if name.startswith(f"{prefix}_")]
    with ThreadPoolExecutor(8) as pool:  # one at a time costs seconds on Apache CouchDB
        list(pool.map(lambda name: httpx.delete(f"{couchdb_url}/{name}", timeout=10), mine))


@pytest.fixture
def fake_app():
    from fake_source import create_app

    return create_app(seed=FAKE_SEED, per_day=FAKE_PER_DAY, days=FAKE_DAYS,
                      last_day=FAKE_LAST_DAY, bad_rate=FAKE_BAD_RATE, slow_seconds=2.0)


@pytest.fixture
def fake_source_url(fake_app):
    """Base URL of a fake KPIggybank serving `fake_app` in this process."""
    from fake_source.server import running_in_thread

    with running_in_thread(fake_app) as base_url:
        yield base_url


@pytest.fixture
def settings(couchdb_url, db_prefix, fake_source_url, tmp_path):
    """Settings pointing at the test servers, with fast retries."""
    return Settings(
        source_url=f"{fake_source_url}/wsapi/interaction_data",
        couchdb_url=couchdb_url,
        db_prefix=db_prefix,
        site_dir=tmp_path / "site_output",
        retry_attempts=3,
        retry_backoff=0.01,
        http_timeout=1.0,
        bulk_size=200,
    )
