"""A re-run knows its stored rows from the day's digest record, checked by revision: it reads
no stored document when nothing changed, and still repairs any document changed behind its
back, with or without a record."""

from __future__ import annotations

import base64
from datetime import date

import pytest

from kpi.couch import (
    PARTS,
    QUARANTINE,
    RAW,
    CouchStore,
    content_of,
    day_prefix,
    prefix_range,
)
from kpi.ingest import extract_and_store
from kpi.snapshot import known_rows, record_id

pytestmark = pytest.mark.integration
DAY = date(2026, 10, 2)


def revisions(store: CouchStore) -> dict[str, dict[str, str]]:
    return {kind: store.revisions(kind, *prefix_range(day_prefix(DAY)))
            for kind in (RAW, QUARANTINE)}


def test_an_unchanged_rerun_reads_no_stored_document_and_writes_nothing(settings, monkeypatch):
    first = extract_and_store(DAY, settings)
    store = CouchStore(settings)
    before = revisions(store)
    assert len(known_rows(store, DAY, before)) == first["stored"] + first["rejected_invalid"]
    reads: list[str] = []  # requests of the re-run that read stored rows' bodies
    send = CouchStore._send  # noqa: SLF001

    def logged(self, method, path, body=None, params=None):
        if path.startswith((store.name(RAW), store.name(QUARANTINE))) and (
                (params or {}).get("include_docs") == "true"):
            reads.append(f"{method} {path}")
        return send(self, method, path, body, params)

    monkeypatch.setattr(CouchStore, "_send", logged)
    again = extract_and_store(DAY, settings)
    assert again["written"] == 0 and revisions(store) == before
    assert reads == []
    monkeypatch.undo()
    store.delete(PARTS, [record_id(DAY)])  # the same re-run without its record reads the day
    monkeypatch.setattr(CouchStore, "_send", logged)
    assert extract_and_store(DAY, settings)["written"] == 0
    assert reads


def test_a_document_changed_behind_the_records_back_is_repaired(settings):
    extract_and_store(DAY, settings)
    store = CouchStore(settings)
    doc = next(iter(store.day_docs(RAW, DAY)))
    tampered = {**doc, "blob": {**doc["blob"], "lang": "xx-tampered"}}
    # an edit the pipeline's extract did not make (by hand, another tool): a new revision
    assert store.upsert(RAW, [content_of(tampered)]).written == 1
    before = revisions(store)
    extract_and_store(DAY, settings)
    after = revisions(store)
    assert store.get(RAW, doc["_id"])["blob"] == doc["blob"]  # repaired, and only it
    assert {doc_id for doc_id in before[RAW] if after[RAW][doc_id] != before[RAW][doc_id]} == {
        doc["_id"]}
    assert extract_and_store(DAY, settings)["written"] == 0  # and recorded again


@pytest.mark.parametrize("damage", ["deleted", "garbled", "another's fields"])
def test_without_a_usable_record_the_day_is_read_and_kept_exact(settings, damage):
    first = extract_and_store(DAY, settings)
    store = CouchStore(settings)
    record = store.get_many(PARTS, [record_id(DAY)], attachments=True)[record_id(DAY)]
    if damage == "deleted":
        store.delete(PARTS, [record_id(DAY)])
    elif damage == "another's fields":  # a valid attachment that its `sha1` does not describe
        store.upsert(PARTS, [{**{k: v for k, v in record.items() if k != "_rev"},
                              "sha1": "0" * 40}])
    else:
        name = next(iter(record["_attachments"]))
        store.upsert(PARTS, [{**{k: v for k, v in record.items() if k != "_rev"},
                              "sha1": "garbled",
                              "_attachments": {name: {"content_type": "application/octet-stream",
                                                      "data": base64.b64encode(b"zz").decode()}}}])
    assert known_rows(store, DAY, revisions(store)) == {}
    again = extract_and_store(DAY, settings)
    assert again["written"] == 0
    assert {k: again[k] for k in ("stored", "rejected_invalid", "fetched")} == {
        k: first[k] for k in ("stored", "rejected_invalid", "fetched")}
    assert len(known_rows(store, DAY, revisions(store))) == (
        first["stored"] + first["rejected_invalid"])  # the re-run wrote a record


@pytest.mark.parametrize("batch", [7, 10_000])
def test_the_record_is_one_json_array_however_it_was_compressed(settings, monkeypatch, batch):
    """The record is encoded and compressed RECORD_BATCH entries at a time: in many pieces
    (7), or one, it reads back as every stored row, in one JSON array; its attachment, written
    as raw bytes, reads back as the same bytes."""
    import hashlib
    import zlib

    import orjson

    from kpi import snapshot
    from kpi.couch import Attachment

    monkeypatch.setattr(snapshot, "RECORD_BATCH", batch)
    sent: list[Attachment] = []
    send = CouchStore._send  # noqa: SLF001

    def noted(self, method, path, body=None, params=None):
        if isinstance(body, Attachment):
            sent.append(body)
        return send(self, method, path, body, params)

    monkeypatch.setattr(CouchStore, "_send", noted)
    first = extract_and_store(DAY, settings)
    monkeypatch.undo()
    store = CouchStore(settings)
    # sent in its compressed pieces, never joined into one copy
    assert len(sent) == 1 and isinstance(sent[0].data, tuple)
    assert (len(sent[0].data) > 3) == (batch == 7)
    doc = store.get_many(PARTS, [record_id(DAY)], attachments=True)[record_id(DAY)]
    data = base64.b64decode(doc["_attachments"][snapshot.RECORD]["data"])
    assert hashlib.sha1(data).hexdigest() == doc["sha1"]  # the bytes written, as they were
    entries = orjson.loads(zlib.decompress(data))
    stored = first["stored"] + first["rejected_invalid"]
    assert len(entries) == doc["rows"] == stored
    assert len({entry[0] for entry in entries}) == stored
    assert len(known_rows(store, DAY, revisions(store))) == stored
