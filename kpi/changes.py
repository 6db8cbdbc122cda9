"""What changed since the last build (`data/changes.csv`, the Changes page) and the archive of
the last builds' data files (`archive/<build id>/`).

The comparison is **data-only**: it compares the report CSV files the new build publishes
(every `data/<report>.csv` whose header is `REPORT_COLUMNS`) with those of the previous build,
the folder `KPI_SITE_DIR` linked to before the swap. Rows are keyed by (date, report,
segmentation, segment, measure) and only their `value` is compared, as the CSV writes it (its
text): a ratio whose numerator and denominator changed but whose value did not is no change for
a reader who quoted it. Build time, build id, manifest, view files and pages are ignored, so
two builds of the same data report no change, and an incremental build and a build from
scratch that follow the same previous build publish the same changes. A value that changed,
appeared (old empty) or disappeared (new empty) is one row; rows are sorted by the five key
columns in code-point order, like the other files. No previous build (or one without report
files): the header only.

A build of a range of days (`kpi build-site --start/--end`, its manifest's `range`) shows only
those days, so it is compared over them alone (the other days are neither new nor gone). The
build after it compares each day with what was published last *for that day*: the range
build's rows inside its range, and outside it those of the builds before it (read from its
archive, newest first, down to the last build of every day); so a full build after a range
build reports only real changes, not every other day as new.

The archive keeps the data files (`data/*.csv`, `data/*.json`, including `manifest.json` and
`changes.csv`; not the view files nor the pages) of the last `ARCHIVE_BUILDS` builds, this one
included, *and* of the last build of each of the last `ARCHIVE_DAYS` UTC days (this build's day
and the 13 before, by `built_at`), and the newest build of every day (not a range build: the
next build reads its changes against it), under `archive/<build id>/data/`, newest first in
`archive/index.json`. So a catch-up of many runs in one night does not push the previous
nights' files out. A build takes the previous build's archives (hard links: no copy, no extra
space; a copy across file systems) and drops the rest: the archive rotates.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import orjson

from kpi.reports import REPORT_COLUMNS

log = logging.getLogger(__name__)

CHANGES = "changes"  # data/changes.csv, data/changes.json, changes.html
CHANGE_COLUMNS = ["date", "report", "segmentation", "segment", "measure", "old_value",
                  "new_value"]
ARCHIVE = "archive"
ARCHIVE_BUILDS = 14  # the last builds kept in the archive
ARCHIVE_DAYS = 14  # and the last build of each of the last days
_HEADER = ",".join(REPORT_COLUMNS)
_SAFE_ID = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]*$")  # a build id that is a safe folder name


@dataclass(frozen=True)
class Change:
    date: str
    report: str
    segmentation: str
    segment: str
    measure: str
    old_value: str  # "" when the value appeared
    new_value: str  # "" when the value disappeared


@dataclass(frozen=True)
class Changes:
    """What a build changed: the rows, and the days the previous build had and this one has."""

    rows: list[Change]
    previous_build: str | None  # None: no previous build to compare with
    old_days: frozenset[str]
    new_days: frozenset[str]
    scope: tuple[str | None, str | None] | None = None  # a range build's [start, end]


def _report_texts(data_dir: Path) -> dict[str, str]:
    """Each report CSV of `data_dir` (header `REPORT_COLUMNS`) as its text, header dropped."""
    reports = {}
    if not data_dir.is_dir():
        return reports
    for path in sorted(data_dir.glob("*.csv")):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("cannot compare %s: %s", path, exc)
            continue
        header, _, body = text.partition("\n")
        if header == _HEADER:
            reports[path.stem] = body
    return reports


def _days(data_dir: Path, texts: dict[str, str]) -> frozenset[str]:
    """The days a build published: its manifest's day ranges, else the days of its files."""
    try:
        ranges = orjson.loads((data_dir / "manifest.json").read_bytes())["days"]
        return frozenset(str(first + timedelta(n))
                         for first, last in ((date.fromisoformat(a), date.fromisoformat(b))
                                             for a, b in ranges)
                         for n in range((last - first).days + 1))
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return frozenset(line[:10] for text in texts.values() for line in _lines(text))


def _lines(text: str) -> list[str]:
    """The CSV's lines: split on its `\n` line ends only (`str.splitlines` would also split a
    segment name at characters such as U+2028 or U+0085)."""
    return [line for line in text.split("\n") if line]


def _rows(lines: set[str]) -> dict[tuple[str, str, str, str], str]:
    """The (date, segmentation, segment, measure) → value text of the CSV lines."""
    return {tuple(row[:4]): row[4] for row in csv.reader(sorted(lines)) if len(row) >= 5}


