"""Check the pipeline against a real CouchDB cluster behind a round-robin balancer, with a node
killed mid-run. Prints what it finds; exits 1 when a check fails.

    .venv/bin/python bench/cluster.py --nodes URL1,URL2,URL3 \\
        [--stop-node "CMD"] [--start-node "CMD"] [--days 21] [--per-day 4537]

`--nodes` are the cluster's nodes (each coordinates any request), e.g. the three of Apache
CouchDB's `couchdb.sh cluster-start` (http://admin:admin@127.0.0.1:5991 … 5993). `--stop-node`
and `--start-node` are shell commands that take one node down and back (e.g. `couchdb.sh
node-stop 5992`); without them no node is killed.

1. A round-robin TCP balancer (in this process) spreads connections over the nodes, skipping
   one that refuses; the pipeline sees one URL, as behind a load balancer.
2. `kpi backfill --parallel 4` of `--days` days of a fake KPIggybank; a third of the way in,
   `--stop-node` runs; the node comes back after the backfill.
3. Every published report is compared with the independent oracle (`tests/integration/oracle.py`)
   computed from the same blobs: every number exact.
4. The DAG's way, concurrently: the days' fetch windows (`plan_windows`) extracted by 4 threads
   at once through the balancer, then closed (`close_days`), as the mapped `extract_and_store`
   tasks and `aggregate` do; then `kpi backfill` again. Both re-runs leave every document and
   every report byte-identical.
5. No document of any database is left in conflict (`_all_docs?conflicts=true`).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import dataclasses
import io
import itertools
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LAST_DAY = date(2026, 10, 31)
SEED = 7


class Balancer:
    """Round-robin TCP forwarding to `targets` ((host, port) pairs), one connection at a time
    to the next target that accepts it."""

    def __init__(self, targets: list[tuple[str, int]]) -> None:
        self.targets = itertools.cycle(targets)
        self.count = len(targets)
        self.loop = asyncio.new_event_loop()
        self.port = 0
        started = threading.Event()
        threading.Thread(target=self._run, args=(started,), daemon=True).start()
        started.wait(10)

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        started.set()
        self.loop.run_forever()

    async def _serve(self, client_reader, client_writer) -> None:
        for _ in range(self.count):
            host, port = next(self.targets)
            try:
                node_reader, node_writer = await asyncio.open_connection(host, port)
                break
            except OSError:
                continue
        else:
            client_writer.close()
            return

        async def pipe(reader, writer) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()

        await asyncio.gather(pipe(client_reader, node_writer), pipe(node_reader, client_writer))


def published(site: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted((site / "data").glob("*.csv"))
            if path.name not in ("changes.csv",)}


def conflicts(settings) -> dict[str, int]:
    """Documents with `_conflicts`, by database."""
    import httpx

    from kpi.couch import DATABASES, CouchStore

    store = CouchStore(settings)
    found = {}
    for kind in DATABASES:
        answer = httpx.get(f"{settings.couchdb_url}/{store.name(kind)}/_all_docs",
                           params={"include_docs": "true", "conflicts": "true"}, timeout=120)
        answer.raise_for_status()
        found[kind] = sum(1 for row in answer.json()["rows"]
                          if row.get("doc") and row["doc"].get("_conflicts"))
    return found


def drop_databases(settings) -> None:
    import httpx

    from kpi.couch import DATABASES, CouchStore

    store = CouchStore(settings)
    for kind in DATABASES:
        httpx.delete(f"{settings.couchdb_url}/{store.name(kind)}", timeout=60)


def stop_a_node_a_third_in(settings, days: int, command: str) -> threading.Thread:
    """Run `command` once a third of the days have a manifest (watched every second)."""
    import httpx

    from kpi.couch import MANIFESTS, CouchStore

    database = f"{settings.couchdb_url}/{CouchStore(settings).name(MANIFESTS)}"

    def watch() -> None:
        while True:
            try:
                done = httpx.get(database, timeout=10).json().get("doc_count", 0)
            except (httpx.HTTPError, ValueError):
                done = 0
            if done >= days // 3:
                break
            time.sleep(1)
        subprocess.run(command, shell=True, check=True)
        print(f"node stopped with {done} of {days} days done: {command}", flush=True)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", required=True, help="comma-separated node URLs")
    parser.add_argument("--stop-node", default="")
    parser.add_argument("--start-node", default="")
    parser.add_argument("--days", type=int, default=21)
    parser.add_argument("--per-day", type=int, default=4537)
    args = parser.parse_args()

    from fake_source import create_app
    from fake_source.generator import blobs_for_day, history_days
    from fake_source.server import running_in_thread
    from kpi.backfill import backfill
    from kpi.ingest import close_days, extract_window, plan_windows
    from kpi.reports import REPORTS
    from kpi.settings import Settings
    from kpi.source import check_row
    from tests.integration import oracle
    from tests.integration.test_oracle import close, number
    from tests.integration.test_windows import documents

    nodes = [urlsplit(url) for url in args.nodes.split(",")]
    balancer = Balancer([(node.hostname, node.port) for node in nodes])
    credentials = f"{nodes[0].username}:{nodes[0].password}@" if nodes[0].username else ""
    url = f"http://{credentials}127.0.0.1:{balancer.port}"
    days = history_days(LAST_DAY, args.days)
    app = create_app(seed=SEED, per_day=args.per_day, days=args.days, last_day=LAST_DAY,
                     bad_rate=0.002)
    failures = []

    def check(ok: bool, what: str) -> None:
        print(("ok   " if ok else "FAIL ") + what, flush=True)
        if not ok:
            failures.append(what)

    with running_in_thread(app) as base, tempfile.TemporaryDirectory() as tmp:
        settings = dataclasses.replace(
            Settings.from_env(), couchdb_url=url, source_url=f"{base}/wsapi/interaction_data",
            db_prefix=f"cluster_{uuid.uuid4().hex[:8]}", site_dir=Path(tmp) / "site",
            min_segment_count=0)
        print(f"balancer 127.0.0.1:{balancer.port} over {len(nodes)} nodes; "
              f"{args.days} days × about {args.per_day} blobs; prefix {settings.db_prefix}")
        from kpi.couch import CouchStore

        CouchStore(settings).ensure_databases()
        killer = (stop_a_node_a_third_in(settings, args.days, args.stop_node)
                  if args.stop_node else None)
        started = time.perf_counter()
        results = backfill(days[0], days[-1], settings, progress=False, parallel=4)
        print(f"backfill --parallel 4: {time.perf_counter() - started:.1f} s, "
              f"{sum(r.get('stored', 0) for r in results):,} rows stored", flush=True)
        if killer:
            killer.join(timeout=60)
        if args.start_node:
            subprocess.run(args.start_node, shell=True, check=True)
            print(f"node back: {args.start_node}", flush=True)

        valid = [blob for day in days
                 for doc_id, blob in blobs_for_day(SEED, day, args.per_day, 0.002)
                 if check_row({"id": doc_id, "value": blob}).status == "ok"]
        expected = oracle.compute(valid, 0)
        reports = published(settings.site_dir)
        exact = 0
        for name in REPORTS:
            if name == "data_quality":
                continue
            rows = list(csv.DictReader(io.StringIO(reports[f"{name}.csv"].decode())))
            got = {(r["date"], r["segmentation"], r["segment"], r["measure"]):
                   (number(r["value"]), number(r["numerator"]), number(r["denominator"]))
                   for r in rows}
            same = set(got) == set(expected[name]) and all(
                all(close(g, w) for g, w in zip(got[key], want, strict=True))
                for key, want in expected[name].items())
            exact += same
            check(same, f"{name}: {len(got):,} rows equal the oracle")
        print(f"{exact} reports equal the oracle")

        before = documents(settings)
        plan = plan_windows(days[-3:], settings, "cluster-mapped")
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda window: extract_window(window, settings), plan))
        close_days(plan, settings)
        check(documents(settings) == before,
              f"{len(plan)} windows of the last 3 days extracted by 4 threads at once and "
              "closed: every document unchanged")
        backfill(days[0], days[-1], settings, progress=False, parallel=4)
        check(documents(settings) == before and published(settings.site_dir) == reports,
              "backfill again: every document and report byte-identical")
        found = conflicts(settings)
        check(not any(found.values()), f"documents in conflict: {found}")
        drop_databases(settings)
    print("all checks passed" if not failures else f"{len(failures)} checks failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
