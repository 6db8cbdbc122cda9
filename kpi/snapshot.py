"""The restatement protocol: a day's raw snapshot in CouchDB becomes what KPIggybank returns.

The raw snapshot is the system of record. Storing a day's rows keeps one document per row id:
valid rows in `<prefix>_raw`, invalid ones in `<prefix>_quarantine` with their reason, and a
document is written only when its content changed, so re-running an unchanged day writes
nothing. Re-extracting a day that is already stored *restates* it: changed rows are replaced,
new rows added, rows no longer returned removed. Removals are guarded (`RestatementGuard`): a
restatement that would remove every stored row of the day, or more than
`KPI_RESTATE_MAX_REMOVED` of them, is refused unless removals are allowed for the run, and then
nothing of the day changes. Removed rows are moved to `<prefix>_removed`, never destroyed
(`kpi.removed.restore_removed` puts them back). Row documents are built by `kpi.rows`.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import threading
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from fractions import Fraction
from typing import NamedTuple

import orjson

from kpi.couch import (
    MANIFESTS,
    PARTS,
    QUARANTINE,
    RAW,
    Attachment,
    CouchStore,
    DocumentTooLarge,
    Encoded,
    Present,
    StoreError,
    content_of,
    day_prefix,
    prefix_range,
)
from kpi.overlap import Behind, gc_paused
from kpi.removed import GONE, MOVED, move_to_removed
from kpi.rows import (
    DOC_MARGIN,
    TOO_LARGE,
    encoded,
    inline_attachments,
    quarantine_doc,
    storable,
    too_large_doc,
)
from kpi.source import blob_of, check_row, usable_id


class IncompleteMark:
    """Before a day's snapshot first changes, flag its manifest as in progress, so a run that
    dies half-way is never taken for a finished day (`close_snapshot` sets `complete`). Callable,
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
    """What storing (or staging) some of a day's rows kept: the raw and quarantine ids, the
    extract counts, the rejection reasons and how many documents were written."""

    raw_ids: set[str] = field(default_factory=set)
    quarantine_ids: set[str] = field(default_factory=set)
    counts: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)
    written: int = 0
    restage: bool = False  # a blob handed to `on_stored` was replaced or moved later
    staging: str = ""  # the attempt whose `Staging` holds the new and changed rows ("": none)
    staged_rows: int = 0  # how many rows that attempt staged
    rows: dict[str, tuple[str, str, str]] | None = None  # doc id → (database, digest, note)


def run_key(run: str) -> str:
    """A short, id-safe name of a run (run ids may hold `:` and `+`)."""
    return hashlib.sha1(run.encode()).hexdigest()[:12]


def staging_prefix(day: date, run: str, attempt: str = "") -> str:
    """The id prefix of the rows `run` (one `attempt` of it, when given) staged for UTC `day`
    (see `Staging`)."""
    return f"{day.isoformat()}:s:{run_key(run)}:" + (f"{attempt}:" if attempt else "")


def drop_staging(store: CouchStore, day: date, run: str) -> None:
    """Delete every row any attempt of `run` staged for `day`."""
    store.delete(PARTS, list(store.iter_range(PARTS, *prefix_range(staging_prefix(day, run)),
                                              include_docs=False)))


class StagingLost(StoreError):
    """Rows a run staged were deleted by another run of the day before they were applied."""


