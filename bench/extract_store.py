"""Benchmark one day through the pipeline: extract+store, aggregate, site build. Prints figures.

Runs against a fresh in-memory dev CouchDB and an in-process fake KPIggybank:

    .venv/bin/python bench/extract_store.py --per-day 20000
"""

from __future__ import annotations

import argparse
import resource
import time
import uuid
from datetime import date
from pathlib import Path
from tempfile import mkdtemp

from fake_source import create_app
from fake_source.server import running_in_thread
from kpi.devserver import free_port, start_dev_couchdb
from kpi.ingest import extract_and_store, reaggregate_day
from kpi.publish import build_site
from kpi.settings import Settings

DAY = date(2026, 10, 7)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-day", type=int, default=20_000, help="mean blobs per day")
    args = parser.parse_args()

    port = free_port()
    couch = start_dev_couchdb(port)
    app = create_app(seed=1, per_day=args.per_day, days=1, last_day=DAY)
    try:
        with running_in_thread(app) as source:
            settings = Settings(
                source_url=f"{source}/wsapi/interaction_data",
                couchdb_url=f"http://127.0.0.1:{port}",
                db_prefix=f"bench{uuid.uuid4().hex[:6]}",
                site_dir=Path(mkdtemp()) / "site",
            )
            start = time.perf_counter()
            app.state.store.range(None, None)  # generate outside the timings
            generate = time.perf_counter() - start

            start = time.perf_counter()
            manifest = extract_and_store(DAY, settings)
            stored = time.perf_counter() - start

            start = time.perf_counter()
            quality = reaggregate_day(DAY, settings)
            aggregated = time.perf_counter() - start

            start = time.perf_counter()
            build_site(settings)
            site = time.perf_counter() - start
    finally:
        couch.terminate()
    rows = manifest["fetched"]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"rows fetched           {rows:>10,}")
    print(f"generate (fake source) {generate:>10.2f} s")
    print(f"extract + store + aggregate (one pass) {stored:>8.2f} s  "
          f"{rows / stored:>10,.0f} rows/s")
    print(f"re-aggregate from CouchDB (repair path) {aggregated:>7.2f} s  "
          f"{quality['aggregated'] / aggregated:>10,.0f} blobs/s")
    print(f"build site             {site:>10.2f} s")
    print(f"peak RSS (this process){peak_mb:>10.0f} MB")


if __name__ == "__main__":
    main()
