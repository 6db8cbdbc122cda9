"""Benchmark ingest end to end against a plain `_bulk_docs` insert of the same documents, and
a re-run over an unchanged source against the first run. Prints figures; asserts nothing.

    .venv/bin/python bench/ingest.py [--mode day|backfill] [--blobs 1000000] [--days 21]
                                     [--per-day 4500] [--couchdb-url URL] [--chunk-hours 6]

`--mode day` (default): a fake KPIggybank (its own process; it encodes each row's JSON once, so
serving a page costs it next to nothing) serves one day of `--blobs` blobs.
1. Pipeline: `extract_and_store` of that day into fresh databases: fetch window by window,
   validate, store, and aggregate as it stores (one pass). Wall time, rows/s, and this process's
   peak RSS (VmHWM) are measured.
2. Re-run: `extract_and_store` of the same day again, the source unchanged: it must write
   nothing; timed against the first run.
3. Plain insert, same run, same server: the same raw documents (read back from the pipeline's
   database into a file first, untimed) written by plain `_bulk_docs` of `--plain-batch` (1,000)
   documents into another fresh database; only the writes are timed. Twice: in id order (as
   `_all_docs` returns them; Apache CouchDB appends to its B-tree) and in the source's order
   (timestamp, then id: what the pipeline receives; random ids land all over the B-tree, which
   costs Apache CouchDB about 3x the time).

`--mode backfill`: the source serves `--days` days of about `--per-day` blobs; the pipeline is
`kpi backfill` of those days including its site build, the re-run a second `kpi backfill`, and
the plain insert writes every raw document of those days.

Default server: a fresh in-memory dev CouchDB (pouchdb-server); `--couchdb-url` for another.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date, timedelta
from pathlib import Path

import httpx
import orjson

DAY = date(2026, 10, 7)


def peak_rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def plain_insert(url: str, database: str, path: Path, batch_size: int) -> tuple[int, float]:
    """Write the documents of a JSON-lines file by plain `_bulk_docs` into a new database;
    (documents, seconds of writing)."""
    written, seconds = 0, 0.0
    with httpx.Client(timeout=600) as client, path.open("rb") as lines:
        client.put(f"{url}/{database}").raise_for_status()
        batch: list[dict] = []
        for line in [*lines, None]:
            if line is not None:
                batch.append(orjson.loads(line))
            if batch and (line is None or len(batch) == batch_size):
                body = orjson.dumps({"docs": batch})
                start = time.perf_counter()
                client.post(f"{url}/{database}/_bulk_docs", content=body,
                            headers={"Content-Type": "application/json"}).raise_for_status()
                seconds += time.perf_counter() - start
                written += len(batch)
                batch = []
    return written, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("day", "backfill"), default="day")
    parser.add_argument("--blobs", type=int, default=1_000_000, help="blobs of the day (day)")
    parser.add_argument("--days", type=int, default=21, help="days (backfill)")
    parser.add_argument("--per-day", type=int, default=4500, help="blobs a day (backfill)")
    parser.add_argument("--couchdb-url", default="")
    parser.add_argument("--chunk-hours", type=int, default=6, help="KPI_FETCH_CHUNK_HOURS")
    parser.add_argument("--bulk-size", type=int, default=1000, help="the pipeline's")
    parser.add_argument("--parallel", type=int, default=2,
                        help="days at once (backfill; `kpi backfill`'s default)")
    parser.add_argument("--plain-batch", type=int, default=1000, help="the plain insert's")
    args = parser.parse_args()

    from kpi.backfill import backfill
    from kpi.couch import RAW, CouchStore
    from kpi.days import day_window_ms
    from kpi.devserver import free_port, start_dev_couchdb, wait_for_http
    from kpi.ingest import extract_and_store
    from kpi.settings import Settings

    couch = None
    url = args.couchdb_url.rstrip("/")
    if not url:
        port = free_port()
        couch = start_dev_couchdb(port)
        url = f"http://127.0.0.1:{port}"
    days = [DAY] if args.mode == "day" else [DAY - timedelta(days=n)
                                              for n in range(args.days - 1, -1, -1)]
    per_day = args.blobs if args.mode == "day" else args.per_day
    source_port = free_port()
    source = subprocess.Popen(
        [sys.executable, "-m", "kpi.cli", "fake-source", "--port", str(source_port), "--days",
         str(len(days)), "--per-day", str(per_day), "--last-day", DAY.isoformat()],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    workdir = Path(tempfile.mkdtemp(prefix="kpi-ingest-"))
    try:
        wait_for_http(f"http://127.0.0.1:{source_port}/wsapi/ping", source)
        settings = Settings(
            source_url=f"http://127.0.0.1:{source_port}/wsapi/interaction_data",
            couchdb_url=url, db_prefix=prefix, site_dir=workdir / "site",
            fetch_chunk_hours=args.chunk_hours, bulk_size=args.bulk_size, http_timeout=600.0,
        )
        # warm the fake source (it generates a day on its first request), untimed
        for day in days:
            start_ms = day_window_ms(day)[0]
            httpx.get(settings.source_url, params={"start": start_ms, "end": start_ms + 1},
                      timeout=600)

        def run() -> tuple[float, dict]:
            start = time.perf_counter()
            if args.mode == "day":
                manifest = extract_and_store(DAY, settings)
                counts = {key: manifest[key] for key in (
                    "fetched", "stored", "rejected_invalid", "aggregated", "written")}
            else:
                results = backfill(days[0], days[-1], settings, progress=False,
                                   parallel=args.parallel)
                counts = {key: sum(result[key] for result in results)
                          for key in ("fetched", "stored", "rejected_invalid", "aggregated")}
            return time.perf_counter() - start, counts

        what = ("pipeline (fetch, validate, store, aggregate)" if args.mode == "day" else
                f"kpi backfill of {len(days)} days, site build included")
        pipeline_s, counts = run()
        pipeline_rss = peak_rss_mb()
        print(f"{what}: {counts['fetched']:,} rows fetched, {counts['stored']:,} stored, "
              f"{counts['rejected_invalid']:,} quarantined, {counts['aggregated']:,} "
              f"aggregated in {pipeline_s:.1f} s = {counts['fetched'] / pipeline_s:,.0f} "
              f"rows/s; peak RSS {pipeline_rss:,.0f} MB")
        store = CouchStore(settings)
        revisions = {day: store.revisions(RAW, day.isoformat() + ":", day.isoformat() + ";")
                     for day in days}
        rerun_s, again = run()
        unchanged = all(store.revisions(RAW, day.isoformat() + ":", day.isoformat() + ";")
                        == revisions[day] for day in days)
        print(f"re-run, source unchanged: {rerun_s:.1f} s"
              + (f", {again['written']:,} documents written" if "written" in again else "")
              + f"; raw revisions {'unchanged' if unchanged else 'CHANGED'}")

        # the same raw documents, to files (untimed): in id order (as `_all_docs` reads them)
        # and in the source's order (timestamp, id: the order the pipeline receives them);
        # then plain _bulk_docs of each (timed)
        docs = [{k: v for k, v in doc.items() if k != "_rev"}
                for day in days for doc in store.day_docs(RAW, day)]
        orders = {"id order": docs,
                  "source order": sorted(docs, key=lambda doc: (doc["blob"]["timestamp"],
                                                                  doc["kpiggybank_id"]))}
        for order, ordered in orders.items():
            path = workdir / f"{order.split()[0]}.jsonl"
            path.write_bytes(b"".join(orjson.dumps(doc) + b"\n" for doc in ordered))
            written, plain_s = plain_insert(url, f"{prefix}_plain_{order.split()[0]}", path,
                                            args.plain_batch)
            print(f"plain _bulk_docs, {args.plain_batch:,} per request, {order}: {written:,} "
                  f"documents in {plain_s:.1f} s = {written / plain_s:,.0f} docs/s; ratio "
                  f"pipeline / plain insert ({order}): {pipeline_s / plain_s:.2f}")
        del docs, orders
        print(f"ratio re-run / first run: {rerun_s / pipeline_s:.2f}")
        with httpx.Client(timeout=600) as client:
            for name in client.get(f"{url}/_all_dbs").json():
                if name.startswith(prefix):
                    client.delete(f"{url}/{name}")
    finally:
        source.terminate()
        source.wait(timeout=30)
        if couch is not None:
            couch.terminate()
            couch.wait(timeout=30)


if __name__ == "__main__":
    main()
