"""The fault matrix (issue 8, item 5): KPIggybank failing in every way it can, the CouchDB server
stopped and restarted mid-day, `_bulk_docs` answers lost after the server applied them.

Every run either completes with exact counts (every source id stored exactly once, checked
against the rows the fake source holds, and the manifest and aggregates counts against an
independent reading of SPEC D10/D12), or fails with an error naming the day and leaves a state
that a re-run makes exact. Real servers throughout: the fake KPIggybank over HTTP, pouchdb-server,
and a real TCP proxy (`faultproxy.py`) for the faults neither server can make itself.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import replace
from datetime import UTC, date, datetime

import httpx
import pytest

from fake_source import create_app
from fake_source.server import running_in_thread
from kpi import source
from kpi.backfill import backfill, run_day
from kpi.couch import AGGREGATES, MANIFESTS, QUARANTINE, RAW, CouchStore, content_of
from kpi.days import day_window_ms
from kpi.devserver import free_port, start_dev_couchdb, stop_process
from kpi.ingest import day_is_done, extract_and_store
from kpi.publish import build_site
from kpi.reports import QUALITY_MEASURES
from kpi.source import HOUR_MS
from tests.conftest import FAKE_BAD_RATE, FAKE_DAYS, FAKE_LAST_DAY, FAKE_PER_DAY, FAKE_SEED
from tests.integration.exactness import assert_exact, expected_day
from tests.integration.faultproxy import DROP, FORWARD, RESET, FaultProxy

DAY = date(2026, 10, 2)
DAYS = [date(2026, 9, 30), date(2026, 10, 1), date(2026, 10, 2), date(2026, 10, 3)]
SOURCE_FAULTS = {"500": "500", "503": "503", "truncated body": "truncate",
                 "garbage body": "garbage", "timeout": "slow", "disconnect mid-body": "disconnect"}
KINDS = [*SOURCE_FAULTS, "connection reset"]


def _per_window(kind: str, burst: int, windows: int) -> list[str]:
    """`burst` faults before each window's answer (a scripted `none` is a normal answer)."""
    return ([kind] * burst + ["none"]) * (windows - 1) + [kind] * burst


def _reset_burst(burst: int, attempts: int):
    """A proxy decision: of each `attempts` requests, the first `burst` are reset."""
    count = Counter()

    def decide(method: str, path: str) -> str:
        count["n"] += 1
        return RESET if (count["n"] - 1) % attempts < burst else FORWARD

    return decide


# KPIggybank faults, kind by kind


@pytest.mark.parametrize("kind", KINDS)
def test_a_burst_of_faults_on_every_window_is_survived_exactly(settings, fake_app, kind,
                                                               monkeypatch):
    """Each fetch window meets `retry_attempts - 1` faults in a row, then an answer."""
    settings = replace(settings, fetch_chunk_hours=12)  # 2 windows: 4 faults per day
    monkeypatch.setattr(source, "FIRST_PAGE_MS", 12 * HOUR_MS)  # a page is a window
    burst, windows = settings.retry_attempts - 1, 2
    if kind == "connection reset":
        with FaultProxy(_port(settings.source_url), _reset_burst(burst, burst + 1)) as proxy:
            manifest = run_day(DAY, replace(settings, source_url=_via(proxy, settings)))
        injected = proxy.actions(RESET)
    else:
        fake_app.state.faults.script(*_per_window(SOURCE_FAULTS[kind], burst, windows))
        manifest = run_day(DAY, settings)
        injected = len(fake_app.state.faults.injected)
    assert injected == burst * windows == 4
    assert manifest == assert_exact(settings, fake_app, DAY)


