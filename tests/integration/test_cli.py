"""The `kpi` command as a user runs it: settings from the environment, clear errors, exit codes."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from kpi.cli import main
from kpi.config import PRODUCTION_CONFIG
from kpi.devserver import free_port

pytestmark = pytest.mark.integration


def environment(settings) -> dict[str, str]:
    return {
        "KPI_SOURCE_URL": settings.source_url,
        "KPI_COUCHDB_URL": settings.couchdb_url,
        "KPI_DB_PREFIX": settings.db_prefix,
        "KPI_SITE_DIR": str(settings.site_dir),
        "KPI_RETRY_ATTEMPTS": "2",
        "KPI_RETRY_BACKOFF": "0.01",
        "KPI_HTTP_TIMEOUT": "2",
    }


def test_backfill_then_build_a_range(settings):
    runner = CliRunner()
    env = environment(settings)
    result = runner.invoke(main, ["backfill", "--start", "2026-10-01", "--end", "2026-10-02",
                                  "--no-progress"], env=env)
    assert result.exit_code == 0, result.output
    assert "2 days" in result.output
    result = runner.invoke(main, ["build-site", "--start", "2026-10-02", "--end", "2026-10-02"],
                           env=env)
    assert result.exit_code == 0, result.output
    manifest = json.loads((settings.site_dir / "data" / "manifest.json").read_text())
    assert (manifest["first_day"], manifest["last_day"]) == ("2026-10-02", "2026-10-02")


def test_an_unreachable_source_exits_1_with_the_day_and_url(settings):
    env = {**environment(settings),
           "KPI_SOURCE_URL": f"http://127.0.0.1:{free_port()}/wsapi/interaction_data"}
    result = CliRunner().invoke(main, ["run-day", "2026-10-02"], env=env)
    assert result.exit_code == 1
    assert "extract of 2026-10-02 failed" in result.output
    assert env["KPI_SOURCE_URL"] in result.output


def test_a_bad_config_is_refused_before_anything_runs(settings, tmp_path):
    config = json.loads(PRODUCTION_CONFIG.read_text())
    config["aliases"]["en"] = ["English"]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(config))
    env = {**environment(settings), "KPI_CONFIG": str(path)}
    result = CliRunner().invoke(main, ["run-day", "2026-10-02"], env=env)
    assert result.exit_code == 2
    assert "aliases.en" in result.output and "['English']" in result.output


def test_parallel_backfill_then_skip_done_does_only_new_days(settings):
    runner = CliRunner()
    env = environment(settings)
    result = runner.invoke(main, ["backfill", "--start", "2026-10-01", "--end", "2026-10-02",
                                  "--no-progress", "--parallel", "2"], env=env)
    assert result.exit_code == 0, result.output
    first = (settings.site_dir / "data" / "assertions.csv").read_bytes()
    result = runner.invoke(main, ["backfill", "--start", "2026-10-01", "--end", "2026-10-03",
                                  "--no-progress", "--skip-done"], env=env)
    assert result.exit_code == 0, result.output
    assert "1 day, " in result.output  # only 2026-10-03 was new
    manifest = json.loads((settings.site_dir / "data" / "manifest.json").read_text())
    assert (manifest["first_day"], manifest["last_day"]) == ("2026-10-01", "2026-10-03")
    result = runner.invoke(main, ["backfill", "--start", "2026-10-01", "--end", "2026-10-02",
                                  "--no-progress", "--parallel", "2"], env=env)
    assert result.exit_code == 0 and "2 days" in result.output  # restated, not duplicated
    result = runner.invoke(main, ["build-site", "--start", "2026-10-01", "--end", "2026-10-02"],
                           env=env)
    assert (settings.site_dir / "data" / "assertions.csv").read_bytes() == first


def test_a_configuration_change_is_rebuilt_from_couchdb_alone(settings, tmp_path, caplog):
    """A new alias: `kpi build-site` re-aggregates the stored days from CouchDB (the source is
    down) and publishes; `kpi reaggregate` does the same on demand; `--skip-done` fetches
    nothing either."""
    runner = CliRunner()
    env = environment(settings)
    result = runner.invoke(main, ["backfill", "--start", "2026-10-01", "--end", "2026-10-02",
                                  "--no-progress"], env=env)
    assert result.exit_code == 0, result.output
    config = json.loads(PRODUCTION_CONFIG.read_text(encoding="utf-8"))
    config["aliases"]["Linux"] = "Macintosh"  # changes the OS segments of stored days
    (tmp_path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    env["KPI_CONFIG"] = str(tmp_path / "config.json")
    env["KPI_SOURCE_URL"] = f"http://127.0.0.1:{free_port()}/wsapi/interaction_data"  # down
    with caplog.at_level("WARNING", logger="kpi.publish"):
        result = runner.invoke(main, ["build-site"], env=env)
    assert result.exit_code == 0, result.output
    assert "re-aggregating 2 days from CouchDB" in caplog.text
    assert "2026-10-01, 2026-10-02" in caplog.text
    rows = (settings.site_dir / "data" / "assertions.csv").read_text(encoding="utf-8")
    assert ",OS,Linux," not in rows and ",OS,Macintosh," in rows
    assert "backfill" not in result.output + caplog.text  # nothing suggests fetching again

    config["aliases"]["Windows"] = "Macintosh"  # another change, rebuilt on demand
    (tmp_path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    result = runner.invoke(main, ["reaggregate", "--start", "2026-10-01", "--end", "2026-10-03"],
                           env=env)
    assert result.exit_code == 0, result.output
    assert "2 days re-aggregated from CouchDB" in result.output  # 10-03 has nothing stored
    result = runner.invoke(main, ["backfill", "--start", "2026-10-01", "--end", "2026-10-02",
                                  "--no-progress", "--skip-done"], env=env)
    assert result.exit_code == 0 and "0 days" in result.output, result.output  # no fetch
    rows = (settings.site_dir / "data" / "assertions.csv").read_text(encoding="utf-8")
    assert ",OS,Windows," not in rows and ",OS,Macintosh," in rows


@pytest.mark.parametrize("signum", [15, 1])  # TERM (a supervisor), HUP (a closed terminal)
def test_kpi_couchdb_stops_its_server_when_signalled(signum):
    import contextlib
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    import httpx

    from kpi.devserver import wait_for_http

    port = free_port()
    kpi = Path(sys.executable).with_name("kpi")
    process = subprocess.Popen([str(kpi), "couchdb", "--port", str(port), "--in-memory"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)  # its group: nothing outlives the test
    try:  # as soon as the server answers: while `kpi couchdb` may still be starting it
        wait_for_http(f"http://127.0.0.1:{port}/", process, timeout=60)
        process.send_signal(signum)
        assert process.wait(timeout=20) is not None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            except httpx.TransportError:
                break  # the server is gone with its parent
            time.sleep(0.2)
        else:
            pytest.fail("pouchdb-server still answers after `kpi couchdb` was signalled")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 9)


@pytest.mark.parametrize(("args", "message"), [
    (["backfill", "--start", "2026-13-01", "--end", "2026-13-02"],
     "2026-13-01: month 13 is invalid (01 to 12)"),
    (["backfill", "--start", "2026-02-01", "--end", "2026-02-30"],
     "2026-02-30: day 30 is invalid (February 2026 has 28 days)"),
    (["run-day", "2026-1-5"], "'2026-1-5' is not a day written YYYY-MM-DD"),
    (["run-day", "0000-01-01"], "0000-01-01: year 0 is invalid"),
    (["run-day", "\u0662\u0660\u0662\u0666-01-01"], "is not a day written YYYY-MM-DD"),
])
def test_a_wrong_date_is_named_exactly(settings, args, message):
    result = CliRunner().invoke(main, args, env=environment(settings))
    assert result.exit_code == 2 and message in result.output, result.output


def test_a_day_that_has_not_ended_is_refused_and_nothing_is_stored(settings):
    from datetime import UTC, datetime, timedelta

    today = datetime.now(UTC).date()
    env = environment(settings)
    for args in (["backfill", "--start", str(today - timedelta(days=1)), "--end", str(today)],
                 ["run-day", "2030-01-01"], ["run-day", str(today)]):
        result = CliRunner().invoke(main, args, env=env)
        assert result.exit_code == 1, result.output
        assert "has not ended yet (UTC)" in result.output
        assert f"the last day that can be processed is {today - timedelta(days=1)}" in (
            result.output)
    for args in (["run-day", "0001-01-01"], ["backfill", "--start", "1969-12-31", "--end",
                                             "1970-01-01"]):  # no blob can lie there
        result = CliRunner().invoke(main, args, env=env)
        assert result.exit_code == 1 and "is before 1970-01-01" in result.output, result.output
    import httpx

    all_dbs = httpx.get(f"{settings.couchdb_url}/_all_dbs", timeout=10).json()
    names = [n for n in all_dbs if n.startswith(settings.db_prefix)]
    assert names == []  # refused before any database was touched
    assert not settings.site_dir.exists()


def published_day(settings) -> tuple[dict[str, str], dict[str, bytes]]:
    """A day backfilled and published; the environment, and the site's files."""
    from tests.integration.test_windows import files

    env = environment(settings)
    result = CliRunner().invoke(main, ["backfill", "--start", "2026-10-01", "--end",
                                       "2026-10-01", "--no-progress"], env=env)
    assert result.exit_code == 0, result.output
    return env, files(settings.site_dir, history=True)


