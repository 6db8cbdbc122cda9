"""Site: reports → data files, Altair charts and Jinja2 pages in `KPI_SITE_DIR`; `serve` hosts it.

The build is written to a temporary folder beside the site and swapped in by renames, so a
reader sees the old site or the new one, never half of each. The Vega libraries are vendored
once (`vendor/vega-bundle.js`) and shared by every page; no page references an outside URL.
"""

from __future__ import annotations

import fcntl
import functools
import http.server
import logging
import os
import shutil
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import altair as alt
import orjson
import pandas as pd
from jinja2 import Environment, FileSystemLoader, select_autoescape

from kpi import __version__
from kpi.config import SEGMENTATIONS, Config, production_config
from kpi.pipeline import load_aggregates
from kpi.reports import build_reports, to_csv, to_json
from kpi.settings import Settings

log = logging.getLogger(__name__)

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "report_templates"
VENDOR_BUNDLE = "vendor/vega-bundle.js"


@dataclass(frozen=True)
class Page:
    """One report page: its report id, tab label, question, text and chart builder."""

    id: str
    tab: str
    question: str
    description: str
    chart: Callable[[Config], alt.TopLevelMixin] | None = None


def _segmentation_param() -> alt.Parameter:
    options = ["Total", *SEGMENTATIONS]
    return alt.param(
        name="segmentation",
        value="Total",
        bind=alt.binding_select(options=options, name="Segment by "),
    )


def _day_axis() -> alt.X:
    axis = alt.Axis(format="%b %d", labelAngle=0, tickCount={"interval": "day", "step": 1})
    return alt.X("utcyearmonthdate(date):T", title="Day (UTC)", axis=axis)


def assertions_chart(config: Config) -> alt.TopLevelMixin:
    """Blobs per day, one line per segment of the chosen segmentation."""
    segmentation = _segmentation_param()
    return (
        alt.Chart(alt.Data(url="data/assertions.json"))
        .mark_line(point=True)
        .encode(
            x=_day_axis(),
            y=alt.Y("value:Q", title="Sign-in attempts (blobs)"),
            color=alt.Color("segment:N", title="Segment"),
            tooltip=[
                alt.Tooltip("utcyearmonthdate(date):T", title="Day"),
                alt.Tooltip("segment:N", title="Segment"),
                alt.Tooltip("value:Q", title="Blobs", format=","),
            ],
        )
        .add_params(segmentation)
        .transform_filter(alt.datum.segmentation == segmentation)
        .properties(width=700, height=300)
    )


def new_user_chart(config: Config) -> alt.TopLevelMixin:
    """The sign-up funnel over the whole range (stacked by segment) and each step per day."""
    segmentation = _segmentation_param()
    data = alt.Data(url="data/new_user.json")
    funnel = (
        alt.Chart(data, title="Funnel over the whole range")
        .mark_bar()
        .encode(
            x=alt.X(
                "measure:N", title="Step", sort=list(config.steps("new_user")),
                axis=alt.Axis(labelAngle=0, labelLimit=170),
            ),
            y=alt.Y("sum(value):Q", title="Blobs reaching the step"),
            color=alt.Color("segment:N", title="Segment"),
            tooltip=[
                alt.Tooltip("measure:N", title="Step"),
                alt.Tooltip("segment:N", title="Segment"),
                alt.Tooltip("sum(value):Q", title="Blobs", format=","),
            ],
        )
        .add_params(segmentation)
        .transform_filter(alt.datum.segmentation == segmentation)
        .properties(width=700, height=260)
    )
    daily = (
        alt.Chart(data, title="Each step per day (Total)")
        .mark_line(point=True)
        .encode(
            x=_day_axis(),
            y=alt.Y("value:Q", title="Blobs reaching the step"),
            color=alt.Color("measure:N", title="Step"),
            tooltip=[
                alt.Tooltip("utcyearmonthdate(date):T", title="Day"),
                alt.Tooltip("measure:N", title="Step"),
                alt.Tooltip("value:Q", title="Blobs", format=","),
            ],
        )
        .transform_filter(alt.datum.segmentation == "Total")
        .properties(width=700, height=260)
    )
    return alt.vconcat(funnel, daily).resolve_scale(color="independent")


def data_quality_chart(config: Config) -> alt.TopLevelMixin:
    """Per-day reconciliation counts, one line per measure."""
    return (
        alt.Chart(alt.Data(url="data/data_quality.json"))
        .mark_line(point=True)
        .encode(
            x=_day_axis(),
            y=alt.Y("value:Q", title="Rows or blobs"),
            color=alt.Color("measure:N", title="Measure"),
            tooltip=[
                alt.Tooltip("utcyearmonthdate(date):T", title="Day"),
                alt.Tooltip("measure:N", title="Measure"),
                alt.Tooltip("value:Q", title="Count", format=","),
            ],
        )
        .properties(width=700, height=300)
    )


