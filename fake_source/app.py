"""KPIggybank's HTTP API (SPEC §1, Sane rules) over the deterministic generator.

Routes: GET/POST /wsapi/interaction_data, ?id=, /count, /last, /wsapi/ping. Range queries are
inclusive at both ends (ms), ascending by (timestamp, id), and answer CouchDB view rows
`{id, key, value}` whose value carries `_id` and `_rev` like the production store.
`app.state.store.add_rows` serves rows as given (hostile input tests: rows a POST refuses,
repeated ids, numbers beyond 64 bits).

Fault injection: `app.state.faults.script(kind, ...)` makes the next range requests fail in
order; `fault_rate` makes a seeded random share of them fail. Kinds: `500`, `503`,
`truncate` (half the body, status 200), `garbage` (an HTML error page, status 200), `slow`
(answers after `slow_seconds`), `disconnect` (the connection drops mid-body). A scripted
`none` answers normally: it spaces scripted faults out (e.g. a burst per fetch window).
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import json
import math
import random
import uuid
from collections import deque
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from urllib.parse import parse_qs

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from fake_source.generator import blobs_for_day, history_days
from kpi.days import DAY_MS, day_start_ms
from kpi.source import accepted_by_source, decode_rows

FAULT_KINDS = ("500", "503", "truncate", "garbage", "slow", "disconnect")
OUTAGE_KEEP = 10  # an outage day serves one generated blob in 10
NO_FAULT = "none"  # scripted only: this request is answered normally


CACHED_ROWS = 1_000_000  # generated rows kept (about 3 kB each, decoded and encoded)


class Faults:
    """Scripted and random faults for range queries."""

    def __init__(self, seed: int, rate: float, slow_seconds: float) -> None:
        self.rate = rate
        self.slow_seconds = slow_seconds
        self._rng = random.Random(f"faults:{seed}")
        self._scripted: deque[str] = deque()
        self.injected: list[str] = []

    def script(self, *kinds: str) -> None:
        """Make the next len(kinds) range requests fail with these faults, in order."""
        unknown = [kind for kind in kinds if kind not in (*FAULT_KINDS, NO_FAULT)]
        if unknown:
            msg = f"unknown fault kinds {unknown}; known: {FAULT_KINDS}"
            raise ValueError(msg)
        self._scripted.extend(kinds)

    def next(self) -> str | None:
        if self._scripted:
            kind = self._scripted.popleft()
            if kind == NO_FAULT:
                return None
        elif self.rate and self._rng.random() < self.rate:
            kind = self._rng.choice(FAULT_KINDS)
        else:
            return None
        self.injected.append(kind)
        return kind


class BlobStore:
    """Generated history plus blobs POSTed since start."""

    def __init__(self, seed: int, per_day: int, days: int, last_day: date, bad_rate: float,
                 outage_days: tuple[date, ...] = ()):
        self.seed, self.per_day, self.bad_rate = seed, per_day, bad_rate
        self.outage_days = frozenset(outage_days)
        self.days = history_days(last_day, days) if days > 0 else []
        self.posted: list[dict] = []  # rows, kept sorted by (key, id)
        self.verbatim: list[tuple[int, int, object]] = []  # (key, order, row) of `add_rows`
        # every day of the history stays generated (a backfill's pages cost the source next to
        # nothing, as KPIggybank's would), up to about CACHED_ROWS rows
        self._rows_for_day = lru_cache(maxsize=max(1, min(
            len(self.days), CACHED_ROWS // max(per_day, 1))))(self._generate_rows)

    def _generate_rows(self, day: date) -> tuple[list[int], list[dict], list[bytes]]:
        """The day's keys, rows and each row's JSON (encoded once: a range query joins them,
        so serving a page costs the fake source next to nothing)."""
        rows = []
        for n, (doc_id, blob) in enumerate(
                blobs_for_day(self.seed, day, self.per_day, self.bad_rate)):
            if day in self.outage_days and n % OUTAGE_KEEP:  # most never reached KPIggybank
                continue
            rows.append(_row(doc_id, blob))
        return [row["key"] for row in rows], rows, [_dumps(row) for row in rows]

    def range_body(self, start: int | None, end: int | None) -> bytes:
        """The JSON of `range(start, end)`: generated rows from their encoded JSON when no
        posted or verbatim row falls in the range and `range` is not replaced (tests change
        what the source returns by replacing it)."""
        lo = -1 if start is None else start
        hi = float("inf") if end is None else end
        if "range" in vars(self) or any(lo <= row["key"] <= hi for row in self.posted) or any(
                lo <= key <= hi for key, _, _ in self.verbatim):
            return _dumps(self.range(start, end))
        parts: list[bytes] = []
        for day in self.days:
            first = day_start_ms(day)
            if first + DAY_MS - 1 < lo or first > hi:
                continue
            keys, _, encoded = self._rows_for_day(day)
            parts.extend(encoded[bisect.bisect_left(keys, lo) : bisect.bisect_right(keys, hi)])
        return b"[" + b",".join(parts) + b"]"

    def range(self, start: int | None, end: int | None) -> list[dict]:
        """Rows with start <= timestamp <= end (None = unbounded), ascending."""
        lo = -1 if start is None else start
        hi = float("inf") if end is None else end
        rows: list[dict] = []
        for day in self.days:
            first = day_start_ms(day)
            if first + DAY_MS - 1 < lo or first > hi:
                continue
            keys, day_rows, _ = self._rows_for_day(day)
            rows.extend(day_rows[bisect.bisect_left(keys, lo) : bisect.bisect_right(keys, hi)])
        posted = [row for row in self.posted if lo <= row["key"] <= hi]
        if posted:
            rows = sorted(rows + posted, key=lambda row: (row["key"], row["id"]))
        verbatim = [(key, order, row) for key, order, row in self.verbatim if lo <= key <= hi]
        if verbatim:
            keyed = [(row["key"], -1, row) for row in rows]
            rows = [row for _, _, row in sorted(keyed + verbatim, key=lambda item: item[:2])]
        return rows

    def count(self) -> int:
        generated = sum(len(self._rows_for_day(day)[1]) for day in self.days)
        return generated + len(self.posted)

    def find(self, doc_id: str) -> dict | None:
        for row in self.posted:
            if row["id"] == doc_id:
                return row
        for day in self.days:
            for row in self._rows_for_day(day)[1]:
                if row["id"] == doc_id:
                    return row
        return None

    def add_rows(self, rows: list[tuple[int, object]]) -> None:
        """Serve each row as it is (any JSON value: a production store may hold rows a POST
        would refuse, or deliver an id twice) in the range queries covering its key (ms)."""
        for key, row in rows:
            self.verbatim.append((key, len(self.verbatim), row))

    def add(self, blobs: list[dict]) -> None:
        for blob in blobs:
            self.posted.append(_row(uuid.uuid4().hex, blob))
        self.posted.sort(key=lambda row: (row["key"], row["id"]))


def _row(doc_id: str, blob: dict) -> dict:
    rev = "1-" + hashlib.md5(orjson.dumps(blob, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return {"id": doc_id, "key": blob["timestamp"], "value": {"_id": doc_id, "_rev": rev, **blob}}


class _DroppedResponse(Response):
    """Promises the whole body, sends half, then the server drops the connection."""

    async def __call__(self, scope, receive, send) -> None:
        await send({
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"),
                        (b"content-length", str(len(self.body)).encode())],
        })
        await send({"type": "http.response.body", "body": self.body[: len(self.body) // 2],
                     "more_body": False})


def _dumps(body: object) -> bytes:
    """JSON bytes; what orjson refuses is written as a CouchDB would still send it: integers
    beyond 64 bits in full, unpaired surrogates as `\\ud800` escapes, non-finite floats as
    numbers too big for a double (1e400)."""
    try:
        return orjson.dumps(body)
    except TypeError:
        text = json.dumps(_mark_infinities(body), ensure_ascii=True, separators=(",", ":"))
        for sign in ("", "-"):
            text = text.replace(json.dumps(f"{_INFINITY}{sign}"), f"{sign}1e400")
        return text.encode()


_INFINITY = "\x00fake-source-infinity\x00"


def _mark_infinities(value: object) -> object:
    """`value` with each infinite float as a marker string `_dumps` writes as 1e400."""
    if isinstance(value, float) and math.isinf(value):
        return f"{_INFINITY}{'-' if value < 0 else ''}"
    if isinstance(value, dict):
        return {key: _mark_infinities(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_mark_infinities(item) for item in value]
    return value


def _json(body: object, status: int = 200) -> Response:
    return Response(_dumps(body), status_code=status, media_type="application/json")


def _bound(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return None
    return int(raw)  # ValueError → 400 in the caller


def create_app(
    seed: int = 1,
    per_day: int = 1000,
    days: int = 30,
    last_day: date | None = None,
    bad_rate: float = 0.002,
    fault_rate: float = 0.0,
    slow_seconds: float = 5.0,
    outage_days: tuple[date, ...] = (),
) -> Starlette:
    """A KPIggybank app holding `days` days of history ending `last_day` (default: yesterday).

    On each of `outage_days`, only one blob in `OUTAGE_KEEP` of the generated ones is served
    (an outage: the rest never reached KPIggybank), whatever the time range asked.
    """
    if last_day is None:
        last_day = datetime.now(UTC).date() - timedelta(days=1)
    store = BlobStore(seed, per_day, days, last_day, bad_rate, outage_days)
    faults = Faults(seed, fault_rate, slow_seconds)

    async def interaction_data(request: Request) -> Response:
        if request.method == "POST":
            return await _post(request)
        doc_id = request.query_params.get("id")
        if doc_id is not None:
            row = store.find(doc_id)
            if row is None:
                return _json({"error": "Not found"}, 404)
            return _json({"results": row["value"]})
        try:
            start, end = _bound(request, "start"), _bound(request, "end")
        except ValueError:
            return _json({"error": "start and end must be base-10 integers (ms)"}, 400)
        body = store.range_body(start, end)
        fault = faults.next()
        if fault in ("500", "503"):
            return _json({"error": f"injected fault {fault}"}, int(fault))
        if fault == "truncate":
            return Response(body[: len(body) // 2], media_type="application/json")
        if fault == "garbage":
            return Response(b"<html><body>502 Bad Gateway</body></html>", media_type="text/html")
        if fault == "slow":
            await asyncio.sleep(faults.slow_seconds)
        if fault == "disconnect":
            return _DroppedResponse(body)
        return Response(body, media_type="application/json")

    async def _post(request: Request) -> Response:
        raw = await request.body()
        data: str | None
        if request.headers.get("content-type", "").startswith("application/json"):
            try:
                data = orjson.loads(raw).get("data")
            except (orjson.JSONDecodeError, AttributeError):
                data = None
            if not isinstance(data, str | None):  # {"data": 5}: not a JSON string
                data = None
        else:
            data = parse_qs(raw.decode("utf-8", "replace")).get("data", [None])[0]
        if data is None:
            return PlainTextResponse("Malformed POST, unable to parse JSON.", 400)
        try:
            parsed = decode_rows(data.encode("utf-8", "surrogatepass"))
        except ValueError:  # what a Node.js JSON.parse refuses, not what orjson refuses
            return PlainTextResponse("JSON syntax error", 400)
        blobs = parsed if isinstance(parsed, list) else [parsed]
        if not blobs or not all(accepted_by_source(blob) for blob in blobs):
            return PlainTextResponse("invalid", 400)
        store.add(blobs)
        return PlainTextResponse("ok", 201)

    async def count(request: Request) -> Response:
        return _json(store.count())

    async def last(request: Request) -> Response:
        rows = store.range(None, None)
        if not rows:
            return _json({"error": "Not found"}, 404)
        return _json(rows[-1])

    async def ping(request: Request) -> Response:
        return PlainTextResponse("pong")

    app = Starlette(
        routes=[
            Route("/wsapi/interaction_data", interaction_data, methods=["GET", "POST"]),
            Route("/wsapi/interaction_data/count", count),
            Route("/wsapi/interaction_data/last", last),
            Route("/wsapi/ping", ping),
        ]
    )
    app.state.faults = faults
    app.state.store = store
    return app
