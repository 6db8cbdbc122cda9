"""Rows as stored: any JSON a source sends made storable, and the documents of rows that
cannot be stored as they are (no usable id, or too large for one CouchDB document)."""

from __future__ import annotations

import base64
import hashlib
from datetime import date

import orjson

from kpi.couch import QUARANTINE

MAX_DEPTH = 64  # nesting kept in a stored value (orjson encodes no deeper than 254)


def storable(value: object) -> tuple[object, str, int]:
    """(`value`, its `content_hash`, the size of its JSON in bytes); when JSON cannot
    encode it (nested deeper than orjson allows, an integer beyond 64 bits, an unpaired
    surrogate in a string), a copy with containers deeper than `MAX_DEPTH` cut to null, such
    integers as floats and such strings with `?` for the surrogate instead: any row the source
    sends can be stored."""
    value, data = encoded(value)
    return value, hashlib.sha1(data).hexdigest(), len(data)


def encoded(value: object) -> tuple[object, bytes]:
    """(`value`, its JSON with sorted keys), `value` made storable as `storable` makes it (the
    same object when JSON encodes it as it is)."""
    try:
        return value, orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        value = _cut(value, 0)
        return value, orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def _cut(value: object, depth: int) -> object:
    if isinstance(value, dict | list) and depth >= MAX_DEPTH:
        return None
    if isinstance(value, dict):
        return {_utf8(str(key)): _cut(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list):
        return [_cut(item, depth + 1) for item in value]
    if type(value) is int and not -(2**63) <= value < 2**64:
        try:
            return float(value)
        except OverflowError:
            return str(value)
    if isinstance(value, str):
        return _utf8(value)
    return value


def _utf8(text: str) -> str:
    return text.encode("utf-8", "replace").decode("utf-8")


def quarantine_doc(day: date, row: object, reason: str, used: dict[str, tuple],
                    limit: int) -> dict | None:
    """A quarantine document for a row without a usable id, named by its content; None when
    this very row is already quarantined in this extract (a repeat, counted as a duplicate).
    `used`: the extract's doc ids so far, each with (database, digest, note)."""
    row, digest, size = storable(row)
    doc_id = f"{day.isoformat()}:sha1:{digest}"
    if doc_id in used:
        return None
    if size + 2 * len(doc_id) + DOC_MARGIN > limit:
        used[doc_id] = (QUARANTINE, digest, TOO_LARGE)
        return too_large_doc(doc_id, day, row)
    used[doc_id] = (QUARANTINE, digest, reason)
    return {"_id": doc_id, "day": day.isoformat(), "reason": reason, "row": row}





DOC_MARGIN = 1024  # bytes around a row in its documents (keys, revision, the staging or
# `_removed` copy's wrapper, which also holds the id twice)


TOO_LARGE = "row too large for one CouchDB document"


def too_large_doc(doc_id: str, day: date, row: object) -> dict:
    """A quarantine document for a row too large to store as a document: the row is kept
    whole as its attachment `row.json` (attachments are not bound by `max_document_size`)."""
    data = orjson.dumps(storable(row)[0])
    return {"_id": doc_id, "day": day.isoformat(), "reason": TOO_LARGE, "row": None,
            "row_bytes": len(data), "row_sha1": hashlib.sha1(data).hexdigest(),
            "_attachments": {"row.json": {"content_type": "application/json",
                                          "data": base64.b64encode(data).decode()}}}



def inline_attachments(doc: dict) -> dict:
    """The `_attachments` of a document read with `attachments=true`, as they are written
    (content type and base64 data only); {} when it has none."""
    return {name: {"content_type": item.get("content_type", "application/octet-stream"),
                   "data": item["data"]}
            for name, item in (doc.get("_attachments") or {}).items() if "data" in item}
