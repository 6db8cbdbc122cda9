"""Store: raw snapshots, quarantine, manifests and daily aggregates in CouchDB.

Databases (every name starts with `KPI_DB_PREFIX`):

| database              | one document per            | id                        |
|-----------------------|-----------------------------|---------------------------|
| `<prefix>_raw`        | KPIggybank row (valid blob) | `YYYY-MM-DD:<kpiggybank id>` |
| `<prefix>_quarantine` | row that failed validation  | `YYYY-MM-DD:<id or sha1 of row>` |
| `<prefix>_manifests`  | UTC day extracted           | `YYYY-MM-DD`              |
| `<prefix>_aggregates` | UTC day aggregated          | `YYYY-MM-DD`              |
| `<prefix>_parts`      | window of a day in progress | `YYYY-MM-DD:<run>:<start>-<end>:<n>` |

The blob sits under the `blob` key of its raw document, so blob fields can never collide with
CouchDB's reserved `_` fields. Ids are deterministic and a document is written only when its
content changed, so re-running a day against an unchanged source writes nothing. Re-extracting a
day *restates* it: the day's raw and quarantine documents become exactly what the source returns
now (changed rows are replaced, new rows added, rows no longer returned are deleted), and its
manifest is rewritten; no other day is touched. A day's aggregates are one document, so they are
replaced as a whole; only a sites histogram too big for one document (many distinct fractional
values) is kept in chunk documents `YYYY-MM-DD:h:<digest>:<n>` that the day's document names
(content-addressed: rewriting the same histogram writes nothing). When a day is extracted as
several windows at once (the Airflow DAG's mapped tasks), each window leaves a *part*: its ids,
counts and partial aggregates; combining the parts closes the day (restatement, manifest,
aggregates) and deletes them. Only documented CouchDB 3 API is used: database PUT/GET,
`_bulk_docs` (per-document results are checked) and `_all_docs` (key ranges and `keys`).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from urllib.parse import quote

import orjson
import pandas as pd
import pycouchdb
import requests
from pycouchdb import exceptions as couch_errors
from tenacity import RetryError

from kpi.config import Config
from kpi.retry import retrying
from kpi.settings import Settings
from kpi.source import blob_of, check_row, usable_id

RAW, QUARANTINE, MANIFESTS, AGGREGATES = "raw", "quarantine", "manifests", "aggregates"
PARTS = "parts"
DATABASES = (RAW, QUARANTINE, MANIFESTS, AGGREGATES, PARTS)
PART_BYTES = 1_000_000  # of ids per part document, far below CouchDB's 8 MB default
# Apache CouchDB refuses documents over `max_document_size` (8 MB by default): a sites histogram
# larger than INLINE_BYTES (a day of many distinct fractional values) moves to chunk documents
# of at most CHUNK_BYTES each
INLINE_BYTES = 2_000_000
CHUNK_BYTES = 3_000_000
CHUNK_GRACE_SECONDS = 3600  # an unnamed chunk set this recent may be about to be named or read
HIGH_KEY = "\ufff0"
CONFLICT_ROUNDS = 5  # re-reads of conflicting documents before giving up
TRANSIENT = (requests.ConnectionError, requests.Timeout, couch_errors.GenericError)


class StoreError(RuntimeError):
    """CouchDB refused or failed a request after every retry."""


@dataclass
class UpsertResult:
    """How many documents were written and how many already held the same content."""

    written: int = 0
    unchanged: int = 0


def content_of(doc: dict) -> dict:
    """A document without CouchDB's `_rev` (what "same content" compares)."""
    return {k: v for k, v in doc.items() if k != "_rev"}