@pytest.mark.parametrize("kind", KINDS)
def test_a_window_failing_every_attempt_fails_naming_the_day_and_a_rerun_repairs_it(
    settings, fake_app, kind
):
    """The first window is stored, the second fails every attempt: the error names the day,
    the half-stored day is not taken for done, and a re-run makes it exact."""
    settings = replace(settings, fetch_chunk_hours=12)
    attempts = settings.retry_attempts
    if kind == "connection reset":
        seen = Counter()

        def decide(method: str, path: str) -> str:
            seen["n"] += 1
            return RESET if 2 <= seen["n"] <= 1 + attempts else FORWARD

        proxy = FaultProxy(_port(settings.source_url), decide)
        faulty = replace(settings, source_url=_via(proxy, settings))
    else:
        fake_app.state.faults.script("none", *[SOURCE_FAULTS[kind]] * attempts)
        faulty, proxy = settings, None
    with pytest.raises(RuntimeError) as failed:
        run_day(DAY, faulty)
    assert DAY.isoformat() in str(failed.value)
    store = CouchStore(settings)
    assert store.get(MANIFESTS, DAY.isoformat())["complete"] is False
    assert 0 < len(store.day_ids(RAW, DAY)) < len(expected_day(fake_app, DAY)["raw"])
    assert not day_is_done(DAY, settings)
    if proxy is not None:
        assert proxy.actions(RESET) == attempts
        proxy.close()
    else:
        assert len(fake_app.state.faults.injected) == attempts
    assert run_day(DAY, settings) == assert_exact(settings, fake_app, DAY)


def test_slow_answers_within_the_timeout_are_waited_for(settings, fake_app):
    fake_app.state.faults.slow_seconds = settings.http_timeout / 3
    fake_app.state.faults.script(*["slow"] * 4)  # every window of the day answers slowly
    manifest = run_day(DAY, settings)
    assert fake_app.state.faults.injected == ["slow"] * 4
    assert manifest == assert_exact(settings, fake_app, DAY)


# A source failing a large share of requests in several ways, over several days


@pytest.fixture
def clean_prefix(couchdb_url):
    prefix = f"test{uuid.uuid4().hex[:10]}"
    yield prefix
    for name in httpx.get(f"{couchdb_url}/_all_dbs", timeout=10).json():
        if name.startswith(f"{prefix}_"):
            httpx.delete(f"{couchdb_url}/{name}", timeout=10)


def test_a_backfill_from_a_source_failing_half_its_requests_equals_a_clean_run(
    settings, fake_app, clean_prefix, tmp_path
):
    """fault_rate 0.45 (500, 503, truncated, garbage, timeout, disconnect, picked at random)
    plus 10 % connection resets by the proxy, over 4 days: every document and published
    number equals a clean run's, and every day equals the source."""
    clean = replace(settings, db_prefix=clean_prefix, site_dir=tmp_path / "clean_site")
    backfill(DAYS[0], DAYS[-1], clean, progress=False)

    failing = create_app(seed=FAKE_SEED, per_day=FAKE_PER_DAY, days=FAKE_DAYS,
                         last_day=FAKE_LAST_DAY, bad_rate=FAKE_BAD_RATE, fault_rate=0.45,
                         slow_seconds=2.0)
    rng = random.Random(5)
    with running_in_thread(failing) as url, FaultProxy(
        _port(url), lambda method, path: RESET if rng.random() < 0.1 else FORWARD
    ) as proxy:
        faulty = replace(settings, source_url=f"{proxy.url}/wsapi/interaction_data",
                         retry_attempts=15, site_dir=tmp_path / "faulty_site",
                         fetch_chunk_hours=2)  # 48 windows; one day at a time: reproducible
        results = backfill(DAYS[0], DAYS[-1], faulty, progress=False)
    injected = Counter(failing.state.faults.injected)
    injected["reset"] = proxy.actions(RESET)
    requests = len(proxy.seen)
    print(f"\nfault backfill: {requests} range requests, {sum(injected.values())} faults "
          f"injected {dict(sorted(injected.items()))}")
    assert set(injected) == {"500", "503", "truncate", "garbage", "slow", "disconnect", "reset"}
    assert sum(injected.values()) >= 0.4 * requests

    faulty_store, clean_store = CouchStore(faulty), CouchStore(clean)
    for day, result in zip(DAYS, results, strict=True):
        counts = assert_exact(faulty, fake_app, day)
        assert {k: result[k] for k in QUALITY_MEASURES} == counts
        for kind in (RAW, QUARANTINE):
            assert [content_of(d) for d in faulty_store.day_docs(kind, day)] == [
                content_of(d) for d in clean_store.day_docs(kind, day)]
        for kind in (MANIFESTS, AGGREGATES):
            assert content_of(faulty_store.get(kind, day.isoformat())) == content_of(
                clean_store.get(kind, day.isoformat()))
    built = datetime(2026, 10, 5, tzinfo=UTC)
    for side in (clean, faulty):
        build_site(side, now=built)
    clean_files = sorted((clean.site_dir / "data").rglob("*.*"))
    assert len(clean_files) > 10
    for path in clean_files:
        twin = faulty.site_dir / "data" / path.relative_to(clean.site_dir / "data")
        assert twin.read_bytes() == path.read_bytes(), path.name


