"""The fake KPIggybank: deterministic per (seed, day), realistic variety, SPEC §1 API."""

from __future__ import annotations

from collections import Counter
from datetime import date, timedelta

import orjson
import pytest
from starlette.testclient import TestClient

from fake_source import create_app
from fake_source.generator import SEQUENCE_C, blobs_for_day, day_volume
from kpi.days import DAY_MS, day_start_ms, day_window_ms
from kpi.source import HOUR_MS, chunk_windows

DAY = date(2026, 10, 7)  # a Wednesday
URL = "/wsapi/interaction_data"


@pytest.fixture(scope="module")
def client():
    app = create_app(seed=3, per_day=400, days=7, last_day=date(2026, 10, 11))
    with TestClient(app) as test_client:
        yield test_client


def test_same_seed_and_day_give_the_same_blobs():
    assert blobs_for_day(5, DAY, 200) == blobs_for_day(5, DAY, 200)
    assert blobs_for_day(5, DAY, 200) != blobs_for_day(6, DAY, 200)
    assert blobs_for_day(5, DAY, 200) != blobs_for_day(5, DAY + timedelta(days=1), 200)


def test_any_window_split_returns_the_same_rows(client):
    start, end = day_window_ms(DAY)
    whole = client.get(URL, params={"start": start, "end": end}).json()
    assert len(whole) > 300
    for chunk_hours in (1, 5, 24):
        pieces = []
        for low, high in chunk_windows(start, end, chunk_hours * HOUR_MS):
            pieces.extend(client.get(URL, params={"start": low, "end": high}).json())
        assert pieces == whole
    wider = client.get(URL, params={"start": start - DAY_MS, "end": end + DAY_MS}).json()
    assert [row for row in wider if start <= row["key"] <= end] == whole


def test_rows_are_couchdb_view_rows_ascending(client):
    start, end = day_window_ms(DAY)
    rows = client.get(URL, params={"start": start, "end": end}).json()
    assert all(set(row) == {"id", "key", "value"} for row in rows)
    assert all(row["value"]["_id"] == row["id"] and row["key"] == row["value"]["timestamp"]
               for row in rows)
    assert [(r["key"], r["id"]) for r in rows] == sorted((r["key"], r["id"]) for r in rows)


def test_range_bounds_are_inclusive(client):
    start, end = day_window_ms(DAY)
    rows = client.get(URL, params={"start": start, "end": end}).json()
    first = rows[0]["key"]
    exact = client.get(URL, params={"start": first, "end": first}).json()
    assert exact and all(row["key"] == first for row in exact)
    assert len(exact) == sum(row["key"] == first for row in rows)
    assert client.get(URL, params={"start": "abc"}).status_code == 400


def test_blob_variety_covers_the_spec():
    blobs = [b for _, b in blobs_for_day(11, DAY, 4000)]
    events = Counter(e[0] for b in blobs if isinstance(b.get("event_stream"), list)
                     for e in b["event_stream"] if isinstance(e, list))
    for name in ("staging_continuation", "user.reset_password_staged", "user.email_staged",
                 "screen.provision_primary_user", "authenticate.enter_password",
                 "screen.error", "xhr_complete.screen.error_page", "user.user_confirmed"):
        assert events[name] > 0, name
    assert any(b.get("new_account") and b.get("email_type") == "primary" for b in blobs)
    langs = Counter(b.get("lang") for b in blobs)
    assert {"en-US", "de", "pt-BR", "ja", None} <= set(langs)
    widths = [b["screen_size"]["width"] for b in blobs
              if type(b.get("screen_size", {}).get("width")) is int]
    assert min(widths) <= 640 and any(640 < w < 1024 for w in widths) and max(widths) >= 1024
    oses = {b["user_agent"].get("os") for b in blobs if isinstance(b.get("user_agent"), dict)}
    assert {"Windows NT 6.1", "iPhone", "Macintosh"} <= oses
    emails = {b.get("number_emails", "missing") for b in blobs}
    assert set(range(7)) | {"missing"} <= emails
    for field in ("number_sites_logged_in", "sites_signed_in", "number_sites_signed_in"):
        assert any(field in b for b in blobs), field
    streams = [b.get("event_stream") for b in blobs]
    assert any(s == [] or s is None for s in streams)
    assert any(isinstance(s, str) for s in streams) or any(
        isinstance(s, list) and any(not isinstance(e, list) or not isinstance(e[0], str)
                                    for e in s) for s in streams)
    odd = [b.get("number_emails") for b in blobs]
    assert any(isinstance(v, str) for v in odd) and 2.5 in odd  # odd values degrade, not reject
    assert any(b.get("number_sites_logged_in") == 0 and b.get("number_sites_signed_in")
               for b in blobs)
    assert all(b["timestamp"] % 600_000 == 0 for b in blobs)
    assert all(day_start_ms(DAY) <= b["timestamp"] < day_start_ms(DAY) + DAY_MS for b in blobs)


