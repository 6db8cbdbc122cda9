"""The CouchDB client against servers that are not CouchDB (a proxy's 404, a web page at the
wrong URL): a StoreError naming the URL without its password, never a KeyError or a
JSONDecodeError; and the byte-safe key range of a day."""

from __future__ import annotations

import http.server
import threading
from contextlib import contextmanager
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kpi.couch import RAW, CouchStore, StoreError, prefix_range
from kpi.devserver import free_port
from kpi.settings import Settings

PASSWORD = "pa55-Secret-77"
SEEN: list[str] = []  # the methods of the requests the fake servers answered


class NotCouchDB(http.server.BaseHTTPRequestHandler):
    """Answers every request with the same `status`, `content_type` (None: no header) and
    `body` (none to a HEAD), as a proxy or a web server in CouchDB's place would."""

    status: int = 404
    content_type: str | None = None
    body: bytes = b""

    def answer(self, with_body: bool = True) -> None:
        SEEN.append(self.command)
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)  # read the request first: the client gets the answer, not a reset
        self.send_response(self.status)
        if self.content_type is not None:
            self.send_header("Content-Type", self.content_type)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        if with_body:
            self.wfile.write(self.body)

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.answer()

    def do_POST(self):  # noqa: N802
        self.answer()

    def do_PUT(self):  # noqa: N802
        self.answer()

    def do_HEAD(self):  # noqa: N802
        self.answer(with_body=False)

    def log_message(self, *args):
        pass


ANSWERS = {
    "a proxy's 404 (text, no Content-Type)": (404, None, b"404 page not found\n"),
    "a web page at the wrong URL (200 text/html)": (
        200, "text/html; charset=utf-8",
        b"<!doctype html><html><head><title>Welcome</title></head><body>Hi</body></html>"),
    "an empty 404 without Content-Type": (404, None, b""),
}


@contextmanager
def serving(status: int, content_type: str | None, body: bytes):
    handler = type("Answer", (NotCouchDB,),
                   {"status": status, "content_type": content_type, "body": body})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01},
                              daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def settings_for(host: str) -> Settings:
    return Settings(couchdb_url=f"http://admin:{PASSWORD}@{host}/couchdb",
                    retry_attempts=1, retry_backoff=0.01, http_timeout=5)


CALLS = {
    "require_databases": lambda store: store.require_databases(),
    "get": lambda store: store.get(RAW, "x"),
    "day range": lambda store: store.day_ids(RAW, date(2026, 10, 1)),
    "ensure_databases": lambda store: store.ensure_databases(),
}


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
@pytest.mark.parametrize(("status", "content_type", "body"), ANSWERS.values(), ids=ANSWERS.keys())
def test_an_answer_that_is_not_couchdbs_json_names_the_url(status, content_type, body, call):
    with serving(status, content_type, body) as host:
        with CouchStore(settings_for(host)) as store, pytest.raises(StoreError) as caught:
            call(store)
    message = str(caught.value)
    assert f"http://admin:***@{host}/couchdb/{store.name(RAW)}" in message
    assert PASSWORD not in message and PASSWORD not in repr(caught.value)
    assert f"HTTP {status}" in message
    assert "not CouchDB's JSON" in message
    assert (content_type or "no Content-Type") in message


def test_couchdbs_json_labelled_text_plain_is_read():
    """pouchdb-server (and CouchDB 1.x) label their JSON text/plain when a proxy drops the
    request's Accept header: still CouchDB's answer."""
    body = b'{"total_rows": 0, "offset": 0, "rows": []}'
    with serving(200, "text/plain; charset=utf-8", body) as host:
        with CouchStore(settings_for(host)) as store:
            store.require_databases()
            assert store.get(RAW, "x") is None
            assert store.day_ids(RAW, date(2026, 10, 1)) == set()


def test_a_text_page_that_is_not_json_is_not_couchdb():
    with serving(200, "text/plain", b"It works!\n") as host:
        with CouchStore(settings_for(host)) as store, pytest.raises(StoreError) as caught:
            store.get(RAW, "x")
    assert "answered HTTP 200 with text/plain, not CouchDB's JSON" in str(caught.value)
    assert PASSWORD not in str(caught.value)


DAY = "2026-10-01:"
INSIDE = [DAY, f"{DAY}0f3a9c", f"{DAY}~", f"{DAY}\x7f", f"{DAY}é", f"{DAY}\ufff0",
          f"{DAY}\ufff0zz", f"{DAY}\uffff", f"{DAY}\uffff\uffff", f"{DAY}😀", f"{DAY}😀x",
          f"{DAY}漢字", DAY + "\U0010ffff"]
OUTSIDE = ["2026-10-01;", "2026-10-01;a", "2026-10-02:x", "2026-10-01", "2026-09-30:😀",
           "2026-09-30:\uffff"]
ORDERS = {
    "UTF-8 bytes (Apache CouchDB)": lambda key: key.encode("utf-8"),
    "UTF-16 code units (pouchdb-server)": lambda key: key.encode("utf-16-be"),
}


def within(order, key: str, start: str, end: str) -> bool:
    return order(start) <= order(key) < order(end)


@pytest.mark.parametrize("order", ORDERS.values(), ids=ORDERS.keys())
def test_prefix_range_bounds_a_day_in_byte_and_code_unit_order(order):
    start, end = prefix_range(DAY)
    assert (start, end) == ("2026-10-01:", "2026-10-01;")
    assert [key for key in INSIDE if not within(order, key, start, end)] == []
    assert [key for key in OUTSIDE if within(order, key, start, end)] == []


def test_ufff0_is_not_an_upper_bound_in_byte_order():
    """Why the bound is `;` and not `:\\ufff0`: an id starting with an emoji sorts after it in
    UTF-8 byte order (F0 9F... > EF BF B0)."""
    utf8 = ORDERS["UTF-8 bytes (Apache CouchDB)"]
    assert not within(utf8, f"{DAY}😀", DAY, f"{DAY}\ufff0")


@given(st.text())
def test_every_id_with_the_prefix_is_in_its_range(suffix):
    start, end = prefix_range(DAY)
    for order in ORDERS.values():
        assert within(order, DAY + suffix, start, end)


def _settings_at(address: str) -> Settings:
    return Settings(couchdb_url=f"http://admin:{PASSWORD}@{address}", retry_attempts=5,
                    retry_backoff=5.0, http_timeout=5.0)  # a retry would take seconds


@pytest.mark.parametrize("answer", [(404, "text/plain", b"404 page not found\n"),
                                    (404, "text/plain", b"")])
def test_a_plain_text_404_server_is_not_taken_for_a_couchdb_without_databases(answer):
    with serving(*answer) as address:
        with pytest.raises(StoreError) as error:
            CouchStore(_settings_at(address)).require_databases()
    assert "no CouchDB welcome" in str(error.value) and address in str(error.value)
    assert PASSWORD not in str(error.value)


@pytest.mark.parametrize("status", [501, 505])
def test_a_server_that_does_not_implement_couchdbs_methods_fails_without_retries(status):
    SEEN.clear()
    with serving(status, "text/html", b"<h1>Not Implemented</h1>") as address:
        with pytest.raises(StoreError) as error:
            CouchStore(_settings_at(address)).ensure_databases()
    assert SEEN == ["PUT"]  # one request, no retry
    assert f"HTTP {status}" in str(error.value) and "not CouchDB's JSON" in str(error.value)
