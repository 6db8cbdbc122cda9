"""The demo's outage day and milestone (`fake_source.demo`), and the fake source's outage."""

from __future__ import annotations

from datetime import date

from fake_source import create_app
from fake_source.demo import DEMO_MILESTONE, demo_config, outage_day
from kpi.config import validate_config
from kpi.days import day_start_ms

LAST = date(2026, 11, 30)


def test_the_outage_day_is_two_thirds_in_and_needs_two_weeks_of_history():
    assert outage_day(30, LAST) == date(2026, 11, 21)
    assert outage_day(15, LAST) == date(2026, 11, 30)
    assert outage_day(14, LAST) is None  # too short to be flagged: no outage


def test_the_demo_configuration_is_valid_and_has_a_milestone_in_range():
    config = validate_config(demo_config(30, LAST))
    assert (DEMO_MILESTONE, "2026-11-11") in config.milestones


def test_an_outage_day_serves_one_blob_in_ten():
    def day_rows(app, day):
        return app.state.store.range(day_start_ms(day), day_start_ms(day) + 86_399_999)

    normal = create_app(seed=3, per_day=200, days=3, last_day=LAST)
    outage = create_app(seed=3, per_day=200, days=3, last_day=LAST, outage_days=(LAST,))
    assert len(day_rows(outage, LAST)) == -(-len(day_rows(normal, LAST)) // 10)
    before = date(2026, 11, 29)
    assert day_rows(outage, before) == day_rows(normal, before)