def test_templates_are_never_mutated():
    before = [list(event) for event in SEQUENCE_C]
    blobs_for_day(1, DAY, 500)
    assert [list(event) for event in SEQUENCE_C] == before


def test_offsets_strictly_increase():
    for _, b in blobs_for_day(2, DAY, 500):
        stream = b.get("event_stream")
        if isinstance(stream, list) and all(isinstance(e, list) for e in stream) and stream:
            offsets = [e[1] for e in stream]
            assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)


def test_weekends_are_quieter_than_weekdays():
    week = [DAY + timedelta(days=n) for n in range(-2, 5)]  # Mon..Sun
    volume = {d.weekday(): day_volume(1, d, 10_000) for d in week}
    assert max(volume[5], volume[6]) < min(volume[d] for d in range(5))


def test_count_last_id_and_ping(client):
    count = client.get(f"{URL}/count").json()
    everything = client.get(URL).json()
    assert count == len(everything) > 0
    assert client.get(f"{URL}/last").json() == everything[-1]
    some = everything[len(everything) // 2]
    assert client.get(URL, params={"id": some["id"]}).json() == {"results": some["value"]}
    assert client.get(URL, params={"id": "nope"}).status_code == 404
    assert client.get("/wsapi/ping").text == "pong"


def test_post_validates_every_blob_then_stores_all():
    app = create_app(seed=1, per_day=0, days=1, last_day=DAY)
    with TestClient(app) as c:
        good = [{"timestamp": day_start_ms(DAY) + 5, "event_stream": [["screen.rp_info", 1]]}]
        bad = [*good, {"event_stream": []}]
        assert c.post(URL, data={"data": orjson.dumps(bad).decode()}).status_code == 400
        assert c.get(f"{URL}/count").json() == 0
        assert c.post(URL, data={"nothing": "x"}).text == "Malformed POST, unable to parse JSON."
        assert c.post(URL, data={"data": "{"}).text == "JSON syntax error"
        for body in (b'{"data": 5}', b'{"data": {"timestamp": 1}}', b'[1]'):  # no JSON string
            response = c.post(URL, content=body, headers={"content-type": "application/json"})
            assert (response.status_code, response.text) == (
                400, "Malformed POST, unable to parse JSON.")
        response = c.post(URL, data={"data": orjson.dumps(good).decode()})
        assert (response.status_code, response.text) == (201, "ok")
        rows = c.get(URL).json()
        assert [row["value"]["timestamp"] for row in rows] == [good[0]["timestamp"]]


def test_a_backfill_generates_each_day_once(monkeypatch):
    """Every day of a history stays generated: a backfill's pages, day after day, twice, cost
    the fake source one generation a day (not one a page once more than 8 days are read)."""
    import fake_source.app as app_module

    generated = Counter()
    real = app_module.blobs_for_day

    def counting(seed, day, per_day, bad_rate):
        generated[day] += 1
        return real(seed, day, per_day, bad_rate)

    monkeypatch.setattr(app_module, "blobs_for_day", counting)
    days, last = 21, date(2026, 10, 11)
    with TestClient(create_app(seed=3, per_day=20, days=days, last_day=last)) as test_client:
        for _ in range(2):
            for back in range(days - 1, -1, -1):
                start, end = day_window_ms(last - timedelta(days=back))
                for first, final in chunk_windows(start, end, 6 * HOUR_MS):
                    test_client.get(URL, params={"start": first, "end": final}).raise_for_status()
    assert set(generated.values()) == {1}
    assert len(generated) >= days


def test_a_history_of_big_days_keeps_a_bounded_number_generated():
    store = create_app(seed=3, per_day=400_000, days=30, last_day=DAY).state.store
    assert store._rows_for_day.cache_info().maxsize == 2  # 800,000 rows
    one_big = create_app(seed=3, per_day=1_500_000, days=30, last_day=DAY).state.store
    assert one_big._rows_for_day.cache_info().maxsize == 1
