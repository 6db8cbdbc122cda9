"""`make run-distributed` as a user runs it (scripts/run-stack.sh --distributed, in a scratch
copy of the repository's layout, on free ports): the CeleryExecutor with Redis and two Celery
workers, each with its own HOME, temporary folder and working directory. A two-day catch-up of
`kpi_nightly` spreads its mapped windows over both workers and leaves the documents one pass
of `kpi backfill` leaves; `kpi_publish` runs on the worker serving KPI_PUBLISH_QUEUE and
publishes the site; every server listens on 127.0.0.1 only, and `make stop` stops them all,
Redis included."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
import sqlite3
import subprocess
import time
from datetime import date, timedelta
from pathlib import Path

import orjson
import psutil
import pytest

from kpi.backfill import backfill
from kpi.devserver import free_port
from kpi.settings import Settings
from tests.dags.test_run_stack import listening, marked, stack_processes
from tests.integration.test_windows import assert_same, files

pytestmark = [pytest.mark.dags, pytest.mark.timeout(600)]
NODE = os.uname().nodename
WEB, DEFAULT = f"kpi-web@{NODE}", f"kpi-default@{NODE}"  # the script's worker names


def metadata(root: Path, query: str, *args) -> list[tuple]:
    """Rows of a query on the stack's Airflow metadata DB ([] before it is migrated)."""
    database = root / ".airflow" / "airflow.db"
    if not database.exists():
        return []
    try:
        with sqlite3.connect(database, timeout=5) as db:
            return db.execute(query, args).fetchall()
    except sqlite3.OperationalError:  # tables not migrated yet
        return []


def runs(root: Path, dag_id: str) -> list[tuple]:
    """(logical date, state, start date) of each run of `dag_id`, oldest first."""
    return metadata(root, "select logical_date, state, start_date from dag_run "
                          "where dag_id = ? order by logical_date, start_date", dag_id)


def task_instances(root: Path, dag_id: str, task_id: str) -> list[tuple]:
    """(run id, map index, state, hostname, queue, end date) of each try of a task."""
    return metadata(root, "select run_id, map_index, state, hostname, queue, end_date "
                          "from task_instance where dag_id = ? and task_id = ?", dag_id, task_id)


def published_after_last_aggregate(root: Path) -> bool:
    """Whether a publish that started after the last nightly run's `aggregate` ended (so it
    read every day the catch-up stored) has succeeded, and no publish is pending."""
    nightly = runs(root, "kpi_nightly")
    if len(nightly) < 2 or any(state != "success" for _, state, _ in nightly):
        return False
    last_run = metadata(root, "select run_id from dag_run where dag_id = 'kpi_nightly' "
                              "order by logical_date desc limit 1")[0][0]
    ended = [end for run, _, state, _, _, end in task_instances(root, "kpi_nightly", "aggregate")
             if run == last_run and state == "success"]
    publishes = runs(root, "kpi_publish")
    return bool(ended) and not any(state in ("queued", "running") for _, state, _ in publishes) \
        and any(state == "success" and (start or "") >= ended[0]
                for _, state, start in publishes)


def refuses_connections(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def test_make_run_distributed(scratch_root, tmp_path):
    root = scratch_root
    ports = {name: free_port() for name in ("COUCHDB", "SOURCE", "SITE", "AIRFLOW", "REDIS")}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "KPI_"))}
    env |= {f"KPI_DEMO_{name}_PORT": str(port) for name, port in ports.items()}
    env |= {"KPI_DEMO_DAYS": "2", "KPI_DEMO_PER_DAY": "200"}
    output = root / "run.log"
    with open(output, "w") as out:
        script = subprocess.Popen(["bash", str(root / "scripts" / "run-stack.sh"),
                                   "--distributed"], env=env, stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    sockets: dict[tuple[str, int], str] = {}
    mark = ""
    try:
        deadline = time.monotonic() + 480
        while time.monotonic() < deadline:  # sockets seen until the catch-up is published
            mark_file = root / ".devdata" / "run-stack.id"
            mark = mark or (mark_file.read_text().strip() if mark_file.exists() else "")
            if mark:
                sockets |= listening(stack_processes(psutil.Process(script.pid), mark))
            assert script.poll() is None, output.read_text()[-3000:]
            failed = [r for dag in ("kpi_nightly", "kpi_publish") for r in runs(root, dag)
                      if r[1] == "failed"]
            assert failed == [], failed
            if published_after_last_aggregate(root):
                break
            time.sleep(1)
        else:
            raise AssertionError(f"no published catch-up: {runs(root, 'kpi_nightly')} "
                                 f"{runs(root, 'kpi_publish')}\n{output.read_text()[-3000:]}")

        public = {address: command for address, command in sockets.items()
                  if not ipaddress.ip_address(address[0]).is_loopback}
        assert public == {}, f"listening beyond 127.0.0.1: {public}"
        assert {port for _, port in sockets} >= set(ports.values()), sockets
        assert not {8793, 8794} & {port for _, port in sockets}

        # the two runs at 00:00 of the days after them processed the two days
        days = [date.fromisoformat(logical[:10]) - timedelta(days=1)
                for logical, _, _ in runs(root, "kpi_nightly")]
        assert len(days) == 2 and days[1] - days[0] == timedelta(days=1)

        # the mapped windows ran on both workers; the publish only on the one serving its queue
        windows = task_instances(root, "kpi_nightly", "extract_and_store")
        assert len({run for run, _, _, _, _, _ in windows}) == 2
        assert {hostname for _, _, _, hostname, _, _ in windows} == {WEB, DEFAULT}
        published = task_instances(root, "kpi_publish", "publish_site")
        assert published and {(hostname, queue) for _, _, _, hostname, queue, _ in published} \
            == {(WEB, "kpi_web")}

        # the documents equal one pass of `kpi backfill` over the same days, same source
        stack = Settings(
            source_url=f"http://127.0.0.1:{ports['SOURCE']}/wsapi/interaction_data",
            couchdb_url=f"http://127.0.0.1:{ports['COUCHDB']}",
            config_path=str(root / ".devdata" / "demo-config.json"),
            site_dir=tmp_path / "compared" / "site",
        )
        one_pass = dataclasses.replace(stack, db_prefix="onepass",
                                       site_dir=tmp_path / "one_pass_site")
        backfill(days[0], days[1], one_pass, progress=False)
        assert_same(stack, one_pass)

        # the site the publish worker published: the catch-up's days, the one pass's numbers
        site = root / "site_output" / "site"
        manifest = orjson.loads((site / "data" / "manifest.json").read_bytes())
        assert (manifest["first_day"], manifest["last_day"]) == tuple(map(str, days))
        def report_files(folder: Path) -> dict[str, bytes]:
            return {name: content for name, content in files(folder).items()
                    if name.startswith("data/") and name.endswith(".csv")}

        assert "data/new_user.csv" in report_files(site)
        assert report_files(site) == report_files(one_pass.site_dir)
    finally:
        # `make stop` from another terminal: every service, Redis included, then the script
        subprocess.run(["bash", str(root / "scripts" / "stop-stack.sh")], cwd=root, env=env,
                       capture_output=True, timeout=120)
        try:
            script.wait(timeout=90)
        finally:
            left = [p for p in marked(mark) if p.pid != script.pid] if mark else []
            for process in left:  # only what the script started, should it leave any
                process.kill()
    assert left == [], f"still running after the stop: {[p.cmdline() for p in left]}"
    assert all(refuses_connections(port) for port in ports.values())
