"""Row validation (SPEC D10), day windows and the processing-day rule."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kpi.airflow import processing_day
from kpi.days import DAY_MS, day_window_ms, days_between, utc_day_of
from kpi.source import (
    BAD_TIMESTAMP,
    RowCheck,
    accepted_by_source,
    blob_of,
    check_row,
    chunk_windows,
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


# Fetch windows by floor: a row belongs to the window holding floor(timestamp), so a fractional
# timestamp between two windows' integer bounds is never lost.

WINDOW_DAY = date(2026, 10, 7)
SOURCE_URL = "http://kpiggybank.test/wsapi/interaction_data"


def in_process_client(app, requests: list | None = None, **overrides):
    """A `KpiggybankClient` whose requests `app` answers in process; each (start, end) asked
    is appended to `requests`."""
    import httpx
    from starlette.testclient import TestClient

    from kpi.settings import Settings
    from kpi.source import KpiggybankClient

    app_client = TestClient(app)

    def forward(request: httpx.Request) -> httpx.Response:
        params = dict(request.url.params)
        if requests is not None:
            requests.append((int(params["start"]), int(params["end"])))
        answer = app_client.get(request.url.path, params=params)
        return httpx.Response(answer.status_code, content=answer.content,
                              headers={"content-type": answer.headers["content-type"]})

    settings = Settings(source_url=SOURCE_URL, retry_attempts=1, retry_backoff=0.01,
                        **{"fetch_chunk_hours": 6, **overrides})
    return KpiggybankClient(settings, transport=httpx.MockTransport(forward))


def tagged(timestamp: float, tag: str) -> dict:
    return {"timestamp": timestamp, "event_stream": [["screen.rp_info", 0]], "tag": tag}


def tag_of(row: dict) -> str | None:
    return row["value"].get("tag") if isinstance(row.get("value"), dict) else None


def source_with_three_days(seed: int = 5):
    """The fake source holding the day before, `WINDOW_DAY` and the day after."""
    from fake_source import create_app

    return create_app(seed=seed, per_day=80, days=3, bad_rate=0.0,
                      last_day=WINDOW_DAY + timedelta(days=1))


def test_inner_window_bounds_end_on_the_hour():
    from kpi.settings import Settings
    from kpi.source import HOUR_MS, day_windows

    start, end = day_window_ms(WINDOW_DAY)
    windows = day_windows(Settings(fetch_chunk_hours=6), WINDOW_DAY)
    assert windows == [(start, start + 6 * HOUR_MS),
                       (start + 6 * HOUR_MS + 1, start + 12 * HOUR_MS),
                       (start + 12 * HOUR_MS + 1, start + 18 * HOUR_MS),
                       (start + 18 * HOUR_MS + 1, end)]
    for hours in range(1, 25):
        windows = day_windows(Settings(fetch_chunk_hours=hours), WINDOW_DAY)
        assert windows[0][0] == start and windows[-1][1] == end
        assert all(b[0] == a[1] + 1 for a, b in zip(windows, windows[1:], strict=False))
        assert [high for _, high in windows[:-1]] == [
            start + k * hours * HOUR_MS for k in range(1, len(windows))]
        assert len(windows) == -(-24 // hours)  # as `Settings` counts a night's windows


def test_each_request_asks_for_one_ms_beyond_its_window():
    from kpi.settings import Settings
    from kpi.source import day_windows
    from tests.unit.kpi_helpers import fetch_day

    requests: list = []
    with in_process_client(source_with_three_days(), requests) as client:
        fetch_day(client.settings, WINDOW_DAY, client)
    windows = day_windows(Settings(fetch_chunk_hours=6), WINDOW_DAY)
    assert requests == [(low, high + 1) for low, high in windows]


def test_rows_between_integer_window_bounds_are_counted_once_in_the_right_window_and_day():
    from kpi.source import day_windows, fetch_rows

    app = source_with_three_days()
    day_start, day_end = day_window_ms(WINDOW_DAY)
    with in_process_client(app) as client:
        windows = day_windows(client.settings, WINDOW_DAY)
        inner_end = windows[1][1]  # 12:00, the end of the second window
        expected = {  # tag: (timestamp, day, window index within that day)
            "inner end + 0.5": (inner_end + 0.5, WINDOW_DAY, 1),
            "inner end + 1": (inner_end + 1, WINDOW_DAY, 2),
            "inner end + 1.5": (inner_end + 1.5, WINDOW_DAY, 2),
            "first end + 0.5": (windows[0][1] + 0.5, WINDOW_DAY, 0),
            "third end + 0.25": (windows[2][1] + 0.25, WINDOW_DAY, 2),
            "day start": (day_start, WINDOW_DAY, 0),
            "day end": (day_end, WINDOW_DAY, 3),
            "day end + 0.5": (day_end + 0.5, WINDOW_DAY, 3),
            "day start - 0.5": (day_start - 0.5, WINDOW_DAY - timedelta(days=1), 3),
            "next midnight": (day_end + 1, WINDOW_DAY + timedelta(days=1), 0),
        }
        app.state.store.add([tagged(timestamp, tag)
                             for tag, (timestamp, _, _) in expected.items()])
        seen: dict[str, list] = {tag: [] for tag in expected}
        ids = []
        for day in (WINDOW_DAY - timedelta(days=1), WINDOW_DAY, WINDOW_DAY + timedelta(days=1)):
            for index, window in enumerate(day_windows(client.settings, day)):
                for fetched in fetch_rows(client, day, window):
                    ids.append(fetched["id"])
                    if tag_of(fetched) in seen:
                        seen[tag_of(fetched)].append((day, index))
    assert seen == {tag: [(day, index)] for tag, (_, day, index) in expected.items()}
    assert {tag: utc_day_of(timestamp) for tag, (timestamp, _, _) in expected.items()} == {
        tag: day for tag, (_, day, _) in expected.items()}
    assert len(ids) == len(set(ids)) == len(app.state.store.range(None, None))


def test_a_days_windows_together_return_exactly_the_rows_of_the_day_by_floor():
    from kpi.source import day_windows, fetch_rows
    from tests.unit.kpi_helpers import fetch_day

    app = source_with_three_days(seed=9)
    day_start, day_end = day_window_ms(WINDOW_DAY)
    with in_process_client(app, fetch_chunk_hours=5) as client:
        bounds = [edge for window in day_windows(client.settings, WINDOW_DAY) for edge in window]
        offsets = (-1, -0.5, -0.001, 0, 0.001, 0.5, 0.999, 1, 1.5)
        app.state.store.add([tagged(edge + offset, f"{edge}{offset:+}")
                             for edge in {*bounds, day_start, day_end + 1}
                             for offset in offsets])
        every_row = app.state.store.range(None, None)
        of_the_day = [r for r in every_row if day_start <= math.floor(r["key"]) <= day_end]
        assert any(not float(r["key"]).is_integer() for r in of_the_day)
        by_window = [fetch_rows(client, WINDOW_DAY, window)
                     for window in day_windows(client.settings, WINDOW_DAY)]
        assert [row for rows in by_window for row in rows] == of_the_day
        assert fetch_day(client.settings, WINDOW_DAY, client) == of_the_day
    for (low, high), rows in zip(day_windows(client.settings, WINDOW_DAY), by_window,
                                 strict=True):
        assert all(low <= math.floor(row["key"]) <= high for row in rows)


def test_the_cut_keeps_rows_below_the_limit_and_rows_without_a_numeric_key():
    from kpi.source import rows_before

    kept = [{"key": 5}, {"key": 5.999}, {"key": True}, {"key": "6"}, {"key": None},
            {"value": {"timestamp": 7}}, "not a row", ["key", 9]]
    assert rows_before([*kept[:2], {"key": 6}, {"key": 6.5}, *kept[2:]], 6) == kept


def test_a_row_is_cut_on_its_key_so_it_comes_once_whatever_its_blob_holds():
    """The key is the timestamp KPIggybank compared: a row keyed on a window's end + 1 whose
    blob has no usable timestamp comes once (in the next window), and is quarantined there."""
    from kpi.source import check_row, day_windows, fetch_rows

    app = source_with_three_days()
    with in_process_client(app) as client:
        windows = day_windows(client.settings, WINDOW_DAY)
        end = windows[1][1]
        odd = [(end + 1, {"id": "text", "key": end + 1, "value": {"timestamp": "soon"}}),
               (end + 0.5, {"id": "none", "key": end + 0.5, "value": {"event_stream": []}})]
        app.state.store.add_rows(odd)
        found = [(index, r["id"]) for index, window in enumerate(windows)
                 for r in fetch_rows(client, WINDOW_DAY, window) if r["id"] in {"text", "none"}]
    assert found == [(1, "none"), (2, "text")]
    assert {check_row(r, WINDOW_DAY).reason for _, r in odd} == {BAD_TIMESTAMP}


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 24),
       st.lists(st.tuples(st.integers(-2, 26), st.sampled_from([-1, 0, 1]),
                          st.sampled_from([0, 0.001, 0.25, 0.5, 0.999])), max_size=40))
def test_windows_cut_by_floor_partition_any_timestamps(hours, places):
    """Simulated range queries (start <= key <= end, as KPIggybank compares): whatever the chunk
    size, every row near any hour mark lands in exactly one window of its floor's day."""
    from kpi.source import HOUR_MS, chunk_windows, rows_before

    day_start, day_end = day_window_ms(WINDOW_DAY)
    keys = [day_start + hour * HOUR_MS + ms + fraction for hour, ms, fraction in places]
    rows = [{"id": str(n), "key": key} for n, key in enumerate(keys)]
    windows = chunk_windows(day_start, day_end, hours * HOUR_MS)
    got = [r["id"] for low, high in windows
           for r in rows_before([r for r in rows if low <= r["key"] <= high + 1], high + 1)]
    assert sorted(got) == sorted(r["id"] for r in rows
                                 if utc_day_of(r["key"]) == WINDOW_DAY)


