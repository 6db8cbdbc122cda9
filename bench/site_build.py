"""Benchmark the fixed cost of a site build: `kpi build-site` from stored aggregates, each run a
fresh Python process, as every backfill and nightly publish is. Prints figures; asserts nothing.

    .venv/bin/python bench/site_build.py [--days 30] [--per-day 1000] [--runs 5]
                                         [--couchdb-url URL] [--code DIR ...]

Steps:
1. Setup, untimed: a fake KPIggybank (its own process) serves `--days` days of about
   `--per-day` blobs; `kpi.backfill.backfill` stores and aggregates them into databases with a
   fresh prefix and publishes the site once (which also keeps the Vega bundle in
   `~/.cache/kpi/`, as any earlier build would have).
2. Wall time of `python -m kpi.cli build-site` (interpreter start to exit), median of `--runs`
   runs, the scenarios interleaved:
   - `unchanged`: the caches the previous build left beside the site (the build cache, and the
     chart templates where the code keeps them): a nightly publish after a night that changed
     nothing, all fixed cost;
   - `no build cache`: the build cache removed first (every day read, reported and formatted
     again), chart templates kept;
   - `cold`: every cache beside the site removed first (as the first build of a new version).
3. Breakdown: one more `unchanged` build in a fresh process under cProfile: the imports the
   command needs, then the cumulative time of the steps of a build (profiled, so each is
   somewhat inflated), and whether Altair was imported at all.

`--code DIR` (repeatable; default: this checkout) builds with the `kpi` of another checkout
(e.g. `git worktree add /tmp/main main`), each with its own site folder, all from the same
stored aggregates, the runs interleaved: a before/after on a shared machine.

Default server: a fresh in-memory dev CouchDB (pouchdb-server); `--couchdb-url` for another
(its databases get a unique prefix and are deleted at the end).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date, timedelta
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
LAST_DAY = date(2026, 10, 7)

# Run in the child process: imports timed, then one build profiled.
PROBE = r"""
import cProfile, json, pstats, sys, time
start = time.perf_counter()
import kpi.cli
from kpi.settings import Settings
from kpi.publish import build_site
imported = time.perf_counter()
settings = Settings.from_env()
profile = cProfile.Profile()
profile.enable()
build_site(settings)
profile.disable()
built = time.perf_counter()
stats = pstats.Stats(profile).stats
cumulative = {}
for (path, line, name), (_, _, _, cum, _) in stats.items():
    if "/kpi/" in path:
        key = f"{path.rsplit('/kpi/', 1)[-1]}:{name}"
        cumulative[key] = max(cumulative.get(key, 0.0), cum)
print(json.dumps({"imports": imported - start, "build": built - imported,
                  "cumulative": cumulative, "altair": "altair" in sys.modules,
                  "vl_convert": "vl_convert" in sys.modules}))
"""

# The steps of a build the breakdown shows (those the code at hand has), by file:function.
STEPS = (
    ("buildcache.py:update", "  buildcache.update (changed days)"),
    ("site.py:render_site", "  render_site"),
    ("site.py:page_config", "    page_config (13 pages)"),
    ("site.py:_page_specs", "      chart templates, per page"),
    ("chartcache.py:page", "      chart templates, per page"),
    ("site.py:overview_config", "    overview_config"),
    ("chartcache.py:overview", "      chart templates, overview"),
    ("chartcache.py:__init__", "    chart templates read (ChartTemplates)"),
    ("chartcache.py:save", "    chart templates kept (ChartTemplates.save)"),
    ("charts.py:spec", "    Altair to_dict (templates made)"),
    ("anomalies.py:detect_anomalies", "    detect_anomalies"),
    ("views.py:headline_tiles", "    headline_tiles"),
    ("views.py:view_files", "    view_files"),
    ("changes.py:compare", "    changes.compare"),
    ("changes.py:archive", "    changes.archive"),
    ("site.py:vega_bundle", "    vega_bundle (read from ~/.cache/kpi)"),
    ("site.py:asset_version", "    asset_version"),
)


def build_env(settings, site_dir: Path, code: Path) -> dict[str, str]:
    """The environment of a build of `site_dir` with the `kpi` of the checkout `code`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("KPI_")}
    env.update(KPI_COUCHDB_URL=settings.couchdb_url, KPI_DB_PREFIX=settings.db_prefix,
               KPI_SITE_DIR=str(site_dir), KPI_SOURCE_URL=settings.source_url,
               PYTHONPATH=str(code))
    return env


def caches_beside(site_dir: Path) -> list[Path]:
    """Every cache a build keeps beside the site (`.<site>.cache`, and any other
    `.<site>.<kind>` file but the builds folder)."""
    return [path for path in site_dir.parent.glob(f".{site_dir.name}.*")
            if path.name != f".{site_dir.name}.builds" and not path.is_dir()]


