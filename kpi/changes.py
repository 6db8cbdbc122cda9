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

The archive keeps the data files (`data/*.csv`, `data/*.json`, including `manifest.json` and
`changes.csv`; not the view files nor the pages) of the last `ARCHIVE_BUILDS` builds, this one
included, under `archive/<build id>/data/`, newest first in `archive/index.json`. A build takes
the previous build's archives (hard links: no copy, no extra space; a copy across file systems)
and drops the oldest beyond `ARCHIVE_BUILDS`: the archive rotates.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
import shutil
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
ARCHIVE_BUILDS = 14
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


def _build_id(build: Path) -> str | None:
    try:
        build_id = orjson.loads((build / "data" / "manifest.json").read_bytes()).get("build_id")
    except (OSError, orjson.JSONDecodeError, AttributeError):
        return None
    return build_id if isinstance(build_id, str) else None


def compare(previous: Path | None, target: Path) -> Changes:
    """The changes between the report files of the build `previous` (None: no previous build)
    and those of `target`, both site folders. Only the lines that differ are parsed, so an
    unchanged history costs a set difference."""
    new = _report_texts(target / "data")
    new_days = _days(target / "data", new)
    if previous is None or not (previous / "data").is_dir():
        return Changes([], None, frozenset(), new_days)
    old = _report_texts(previous / "data")
    old_days = _days(previous / "data", old)
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
    return Changes(rows, _build_id(previous) or previous.name, old_days, new_days)


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


def page_context(changes: Changes, labels: dict[str, str], limit: int = 500) -> dict:
    """What the Changes page shows: restated days (newest first) with at most `limit` changed
    values in all, the days new in this build, the days no longer published."""
    added = sorted(changes.new_days - changes.old_days, reverse=True) if changes.previous_build \
        else []
    gone = sorted(changes.old_days - changes.new_days, reverse=True)
    whole = set(added) | set(gone)
    by_day: dict[str, list[Change]] = {}
    for change in changes.rows:
        if change.date not in whole:
            by_day.setdefault(change.date, []).append(change)
    restated, shown = [], 0
    for day in sorted(by_day, reverse=True):
        day_rows = by_day[day]
        rows = day_rows[:max(0, limit - shown)]
        shown += len(rows)
        restated.append({
            "date": day, "count": len(day_rows), "hidden": len(day_rows) - len(rows),
            "reports": sorted({labels.get(c.report, c.report) for c in day_rows}),
            "rows": [{**vars(c), "report_label": labels.get(c.report, c.report)}
                     for c in rows],
        })
    return {"previous_build": changes.previous_build, "restated": restated,
            "added_days": added, "removed_days": gone, "change_count": len(changes.rows),
            "limit": limit, "hidden": sum(day["hidden"] for day in restated)}


def _link_or_copy(source: Path, destination: Path) -> None:
    try:
        os.link(source, destination)
    except OSError:  # another file system, or links not allowed: a copy
        shutil.copy2(source, destination)


def _data_files(data_dir: Path) -> list[Path]:
    return sorted(p for p in data_dir.iterdir()
                  if p.suffix in (".csv", ".json") and p.is_file() and not p.is_symlink())


def archive(target: Path, previous: Path | None, keep: int = ARCHIVE_BUILDS) -> list[dict]:
    """Write `target/archive/`: this build's data files and those of the previous build's
    archives (its own included), the newest `keep` builds; and `archive/index.json`, the
    builds newest first (`build_id`, `built_at`, `path`). Returns that index."""
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
    index, seen = [], set()
    for entry, data_dir in sources:
        build_id = entry["build_id"]
        if build_id in seen or not _SAFE_ID.fullmatch(build_id) or not data_dir.is_dir():
            continue
        seen.add(build_id)
        folder = target / ARCHIVE / build_id / "data"
        folder.mkdir(parents=True)
        for path in _data_files(data_dir):
            _link_or_copy(path, folder / path.name)
        index.append({**entry, "path": f"{ARCHIVE}/{build_id}/"})
        if len(index) == keep:
            break
    (target / ARCHIVE / "index.json").write_bytes(orjson.dumps(index, option=orjson.OPT_INDENT_2))
    return index