class _Rate:
    """A source answering `rows_per_hour(low)` rows an hour (keyed, as KPIggybank's) for a
    window starting at `low`; the windows asked for, in order."""

    def __init__(self, rows_per_hour) -> None:
        self.rows_per_hour = rows_per_hour
        self.asked: list[tuple[int, int]] = []

    def fetch_window(self, low: int, high: int) -> list:
        from kpi.source import HOUR_MS

        self.asked.append((low, high))
        count = round(self.rows_per_hour(low) * (high - low + 1) / HOUR_MS)
        return [{"id": "a", "key": low, "value": {}}] * count


def _pages(hours: int, rows_per_hour, page_rows: int = 20_000) -> list[tuple[int, int]]:
    """The pages of WINDOW_DAY fetched from a source of `rows_per_hour` (a number, or a
    function of the page's first millisecond) rows an hour."""
    from kpi.settings import Settings
    from kpi.source import DayPages

    rate = rows_per_hour if callable(rows_per_hour) else (lambda low: rows_per_hour)
    source = _Rate(rate)
    pages = DayPages(Settings(fetch_chunk_hours=hours), WINDOW_DAY, page_rows)
    for page in pages:
        pages.fetch(source, page)
    return source.asked


@pytest.mark.parametrize("hours", [1, 6, 24])
@pytest.mark.parametrize("rows_per_hour", [0, 190, 8_000, 45_000, 400_000])
def test_pages_cover_the_day_exactly_on_ten_minute_marks_within_windows(hours, rows_per_hour):
    from kpi.settings import Settings
    from kpi.source import day_windows

    start, end = day_window_ms(WINDOW_DAY)
    pages = _pages(hours, rows_per_hour)
    assert pages[0][0] == start and pages[-1][1] == end
    assert all(b[0] == a[1] + 1 for a, b in zip(pages, pages[1:], strict=False))
    assert all((high - start) % 600_000 == 0 for _, high in pages[:-1])
    window_ends = {high for _, high in day_windows(Settings(fetch_chunk_hours=hours), WINDOW_DAY)}
    assert window_ends <= {high for _, high in pages}  # no page crosses a window's end