PAGES = (
    Page(
        "new_user",
        "New user flow",
        "Can new users log in?",
        "The progress of new users through the sign-up flow: how many blobs reach each step. "
        "Staging continuations add steps 3 and 4 without step 1.",
        new_user_chart,
    ),
    Page(
        "assertions",
        "Sign-in attempts",
        "Total number of sign-in attempts",
        "Every sign-in attempt sends one blob, so the number of blobs per day approximates the "
        "number of attempts (blobs are not filtered on a generated assertion).",
        assertions_chart,
    ),
    Page(
        "data_quality",
        "Data quality",
        "Did every blob arrive and get counted?",
        "Per day: rows fetched from KPIggybank, raw documents stored, duplicate rows, blobs "
        "skipped for an empty event stream, rows quarantined as invalid, and blobs aggregated.",
        data_quality_chart,
    ),
)


def chart_spec(chart: alt.TopLevelMixin) -> dict:
    """The chart's Vega-Lite spec without the external `$schema` URL."""
    spec = chart.to_dict()
    spec.pop("$schema", None)
    return spec


def _environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )


@functools.cache
def vega_bundle() -> str:
    """Vega 6 + Vega-Lite 6 + vega-embed as one script (from vl-convert, no network)."""
    import vl_convert

    return vl_convert.javascript_bundle()


def quality_table(report: pd.DataFrame) -> dict:
    """The data-quality report pivoted to one row per day (for the page's table)."""
    from kpi.reports import QUALITY_MEASURES

    if report.empty:
        return {"columns": ["date", *QUALITY_MEASURES], "rows": []}
    wide = report.pivot(index="date", columns="measure", values="value")
    rows = [[day, *(wide.at[day, m] for m in QUALITY_MEASURES)] for day in wide.index]
    return {"columns": ["date", *QUALITY_MEASURES], "rows": rows}


def render_site(
    target: Path, reports: dict[str, pd.DataFrame], days: list[str], config: Config,
    built_at: datetime,
) -> None:
    """Write the whole site (data files, pages, assets) into the empty folder `target`."""
    data_dir = target / "data"
    data_dir.mkdir(parents=True)
    for name, report in reports.items():
        (data_dir / f"{name}.csv").write_text(to_csv(report), encoding="utf-8", newline="")
        (data_dir / f"{name}.json").write_bytes(to_json(report))
    manifest = {
        "built_at": built_at.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "first_day": days[0] if days else None,
        "last_day": days[-1] if days else None,
        "pipeline_version": __version__,
        "reports": {name: len(report) for name, report in sorted(reports.items())},
    }
    (data_dir / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    (target / "vendor").mkdir()
    (target / VENDOR_BUNDLE).write_text(vega_bundle(), encoding="utf-8")
    shutil.copytree(TEMPLATES_DIR / "static", target / "static")
    (target / ".gitkeep").touch()

    env = _environment()
    common = {
        "pages": PAGES,
        "first_day": manifest["first_day"],
        "last_day": manifest["last_day"],
        "built_at": manifest["built_at"],
        "version": __version__,
    }
    index = env.get_template("index.html").render(
        title="Overview", current="index", row_counts=manifest["reports"], **common
    )
    (target / "index.html").write_text(index, encoding="utf-8")
    for page in PAGES:
        spec = chart_spec(page.chart(config)) if page.chart else None
        table = quality_table(reports[page.id]) if page.id == "data_quality" else None
        html = env.get_template("report.html").render(
            title=page.tab, current=page.id, page=page, chart_spec=spec, table=table,
            row_count=len(reports[page.id]), **common,
        )
        (target / f"{page.id}.html").write_text(html, encoding="utf-8")


@contextmanager
def _site_lock(site_dir: Path):
    site_dir.parent.mkdir(parents=True, exist_ok=True)
    lock_path = site_dir.parent / f".{site_dir.name}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def publish(build: Callable[[Path], None], site_dir: Path) -> Path:
    """Run `build` into a fresh folder beside `site_dir`, then swap it in.

    If `build` fails, the published site is left exactly as it was.
    """
    site_dir = Path(site_dir).resolve()
    with _site_lock(site_dir):
        staging = site_dir.parent / f".{site_dir.name}.new-{os.getpid()}"
        retired = site_dir.parent / f".{site_dir.name}.old-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            build(staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        if site_dir.exists():
            site_dir.rename(retired)
        staging.rename(site_dir)
        shutil.rmtree(retired, ignore_errors=True)
    return site_dir


def build_site(settings: Settings, config: Config | None = None,
               now: datetime | None = None) -> Path:
    """Rebuild and publish the site from every stored daily aggregate.

    Returns:
        The published site folder.
    """
    config = config or production_config()
    aggregates = load_aggregates(settings, config=config)
    reports = build_reports(aggregates, config)
    built_at = now or datetime.now(UTC)
    site = publish(
        lambda target: render_site(target, reports, aggregates.days, config, built_at),
        settings.site_dir,
    )
    log.info("published %s (%d days)", site, len(aggregates.days))
    return site


class _SiteHandler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".js": "text/javascript",
        ".json": "application/json",
        ".csv": "text/csv; charset=utf-8",
    }

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s - %s", self.address_string(), format % args)


def make_server(site_dir: Path, host: str = "127.0.0.1", port: int = 3434):
    """A threading HTTP server for the static site folder (not started)."""
    handler = functools.partial(_SiteHandler, directory=str(Path(site_dir).resolve()))
    return http.server.ThreadingHTTPServer((host, port), handler)


def serve(site_dir: Path, host: str = "127.0.0.1", port: int = 3434) -> None:
    """Serve the site until interrupted."""
    with make_server(site_dir, host, port) as server:
        server.serve_forever()