def content_hash(value: object) -> str:
    """A stable digest of a JSON value (key order does not matter)."""
    return hashlib.sha1(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()


class CouchStore:
    """The pipeline's CouchDB databases."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # pycouchdb does not verify certificates unless told to: always verify them
        self.server = pycouchdb.Server(settings.couchdb_url, timeout=settings.http_timeout,
                                       verify=settings.tls_verify)

    def name(self, kind: str) -> str:
        """Database name of `kind` (`raw`, `quarantine`, `manifests`, `aggregates`)."""
        return f"{self.settings.db_prefix}_{kind}"

    def _retry(self, what: str, call, *args, **kwargs):
        try:
            return retrying(self.settings, TRANSIENT)(call, *args, **kwargs)
        except RetryError as exc:
            cause = exc.last_attempt.exception()
            msg = (
                f"CouchDB {self.settings.couchdb_url_redacted} failed to {what} after "
                f"{self.settings.retry_attempts} attempts: {type(cause).__name__}: {cause}"
            )
            raise StoreError(self.settings.redact(msg)) from None  # the cause may quote a URL

    def ensure_databases(self) -> None:
        """Create the pipeline's databases if they are missing."""
        for kind in DATABASES:
            self._retry(f"create database {self.name(kind)}", self._ensure, self.name(kind))

    def require_databases(self, kinds: tuple[str, ...] = DATABASES) -> None:
        """Raise StoreError unless the databases of `kinds` exist (read paths never create
        databases: a mistyped prefix or server must fail, not publish an empty site)."""
        missing = [self.name(kind) for kind in kinds
                   if not self._retry(f"look up database {self.name(kind)}",
                                      self._exists, self.name(kind))]
        if missing:
            msg = (
                f"CouchDB {self.settings.couchdb_url_redacted} has no database "
                f"{', '.join(missing)}: check KPI_COUCHDB_URL and KPI_DB_PREFIX (extracting a "
                "day creates them; reading never does)"
            )
            raise StoreError(msg)

    def _send(self, method: str, path: str, body: dict | None = None,
              params: dict | None = None) -> tuple[int, object]:
        """One HTTP request to the server; (status, decoded JSON answer or None).

        Every request passes `verify` itself: pycouchdb's per-database resources reset the
        shared session to no certificate check, so its own helpers are not used.
        """
        response, _ = self.server.resource._request_response(
            method, path, data=None if body is None else orjson.dumps(body), params=params,
            stream=True, verify=self.settings.tls_verify,
        )
        try:
            result = orjson.loads(response.content) if response.content else None
        except orjson.JSONDecodeError as exc:
            raise couch_errors.GenericError(f"unparseable answer: {exc}") from exc
        if response.status_code >= 500:
            raise couch_errors.GenericError(result)
        return response.status_code, result

    def _exists(self, name: str) -> bool:
        status, result = self._send("HEAD", quote(name, safe=""))
        if status not in (200, 404):
            msg = f"CouchDB {name} answered {status} to a lookup: {result}"
            raise StoreError(msg)
        return status == 200

    def _ensure(self, name: str) -> None:
        status, result = self._send("PUT", quote(name, safe=""))
        if status not in (201, 202, 412):  # 412: already there
            msg = f"CouchDB refused to create {name} ({status}): {result}"
            raise StoreError(msg)

    def _request(self, kind: str, method: str, path: str, body: dict | None = None,
                 params: dict | None = None) -> object:
        """One request to a database; the JSON answer decoded with orjson (fast for big pages).

        Per-document results (e.g. of `_bulk_docs`) are returned unchecked: callers check them.
        """
        database = quote(self.name(kind), safe="")
        status, result = self._send(method, f"{database}/{path}" if path else database,
                                    body, params)
        if status >= 400:
            msg = f"CouchDB {self.name(kind)}/{path} answered {status}: {result}"
            raise StoreError(msg)
        return result

    def _post(self, kind: str, path: str, body: dict, params: dict | None = None) -> object:
        return self._request(kind, "POST", path, body, params)

    def get_many(self, kind: str, ids: list[str]) -> dict[str, dict]:
        """Existing documents among `ids`, by id."""
        if not ids:
            return {}
        result = self._retry(
            f"read {len(ids)} documents of {self.name(kind)}",
            self._post, kind, "_all_docs", {"keys": ids}, {"include_docs": "true"},
        )
        return {row["id"]: row["doc"] for row in result["rows"] if row.get("doc")}

    def present(self, kind: str, ids: list[str]) -> set[str]:
        """The ids among `ids` of documents that exist (no bodies are read)."""
        if not ids:
            return set()
        result = self._retry(f"read {len(ids)} revisions of {self.name(kind)}",
                             self._post, kind, "_all_docs", {"keys": ids})
        return {row["id"] for row in result["rows"]
                if "value" in row and not row["value"].get("deleted")}

    def get(self, kind: str, doc_id: str) -> dict | None:
        """One document, or None."""
        return self.get_many(kind, [doc_id]).get(doc_id)

    def upsert(self, kind: str, docs: list[dict], present: set[str] | None = None,
               before_write: Callable[[], None] | None = None) -> UpsertResult:
        """Write `docs` (each with an `_id`) unless an identical document is already stored.

        Args:
            kind: the database.
            docs: the documents, without `_rev`.
            present: when given, the ids known to exist; other ids are not looked up first
                (a fresh day then costs one `_bulk_docs` per batch and no reads).
            before_write: called before anything is actually written (not when every document
                is already stored as is).
        """
        outcome = UpsertResult()
        size = self.settings.bulk_size
        for first in range(0, len(docs), size):
            batch = docs[first : first + size]
            ids = [doc["_id"] for doc in batch]
            if present is not None:
                ids = [doc_id for doc_id in ids if doc_id in present]
            existing = self.get_many(kind, ids)
            to_write = []
            for doc in batch:
                old = existing.get(doc["_id"])
                if old is not None and content_of(old) == doc:
                    outcome.unchanged += 1
                    continue
                to_write.append({**doc, "_rev": old["_rev"]} if old is not None else doc)
            if to_write and before_write is not None:
                before_write()
            written, unchanged = self._write_resolving_conflicts(kind, to_write)
            outcome.written += written
            outcome.unchanged += unchanged
        return outcome

    def _write_resolving_conflicts(self, kind: str, docs: list[dict]) -> tuple[int, int]:
        """Write `docs`; a conflict (another writer, or a lost answer to our own retried write)
        is re-read: the same content counts as unchanged, other content is overwritten with the
        current revision. Returns (written, unchanged)."""
        written = unchanged = 0
        for _ in range(CONFLICT_ROUNDS):
            if not docs:
                return written, unchanged
            conflicts = {result["id"] for result in self._bulk_write(kind, docs)}
            written += len(docs) - len(conflicts)
            if not conflicts:
                return written, unchanged
            current = self.get_many(kind, sorted(conflicts))
            retry = []
            for doc in docs:
                if doc["_id"] not in conflicts:
                    continue
                content = content_of(doc)
                old = current.get(doc["_id"])
                if old is not None and content_of(old) == content:
                    unchanged += 1
                else:
                    retry.append({**content, "_rev": old["_rev"]} if old else content)
            docs = retry
        if docs:
            msg = (f"CouchDB {self.name(kind)}: {len(docs)} documents kept conflicting with "
                   f"another writer (e.g. {docs[0]['_id']})")
            raise StoreError(msg)
        return written, unchanged

    def delete(self, kind: str, ids: list[str],
               before_write: Callable[[], None] | None = None) -> int:
        """Delete the documents `ids` (those still there); returns how many were deleted.

        A document changed meanwhile (a conflict) has its new revision read and is deleted
        again, a bounded number of times.
        """
        deleted = 0
        size = self.settings.bulk_size
        for first in range(0, len(ids), size):
            batch = ids[first : first + size]
            for _ in range(CONFLICT_ROUNDS):
                result = self._retry(
                    f"read {len(batch)} revisions of {self.name(kind)}",
                    self._post, kind, "_all_docs", {"keys": batch},
                )
                tombstones = [
                    {"_id": row["id"], "_rev": row["value"]["rev"], "_deleted": True}
                    for row in result["rows"]
                    if "value" in row and not row["value"].get("deleted")
                ]
                if tombstones and before_write is not None:
                    before_write()
                conflicted = ({r["id"] for r in self._bulk_write(kind, tombstones)}
                              if tombstones else set())
                deleted += len(tombstones) - len(conflicted)
                batch = sorted(conflicted)
                if not batch:
                    break
            else:
                msg = (f"CouchDB {self.name(kind)}: {len(batch)} documents kept changing while "
                       f"being deleted (e.g. {batch[0]})")
                raise StoreError(msg)
        return deleted

    def _bulk_write(self, kind: str, docs: list[dict]) -> list[dict]:
        """`_bulk_docs`; returns the per-document results that are conflicts, raises on others."""
        results = self._retry(
            f"write {len(docs)} documents to {self.name(kind)}",
            self._post, kind, "_bulk_docs", {"docs": docs},
        )
        conflicts = [r for r in results if r.get("error") == "conflict"]
        failed = [r for r in results if "error" in r and r.get("error") != "conflict"]
        if failed:
            reasons = Counter(f"{r['error']}: {r.get('reason', '')}" for r in failed)
            msg = (
                f"CouchDB {self.name(kind)} refused {len(failed)} of {len(docs)} documents "
                f"(e.g. {failed[0]['id']}): {dict(reasons)}"
            )
            raise StoreError(msg)
        return conflicts

    def iter_range(self, kind: str, startkey: str, endkey: str,
                   include_docs: bool = True) -> Iterator[dict | str]:
        """Documents (or only their ids) whose ids lie in [startkey, endkey], page by page."""
        for row in self._iter_rows(kind, startkey, endkey, include_docs):
            yield row["doc"] if include_docs else row["id"]

    def revisions(self, kind: str, startkey: str, endkey: str) -> dict[str, str]:
        """The current revision of each document whose id lies in [startkey, endkey] (no
        bodies are read: what changed since a revision was seen costs one small read)."""
        return {row["id"]: row["value"]["rev"]
                for row in self._iter_rows(kind, startkey, endkey, include_docs=False)}

    def _iter_rows(self, kind: str, startkey: str, endkey: str,
                   include_docs: bool) -> Iterator[dict]:
        page = self.settings.bulk_size
        params = {"startkey": startkey, "endkey": endkey, "limit": page + 1,
                  "include_docs": include_docs}
        while True:
            result = self._retry(
                f"read {self.name(kind)} range", self._all_docs, kind, params
            )
            rows = result["rows"]
            yield from rows[:page]
            if len(rows) <= page:
                return
            params = {**params, "startkey": rows[page]["id"]}

    def _all_docs(self, kind: str, params: dict) -> dict:
        encoded = {
            "include_docs": "true" if params["include_docs"] else "false",
            "limit": params["limit"],
            "startkey": orjson.dumps(params["startkey"]).decode(),
            "endkey": orjson.dumps(params["endkey"]).decode(),
        }
        return self._request(kind, "GET", "_all_docs", params=encoded)

    def day_docs(self, kind: str, day: date) -> Iterator[dict]:
        """The documents of `kind` for UTC `day` (ids `YYYY-MM-DD:...`)."""
        prefix = f"{day.isoformat()}:"
        return self.iter_range(kind, prefix, prefix + HIGH_KEY)

    def has_day(self, kind: str, day: date) -> bool:
        """Whether `kind` holds any document of UTC `day` (one small read)."""
        prefix = f"{day.isoformat()}:"
        params = {"startkey": prefix, "endkey": prefix + HIGH_KEY, "limit": 1,
                  "include_docs": False}
        result = self._retry(f"read {self.name(kind)} range", self._all_docs, kind, params)
        return bool(result["rows"])

    def day_ids(self, kind: str, day: date) -> set[str]:
        """The ids of `kind`'s documents for UTC `day` (no document bodies are read)."""
        prefix = f"{day.isoformat()}:"
        return set(self.iter_range(kind, prefix, prefix + HIGH_KEY, include_docs=False))

    def doc_count(self, kind: str) -> int:
        """Number of documents in the database of `kind`."""
        info = self._retry(f"read {self.name(kind)} info", self._request, kind, "GET", "")
        return info["doc_count"]


class IncompleteMark:
    """Before a day's snapshot first changes, flag its manifest as in progress, so a run that
    dies half-way is never taken for a finished day (`finish_day` sets `complete`). Callable,
    as the `before_write` of `CouchStore.upsert` and `CouchStore.delete`."""

    def __init__(self, store: CouchStore, day: date) -> None:
        self.store, self.day, self.marked = store, day, False

    def __call__(self) -> None:
        if self.marked:
            return
        self.marked = True
        old = self.store.get(MANIFESTS, self.day.isoformat())
        base = content_of(old) if old else {"_id": self.day.isoformat(),
                                            "day": self.day.isoformat()}
        self.store.upsert(MANIFESTS, [{**base, "complete": False}])


@dataclass
class Snapshot:
    """What storing some of a day's rows kept: the raw and quarantine ids, the extract counts,
    the rejection reasons and how many documents were written."""

    raw_ids: set[str] = field(default_factory=set)
    quarantine_ids: set[str] = field(default_factory=set)
    counts: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)
    written: int = 0
    restage: bool = False  # a blob handed to `on_stored` was replaced or moved later


