"""A day's aggregates stay within Apache CouchDB's default document size (8 MB) whatever the input:
here a day of 200,000 distinct fractional sites values, whose histogram alone is tens of MB."""

from __future__ import annotations

import dataclasses
import time
from datetime import date

import httpx
import numpy as np
import pytest

from kpi.aggregate import DayAggregator
from kpi.aggregate_docs import (
    CHUNK_GRACE_SECONDS,
    aggregates_document,
    encode_frames,
    put_aggregates,
)
from kpi.config import load_config
from kpi.couch import AGGREGATES, PARTS, CouchStore
from kpi.parts import read_parts, write_part
from kpi.publish import load_aggregates
from kpi.reports import QUALITY_MEASURES, build_reports
from kpi.snapshot import Snapshot

MAX_DOCUMENT_SIZE = 8_000_000  # Apache CouchDB 3's default max_document_size, in bytes
DAY = date(2026, 10, 2)
BLOBS = 200_000


def _blobs(n: int, seed: int = 3) -> list[dict]:
    """`n` aggregated blobs of DAY, each with its own fractional sites value."""
    rng = np.random.default_rng(seed)
    sites = rng.permutation(n) + rng.uniform(0.001, 0.999, n)  # distinct, fractional
    start = 1790899200000 + 3_600_000  # 2026-10-02 01:00 UTC
    return [{"timestamp": start + i, "event_stream": [["screen.rp_info", 0]],
             "number_sites_logged_in": float(value), "lang": ["en-US", "de", "fr"][i % 3],
             "screen_width": [800, 1280, 1920][i % 3], "number_emails": i % 4}
            for i, value in enumerate(sites)]


def _stored_sizes(couchdb_url: str, database: str) -> dict[str, int]:
    """Size in bytes of every document of `database`, as CouchDB serves it."""
    ids = httpx.get(f"{couchdb_url}/{database}/_all_docs", timeout=60).json()["rows"]
    return {row["id"]: len(httpx.get(f"{couchdb_url}/{database}/{row['id']}", timeout=60).content)
            for row in ids}


@pytest.fixture
def settings(settings):
    """The test settings, with time for requests of megabytes."""
    return dataclasses.replace(settings, http_timeout=60.0)


@pytest.fixture(scope="module")
def big_day():
    blobs = _blobs(BLOBS)
    config = load_config(None)
    aggregator = DayAggregator(config)
    aggregator.add(blobs)
    groups, histogram = aggregator.result()
    values = np.array([b["number_sites_logged_in"] for b in blobs])
    return config, groups, histogram, values


def test_a_day_of_200000_distinct_fractional_sites_values_fits_couchdb_documents(
        settings, couchdb_url, big_day):
    config, groups, histogram, values = big_day
    assert len(histogram) >= 7 * BLOBS  # every segmentation holds every distinct value
    store = CouchStore(settings)
    store.ensure_databases()
    quality = dict.fromkeys(QUALITY_MEASURES, 0) | {"fetched": BLOBS, "stored": BLOBS,
                                                    "aggregated": BLOBS}
    doc = aggregates_document(DAY, groups, histogram, config, quality)

    written = put_aggregates(store, doc)
    sizes = _stored_sizes(couchdb_url, store.name(AGGREGATES))
    assert max(sizes.values()) <= MAX_DOCUMENT_SIZE, sizes
    assert written == len(sizes) - 1 > 1  # every chunk and the day; the marker not counted

    loaded = load_aggregates(settings, DAY, DAY, config)
    assert loaded.sites_histogram.equals(histogram.astype({"sites": "float64"}))
    median = build_reports(loaded, config)["sites_median"]
    total = median[(median.segmentation == "Total") & (median.measure == "value")]
    assert total.value.tolist() == [pytest.approx(float(np.median(values)), abs=0)]

    assert put_aggregates(store, doc) == 0  # the same histogram again writes nothing
    smaller = aggregates_document(DAY, groups, histogram.head(10), config, quality)
    put_aggregates(store, smaller)  # a small one again: the chunks stay a while (readers)...
    assert len(store.day_ids(AGGREGATES, DAY)) == len(sizes) - 1  # all but the day document
    put_aggregates(store, smaller, now=time.time() + CHUNK_GRACE_SECONDS + 1)  # ...then go
    assert list(_stored_sizes(couchdb_url, store.name(AGGREGATES))) == [DAY.isoformat()]
    assert load_aggregates(settings, DAY, DAY, config).sites_histogram.equals(
        histogram.head(10).astype({"sites": "float64"}))


def test_a_windows_part_of_200000_distinct_values_fits_couchdb_documents(
        settings, couchdb_url, big_day):
    config, groups, histogram, _ = big_day
    store = CouchStore(settings)
    store.ensure_databases()
    encoded = {**encode_frames(groups, histogram, doc_columns(config)),
               "skipped_empty_stream": 0, "aggregated": BLOBS}
    window = (1790899200000, 1790985600000)
    snapshot = Snapshot(raw_ids={f"{DAY}:id{i}" for i in range(10)})
    write_part(store, DAY, window, "run-1", snapshot, encoded)

    sizes = _stored_sizes(couchdb_url, store.name(PARTS))
    assert len(sizes) > 2 and max(sizes.values()) <= MAX_DOCUMENT_SIZE, sizes
    [(read_snapshot, aggregates)] = read_parts(store, DAY, [window], "run-1")
    assert read_snapshot.raw_ids == snapshot.raw_ids
    assert aggregates == encoded


def doc_columns(config):
    from kpi.aggregate import count_columns

    return count_columns(config)


def test_two_writers_of_a_day_never_leave_it_naming_deleted_chunks(settings, monkeypatch):
    """Writer B has written its chunks but not yet the day's document when writer A finishes
    and collects garbage: B's fresh chunks stay, so B's document names chunks that exist."""
    from kpi import aggregate_docs as store_module
    from kpi.aggregate_docs import split_histogram, with_histograms

    monkeypatch.setattr(store_module, "INLINE_BYTES", 200)  # small histograms split too
    monkeypatch.setattr(store_module, "CHUNK_BYTES", 400)
    config = load_config(None)
    aggregator = DayAggregator(config)
    aggregator.add(_blobs(40, seed=1))
    groups, histogram = aggregator.result()
    quality = dict.fromkeys(QUALITY_MEASURES, 0)
    doc_a = aggregates_document(DAY, groups, histogram, config, quality)
    doc_b = aggregates_document(DAY, groups, histogram.head(len(histogram) - 3), config, quality)
    store = CouchStore(settings)
    store.ensure_databases()

    main_b, chunks_b = split_histogram(DAY.isoformat(), doc_b)  # B, half-way: chunks only
    marker_b = chunks_b[0]["_id"].rsplit(":", 1)[0]
    store.upsert(AGGREGATES, [{"_id": marker_b, "written_at": time.time()}])
    store.upsert(AGGREGATES, chunks_b)
    put_aggregates(store, doc_a)  # A: whole, with its garbage collection
    store.upsert(AGGREGATES, [main_b])  # B names its chunks
    [read] = with_histograms(store, [store.get(AGGREGATES, DAY.isoformat())])
    assert read["sites_histogram"] == doc_b["sites_histogram"] and len(chunks_b) > 1
