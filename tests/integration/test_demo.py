"""The demo shows its features: a backfill of the demo's fake history (as `make run` serves it,
with its outage day) flags that day in data/anomalies.csv, and the demo configuration's
milestone lies inside the published days."""

from __future__ import annotations

import csv
import dataclasses
import json
from datetime import date, timedelta

import pytest

from fake_source import create_app
from fake_source.demo import DEMO_MILESTONE, demo_config, first_day, outage_day
from fake_source.server import running_in_thread
from kpi.backfill import backfill

pytestmark = pytest.mark.integration
DAYS = 30  # KPI_DEMO_DAYS
LAST = date(2026, 11, 30)


def test_the_demo_history_has_a_flagged_outage_day_and_a_milestone_in_range(settings, tmp_path):
    outage = outage_day(DAYS, LAST)
    first = first_day(DAYS, LAST)
    assert first + timedelta(days=14) <= outage < LAST  # well after the first week
    config_path = tmp_path / "demo-config.json"
    config_path.write_text(json.dumps(demo_config(DAYS, LAST)), encoding="utf-8")
    app = create_app(seed=1, per_day=300, days=DAYS, last_day=LAST, outage_days=(outage,))
    with running_in_thread(app) as base:
        here = dataclasses.replace(settings, source_url=f"{base}/wsapi/interaction_data",
                                   config_path=str(config_path))
        backfill(first, LAST, here, progress=False)
    site = settings.site_dir
    with open(site / "data" / "anomalies.csv", encoding="utf-8") as handle:
        flags = list(csv.DictReader(handle))
    assert (outage.isoformat(), "low") in {
        (f["date"], f["direction"]) for f in flags
        if f["report"] == "assertions" and f["segmentation"] == "Total"}, flags
    with open(site / "data" / "data_quality.csv", encoding="utf-8") as handle:
        fetched = {r["date"]: int(r["value"]) for r in csv.DictReader(handle)
                   if r["measure"] == "fetched"}
    assert fetched[outage.isoformat()] < fetched[(outage - timedelta(days=7)).isoformat()] / 5
    page = (site / "assertions.html").read_text(encoding="utf-8")
    milestones = json.loads(page.split('id="page-config">', 1)[1].split("</script>", 1)[0])[
        "milestones"]
    inside = [day for name, day in milestones if name == DEMO_MILESTONE]
    assert len(inside) == 1 and first.isoformat() <= inside[0] <= LAST.isoformat()
