"""Extract: fetch one UTC day of interaction-data rows from KPIggybank, and validate them.

A row belongs to the UTC day of floor(timestamp / 1000) s and, within it, to the fetch window
whose integer range [low, high] (ms, inclusive) holds floor(timestamp). A day's windows end on
its `fetch_chunk_hours` marks, the last on the day's last millisecond, each next one starting
1 ms later (SPEC §3.1). KPIggybank compares `start <= timestamp <= end` numerically, so a window
asks for [low, high + 1] and leaves the rows from high + 1 on to the next window: a fractional
timestamp such as high + 0.5 is fetched exactly once, never lost between two windows.

Each request is retried with exponential backoff on 5xx/429 answers, timeouts, connection
errors and truncated or unparseable bodies; when the attempts run out, `SourceError` names the
URL, the window and the day.
"""

from __future__ import annotations

import functools
import json
import math
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

import httpx
import orjson
from tenacity import RetryError

from kpi.days import day_window_ms, epoch_day
from kpi.overlap import gc_paused
from kpi.retry import retrying
from kpi.settings import Settings, split_credentials

HOUR_MS = 3_600_000


class SourceError(RuntimeError):
    """KPIggybank could not deliver a window after every retry."""


class TransientSourceError(Exception):
    """A failure worth retrying (server error, timeout, broken body)."""


@dataclass(frozen=True)
class RowCheck:
    """The verdict on one row: `ok`, `skipped` (no events) or `rejected` (with a reason)."""

    status: str
    reason: str = ""


OK = RowCheck("ok")


def chunk_windows(start_ms: int, end_ms: int, chunk_ms: int) -> list[tuple[int, int]]:
    """Inclusive integer windows covering [start_ms, end_ms]: the k-th ends on the mark
    start_ms + k * chunk_ms (the last on end_ms), and each next one starts 1 ms later.

    So a day's first window holds chunk_ms + 1 ms and its last one chunk_ms - 1 ms. Ending on
    the marks rather than 1 ms before them matters because a window also asks KPIggybank for
    the millisecond after its end (see `KpiggybankClient.fetch_window`): Persona floors
    timestamps to 10 minutes, so many rows sit on the hour marks, and they would be fetched
    twice if that extra millisecond fell on one.
    """
    if chunk_ms <= 0:
        msg = f"chunk_ms must be positive, got {chunk_ms}"
        raise ValueError(msg)
    windows = []
    low, mark = start_ms, start_ms + chunk_ms
    while low <= end_ms:
        high = min(mark, end_ms)
        windows.append((low, high))
        low, mark = high + 1, mark + chunk_ms
    return windows


MAX_TIMESTAMP_MS = 253_402_300_800_000  # 10000-01-01: later days have no YYYY-MM-DD
BAD_TIMESTAMP = "timestamp is missing, not numeric or out of range"


def valid_timestamp(value: object) -> bool:
    """A number (not a boolean) with 0 < value < year 10000, in ms."""
    return type(value) in (int, float) and 0 < value < MAX_TIMESTAMP_MS


def accepted_by_source(blob: object) -> bool:
    """KPIggybank's rule for a POSTed blob: an object with a numeric `timestamp` above 0.

    Looser than `check_row` on purpose: the source stores blobs the pipeline then quarantines
    (e.g. a malformed `event_stream`, or a timestamp past year 9999), so the fake source uses
    this rule and the pipeline's checks see the same mix as in production.
    """
    if not isinstance(blob, dict):
        return False
    timestamp = blob.get("timestamp")
    return type(timestamp) in (int, float) and timestamp > 0