def _manifest(data_dir: Path) -> dict:
    try:
        manifest = orjson.loads((data_dir / "manifest.json").read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def _build_id(build: Path) -> str | None:
    build_id = _manifest(build / "data").get("build_id")
    return build_id if isinstance(build_id, str) else None


Scope = tuple[str | None, str | None]  # the days [start, end] a range build shows (None: open)


def scope_of(data_dir: Path) -> Scope | None:
    """The range of days the build of `data_dir` was asked for (its manifest's `range`), or None
    for a build of every stored day (also when the manifest predates `range`)."""
    scope = _manifest(data_dir).get("range")
    if (isinstance(scope, list) and len(scope) == 2
            and all(d is None or isinstance(d, str) for d in scope)):
        return scope[0], scope[1]
    return None


def _in_scope(day: str, scope: Scope) -> bool:
    start, end = scope
    return (start is None or day >= start) and (end is None or day <= end)


def _keep_days(text: str, keep: Callable[[str], bool]) -> str:
    """The CSV body's lines whose day (the first column) `keep` accepts."""
    return "".join(f"{line}\n" for line in _lines(text) if keep(line[:10]))


def _archived(build: Path) -> list[Path]:
    """The data folders of the builds archived before `build`, newest first."""
    try:
        index = orjson.loads((build / ARCHIVE / "index.json").read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return []
    own = _build_id(build)
    return [build / ARCHIVE / entry["build_id"] / "data"
            for entry in index if isinstance(index, list) and isinstance(entry, dict)
            and isinstance(entry.get("build_id"), str) and entry["build_id"] != own
            and _SAFE_ID.fullmatch(entry["build_id"])]


def _last_published(previous: Path) -> tuple[dict[str, str], frozenset[str]]:
    """The report rows and days last published for each day, as of the build `previous`: its
    own, and when it showed a range only, the rows of the builds before it for the days outside
    it (newest build first, down to a build of every day)."""
    texts: dict[str, str] = {}
    days: set[str] = set()
    covered: list[Scope] = []  # the ranges of the newer builds already read
    for data_dir in [previous / "data", *_archived(previous)]:
        if not data_dir.is_dir():
            continue
        build_texts = _report_texts(data_dir)
        build_days = _days(data_dir, build_texts)
        if covered:
            def newer(day: str) -> bool:
                return any(_in_scope(day, scope) for scope in covered)
            build_texts = {report: _keep_days(text, lambda day: not newer(day))
                           for report, text in build_texts.items()}
            build_days = frozenset(day for day in build_days if not newer(day))
        for report, text in build_texts.items():
            texts[report] = texts.get(report, "") + text
        days |= build_days
        scope = scope_of(data_dir)
        if scope is None:
            break
        covered.append(scope)
    return texts, frozenset(days)


def compare(previous: Path | None, target: Path) -> Changes:
    """The changes between the report files last published for each day, as of the build
    `previous` (None: no previous build; see `_last_published`), and those of `target`, both
    site folders; over the target's range only when it is a range build. Only the lines that
    differ are parsed, so an unchanged history costs a set difference."""
    new = _report_texts(target / "data")
    new_days = _days(target / "data", new)
    scope = scope_of(target / "data")
    if previous is None or not (previous / "data").is_dir():
        return Changes([], None, frozenset(), new_days, scope)
    old, old_days = _last_published(previous)
    if scope is not None:
        old = {report: _keep_days(text, lambda day: _in_scope(day, scope))
               for report, text in old.items()}
        old_days = frozenset(day for day in old_days if _in_scope(day, scope))
    rows = []
    for report in sorted(set(old) | set(new)):
        if old.get(report) == new.get(report):  # the usual case: nothing to parse
            continue
        old_lines = set(_lines(old.get(report, "")))
        new_lines = set(_lines(new.get(report, "")))
        before, after = _rows(old_lines - new_lines), _rows(new_lines - old_lines)
        for key in before.keys() | after.keys():
            old_value, new_value = before.get(key, ""), after.get(key, "")
            if old_value != new_value or (key in before) != (key in after):
                day, segmentation, segment, measure = key
                rows.append(Change(day, report, segmentation, segment, measure, old_value,
                                   new_value))
    rows.sort(key=lambda c: (c.date, c.report, c.segmentation, c.segment, c.measure))
    return Changes(rows, _build_id(previous) or previous.name, old_days, new_days, scope)


def write_changes(data_dir: Path, changes: Changes) -> None:
    """`data/changes.csv` (values as the report CSVs write them; empty: absent) and its twin
    `data/changes.json` (an array of objects with the same keys; an absent value is null)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(CHANGE_COLUMNS)
    writer.writerows([c.date, c.report, c.segmentation, c.segment, c.measure, c.old_value,
                      c.new_value] for c in changes.rows)
    (data_dir / f"{CHANGES}.csv").write_text(out.getvalue(), encoding="utf-8", newline="")
    records = [{"date": c.date, "report": c.report, "segmentation": c.segmentation,
                "segment": c.segment, "measure": c.measure, "old_value": c.old_value or None,
                "new_value": c.new_value or None} for c in changes.rows]
    (data_dir / f"{CHANGES}.json").write_bytes(orjson.dumps(records))


@dataclass(frozen=True)
class ReportDisplay:
    """How a report's page shows its values: its tab label, rates as percentages, and what its
    `value` measure is called (the page's axis title)."""

    label: str
    percent: bool = False
    value_name: str = "value"


def value_text(text: str, percent: bool, decimals: int | None = None) -> str:
    """A published value as its report page shows it: 53.27% (rates, as their tooltips), 1,234,
    2.50 (`decimals`, default `decimals_of(text)`); a dash when absent; the text itself when it
    is not a number."""
    value = _number(text)
    if value is None:
        return text or "—"
    if percent:
        return f"{100 * value:.2f}%"
    return _grouped(value, decimals_of(text) if decimals is None else decimals)


def decimals_of(*texts: str) -> int:
    """The decimals a row of values is shown with: none for whole numbers (counts), else
    `DECIMALS` (means, as 2.50), or 4 where `DECIMALS` would show two different values alike."""
    values = [v for v in map(_number, texts) if v is not None]
    if all(v.is_integer() for v in values):
        return 0
    if len({round(v, DECIMALS) for v in values}) < len(set(values)):
        return 4
    return DECIMALS


def delta_text(old: str, new: str, percent: bool) -> str:
    """new − old as a reader compares them: points for rates, a count's difference and its
    relative change; `new` or `removed` when the value appeared or disappeared."""
    if not old or not new:
        return "removed" if old else "new"
    before, after = _number(old), _number(new)
    if before is None or after is None:
        return "—"
    if percent:
        return f"{100 * (after - before):+.2f} pts"
    difference = _grouped(after - before, decimals_of(old, new))
    sign = "" if difference.startswith("-") else "+"
    relative = f" ({(after - before) / before:+.1%})" if before else ""
    return f"{sign}{difference}{relative}"


DECIMALS = 2  # a value that is not whole (a mean of sites): 2.50, as the overview's precision


def _number(text: str) -> float | None:
    """The finite number a CSV cell writes, else None (empty, not a number, infinite)."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _grouped(value: float, decimals: int) -> str:
    """1,234 or 2.50: digits grouped, `decimals` decimals (a whole number without any)."""
    if decimals == 0 and value.is_integer():
        return f"{int(value):,}"
    return f"{value:,.{decimals}f}"


def page_context(changes: Changes, reports: dict[str, ReportDisplay],
                 measure_labels: dict[str, str] | None = None, limit: int = 500) -> dict:
    """What the Changes page shows: restated days (newest first) with at most `limit` changed
    values in all, formatted as the report pages show them (`reports`: each report's display,
    in the site's order of pages; `measure_labels`: the names the pages give measures, such as
    the data quality ones, in their order), the days new in this build, the days no longer
    published. A day's values follow the reports' order, then Total before the segments, then
    the measures' order."""
    measure_labels = measure_labels or {}
    added = sorted(changes.new_days - changes.old_days, reverse=True) if changes.previous_build \
        else []
    gone = sorted(changes.old_days - changes.new_days, reverse=True)
    whole = set(added) | set(gone)
    by_day: dict[str, list[Change]] = {}
    for change in changes.rows:
        if change.date not in whole:
            by_day.setdefault(change.date, []).append(change)

    pages = {report: n for n, report in enumerate(reports)}  # the site's order of pages
    measures = {measure: n for n, measure in enumerate(measure_labels)}

    def display(report: str) -> ReportDisplay:
        return reports.get(report, ReportDisplay(report))

    def order(change: Change) -> tuple:
        """The report's page, Total first, the segment, the measure in its labels' order."""
        return (pages.get(change.report, len(pages)), display(change.report).label,
                change.segmentation != "Total", change.segmentation, change.segment,
                measures.get(change.measure, len(measures)), change.measure)

    def shown(change: Change) -> dict:
        report = display(change.report)
        measure = (report.value_name if change.measure == "value"
                   else measure_labels.get(change.measure, change.measure))
        decimals = decimals_of(change.old_value, change.new_value)
        return {**vars(change), "report_label": report.label, "measure_label": measure,
                "segment_label": "Total" if change.segmentation == "Total"
                else f"{change.segmentation}: {change.segment}",
                "old_text": value_text(change.old_value, report.percent, decimals),
                "new_text": value_text(change.new_value, report.percent, decimals),
                "delta_text": delta_text(change.old_value, change.new_value, report.percent)}

    restated, count = [], 0
    for day in sorted(by_day, reverse=True):
        day_rows = sorted(by_day[day], key=order)
        rows = day_rows[:max(0, limit - count)]
        count += len(rows)
        restated.append({
            "date": day, "count": len(day_rows), "hidden": len(day_rows) - len(rows),
            "reports": list(dict.fromkeys(display(c.report).label for c in day_rows)),
            "rows": [shown(c) for c in rows],
        })
    return {"previous_build": changes.previous_build, "restated": restated,
            "added_days": added, "removed_days": gone, "change_count": len(changes.rows),
            "limit": limit, "hidden": sum(day["hidden"] for day in restated),
            "scope": changes.scope}


def _link_or_copy(source: Path, destination: Path) -> None:
    try:
        os.link(source, destination)
    except OSError:  # another file system, or links not allowed: a copy
        shutil.copy2(source, destination)


def _data_files(data_dir: Path) -> list[Path]:
    return sorted(p for p in data_dir.iterdir()
                  if p.suffix in (".csv", ".json") and p.is_file() and not p.is_symlink())


def _day_of(built_at: object) -> date | None:
    """The UTC day of a manifest's `built_at` (`2026-10-04T06:00:00Z`), None when it has none."""
    try:
        return date.fromisoformat(str(built_at)[:10])
    except ValueError:
        return None


def archive(target: Path, previous: Path | None, keep: int = ARCHIVE_BUILDS,
            days: int = ARCHIVE_DAYS) -> list[dict]:
    """Write `target/archive/`: this build's data files and those of the previous build's
    archives (its own included): the newest `keep` builds, the newest build of each of the
    last `days` UTC days (this build's day and the ones before, by `built_at`) and the newest
    build of every day (not a range build: the next build's changes are read against it); and
    `archive/index.json`, the builds newest first (`build_id`, `built_at`, `path`). Returns
    that index."""
    sources: list[tuple[dict, Path]] = []
    manifest = orjson.loads((target / "data" / "manifest.json").read_bytes())
    sources.append(({"build_id": manifest["build_id"], "built_at": manifest["built_at"]},
                    target / "data"))
    if previous is not None:
        try:
            earlier = orjson.loads((previous / ARCHIVE / "index.json").read_bytes())
        except (OSError, orjson.JSONDecodeError):
            earlier = []
        own = _build_id(previous)
        if own and not any(isinstance(e, dict) and e.get("build_id") == own for e in earlier):
            try:  # a build made before archives existed: archived from its own data files
                built_at = orjson.loads((previous / "data" / "manifest.json").read_bytes()).get(
                    "built_at")
            except (OSError, orjson.JSONDecodeError):
                built_at = None
            sources.append(({"build_id": own, "built_at": built_at}, previous / "data"))
        for entry in earlier if isinstance(earlier, list) else []:
            build_id = entry.get("build_id") if isinstance(entry, dict) else None
            if isinstance(build_id, str):
                sources.append(({"build_id": build_id, "built_at": entry.get("built_at")},
                                previous / ARCHIVE / build_id / "data"))
    today = _day_of(manifest["built_at"])
    index, seen, nights = [], set(), set()
    full_kept = False  # the newest build of every day: what range builds are compared against
    for entry, data_dir in sources:
        build_id = entry["build_id"]
        if build_id in seen or not _SAFE_ID.fullmatch(build_id) or not data_dir.is_dir():
            continue
        seen.add(build_id)
        day = _day_of(entry["built_at"])
        last_of_its_day = (day is not None and today is not None and day not in nights
                           and timedelta(0) <= today - day < timedelta(days))
        if day is not None:
            nights.add(day)  # sources run newest first: the day's first is its last build
        full = scope_of(data_dir) is None
        if len(index) >= keep and not last_of_its_day and not (full and not full_kept):
            continue
        full_kept = full_kept or full
        folder = target / ARCHIVE / build_id / "data"
        folder.mkdir(parents=True)
        for path in _data_files(data_dir):
            _link_or_copy(path, folder / path.name)
        index.append({**entry, "path": f"{ARCHIVE}/{build_id}/"})
    (target / ARCHIVE / "index.json").write_bytes(orjson.dumps(index, option=orjson.OPT_INDENT_2))
    return index
