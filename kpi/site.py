"""Site: reports → data files, view files, Altair charts and Jinja2 pages in `KPI_SITE_DIR`.

It renders files into a folder only: it never reads CouchDB (`kpi.publish.build_site` loads
the aggregates and renders into a new build that `kpi.sitedir` swaps in), and `kpi.serve`
hosts the published site. The Vega libraries are vendored once (`vendor/vega-bundle.js`, from
`kpi.chartcache.vega_bundle`) and shared by every page; no page references an outside URL.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import orjson
import pandas as pd
from jinja2 import Environment, FileSystemLoader, select_autoescape

from kpi import __version__, changes
from kpi.anomalies import (
    anomalies_csv,
    anomalies_json,
    describe_rules,
    detect_anomalies,
    last_steps,
)
from kpi.chartcache import ChartTemplates, vega_bundle
from kpi.chartstyle import PALETTE, THEMES
from kpi.config import Config
from kpi.days import day_ranges
from kpi.refusals import refusals_csv, refusals_json
from kpi.reports import PROBLEM_MEASURES, PROBLEM_SHARE, QUALITY_LABELS, Aggregates, to_csv, to_json
from kpi.views import (
    COMPLEMENT,
    KINDS,
    RATIO,
    headline_tiles,
    measures_of,
    segment_orders,
    segmentations_of,
    view_files,
)
from kpi.words import plural

log = logging.getLogger(__name__)

# report_templates/ beside kpi/: in a checkout, and in a wheel (it ships as a package of its own)
TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "report_templates"
VENDOR_BUNDLE = "vendor/vega-bundle.js"


@dataclass(frozen=True)
class Page:
    """One report page: its report id, tab label, question, text and how it is drawn.

    `layout` is `series` (one line per segment, or Total), `measures` (one line per step or
    count, each toggleable) or `funnel` (funnel bars, the funnel table and one small chart per
    step over time). `problems` are measures drawn in a chart of their own, on their own scale
    (the data quality page's duplicates, skips and rejections: small counts that would lie flat
    on the zero line under thousands).
    """

    id: str
    tab: str
    question: str
    description: str
    layout: str
    y_title: str = "Value"
    percent: bool = False
    area_toggle: bool = False  # counts that can also be shown as stacked areas
    milestones: bool = True  # draw milestone annotations (time-series charts)
    problems: tuple[str, ...] = ()


def _page_copy() -> tuple[tuple[Page, ...], tuple[tuple[str, str, str], ...]]:
    """The pages and the Definitions page's differences, from `report_templates/pages.json`
    (the copy is data: edited there, not here)."""
    copy = orjson.loads((TEMPLATES_DIR / "pages.json").read_bytes())
    pages = tuple(Page(**{**page, "problems": PROBLEM_MEASURES if page.get("problems") else ()})
                  for page in copy["pages"])
    differences = tuple((item["what"], item["original"], item["here"])
                        for item in copy["differences"])
    return pages, differences


PAGES, DIFFERENCES = _page_copy()


def page_config(page: Page, config: Config, days: list[str], reports: dict[str, pd.DataFrame],
                build: str = "", refusals: list[dict] | None = None,
                min_segment_count: int = 0, templates: ChartTemplates | None = None) -> dict:
    """What a report page's script needs: chart templates, segmentations, segments and steps.

    Args:
        page: the page.
        config: the report configuration (steps, milestones).
        days: the published days, ascending.
        reports: every report (their volumes order each segmentation's segments).
        build: the build id, added to view-file URLs, and checked against the id each view
            file carries, so a page never draws another build's data (it reloads instead).
        refusals: the refused restatements (`kpi.refusals.refusals_of`): their days and
            counts, for a page with `problems` (the data quality page's problem days).
        min_segment_count: the folding threshold applied (the tooltip of a folded day says it).
        templates: where the chart templates come from (`render_site` reads and keeps them
            beside the site); default: made once per process.
    """
    kind = KINDS[page.id]
    ratio = kind in (RATIO, COMPLEMENT)
    segmentations = segmentations_of(page.id)
    orders = segment_orders(reports, page.id)
    return {
        "build": build,
        "report": page.id,
        "title": page.tab,
        "layout": page.layout,
        "kind": kind,
        "percent": page.percent,
        "area_toggle": page.area_toggle,
        "segmentations": list(segmentations),
        "segments": {name: orders.get(name, [])
                     for name in segmentations if name != "Total"},
        "measures": list(measures_of(page.id, config)),
        "labels": QUALITY_LABELS if page.id == "data_quality" else {},
        "problems": list(page.problems),
        "problem_share": PROBLEM_SHARE,
        "refusals": [{"day": r["day"], "would_remove": r["would_remove"]}
                     for r in refusals or []] if page.problems else [],
        "first_day": days[0] if days else None,
        "last_day": days[-1] if days else None,
        "milestones": [list(m) for m in config.milestones] if page.milestones else [],
        "min_segment_count": min_segment_count,
        "palette": list(PALETTE),
        "themes": THEMES,
        "specs": (templates or ChartTemplates()).page(
            page.layout, page.y_title, page.percent, ratio, page.area_toggle,
            bool(page.problems)),
    }


def overview_config(tiles: list[dict], templates: ChartTemplates | None = None) -> dict:
    """What the overview's script needs: the tiles' recent values and the sparkline templates
    (from `templates`, as for `page_config`)."""
    return {
        "tiles": [{key: tile[key] for key in ("id", "label", "report", "measure", "percent",
                                              "recent")}
                  for tile in tiles],
        "specs": (templates or ChartTemplates()).overview(),
        "themes": THEMES,
    }


def kpi_number(value: float | None, percent: bool = False) -> str:
    """A headline value as people read it: 45.2%, 1,234, 3.5; a dash when there is none."""
    if value is None:
        return "—"
    if percent:
        return f"{100 * value:.1f}%"
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.1f}"


def kpi_change(change: float, tile: dict) -> str:
    """A week-on-week change: relative for per-day means, points for rates, plain otherwise."""
    if tile["summary"] == "mean per day":
        return f"{100 * change:+.1f}%"
    if tile["percent"]:
        return f"{100 * change:+.1f} pts"
    return f"{change:+.1f}"


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["kpi_number"] = kpi_number
    env.filters["kpi_change"] = kpi_change
    env.filters["plural"] = plural
    return env


def asset_version() -> str:
    """A short hash of the page scripts, styles and Vega bundle version (for cache busting)."""
    import vl_convert

    digest = hashlib.sha256(vl_convert.__version__.encode())
    for path in sorted((TEMPLATES_DIR / "static").rglob("*")):
        if path.is_file():
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def _write_json(path: Path, content: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(content))


def render_site(target: Path, aggregates: Aggregates, reports: dict[str, pd.DataFrame],
                config: Config, built_at: datetime,
                files: dict[str, tuple[str, bytes]] | None = None,
                previous: Path | None = None, refusals: list[dict] | None = None,
                range_asked: tuple[str | None, str | None] | None = None,
                flags: pd.DataFrame | None = None, chart_cache: Path | None = None) -> None:
    """Write the whole site (data files, view files, pages, assets) into the folder `target`.

    Args:
        target: an empty (or missing) folder.
        aggregates: the daily aggregates the reports were built from: every day's quality
            counts (the days) and at least the last two weeks' sites histogram (the overview's
            medians); their `min_segment_count` (the small-segment folding applied) is stated
            on the Definitions page.
        reports: `build_reports(aggregates, config)`.
        config: the report configuration.
        built_at: the build time written to the manifest and pages.
        files: each report's CSV and JSON contents, when already made (`kpi.buildcache`);
            default: written from `reports`.
        previous: the build published before this one (`published_build`), if any: the
            changes since it (`data/changes.csv`, the Changes page) and the archive of the
            last builds' data files (`archive/`) are made from it (`kpi.changes`).
        refusals: the refused restatements the manifests record now
            (`kpi.refusals.refusals_of`, newest day first): `data/refusals.csv` (and `.json`)
            and the Data quality page's list; default none.
        range_asked: the `[start, end]` a range build was asked for (`kpi build-site
            --start/--end`; None for an open end), written to the manifest as `range`, so the
            changes of this build and the next are compared day by day (`kpi.changes`);
            default None: a build of every stored day.
        flags: the flagged days (`detect_anomalies`), when judged on more days than shown (a
            range build's first days against the weeks before it); default: from `reports`.
        chart_cache: where the chart templates are kept between builds
            (`kpi.chartcache.cache_path`: in the user's cache folder): read, and written when a
            template had to be made; default: made once per process.
    """
    refusals = refusals or []
    days = aggregates.days
    data_dir = target / "data"
    data_dir.mkdir(parents=True)
    for name, report in reports.items():
        csv_text, json_bytes = files[name] if files else (to_csv(report), to_json(report))
        (data_dir / f"{name}.csv").write_text(csv_text, encoding="utf-8", newline="")
        (data_dir / f"{name}.json").write_bytes(json_bytes)
    manifest = {
        "built_at": built_at.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "build_id": build_id(built_at),
        "first_day": days[0] if days else None,
        "last_day": days[-1] if days else None,
        "pipeline_version": __version__,
        "reports": {name: len(report) for name, report in sorted(reports.items())},
        "days": day_ranges(days),
        "range": list(range_asked) if range_asked else None,
    }
    (data_dir / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    if flags is None:
        flags = detect_anomalies(reports, days, config.anomalies, last_steps(config))
    (data_dir / "anomalies.csv").write_text(anomalies_csv(flags), encoding="utf-8", newline="")
    (data_dir / "anomalies.json").write_bytes(anomalies_json(flags))
    (data_dir / "refusals.csv").write_text(refusals_csv(refusals), encoding="utf-8",
                                           newline="")
    (data_dir / "refusals.json").write_bytes(refusals_json(refusals))
    changed = changes.compare(previous, target)
    changes.write_changes(data_dir, changed)
    for path, content in view_files(reports, days, aggregates.folded):
        _write_json(data_dir / path, {**content, "build": manifest["build_id"]})
    (target / "vendor").mkdir()
    (target / VENDOR_BUNDLE).write_text(vega_bundle(), encoding="utf-8")
    shutil.copytree(TEMPLATES_DIR / "static", target / "static")

    env = _environment()
    common = {
        "pages": PAGES,
        "first_day": manifest["first_day"],
        "last_day": manifest["last_day"],
        "built_at": manifest["built_at"],
        "build_id": manifest["build_id"],
        "version": __version__,
        "assets": asset_version(),
    }
    templates = ChartTemplates(chart_cache)
    tiles = headline_tiles(reports, aggregates, config, flags)
    index = env.get_template("index.html").render(
        title="Overview", current="index", row_counts=manifest["reports"], tiles=tiles,
        overview_config=overview_config(tiles, templates), **common,
    )
    (target / "index.html").write_text(index, encoding="utf-8")
    definitions = env.get_template("definitions.html").render(
        title="Definitions", current="definitions", differences=DIFFERENCES,
        segmentations=sorted(config.segmentations.items()),
        min_segment_count=aggregates.min_segment_count,
        anomaly_rule=describe_rules(config.anomalies), anomaly_rules=config.anomalies,
        problem_share=f"{PROBLEM_SHARE:.0%}", **common,
    )
    (target / "definitions.html").write_text(definitions, encoding="utf-8")
    for page in PAGES:
        html = env.get_template("report.html").render(
            title=page.tab, current=page.id, page=page,
            page_config=page_config(page, config, days, reports, manifest["build_id"],
                                    refusals, aggregates.min_segment_count, templates),
            segmentations=segmentations_of(page.id), row_count=len(reports[page.id]),
            refusals=refusals, **common,
        )
        (target / f"{page.id}.html").write_text(html, encoding="utf-8")
    templates.save()
    changes_page = env.get_template("changes.html").render(
        title="Changes", current="changes",
        changes=changes.page_context(
            changed, {page.id: changes.ReportDisplay(page.tab, page.percent, page.y_title)
                      for page in PAGES}, QUALITY_LABELS),
        archive_builds=changes.ARCHIVE_BUILDS, archive_days=changes.ARCHIVE_DAYS, **common,
    )
    (target / "changes.html").write_text(changes_page, encoding="utf-8")
    changes.archive(target, previous)  # last: every data file of this build is written


def build_id(built_at: datetime) -> str:
    """The id of the build stamped `built_at`, written in its manifest and every page."""
    return built_at.strftime("%Y%m%dT%H%M%S.%fZ")