def store_day(store: CouchStore, day: date, batches: Iterable[list],
              on_stored: Callable[[list[dict]], None] | None = None,
              before_manifest: Callable[[dict], int] | None = None,
              restage: Callable[[Iterator[dict]], None] | None = None) -> dict:
    """Validate and store one day's KPIggybank rows; write and return the day's manifest.

    Args:
        store: the CouchDB databases (created if missing).
        day: the UTC day the rows were fetched for.
        batches: the day's rows, in lists (one per fetch window).
        on_stored: called with each batch's blobs as they are stored (the day's snapshot, batch
            by batch: e.g. to aggregate the day without reading it back).
        before_manifest: see `finish_day`.
        restage: called with the day's stored blobs, read back, when a blob handed to
            `on_stored` was replaced or moved to quarantine by a later delivery of its id.

    Parts that windows of the day left (`write_part`) are deleted first: after this snapshot,
    they describe an older one, and closing the day from them would undo it.

    Returns:
        The manifest (the data-quality counts of extract and store) plus `written`, the number
        of documents this call wrote (0 when the day was already stored as is), and `removed`,
        the number of stored rows deleted because the source no longer returns them.
    """
    store.ensure_databases()
    delete_parts(store, day)
    present_raw, present_quarantined = store.day_ids(RAW, day), store.day_ids(QUARANTINE, day)
    mark = IncompleteMark(store, day)
    snapshot = store_rows(store, day, batches, present_raw, present_quarantined, mark, on_stored)
    if snapshot.restage and restage is not None:
        restage(doc["blob"] for doc in store.day_docs(RAW, day)
                if doc["_id"] in snapshot.raw_ids)
    return finish_day(store, day, snapshot, present_raw, present_quarantined, mark,
                      before_manifest)


