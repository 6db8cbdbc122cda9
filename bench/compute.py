"""Benchmark the KPI computation: 1,000,000 fake blobs staged and aggregated, reports over 365
days of aggregates, and the original approach (CouchDB map/reduce views) for comparison.

    .venv/bin/python bench/compute.py [--blobs 1000000] [--view-blobs 20000]

Prints its figures; asserts nothing about time. Steps:
1. A child process generates one fake day of `--blobs` blobs (2026-10-07) and writes them as
   JSON lines of 10,000 blobs, so this process never holds the generator's dicts.
2. This process streams the file: decode (orjson) → stage → aggregate, as the pipeline streams
   CouchDB pages; then one worker process per core does the same over every n-th line and the
   parts are combined (aggregates are additive). Peak RSS is each process's VmHWM.
   It also stages the whole day from decoded blobs held in memory (the headline figure).
3. 365 copies of that day's aggregates (dates shifted) → every report, timed one by one; then the
   same 365 aggregate documents written to the dev CouchDB and loaded back.
4. `--view-blobs` of the same blobs written to the dev CouchDB with two map/reduce views
   (`assertions` by date and OS, `sites` mean by date), as the original dashboard did; the first
   query builds the views. The rate is extrapolated to the full day for the ratio.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import httpx
import orjson
import pandas as pd

DAY = date(2026, 10, 7)
CHUNK = 10_000

ASSERTIONS_MAP = """function (doc) {
  var blob = doc.blob;
  if (!blob || !blob.event_stream || !blob.event_stream.length) return;
  var day = new Date(Math.floor(blob.timestamp / 1000) * 1000).toISOString().slice(0, 10);
  var aliases = {"Windows NT 6.2": "Windows 8", "Windows NT 6.1": "Windows 7",
                 "Windows NT 6.0": "Windows Vista", "Windows NT 5.1": "Windows XP",
                 "iPod": "iOS", "iPhone": "iOS", "iPad": "iOS"};
  var known = ["Windows 8", "Windows 7", "Windows Vista", "Windows XP", "Macintosh", "Linux",
               "Android", "iOS", "FirefoxOS"];
  var os = blob.user_agent && blob.user_agent.os;
  os = aliases[os] || os;
  emit([day, known.indexOf(os) >= 0 ? os : "Other"], 1);
}"""
SITES_MAP = """function (doc) {
  var blob = doc.blob;
  if (!blob || !blob.event_stream || !blob.event_stream.length) return;
  var day = new Date(Math.floor(blob.timestamp / 1000) * 1000).toISOString().slice(0, 10);
  var names = ["number_sites_logged_in", "sites_signed_in", "number_sites_signed_in"];
  var value = 0;
  for (var i = 0; i < names.length; i++) {
    var v = blob[names[i]];
    if (typeof v === "string" && v !== "" && !isNaN(Number(v))) v = Number(v);
    if (typeof v === "number" && isFinite(v)) { value = v; break; }
  }
  emit(day, value);
}"""


def generate(path: str, blobs: int) -> None:
    """Child process: write the first `blobs` blobs of DAY as JSON lines of CHUNK blobs."""
    from fake_source.generator import blobs_for_day

    day_blobs = blobs_for_day(1, DAY, int(blobs / 1.02) + 1)
    with open(path, "wb") as out:
        for start in range(0, blobs, CHUNK):
            chunk = [blob for _, blob in day_blobs[start:min(start + CHUNK, blobs)]]
            out.write(orjson.dumps(chunk) + b"\n")


def stream(path: Path) -> Iterator[dict]:
    with open(path, "rb") as lines:
        for line in lines:
            yield from orjson.loads(line)


def stage_lines(path: str, worker: int, workers: int) -> tuple:
    """Worker process: decode, stage and aggregate every `workers`-th JSON line."""
    from kpi.aggregate import daily_aggregates, sites_histogram
    from kpi.config import production_config
    from kpi.stage import stage

    def own_blobs() -> Iterator[dict]:
        with open(path, "rb") as lines:
            for index, line in enumerate(lines):
                if index % workers == worker:
                    yield from orjson.loads(line)

    config = production_config()
    staged, counts = stage(own_blobs(), config)
    return daily_aggregates(staged, config), sites_histogram(staged), len(staged), rss_mb()


def warm_up() -> None:
    import kpi.aggregate  # noqa: F401  (imports pandas once per worker, outside the timing)
    import kpi.stage  # noqa: F401


def rss_mb() -> float:
    """This process's peak RSS (VmHWM: unlike ru_maxrss, not inherited from a parent)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def shifted(frame: pd.DataFrame, days: int) -> list[pd.DataFrame]:
    return [frame.assign(date=(DAY + timedelta(days=n)).isoformat()) for n in range(days)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blobs", type=int, default=1_000_000)
    parser.add_argument("--view-blobs", type=int, default=20_000)
    args = parser.parse_args()

    from kpi.aggregate import combine, daily_aggregates, sites_histogram
    from kpi.config import production_config
    from kpi.reports import QUALITY_MEASURES, REPORTS, Aggregates
    from kpi.stage import gc_paused, stage

    config = production_config()
    workdir = Path(tempfile.mkdtemp(prefix="kpi-bench-"))
    path = workdir / "blobs.jsonl"
    started = time.perf_counter()
    child = multiprocessing.get_context("spawn").Process(
        target=generate, args=(str(path), args.blobs))
    child.start()
    child.join()
    print(f"generated {args.blobs:,} blobs in {time.perf_counter() - started:.1f} s "
          f"({path.stat().st_size / 1e6:.0f} MB of JSON)")

    # (b) streamed: decode + stage + aggregate, as the pipeline reads CouchDB pages.
    start = time.perf_counter()
    staged, counts = stage(stream(path), config)
    groups = daily_aggregates(staged, config)
    histogram = sites_histogram(staged)
    streamed_s = time.perf_counter() - start
    streamed_rss = rss_mb()
    del staged

    # (c) streamed, one worker process per core; aggregates are additive, so parts combine.
    workers = multiprocessing.cpu_count()
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        pool.starmap(warm_up, [()] * workers)
        start = time.perf_counter()
        parts = pool.starmap(stage_lines, [(str(path), k, workers) for k in range(workers)])
        combine([(g, h) for g, h, _, _ in parts])
        parallel_s = time.perf_counter() - start
    worker_peak = max(peak for *_, peak in parts)

    # (a) from decoded blobs: stage + aggregate only.
    with gc_paused():
        blobs = list(stream(path))
    decoded = len(blobs)
    start = time.perf_counter()
    staged, counts = stage(blobs, config)
    staged_s = time.perf_counter() - start
    start = time.perf_counter()
    groups = daily_aggregates(staged, config)
    histogram = sites_histogram(staged)
    aggregate_s = time.perf_counter() - start
    total = staged_s + aggregate_s
    print(f"blobs                     {decoded:>12,}  kept {len(staged):,}, skipped "
          f"{counts.skipped_empty_stream:,}, rejected {counts.rejected_invalid:,}")
    print(f"stage                     {staged_s:>12.2f} s")
    print(f"aggregate + histogram     {aggregate_s:>12.2f} s  ({len(groups)} groups)")
    print(f"stage + aggregate         {total:>12.2f} s  {decoded / total:>12,.0f} blobs/s")
    print(f"peak RSS                  {rss_mb():>12.0f} MB  (holding all {decoded:,} decoded "
          f"blobs)")
    print(f"streamed from JSON lines  {streamed_s:>12.2f} s  {decoded / streamed_s:>12,.0f} "
          f"blobs/s incl. orjson decoding; peak RSS then {streamed_rss:.0f} MB")
    print(f"streamed, {workers} processes    {parallel_s:>10.2f} s  "
          f"{decoded / parallel_s:>12,.0f} blobs/s incl. orjson decoding; peak RSS per "
          f"worker {worker_peak:.0f} MB")
    del blobs

    # 365 days of aggregates → every report.
    quality = pd.DataFrame([{"date": DAY.isoformat(), **{m: decoded for m in QUALITY_MEASURES}}])
    year = Aggregates(
        groups=pd.concat(shifted(groups, 365), ignore_index=True),
        sites_histogram=pd.concat(shifted(histogram, 365), ignore_index=True),
        quality=pd.concat(shifted(quality, 365), ignore_index=True),
    )
    timings = {}
    for name, build in REPORTS.items():
        start = time.perf_counter()
        rows = len(build(year, config))
        timings[name] = (time.perf_counter() - start, rows)
    slowest = max(timings, key=lambda k: timings[k][0])
    print(f"reports over 365 days     all 13 in {sum(t for t, _ in timings.values()):.2f} s; "
          f"slowest {slowest} {timings[slowest][0]:.2f} s ({timings[slowest][1]:,} rows)")

    couchdb_figures(args.view_blobs, path, groups, histogram, quality, config, decoded, total)


def couchdb_figures(view_blobs, path, groups, histogram, quality, config, n_blobs, pandas_s):
    from kpi.aggregate_docs import aggregates_document
    from kpi.couch import AGGREGATES, RAW, CouchStore
    from kpi.devserver import free_port, start_dev_couchdb
    from kpi.publish import load_aggregates
    from kpi.reports import build_reports
    from kpi.settings import Settings

    port = free_port()
    server = start_dev_couchdb(port)
    try:
        settings = Settings(couchdb_url=f"http://127.0.0.1:{port}",
                            db_prefix=f"bench{uuid.uuid4().hex[:6]}")
        store = CouchStore(settings)
        store.ensure_databases()

        # 365 aggregate documents written, then loaded and reported.
        quality_counts = quality.iloc[0].drop("date").to_dict()
        docs = [
            aggregates_document(DAY + timedelta(days=n), groups, histogram, config,
                                quality_counts)
            for n in range(365)
        ]
        store.upsert(AGGREGATES, docs)
        start = time.perf_counter()
        year = load_aggregates(settings, config=config)
        load_s = time.perf_counter() - start
        start = time.perf_counter()
        build_reports(year, config)
        reports_s = time.perf_counter() - start
        print(f"365 aggregate docs        load {load_s:.2f} s + all 13 reports {reports_s:.2f} s")

        # The original way: map/reduce views over raw documents.
        sample = []
        for blob in stream(path):
            sample.append({"_id": f"{DAY.isoformat()}:{len(sample):09d}", "blob": blob})
            if len(sample) >= view_blobs:
                break
        start = time.perf_counter()
        for first in range(0, len(sample), 5000):
            store._bulk_write(RAW, sample[first:first + 5000])
        write_s = time.perf_counter() - start
        base = f"{settings.couchdb_url}/{store.name(RAW)}"
        design = {"views": {"assertions": {"map": ASSERTIONS_MAP, "reduce": "_count"},
                            "sites": {"map": SITES_MAP, "reduce": "_stats"}}}
        httpx.put(f"{base}/_design/original", json=design, timeout=60).raise_for_status()
        start = time.perf_counter()
        by_os = httpx.get(f"{base}/_design/original/_view/assertions",
                          params={"group": "true"}, timeout=3600).json()
        sites = httpx.get(f"{base}/_design/original/_view/sites",
                          params={"group": "true"}, timeout=3600).json()
        view_s = time.perf_counter() - start
        rate = len(sample) / view_s
        print(f"CouchDB _bulk_docs        {len(sample):>12,} docs in {write_s:.1f} s "
              f"({len(sample) / write_s:,.0f} docs/s)")
        print(f"CouchDB views (2)         {len(sample):>12,} docs in {view_s:.1f} s "
              f"({rate:,.0f} docs/s); {n_blobs:,} blobs would take ≈ {n_blobs / rate:,.0f} s")
        print(f"ratio views / pandas      {n_blobs / rate / pandas_s:>12,.0f}x")
        total = sum(row["value"] for row in by_os["rows"])
        print(f"  check: view counted {total:,} attempts and {len(sites['rows'])} day(s) of "
              f"sites for the sample")
    finally:
        server.terminate()


if __name__ == "__main__":
    main()
