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
from datetime import UTC, date, datetime
from pathlib import Path

import altair as alt
import orjson
import pandas as pd
from jinja2 import Environment, FileSystemLoader, select_autoescape

from kpi import __version__
from kpi.config import SEGMENTATIONS, Config, load_config
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
    chart: Callable[[Page, Config], alt.TopLevelMixin]
    y_title: str = "Value"
    percent: bool = False
    milestones: bool = True  # draw milestone annotations (time-series charts)


LEGEND = alt.Legend(labelLimit=320)


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


def _value_axis(page: Page) -> alt.Y:
    axis = alt.Axis(format="%") if page.percent else alt.Axis()
    return alt.Y("value:Q", title=page.y_title, axis=axis)


def _tooltip(page: Page, series: str, series_title: str) -> list:
    return [
        alt.Tooltip("utcyearmonthdate(date):T", title="Day"),
        alt.Tooltip(f"{series}:N", title=series_title),
        alt.Tooltip("value:Q", title=page.y_title, format=".1%" if page.percent else ",.4~f"),
    ]


def _data(page: Page) -> alt.Data:
    return alt.Data(url=f"data/{page.id}.json")


def _lines(page: Page, series: str, title: str) -> alt.Chart:
    """One line per value of `series` over the days. Nulls are gaps (D5)."""
    return (
        alt.Chart(_data(page))
        .mark_line(point=True)
        .encode(
            x=_day_axis(),
            y=_value_axis(page),
            color=alt.Color(f"{series}:N", title=title, legend=LEGEND),
            tooltip=_tooltip(page, series, title),
        )
        .properties(width=700, height=300)
    )


def segmented_chart(page: Page, config: Config) -> alt.TopLevelMixin:
    """One line per segment of the segmentation picked in the page's select box."""
    segmentation = _segmentation_param()
    return (
        _lines(page, "segment", "Segment")
        .add_params(segmentation)
        .transform_filter(alt.datum.segmentation == segmentation)
    )


def measures_chart(page: Page, config: Config) -> alt.TopLevelMixin:
    """One line per measure (step or count); these reports are Total only."""
    return _lines(page, "measure", "Step / measure")