def store_rows(store: CouchStore, day: date, batches: Iterable[list],
               present_raw: set[str] | None, present_quarantined: set[str] | None,
               before_write: Callable[[], None] | None = None,
               on_stored: Callable[[list[dict]], None] | None = None) -> Snapshot:
    """Validate and store rows of UTC `day` (all of it, or one window of it).

    Valid rows go to the raw database, invalid ones to quarantine with their reason (SPEC D10).
    An id delivered n times counts once in its class (stored, or rejected) and n − 1 times as
    `duplicate`, whatever its validity, and its last delivery's content wins (SPEC D12): a row
    an earlier batch stored is replaced, or moved between raw and quarantine, and the snapshot
    says its earlier blob was handed to `on_stored` (`restage`). Rows without an id are told
    apart by content. So `fetched = stored + rejected_invalid + duplicate`.
    `present_*` are the day's stored ids (None: look each batch up).
    """
    final: dict[str, tuple[str, str, str]] = {}  # doc id → (database, digest, reason or status)
    written_before: set[str] = set()  # doc ids an earlier batch wrote
    snapshot = Snapshot()
    counts, reasons = snapshot.counts, snapshot.reasons
    prefix = f"{day.isoformat()}:"
    for rows in batches:
        pending: dict[str, dict[str, dict]] = {RAW: {}, QUARANTINE: {}}
        moved: dict[str, list[str]] = {RAW: [], QUARANTINE: []}
        for row in rows:
            counts["fetched"] += 1
            check = check_row(row, day)
            row_id = row.get("id") if isinstance(row, dict) else None
            if check.status == "rejected" and not usable_id(row_id):
                doc = _quarantine_doc(day, row, check.reason, final)
                if doc is None:
                    counts["duplicate"] += 1
                    continue
                pending[QUARANTINE][doc["_id"]] = doc
                _count(counts, reasons, QUARANTINE, check.reason, +1)
                continue
            doc_id = prefix + row_id
            if check.status == "rejected":
                row, digest = storable(row)
                kind, note = QUARANTINE, check.reason
                doc = {"_id": doc_id, "day": day.isoformat(), "reason": note, "row": row}
            else:
                blob, digest = storable(blob_of(row))
                kind, note = RAW, check.status
                doc = {"_id": doc_id, "kpiggybank_id": row_id, "blob": blob}
            earlier = final.get(doc_id)
            if earlier is not None:
                counts["duplicate"] += 1
                if earlier[1] == digest:
                    continue
                _count(counts, reasons, earlier[0], earlier[2], -1)
                if doc_id in written_before:
                    snapshot.restage |= earlier[0] == RAW
                    if earlier[0] != kind:
                        moved[earlier[0]].append(doc_id)
                pending[earlier[0]].pop(doc_id, None)
            final[doc_id] = (kind, digest, note)
            pending[kind][doc_id] = doc
            _count(counts, reasons, kind, note, +1)
        for kind, present in ((RAW, present_raw), (QUARANTINE, present_quarantined)):
            if moved[kind]:
                store.delete(kind, moved[kind], before_write)
            docs = list(pending[kind].values())
            snapshot.written += store.upsert(kind, docs, present, before_write).written
            written_before.update(pending[kind])
        if on_stored is not None:
            on_stored([doc["blob"] for doc in pending[RAW].values()])
    snapshot.raw_ids = {doc_id for doc_id, (kind, _, _) in final.items() if kind == RAW}
    snapshot.quarantine_ids = set(final) - snapshot.raw_ids
    return snapshot


