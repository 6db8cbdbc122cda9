"""The CouchDB client: the pipeline's databases over CouchDB's documented HTTP API, on httpx.

Databases (every name starts with `KPI_DB_PREFIX`):

| database              | one document per            | id                        |
|-----------------------|-----------------------------|---------------------------|
| `<prefix>_raw`        | KPIggybank row (valid blob) | `YYYY-MM-DD:<kpiggybank id>` |
| `<prefix>_quarantine` | row that failed validation  | `YYYY-MM-DD:<id or sha1 of row>` |
| `<prefix>_manifests`  | UTC day extracted           | `YYYY-MM-DD`              |
| `<prefix>_aggregates` | UTC day aggregated          | `YYYY-MM-DD` (and its histogram chunks) |
| `<prefix>_parts`      | window of a day in progress | `YYYY-MM-DD:<run>:<start>-<end>:<n>` |
|                       | day's digest record (a re-run's shortcut) | `YYYY-MM-DD~digests` |
| `<prefix>_removed`    | row a restatement removed   | `YYYY-MM-DD:<raw or quarantine>:<id>` |

Only documented CouchDB 3 API is used: database HEAD/PUT/GET, `_bulk_docs` (per-document
results are checked), `_all_docs` (key ranges and `keys`) and `_find` (Mango selectors, without
an index: for small answers such as the refused days' manifests). It is a small client of our own
rather than a library's: pycouchdb switches certificate checks off for the session of its
database objects and calls its own private helpers; ibmcloudant pins dependencies below ours and
costs several times the client CPU per request (docs/performance.md, "CouchDB client", gives the
measured comparison).

A day's documents are found by the byte-safe key range `["YYYY-MM-DD:", "YYYY-MM-DD;")`:
Apache CouchDB orders `_all_docs` by the ids' UTF-8 bytes and pouchdb-server by their code
units, and in both orders every id starting with `YYYY-MM-DD:` lies in that range (an upper
bound such as `YYYY-MM-DD:\\ufff0` misses ids starting with an emoji on Apache CouchDB).
"""

from __future__ import annotations

import hashlib
import ssl
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from urllib.parse import quote

import httpx
import orjson
from tenacity import RetryError

from kpi.retry import retrying
from kpi.settings import Settings, split_credentials

RAW, QUARANTINE, MANIFESTS, AGGREGATES = "raw", "quarantine", "manifests", "aggregates"
PARTS, REMOVED = "parts", "removed"
DATABASES = (RAW, QUARANTINE, MANIFESTS, AGGREGATES, PARTS, REMOVED)
CONFLICT_ROUNDS = 5  # re-reads of conflicting documents before giving up
ACCESS_HINT = (": check the user and password in KPI_COUCHDB_URL (or the Airflow connection); "
               "the user must be allowed to create and write the pipeline's databases")


class StoreError(RuntimeError):
    """CouchDB refused or failed a request after every retry."""


class TransientStoreError(Exception):
    """A failure worth retrying (a 5xx answer, a broken connection, a cut or garbled body)."""


class DocumentTooLarge(StoreError):
    """CouchDB refused a document as larger than its `max_document_size` (HTTP 413)."""

    def __init__(self, doc_id: str, message: str) -> None:
        super().__init__(message)
        self.doc_id = doc_id
        self.written = 0  # documents the refusing call wrote nonetheless (other chunks)


@dataclass
class UpsertResult:
    """How many documents were written and how many already held the same content."""

    written: int = 0
    unchanged: int = 0

    def add(self, other: UpsertResult) -> None:
        self.written += other.written
        self.unchanged += other.unchanged


class _Once:
    """`before_write`, called at most once however many threads write (None: nothing)."""

    def __init__(self, call: Callable[[], None] | None) -> None:
        self._call, self._lock, self._done = call, threading.Lock(), call is None

    def __call__(self) -> None:
        if self._done:
            return
        with self._lock:
            if not self._done:
                self._call()
                self._done = True