def funnel_chart(page: Page, config: Config) -> alt.TopLevelMixin:
    """The sign-up funnel over the whole range (stacked by segment) and each step per day."""
    segmentation = _segmentation_param()
    steps = list(config.steps("new_user"))
    funnel = (
        alt.Chart(_data(page), title="Funnel over the whole range")
        .mark_bar()
        .encode(
            x=alt.X("measure:N", title="Step", sort=steps,
                    axis=alt.Axis(labelAngle=0, labelLimit=170)),
            y=alt.Y("sum(value):Q", title=page.y_title),
            color=alt.Color("segment:N", title="Segment", legend=LEGEND),
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
        alt.Chart(_data(page), title="Each step per day (Total)")
        .mark_line(point=True)
        .encode(
            x=_day_axis(),
            y=_value_axis(page),
            color=alt.Color("measure:N", title="Step", legend=LEGEND),
            tooltip=_tooltip(page, "measure", "Step"),
        )
        .transform_filter(alt.datum.segmentation == "Total")
        .properties(width=700, height=260)
    )
    return alt.vconcat(funnel, daily).resolve_scale(color="independent")


def with_milestones(chart: alt.Chart, milestones: list[tuple[str, str]]) -> alt.TopLevelMixin:
    """The chart with a dashed rule and label per milestone (SPEC §5), if any falls in range."""
    if not milestones:
        return chart
    data = alt.Data(values=[{"milestone": name, "date": day} for name, day in milestones])
    base = alt.Chart(data).encode(
        x="utcyearmonthdate(date):T", tooltip=[alt.Tooltip("milestone:N", title="Milestone")]
    )
    rules = base.mark_rule(color="#6b7785", strokeDash=[4, 3])
    labels = base.mark_text(align="left", baseline="top", dx=3, dy=2, angle=0, fontSize=10,
                            color="#4b5563").encode(text="milestone:N", y=alt.value(0))
    return alt.layer(chart, rules, labels)


PAGES = (
    Page("new_user", "New user flow", "Can new users log in?",
         "The progress of new users through the sign-up flow: blobs reaching each step. "
         "Staging continuations add steps 3 and 4 without step 1.",
         funnel_chart, "Blobs reaching the step", milestones=False),
    Page("new_user_time", "New user flow over time", "Can new users log in?",
         "The share of new users reaching each sign-up step, per day, relative to step 1. It can "
         "exceed 100% because staging continuations add steps 3 and 4 without step 1.",
         measures_chart, "Share of step 1", percent=True),
    Page("new_user_success", "New user success", "Can new users log in?",
         "The share of new users who succeed in signing in: (IdP + fallback new users) / "
         "(bounces + failures + IdP + fallback).", segmented_chart, "Success rate", percent=True),
    Page("new_user_per_day", "New users per day", "How many new users per day?",
         "New users who signed in successfully, via an IdP or a Persona-verified address.",
         segmented_chart, "New users"),
    Page("password_reset", "Password reset flow", "Can users reset their password?",
         "The share of users who began a password reset reaching each step, per day.",
         measures_chart, "Share of step 1", percent=True),
    Page("sites", "Persona adoption", "Persona adoption",
         "Blobs carry the number of sites the user is signed in to; this is its daily mean over "
         "blobs (a blob without the value counts 0). It is not the mean per user, which is "
         "higher.", segmented_chart, "Mean sites signed in"),
    Page("sites_median", "Sites (median)", "How many sites does a user sign in to?",
         "The daily median of the sites value over the blobs that carry one.",
         segmented_chart, "Median sites signed in"),
    Page("assertions", "Sign-in attempts", "Total number of sign-in attempts",
         "Every sign-in attempt sends one blob, so the number of blobs per day approximates the "
         "number of attempts (blobs are not filtered on a generated assertion).",
         segmented_chart, "Sign-in attempts (blobs)"),
    Page("new_user_bounce", "New user bounce rate",
         "How many new users fail to engage with the dialog?",
         "Bounces / (bounces + failures + IdP + fallback new users), over blobs whose dialog "
         "was shown.", segmented_chart, "Bounce rate", percent=True),
    Page("bounce_rate", "Bounce rate", "How many users fail to engage with the dialog?",
         "1 − engaged / shown, over all blobs. A day where dialogs were shown and nobody "
         "engaged is 100%.", measures_chart, "Bounce rate", percent=True),
    Page("general_progress_time", "General progress", "Do users progress through the dialog?",
         "The share of all blobs reaching each stage of the dialog, per day.",
         measures_chart, "Share of blobs", percent=True),
    Page("email_activation", "Email activation", "Do users activate additional emails?",
         "Blobs of sessions that sent an additional-email verification, by step reached.",
         measures_chart, "Blobs reaching the step"),
    Page("data_quality", "Data quality", "Did every blob arrive and get counted?",
         "Per day: rows fetched from KPIggybank, raw documents stored, duplicate rows, blobs "
         "skipped for an empty event stream, rows quarantined as invalid, and blobs aggregated.",
         measures_chart, "Rows or blobs"),
)


DIFFERENCES = (
    ("Segmented date ranges", "the end day was left out", "both ends included everywhere"),
    ("Division by zero", "shown as 0 (and a 100% bounce rate as 0%)",
     "an empty value / a gap; a day where nobody engaged has a bounce rate of 100%"),
    ("Sites value", "the first truthy field (a 0 fell through to the next field)",
     "the first present numeric field (0 counts; numeric strings are read as numbers)"),
    ("Sites median", "not offered (the README asked for it; a mean was computed)",
     "the Sites (median) report, exact, from daily histograms"),
    ("Emails", "a missing number_emails went to Other; Unknown stayed empty",
     "missing → Unknown; fractions, negatives, strings → Other"),
    ("Locale", "exact match only (en-US was Other)",
     "exact alias, else the primary language subtag (en-US → English; pt-BR keeps its own)"),
    ("Charts", "missing days filled with 0; area charts stacked ratios",
     "missing days and null ratios are gaps; lines"),
    ("Funnel steps", "steps absent from a day were left out", "every step, 0 when absent"),
    ("Import", "KPIggybank's _rev was kept, causing conflicts on re-import",
     "raw snapshots upserted by id; re-running a day changes nothing"),
    ("New reports", "—", "Sites (median), Email activation, Data quality"),
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
    in_range = [
        (name, day) for name, day in config.milestones if days and days[0] <= day <= days[-1]
    ]
    definitions = env.get_template("definitions.html").render(
        title="Definitions", current="definitions", differences=DIFFERENCES,
        segmentations=sorted(config.segmentations.items()), **common,
    )
    (target / "definitions.html").write_text(definitions, encoding="utf-8")
    for page in PAGES:
        chart = page.chart(page, config)
        if page.milestones:
            chart = with_milestones(chart, in_range)
        spec = chart_spec(chart)
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


def build_site(settings: Settings, config: Config | None = None, now: datetime | None = None,
               start: date | None = None, end: date | None = None) -> Path:
    """Rebuild and publish the site from the stored daily aggregates of [start, end].

    Args:
        settings: where the aggregates are and where the site goes.
        config: the report configuration (default: the one `settings` names).
        now: the build time written to the manifest (default: now).
        start, end: the UTC days shown, both included (default: every stored day).

    Returns:
        The published site folder.
    """
    config = config or load_config(settings.config_path)
    aggregates = load_aggregates(settings, start, end, config=config)
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