def _count(counts: Counter, reasons: Counter, kind: str, note: str, step: int) -> None:
    """Count (step 1) or uncount (step −1) one row in its class."""
    if kind == QUARANTINE:
        counts["rejected_invalid"] += step
        reasons[note] += step
        if not reasons[note]:
            del reasons[note]
    else:
        counts["stored"] += step
        counts["skipped_empty_stream"] += step * (note == "skipped")


MAX_DEPTH = 64  # nesting kept in a stored value (orjson encodes no deeper than 254)


def storable(value: object) -> tuple[object, str]:
    """(`value`, its `content_hash`); when JSON cannot encode it (nested deeper than orjson
    allows, an integer beyond 64 bits, an unpaired surrogate in a string), a copy with
    containers deeper than `MAX_DEPTH` cut to null, such integers as floats and such strings
    with `?` for the surrogate instead: any row the source sends can be stored."""
    try:
        return value, content_hash(value)
    except orjson.JSONEncodeError:
        value = _cut(value, 0)
        return value, content_hash(value)


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


def finish_day(store: CouchStore, day: date, snapshot: Snapshot, present_raw: set[str],
               present_quarantined: set[str], before_write: Callable[[], None],
               before_manifest: Callable[[dict], int] | None = None) -> dict:
    """Close a stored day: delete the rows the source no longer returns (restatement), call
    `before_manifest` with the manifest (e.g. to write the day's aggregates; it returns the
    documents it wrote), then write the complete manifest, last: a day whose run dies before
    that is never taken for finished. Returns the manifest with `written` and `removed`."""
    removed = store.delete(RAW, sorted(present_raw - snapshot.raw_ids), before_write)
    removed += store.delete(QUARANTINE, sorted(present_quarantined - snapshot.quarantine_ids),
                            before_write)
    manifest = {
        "_id": day.isoformat(),
        "day": day.isoformat(),
        **{key: snapshot.counts[key] for key in (
            "fetched", "stored", "duplicate", "skipped_empty_stream", "rejected_invalid"
        )},
        "rejected_reasons": dict(sorted(snapshot.reasons.items())),
        "complete": True,
    }
    written = snapshot.written
    if before_manifest is not None:
        written += before_manifest(manifest)
    written += store.upsert(MANIFESTS, [manifest]).written
    return {**content_of(manifest), "written": written, "removed": removed}