def test_a_mistyped_prefix_neither_creates_databases_nor_touches_the_site(settings):
    import httpx

    from tests.integration.test_windows import files

    env, before = published_day(settings)
    runner = CliRunner()
    result = runner.invoke(main, ["build-site"], env={**env, "KPI_DB_PREFIX": "typo"})
    assert result.exit_code == 1
    assert "has no database typo_aggregates" in result.output
    assert "KPI_DB_PREFIX" in result.output
    assert not [n for n in httpx.get(f"{settings.couchdb_url}/_all_dbs", timeout=10).json()
                if n.startswith("typo")]
    assert files(settings.site_dir, history=True) == before


def test_an_empty_build_does_not_replace_a_site_with_days_unless_asked(settings):
    from tests.integration.test_windows import files

    env, before = published_day(settings)
    runner = CliRunner()
    empty_range = ["build-site", "--start", "2026-09-01", "--end", "2026-09-02"]
    result = runner.invoke(main, empty_range, env=env)
    assert result.exit_code == 1 and "not replaced by an empty site" in result.output
    assert files(settings.site_dir, history=True) == before
    result = runner.invoke(main, [*empty_range, "--allow-empty"], env=env)
    assert result.exit_code == 0, result.output
    manifest = json.loads((settings.site_dir / "data" / "manifest.json").read_text())
    assert manifest["last_day"] is None


def test_the_dev_server_writes_its_errors_to_a_file_and_a_failed_start_shows_them(tmp_path):
    """No unread stderr pipe (a full one would block the server); a failed start still says
    why, from that file."""
    import subprocess
    import sys

    from kpi.devserver import start_dev_couchdb, stop_process, wait_for_http

    server = start_dev_couchdb(free_port(), tmp_path / "couch")
    try:
        assert server.stderr is None and (tmp_path / "couch" / "stderr.txt").exists()
    finally:
        stop_process(server)
    log = tmp_path / "stderr.txt"
    with open(log, "wb") as stderr:
        dying = subprocess.Popen([sys.executable, "-c",
                                  "import sys; sys.stderr.write('EADDRINUSE'); sys.exit(3)"],
                                 stderr=stderr)
    with pytest.raises(RuntimeError, match="server exited with 3: EADDRINUSE"):
        wait_for_http(f"http://127.0.0.1:{free_port()}/", dying, log=log)
