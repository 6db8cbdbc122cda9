"""What makes a big day fast without changing what is stored: documents written in id order,
in runs, held encoded; the day check in integer arithmetic. Without a server: a transport
records the writes."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime, timedelta

import httpx
import orjson
import pytest

from kpi.couch import (
    QUARANTINE,
    RAW,
    CouchStore,
    DocumentTooLarge,
    Encoded,
    StoreError,
    content_digest,
    content_of,
    dumps,
)
from kpi.days import utc_day_of
from kpi.rows import TOO_LARGE, encoded, storable
from kpi.settings import Settings
from kpi.snapshot import Received, _as_received, store_rows
from kpi.source import check_row

DAY = date(2026, 10, 7)


START_MS = 1_791_331_200_000  # 2026-10-07T00:00Z


def row(row_id: object, n: int = 0) -> dict:
    """A valid row of DAY, `n` ms after its start."""
    return {"id": row_id, "key": START_MS + n,
            "value": {"timestamp": START_MS + n, "event_stream": [["a", n]]}}


def recording_store(bulk_size: int = 2) -> tuple[CouchStore, list[list[str]]]:
    """A store whose server takes every `_bulk_docs` (and has no document); the ids of each
    write, in the order the server got them."""
    writes: list[list[str]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/_bulk_docs"):
            docs = orjson.loads(request.content)["docs"]
            writes.append([doc["_id"] for doc in docs])
            return httpx.Response(201, json=[{"id": doc["_id"], "rev": "1-a", "ok": True}
                                             for doc in docs])
        return httpx.Response(200, json={"rows": []})

    settings = Settings(couchdb_url="http://couch.test:5984", bulk_size=bulk_size,
                        couchdb_writers=1)
    return CouchStore(settings, transport=httpx.MockTransport(handle)), writes


def test_runs_are_written_in_id_order_and_a_repeated_id_keeps_its_last_delivery():
    store, writes = recording_store()
    windows = [[row("c", 1), row("a", 2)], [row("b", 3), row("a", 4)], [row("e", 5)],
               [row("d", 6)]]
    aggregated: list[list[int]] = []

    def aggregate(blobs: list[dict]) -> None:
        aggregated.append([blob["timestamp"] - START_MS for blob in blobs])

    snapshot = store_rows(store, DAY, windows, set(), set(), on_stored=aggregate, run_rows=4,
                          first_run=4)
    prefix = "2026-10-07:"
    assert writes == [[prefix + "a", prefix + "b"], [prefix + "c", prefix + "e"], [prefix + "d"]]
    assert snapshot.counts["duplicate"] == 1 and snapshot.written == 5
    # each window's blobs are aggregated with it; the replaced "a" (window 1) asks for a restage
    assert aggregated == [[1, 2], [3, 4], [5], [6]] and snapshot.restage


def test_runs_grow_from_the_first_and_a_big_window_closes_runs_inside_it():
    """Runs of at least 1, 2, 4, 4 documents (first_run 1, run_rows 4), each sorted; a window
    of 7 rows is validated (and aggregated) 2 rows at a time, so runs close inside it."""
    store, writes = recording_store(bulk_size=10)
    names = "gfedcba"
    windows = [[row(name, n) for n, name in enumerate(names)], [row("z", 8), row("y", 9)],
               [row("x", 10)]]
    aggregated: list[list[int]] = []

    def aggregate(blobs: list[dict]) -> None:
        aggregated.append([blob["timestamp"] - START_MS for blob in blobs])

    snapshot = store_rows(store, DAY, windows, set(), set(), on_stored=aggregate, run_rows=4,
                          first_run=1, slice_rows=2)
    assert [[doc_id.removeprefix("2026-10-07:") for doc_id in ids] for ids in writes] == [
        ["f", "g"], ["d", "e"], ["a", "b", "c", "y", "z"], ["x"]]
    assert aggregated == [[0, 1], [2, 3], [4, 5], [6], [8, 9], [10]]
    assert windows[0] == [] and snapshot.written == 10


def test_a_repeat_inside_one_window_replaces_its_blob_before_it_is_aggregated():
    store, _ = recording_store()
    aggregated: list[list[int]] = []

    def aggregate(blobs: list[dict]) -> None:
        aggregated.append([blob["timestamp"] - START_MS for blob in blobs])

    snapshot = store_rows(store, DAY, [[row("a", 1), row("a", 2)]], set(), set(),
                          on_stored=aggregate)
    assert aggregated == [[2]] and not snapshot.restage


def test_a_later_delivery_moving_a_written_row_deletes_it_where_it_was_only():
    """A row an earlier run wrote to raw, delivered again invalid, is deleted from raw (and
    quarantined); a row that changes database inside the run not yet written is never
    looked up for deletion, however often it changes."""
    deleted: list[tuple[str, list[str]]] = []  # (database, ids) each deletion looked up

    def handle(request: httpx.Request) -> httpx.Response:
        database, _, what = request.url.path.strip("/").partition("/")
        if what == "_bulk_docs":
            docs = orjson.loads(request.content)["docs"]
            return httpx.Response(201, json=[{"id": doc["_id"], "rev": "1-a", "ok": True}
                                             for doc in docs])
        if what == "_all_docs" and request.method == "POST":
            deleted.append((database, orjson.loads(request.content)["keys"]))
        return httpx.Response(200, json={"rows": []})

    settings = Settings(couchdb_url="http://couch.test:5984", couchdb_writers=1)
    store = CouchStore(settings, transport=httpx.MockTransport(handle))
    invalid = {"id": "a", "key": START_MS, "value": {"timestamp": "noon"}}
    assert check_row(invalid, DAY).status == "rejected"
    windows = [[row("a"), row("b")],
               [invalid, row("c"), {**invalid, "id": "c"}, row("c", 1), {**invalid, "id": "c"}]]
    snapshot = store_rows(store, DAY, windows, set(), set(), run_rows=2, first_run=2)
    prefix = "2026-10-07:"
    assert deleted == [(store.name(RAW), [prefix + "a"])]
    assert snapshot.raw_ids == {prefix + "b"}
    assert snapshot.quarantine_ids == {prefix + "a", prefix + "c"}


def keeping_store(refuse: bytes = b"") -> tuple[CouchStore, dict[str, dict[str, bytes]]]:
    """A store whose server keeps what it is written and deletes what it is told (database →
    id → document); a raw document whose JSON holds `refuse` is answered 413 (too large)."""
    held: dict[str, dict[str, bytes]] = {}

    def handle(request: httpx.Request) -> httpx.Response:
        database, _, what = request.url.path.strip("/").partition("/")
        documents = held.setdefault(database, {})
        if what == "_bulk_docs":
            answers = []
            for doc in orjson.loads(request.content)["docs"]:
                if refuse and refuse in orjson.dumps(doc) and database.endswith("_raw"):
                    answers.append({"id": doc["_id"], "error": "document_too_large",
                                    "reason": doc["_id"]})
                    continue
                if doc.get("_deleted"):
                    documents.pop(doc["_id"], None)
                else:
                    documents[doc["_id"]] = orjson.dumps(doc)
                answers.append({"id": doc["_id"], "rev": "1-a", "ok": True})
            return httpx.Response(201, json=answers)
        if what == "_all_docs" and request.method == "POST":
            return httpx.Response(200, json={"rows": [
                {"id": key, "key": key, "value": {"rev": "1-a"}} if key in documents
                else {"key": key, "error": "not_found"}
                for key in orjson.loads(request.content)["keys"]]})
        return httpx.Response(200, json={"rows": []})

    settings = Settings(couchdb_url="http://couch.test:5984", couchdb_writers=1)
    return CouchStore(settings, transport=httpx.MockTransport(handle)), held


INVALID_A = {"id": "a", "key": START_MS, "value": {"timestamp": "noon"}}


@pytest.mark.parametrize(("later", "raw", "quarantined"), [
    # changed in raw, then invalid, in one later run: the earlier run's raw copy is deleted
    ([row("a", 1), INVALID_A], {"b"}, {"a"}),
    # ... then valid again: it ends in raw, as its last delivery
    ([row("a", 1), INVALID_A, row("a", 2)], {"a", "b"}, set()),
    # invalid, then valid again in the same later run
    ([INVALID_A, row("a", 2)], {"a", "b"}, set()),
])
def test_a_row_an_earlier_run_stored_ends_only_where_its_last_delivery_goes(later, raw,
                                                                            quarantined):
    store, held = keeping_store()
    assert check_row(INVALID_A, DAY).status == "rejected"
    snapshot = store_rows(store, DAY, [[row("a"), row("b")], later], set(), set(), run_rows=2,
                          first_run=2)
    prefix = "2026-10-07:"
    assert snapshot.raw_ids == {prefix + doc_id for doc_id in raw}
    assert snapshot.quarantine_ids == {prefix + doc_id for doc_id in quarantined}
    assert set(held[store.name(RAW)]) == snapshot.raw_ids
    assert set(held.get(store.name(QUARANTINE), {})) == snapshot.quarantine_ids


def test_a_changed_repeat_refused_as_too_large_leaves_no_earlier_copy_in_raw():
    store, held = keeping_store(refuse=b"huge")
    huge = {"id": "a", "key": START_MS + 1,
            "value": {"timestamp": START_MS + 1, "event_stream": [["huge", 1]]}}
    snapshot = store_rows(store, DAY, [[row("a"), row("b")], [huge]], set(), set(), run_rows=2,
                          first_run=2)
    prefix = "2026-10-07:"
    assert snapshot.raw_ids == {prefix + "b"} and snapshot.quarantine_ids == {prefix + "a"}
    assert set(held[store.name(RAW)]) == {prefix + "b"}
    assert orjson.loads(held[store.name(QUARANTINE)][prefix + "a"])["reason"] == TOO_LARGE


def test_the_rows_of_windows_before_a_failing_one_are_still_written():
    store, writes = recording_store(bulk_size=10)

    def windows():
        yield [row("z"), row("y")]
        raise RuntimeError("window 2 failed")

    with pytest.raises(RuntimeError, match="window 2"):
        store_rows(store, DAY, windows(), set(), set())
    assert writes == [["2026-10-07:y", "2026-10-07:z"]]


@pytest.mark.parametrize("offset_ms", [-1, -0.5, 0, 0.5, 999, 1000, 86_399_999, 86_399_999.9,
                                       86_400_000, 86_400_000.5])
def test_the_day_check_agrees_with_utc_day_of_at_the_edges(offset_ms):
    start = int(datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC).timestamp() * 1000)
    timestamp = start + offset_ms
    candidate = {"id": "x", "value": {"timestamp": timestamp, "event_stream": [["a", 1]]}}
    on_day = utc_day_of(timestamp) == DAY
    assert (check_row(candidate, DAY).status == "ok") is on_day
    assert (check_row(candidate, DAY + timedelta(days=1)).status == "ok") is (
        utc_day_of(timestamp) == DAY + timedelta(days=1))


def test_an_encoded_blob_equals_its_value_digests_the_same_and_is_written_as_is():
    blob = {"z": 1, "a": [1.5, {"y": None, "b": "é"}], "big": 2**63}
    value, data = encoded(blob)
    assert value is blob and data == orjson.dumps(blob, option=orjson.OPT_SORT_KEYS)
    doc = {"_id": "d:1", "kpiggybank_id": "1", "blob": Encoded(data)}
    plain = {"_id": "d:1", "kpiggybank_id": "1", "blob": blob}
    assert doc == plain and plain == doc and content_of(plain) == content_of(doc)
    assert {**plain, "blob": {**blob, "z": 2}} != doc
    assert content_digest(doc) == content_digest(plain)
    assert orjson.loads(dumps({"docs": [doc]})) == {"docs": [plain]}
    assert storable(blob)[1] == hashlib.sha1(data).hexdigest()


def test_a_value_json_cannot_encode_is_cut_and_encoded():
    deep: list = []
    for _ in range(300):
        deep = [deep]
    value, data = encoded({"deep": deep})
    assert orjson.loads(data) == value and value != {"deep": deep}


@pytest.mark.parametrize("received", [
    {"id": "k1", "key": 5, "value": {"_id": "k1", "_rev": "1-a", "timestamp": 5, "x": [1]}},
    {"id": "k1", "value": {"timestamp": 5, "x": [1]}},
    {"id": "k1", "key": None, "value": {"_rev": "2-b", "timestamp": 5}},
])
def test_a_raw_row_kept_small_is_rebuilt_whole_for_a_413(received):
    blob = {k: v for k, v in received["value"].items() if k not in ("_id", "_rev")}
    kept = _as_received(received, whole=True)
    assert isinstance(kept, Received)
    doc = {"_id": "2026-10-07:k1", "kpiggybank_id": "k1", "blob": Encoded(encoded(blob)[1])}
    assert kept.row(doc) == received


@pytest.mark.parametrize("received", [
    {"id": "k1", "key": 5, "value": {"timestamp": 5}, "extra": 1},  # more than id, key, value
])
def test_other_rows_are_kept_as_received(received):
    assert _as_received(received, whole=True) is received
    assert _as_received(row("k"), whole=False) == row("k")


def failing_store(writers: int, answer: int = 503) -> tuple[CouchStore, list[str]]:
    """A store whose server answers every `_bulk_docs` with `answer`; the requests it got."""
    requests: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        requests.append(request.url.path)
        return httpx.Response(answer, json={"error": "unavailable"})

    settings = Settings(couchdb_url="http://couch.test:5984", bulk_size=10,
                        couchdb_writers=writers, retry_attempts=2, retry_backoff=0.0)
    return CouchStore(settings, transport=httpx.MockTransport(handle)), requests


@pytest.mark.parametrize("writers", [1, 2, 4])
def test_a_failing_write_stops_the_others_instead_of_retrying_every_chunk(writers):
    store, requests = failing_store(writers)
    docs = [{"_id": f"d{n:04d}", "n": n} for n in range(1000)]  # 100 chunks
    with pytest.raises(StoreError):
        store.upsert(RAW, docs, present=set())
    # each writer's chunk is tried retry_attempts times; chunks not started are dropped
    assert len(requests) <= 2 * writers


def too_large_store(refused: str, writers: int) -> CouchStore:
    """A store whose server writes every document but `refused` (answered 413 per document,
    as some servers do)."""

    def handle(request: httpx.Request) -> httpx.Response:
        docs = orjson.loads(request.content)["docs"]
        return httpx.Response(201, json=[
            {"id": doc["_id"], "error": "document_too_large", "reason": doc["_id"]}
            if doc["_id"] == refused else {"id": doc["_id"], "rev": "1-a", "ok": True}
            for doc in docs])

    settings = Settings(couchdb_url="http://couch.test:5984", bulk_size=10,
                        couchdb_writers=writers)
    return CouchStore(settings, transport=httpx.MockTransport(handle))


@pytest.mark.parametrize("writers", [1, 2])
def test_a_refusal_as_too_large_counts_what_was_written_nonetheless(writers):
    docs = [{"_id": f"d{n:04d}", "n": n} for n in range(35)]  # 4 chunks; d0012 in the 2nd
    with pytest.raises(DocumentTooLarge) as refused:
        too_large_store("d0012", writers).upsert(RAW, docs, present=set())
    assert refused.value.doc_id == "d0012"
    # the 1st chunk, and the 2nd but d0012; concurrently also the chunks after it
    assert refused.value.written == (19 if writers == 1 else 34)
