"""Benchmark one nightly run with 30 and with 365 days of history already stored.
Prints figures; asserts nothing.

    .venv/bin/python bench/nightly.py [--per-day 2000] [--history 30 365] [--repeat 3]

For each history length, in fresh databases of an in-memory dev CouchDB: the aggregates of the
history days are stored (copies of one real day's aggregates document, dates shifted; untimed),
then one nightly run is timed the way Airflow runs it: extract + store + aggregate its day and
the `KPI_RESTATE_DAYS` (2) days before it from a fake KPIggybank (in-process), then publish the
site from every stored day. Before the night, the history is published once (untimed, as the
previous night did), so the night's publish is incremental (`kpi.buildcache`) as in production;
that first build's time is printed too. The ratio of the two shows how a night's cost grows
with the history. A first, untimed night (3 days of history) warms up imports and caches; the
nights of both lengths are interleaved `--repeat` times and their medians compared.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from tempfile import mkdtemp

LAST_DAY = date(2026, 10, 30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-day", type=int, default=2000)
    parser.add_argument("--history", type=int, nargs="+", default=[30, 365])
    parser.add_argument("--repeat", type=int, default=3, help="nights per history (median)")
    args = parser.parse_args()

    from fake_source import create_app
    from fake_source.server import running_in_thread
    from kpi.airflow import nightly_days
    from kpi.couch import AGGREGATES, CouchStore, content_of
    from kpi.devserver import free_port, start_dev_couchdb
    from kpi.ingest import extract_and_store
    from kpi.publish import build_site
    from kpi.settings import Settings

    port = free_port()
    couch = start_dev_couchdb(port)
    app = create_app(seed=3, per_day=args.per_day, days=3, last_day=LAST_DAY)

    def night(source: str, history: int) -> tuple[int, float, float, float]:
        """(days restated, their time, the night's publish time, the first build's time)."""
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
        start = time.perf_counter()
        build_site(settings)  # the previous night's publish (untimed in the night)
        scratch = time.perf_counter() - start

        logical = datetime.combine(LAST_DAY + timedelta(days=1), datetime.min.time(),
                                   tzinfo=UTC)
        start = time.perf_counter()
        days = nightly_days(logical, settings)
        for day in days:
            extract_and_store(day, settings)
        stored = time.perf_counter() - start
        start = time.perf_counter()
        build_site(settings)
        return len(days), stored, time.perf_counter() - start, scratch

    nights: dict[int, list] = {history: [] for history in args.history}
    try:
        with running_in_thread(app) as source:
            night(source, 3)  # warms up imports and caches
            for _ in range(args.repeat):  # interleaved, so a slow moment hits both lengths
                for history in args.history:
                    nights[history].append(night(source, history))
    finally:
        couch.terminate()
        couch.wait(timeout=30)
    medians = {}
    for history, runs in nights.items():
        count = runs[0][0]
        stored, published, scratch = (statistics.median(r[i] for r in runs) for i in (1, 2, 3))
        medians[history] = stored + published
        print(f"history {history:>4} days: restate + aggregate {count} days {stored:6.2f} s, "
              f"publish {history + 3} days {published:6.2f} s (from scratch: {scratch:5.2f} s), "
              f"night {stored + published:6.2f} s  (medians of {len(runs)})")
    if len(args.history) >= 2:
        low, high = args.history[0], args.history[-1]
        print(f"ratio night({high}) / night({low}): {medians[high] / medians[low]:.2f}")


if __name__ == "__main__":
    main()
