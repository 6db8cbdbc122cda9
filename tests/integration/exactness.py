"""What the fake source holds for a day, read independently (SPEC D10, D12; no `kpi/` code
decides what to expect), and the check that the stored day equals it exactly."""

from __future__ import annotations

from datetime import UTC, date, datetime

import httpx

from kpi.couch import AGGREGATES, MANIFESTS, PARTS, QUARANTINE, RAW, CouchStore
from kpi.days import day_window_ms
from kpi.ingest import day_is_done
from kpi.reports import QUALITY_MEASURES


def _day_of(timestamp: object) -> date | None:
    if type(timestamp) not in (int, float) or not timestamp > 0:
        return None
    try:
        return datetime.fromtimestamp(int(timestamp // 1000), tz=UTC).date()
    except (OverflowError, OSError, ValueError):
        return None


def _valid_stream(stream: object) -> bool:
    return isinstance(stream, list) and all(
        isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str) for pair in stream)


def expected_day(app, day: date) -> dict:
    """What storing `day` must leave: raw blobs by id, quarantined ids, the D12 counts."""
    rows = app.state.store.range(*day_window_ms(day))
    ids = [row["id"] for row in rows]
    assert len(ids) == len(set(ids)), "the fake source repeats no id within a day"
    raw, quarantined, skipped = {}, set(), 0
    for row in rows:
        blob = {k: v for k, v in row["value"].items() if k not in ("_id", "_rev")}
        stream = blob.get("event_stream")
        if _day_of(blob.get("timestamp")) != day:
            quarantined.add(row["id"])
        elif stream is None or stream == []:
            skipped += 1
            raw[row["id"]] = blob
        elif _valid_stream(stream):
            raw[row["id"]] = blob
        else:
            quarantined.add(row["id"])
    counts = {"fetched": len(rows), "stored": len(raw), "duplicate": 0,
              "skipped_empty_stream": skipped, "rejected_invalid": len(quarantined),
              "aggregated": len(raw) - skipped}
    return {"raw": raw, "quarantined": quarantined, "counts": counts}


def assert_exact(settings, app, day: date) -> dict:
    """The stored day equals the source's: every id once, same blobs, exact counts; returns
    the expected counts."""
    want = expected_day(app, day)
    store = CouchStore(settings)
    raw_docs = list(store.day_docs(RAW, day))
    stored_ids = [doc["kpiggybank_id"] for doc in raw_docs]
    assert sorted(stored_ids) == sorted(want["raw"]), f"{day}: raw ids differ from the source"
    assert {doc["kpiggybank_id"]: doc["blob"] for doc in raw_docs} == want["raw"]
    assert store.day_ids(QUARANTINE, day) == {f"{day}:{i}" for i in want["quarantined"]}
    manifest = store.get(MANIFESTS, day.isoformat())
    assert manifest["complete"] is True
    assert {k: manifest[k] for k in QUALITY_MEASURES[:-1]} == {
        k: want["counts"][k] for k in QUALITY_MEASURES[:-1]}
    aggregates = store.get(AGGREGATES, day.isoformat())
    assert aggregates["quality"] == want["counts"]
    total = [row for row in aggregates["groups"] if row[:2] == ["Total", "Total"]]
    blobs = aggregates["columns"].index("blobs") + 2
    assert total[0][blobs] == want["counts"]["aggregated"]
    assert {i for i in store.day_ids(PARTS, day) if not i.endswith(":closed")} == set()
    assert day_is_done(day, settings)
    return want["counts"]


def doc_count(store: CouchStore, kind: str) -> int:
    """The documents of `kind`'s database, as CouchDB's database info counts them."""
    response = httpx.get(f"{store.settings.couchdb_url}/{store.name(kind)}", timeout=30)
    return response.raise_for_status().json()["doc_count"]
