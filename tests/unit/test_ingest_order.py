"""What makes a big day fast without changing what is stored: rows written in id order, runs
of them, documents held encoded, the day check in integer arithmetic (all without a server)."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime, timedelta

import orjson
import pytest

from kpi.couch import Encoded, content_digest, content_of, dumps
from kpi.ingest import _pooled
from kpi.rows import encoded, storable
from kpi.snapshot import Received, _as_received
from kpi.source import check_row, utc_day_of

DAY = date(2026, 10, 7)


def row(row_id: object, n: int = 0) -> dict:
    return {"id": row_id, "key": n, "value": {"timestamp": n, "event_stream": [["a", n]]}}


def test_runs_are_sorted_by_id_and_a_repeated_id_keeps_its_delivery_order():
    windows = [[row("c", 1), row("a", 2)], [row("b", 3), row("a", 4)], [row("d", 5)]]
    runs = list(_pooled(iter(windows), size=4))
    assert [[(r["id"], r["key"]) for r in run] for run in runs] == [
        [("a", 2), ("a", 4), ("b", 3), ("c", 1)], [("d", 5)]]


def test_rows_without_a_string_id_sort_first_in_their_delivery_order():
    odd = [{"id": 7}, None, "not a dict", {"value": 1}]
    runs = list(_pooled(iter([[row("b"), *odd[:2]], odd[2:]]), 100))
    assert runs == [[*odd, row("b")]]


def test_the_rows_of_windows_before_a_failing_one_are_still_yielded_sorted():
    def windows():
        yield [row("z"), row("y")]
        raise RuntimeError("window 2 failed")

    pooled = _pooled(windows(), size=1000)
    assert [r["id"] for r in next(pooled)] == ["y", "z"]
    with pytest.raises(RuntimeError, match="window 2"):
        next(pooled)


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