def usable_id(row_id: object) -> bool:
    """Whether `row_id` can name a document: a non-empty string that is valid UTF-8 (not one
    with an unpaired surrogate, which CouchDB could not store)."""
    if not isinstance(row_id, str) or not row_id:
        return False
    if row_id.isascii():
        return True
    try:
        row_id.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_row(row: object, day: date | None = None) -> RowCheck:
    """Validate one KPIggybank row `{id, key, value}` (SPEC D10).

    Args:
        row: the decoded row as received.
        day: when given, a blob whose timestamp falls on another UTC day is rejected.

    Returns:
        `ok`, `skipped` (missing or empty `event_stream`) or `rejected` with the reason.
    """
    if not isinstance(row, dict) or not usable_id(row.get("id")):
        return RowCheck("rejected", "row is not an object with a string id")
    blob = row.get("value")
    if not isinstance(blob, dict):
        return RowCheck("rejected", "blob is not a JSON object")
    timestamp = blob.get("timestamp")
    if not valid_timestamp(timestamp):
        return RowCheck("rejected", BAD_TIMESTAMP)
    if day is not None and int(timestamp // 1000) // 86_400 != _epoch_days(day):
        return RowCheck("rejected", "timestamp outside the requested day")  # utc_day_of
    stream = blob.get("event_stream")
    if stream is None or stream == []:
        return RowCheck("skipped", "empty event_stream")
    if not isinstance(stream, list):
        return RowCheck("rejected", "event_stream is not a list")
    if all(type(pair) is list and len(pair) == 2 and type(pair[0]) is str for pair in stream):
        return OK  # the usual case, checked at once; else the loop names what is wrong
    for pair in stream:
        if not isinstance(pair, list) or len(pair) != 2:
            return RowCheck("rejected", "event_stream item is not a [name, offset] pair")
        if not isinstance(pair[0], str):
            return RowCheck("rejected", "event_stream item name is not a string")
    return OK


@functools.lru_cache(maxsize=64)
def _epoch_days(day: date) -> int:
    """Days from 1970-01-01 to `day` (`kpi.days.epoch_day`, cached: asked once a row)."""
    return epoch_day(day)



def blob_of(row: dict) -> dict:
    """The blob of a row: its value without KPIggybank's `_id`/`_rev` (SPEC §3.1 Sane); the
    value itself when it has neither."""
    value = row["value"]
    if "_id" not in value and "_rev" not in value:
        return value
    blob = dict(value)  # a copy in C, then the two dropped: the keys keep their order
    blob.pop("_id", None)
    blob.pop("_rev", None)
    return blob


class KpiggybankClient:
    """HTTP client for KPIggybank's range API with retries. Use as a context manager."""

    def __init__(self, settings: Settings, transport: httpx.BaseTransport | None = None):
        self.settings = settings
        # credentials travel as basic auth, never in the URL httpx logs and puts in errors
        self.url, credentials = split_credentials(settings.source_url)
        self._http = httpx.Client(timeout=settings.http_timeout, transport=transport,
                                  verify=settings.tls_context(), auth=credentials)

    def __enter__(self) -> KpiggybankClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def fetch_window(self, start_ms: int, end_ms: int) -> list:
        """Rows of the window [start_ms, end_ms]: start_ms <= floor(timestamp) <= end_ms.

        Asks KPIggybank for [start_ms, end_ms + 1] (it compares the timestamp numerically, so
        [start_ms, end_ms] would miss end_ms + 0.5) and drops the rows from end_ms + 1 on, which
        the next window fetches (`rows_before`). Retried; raises SourceError at the end.
        """
        try:
            rows = retrying(self.settings, (TransientSourceError,))(
                self._get_window, start_ms, end_ms + 1
            )
        except RetryError as exc:
            cause = exc.last_attempt.exception()
            msg = (
                f"KPIggybank {self.settings.source_url_redacted} failed for window "
                f"start={start_ms} end={end_ms} after {self.settings.retry_attempts} "
                f"attempts: {cause}"
            )
            # the cause's text is in the message, redacted; its chain (another library's
            # errors, which may quote a URL) is left out
            raise SourceError(self.settings.redact(msg)) from None
        return rows_before(rows, end_ms + 1)

    def _get_window(self, start_ms: int, end_ms: int) -> list:
        try:
            response = self._http.get(self.url, params={"start": start_ms, "end": end_ms})
        except httpx.TransportError as exc:  # timeouts, refused/reset connections, bad framing
            msg = f"{type(exc).__name__}: {exc}"
            raise TransientSourceError(msg) from exc
        if response.status_code >= 500 or response.status_code == 429:
            msg = f"HTTP {response.status_code}"
            raise TransientSourceError(msg)
        if response.status_code != 200:
            msg = (
                f"KPIggybank {self.settings.source_url_redacted} answered HTTP "
                f"{response.status_code} for start={start_ms} end={end_ms}: {response.text[:200]}"
            )
            raise SourceError(self.settings.redact(msg))
        try:
            rows = decode_rows(response.content)
        except ValueError as exc:
            msg = f"unparseable body ({len(response.content)} bytes): {exc}"
            raise TransientSourceError(msg) from exc
        if not isinstance(rows, list):
            msg = f"body is a JSON {type(rows).__name__}, not an array of rows"
            raise TransientSourceError(msg)
        return rows


def rows_before(rows: list, limit_ms: int) -> list:
    """The rows whose key is below `limit_ms`, in order; a row without a numeric key is kept.

    The key of a KPIggybank row is the blob's timestamp as the range query compared it, so
    cutting on it splits a day's rows between windows exactly, whatever the blob holds. A row
    with no numeric key (not an object, a missing, boolean or text key) is kept as it came:
    validation quarantines it.
    """
    return [row for row in rows if _keyless(row) or row["key"] < limit_ms]


def _keyless(row: object) -> bool:
    """Whether `row` has no numeric key (`rows_before` keeps it, whatever window it is in)."""
    return not (isinstance(row, dict) and type(row.get("key")) in (int, float))


def decode_rows(body: bytes) -> object:
    """A JSON body: orjson, and where it refuses valid JSON the standard library. A number
    beyond a double (1e400) is then kept as its text, a string, as a browser would have sent a
    numeric string (so it degrades by the same rules, and stores and reads back the same); an
    unpaired surrogate escape (`"\\ud800"`) stays, for `kpi.rows.storable` to replace.

    Raises:
        ValueError: the body is not JSON (truncated, garbage).
    """
    try:
        with gc_paused():  # a page is many small objects, without reference cycles
            return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(body, parse_float=_finite_or_text, parse_int=_int_or_float,
                          parse_constant=_refuse_constant)
    except RecursionError:
        msg = "nested too deeply to decode"
        raise ValueError(msg) from None


def _finite_or_text(text: str) -> float | str:
    number = float(text)
    return number if math.isfinite(number) else text


def _int_or_float(text: str) -> int | float | str:
    """An integer within 64 bits as int; beyond, a float as orjson reads it, or its text when
    no double holds it (never Python's unbounded, slow int: 10**5000 would stall a day)."""
    if len(text.lstrip("-")) <= 19:
        return int(text)
    return _finite_or_text(text)


def _refuse_constant(name: str) -> None:
    msg = f"{name} is not JSON"
    raise ValueError(msg)


def day_windows(settings: Settings, day: date) -> list[tuple[int, int]]:
    """The fetch windows of UTC `day`, in order: inclusive integer [low, high] ms ending on the
    `fetch_chunk_hours` marks (see `chunk_windows`); a window's rows are those with
    floor(timestamp) in it (`fetch_rows`)."""
    start, end = day_window_ms(day)
    return chunk_windows(start, end, settings.fetch_chunk_hours * HOUR_MS)


PAGE_ROWS = 20_000  # rows an extract asks KPIggybank for at a time, about
PAGE_STEP_MS = 600_000  # pages end on 10-minute marks (Persona floors timestamps to them)
FIRST_PAGE_MS = HOUR_MS  # a day's first page, before any rate is known
PAGE_GROWTH = 2  # a page spans at most this many times the last one (after an empty page)


class DayPages:
    """The pages an extract fetches UTC `day` in: each fetch window (`day_windows`, or the
    `windows` given, e.g. one mapped task's) cut into pages of about `page_rows` rows by the
    rate of the page before, so a big day is decoded a page at a time (a 6-hour window of a
    1,000,000-blob day is about 250,000 rows, 3 kB each decoded), while a small one asks for
    its first hour, pages doubling to its first window's end, then its windows. A page is an
    inclusive integer [low, high] ms ending on a 10-minute mark of the day or on its
    window's end, at most `PAGE_GROWTH` times as long as the page before (an empty page tells
    no rate); its rows are those with floor(timestamp) in it (`fetch_rows`), so any cut gives
    the same rows.

    Fetch each page with `fetch` (in any one thread, pages in order): the next page is cut
    only once the page before is fetched (or failed), so an iterator running ahead of the
    fetches (`kpi.overlap.Ahead`) waits for its rate. A row with no numeric key (kept by
    every fetch it comes back in, see `rows_before`) that comes back in the next page of
    the same window, the millisecond their requests share, is taken once."""

    def __init__(self, settings: Settings, day: date, page_rows: int | None = None,
                 windows: list[tuple[int, int]] | None = None) -> None:
        self.day = day
        self.base = day_window_ms(day)[0]
        self.windows = day_windows(settings, day) if windows is None else windows
        self.page_rows = page_rows or PAGE_ROWS
        self._rate: float | None = None  # rows per ms of the last page fetched
        self._span = FIRST_PAGE_MS  # of the last page cut
        self._done = threading.Semaphore(0)  # released when a page is fetched or failed
        self._last_keyless: Counter[str] = Counter()  # the last page's rows with no numeric key

    def fetch(self, client: KpiggybankClient, page: tuple[int, int]) -> list:
        """The rows of `page` (`fetch_rows`), but the keyless rows the page before, in the
        same window, took already."""
        try:
            rows = fetch_rows(client, self.day, page)
        except BaseException:
            self._last_keyless.clear()
            self._done.release()
            raise
        answered = Counter(_encode(row) for row in rows if _keyless(row))
        if self._last_keyless and all(page[0] != low for low, _ in self.windows):
            repeated = self._last_keyless
            rows = [row for row in rows if not (_keyless(row) and _taken(row, repeated))]
        self._last_keyless = answered
        self._rate = len(rows) / (page[1] - page[0] + 1)
        self._done.release()
        return rows

    def __iter__(self) -> Iterator[tuple[int, int]]:
        first = True
        for low, high in self.windows:
            while low <= high:
                if not first:
                    self._done.acquire()  # the page before is fetched: its rate is known
                first = False
                span = FIRST_PAGE_MS
                if self._rate is not None:
                    wanted = self.page_rows / self._rate if self._rate else math.inf
                    span = int(max(PAGE_STEP_MS, min(wanted, PAGE_GROWTH * self._span)))
                steps = (low - self.base + span) // PAGE_STEP_MS
                end = min(high, self.base + max(steps, 1) * PAGE_STEP_MS)
                self._span = end - low + 1
                yield low, end
                low = end + 1


def _encode(row: object) -> str:
    return json.dumps(row, sort_keys=True)


def _taken(row: object, repeated: Counter[str]) -> bool:
    """Whether `row` is one of `repeated` (each taken once)."""
    text = _encode(row)
    if repeated[text] > 0:
        repeated[text] -= 1
        return True
    return False


def fetch_rows(client: KpiggybankClient, day: date, window: tuple[int, int]) -> list:
    """The rows of one fetch window of UTC `day` (floor(timestamp) within it, see
    `KpiggybankClient.fetch_window`); a failure names the day."""
    try:
        return client.fetch_window(*window)
    except SourceError as exc:
        msg = f"extract of {day.isoformat()} failed: {exc}"
        raise SourceError(msg) from exc
