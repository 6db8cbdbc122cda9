"""The `kpi` command: backfill, run-day, reaggregate, restore-removed, build-site, serve,
fake-source, couchdb.

Exit status: 0 done; 1 an error (the message names it); 2 a usage error; 3 some days'
restatements were refused (each is named on stderr with its counts; the other days are done).

Each command imports what it runs when it runs (`kpi --help` and `kpi serve` start at once,
without pandas).
"""

from __future__ import annotations

import calendar
import logging
import re
import signal
import sys
from datetime import date
from pathlib import Path

import click

from kpi.settings import Settings
from kpi.words import plural

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")


class UtcDay(click.ParamType):
    """A UTC calendar day `YYYY-MM-DD`; a wrong month or day is named as such."""

    name = "YYYY-MM-DD"

    def convert(self, value, param, ctx) -> date:
        if isinstance(value, date):
            return value
        match = re.fullmatch(r"([0-9]{4})-([0-9]{2})-([0-9]{2})", str(value))
        if not match:
            self.fail(f"{value!r} is not a day written YYYY-MM-DD", param, ctx)
        year, month, day = (int(part) for part in match.groups())
        if not 1 <= month <= 12:
            self.fail(f"{value}: month {month} is invalid (01 to 12)", param, ctx)
        last = calendar.monthrange(year, month)[1]
        if not 1 <= day <= last:
            self.fail(f"{value}: day {day} is invalid ({MONTHS[month - 1]} {year} has "
                      f"{last} days)", param, ctx)
        if year < 1:
            self.fail(f"{value}: year {year} is invalid (0001 to 9999)", param, ctx)
        return date(year, month, day)


DAY = UtcDay()