# CouchDB stopped and restarted in the middle of a day's store


@pytest.fixture
def own_couchdb(tmp_path):
    """A pouchdb-server of this test's own, on disk (a restart keeps the data)."""
    port, folder = free_port(), tmp_path / "couchdb"
    server = {"process": start_dev_couchdb(port, folder), "port": port, "folder": folder}
    yield server
    stop_process(server["process"])


def _restart_at_bulk_write(server: dict, nth: int, down_seconds: float):
    """A proxy decision: before the `nth` `_bulk_docs`, stop the server; a thread starts it
    again `down_seconds` later (on the same port and folder)."""
    count = Counter()

    def restart() -> None:
        time.sleep(down_seconds)
        server["process"] = start_dev_couchdb(server["port"], server["folder"])
        server["restarted"] = time.monotonic()

    def decide(method: str, path: str) -> str:
        if method == "POST" and path.endswith("/_bulk_docs"):
            count["bulk"] += 1
            if count["bulk"] == nth:
                stop_process(server["process"])
                server["restarter"] = threading.Thread(target=restart)
                server["restarter"].start()
        return FORWARD

    return decide


def test_couchdb_restarted_mid_day_is_survived_by_retries(settings, fake_app, own_couchdb):
    proxy = FaultProxy(own_couchdb["port"], _restart_at_bulk_write(own_couchdb, 4, 1.0))
    patient = replace(settings, couchdb_url=proxy.url, bulk_size=40, retry_attempts=9,
                      retry_backoff=0.25)
    with proxy:
        manifest = run_day(DAY, patient)
    own_couchdb["restarter"].join()
    refused = proxy.actions("refused")
    print(f"\ncouchdb restart (survived): {refused} requests refused while it was down")
    assert refused >= 1  # the store really met the stopped server
    direct = replace(patient, couchdb_url=f"http://127.0.0.1:{own_couchdb['port']}")
    assert manifest == assert_exact(direct, fake_app, DAY)


def test_couchdb_down_too_long_fails_naming_the_day_and_a_rerun_repairs_it(
    settings, fake_app, own_couchdb
):
    proxy = FaultProxy(own_couchdb["port"], _restart_at_bulk_write(own_couchdb, 4, 1.0))
    hasty = replace(settings, couchdb_url=proxy.url, bulk_size=40, retry_attempts=2)
    with proxy:
        with pytest.raises(RuntimeError) as failed:
            run_day(DAY, hasty)
        own_couchdb["restarter"].join()
        print(f"\ncouchdb restart (failed): {failed.value}")
        assert DAY.isoformat() in str(failed.value)
        assert proxy.actions("refused") >= 1
        store = CouchStore(hasty)
        assert store.get(MANIFESTS, DAY.isoformat())["complete"] is False
        assert not day_is_done(DAY, hasty)
        assert run_day(DAY, hasty) == assert_exact(hasty, fake_app, DAY)


