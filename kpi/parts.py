"""Window parts: what one fetch window of a day stored, kept until the day is closed.

When a day is extracted as several windows at once (the nightly DAG's mapped tasks), each window
leaves a *part* in `<prefix>_parts`: its ids, counts and partial aggregates. Combining the parts
closes the day (`kpi.ingest.close_day`) and deletes them, but for a record that the run closed
the day (`mark_closed`), so a retry of the close after the parts are gone fetches nothing again.
A window of a day being restated stages its new and changed rows beside its part
(`kpi.snapshot.Staging`), under its run and attempt.
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import date

from kpi.aggregate_docs import join_histogram, put_chunks, split_histogram
from kpi.couch import PARTS, CouchStore, StoreError, day_prefix, prefix_range
from kpi.snapshot import Snapshot, run_key, staging_prefix

PART_BYTES = 1_000_000  # of ids per part document, far below CouchDB's 8 MB default


def _part_id(day: date, run: str, window: tuple[int, int], n: int) -> str:
    return f"{day.isoformat()}:{run_key(run)}:{window[0]}-{window[1]}:{n:04d}"


def write_part(store: CouchStore, day: date, window: tuple[int, int], run: str,
               snapshot: Snapshot, aggregates: dict, attempt: str | None = None) -> None:
    """Record what one window of `day` stored (its ids, counts and partial `aggregates`),
    for `read_parts`: the ids in documents of at most `PART_BYTES` of ids each (ids may be
    long), so every document stays far below CouchDB's size limit, then a head document that
    names them by an attempt token (so a head never pairs with chunks of another attempt).

    Parts of the day left by other runs are deleted first: this window's rows are newer than
    theirs, so closing the day from them would undo it (they then fall back to one pass).
    """
    prefix = day_prefix(day)
    mine = (f"{prefix}{run_key(run)}:", staging_prefix(day, run))
    others = sorted(doc_id for doc_id in store.day_ids(PARTS, day)
                    if not doc_id.startswith(mine))
    if others:
        store.delete(PARTS, others)
    attempt = attempt or uuid.uuid4().hex
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
    put_chunks(store, PARTS, [{**chunk, "day": day.isoformat(), "run": run}
                               for chunk in histogram_chunks])
    store.upsert(PARTS, [{
        "_id": head_id, "day": day.isoformat(), "run": run,
        "attempt": attempt, "window": list(window), "chunks": len(chunks),
        "counts": dict(snapshot.counts), "reasons": dict(snapshot.reasons),
        "written": snapshot.written, "staging": snapshot.staging,
        "staged_rows": snapshot.staged_rows, "aggregates": aggregates,
    }])


def read_parts(store: CouchStore, day: date, windows: list[tuple[int, int]],
               run: str) -> list[tuple[Snapshot, dict]] | None:
    """The (snapshot, aggregates) each window of `day` recorded in `run`, in window order;
    None when a window has no complete part from this run."""
    prefix = day_prefix(day)
    mine = f"{prefix}{run_key(run)}:"
    docs = {doc["_id"]: doc for doc in store.iter_range(PARTS, *prefix_range(mine))
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
            written=head["written"], staging=head.get("staging", ""),
            staged_rows=head.get("staged_rows", 0),
        )
        try:
            aggregates = join_histogram(head["aggregates"], docs)
        except StoreError:
            return None
        parts.append((snapshot, aggregates))
    return parts


def _closed_id(day: date, run: str) -> str:
    return f"{day.isoformat()}:{run_key(run)}:closed"


def mark_closed(store: CouchStore, day: date, run: str) -> None:
    """Record that `run` closed `day` (kept when its parts are dropped: `closed_by`)."""
    store.upsert(PARTS, [{"_id": _closed_id(day, run), "day": day.isoformat(), "run": run}])


def closed_by(store: CouchStore, day: date, run: str) -> bool:
    """Whether `run` closed `day` (and no later store of the day dropped the record since)."""
    return bool(store.present(PARTS, [_closed_id(day, run)]))


def delete_parts(store: CouchStore, day: date, keep_closed: str | None = None) -> int:
    """Delete every part of `day` (once the day is closed), but the record that run
    `keep_closed` closed it; returns how many."""
    keep = _closed_id(day, keep_closed) if keep_closed else None
    ids = sorted(doc_id for doc_id in store.day_ids(PARTS, day) if doc_id != keep)
    return store.delete(PARTS, ids) if ids else 0
