"""`<prefix>_removed`: the rows restatements removed, kept with their day, time, run and reason,
and put back by `restore_removed`. Nothing a restatement removes is destroyed."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

from kpi.couch import (
    CONFLICT_ROUNDS,
    QUARANTINE,
    RAW,
    REMOVED,
    CouchStore,
    StoreError,
    content_of,
    day_prefix,
    prefix_range,
)
from kpi.rows import inline_attachments

GONE = "no longer returned by KPIggybank"
MOVED = "replaced by a delivery of the same id in the other database"  # not a removed row


def removed_id(day: date, kind: str, doc_id: str) -> str:
    """The `<prefix>_removed` id of document `doc_id` of database `kind`."""
    return f"{day_prefix(day)}{kind}:{doc_id.removeprefix(day_prefix(day))}"


def move_to_removed(store: CouchStore, day: date, kind: str, reasons: dict[str, str],
                    run: str, when: str, before_write: Callable[[], None] | None = None) -> int:
    """Move the documents of `kind` named in `reasons` (id → why) to `<prefix>_removed`, with
    their day, the time, the run and the reason; the copy is written before the original is
    deleted, so a run that dies half-way leaves a row in both, never in neither; and only the
    revision copied is deleted (a document changed meanwhile is copied again). Returns how
    many documents were deleted."""
    ids = sorted(reasons)
    deleted = 0
    size = max(1, store.settings.bulk_size // 10)  # documents read with their attachments
    for first in range(0, len(ids), size):
        batch = ids[first:first + size]
        for _ in range(CONFLICT_ROUNDS):
            docs = store.get_many(kind, batch, attachments=True)
            if not docs:
                break
            store.upsert(REMOVED, [
                {"_id": removed_id(day, kind, doc_id), "day": day.isoformat(), "kind": kind,
                 "doc": content_of(doc), "reason": reasons[doc_id], "run": run,
                 "removed_at": when,
                 **({"_attachments": inline_attachments(doc)} if inline_attachments(doc)
                    else {})}
                for doc_id, doc in docs.items()
            ], before_write=before_write)
            done, batch = store.delete_revisions(kind, {i: d["_rev"] for i, d in docs.items()})
            deleted += done
            if not batch:
                break
        else:
            msg = f"{day}: {len(batch)} rows of {kind} kept changing while being removed"
            raise StoreError(msg)
    return deleted


def restore_removed(store: CouchStore, day: date) -> tuple[int, int]:
    """Put the rows `<prefix>_removed` holds for UTC `day` back into their databases, and
    delete their copies there. A row whose id is stored again meanwhile (in either database)
    is left where it is, its removed copy kept.

    Only rows a restatement removed (reason `GONE`) come back: a copy of a row replaced by a
    delivery of its id in the other database is history, never restored (the row is stored).

    Returns:
        (rows restored, removed copies kept because a newer row is stored).
    """
    records = list(store.iter_range(REMOVED, *prefix_range(day_prefix(day)), attachments=True))
    stored = store.day_ids(RAW, day) | store.day_ids(QUARANTINE, day)
    back: dict[str, list[dict]] = {RAW: [], QUARANTINE: []}
    done, kept = [], 0
    for record in records:
        doc = record["doc"]
        if record["reason"] != GONE:
            continue
        if doc["_id"] in stored:
            kept += 1
            continue
        attachments = inline_attachments(record)
        back[record["kind"]].append({**doc, **({"_attachments": attachments}
                                               if attachments else {})})
        done.append(record["_id"])
    for kind, docs in back.items():
        store.upsert(kind, docs)
    store.delete(REMOVED, done)
    return len(done), kept
