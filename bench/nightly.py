"""Benchmark one nightly run with 30 and with 365 days of history already stored.
Prints figures; asserts nothing.

    .venv/bin/python bench/nightly.py [--per-day 2000] [--history 30 365]

For each history length, in fresh databases of an in-memory dev CouchDB: the aggregates of the
history days are stored (copies of one real day's aggregates document, dates shifted; untimed),
then one nightly run is timed the way Airflow runs it: extract + store + aggregate its day and
the `KPI_RESTATE_DAYS` (2) days before it from a fake KPIggybank (in-process), then publish the
site from every stored day. The ratio of the two runs shows how a night's cost grows with the
history. A first, untimed night (3 days of history) warms up imports and caches.
"""

from __future__ import annotations

import argparse
import time
import uuid
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from tempfile import mkdtemp

LAST_DAY = date(2026, 10, 30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-day", type=int, default=2000)
    parser.add_argument("--history", type=int, nargs="+", default=[30, 365])
    args = parser.parse_args()

    from fake_source import create_app
    from fake_source.server import running_in_thread
    from kpi.devserver import free_port, start_dev_couchdb
    from kpi.pipeline import build_site, extract_and_store, nightly_days
    from kpi.settings import Settings
    from kpi.store import AGGREGATES, CouchStore, content_of

    port = free_port()
    couch = start_dev_couchdb(port)
    app = create_app(seed=3, per_day=args.per_day, days=3, last_day=LAST_DAY)
    timings = {}
    try:
        with running_in_thread(app) as source:
            for history in [3, *args.history]:  # the first run warms up imports and caches
                settings = Settings(
                    source_url=f"{source}/wsapi/interaction_data",
                    couchdb_url=f"http://127.0.0.1:{port}", db_prefix=f"n{uuid.uuid4().hex[:8]}",
                    site_dir=Path(mkdtemp()) / "site", restate_days=2,
                    start_date=LAST_DAY - timedelta(days=history + 2),
                )
                store = CouchStore(settings)
                extract_and_store(LAST_DAY, settings)  # one real day, copied as the history
                template = content_of(store.get(AGGREGATES, LAST_DAY.isoformat()))
                history_docs = []
                for n in range(3, history + 3):
                    day = (LAST_DAY - timedelta(days=n)).isoformat()
                    history_docs.append({**template, "_id": day, "day": day})
                store.upsert(AGGREGATES, history_docs)

                logical = datetime.combine(LAST_DAY + timedelta(days=1), datetime.min.time(),
                                           tzinfo=UTC)
                run = replace(settings)
                start = time.perf_counter()
                days = nightly_days(logical, run)
                for day in days:
                    extract_and_store(day, run)
                stored = time.perf_counter() - start
                start = time.perf_counter()
                build_site(run)
                published = time.perf_counter() - start
                if history == 3 and 3 not in timings:
                    timings[3] = 0.0
                    continue
                timings[history] = stored + published
                print(f"history {history:>4} days: restate + aggregate {len(days)} days "
                      f"{stored:6.2f} s, publish {history + 3} days {published:6.2f} s, "
                      f"night {stored + published:6.2f} s")
    finally:
        couch.terminate()
        couch.wait(timeout=30)
    if len(args.history) >= 2:
        low, high = args.history[0], args.history[-1]
        print(f"ratio night({high}) / night({low}): {timings[high] / timings[low]:.2f}")


if __name__ == "__main__":
    main()
