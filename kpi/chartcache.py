"""Chart cache: the pages' Vega-Lite templates (`kpi.charts`) and the Vega bundle, kept in the
user's cache folder, so that a new process does not make them again.

A template is a pure function of its arguments and of the code that makes it, but making the
site's templates costs a fresh process about a second and a half (importing Altair, then
building every chart through its validating, deep-copying classes): more than the rest of a
nightly publish that changed nothing, and every backfill and publish is a new process. So a
build reads them from one JSON file in the user's cache folder (`cache_path`:
`~/.cache/kpi/chart-templates.json`; any site the user builds, a first build of a new site
folder included, shares them), stamped with a digest of our code and Altair's version
(`cache_key`), each template under its arguments. A template the file lacks (new arguments)
is made with Altair, and the file is rewritten, atomically, once the build has rendered its
pages. A missing, unreadable or stale file (another version or checkout made it: checkouts of
different code take turns rewriting it) costs making the templates again, never a failed
build: nothing a build needs lives only in this file (an Airflow worker with its own home
folder makes its own). Without a home folder, templates are made once per process.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import logging
import os
from pathlib import Path

import orjson

from kpi.buildcache import code_digest

log = logging.getLogger(__name__)
FORMAT = 1


def user_cache_folder() -> Path | None:
    """The user's cache folder of this project: `$XDG_CACHE_HOME/kpi/` (default
    `~/.cache/kpi/`; it may not exist yet); None without a home folder (some containers)."""
    try:
        return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kpi"
    except RuntimeError:
        return None


def cache_path() -> Path | None:
    """Where the chart templates are kept: `chart-templates.json` in the user's cache folder
    (None: nowhere, they are made once per process)."""
    folder = user_cache_folder()
    return None if folder is None else folder / "chart-templates.json"


def cache_key() -> str:
    """What stored templates must have been made with: this code and this Altair."""
    return f"{FORMAT}:{code_digest()}:altair-{importlib.metadata.version('altair')}"


@functools.cache
def page_specs(layout: str, y_title: str, percent: bool, ratio: bool, area_toggle: bool,
               problems: bool = False, validate: bool = False) -> dict:
    """A report page's templates, made with Altair (once per process).

    Args:
        layout: the page's layout (`kpi.site.Page.layout`): a `funnel` page has its bars and
            a small chart per step besides the lines.
        y_title: the value axis title.
        percent: values are fractions shown as percentages.
        ratio: rows carry a numerator and denominator.
        area_toggle: the page also draws its counts as stacked areas.
        problems: the page has a chart of its problem measures (`kpi.site.Page.problems`).
        validate: check each against the Vega-Lite schema (the tests do; a build does not).

    Returns:
        The templates by name: `lines`, and `areas`, `problems`, `funnel`, `panel` as the page
        has them.
    """
    from kpi import charts  # Altair: only when a template is made

    def spec(chart):
        return charts.spec(chart, validate)

    specs = {"lines": spec(charts.series_chart(y_title, percent, ratio))}
    if area_toggle:
        specs["areas"] = spec(charts.series_chart(y_title, percent, ratio, area=True))
    if problems:
        specs["problems"] = spec(charts.series_chart("Problem rows or blobs", False, False,
                                                     height=160))
    if layout == "funnel":
        specs["funnel"] = spec(charts.funnel_chart("Blobs"))
        specs["panel"] = spec(charts.step_panel_chart(y_title, percent, ratio))
    return specs


@functools.cache
def overview_specs(validate: bool = False) -> dict:
    """The overview's sparkline templates (`percent`, `count`), made with Altair (once per
    process)."""
    from kpi import charts  # Altair: only when a template is made

    return {"percent": charts.spec(charts.sparkline_chart(percent=True), validate),
            "count": charts.spec(charts.sparkline_chart(percent=False), validate)}


class ChartTemplates:
    """The templates of one build: read from `path` (if any), made when missing, and kept
    there again by `save`. Every call returns a fresh copy (a page may change its own)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._key = cache_key() if path is not None else ""
        self._stored: dict[str, bytes] = self._read() if path is not None else {}
        self._made = False

    def page(self, layout: str, y_title: str, percent: bool, ratio: bool, area_toggle: bool,
             problems: bool = False) -> dict:
        """A report page's templates (`page_specs`)."""
        arguments = ["page", layout, y_title, percent, ratio, area_toggle, problems]
        return self._get(arguments, lambda: page_specs(layout, y_title, percent, ratio,
                                                       area_toggle, problems))

    def overview(self) -> dict:
        """The overview's sparkline templates (`overview_specs`)."""
        return self._get(["overview"], overview_specs)

    def save(self) -> None:
        """Keep the templates in `path` (atomically), if any was made since it was read; a
        folder that cannot be written only costs making them again next time."""
        if self.path is None or not self._made:
            return
        content = b'{"key":' + orjson.dumps(self._key) + b',"templates":{' + b",".join(
            orjson.dumps(name) + b":" + spec for name, spec in sorted(self._stored.items())
        ) + b"}}"
        partial = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial.write_bytes(content)
            os.replace(partial, self.path)
            self._made = False
        except OSError as exc:
            log.info("cannot keep the chart templates in %s: %s", self.path, exc)
        finally:
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)

    def _get(self, arguments: list, make) -> dict:
        name = orjson.dumps(arguments).decode()
        stored = self._stored.get(name)
        if stored is None:
            stored = self._stored[name] = orjson.dumps(make())
            self._made = True
        return orjson.loads(stored)

    def _read(self) -> dict[str, bytes]:
        try:
            content = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        except Exception as exc:  # a damaged file only costs making the templates again
            log.warning("ignoring the unreadable chart templates %s: %s", self.path, exc)
            return {}
        if (not isinstance(content, dict) or content.get("key") != self._key
                or not isinstance(content.get("templates"), dict)):
            return {}
        return {name: orjson.dumps(spec) for name, spec in content["templates"].items()
                if isinstance(spec, dict)}


@functools.cache
def vega_bundle() -> str:
    """Vega 6 + Vega-Lite 6 + vega-embed as one script (from vl-convert, no network).

    Making it costs about 2 s, so it is kept in the user's cache folder
    (`$XDG_CACHE_HOME/kpi/`, default `~/.cache/kpi/`), one file per vl-convert version; a
    folder that cannot be written only costs the 2 s again.
    """
    import vl_convert

    folder = user_cache_folder()
    if folder is None:  # no home folder (some containers): no cache
        return vl_convert.javascript_bundle()
    cached = folder / f"vega-bundle-{vl_convert.__version__}.js"
    try:
        bundle = cached.read_text(encoding="utf-8")
        if len(bundle) > 100_000:  # the real one is about 900 KB; anything else is remade
            return bundle
    except (OSError, UnicodeDecodeError):
        pass
    bundle = vl_convert.javascript_bundle()
    partial = folder / f"{cached.name}.{os.getpid()}.tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        partial.write_text(bundle, encoding="utf-8")
        os.replace(partial, cached)
    except OSError as exc:
        log.info("cannot keep the Vega bundle in %s: %s", folder, exc)
    finally:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
    return bundle
