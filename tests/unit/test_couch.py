"""`CouchStore.find` pages through `_find` answers the way each server sends them, without a
server: a transport plays Apache CouchDB (bookmarks) and pouchdb-server 4 (no bookmark; `skip`)."""

from __future__ import annotations

import httpx
import orjson
import pytest

from kpi.couch import MANIFESTS, CouchStore, StoreError
from kpi.settings import Settings

DOCS = [{"_id": f"2026-10-{n:02d}", "day": f"2026-10-{n:02d}", "refused": {"stored": n}}
        for n in range(1, 8)]


def store(answer) -> tuple[CouchStore, list[dict]]:
    """A store of page size 3 whose `_find` requests (bodies kept) `answer(body)` answers."""
    bodies = []

    def handle(request: httpx.Request) -> httpx.Response:
        assert request.method == "POST" and request.url.path == "/kpi_manifests/_find"
        body = orjson.loads(request.content)
        bodies.append(body)
        return httpx.Response(200, json=answer(body))

    settings = Settings(couchdb_url="http://admin:pw@couch.test:5984", bulk_size=3)
    return CouchStore(settings, transport=httpx.MockTransport(handle)), bodies


def apache(body: dict) -> dict:
    start = int(body.get("bookmark", "0"))
    page = DOCS[start:start + body["limit"]]
    return {"docs": page, "bookmark": str(start + len(page)),
            "warning": "No matching index found, create an index to optimize query time."}


def pouchdb(body: dict) -> dict:
    start = body.get("skip", 0)
    return {"docs": DOCS[start:start + body["limit"]], "warning": "No matching index found"}


@pytest.mark.parametrize("server", [apache, pouchdb])
def test_find_reads_every_page_by_bookmark_or_by_skip(server):
    couch, bodies = store(server)
    found = couch.find(MANIFESTS, {"refused": {"$exists": True}}, ["refused"])
    assert found == DOCS
    assert [body["limit"] for body in bodies] == [3, 3, 3]  # 3 + 3 + 1: the short page ends it
    assert all(body["fields"] == ["_id", "refused"] for body in bodies)
    assert all(body["selector"] == {"refused": {"$exists": True}} for body in bodies)
    if server is apache:
        assert [body.get("bookmark") for body in bodies] == [None, "3", "6"]
        assert all("skip" not in body for body in bodies)
    else:
        assert [body.get("skip") for body in bodies] == [None, 3, 6]


def test_find_of_a_multiple_of_the_page_ends_on_an_empty_page():
    couch, bodies = store(lambda body: apache(body) if body.get("bookmark") != "6"
                          else {"docs": [], "bookmark": "6"})
    assert couch.find(MANIFESTS, {}) == DOCS[:6]
    assert len(bodies) == 3


def test_a_server_that_repeats_its_first_page_fails_instead_of_paging_forever():
    couch, bodies = store(lambda body: {"docs": DOCS[:3]})  # ignores bookmark and skip
    with pytest.raises(StoreError, match="sent already"):
        couch.find(MANIFESTS, {})
    assert len(bodies) == 2