class Staging:
    """The new and changed rows of a restatement, held in `<prefix>_parts` until the day's
    guard lets them in (`apply`), so a refused restatement changes nothing of the day.

    One staging document per row, `YYYY-MM-DD:s:<run>:<attempt>:<document id>`, holding the
    database and the document (its attachments as the staging document's own); a later
    delivery of the same id replaces it. Each attempt (of a window task, or of a one-pass
    store) stages under its own token and counts its rows, so the close applies exactly the
    rows of the attempts it combines, and sees when some of them were deleted meanwhile.
    """

    def __init__(self, store: CouchStore, day: date, run: str, attempt: str,
                 staged_rows: int = 0) -> None:
        self.store, self.day, self.attempt = store, day, attempt
        self.prefix = staging_prefix(day, run, attempt)
        self.staged: set[str] = set()  # ids staged by this object
        self.staged_rows = staged_rows  # for an attempt staged elsewhere: its count

    def add(self, kind: str, docs: list[dict], present: Present | None) -> None:
        """Stage those of `docs` (for database `kind`) that differ from what is stored; a
        document this object staged before and that is now delivered as stored is unstaged."""
        changed = self.store.differing(kind, docs, present)
        ids = {doc["_id"] for doc in changed}
        back = sorted(self.prefix + doc["_id"] for doc in docs
                      if doc["_id"] in self.staged and doc["_id"] not in ids)
        if back:
            self.store.delete(PARTS, back)
            self.staged -= {doc_id.removeprefix(self.prefix) for doc_id in back}
        self.store.upsert(PARTS, [  # only ids staged before are looked up
            {"_id": self.prefix + doc["_id"], "kind": kind, "doc": content_of(doc),
             **({"_attachments": doc["_attachments"]} if doc.get("_attachments") else {})}
            for doc in changed
        ], present={self.prefix + doc_id for doc_id in self.staged & ids})
        self.staged |= ids
        self.staged_rows = len(self.staged)

    def ids(self) -> list[str]:
        """The ids of the staging documents."""
        return list(self.store.iter_range(PARTS, *prefix_range(self.prefix),
                                          include_docs=False))

    def complete(self) -> bool:
        """Whether every row the attempt staged is still there."""
        return len(self.ids()) == self.staged_rows

    def apply(self, before_write: Callable[[], None]) -> int:
        """Write the staged rows into their databases; returns the documents written.

        Raises:
            StagingLost: some staged rows are gone (another run dropped them): nothing written.
        """
        written = 0
        ids = self.ids()
        if len(ids) != self.staged_rows:
            msg = (f"{self.day}: {self.staged_rows - len(ids)} of {self.staged_rows} rows staged "
                   "by this run were deleted meanwhile (by another run of the day)")
            raise StagingLost(msg)
        size = self.store.settings.bulk_size
        for first in range(0, len(ids), size):
            staged = self.store.get_many(PARTS, ids[first:first + size], attachments=True)
            by_kind: dict[str, list[dict]] = {RAW: [], QUARANTINE: []}
            for item in staged.values():
                attachments = inline_attachments(item)
                by_kind[item["kind"]].append(
                    {**item["doc"], **({"_attachments": attachments} if attachments else {})})
            for kind, docs in by_kind.items():
                written += self.store.upsert(kind, docs, before_write=before_write).written
        return written


RUN_ROWS = 100_000  # documents (held encoded: about 1 kB each) sorted and written at a time
SLICE_ROWS = 5_000  # rows of a fetch window validated at a time


