"""Benchmark CouchDB clients on `_bulk_docs` inserts of the same real-shaped documents, and on
reading one day of them back. Prints figures; asserts nothing.

    .venv/bin/python bench/couch_clients.py [--couchdb-url URL] [--docs 50000] [--batch 1000]
                                            [--rounds 3] [--per-day 20000]

Clients, each through its public API:
- `CouchStore`: ours (`kpi/couch.py`, on httpx): `upsert(RAW, docs, present=set())`, the call a
  fresh day's extract makes (one `_bulk_docs` per batch, no reads, per-document results
  checked); the day is read back with `day_docs` (pages of the default `KPI_BULK_SIZE`).
- `httpx + orjson`: a bare POST of `_bulk_docs` with an orjson body, the floor any client
  on httpx can reach; the day is one `_all_docs` GET.
- `ibmcloudant`: `CloudantV1` with a `BasicAuthenticator`: `post_bulk_docs` with its `BulkDocs`
  model (the documented call), and again with a pre-encoded orjson body (`BinaryIO`, the
  SDK's own overhead alone); `post_all_docs` reads the day.
- `pycouchdb`: `Server(url).database(name).save_bulk(docs)`; `Database.all` reads the day.
ibmcloudant and pycouchdb are not dependencies of the project: a client whose package is
missing prints "not installed" (`.venv/bin/pip install ibmcloudant pycouchdb` to measure them).

The documents are what the pipeline stores for a valid row, `{"_id": "YYYY-MM-DD:<id>",
"kpiggybank_id": id, "blob": blob}`, with blobs from `fake_source.generator` (`--per-day` a day,
random ids, in the source's order). Every round writes all documents with each client into a
fresh database (clients interleaved, their order rotated per round), then reads the first day
back; the medians over rounds are printed. Default server: a fresh in-memory dev CouchDB
(pouchdb-server); `--couchdb-url` for another (e.g. Apache CouchDB).
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta

import httpx
import orjson

FIRST_DAY = date(2026, 10, 1)


def bench_documents(count: int, per_day: int) -> list[dict]:
    """`count` raw documents as the pipeline stores them, day after day from FIRST_DAY."""
    from fake_source.generator import blobs_for_day

    docs: list[dict] = []
    day = FIRST_DAY
    while len(docs) < count:
        docs += [{"_id": f"{day.isoformat()}:{row_id}", "kpiggybank_id": row_id, "blob": blob}
                 for row_id, blob in blobs_for_day(1, day, per_day)]
        day += timedelta(days=1)
    return docs[:count]


def batches(docs: list[dict], size: int) -> list[list[dict]]:
    return [docs[first : first + size] for first in range(0, len(docs), size)]


@dataclass
class Client:
    """One way of writing and reading documents: `open(url, prefix)` returns (write, read,
    close) for the database `<prefix>_raw`, which exists and is empty."""

    name: str
    package: str  # the import that must be available, "" for none beyond the project's
    open: Callable[[str, str, int], tuple[Callable, Callable, Callable]]
    write_rates: list[float] = field(default_factory=list)
    write_cpu: list[float] = field(default_factory=list)  # this process's CPU s per 1,000 docs
    read_seconds: list[float] = field(default_factory=list)
    read_counts: list[int] = field(default_factory=list)
    stored: list[int] = field(default_factory=list)
    errors: list[int] = field(default_factory=list)

    @property
    def installed(self) -> bool:
        return not self.package or importlib.util.find_spec(self.package) is not None


def day_bounds() -> tuple[str, str]:
    from kpi.couch import day_prefix, prefix_range

    return prefix_range(day_prefix(FIRST_DAY))


def open_couchstore(url: str, prefix: str, batch: int):
    from kpi.couch import RAW, CouchStore
    from kpi.settings import Settings

    writer = CouchStore(Settings(couchdb_url=url, db_prefix=prefix, bulk_size=batch))
    reader = CouchStore(Settings(couchdb_url=url, db_prefix=prefix))  # default page size

    def write(docs: list[dict]) -> int:
        writer.upsert(RAW, docs, present=set())  # raises on any per-document error
        return 0

    def read() -> int:
        return sum(1 for _ in reader.day_docs(RAW, FIRST_DAY))

    def close() -> None:
        writer.close()
        reader.close()

    return write, read, close


def open_httpx(url: str, prefix: str, batch: int):
    from kpi.settings import split_credentials

    bare, credentials = split_credentials(url)
    http = httpx.Client(base_url=bare.rstrip("/") + "/", auth=credentials, timeout=120)
    database = f"{prefix}_raw"

    def write(docs: list[dict]) -> int:
        errors = 0
        for part in batches(docs, batch):
            response = http.post(f"{database}/_bulk_docs",
                                 content=orjson.dumps({"docs": part}),
                                 headers={"Content-Type": "application/json"})
            response.raise_for_status()
            errors += sum("error" in result for result in orjson.loads(response.content))
        return errors

    def read() -> int:
        start, end = day_bounds()
        response = http.get(f"{database}/_all_docs", params={
            "startkey": orjson.dumps(start).decode(), "endkey": orjson.dumps(end).decode(),
            "inclusive_end": "false", "include_docs": "true"})
        response.raise_for_status()
        return len(orjson.loads(response.content)["rows"])

    return write, read, http.close


def _cloudant(url: str):
    from ibm_cloud_sdk_core.authenticators import BasicAuthenticator, NoAuthAuthenticator
    from ibmcloudant.cloudant_v1 import CloudantV1

    from kpi.settings import split_credentials

    bare, credentials = split_credentials(url)
    authenticator = BasicAuthenticator(*credentials) if credentials else NoAuthAuthenticator()
    service = CloudantV1(authenticator=authenticator)
    service.set_service_url(bare)
    return service


def open_ibmcloudant(url: str, prefix: str, batch: int, encoded: bool = False):
    from ibmcloudant.cloudant_v1 import BulkDocs, Document

    service = _cloudant(url)
    database = f"{prefix}_raw"

    def write(docs: list[dict]) -> int:
        errors = 0
        for part in batches(docs, batch):
            if encoded:
                body = io.BytesIO(orjson.dumps({"docs": part}))
            else:
                body = BulkDocs(docs=[Document.from_dict(doc) for doc in part])
            results = service.post_bulk_docs(db=database, bulk_docs=body).get_result()
            errors += sum("error" in result for result in results)
        return errors

    def read() -> int:
        start, end = day_bounds()
        result = service.post_all_docs(db=database, include_docs=True, start_key=start,
                                       end_key=end, inclusive_end=False).get_result()
        return len(result["rows"])

    return write, read, service.get_http_client().close


def open_ibmcloudant_encoded(url: str, prefix: str, batch: int):
    return open_ibmcloudant(url, prefix, batch, encoded=True)


def open_pycouchdb(url: str, prefix: str, batch: int):
    import pycouchdb

    server = pycouchdb.Server(url)  # basic auth from the URL
    database = server.database(f"{prefix}_raw")

    def write(docs: list[dict]) -> int:
        errors = 0
        for part in batches(docs, batch):
            # raises on a conflict; other per-document errors come back without a `_rev`
            saved = database.save_bulk(part)
            errors += sum("_rev" not in doc for doc in saved)
        return errors

    def read() -> int:
        start, end = day_bounds()
        return len(database.all(startkey=start, endkey=end, inclusive_end="false",
                                as_list=True))

    return write, read, server.resource.session.close


CLIENTS = (
    ("CouchStore (ours, httpx)", "", open_couchstore),
    ("httpx + orjson (floor)", "", open_httpx),
    ("ibmcloudant BulkDocs model", "ibmcloudant", open_ibmcloudant),
    ("ibmcloudant orjson body", "ibmcloudant", open_ibmcloudant_encoded),
    ("pycouchdb save_bulk", "pycouchdb", open_pycouchdb),
)


def measure(client: Client, admin: httpx.Client, url: str, prefix: str, docs: list[dict],
            batch: int) -> None:
    """One round of `client`: a fresh database, every document written, the first day read."""
    database = f"{prefix}_raw"
    admin.put(database).raise_for_status()
    try:
        write, read, close = client.open(url, prefix, batch)
        try:
            start, cpu = time.perf_counter(), time.process_time()
            client.errors.append(write(docs))
            client.write_rates.append(len(docs) / (time.perf_counter() - start))
            client.write_cpu.append((time.process_time() - cpu) / len(docs) * 1000)
            start = time.perf_counter()
            client.read_counts.append(read())
            client.read_seconds.append(time.perf_counter() - start)
        finally:
            close()
        client.stored.append(admin.get(database).json()["doc_count"])
    finally:
        admin.delete(database)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--couchdb-url", default="",
                        help="CouchDB URL (with user:password@); default: a fresh dev server")
    parser.add_argument("--docs", type=int, default=50_000, help="documents written per client")
    parser.add_argument("--batch", type=int, default=1000, help="documents per _bulk_docs")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument("--per-day", type=int, default=20_000, help="mean documents per day")
    parser.add_argument("--db-prefix", default="bench", help="start of every database name")
    args = parser.parse_args()

    from kpi.devserver import free_port, start_dev_couchdb
    from kpi.settings import redact_url, split_credentials

    couch = None
    url = args.couchdb_url
    if not url:
        port = free_port()
        couch = start_dev_couchdb(port)  # returns once it answers
        url = f"http://127.0.0.1:{port}"
    try:
        docs = bench_documents(args.docs, args.per_day)
        first_day = sum(doc["_id"].startswith(FIRST_DAY.isoformat()) for doc in docs)
        size = statistics.mean(len(orjson.dumps(doc)) for doc in docs[:2000])
        bare, credentials = split_credentials(url)
        admin = httpx.Client(base_url=bare.rstrip("/") + "/", auth=credentials, timeout=120)
        server = admin.get("").json()
        clients = [Client(name, package, opener) for name, package, opener in CLIENTS]
        installed = [client for client in clients if client.installed]
        token = uuid.uuid4().hex[:6]
        for round_number in range(args.rounds):
            shift = round_number % len(installed)
            for index, client in enumerate(installed[shift:] + installed[:shift]):
                prefix = f"{args.db_prefix}{token}_{round_number}_{index}"
                measure(client, admin, url, prefix, docs, args.batch)
        admin.close()
    finally:
        if couch is not None:
            couch.terminate()

    vendor = server.get("vendor", {}).get("name", "?")
    print(f"server: {redact_url(url)} ({vendor} {server.get('version', '?')})")
    print(f"{args.docs:,} documents (mean {size:,.0f} B as JSON), {args.batch:,} per "
          f"_bulk_docs, {args.rounds} rounds; read: the first day, {first_day:,} documents")
    header = (f"{'client':<28} {'insert docs/s':>14} {'(min-max)':>17} {'client CPU':>11} "
              f"{'stored':>7} {'doc errors':>10} {'read day s':>11} {'read docs/s':>12}")
    print(header)
    print("-" * len(header))
    for client in clients:
        if not client.installed:
            print(f"{client.name:<28} not installed ({client.package})")
            continue
        rates, reads = client.write_rates, client.read_seconds
        spread = f"{min(rates):,.0f}-{max(rates):,.0f}"
        read_median = statistics.median(reads)
        cpu = f"{statistics.median(client.write_cpu) * 1000:,.0f} ms"
        print(f"{client.name:<28} {statistics.median(rates):>14,.0f} {spread:>17} {cpu:>11} "
              f"{min(client.stored):>7,} {max(client.errors):>10,} {read_median:>11.3f} "
              f"{min(client.read_counts) / read_median:>12,.0f}")
    print("insert: median (min-max) over rounds, wall time; client CPU: this process's CPU time "
          "per 1,000 documents written (the client's own cost, apart from the server's)")


if __name__ == "__main__":
    main()
