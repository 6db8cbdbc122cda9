"""The DAGs under a real Airflow scheduler (`airflow standalone`, LocalExecutor), as `make run`
deploys them: catchup runs the mapped extract tasks, the Asset triggers the publish, and the
documented `airflow backfill create … --reprocess-behavior completed` (docs/operations.md)
re-runs days. The documents and files equal one pass of `kpi backfill` over the same days (no
mapping, no Airflow)."""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from kpi.backfill import backfill
from kpi.devserver import free_port, wait_for_http
from kpi.settings import Settings
from tests.conftest import FAKE_BAD_RATE, FAKE_SEED
from tests.dags.conftest import DAGS_FOLDER
from tests.integration.test_windows import assert_same, documents

pytestmark = pytest.mark.dags
BIN = Path(sys.executable).parent


@pytest.fixture
def recent_source():
    """A fake KPIggybank whose history ends yesterday (the scheduler runs up to now)."""
    from fake_source import create_app
    from fake_source.server import running_in_thread

    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    app = create_app(seed=FAKE_SEED, per_day=200, days=3, last_day=yesterday,
                     bad_rate=FAKE_BAD_RATE)
    with running_in_thread(app) as base_url:
        yield f"{base_url}/wsapi/interaction_data", yesterday


class Airflow:
    """`airflow standalone` in its own AIRFLOW_HOME, stopped at the end."""

    def __init__(self, home: Path, settings: Settings, first_day: date) -> None:
        self.home, self.port = home, free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "KPI_"))}
        self.env = env | {
            "PATH": f"{BIN}:{env['PATH']}",
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{self.port}",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "5",
            "KPI_SOURCE_URL": settings.source_url,
            "KPI_COUCHDB_URL": settings.couchdb_url,
            "KPI_DB_PREFIX": settings.db_prefix,
            "KPI_SITE_DIR": str(settings.site_dir),
            "KPI_START_DATE": first_day.isoformat(),
            "KPI_RESTATE_DAYS": "1",
            "KPI_RETRY_BACKOFF": "0.05",
        }
        self.cli("db", "migrate")
        self.log = open(home / "standalone.log", "w")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen([str(BIN / "airflow"), "standalone"], env=self.env,
                                        stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        wait_for_http(f"http://127.0.0.1:{self.port}/api/v2/monitor/health", self.process,
                      timeout=240)

    def cli(self, *args: str, attempts: int = 1, done_if: str = "") -> str:
        """Run an airflow command, `attempts` times while it fails; a retry failing with
        `done_if` in its error means an earlier attempt did it (it failed after its commit,
        e.g. on a locked SQLite database)."""
        for attempt in range(attempts):
            result = subprocess.run([str(BIN / "airflow"), *args], env=self.env,
                                    capture_output=True, text=True)
            if result.returncode == 0:
                return result.stdout
            if attempt and done_if and done_if in result.stderr:
                return result.stdout
            time.sleep(3 if attempt + 1 < attempts else 0)
        raise AssertionError(f"airflow {' '.join(args)} failed:\n{result.stderr[-3000:]}")

    def runs(self, dag_id: str) -> list[tuple]:
        with sqlite3.connect(self.home / "airflow.db") as db:
            return db.execute(
                "select logical_date, state, end_date, run_type from dag_run where dag_id = ? "
                "order by logical_date", (dag_id,)).fetchall()

    def aggregated(self) -> list[dict]:
        """What every `aggregate` task returned (its XCom), in run order."""
        with sqlite3.connect(self.home / "airflow.db") as db:
            rows = db.execute(
                "select x.value from xcom x join dag_run r on r.id = x.dag_run_id "
                "where x.dag_id = 'kpi_nightly' and x.task_id = 'aggregate' "
                "and x.key = 'return_value' order by r.logical_date").fetchall()
        values = [json.loads(value) for (value,) in rows]
        return [day for value in values
                for day in (json.loads(value) if isinstance(value, str) else value)]

    def wait_for(self, dag_id: str, count: int, ended_after: str = "", timeout: float = 420):
        """Until `count` runs of `dag_id` succeeded (and ended after `ended_after`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            runs = self.runs(dag_id)
            if any(state == "failed" for _, state, _, _ in runs):
                break
            done = [r for r in runs if r[1] == "success" and (r[2] or "") > ended_after]
            if len(done) >= count:
                return runs
            time.sleep(2)
        raise AssertionError(f"{dag_id} runs: {self.runs(dag_id)}\n{self.tail()}")

    def wait_idle(self, dag_id: str, timeout: float = 240) -> None:
        """Until no run of `dag_id` is queued or running."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(state not in ("queued", "running") for _, state, _, _ in self.runs(dag_id)):
                return
            time.sleep(1)
        raise AssertionError(f"{dag_id} runs: {self.runs(dag_id)}\n{self.tail()}")

    def tail(self) -> str:
        logs = sorted((self.home / "logs").rglob("*.log"), key=lambda p: p.stat().st_mtime)
        text = "".join(p.read_text(errors="replace")[-2000:] for p in logs[-3:])
        return text + (self.home / "standalone.log").read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        os.killpg(self.process.pid, 15)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, 9)
        self.log.close()