def _quarantine_doc(day: date, row: object, reason: str,
                    used: dict[str, tuple]) -> dict | None:
    """A quarantine document for a row without a usable id, named by its content; None when
    this very row is already quarantined in this extract (a repeat, counted as a duplicate).
    `used`: the extract's doc ids so far, each with (database, digest, note)."""
    row, digest = storable(row)
    doc_id = f"{day.isoformat()}:sha1:{digest}"
    if doc_id in used:
        return None
    used[doc_id] = (QUARANTINE, digest, reason)
    return {"_id": doc_id, "day": day.isoformat(), "reason": reason, "row": row}


def encode_frames(groups: pd.DataFrame, histogram: pd.DataFrame, columns: list[str]) -> dict:
    """A day's (daily_aggregates, sites_histogram) as JSON lists, without the date column:
    `groups` rows are [segmentation, segment, *columns], `sites_histogram` rows
    [segmentation, segment, sites, blobs]."""
    from kpi.reports import plain_number

    return {
        "groups": [
            [row[0], row[1], *(plain_number(v) for v in row[2:])]
            for row in groups[["segmentation", "segment", *columns]].itertuples(index=False)
        ],
        "sites_histogram": [  # column lists, not itertuples: a histogram can be millions long
            [segmentation, segment, plain_number(sites), blobs]
            for segmentation, segment, sites, blobs in zip(
                histogram["segmentation"].astype(str).tolist(),
                histogram["segment"].astype(str).tolist(),
                histogram["sites"].tolist(), histogram["blobs"].astype("int64").tolist(),
                strict=True,
            )
        ],
    }


def decode_frames(day: str, encoded: dict, columns: list[str]) -> tuple[pd.DataFrame,
                                                                         pd.DataFrame]:
    """The frames `encode_frames` encoded, with their `date` column back."""
    groups = pd.DataFrame([[day, *row] for row in encoded["groups"]],
                          columns=["date", "segmentation", "segment", *columns])
    histogram = pd.DataFrame([[day, *row] for row in encoded["sites_histogram"]],
                             columns=["date", "segmentation", "segment", "sites", "blobs"])
    return groups, histogram


def aggregates_document(
    day: date, groups: pd.DataFrame, histogram: pd.DataFrame, config: Config, quality: dict
) -> dict:
    """The one CouchDB document holding every aggregate of `day` (replaced as a whole).

    Args:
        day: the UTC day; `groups` and `histogram` must hold only this day's rows.
        groups: `daily_aggregates` of the day.
        histogram: `sites_histogram` of the day.
        config: the configuration the aggregates were computed with; its fingerprint is kept,
            so aggregates made with another configuration are recognised.
        quality: the day's D12 counts.
    """
    from kpi import __version__
    from kpi.aggregate import count_columns

    columns = count_columns(config)
    return {
        "_id": day.isoformat(),
        "day": day.isoformat(),
        "pipeline_version": __version__,
        "config_fingerprint": config.fingerprint,
        "quality": quality,
        "columns": columns,
        **encode_frames(groups, histogram, columns),
    }


