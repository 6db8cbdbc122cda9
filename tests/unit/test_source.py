"""Row validation (SPEC D10), day windows and the processing-day rule."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from kpi.pipeline import days_between, processing_day
from kpi.source import (
    BAD_TIMESTAMP,
    DAY_MS,
    RowCheck,
    accepted_by_source,
    blob_of,
    check_row,
    chunk_windows,
    day_window_ms,
    utc_day_of,
)

GOOD = {"timestamp": 1790812800000, "event_stream": [["screen.rp_info", 5]]}


def row(value, doc_id="abc"):
    return {"id": doc_id, "key": 1, "value": value}


@pytest.mark.parametrize(
    ("candidate", "status", "reason"),
    [
        (row(GOOD), "ok", ""),
        (row({**GOOD, "event_stream": []}), "skipped", "empty event_stream"),
        (row({"timestamp": 5}), "skipped", "empty event_stream"),
        ("not a row", "rejected", "row is not an object with a string id"),
        (row(GOOD, doc_id=7), "rejected", "row is not an object with a string id"),
        (row([1, 2]), "rejected", "blob is not a JSON object"),
        (row({**GOOD, "timestamp": 0}), "rejected", BAD_TIMESTAMP),
        (row({**GOOD, "timestamp": "1790812800000"}), "rejected",
         BAD_TIMESTAMP),
        (row({**GOOD, "timestamp": True}), "rejected",
         BAD_TIMESTAMP),
        (row({**GOOD, "timestamp": 1e300}), "rejected", BAD_TIMESTAMP),
        (row({**GOOD, "timestamp": float("nan")}), "rejected", BAD_TIMESTAMP),
        (row({"event_stream": [["a", 1]]}), "rejected",
         BAD_TIMESTAMP),
        (row({**GOOD, "event_stream": "screen.rp_info"}), "rejected",
         "event_stream is not a list"),
        (row({**GOOD, "event_stream": [["a", 1], "b"]}), "rejected",
         "event_stream item is not a [name, offset] pair"),
        (row({**GOOD, "event_stream": [[1, 1]]}), "rejected",
         "event_stream item name is not a string"),
    ],
)
def test_check_row(candidate, status, reason):
    assert check_row(candidate) == RowCheck(status, reason)


@pytest.mark.parametrize(
    ("blob", "source", "pipeline"),
    [
        (GOOD, True, "ok"),
        ({"timestamp": 5}, True, "skipped"),
        ({**GOOD, "event_stream": "screen.rp_info"}, True, "rejected"),  # stored, quarantined
        ({**GOOD, "timestamp": 1e300}, True, "rejected"),
        ({**GOOD, "timestamp": 0}, False, "rejected"),
        ({**GOOD, "timestamp": "1790812800000"}, False, "rejected"),
        ({**GOOD, "timestamp": True}, False, "rejected"),
        ({**GOOD, "timestamp": float("nan")}, False, "rejected"),
        ([GOOD], False, "rejected"),
    ],
)
def test_the_source_accepts_what_the_pipeline_may_still_quarantine(blob, source, pipeline):
    """One module decides both: KPIggybank's POST rule (the fake source uses it) is looser than
    the pipeline's, and nothing the source refuses would pass the pipeline."""
    assert accepted_by_source(blob) is source
    assert check_row(row(blob)).status == pipeline


def test_rows_from_another_day_are_rejected():
    assert check_row(row(GOOD), date(2026, 10, 1)).status == "ok"
    assert check_row(row(GOOD), date(2026, 10, 2)).reason == "timestamp outside the requested day"


def test_blob_of_drops_couchdb_fields():
    assert blob_of(row({**GOOD, "_id": "abc", "_rev": "1-x"})) == GOOD


def test_day_window_and_chunks_are_inclusive_and_contiguous():
    start, end = day_window_ms(date(2026, 10, 1))
    assert start == int(datetime(2026, 10, 1, tzinfo=UTC).timestamp() * 1000)
    assert end - start == DAY_MS - 1
    windows = chunk_windows(start, end, 7 * 3_600_000)
    assert windows[0][0] == start and windows[-1][1] == end
    assert all(b[0] == a[1] + 1 for a, b in zip(windows, windows[1:], strict=False))
    assert len(windows) == 4


def test_utc_day_of_midnight_edges():
    midnight = int(datetime(2026, 10, 2, tzinfo=UTC).timestamp() * 1000)
    assert utc_day_of(midnight) == date(2026, 10, 2)
    assert utc_day_of(midnight - 1) == date(2026, 10, 1)


def test_a_run_processes_the_day_before_its_logical_date():
    assert processing_day(datetime(2026, 11, 2, tzinfo=UTC)) == date(2026, 11, 1)
    assert processing_day("2026-11-02T00:00:00+00:00") == date(2026, 11, 1)
    assert processing_day(date(2026, 1, 1)) == date(2025, 12, 31)


def test_days_between_is_inclusive():
    assert days_between(date(2026, 10, 1), date(2026, 10, 3)) == [
        date(2026, 10, 1), date(2026, 10, 2), date(2026, 10, 3)
    ]
    with pytest.raises(ValueError, match="before start"):
        days_between(date(2026, 10, 3), date(2026, 10, 1))


def test_valid_json_a_fast_decoder_refuses_is_still_read():
    from kpi.source import decode_rows

    rows = decode_rows(b'[{"n": 1e400, "m": -1e400, "s": "de\\ud800", "i": 18446744073709551616,'
                       b' "f": 0.5}]')
    assert rows == [{"n": "1e400", "m": "-1e400", "s": "de\ud800", "i": 18446744073709551616,
                     "f": 0.5}]
    for garbage in (b'[{"n": NaN}]', b'[{"n": Infinity}]', b'[{"n": 1', b"<html>"):
        with pytest.raises(ValueError):
            decode_rows(garbage)


def test_numbers_beyond_any_double_and_deep_nesting_never_stall_or_crash_the_decoder():
    from kpi.source import decode_rows

    digits = "9" * 5000  # Python refuses to read an int this long by default
    assert decode_rows(f'[{{"n": {digits}, "m": -{digits}}}]'.encode()) == [
        {"n": digits, "m": f"-{digits}"}]
    with pytest.raises(ValueError, match="nested too deeply"):
        decode_rows(b"[" * 100_000 + b"]" * 100_000)


def test_an_id_with_an_unpaired_surrogate_is_not_usable():
    from kpi.source import check_row

    row = {"id": "a\ud800", "key": 1, "value": {"timestamp": 1, "event_stream": []}}
    assert check_row(row).reason == "row is not an object with a string id"


def test_the_fake_source_accepts_what_a_javascript_json_parser_accepts():
    from starlette.testclient import TestClient

    from fake_source import create_app

    client = TestClient(create_app(days=0))
    for number in ("1e400", "1" + "0" * 400, "123456789012345678901234567890"):
        data = f'{{"timestamp": 1790899200000, "number_sites_signed_in": {number}}}'
        assert client.post("/wsapi/interaction_data", data={"data": data}).status_code == 201
    assert client.post("/wsapi/interaction_data", data={"data": "{NaN}"}).status_code == 400
