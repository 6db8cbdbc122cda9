"""Benchmark one big day end to end against a plain `_bulk_docs` insert of the same documents.
Prints figures; asserts nothing.

    .venv/bin/python bench/ingest.py [--blobs 1000000] [--couchdb-url URL] [--chunk-hours 1]

1. A fake KPIggybank (its own process) serves one day of `--blobs` blobs.
2. Pipeline: `extract_and_store` of that day into fresh databases: fetch window by window,
   validate, store, and aggregate as it stores (one pass). Wall time, blobs/s, and this process's
   peak RSS (VmHWM) are measured.
3. Plain insert, same run, same server: the same raw documents (read back from the pipeline's
   database into a file first, untimed) written by plain `_bulk_docs` of `--bulk-size` documents
   into another fresh database; only the writes are timed.
Default server: a fresh in-memory dev CouchDB (pouchdb-server); `--couchdb-url` for another.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blobs", type=int, default=1_000_000)
    parser.add_argument("--couchdb-url", default="")
    parser.add_argument("--chunk-hours", type=int, default=1)
    parser.add_argument("--bulk-size", type=int, default=5000)
    args = parser.parse_args()

    from kpi.couch import RAW, CouchStore
    from kpi.devserver import free_port, start_dev_couchdb, wait_for_http
    from kpi.pipeline import extract_and_store
    from kpi.settings import Settings

    couch = None
    url = args.couchdb_url
    if not url:
        port = free_port()
        couch = start_dev_couchdb(port)
        url = f"http://127.0.0.1:{port}"
    source_port = free_port()
    source = subprocess.Popen(
        [sys.executable, "-m", "kpi.cli", "fake-source", "--port", str(source_port), "--days",
         "1", "--per-day", str(args.blobs), "--last-day", DAY.isoformat()],
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
        # warm the fake source (it generates the day on the first request), untimed
        httpx.get(f"http://127.0.0.1:{source_port}/wsapi/interaction_data",
                  params={"start": 0, "end": 1}, timeout=600)
        httpx.get(f"{settings.source_url}/count", timeout=600)

        start = time.perf_counter()
        manifest = extract_and_store(DAY, settings)
        pipeline_s = time.perf_counter() - start
        pipeline_rss = peak_rss_mb()
        stored = manifest["stored"]
        print(f"pipeline: {manifest['fetched']:,} rows fetched, {stored:,} stored, "
              f"{manifest['rejected_invalid']:,} quarantined, {manifest['aggregated']:,} "
              f"aggregated in {pipeline_s:.1f} s = {manifest['fetched'] / pipeline_s:,.0f} "
              f"rows/s; peak RSS {pipeline_rss:,.0f} MB")

        # the same raw documents, to a file (untimed), then plain _bulk_docs (timed)
        store = CouchStore(settings)
        path = workdir / "docs.jsonl"
        with path.open("wb") as out:
            for doc in store.day_docs(RAW, DAY):
                out.write(orjson.dumps({k: v for k, v in doc.items() if k != "_rev"}) + b"\n")
        plain_db = f"{url}/{prefix}_plain"
        with httpx.Client(timeout=600) as client:
            client.put(plain_db).raise_for_status()
            start = time.perf_counter()
            written = 0
            with path.open("rb") as lines:
                batch = []
                for line in lines:
                    batch.append(orjson.loads(line))
                    if len(batch) == args.bulk_size:
                        client.post(f"{plain_db}/_bulk_docs", content=orjson.dumps(
                            {"docs": batch}), headers={"Content-Type": "application/json"}
                        ).raise_for_status()
                        written += len(batch)
                        batch = []
                if batch:
                    client.post(f"{plain_db}/_bulk_docs", content=orjson.dumps({"docs": batch}),
                                headers={"Content-Type": "application/json"}).raise_for_status()
                    written += len(batch)
            plain_s = time.perf_counter() - start
        print(f"plain _bulk_docs: {written:,} documents in {plain_s:.1f} s = "
              f"{written / plain_s:,.0f} docs/s")
        print(f"ratio pipeline / plain insert: {pipeline_s / plain_s:.2f}")
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