def split_histogram(owner_id: str, encoded: dict) -> tuple[dict, list[dict]]:
    """`encoded` aggregates (see `encode_frames`) as they are when their sites histogram is
    small; else with its rows moved to chunk documents of at most CHUNK_BYTES each, with ids
    `<owner_id>:h:<digest of the rows>:<n>` listed under `histogram_chunks`. A chunk holds runs
    `[segmentation, segment, [sites, ...], [blobs, ...]]` (the names once per run, not per row).

    Returns:
        The aggregates to store in the owner document, and the chunk documents to write first.
    """
    rows = encoded["sites_histogram"]
    whole = orjson.dumps(rows)
    if len(whole) <= INLINE_BYTES:
        return encoded, []
    digest = hashlib.sha1(whole).hexdigest()[:12]
    chunks: list[list] = []
    size = CHUNK_BYTES
    for segmentation, segment, sites, blobs in rows:
        entry = len(repr(sites)) + len(str(blobs)) + 4  # a margin over orjson's own repr
        if size + entry > CHUNK_BYTES:
            chunks.append([])
            size = 0
        runs = chunks[-1]
        if not runs or runs[-1][0] != segmentation or runs[-1][1] != segment:
            runs.append([segmentation, segment, [], []])
            size += len(orjson.dumps([segmentation, segment])) + 8
        runs[-1][2].append(sites)
        runs[-1][3].append(blobs)
        size += entry
    docs = [{"_id": f"{owner_id}:h:{digest}:{n:04d}", "runs": runs}
            for n, runs in enumerate(chunks, start=1)]
    return {**encoded, "sites_histogram": [], "histogram_chunks": [d["_id"] for d in docs]}, docs


def join_histogram(encoded: dict, chunks: dict[str, dict]) -> dict:
    """`encoded` aggregates with the rows of their histogram chunks (by id in `chunks`) back.

    Raises:
        StoreError: a chunk is missing (the day was rewritten meanwhile; restate it).
    """
    ids = encoded.get("histogram_chunks")
    if not ids:
        return encoded
    missing = [chunk_id for chunk_id in ids if chunk_id not in chunks]
    if missing:
        msg = (f"aggregates chunk {missing[0]} is missing (the day changed while being read, "
               "or a write was cut short): restate the day")
        raise StoreError(msg)
    joined = {key: value for key, value in encoded.items() if key != "histogram_chunks"}
    joined["sites_histogram"] = [
        [segmentation, segment, value, count]
        for chunk_id in ids for segmentation, segment, sites, blobs in chunks[chunk_id]["runs"]
        for value, count in zip(sites, blobs, strict=True)
    ]
    return joined


def _put_chunks(store: CouchStore, kind: str, chunks: list[dict]) -> int:
    """Write the content-addressed `chunks` not stored yet (a stored one is the same content:
    its id holds the digest), one per request; returns how many were written."""
    present = store.present(kind, [chunk["_id"] for chunk in chunks])
    return sum(store.upsert(kind, [chunk], present=set()).written
               for chunk in chunks if chunk["_id"] not in present)


def put_aggregates(store: CouchStore, doc: dict, now: float | None = None) -> int:
    """Write a day's aggregates document (`aggregates_document`); a histogram too big for it
    goes first to chunk documents, with a marker `<day>:h:<digest>` stamped with the time.

    Chunk sets the day's document no longer names are deleted once their marker is older than
    CHUNK_GRACE_SECONDS: never the set another writer of the day is about to name, nor one a
    reader is fetching after reading the document that named it. Returns the documents
    written (markers not counted)."""
    now = time.time() if now is None else now
    main, chunks = split_histogram(doc["_id"], doc)
    written = 0
    if chunks:
        marker = chunks[0]["_id"].rsplit(":", 1)[0]
        store.upsert(AGGREGATES, [{"_id": marker, "written_at": now}])  # before the chunks
        written += _put_chunks(store, AGGREGATES, chunks)
    written += store.upsert(AGGREGATES, [main]).written
    _collect_chunks(store, date.fromisoformat(doc["_id"]), now)
    return written


def _collect_chunks(store: CouchStore, day: date, now: float) -> None:
    """Delete the day's chunk sets that its document does not name and that were last
    written more than CHUNK_GRACE_SECONDS ago (or whose marker is gone)."""
    ids = store.day_ids(AGGREGATES, day)
    if not ids:
        return
    current = store.get(AGGREGATES, day.isoformat()) or {}
    named = {chunk_id.rsplit(":", 1)[0] for chunk_id in current.get("histogram_chunks") or []}
    sets: dict[str, list[str]] = {}
    for doc_id in ids:
        marker = doc_id if doc_id.count(":") == 2 else doc_id.rsplit(":", 1)[0]
        sets.setdefault(marker, []).append(doc_id)
    markers = store.get_many(AGGREGATES, sorted(set(sets) - named))
    stale = [doc_id for marker, members in sets.items() if marker not in named
             and markers.get(marker, {}).get("written_at", 0) < now - CHUNK_GRACE_SECONDS
             for doc_id in sorted(members, key=lambda i: i == marker)]  # the marker last
    if stale:
        store.delete(AGGREGATES, stale)


