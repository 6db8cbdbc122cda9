"""`make run` as a user runs it (scripts/run-stack.sh, in a scratch copy of the repository's
layout, on free ports): every server it starts listens on 127.0.0.1 only, from the start until
its first nightly run has succeeded (the dev CouchDB, the fake KPIggybank, the site server,
Airflow's API server, and no log server on every interface), and Airflow still shows a task's
log without its log servers."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import psutil
import pytest

from kpi.devserver import free_port

pytestmark = pytest.mark.dags


def marked(mark: str) -> list[psutil.Process]:
    """Every process carrying the run's mark (the script exports it to all it starts)."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("KPI_RUN_STACK_ID") == mark:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def stack_processes(script: psutil.Process, mark: str) -> list[psutil.Process]:
    """The run script, its descendants, and every process carrying the run's mark (services
    leave the script's process tree: each runs in a session of its own)."""
    found = {process.pid: process for process in marked(mark)}
    found[script.pid] = script
    for child in script.children(recursive=True):
        found[child.pid] = child
    return list(found.values())


def listening(processes: list[psutil.Process]) -> dict[tuple[str, int], str]:
    """(address, port) of every TCP socket the processes listen on, with a command line."""
    sockets = {}
    for process in processes:
        try:
            connections = process.net_connections(kind="inet")
            command = " ".join(process.cmdline()).strip()[:120]
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        for connection in connections:
            if connection.status == psutil.CONN_LISTEN:
                sockets[(connection.laddr.ip, connection.laddr.port)] = command
    return sockets


def nightly_runs(root: Path) -> list[tuple[str, str]]:
    database = root / ".airflow" / "airflow.db"
    if not database.exists():
        return []
    try:
        with sqlite3.connect(database, timeout=5) as db:
            return db.execute("select run_id, state from dag_run "
                              "where dag_id = 'kpi_nightly'").fetchall()
    except sqlite3.OperationalError:  # tables not migrated yet
        return []


def test_make_run_listens_on_localhost_only(scratch_root):
    root = scratch_root
    ports = {name: free_port() for name in ("COUCHDB", "SOURCE", "SITE", "AIRFLOW")}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "KPI_"))}
    env |= {f"KPI_DEMO_{name}_PORT": str(port) for name, port in ports.items()}
    env |= {"KPI_DEMO_DAYS": "1", "KPI_DEMO_PER_DAY": "20"}
    output = root / "run.log"
    with open(output, "w") as out:
        script = subprocess.Popen(["bash", str(root / "scripts" / "run-stack.sh")], env=env,
                                  stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    sockets: dict[tuple[str, int], str] = {}
    mark = ""
    try:
        deadline = time.monotonic() + 420
        while time.monotonic() < deadline:  # sockets seen until the first nightly run is done
            mark_file = root / ".devdata" / "run-stack.id"
            mark = mark or (mark_file.read_text().strip() if mark_file.exists() else "")
            if mark:
                sockets |= listening(stack_processes(psutil.Process(script.pid), mark))
            runs = nightly_runs(root)
            assert script.poll() is None, output.read_text()[-3000:]
            assert all(state != "failed" for _, state in runs), runs
            if any(state == "success" for _, state in runs):
                break
            time.sleep(1)
        else:
            raise AssertionError(f"no nightly run succeeded: {output.read_text()[-3000:]}")

        public = {address: command for address, command in sockets.items()
                  if not ipaddress.ip_address(address[0]).is_loopback}
        assert public == {}, f"listening beyond 127.0.0.1: {public}"
        assert {port for _, port in sockets} >= set(ports.values()), sockets
        assert not {8793, 8794} & {port for _, port in sockets}

        # the task's log, through Airflow's API, without the log servers
        api = f"http://127.0.0.1:{ports['AIRFLOW']}"
        passwords = json.loads(
            (root / ".airflow" / "simple_auth_manager_passwords.json.generated").read_text())
        token = httpx.post(f"{api}/auth/token", timeout=30, json={
            "username": "admin", "password": passwords["admin"]}).json()["access_token"]
        run_id = next(run for run, state in nightly_runs(root) if state == "success")
        log = httpx.get(f"{api}/api/v2/dags/kpi_nightly/dagRuns/{run_id}/taskInstances/plan/"
                        "logs/1", headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert log.status_code == 200, log.text
        assert "Task instance is in running state" in log.text or "plan" in log.text
        assert "attempt=1.log" in log.text  # read from the local log file
    finally:
        script.send_signal(signal.SIGTERM)  # the script stops every service it started
        try:
            script.wait(timeout=90)
        finally:
            left = [p for p in marked(mark) if p.pid != script.pid] if mark else []
            for process in left:  # only what the script started, should it leave any
                process.kill()
    assert left == [], f"still running after the stop: {[p.cmdline() for p in left]}"