def store_rows(store: CouchStore, day: date, batches: Iterable[list],
               present_raw: Present | None, present_quarantined: Present | None,
               before_write: Callable[[], None] | None = None,
               on_stored: Callable[[list[dict]], None] | None = None,
               staging: Staging | None = None, run_rows: int = RUN_ROWS,
               known: Mapping[str, tuple[str, str, str]] | None = None,
               first_run: int | None = None, slice_rows: int = SLICE_ROWS) -> Snapshot:
    """Validate and store (or stage) rows of UTC `day` (all of it, or one window of it).

    Valid rows go to the raw database, invalid ones to quarantine with their reason (SPEC D10),
    as do rows too large for one CouchDB document (the row kept as an attachment).
    An id delivered n times counts once in its class (stored, or rejected) and n − 1 times as
    `duplicate`, whatever its validity, and its last delivery's content wins (SPEC D12): a row
    an earlier batch stored is replaced, or moved between raw and quarantine, and the snapshot
    says its earlier blob was handed to `on_stored` (`restage`). Rows without an id are told
    apart by content. So `fetched = stored + rejected_invalid + duplicate`.

    Batches (a fetch page's rows; a batch that is a list is emptied once validated, so its
    decoded rows are freed) are validated one by one, `slice_rows` rows at a time, each
    slice's valid blobs handed to `on_stored` at once, and their documents, held encoded,
    pooled into runs written in id order: Apache CouchDB writes documents in id order several
    times faster than in the source's (timestamp) order, which scatters random ids over its
    B-tree (200,000 documents, 1,000 a request, 2 cores: 13.5 s against 51 s; in runs of
    100,000 sorted ones, two writers, 12.9 s). Runs grow (`first_run`, twice that, ... up to
    `run_rows`): the first write starts after 25,000 rows rather than 100,000 (200,000 blobs
    on Apache CouchDB: 19.1-19.6 s against 19.8-19.9 s, two runs each: about the noise). A
    run is written by one thread (`kpi.overlap.Behind`), runs in order, while the next is
    fetched and validated; a failed batch's run is still written before the failure is
    raised.

    Args:
        present_raw, present_quarantined: the day's stored ids (None: look each batch up), or
            their `content_digest`s by id (`CouchStore.digests`: unchanged rows are not read).
        before_write: called before the first write.
        on_stored: called with each slice's valid blobs (e.g. to aggregate them), before
            they are written; a blob replaced by a later slice's delivery (another page's, or
            one more than `slice_rows` rows further in the same page), or refused by the
            server as too large, sets the snapshot's `restage` (the day's aggregates are then
            made again from CouchDB).
        run_rows: the most documents pooled before they are sorted and written.
        first_run: the documents of the first run (default: a quarter of `run_rows`); each
            next run is twice the last, up to `run_rows`: the first write starts early, and
            the big runs, which cost the server most when their ids interleave with many
            stored ones, come later and few.
        slice_rows: a batch of more rows is validated (and its blobs handed to `on_stored`)
            this many rows at a time, so a run closes within a batch.
        known: stored documents whose content is known without reading them (`known_rows`):
            doc id → (database, digest, note) as this function computes them; a row that
            comes once with exactly that is counted and left as it is stored.
        staging: when given (a restatement), new and changed rows are staged there rather
            than written, until `close_snapshot` lets them in.
    """
    # doc id → (database, digest, reason or status); an id in `final` but not in the pending
    # run (below) is stored or known, or is being written (or staged) by an earlier run; an id
    # in the pending run may be stored too (`stored_too`)
    final: dict[str, tuple[str, str, str]] = {}
    snapshot = Snapshot()
    counts, reasons = snapshot.counts, snapshot.reasons
    prefix = day_prefix(day)
    limit = store.settings.max_document_bytes
    # A batch is written (one thread, in order) while the next is validated: the writer changes
    # the extract's counts only for a row the server refuses as too large, under this lock
    counting = threading.Lock()

    def write(pending: dict[str, dict[str, dict]], moved: dict[str, list[str]],
              received: dict[str, object]) -> None:
        """Write (or stage) one batch's documents."""
        for kind in (RAW, QUARANTINE):
            if moved[kind]:
                store.delete(kind, moved[kind], before_write)
        for kind, present in ((RAW, present_raw), (QUARANTINE, present_quarantined)):
            while True:
                docs = list(pending[kind].values())
                try:
                    if staging is not None:
                        staging.add(kind, docs, present)
                    else:
                        snapshot.written += store.upsert(kind, docs, present,
                                                         before_write).written
                    break
                except DocumentTooLarge as exc:  # a server whose limit is below ours
                    if staging is None:  # the other chunks' documents were written
                        snapshot.written += exc.written
                    doc_id = exc.doc_id.removeprefix(staging.prefix if staging else "")
                    doc = pending[kind].pop(doc_id, None)
                    if doc is None or "_attachments" in doc:
                        raise
                    with counting:
                        quarantined = _quarantine_too_large(day, doc_id, doc, received, final,
                                                            counts, reasons, pending)
                        # its blob was aggregated: the day is aggregated again from CouchDB
                        snapshot.restage |= kind == RAW
                    if quarantined and kind == RAW and staging is None:
                        # an earlier delivery an earlier run stored in raw must not stay there
                        store.delete(RAW, [doc_id], before_write)

    # doc id of the pending run → the database an earlier run wrote (or is writing) its earlier
    # delivery to, when this run replaces it there (a changed repeat): if a later delivery in
    # this run moves it to the other database, that copy is deleted. Few: repeats across runs.
    stored_too: dict[str, str] = {}

    def new_run() -> tuple[dict[str, dict[str, dict]], dict[str, list[str]], dict[str, object]]:
        stored_too.clear()
        return {RAW: {}, QUARANTINE: {}}, {RAW: [], QUARANTINE: []}, {}

    # pending: doc id → document of the run to write; moved: ids to delete first (a later
    # delivery moved them to the other database); received: doc id → its row as received
    pending, moved, received = new_run()
    threshold = first_run or max(1, run_rows // 4)  # the next run's size: they grow

    def submit_run() -> None:
        nonlocal pending, moved, received
        # written in id order (Apache CouchDB appends to its B-tree), in order after the earlier
        # runs: a later run may replace or move their documents
        sorted_pending = {kind: dict(sorted(docs.items())) for kind, docs in pending.items()}
        writes.submit(functools.partial(write, sorted_pending, moved, received))
        pending, moved, received = new_run()

    with Behind[None](depth=1) as writes:
        batches = _sliced(batches, slice_rows)
        while True:
            try:
                rows = next(batches)
            except StopIteration:
                break
            except Exception:  # the rows fetched before a failure are stored
                if pending[RAW] or pending[QUARANTINE] or moved[RAW] or moved[QUARANTINE]:
                    submit_run()
                writes.drain()
                raise
            blobs: dict[str, dict] = {}  # doc id → the blob of a row of this batch going to raw
            with counting, gc_paused():  # many small objects, no cycles (1.2 s of 9 for 200k)
                for row in rows:
                    counts["fetched"] += 1
                    check = check_row(row, day)
                    row_id = row.get("id") if isinstance(row, dict) else None
                    if check.status == "rejected" and not usable_id(row_id):
                        doc = quarantine_doc(day, row, check.reason, final, limit)
                        if doc is None:
                            counts["duplicate"] += 1
                            continue
                        pending[QUARANTINE][doc["_id"]] = doc
                        _count(counts, reasons, QUARANTINE, final[doc["_id"]][2], +1)
                        continue
                    doc_id = prefix + row_id
                    if check.status == "rejected":
                        row, digest, size = storable(row)
                        kind, note = QUARANTINE, check.reason
                        doc = {"_id": doc_id, "day": day.isoformat(), "reason": note, "row": row}
                    else:
                        value = blob_of(row)
                        blob, data = encoded(value)
                        digest, size = hashlib.sha1(data).hexdigest(), len(data)
                        kind, note = RAW, check.status
                        # (orjson's output keeps a spare of several kB: an exact copy is kept)
                        doc = {"_id": doc_id, "kpiggybank_id": row_id,
                               "blob": Encoded(bytes(memoryview(data)))}
                    if size + 2 * len(doc_id) + DOC_MARGIN > limit:
                        kind, note = QUARANTINE, TOO_LARGE
                        doc = too_large_doc(doc_id, day, row)
                    earlier = final.get(doc_id)
                    if earlier is None and known and known.get(doc_id) == (kind, digest, note):
                        final[doc_id] = (kind, digest, note)  # stored as it is: not written
                        if kind == RAW:
                            blobs[doc_id] = blob
                        _count(counts, reasons, kind, note, +1)
                        continue
                    received[doc_id] = (_as_received(row, blob is value) if kind == RAW
                                        else row)
                    if earlier is not None:
                        counts["duplicate"] += 1
                        if earlier[1] == digest:
                            continue
                        _count(counts, reasons, earlier[0], earlier[2], -1)
                        if earlier[0] == RAW and blobs.pop(doc_id, None) is None:
                            snapshot.restage = True  # its blob was aggregated with its batch
                        pending_before = pending[earlier[0]].pop(doc_id, None) is not None
                        # where a copy of it is stored (or being written), if anywhere
                        stored = stored_too.get(doc_id) if pending_before else earlier[0]
                        if stored is not None and staging is None:
                            if stored != kind:  # deleted there before this run is written
                                if doc_id not in moved[stored]:
                                    moved[stored].append(doc_id)
                                stored_too.pop(doc_id, None)
                            else:
                                stored_too[doc_id] = stored
                    final[doc_id] = (kind, digest, note)
                    pending[kind][doc_id] = doc
                    if kind == RAW:
                        blobs[doc_id] = blob
                    _count(counts, reasons, kind, note, +1)
            if isinstance(rows, list):  # the decoded rows are done with: free them now
                rows.clear()
            if on_stored is not None:  # aggregated before written: a failed write fails all
                on_stored(list(blobs.values()))
            del blobs
            if len(pending[RAW]) + len(pending[QUARANTINE]) >= threshold:
                submit_run()
                threshold = min(run_rows, 2 * threshold)
        if pending[RAW] or pending[QUARANTINE] or moved[RAW] or moved[QUARANTINE]:
            submit_run()
        writes.drain()
    if staging is not None:
        snapshot.staging, snapshot.staged_rows = staging.attempt, staging.staged_rows
    snapshot.raw_ids = {doc_id for doc_id, (kind, _, _) in final.items() if kind == RAW}
    snapshot.quarantine_ids = {doc_id for doc_id, (kind, _, _) in final.items()
                               if kind == QUARANTINE}
    snapshot.rows = final
    return snapshot


def _sliced(batches: Iterable[list], size: int) -> Iterator[list]:
    """`batches`, each list of more than `size` rows as slices of `size`; a list is emptied
    once all its slices are done (its decoded rows freed)."""
    for rows in batches:
        if not isinstance(rows, list) or len(rows) <= size:
            yield rows
            continue
        for first in range(0, len(rows), size):
            yield rows[first:first + size]
        rows.clear()


# The digest record of a day: what each stored row of the day holds, by revision, so a re-run
# over an unchanged source knows its rows are stored as they are without reading them (a key
# range read of 200,000 documents costs Apache CouchDB about 14 s; their ids and revisions, 2 s)


def record_id(day: date) -> str:
    """The id of `day`'s digest record in `<prefix>_parts` (outside the day's parts' range,
    `YYYY-MM-DD:`, which a new extract of the day clears)."""
    return f"{day.isoformat()}~digests"


RECORD = "rows.json.zz"  # the record's attachment: zlib of JSON [[id, database, rev, digest, note]]
RECORD_BATCH = 10_000  # entries encoded and compressed at a time
RECORD_FORMAT = 1  # raise when what a digest stands for changes (the documents' shape): older
# records are then ignored, and the next extract of each day reads it once and writes anew


def known_rows(store: CouchStore, day: date,
               revisions: dict[str, dict[str, str]]) -> dict[str, tuple[str, str, str]]:
    """The rows of `day` whose stored document is the one its digest record describes (its
    revision is still the recorded one): doc id → (database, digest, note). A missing or
    unreadable record knows nothing; a document changed since (any write changes its
    revision) is not known."""
    doc = store.get_many(PARTS, [record_id(day)], attachments=True).get(record_id(day))
    if not doc or doc.get("format") != RECORD_FORMAT:
        return {}
    try:
        data = base64.b64decode(doc["_attachments"][RECORD]["data"])
        if hashlib.sha1(data).hexdigest() != doc["sha1"]:  # not the one its fields describe
            return {}
        entries = orjson.loads(zlib.decompress(data))
    except (TypeError, KeyError, ValueError, zlib.error):  # not one we wrote
        return {}
    del doc
    known: dict[str, tuple[str, str, str]] = {}
    shared: dict[tuple[str, str], tuple[str, str]] = {}  # one (database, note) object each
    ids = {kind: {doc_id: doc_id for doc_id in stored}  # the ids `revisions` holds
           for kind, stored in revisions.items()}
    for doc_id, kind, rev, digest, note in entries:
        stored = revisions.get(kind)
        if stored is not None and stored.get(doc_id) == rev:
            pair = shared.setdefault((kind, note), (kind, note))
            known[ids[kind][doc_id]] = (pair[0], digest, pair[1])
    return known


def write_record(store: CouchStore, day: date, rows: dict[str, tuple[str, str, str]],
                 revisions: dict[str, dict[str, str]],
                 written: dict[str, dict[str, str | None]]) -> bool:
    """Record the digest of each of `day`'s stored rows (`rows`: what the closed extract
    kept) with its revision: the one this extract wrote (`written`, from
    `CouchStore.track_revisions`), else the one stored before it (`revisions`). Written only
    when every row's revision is known; returns whether it was."""
    # compressed as it is encoded, RECORD_BATCH entries at a time (one JSON array in all): a
    # million rows' entries and their JSON (about 250 MB) are never held at once
    compressor = zlib.compressobj(1)
    pieces: list[bytes] = []
    batch: list[list[str]] = []
    opening = b"["  # before the next batch's entries: `[`, then `,`
    for number, (doc_id, (kind, digest, note)) in enumerate(rows.items(), 1):
        rev = written[kind][doc_id] if doc_id in written[kind] else revisions[kind].get(doc_id)
        if rev is None:
            return False
        batch.append([doc_id, kind, rev, digest, note])
        if len(batch) == RECORD_BATCH or number == len(rows):
            pieces.append(compressor.compress(opening + orjson.dumps(batch)[1:-1]))
            opening = b","
            batch.clear()
    pieces.append(compressor.compress(b"]" if rows else b"[]"))
    pieces.append(compressor.flush())
    sha1 = hashlib.sha1()
    for piece in pieces:  # sent piece by piece: the record is never joined into one copy
        sha1.update(piece)
    # the document (its fields; any older attachment dropped), then the attachment, raw
    document = {"_id": record_id(day), "day": day.isoformat(), "format": RECORD_FORMAT,
                "rows": len(rows), "sha1": sha1.hexdigest()}
    store.upsert(PARTS, [document])
    stored = store.get(PARTS, record_id(day))
    if stored is None:  # deleted meanwhile (a new extract of the day): it writes its own
        return False
    store.put_attachment(PARTS, record_id(day), RECORD, Attachment(tuple(pieces)),
                         stored["_rev"])
    return True


def _quarantine_too_large(day: date, doc_id: str, doc: dict, received: dict[str, object],
                          final: dict[str, tuple[str, str, str]], counts: Counter,
                          reasons: Counter, pending: dict[str, dict[str, dict]]) -> bool:
    """Quarantine a batch's row the server refused as too large, kept whole as an attachment
    (`too_large_doc`), unless a later batch delivered other content for its id meanwhile: that
    delivery, counted already, replaces it. Returns whether it quarantined the row."""
    row = received.get(doc_id, doc.get("row"))
    if isinstance(row, Received):
        row = row.row(doc)
    kind, digest, note = final[doc_id]
    content = doc["blob"] if "blob" in doc else doc.get("row")
    if digest != (hashlib.sha1(content.data).hexdigest() if isinstance(content, Encoded)
                  else storable(content)[1]):
        return False
    _count(counts, reasons, kind, note, -1)
    final[doc_id] = (QUARANTINE, digest, TOO_LARGE)
    pending[QUARANTINE][doc_id] = too_large_doc(doc_id, day, row)
    _count(counts, reasons, QUARANTINE, TOO_LARGE, +1)
    return True


class Received(NamedTuple):
    """A raw row as received, in little memory while its batch waits to be written: a row
    `{id, key, value}` whose blob is its value less `_id` and `_rev` keeps only those three
    (`MISSING` when absent); `row` rebuilds it whole from its document (for a 413)."""

    key: object
    value_id: object
    value_rev: object

    def row(self, doc: dict) -> dict:
        value = {name: item for name, item in (("_id", self.value_id), ("_rev", self.value_rev))
                 if item is not MISSING}
        row = {"id": doc["kpiggybank_id"]} | ({} if self.key is MISSING else {"key": self.key})
        return row | {"value": value | orjson.loads(doc["blob"].data)}


MISSING = object()
ROW_KEYS = frozenset(("id", "key", "value"))


def _as_received(row: dict, whole: bool) -> object:
    """What a 413 needs of a raw `row`: a `Received` when the row can be rebuilt from its
    document (`whole`: its blob was stored as it came), else the row itself."""
    if not whole or not row.keys() <= ROW_KEYS:
        return row
    value = row["value"]
    return Received(row.get("key", MISSING), value.get("_id", MISSING),
                    value.get("_rev", MISSING))


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


@dataclass(frozen=True)
class RestatementGuard:
    """When a restatement of a stored day may remove rows (SPEC D13).

    Attributes:
        max_removed: the largest share of the day's stored rows a restatement may remove
            (`KPI_RESTATE_MAX_REMOVED`).
        allow_removals: this run may remove any number (`--allow-removals`).
    """

    max_removed: float = 0.1
    allow_removals: bool = False

    def refuses(self, stored: int, kept: int, would_remove: int) -> bool:
        """Whether to refuse a restatement of a day with `stored` rows that keeps `kept` of
        them and would remove `would_remove`: when it keeps none of them, or removes more
        than `max_removed` of them. A day with nothing stored is never refused."""
        if self.allow_removals or stored == 0:
            return False  # exact: 29 of 100 with a limit of 0.29 is allowed
        return kept == 0 or would_remove > Fraction(str(self.max_removed)) * stored


def close_snapshot(store: CouchStore, day: date, snapshot: Snapshot, present_raw: set[str],
                   present_quarantined: set[str], guard: RestatementGuard, run: str,
                   stagings: Iterable[Staging] = (),
                   before_manifest: Callable[[dict], int] | None = None,
                   fresh: bool = False, now: datetime | None = None) -> dict:
    """Close a day whose rows are stored (or staged): apply the restatement or refuse it.

    Applied: the staged rows are written, stored rows the extract did not keep are moved to
    `<prefix>_removed`, `before_manifest` is called with the manifest (e.g. to write the day's
    aggregates; it returns the documents it wrote), then the complete manifest is written,
    last: a day whose run dies before that is never taken for finished.

    Refused (`guard`): nothing of the day changes but its manifest, which records the refusal
    under `refused` (when, run, stored, fetched, would_remove, max_removed).

    Args:
        present_raw, present_quarantined: the day's stored ids (before this extract, when it
            staged its rows; else now).
        stagings: where the extract staged its new and changed rows (a restatement).
        fresh: the day had no stored row before this extract (never refused).

    Returns:
        The manifest with `written` and `removed` (documents), and `refused` when refused.
    """
    present = present_raw | present_quarantined
    kept = snapshot.raw_ids | snapshot.quarantine_ids
    gone = present - kept
    when = (now or datetime.now(UTC)).isoformat(timespec="seconds")
    stored = 0 if fresh else len(present)
    if guard.refuses(stored, len(present & kept), len(gone)):
        refusal = {"at": when, "run": run, "stored": stored,
                   "fetched": snapshot.counts["fetched"], "would_remove": len(gone),
                   "max_removed": guard.max_removed}
        old = store.get(MANIFESTS, day.isoformat())
        manifest = {**(content_of(old) if old else {"_id": day.isoformat(),
                                                     "day": day.isoformat(),
                                                     "complete": False}),
                    "refused": refusal}
        store.upsert(MANIFESTS, [manifest])
        return {**content_of(manifest), "written": 0, "removed": 0}
    mark = IncompleteMark(store, day)
    written = snapshot.written
    for staging in stagings:
        written += staging.apply(mark)
    removed = 0
    for kind, ids, other in ((RAW, snapshot.raw_ids, snapshot.quarantine_ids),
                             (QUARANTINE, snapshot.quarantine_ids, snapshot.raw_ids)):
        leaving = sorted((present_raw if kind == RAW else present_quarantined) - ids)
        reasons = {doc_id: MOVED if doc_id in other else GONE for doc_id in leaving}
        removed += move_to_removed(store, day, kind, reasons, run, when, mark)
    manifest = {
        "_id": day.isoformat(),
        "day": day.isoformat(),
        **{key: snapshot.counts[key] for key in (
            "fetched", "stored", "duplicate", "skipped_empty_stream", "rejected_invalid"
        )},
        "rejected_reasons": dict(sorted(snapshot.reasons.items())),
        "complete": True,
    }
    if before_manifest is not None:
        written += before_manifest(manifest)
    written += store.upsert(MANIFESTS, [manifest]).written
    return {**content_of(manifest), "written": written, "removed": removed}