def test_a_small_day_is_asked_for_in_its_windows_and_a_big_one_a_page_at_a_time():
    """Each page cut by the rate of the page before it, once that one is fetched."""
    from kpi.source import HOUR_MS

    start, end = day_window_ms(WINDOW_DAY)
    small = _pages(6, 190)  # 4,500 blobs a day: the first hour, doubling, then its windows
    assert small == [(start, start + HOUR_MS), (start + HOUR_MS + 1, start + 3 * HOUR_MS),
                     (start + 3 * HOUR_MS + 1, start + 6 * HOUR_MS),
                     (start + 6 * HOUR_MS + 1, start + 12 * HOUR_MS),
                     (start + 12 * HOUR_MS + 1, start + 18 * HOUR_MS),
                     (start + 18 * HOUR_MS + 1, end)]
    big = _pages(6, 45_000)  # 1,000,000 a day: 20,000 rows are 26 minutes, cut to 20
    assert {high - low for low, high in big[1:-1]} == {20 * 60_000 - 1}
    assert len(big) == 1 + (24 * 60 - 60) // 20


def test_after_an_empty_page_a_page_at_most_doubles():
    """An outage's empty hours do not make the next page a whole window of a busy day."""
    from kpi.source import HOUR_MS

    start, _ = day_window_ms(WINDOW_DAY)
    busy = _pages(24, lambda low: 0 if low < start + 2 * HOUR_MS else 45_000)
    spans = [high - low + 1 for low, high in busy]
    # two empty pages (the test source's rate is its page's first hour's), doubling; then,
    # once a busy page told its rate, pages of 20,000 rows (26.7 minutes, cut to 20)
    assert spans[:4] == [HOUR_MS + 1, 2 * HOUR_MS, 4 * HOUR_MS, 20 * 60_000]
    assert set(spans[4:-1]) == {20 * 60_000}


def test_a_keyless_row_in_two_pages_of_a_window_is_taken_once_but_once_per_window():
    """A row with no numeric key comes back in both requests sharing a millisecond (a page's
    end + 1 is the next page's start): the next page of the same window drops it, the first
    page of the next window keeps it (as the windowed path, a task per window, does)."""
    from kpi.settings import Settings
    from kpi.source import DayPages

    keyless = {"id": "odd", "key": "not a number", "value": {"timestamp": "x"}}

    class Source:
        def fetch_window(self, low, high):
            return [{"id": str(low), "key": low, "value": {}}, dict(keyless)]

    pages = DayPages(Settings(fetch_chunk_hours=12), WINDOW_DAY, page_rows=1)
    window_starts = {low for low, _ in pages.windows}
    got = {page[0]: pages.fetch(Source(), page) for page in pages}
    assert len(got) > 4 and len(window_starts) == 2
    for low, rows in got.items():
        assert (keyless in rows) == (low in window_starts), low
        assert {"id": str(low), "key": low, "value": {}} in rows  # keyed rows: all kept
