"""Extract → store on the real dev CouchDB with the in-process fake KPIggybank."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import date

import httpx
import pytest

from fake_source.generator import blobs_for_day
from kpi import source
from kpi.couch import AGGREGATES, MANIFESTS, QUARANTINE, RAW, CouchStore, StoreError
from kpi.devserver import free_port
from kpi.ingest import extract_and_store, reaggregate_day
from kpi.source import HOUR_MS, SourceError, check_row
from tests.conftest import FAKE_BAD_RATE, FAKE_PER_DAY, FAKE_SEED
from tests.unit.kpi_helpers import fetch_day

pytestmark = pytest.mark.integration
DAY = date(2026, 10, 2)


def expected_rows(day: date) -> list[tuple[str, dict]]:
    return blobs_for_day(FAKE_SEED, day, FAKE_PER_DAY, FAKE_BAD_RATE)


def test_fetch_day_returns_exactly_the_generated_day(settings):
    rows = fetch_day(settings, DAY)
    assert [(r["id"], {k: v for k, v in r["value"].items() if k[0] != "_"}) for r in rows] == (
        expected_rows(DAY)
    )


@pytest.mark.parametrize("fault", ["500", "503", "truncate", "garbage", "slow", "disconnect"])
def test_transient_faults_are_retried(settings, fake_app, fault):
    fake_app.state.faults.script(fault, fault)  # two failures, the third attempt succeeds
    rows = fetch_day(replace(settings, fetch_chunk_hours=24), DAY)
    assert len(rows) == len(expected_rows(DAY))
    assert fake_app.state.faults.injected == [fault, fault]


def test_persistent_failure_names_url_and_day(settings, fake_app):
    fake_app.state.faults.script("500", "500", "500")
    with pytest.raises(SourceError) as caught:
        fetch_day(replace(settings, fetch_chunk_hours=24), DAY)
    message = str(caught.value)
    assert "2026-10-02" in message and settings.source_url in message and "HTTP 500" in message


def test_unreachable_source_fails_clearly(settings):
    dead = replace(settings, source_url=f"http://127.0.0.1:{free_port()}/wsapi/interaction_data")
    with pytest.raises(SourceError, match="after 3 attempts"):
        fetch_day(dead, DAY)


def test_store_day_is_idempotent(settings):
    store = CouchStore(settings)
    first = extract_and_store(DAY, settings)
    raw_first = list(store.day_docs(RAW, DAY))
    second = extract_and_store(DAY, settings)
    raw_second = list(store.day_docs(RAW, DAY))
    assert raw_second == raw_first  # same ids, same content, same _rev: nothing rewritten
    assert second["written"] == 0 and first["written"] > 0
    assert {k: v for k, v in first.items() if k != "written"} == {
        k: v for k, v in second.items() if k != "written"
    }


def test_manifest_reconciles_with_the_source(settings):
    manifest = extract_and_store(DAY, settings)
    rows = expected_rows(DAY)
    verdicts = Counter(check_row({"id": i, "value": b}).status for i, b in rows)
    assert manifest["fetched"] == len(rows)
    assert manifest["rejected_invalid"] == verdicts["rejected"] > 0
    assert manifest["stored"] == verdicts["ok"] + verdicts["skipped"]
    assert manifest["skipped_empty_stream"] == verdicts["skipped"] > 0
    assert manifest["duplicate"] == 0
    store = CouchStore(settings)
    assert len(list(store.day_docs(RAW, DAY))) == manifest["stored"]
    quarantined = list(store.day_docs(QUARANTINE, DAY))
    assert len(quarantined) == manifest["rejected_invalid"]
    assert all(doc["reason"] and doc["row"]["id"] for doc in quarantined)
    assert sum(manifest["rejected_reasons"].values()) == manifest["rejected_invalid"]


def test_a_duplicate_row_is_counted_not_stored_twice(settings, fake_app, monkeypatch):
    monkeypatch.setattr(source, "FIRST_PAGE_MS", 24 * HOUR_MS)  # one request: the whole day
    store = fake_app.state.store
    original_range = store.range

    def doubled(start, end):
        rows = original_range(start, end)
        return rows + rows[:3]

    store.range = doubled
    manifest = extract_and_store(DAY, replace(settings, fetch_chunk_hours=24))
    assert manifest["duplicate"] == 3
    assert manifest["fetched"] == manifest["stored"] + manifest["rejected_invalid"] + 3


def test_aggregating_twice_leaves_the_same_document(settings):
    extract_and_store(DAY, settings)
    store = CouchStore(settings)
    reaggregate_day(DAY, settings)
    first = store.get(AGGREGATES, DAY.isoformat())
    quality = reaggregate_day(DAY, settings)
    assert store.get(AGGREGATES, DAY.isoformat()) == first  # same _rev too
    manifest = store.get(MANIFESTS, DAY.isoformat())
    assert quality["aggregated"] == manifest["stored"] - manifest["skipped_empty_stream"]


def test_database_names_start_with_the_prefix(settings, couchdb_url):
    extract_and_store(DAY, settings)
    names = [n for n in httpx.get(f"{couchdb_url}/_all_dbs").json()
             if n.startswith(settings.db_prefix)]
    assert sorted(names) == sorted(f"{settings.db_prefix}_{k}" for k in
                                   ("raw", "quarantine", "manifests", "aggregates", "parts",
                                        "removed"))


def test_unreachable_couchdb_fails_clearly_without_the_password(settings):
    dead = replace(settings, couchdb_url=f"http://admin:s3cret@127.0.0.1:{free_port()}")
    with pytest.raises(StoreError) as caught:
        extract_and_store(DAY, dead)
    assert "s3cret" not in str(caught.value) and "admin:***@" in str(caught.value)


def test_a_write_whose_answer_was_lost_is_not_an_error(settings):
    """The retry of a `_bulk_docs` the server applied gets conflicts: same content = success."""
    store = CouchStore(settings)
    store.ensure_databases()
    docs = [{"_id": f"2026-10-02:lost{n}", "kpiggybank_id": f"lost{n}", "blob": {"n": n}}
            for n in range(5)]
    assert store.upsert(RAW, docs).written == 5
    again = store.upsert(RAW, docs, present=set())  # as if unknown: written without a _rev
    assert (again.written, again.unchanged) == (0, 5)
    changed = [{**doc, "blob": {"n": -1}} for doc in docs[:2]]
    third = store.upsert(RAW, changed, present=set())  # other content: overwritten
    assert (third.written, third.unchanged) == (2, 0)
    assert store.get(RAW, "2026-10-02:lost0")["blob"] == {"n": -1}


def test_two_extracts_of_one_day_at_once_end_as_one(settings):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: extract_and_store(DAY, settings), range(2)))
    store = CouchStore(settings)
    assert results[0]["stored"] == results[1]["stored"]
    assert len(list(store.day_docs(RAW, DAY))) == results[0]["stored"]
    assert extract_and_store(DAY, settings)["written"] == 0  # nothing left to repair


def test_aggregates_written_while_storing_equal_a_full_read(settings):
    manifest = extract_and_store(DAY, settings)
    store = CouchStore(settings)
    one_pass = store.get(AGGREGATES, DAY.isoformat())
    assert one_pass["quality"]["aggregated"] == manifest["aggregated"] > 0
    reaggregate_day(DAY, settings)  # stage the stored documents again, read back from CouchDB
    assert store.get(AGGREGATES, DAY.isoformat()) == one_pass  # same content, same _rev


def _row(doc_id, event_stream, ms=1790899200000 + 3_600_000):  # 2026-10-02 01:00 UTC
    return {"id": doc_id, "key": ms,
            "value": {"_id": doc_id, "timestamp": ms, "event_stream": event_stream}}


@pytest.mark.parametrize("windows", [24, 6])  # one fetch window, and several
def test_a_row_delivered_n_times_counts_once_in_its_class_and_n_minus_1_as_duplicate(
    settings, fake_app, windows
):
    valid = _row("a" * 32, [["screen.rp_info", 1]])
    invalid = _row("b" * 32, "not a list")
    other_invalid = _row("b" * 32, [[1, 2]])  # same id, other content: it replaces the first
    no_id = {"key": valid["key"], "value": {"timestamp": "soon"}}  # keyed by its content
    sequence = [valid, invalid, invalid, invalid, valid, no_id, no_id, other_invalid,
                other_invalid, valid]
    fake_app.state.store.range = lambda start, end: [
        r for r in sequence if (start is None or r["key"] >= start)
        and (end is None or r["key"] <= end)]
    manifest = extract_and_store(DAY, replace(settings, fetch_chunk_hours=windows))
    counts = {k: manifest[k] for k in ("fetched", "stored", "rejected_invalid", "duplicate")}
    # a (valid) ×3, b ×5 (invalid, its last content another invalid one), the id-less row ×2
    assert counts == {"fetched": 10, "stored": 1, "rejected_invalid": 2, "duplicate": 7}
    quarantined = {doc["_id"]: doc for doc in CouchStore(settings).day_docs(QUARANTINE, DAY)}
    assert len(quarantined) == 2
    assert quarantined[f"{DAY}:{'b' * 32}"]["row"] == other_invalid  # the last delivery wins
    assert manifest["rejected_reasons"] == {"event_stream item name is not a string": 1,
                                            "row is not an object with a string id": 1}