def test_scheduler_catchup_and_backfill_equal_one_pass(settings, recent_source, tmp_path):
    source_url, yesterday = recent_source
    settings = dataclasses.replace(settings, source_url=source_url)
    days = [yesterday - timedelta(days=1), yesterday]
    airflow = Airflow(tmp_path / "airflow", settings, days[0])
    try:
        # catchup: the runs at 00:00 of days[0] + 1 and of today process the two days
        airflow.cli("dags", "unpause", "kpi_publish", attempts=40)
        airflow.cli("dags", "unpause", "kpi_nightly", attempts=40)
        runs = airflow.wait_for("kpi_nightly", 2)
        assert [r[0][:10] for r in runs] == [(d + timedelta(days=1)).isoformat() for d in days]
        airflow.wait_for("kpi_publish", 1)
        # the first run catches up (its day is not the last that ended): it restates nothing;
        # the night's own run restates the day before it (RESTATE_DAYS=1)
        closed = airflow.aggregated()
        assert [(d["day"], d["from_windows"]) for d in closed] == [
            (days[0].isoformat(), True), (days[0].isoformat(), True),
            (days[1].isoformat(), True)]

        one_pass = dataclasses.replace(settings, db_prefix=f"{settings.db_prefix}_one",
                                       site_dir=tmp_path / "one_pass_site")
        backfill(days[0], days[-1], one_pass, progress=False)
        first = documents(settings)
        # compared in a folder of its own: Airflow's publish may still be writing site_dir
        assert_same(dataclasses.replace(settings, site_dir=tmp_path / "compared" / "site"),
                    one_pass)
        airflow.wait_idle("kpi_publish")
        published = settings.site_dir / "data" / "manifest.json"
        assert f'"last_day": "{yesterday.isoformat()}"' in published.read_text()

        # the documented backfill command re-runs completed days: restated, never duplicated
        started = datetime.now(UTC).isoformat(sep=" ")
        airflow.cli("backfill", "create", "--dag-id", "kpi_nightly",
                    "--from-date", (days[0] + timedelta(days=1)).isoformat(),
                    "--to-date", (days[1] + timedelta(days=1)).isoformat(),
                    "--reprocess-behavior", "completed", "--max-active-runs", "1",
                    attempts=5, done_if="AlreadyRunningBackfill")  # SQLite may be locked
        # by the scheduler on a loaded machine, also after the backfill was created
        rerun = airflow.wait_for("kpi_nightly", 2, ended_after=started)
        assert [r[3] for r in rerun] == ["backfill", "backfill"]
        assert documents(settings) == first
        # a backfill run restates nothing: each day is fetched and closed once, not twice
        assert [d["day"] for d in airflow.aggregated()] == [d.isoformat() for d in days]
    finally:
        airflow.stop()