def _settings() -> Settings:
    """Settings from the environment, with the report configuration validated up front."""
    from kpi.config import load_config

    try:
        settings = Settings.from_env()
        load_config(settings.config_path)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    return settings


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log progress at INFO level.")
def main(verbose: bool) -> None:
    """Persona KPI pipeline: KPIggybank → CouchDB → daily KPIs → static site."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


REFUSED_STATUS = 3
ALLOW_REMOVALS = ("Let restatements remove any number of stored rows in this run (removed rows "
                  "go to <prefix>_removed).")


def _fail_cleanly(call, *args):
    from kpi.couch import StoreError
    from kpi.ingest import PipelineError
    from kpi.source import SourceError

    try:
        return call(*args)
    except (SourceError, StoreError, PipelineError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


@main.command()
@click.option("--start", required=True, type=DAY, help="First UTC day (YYYY-MM-DD).")
@click.option("--end", required=True, type=DAY, help="Last UTC day, included.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@click.option("--parallel", default=2, show_default=True, type=click.IntRange(1, 32),
              help="Days processed at once (a day waits on the servers more than it "
                   "computes; each day holds its own memory).")
@click.option("--skip-done", is_flag=True,
              help="Leave out days already extracted and aggregated (default: restate them).")
@click.option("--allow-removals", is_flag=True, help=ALLOW_REMOVALS)
def backfill(start: date, end: date, no_progress: bool, parallel: int,
             skip_done: bool, allow_removals: bool) -> None:
    """Extract, store and aggregate every day of [START, END], then build the site."""
    from kpi.backfill import backfill as run_backfill

    if end < start:
        raise click.BadParameter("--end is before --start")
    settings = _settings()
    results = _fail_cleanly(run_backfill, start, end, settings, not no_progress,
                            parallel, skip_done, allow_removals)
    done = [r for r in results if "refused" not in r]
    aggregated = sum(r["aggregated"] for r in done)
    removed = sum(r.get("removed", 0) for r in done)
    refused = len(results) - len(done)
    click.echo(f"{plural(len(done), 'day')}, {plural(aggregated, 'blob')} aggregated"
               + (f", {plural(removed, 'row')} moved to {settings.db_prefix}_removed"
                  if removed else "")
               + (f"; {plural(refused, 'day')} refused, left as they were" if refused else "")
               + f"; site: {settings.site_dir}")
    _exit_if_refused(results)


def _exit_if_refused(results: list[dict]) -> None:
    """Name each refused restatement on stderr and exit with REFUSED_STATUS, if any."""
    refused = [result["message"] for result in results if "refused" in result]
    for message in refused:
        click.echo(f"refused: {message}", err=True)
    if refused:
        sys.exit(REFUSED_STATUS)


@main.command("run-day")
@click.argument("day", type=DAY)
@click.option("--allow-removals", is_flag=True, help=ALLOW_REMOVALS)
def run_day(day: date, allow_removals: bool) -> None:
    """Extract, store and aggregate one UTC DAY (does not rebuild the site)."""
    from kpi.backfill import run_day as run_one

    quality = _fail_cleanly(run_one, day, _settings(), None, allow_removals)
    if "refused" not in quality:
        click.echo(" ".join(f"{key}={value}" for key, value in quality.items()))
    _exit_if_refused([quality])


@main.command()
@click.option("--start", required=True, type=DAY, help="First UTC day (YYYY-MM-DD).")
@click.option("--end", required=True, type=DAY, help="Last UTC day, included.")
def reaggregate(start: date, end: date) -> None:
    """Recompute the aggregates and manifest counts of [START, END] from CouchDB alone (no
    request to KPIggybank); then `kpi build-site` publishes them."""
    from kpi.days import days_between
    from kpi.ingest import reaggregate_day

    if end < start:
        raise click.BadParameter("--end is before --start")
    settings = _settings()

    def run() -> list:
        from kpi.couch import AGGREGATES, MANIFESTS, QUARANTINE, RAW, CouchStore

        CouchStore(settings).require_databases((RAW, QUARANTINE, MANIFESTS, AGGREGATES))
        return [reaggregate_day(day, settings) for day in days_between(start, end)]

    done = [quality for quality in _fail_cleanly(run) if quality is not None]
    click.echo(f"{plural(len(done), 'day')} re-aggregated from CouchDB "
               f"({plural(sum(q['aggregated'] for q in done), 'blob')})")


@main.command("restore-removed")
@click.option("--start", required=True, type=DAY, help="First UTC day (YYYY-MM-DD).")
@click.option("--end", required=True, type=DAY, help="Last UTC day, included.")
def restore_removed(start: date, end: date) -> None:
    """Put the rows restatements removed from [START, END] back from <prefix>_removed, and
    re-aggregate those days."""
    from kpi.days import days_between
    from kpi.ingest import restore_removed_day

    if end < start:
        raise click.BadParameter("--end is before --start")
    settings = _settings()
    results = _fail_cleanly(lambda: [restore_removed_day(day, settings)
                                     for day in days_between(start, end)])
    for result in results:
        if result["restored"] or result["kept"]:
            click.echo(f"{result['day']}: {plural(result['restored'], 'row')} restored"
                       + (f", {result['kept']} kept in _removed (a newer row of the same id is "
                          "stored)" if result["kept"] else ""))
    restored = sum(r["restored"] for r in results)
    click.echo(f"{plural(restored, 'row')} restored; run `kpi build-site` to publish")


@main.command("build-site")
@click.option("--start", type=DAY, default=None, help="First UTC day shown (default: all).")
@click.option("--end", type=DAY, default=None, help="Last UTC day shown, included.")
@click.option("--allow-empty", is_flag=True,
              help="Replace a site that shows days even when no aggregates are found.")
def build_site(start: date | None, end: date | None, allow_empty: bool) -> None:
    """Rebuild the static site from the aggregates stored in CouchDB."""
    from kpi.publish import build_site as build

    if start and end and end < start:
        raise click.BadParameter("--end is before --start")
    click.echo(_fail_cleanly(build, _settings(), None, None, start, end, allow_empty))


@main.command()
@click.option("--port", default=3434, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--dir", "site_dir", type=click.Path(path_type=Path), default=None,
              help="Folder to serve (default: KPI_SITE_DIR).")
def serve(port: int, host: str, site_dir: Path | None) -> None:
    """Serve the static site over HTTP."""
    from kpi.serve import ServeError, make_server

    folder = site_dir or _settings().site_dir
    try:
        server = make_server(folder, host, port)
    except ServeError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    click.echo(f"serving {folder} on http://{host}:{port}/")
    with server:
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass


@main.command("fake-source")
@click.option("--port", default=3435, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--seed", default=1, show_default=True, help="Seed of the generated history.")
@click.option("--per-day", default=1000, show_default=True, help="Mean blobs per day.")
@click.option("--days", default=30, show_default=True, help="Days of history, ending --last-day.")
@click.option("--last-day", type=DAY, default=None,
              help="Last day of history (default: yesterday).")
@click.option("--bad-rate", default=0.002, show_default=True, help="Share of malformed blobs.")
@click.option("--fault-rate", default=0.0, show_default=True,
              help="Share of range requests answered with an injected fault.")
@click.option("--outage-day", "outage_days", type=DAY, multiple=True,
              help="A day of which 90% of the blobs are missing (repeatable).")
def fake_source(port: int, host: str, seed: int, per_day: int, days: int,
                last_day: date | None, bad_rate: float, fault_rate: float,
                outage_days: tuple[date, ...]) -> None:
    """Run a fake KPIggybank with seeded, deterministic history."""
    from fake_source import create_app
    from fake_source.server import serve as serve_app

    app = create_app(seed=seed, per_day=per_day, days=days, last_day=last_day,
                     bad_rate=bad_rate, fault_rate=fault_rate, outage_days=outage_days)
    click.echo(f"fake KPIggybank on http://{host}:{port}/wsapi/interaction_data")
    serve_app(app, host, port)


@main.command()
@click.option("--port", default=5984, show_default=True)
@click.option("--dir", "data_dir", type=click.Path(path_type=Path),
              default=Path(".devdata/couchdb"), show_default=True, help="Data folder.")
@click.option("--in-memory", is_flag=True, help="Keep nothing on disk.")
def couchdb(port: int, data_dir: Path, in_memory: bool) -> None:
    """Run the development CouchDB (pouchdb-server) until interrupted."""
    from kpi.devserver import start_dev_couchdb, stop_process

    def stop(signum, frame):  # TERM or HUP (a supervisor, a closed terminal): stop the server too
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)  # before the start: it stops a half-started server too
    signal.signal(signal.SIGHUP, stop)
    try:
        process = start_dev_couchdb(port, None if in_memory else data_dir.resolve())
    except KeyboardInterrupt:
        return
    click.echo(f"dev CouchDB on http://127.0.0.1:{port}/ (pid {process.pid})")
    try:
        process.wait()
    except KeyboardInterrupt:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second signal must not orphan it
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        stop_process(process)


if __name__ == "__main__":
    main()