def with_histograms(store: CouchStore, docs: Iterable[dict]) -> Iterator[dict]:
    """Aggregates documents (day documents; chunk documents are passed over) with their split
    histograms joined back, chunk by chunk."""
    for doc in docs:
        if ":" in doc["_id"]:
            continue
        ids = doc.get("histogram_chunks") or []
        chunks = {}
        for chunk_id in ids:  # one per request: each is up to CHUNK_BYTES
            chunks.update(store.get_many(AGGREGATES, [chunk_id]))
        yield join_histogram(doc, chunks)


def _run_key(run: str) -> str:
    """A short, id-safe name of a run (run ids may hold `:` and `+`)."""
    return hashlib.sha1(run.encode()).hexdigest()[:12]


def _part_id(day: date, run: str, window: tuple[int, int], n: int) -> str:
    return f"{day.isoformat()}:{_run_key(run)}:{window[0]}-{window[1]}:{n:04d}"


def write_part(store: CouchStore, day: date, window: tuple[int, int], run: str,
               snapshot: Snapshot, aggregates: dict) -> None:
    """Record what one window of `day` stored (its ids, counts and partial `aggregates`),
    for `read_parts`: the ids in documents of at most `PART_BYTES` of ids each (ids may be
    long), so every document stays far below CouchDB's size limit, then a head document that
    names them by an attempt token (so a head never pairs with chunks of another attempt).

    Parts of the day left by other runs are deleted first: this window's rows are newer than
    theirs, so closing the day from them would undo it (they then fall back to one pass).
    """
    prefix = f"{day.isoformat()}:"
    others = sorted(doc_id for doc_id in store.day_ids(PARTS, day)
                    if not doc_id.startswith(f"{prefix}{_run_key(run)}:"))
    if others:
        store.delete(PARTS, others)
    attempt = uuid.uuid4().hex
    chunks: list[dict] = []
    size = PART_BYTES
    for kind, ids in (("raw_ids", snapshot.raw_ids), ("quarantine_ids", snapshot.quarantine_ids)):
        for doc_id in sorted(ids):
            short = doc_id.removeprefix(prefix)
            if size + len(short) > PART_BYTES:
                chunks.append({"raw_ids": [], "quarantine_ids": []})
                size = 0
            chunks[-1][kind].append(short)
            size += len(short) + 8  # quotes, comma, escapes: a margin
    store.upsert(PARTS, [
        {"_id": _part_id(day, run, window, n), "day": day.isoformat(), "run": run,
         "attempt": attempt, **chunk}
        for n, chunk in enumerate(chunks, start=1)
    ])
    head_id = _part_id(day, run, window, 0)
    aggregates, histogram_chunks = split_histogram(head_id, aggregates)
    _put_chunks(store, PARTS, [{**chunk, "day": day.isoformat(), "run": run}
                               for chunk in histogram_chunks])
    store.upsert(PARTS, [{
        "_id": head_id, "day": day.isoformat(), "run": run,
        "attempt": attempt, "window": list(window), "chunks": len(chunks),
        "counts": dict(snapshot.counts), "reasons": dict(snapshot.reasons),
        "written": snapshot.written, "aggregates": aggregates,
    }])


def read_parts(store: CouchStore, day: date, windows: list[tuple[int, int]],
               run: str) -> list[tuple[Snapshot, dict]] | None:
    """The (snapshot, aggregates) each window of `day` recorded in `run`, in window order;
    None when a window has no complete part from this run."""
    prefix = f"{day.isoformat()}:"
    mine = f"{prefix}{_run_key(run)}:"
    docs = {doc["_id"]: doc for doc in store.iter_range(PARTS, mine, mine + HIGH_KEY)
            if doc.get("run") == run}
    parts = []
    for window in windows:
        head = docs.get(_part_id(day, run, window, 0))
        if head is None:
            return None
        chunk_docs = [docs.get(_part_id(day, run, window, n))
                      for n in range(1, head["chunks"] + 1)]
        if any(doc is None or doc.get("attempt") != head["attempt"] for doc in chunk_docs):
            return None
        snapshot = Snapshot(
            raw_ids={prefix + i for doc in chunk_docs for i in doc["raw_ids"]},
            quarantine_ids={prefix + i for doc in chunk_docs for i in doc["quarantine_ids"]},
            counts=Counter(head["counts"]), reasons=Counter(head["reasons"]),
            written=head["written"],
        )
        try:
            aggregates = join_histogram(head["aggregates"], docs)
        except StoreError:
            return None
        parts.append((snapshot, aggregates))
    return parts


def delete_parts(store: CouchStore, day: date) -> int:
    """Delete every part of `day` (once the day is closed); returns how many."""
    ids = sorted(store.day_ids(PARTS, day))
    return store.delete(PARTS, ids) if ids else 0