@dataclass(frozen=True)
class Attachment:
    """Bytes sent as they are, not as JSON (`CouchStore.put_attachment`): one string, or
    pieces sent one after the other (never joined into a second copy)."""

    data: bytes | bytearray | memoryview | tuple[bytes, ...]
    content_type: str = "application/octet-stream"


class Encoded:
    """A JSON value held as its encoding (sorted keys), written as is: a big day's documents
    wait for their write in a fraction of the memory of the decoded value. Equal to the
    value it encodes, so documents holding one compare with documents read back."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Encoded):
            return self.data == other.data
        return orjson.loads(self.data) == other

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Encoded({self.data[:60]!r}...)"


def _fragment(value: object) -> orjson.Fragment:
    if isinstance(value, Encoded):
        return orjson.Fragment(value.data)
    raise TypeError(type(value).__name__)


def dumps(value: object, option: int = 0) -> bytes:
    """`orjson.dumps`, with `Encoded` values written as they are encoded."""
    return orjson.dumps(value, default=_fragment, option=option)


def content_of(doc: dict) -> dict:
    """A document without CouchDB's `_rev` and attachment stubs (what "same content"
    compares; a document with an attachment names its content in a field of its own)."""
    return {k: v for k, v in doc.items() if k not in ("_rev", "_attachments")}


def content_digest(doc: dict) -> bytes:
    """The SHA-1 of a document's content (`content_of`) as sorted-key JSON: equal digests mean
    equal content; b"" (equal to no digest) when JSON cannot encode it."""
    try:
        return hashlib.sha1(dumps(content_of(doc), orjson.OPT_SORT_KEYS)).digest()
    except orjson.JSONEncodeError:
        return b""


Present = set[str] | Mapping[str, bytes]  # stored ids, or stored ids → their `content_digest`


def prefix_range(prefix: str) -> tuple[str, str]:
    """The key range [start, end) of every id that starts with `prefix` (which must end with
    an ASCII character below `~`): the end is the prefix with its last character incremented,
    an upper bound both in UTF-8 byte order (Apache CouchDB) and in code-unit order."""
    return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)


def day_prefix(day: date) -> str:
    """The prefix of every document id of UTC `day`."""
    return f"{day.isoformat()}:"


class CouchStore:
    """The pipeline's CouchDB databases. Thread-safe; `close()` (or `with`) frees the
    connections."""

    def __init__(self, settings: Settings, transport: httpx.BaseTransport | None = None) -> None:
        self.settings = settings
        url, credentials = split_credentials(settings.couchdb_url)
        # credentials travel as basic auth, never in a URL httpx logs or puts in errors;
        # certificates are always verified (against KPI_CA_BUNDLE when set)
        self._revisions: dict[str, dict[str, str | None]] | None = None  # track_revisions
        self._http = httpx.Client(base_url=url.rstrip("/") + "/", auth=credentials,
                                  timeout=settings.http_timeout, verify=settings.tls_context(),
                                  transport=transport,
                                  headers={"Accept": "application/json"})

    def __enter__(self) -> CouchStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def track_revisions(self, kinds: tuple[str, ...]) -> dict[str, dict[str, str | None]]:
        """From now on, note the revision of each document of `kinds` this store writes, or
        finds already holding what it was to write after a conflict (None: deleted); returns
        the notes, kind → id → revision, which fill as writes succeed."""
        self._revisions = {kind: {} for kind in kinds}
        return self._revisions

    def _note(self, kind: str, doc_id: str, rev: str | None) -> None:
        if self._revisions is not None and kind in self._revisions:
            self._revisions[kind][doc_id] = rev

    def name(self, kind: str) -> str:
        """Database name of `kind` (`raw`, `quarantine`, `manifests`, ...)."""
        return f"{self.settings.db_prefix}_{kind}"

    def _retry(self, what: str, call: Callable, *args, **kwargs):
        try:
            return retrying(self.settings, (TransientStoreError,))(call, *args, **kwargs)
        except RetryError as exc:
            cause = exc.last_attempt.exception()
            msg = (
                f"CouchDB {self.settings.couchdb_url_redacted} failed to {what} after "
                f"{self.settings.retry_attempts} attempts: {cause}"
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
        if missing and not self._is_couchdb():
            msg = (f"{self._url('')} answered as no CouchDB server does (its root has no "
                   "CouchDB welcome): check KPI_COUCHDB_URL")
            raise StoreError(msg)
        if missing:
            msg = (
                f"CouchDB {self.settings.couchdb_url_redacted} has no database "
                f"{', '.join(missing)}: check KPI_COUCHDB_URL and KPI_DB_PREFIX (extracting a "
                "day creates them; reading never does)"
            )
            raise StoreError(msg)

    def _is_couchdb(self) -> bool:
        """Whether the server's root answers with a CouchDB welcome (Apache CouchDB's
        `{"couchdb": "Welcome", ...}`, pouchdb-server's `{"express-pouchdb": "Welcome!"}`)."""
        try:
            _, result = self._retry("read the server's welcome", self._send, "GET", "")
        except StoreError:
            return False
        return isinstance(result, dict) and any(
            str(result.get(key, "")).startswith("Welcome")
            for key in ("couchdb", "express-pouchdb"))

    def _send(self, method: str, path: str, body: object = None,
              params: dict | None = None) -> tuple[int, object]:
        """One HTTP request; (status, the decoded JSON answer or None).

        Raises:
            TransientStoreError: no answer, a 5xx answer, or a cut JSON body.
            StoreError: an answer that is not JSON (e.g. a proxy's page: a wrong URL).
        """
        if isinstance(body, Attachment):
            pieces = ((body.data,) if isinstance(body.data, (bytes, bytearray, memoryview))
                      else body.data)
            content = iter(pieces)  # a new iterator each attempt; a length, so not chunked
            headers = {"Content-Type": body.content_type,
                       "Content-Length": str(sum(map(len, pieces)))}
        elif body is not None:
            content, headers = dumps(body), {"Content-Type": "application/json"}
        else:
            content = headers = None
        try:
            response = self._http.request(method, path, params=params, content=content,
                                          headers=headers)
        except (httpx.UnsupportedProtocol, httpx.LocalProtocolError) as exc:  # not worth retrying
            msg = f"{self._url(path)}: {type(exc).__name__}: {exc}: check KPI_COUCHDB_URL"
            raise StoreError(msg) from None
        except httpx.TransportError as exc:  # refused, reset, timed out, cut short
            if isinstance(exc, httpx.ConnectTimeout) and "handshake" in str(exc):
                msg = (f"{self._url(path)}: no TLS handshake ({exc}): is it an http:// server "
                       "named https:// in KPI_COUCHDB_URL?")
                raise StoreError(msg) from None
            if isinstance(exc.__context__, ssl.SSLCertVerificationError):  # the same next time
                msg = (f"{self._url(path)}: the server's TLS certificate is not trusted "
                       f"({exc.__context__.verify_message}): set KPI_CA_BUNDLE to its CA")
                raise StoreError(msg) from None
            msg = f"{type(exc).__name__}: {exc}"
            raise TransientStoreError(msg) from exc
        status = response.status_code
        kind = response.headers.get("content-type") or "no Content-Type"
        json_label = "json" in kind.lower()
        if (status < 500 or status in (501, 505)) and not (
                json_label or kind.lower().startswith("text/plain")):
            # CouchDB labels every answer, HEAD's and empty ones included, application/json
            # (text/plain when a proxy drops our Accept header): no label or another is a
            # different server's answer (a proxy's 404, a web page), whatever its body holds;
            # so are 501 and 505 (a server that does not speak CouchDB's methods), never retried
            raise StoreError(self._not_couchdb(path, status, kind, response.text))
        try:
            result = orjson.loads(response.content) if response.content else None
        except orjson.JSONDecodeError as exc:
            if status >= 500:
                msg = f"HTTP {status} with an unparseable body ({kind})"
                raise TransientStoreError(msg) from exc
            if status >= 400 or not json_label:  # a text page: another server's
                raise StoreError(self._not_couchdb(path, status, kind, response.text)) from None
            msg = f"HTTP {status} with a cut or garbled body: {exc}"
            raise TransientStoreError(msg) from exc
        if status >= 500:
            msg = f"{self._url(path)} answered HTTP {status}: {result}"
            raise TransientStoreError(msg)
        return status, result

    def _not_couchdb(self, path: str, status: int, kind: str, text: str) -> str:
        """The message for an answer that is not CouchDB's JSON, without any password."""
        msg = (f"{self._url(path)} answered HTTP {status} with {kind}, not CouchDB's JSON: "
               "is KPI_COUCHDB_URL a CouchDB server?" + (f" ({text[:120]!r})" if text else ""))
        return self.settings.redact(msg)  # a page may echo the request

    def _url(self, path: str) -> str:
        """The URL of `path` on the server, without its password."""
        return self.settings.redact(f"{self.settings.couchdb_url_redacted.rstrip('/')}/{path}")

    def _exists(self, name: str) -> bool:
        status, result = self._send("HEAD", quote(name, safe=""))
        if status not in (200, 404):
            msg = (f"CouchDB {self._url(quote(name, safe=''))} answered HTTP {status} to a "
                   f"lookup{ACCESS_HINT if status in (401, 403) else f': {result}'}")
            raise StoreError(msg)
        return status == 200

    def _ensure(self, name: str) -> None:
        status, result = self._send("PUT", quote(name, safe=""))
        if status not in (201, 202, 412):  # 412: already there
            msg = (f"CouchDB {self._url(quote(name, safe=''))} refused to create the database "
                   f"(HTTP {status}){ACCESS_HINT if status in (401, 403) else f': {result}'}")
            raise StoreError(msg)

    def _request(self, kind: str, method: str, path: str, body: object = None,
                 params: dict | None = None) -> object:
        """One request to a database; the JSON answer. Per-document results (e.g. of
        `_bulk_docs`) are returned unchecked: callers check them."""
        database = quote(self.name(kind), safe="")
        status, result = self._send(method, f"{database}/{path}" if path else database,
                                    body, params)
        too_large = isinstance(result, dict) and result.get("error") == "document_too_large"
        if status == 413 and too_large:
            msg = f"CouchDB {self.name(kind)} refused a document as too large: {result}"
            raise DocumentTooLarge(str(result.get("reason", "")), msg)
        if status >= 400:
            where = f"{database}/{path}" if path else database
            msg = f"CouchDB {self._url(where)} answered HTTP {status}: {result}"
            raise StoreError(msg)
        return result

    def _post(self, kind: str, path: str, body: dict, params: dict | None = None) -> object:
        return self._request(kind, "POST", path, body, params)

    def get_many(self, kind: str, ids: list[str], attachments: bool = False) -> dict[str, dict]:
        """Existing documents among `ids`, by id (with their attachments inline, base64, when
        `attachments`)."""
        if not ids:
            return {}
        params = {"include_docs": "true"} | ({"attachments": "true"} if attachments else {})
        result = self._retry(
            f"read {len(ids)} documents of {self.name(kind)}",
            self._post, kind, "_all_docs", {"keys": ids}, params,
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

    def put_attachment(self, kind: str, doc_id: str, name: str, attachment: Attachment,
                       rev: str | None) -> str:
        """Store `attachment` as the attachment `name` of document `doc_id` at revision `rev`
        (None: a new document), its bytes as they are (an inline attachment is base64 in the
        document's JSON: a third more, and copied several times on its way); returns the
        document's new revision.

        Raises:
            StoreError: also when `rev` is not the document's current revision (a conflict).
        """
        path = f"{quote(doc_id, safe='')}/{quote(name, safe='')}"
        result = self._retry(f"write the attachment {name} of {doc_id} to {self.name(kind)}",
                             self._request, kind, "PUT", path, attachment,
                             {"rev": rev} if rev else None)
        return result["rev"]

    def upsert(self, kind: str, docs: list[dict], present: Present | None = None,
               before_write: Callable[[], None] | None = None) -> UpsertResult:
        """Write `docs` (each with an `_id`) unless an identical document is already stored.

        Args:
            kind: the database.
            docs: the documents, without `_rev`.
            present: when given, the ids known to exist; other ids are not looked up first
                (a fresh day then costs one `_bulk_docs` per batch and no reads). A mapping
                gives each id's `content_digest` too (`digests`): a document with the same
                digest is unchanged without being read, and only the others are read and
                compared.
            before_write: called before anything is actually written (not when every document
                is already stored as is).

        Raises:
            DocumentTooLarge: CouchDB refused a document of `docs` as too large (nothing of
                its chunk of `bulk_size` was written; the error names the document, and its
                `written` counts the documents the other chunks wrote).
        """
        outcome = UpsertResult()
        size = self.settings.bulk_size
        chunks = [docs[first : first + size] for first in range(0, len(docs), size)]
        once = _Once(before_write)
        if len(chunks) < 2 or self.settings.couchdb_writers < 2:
            for chunk in chunks:
                try:
                    outcome.add(self._upsert_chunk(kind, chunk, present, once))
                except DocumentTooLarge as exc:  # the chunks before it were written
                    exc.written += outcome.written
                    raise
            return outcome
        # the chunks hold distinct ids: they are written `couchdb_writers` at a time (a
        # CouchDB server takes several requests at once: ids in order, 17,900 against 14,800
        # documents a second on Apache CouchDB 3.4.3, 2 cores)
        pool = ThreadPoolExecutor(self.settings.couchdb_writers, thread_name_prefix="kpi-write")
        failed = threading.Event()  # a chunk failed: the others are not started

        def write(chunk: list[dict]) -> UpsertResult:
            if failed.is_set():
                msg = f"CouchDB {self.name(kind)}: not written, another write failed"
                raise StoreError(msg)
            try:
                return self._upsert_chunk(kind, chunk, present, once)
            except DocumentTooLarge:
                raise
            except BaseException:
                failed.set()
                raise

        too_large = None
        try:
            futures = [pool.submit(write, chunk) for chunk in chunks]
            for future in futures:
                try:
                    outcome.add(future.result())
                except DocumentTooLarge as exc:  # the other chunks are still written
                    too_large = too_large or exc
                    outcome.written += exc.written
        except BaseException:  # a failed write: the chunks not started are not started
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        finally:
            pool.shutdown(wait=True)
        if too_large is not None:
            too_large.written = outcome.written
            raise too_large
        return outcome

    def _upsert_chunk(self, kind: str, batch: list[dict], present: Present | None,
                      before_write: Callable[[], None]) -> UpsertResult:
        """`upsert` of at most `bulk_size` documents."""
        outcome = UpsertResult()
        batch, unchanged = self._same_digest(batch, present)
        outcome.unchanged += unchanged
        existing = self._existing(kind, batch, present)
        to_write = []
        for doc in batch:
            old = existing.get(doc["_id"])
            if old is not None and content_of(old) == content_of(doc):
                outcome.unchanged += 1
                continue
            to_write.append({**doc, "_rev": old["_rev"]} if old is not None else doc)
        if to_write:
            before_write()
        written, unchanged = self._write_resolving_conflicts(kind, to_write)
        outcome.written += written
        outcome.unchanged += unchanged
        return outcome

    @staticmethod
    def _same_digest(docs: list[dict], present: Present | None) -> tuple[list[dict], int]:
        """(`docs` but those whose digest in `present` equals theirs, how many were left out)."""
        if not isinstance(present, Mapping) or not present:
            return docs, 0
        others = [doc for doc in docs  # (b"": JSON could not encode it: never the same)
                  if present.get(doc["_id"]) != (digest := content_digest(doc)) or not digest]
        return others, len(docs) - len(others)

    def _existing(self, kind: str, docs: list[dict], present: Present | None) -> dict:
        """The stored documents among `docs`' ids (only those in `present`, when given)."""
        ids = [doc["_id"] for doc in docs]
        if present is not None:
            ids = [doc_id for doc_id in ids if doc_id in present]
        return self.get_many(kind, ids)

    def differing(self, kind: str, docs: list[dict], present: Present | None) -> list[dict]:
        """Those of `docs` that are not stored with the same content (new or changed);
        `present` as for `upsert`."""
        result = []
        size = self.settings.bulk_size
        for first in range(0, len(docs), size):
            batch, _ = self._same_digest(docs[first : first + size], present)
            existing = self._existing(kind, batch, present)
            result += [doc for doc in batch if doc["_id"] not in existing
                       or content_of(existing[doc["_id"]]) != content_of(doc)]
        return result

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
                content = {k: v for k, v in doc.items() if k != "_rev"}
                old = current.get(doc["_id"])
                if old is not None and content_of(old) == content_of(content):
                    unchanged += 1
                    self._note(kind, doc["_id"], old["_rev"])
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

    def delete_revisions(self, kind: str, revisions: dict[str, str]) -> tuple[int, list[str]]:
        """Delete these revisions (id → rev) of documents; (how many were deleted, the ids
        whose document changed meanwhile, left as they are)."""
        if not revisions:
            return 0, []
        tombstones = [{"_id": doc_id, "_rev": rev, "_deleted": True}
                      for doc_id, rev in revisions.items()]
        conflicted = sorted(r["id"] for r in self._bulk_write(kind, tombstones))
        # a conflict may be our own deletion whose answer was lost: gone now is deleted
        changed = sorted(self.present(kind, conflicted)) if conflicted else []
        return len(revisions) - len(changed), changed

    def _bulk_write(self, kind: str, docs: list[dict]) -> list[dict]:
        """`_bulk_docs`; returns the per-document results that are conflicts, raises on others."""
        results = self._retry(
            f"write {len(docs)} documents to {self.name(kind)}",
            self._post, kind, "_bulk_docs", {"docs": docs},
        )
        conflicts = [r for r in results if r.get("error") == "conflict"]
        failed = [r for r in results if "error" in r and r.get("error") != "conflict"]
        too_large = [r for r in failed if r.get("error") == "document_too_large"]
        if too_large:  # a server that answers per document rather than with a 413
            msg = f"CouchDB {self.name(kind)} refused a document as too large: {too_large[0]}"
            refused = DocumentTooLarge(too_large[0]["id"], msg)
            written = [r for r in results if "error" not in r and "rev" in r]
            refused.written = len(written)  # the other documents of the request were written
            for result in written:
                self._note(kind, result["id"], result["rev"])
            raise refused
        if failed:
            reasons = Counter(f"{r['error']}: {r.get('reason', '')}" for r in failed)
            msg = (
                f"CouchDB {self.name(kind)} refused {len(failed)} of {len(docs)} documents "
                f"(e.g. {failed[0]['id']}): {dict(reasons)}"
            )
            raise StoreError(msg)
        if self._revisions is not None and kind in self._revisions:
            # noted under the documents' own id strings: a million ids read from the answer
            # would cost about 90 MB more
            ids = {doc["_id"]: doc["_id"] for doc in docs}
            deleted = {doc["_id"] for doc in docs if doc.get("_deleted")}
            for result in results:
                if "error" not in result and "rev" in result:
                    doc_id = ids.get(result["id"], result["id"])
                    self._note(kind, doc_id, None if doc_id in deleted else result["rev"])
        return conflicts

    def iter_range(self, kind: str, startkey: str, endkey: str | None,
                   include_docs: bool = True, attachments: bool = False) -> Iterator[dict | str]:
        """Documents (or only their ids) whose ids lie in [startkey, endkey) (to the end of
        the database when `endkey` is None), page by page; with their attachments inline
        (base64) when `attachments`."""
        for row in self._iter_rows(kind, startkey, endkey, include_docs, attachments=attachments):
            yield row["doc"] if include_docs else row["id"]

    def revisions(self, kind: str, startkey: str, endkey: str | None) -> dict[str, str]:
        """The current revision of each document whose id lies in [startkey, endkey) (no
        bodies are read: what changed since a revision was seen costs one small read)."""
        return {row["id"]: row["value"]["rev"]
                for row in self._iter_rows(kind, startkey, endkey, include_docs=False)}

    def _iter_rows(self, kind: str, startkey: str, endkey: str | None,
                   include_docs: bool, limit: int | None = None,
                   attachments: bool = False) -> Iterator[dict]:
        # ids and revisions only: 10× as many a page (200,000 of them in 2 s on Apache CouchDB)
        page = limit or self.settings.bulk_size * (1 if include_docs else 10)
        params = {"startkey": orjson.dumps(startkey).decode(), "limit": page + 1,
                  "include_docs": "true" if include_docs else "false"}
        if attachments:
            params["attachments"] = "true"
        if endkey is not None:
            params |= {"endkey": orjson.dumps(endkey).decode(), "inclusive_end": "false"}
        while True:
            result = self._retry(f"read {self.name(kind)} range",
                                 self._request, kind, "GET", "_all_docs", None, params)
            rows = result["rows"]
            yield from rows[:page]
            if len(rows) <= page or limit:
                return
            params = {**params, "startkey": orjson.dumps(rows[page]["id"]).decode()}

    def find(self, kind: str, selector: dict, fields: list[str] | None = None) -> list[dict]:
        """The documents of `kind` that match the Mango `selector` (`_find`), in the server's
        order, with only `fields` (and `_id`) when given.

        Pages of `bulk_size` documents follow each other by the answer's `bookmark` (Apache
        CouchDB) or, from a server that sends none (pouchdb-server 4 ignores bookmarks), by
        `skip`, until a page is short. No index is needed: the server scans the database (Apache
        CouchDB says so in a `warning`), so keep it for databases or answers that are small.

        Raises:
            StoreError: the server refused the query, or sent a document twice (it ignored
                both `bookmark` and `skip`: paging would never end).
        """
        page = self.settings.bulk_size
        body: dict = {"selector": selector, "limit": page}
        if fields is not None:
            body["fields"] = ["_id", *(field for field in fields if field != "_id")]
        found: list[dict] = []
        seen: set[str] = set()
        while True:
            answer = self._retry(f"query {self.name(kind)}", self._post, kind, "_find", body)
            docs = answer["docs"]
            repeated = [doc["_id"] for doc in docs if doc["_id"] in seen]
            if repeated:
                msg = (f"CouchDB {self.name(kind)} answered a `_find` page with documents it "
                       f"had sent already (e.g. {repeated[0]}): it pages neither by bookmark "
                       "nor by skip")
                raise StoreError(msg)
            seen.update(doc["_id"] for doc in docs)
            found += docs
            if len(docs) < page:
                return found
            if answer.get("bookmark"):
                body = {**body, "bookmark": answer["bookmark"]}
            else:
                body = {**body, "skip": len(found)}

    def day_docs(self, kind: str, day: date) -> Iterator[dict]:
        """The documents of `kind` for UTC `day` (ids `YYYY-MM-DD:...`)."""
        return self.iter_range(kind, *prefix_range(day_prefix(day)))

    def has_day(self, kind: str, day: date) -> bool:
        """Whether `kind` holds any document of UTC `day` (one small read)."""
        rows = self._iter_rows(kind, *prefix_range(day_prefix(day)), include_docs=False,
                               limit=1)
        return any(True for _ in rows)

    def digests(self, kind: str, day: date) -> dict[str, bytes]:
        """The `content_digest` of each of `kind`'s documents for UTC `day`, by id: the day read
        once as a key range (several times faster on Apache CouchDB than reading the same
        documents by their ids), keeping 20 bytes a document."""
        return {doc["_id"]: content_digest(doc)
                for doc in self.iter_range(kind, *prefix_range(day_prefix(day)))}

    def day_ids(self, kind: str, day: date) -> set[str]:
        """The ids of `kind`'s documents for UTC `day` (no document bodies are read)."""
        return set(self.iter_range(kind, *prefix_range(day_prefix(day)), include_docs=False))