# `_bulk_docs` answers lost after CouchDB applied them


def _drop_bulk_answers():
    """A proxy decision (`with_body`): the answers of the 1st, 2nd, 5th, 8th, 11th … distinct
    `_bulk_docs` request are lost (the server applies each write); a request sent again (a
    retry: the same body) is answered, so a write always gets through, whatever other writes
    run at the same time."""
    bodies: set[bytes] = set()

    def decide(method: str, path: str, body: bytes) -> str:
        if method == "POST" and path.endswith("/_bulk_docs") and body not in bodies:
            bodies.add(body)
            if len(bodies) == 1 or len(bodies) % 3 == 2:
                return DROP
        return FORWARD

    return decide


def test_lost_bulk_docs_answers_count_as_written_once(settings, fake_app, couchdb_url):
    """The retry of an applied write meets conflicts; same content is success: exact ids and
    counts, no duplicate. Also when restating (updates with a revision, deletions)."""
    with FaultProxy(_port(couchdb_url), _drop_bulk_answers(), with_body=True) as proxy:
        lossy = replace(settings, couchdb_url=_credentials_of(couchdb_url, proxy.url),
                        bulk_size=50, restate_max_removed=1)  # the restatement removes 13 %
        manifest = extract_and_store(DAY, lossy)
        first_losses = proxy.actions(DROP, "_bulk_docs")
        assert first_losses >= 4
        assert {k: manifest[k] for k in QUALITY_MEASURES} == assert_exact(lossy, fake_app, DAY)

        original = fake_app.state.store.range

        def corrected(start, end):  # the source drops a tenth of its rows, changes a seventh
            rows = []
            for row in original(start, end):
                n = int(row["id"][:8], 16)
                if n % 10 == 3:
                    continue
                if n % 7 == 2:
                    row = {**row, "value": {**row["value"], "lang": "pt-BR"}}
                rows.append(row)
            return rows

        fake_app.state.store.range = corrected
        restated = extract_and_store(DAY, lossy)
        losses = proxy.actions(DROP, "_bulk_docs")
        print(f"\nrestated: written {restated['written']} removed {restated['removed']}")
    print(f"\nlost _bulk_docs answers: {losses} (of {proxy.actions(FORWARD, '_bulk_docs') + losses}"
          " bulk writes)")
    assert losses > first_losses
    assert {k: restated[k] for k in QUALITY_MEASURES} == assert_exact(settings, fake_app, DAY)
    assert extract_and_store(DAY, settings)["written"] == 0  # nothing left to repair


def _credentials_of(server: str, url: str) -> str:
    """`url` with the user and password of `server` (e.g. Apache CouchDB's admin)."""
    parsed = httpx.URL(server)
    return str(httpx.URL(url).copy_with(username=parsed.username or None,
                                        password=parsed.password or None))


def _port(url: str) -> int:
    return httpx.URL(url).port


def _via(proxy: FaultProxy, settings) -> str:
    return f"{proxy.url}{httpx.URL(settings.source_url).path}"


def test_every_job_of_a_day_names_the_day_when_couchdb_is_unreachable(settings):
    from kpi.ingest import close_day, extract_window, reaggregate_day

    dead = replace(settings, couchdb_url=f"http://127.0.0.1:{free_port()}", retry_attempts=1)
    low, high = day_window_ms(DAY)
    window = {"day": DAY.isoformat(), "start_ms": low, "end_ms": high, "fresh": True,
              "run": "r"}
    for job in (lambda: extract_and_store(DAY, dead), lambda: extract_window(window, dead),
                lambda: close_day(DAY, [window], dead), lambda: reaggregate_day(DAY, dead)):
        with pytest.raises(RuntimeError, match=f"processing {DAY.isoformat()} failed: CouchDB"):
            job()
