"""Refused restatements as the site publishes them (`data/refusals.csv`, the Data quality page).

A restatement that would remove too many of a stored day's rows is refused (SPEC D13,
`kpi.snapshot.close_snapshot`): nothing of the day changes but its manifest, which records the
refusal under `refused`; the day's next successful restatement writes its manifest without it.
So the refusals a build publishes are exactly the manifests that carry `refused` when it reads
them, one row per day.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable
from datetime import date

import orjson

from kpi.couch import MANIFESTS, CouchStore
from kpi.days import day_keys
from kpi.formats import format_number

COLUMNS = ("day", "stored", "fetched", "would_remove", "max_removed", "at")
MANIFEST_FIELDS = ["day", "refused"]  # what a build reads of a refused day's manifest


def refusals_of(manifests: Iterable[dict]) -> list[dict]:
    """One row per refused day, newest day first: `COLUMNS` and the refusing `run`.

    Args:
        manifests: manifest documents (at least `_id` or `day`, and `refused`); those without
            `refused` are left out. A value missing from an odd refusal, or not a number where
            one belongs, is None (published empty), never a made-up 0.
    """
    rows = []
    for manifest in manifests:
        refused = manifest.get("refused")
        if not isinstance(refused, dict):
            continue
        rows.append({"day": str(manifest.get("day") or manifest["_id"]),
                     **{key: _count(refused.get(key))
                        for key in ("stored", "fetched", "would_remove")},
                     "max_removed": _share(refused.get("max_removed")),
                     "at": _text(refused.get("at")), "run": _text(refused.get("run"))})
    return sorted(rows, key=lambda row: row["day"], reverse=True)


def refusals_csv(refusals: list[dict]) -> str:
    """`data/refusals.csv`: `COLUMNS`, newest day first (header only when none)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(COLUMNS)
    writer.writerows([row["day"], *("" if row[key] is None else format_number(row[key])
                                    for key in COLUMNS[1:-1]), row["at"] or ""]
                     for row in refusals)
    return out.getvalue()


def refusals_json(refusals: list[dict]) -> bytes:
    """`data/refusals.json`: an array of objects with the CSV's keys (null where empty)."""
    return orjson.dumps([{key: row[key] for key in COLUMNS} for row in refusals])


def _count(value: object) -> int | None:
    """A count of a refusal as an int; None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    return int(value) if isinstance(value, float) and value.is_integer() else None


def _share(value: object) -> float | None:
    """The share `max_removed` as a float; None when it is not a finite number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        share = float(value)
    except OverflowError:  # an int beyond a double
        return None
    return share if math.isfinite(share) else None


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def load_refusals(store: CouchStore, start: date | None = None,
                  end: date | None = None) -> list[dict]:
    """The refused restatements of [start, end] (every day when None) that the days'
    manifests record now, newest day first (`refusals_of`): one `_find` on the
    manifests database, one small document per day."""
    first, after = day_keys(start, end)
    days = {"$gte": first} | ({"$lt": after} if after is not None else {})
    return refusals_of(store.find(MANIFESTS, {"_id": days, "refused": {"$exists": True}},
                                  MANIFEST_FIELDS))