def timed_build(env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "kpi.cli", "build-site"], env=env,
                   cwd=env["PYTHONPATH"], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def breakdown(env: dict[str, str], site_dir: Path) -> None:
    """Print where one `unchanged` build in a fresh process spends its time."""
    timed_build(env)  # warm: the breakdown is of an `unchanged` build
    probe = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=env["PYTHONPATH"],
                           check=True, capture_output=True, text=True)
    result = json.loads(probe.stdout.strip().splitlines()[-1])
    print(f"\nbreakdown of one `unchanged` build (fresh process), {env['PYTHONPATH']}:")
    print(f"  imports (kpi.cli, kpi.publish)         {result['imports']:6.2f} s")
    print(f"  build_site, under cProfile             {result['build']:6.2f} s")
    shown = set()
    for key, label in STEPS:
        if key in result["cumulative"] and label not in shown:
            shown.add(label)
            print(f"  {label:<46} {result['cumulative'][key]:6.3f} s")
    print(f"  Altair imported: {result['altair']}; vl_convert imported: {result['vl_convert']}")
    print("  caches beside the site: "
          + ", ".join(sorted(path.name for path in caches_beside(site_dir))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30, help="days of stored aggregates")
    parser.add_argument("--per-day", type=int, default=1000, help="blobs a day")
    parser.add_argument("--runs", type=int, default=5, help="runs per scenario (median)")
    parser.add_argument("--couchdb-url", default="")
    parser.add_argument("--code", type=Path, action="append",
                        help="a checkout whose kpi builds (repeatable; default: this one)")
    args = parser.parse_args()
    codes = [path.resolve() for path in args.code or [ROOT]]

    from kpi.backfill import backfill
    from kpi.devserver import free_port, start_dev_couchdb, stop_process, wait_for_http
    from kpi.settings import Settings

    couch = None
    url = args.couchdb_url.rstrip("/")
    if not url:
        port = free_port()
        couch = start_dev_couchdb(port)
        url = f"http://127.0.0.1:{port}"
    first = LAST_DAY - timedelta(days=args.days - 1)
    source_port = free_port()
    source = subprocess.Popen(
        [sys.executable, "-m", "kpi.cli", "fake-source", "--port", str(source_port), "--days",
         str(args.days), "--per-day", str(args.per_day), "--last-day", LAST_DAY.isoformat()],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
    )
    prefix = f"sitebench{uuid.uuid4().hex[:8]}"
    workdir = Path(tempfile.mkdtemp(prefix="kpi-site-build-"))
    try:
        wait_for_http(f"http://127.0.0.1:{source_port}/wsapi/ping", source)
        settings = Settings(
            source_url=f"http://127.0.0.1:{source_port}/wsapi/interaction_data",
            couchdb_url=url, db_prefix=prefix, site_dir=workdir / "site0", http_timeout=600.0,
        )
        start = time.perf_counter()
        backfill(first, LAST_DAY, settings, progress=False, parallel=2)
        print(f"setup: {args.days} days of about {args.per_day:,} blobs stored, aggregated "
              f"and published in {time.perf_counter() - start:.1f} s (untimed)")
        from kpi.buildcache import cache_path

        sites = {code: workdir / f"site{n}" for n, code in enumerate(codes)}
        envs = {code: build_env(settings, sites[code], code) for code in codes}
        for env in envs.values():
            timed_build(env)  # leaves every cache the code keeps, whatever it is
        scenarios = ("unchanged", "no build cache", "cold")
        times = {(code, scenario): [] for code in codes for scenario in scenarios}
        for _ in range(args.runs):
            for code, env in envs.items():
                times[code, "unchanged"].append(timed_build(env))
                cache_path(sites[code]).unlink(missing_ok=True)
                times[code, "no build cache"].append(timed_build(env))
                for path in caches_beside(sites[code]):
                    path.unlink()
                times[code, "cold"].append(timed_build(env))
        print(f"\n`python -m kpi.cli build-site`, {args.days} days, wall time of a fresh "
              f"process, median of {args.runs} (min–max):")
        for code in codes:
            print(f"  {code}")
            for scenario in scenarios:
                values = times[code, scenario]
                print(f"    {scenario:<15} {statistics.median(values):6.2f} s "
                      f"({min(values):.2f}–{max(values):.2f})")
        for code, env in envs.items():
            breakdown(env, sites[code])
        with httpx.Client(timeout=600) as client:
            for name in client.get(f"{url}/_all_dbs").json():
                if name.startswith(prefix):
                    client.delete(f"{url}/{name}").raise_for_status()
    finally:
        stop_process(source)
        if couch is not None:
            stop_process(couch)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
