"""Aggregates documents: a day's daily aggregates and sites histogram as one CouchDB document.

A day's aggregates are one document `YYYY-MM-DD` in `<prefix>_aggregates`, replaced as a whole.
Only a sites histogram too big for one document (many distinct fractional values) is kept in
chunk documents `YYYY-MM-DD:h:<digest>:<n>` that the day's document names (content-addressed:
rewriting the same histogram writes nothing). The document is a function of the day's final
aggregates alone (rows in a fixed order, `sites_sum` exact), so every way of computing a day
(one pass, windows combined, re-aggregation from CouchDB) writes the same bytes.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Iterator
from datetime import date

import orjson
import pandas as pd

from kpi import __version__
from kpi.aggregate import count_columns
from kpi.config import Config
from kpi.couch import AGGREGATES, CouchStore, StoreError
from kpi.formats import plain_number

# Apache CouchDB refuses documents over `max_document_size` (8 MB by default): a sites histogram
# larger than INLINE_BYTES (a day of many distinct fractional values) moves to chunk documents
# of at most CHUNK_BYTES each
INLINE_BYTES = 2_000_000
CHUNK_BYTES = 3_000_000
CHUNK_GRACE_SECONDS = 3600  # an unnamed chunk set this recent may be about to be named or read


def encode_frames(groups: pd.DataFrame, histogram: pd.DataFrame, columns: list[str]) -> dict:
    """A day's (daily_aggregates, sites_histogram) as JSON lists, without the date column:
    `groups` rows are [segmentation, segment, *columns], `sites_histogram` rows
    [segmentation, segment, sites, blobs]."""
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


def put_chunks(store: CouchStore, kind: str, chunks: list[dict]) -> int:
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
        written += put_chunks(store, AGGREGATES, chunks)
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


