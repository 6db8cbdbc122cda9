"""Alerts: the flagged days of a run (`kpi.anomalies`, judged as the site judges them) logged,
and the deployment's `KPI_ANOMALY_CALLBACK` told about the run's own day."""

from __future__ import annotations

import logging
from datetime import date

from kpi.config import Config, load_config
from kpi.publish import judged_flags
from kpi.settings import Settings, load_callback

log = logging.getLogger(__name__)


def check_anomalies(days: list[date], settings: Settings, config: Config | None = None,
                    context: dict | None = None) -> list[dict]:
    """The flags (`kpi.anomalies`) that concern `days`, as the site computes them (same
    reports, small segments folded the same way), each logged as a warning; when one concerns
    the last of `days` (a nightly run's own day), the `KPI_ANOMALY_CALLBACK` hook is called
    with them and `context`. Never raises for a flag or a failing hook: a flag is news, not a
    failure of the pipeline.

    Returns:
        The flags of `days` (dicts with `kpi.anomalies.COLUMNS`).
    """
    if not days:
        return []
    config = config or load_config(settings.config_path)
    flags = judged_flags(settings, config, min(days), max(days))
    wanted = {day.isoformat() for day in days}
    mine = [flag for flag in flags.to_dict("records") if flag["date"] in wanted]
    for flag in mine:
        log.warning("flagged %(direction)s: %(date)s %(report)s %(segmentation)s/%(segment)s "
                    "%(measure)s = %(value)s against a baseline of %(baseline)s", flag)
    own = [flag for flag in mine if flag["date"] == max(days).isoformat()]
    if own and settings.anomaly_callback:
        try:
            load_callback(settings.anomaly_callback, "KPI_ANOMALY_CALLBACK")(own, context or {})
        except Exception:  # a notifier's failure must not fail the pipeline
            log.exception("KPI_ANOMALY_CALLBACK %s failed", settings.anomaly_callback)
    return mine
