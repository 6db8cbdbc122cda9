"""Charts: the Altair (Vega-Lite) templates the report pages fill in the browser.

Every chart reads *named* datasets instead of a URL, so the page script can load only the data
of the current view, cut it to the chosen date range and visible series, and hand it over as
`datasets` when it draws (no rebuild, nothing fetched twice):

| dataset | one row per | fields |
| --- | --- | --- |
| `rows` | day × visible series | `date` (UTC midnight, ms), `series`, `measure`, `color`, |
| | | `rank`, `value`, `numerator`, `denominator` |
| `funnel` | step × visible series | `step`, `label`, `order`, `series`, `color`, `rank`, `count`, |
| | | `share` (of step 1) |
| `milestones` | milestone in the range | `date` (ms), `milestone` (drawn as text, never as HTML) |
| `flags` | flagged day × shown series | `date` (ms), `value` (where the symbol sits: the flagged |
| | | value, or its stack's top), `direction` (`low`/`high`), `text` (the tooltip) |
| `folded` | day with a shown series folded into `Other` | `date` (ms), `text` (the tooltip: |
| | | which series, and why they are a gap that day) |

Colours come from the rows (`color`, `scale=None`) so a series keeps its colour when others are
hidden, and the legend is the page's own list of checkboxes: no Vega legend can be clipped, and
no single-entry "value" legend is drawn. Widths are `"container"`: a chart fits its box from a
360 px phone to a wide screen. Null values are gaps (Vega-Lite breaks paths at invalid values).
"""

from __future__ import annotations

import altair as alt

from kpi.chartstyle import PALETTE
from kpi.days import DAY_MS

DAY_FORMAT = "%a %b %d, %Y"


def _named(name: str) -> alt.Data:
    return alt.Data(name=name)


# A day label on two lines, day over month: narrow enough for one label per day of a week on
# a phone. The page sets the axis `values` (one per day, or per every k days) for its range.
DAY_LABEL = "[utcFormat(datum.value, '%d'), utcFormat(datum.value, '%b')]"


def _day(title: str | None = "Day (UTC)") -> alt.X:
    axis = alt.Axis(labelAngle=0, labelOverlap=True, labelSeparation=4, labelFlush=False,
                    grid=False, format="%b %d",  # the scale is UTC, so are its labels
                    labelExpr=DAY_LABEL, tickMinStep=DAY_MS)
    return alt.X("date:T", title=title, axis=axis, scale=alt.Scale(type="utc"))


def _value(title: str, percent: bool, stack: bool = False) -> alt.Y:
    axis = alt.Axis(format=".0%" if percent else ",~f", tickCount=5)
    return alt.Y("value:Q", title=title, axis=axis, stack="zero" if stack else None)


def _tooltip(title: str, percent: bool, ratio: bool) -> list[alt.Tooltip]:
    tips = [
        _day_tooltip(),
        alt.Tooltip("series:N", title="Series"),
        alt.Tooltip("value:Q", title=title, format=".2%" if percent else ",.4~f"),
    ]
    if ratio:
        tips += [alt.Tooltip("numerator:Q", title="Numerator", format=",~f"),
                 alt.Tooltip("denominator:Q", title="Denominator", format=",~f")]
    return tips


def _day_tooltip() -> alt.Tooltip:
    return alt.Tooltip("date:T", title="Day (UTC)", timeUnit="utcyearmonthdate", format=DAY_FORMAT)


def _colour() -> alt.Color:
    return alt.Color("color:N", scale=None, legend=None)


# Where a milestone's label goes: on the side of its rule with more room, cut to that room with
# an ellipsis ("Demo milestone: new sign-i…"), so a name is never cut mid-letter at the chart's
# edge and never widens the chart (its width fits the marks' bounds); the tooltip has it whole.
_MILESTONE_X = "scale('x', datum.date)"
_MILESTONE_RIGHT = f"{_MILESTONE_X} > width / 2"  # more room left of the rule
LABEL_GAP = 3  # px between the rule and its label


def milestone_layers() -> list[alt.Chart]:
    """A dashed rule and a text label per milestone of the `milestones` dataset.

    The label sits just above the plot, never over the data (in a small chart the lines reach
    its top), and is cut with an ellipsis to the room beside its rule.
    """
    base = alt.Chart(_named("milestones")).encode(
        x=alt.X("date:T"), tooltip=[alt.Tooltip("milestone:N", title="Milestone")]
    )
    rules = base.mark_rule(strokeDash=[4, 3])
    labels = base.mark_text(
        baseline="bottom", dy=-2, fontSize=10, ellipsis="…",
        align=alt.ExprRef(f"{_MILESTONE_RIGHT} ? 'right' : 'left'"),
        dx=alt.ExprRef(f"{_MILESTONE_RIGHT} ? -{LABEL_GAP} : {LABEL_GAP}"),
        # the room on its side; at least 1 px (a limit of 0 would mean no limit)
        limit=alt.ExprRef(f"max(1, ({_MILESTONE_RIGHT} ? {_MILESTONE_X} : width - "
                          f"{_MILESTONE_X}) - {LABEL_GAP})"),
    ).encode(text="milestone:N", y=alt.value(0))
    return [rules, labels]


FLAG_COLOR = "#d62728"  # red on light and dark backgrounds
FLAG_SHAPE = "diamond"  # ◆ on every page: the overview's deltas use ▲ ▼ ■, so a flag is no delta


def flag_layer(title: str, percent: bool, size: int = 130) -> alt.Chart:
    """A red diamond on each flagged day of the `flags` dataset (it sits below or above the
    line; its tooltip says low or high).

    Its tooltip is the row's `text` ("flagged low: value V vs baseline B (measure, segment)"),
    written by the page; the layer shares the value axis, so `value` is in the chart's units.
    """
    return (
        alt.Chart(_named("flags"))
        .mark_point(filled=True, opacity=1, color=FLAG_COLOR, stroke="white", strokeWidth=1)
        .encode(
            x=alt.X("date:T"),
            y=_value(title, percent),
            shape=alt.value(FLAG_SHAPE),
            size=alt.value(size),
            tooltip=alt.Tooltip("text:N"),  # one field, no title: the tooltip is the text
        )
        .properties(name="flags")
    )


FOLDED_COLOR = "#8a94a3"  # a neutral grey, readable on light and dark backgrounds


def folded_layer(height: int) -> alt.Chart:
    """A hollow grey circle at the foot of the plot on each day of the `folded` dataset: the
    days on which shown series were folded into `Other` (below the privacy threshold), which
    their lines leave as gaps. Its tooltip is the row's `text`, written by the page."""
    return (
        alt.Chart(_named("folded"))
        .mark_point(shape="circle", filled=False, color=FOLDED_COLOR, strokeWidth=1.5,
                    opacity=1)
        .encode(
            x=alt.X("date:T"),
            y=alt.value(height - 5),  # pixels from the top: just above the day axis
            size=alt.value(60),
            tooltip=alt.Tooltip("text:N"),  # one field, no title: the tooltip is the text
        )
        .properties(name="folded")
    )


def series_chart(title: str, percent: bool, ratio: bool, area: bool = False,
                 height: int = 300) -> alt.LayerChart:
    """Value over the days, one line (or stacked area) per visible series, plus milestones.

    Args:
        title: the value axis title.
        percent: values are fractions shown as percentages.
        ratio: rows carry a numerator and denominator (shown in the tooltip).
        area: stacked areas (counts only) instead of lines.
        height: plot height in pixels.
    """
    mark = (alt.Chart(_named("rows")).mark_area(opacity=0.85, line=True, point=True) if area
            else alt.Chart(_named("rows")).mark_line(point=True, strokeWidth=2))
    data = mark.encode(
        x=_day(),
        y=_value(title, percent, stack=area),
        color=_colour(),
        detail="series:N",
        tooltip=_tooltip(title, percent, ratio),
    )
    if area:  # stack in rank order (on a line, `order` would reorder the path's points)
        data = data.encode(order=alt.Order("rank:Q"))
    return alt.layer(data, *milestone_layers(), folded_layer(height),
                     flag_layer(title, percent)).properties(width="container", height=height)


def step_panel_chart(title: str, percent: bool, ratio: bool) -> alt.LayerChart:
    """One step's small multiple: the step per day, one line per visible series."""
    return series_chart(title, percent, ratio, height=120)


# A step label whole, never cut: "Logged in (assertion generated)" on two lines, the bracket on
# the second, so it fits beside the bars on a phone.
STEP_LABEL = ("indexof(datum.label, ' (') > 0 ? [slice(datum.label, 0, indexof(datum.label, ' (')),"
              " slice(datum.label, indexof(datum.label, ' (') + 1)] : datum.label")


def funnel_chart(title: str) -> alt.Chart:
    """The funnel over the chosen range: a horizontal bar per step, stacked by visible series."""
    return (
        alt.Chart(_named("funnel"))
        .mark_bar()
        .encode(
            y=alt.Y("label:N", title=None, sort=alt.EncodingSortField("order"),
                    axis=alt.Axis(labelLimit=0, labelPadding=6, labelExpr=STEP_LABEL)),
            x=alt.X("count:Q", title=title, stack="zero",
                    axis=alt.Axis(format=",~f", tickCount=4, labelOverlap=True)),
            color=_colour(),
            detail="series:N",
            order=alt.Order("rank:Q"),
            tooltip=[
                alt.Tooltip("step:N", title="Step"),
                alt.Tooltip("series:N", title="Series"),
                alt.Tooltip("count:Q", title="Blobs", format=","),
                alt.Tooltip("share:Q", title="Of step 1 (all shown)", format=".1%"),
            ],
        )
        .properties(width="container", height=170)
    )


def sparkline_chart(percent: bool) -> alt.LayerChart:
    """A headline KPI's last days, for an overview tile, with its flagged days (`flags`)."""
    line = (
        alt.Chart(_named("rows"))
        .mark_line(strokeWidth=2, point=alt.OverlayMarkDef(size=12))
        .encode(
            x=alt.X("date:T", axis=None, scale=alt.Scale(type="utc")),
            y=alt.Y("value:Q", axis=None, scale=alt.Scale(zero=False)),
            color=alt.value(PALETTE[0]),
            tooltip=[
                _day_tooltip(),
                alt.Tooltip("value:Q", title="Value", format=".2%" if percent else ",.4~f"),
            ],
        )
    )
    flags = flag_layer("", percent, size=60).encode(
        y=alt.Y("value:Q", axis=None, scale=alt.Scale(zero=False)))
    return alt.layer(line, flags).properties(width="container", height=44)


def spec(chart: alt.TopLevelMixin, validate: bool = False) -> dict:
    """The chart's Vega-Lite spec, without the external `$schema` URL (the site is offline).

    The templates are fixed, so they are validated against the Vega-Lite schema by the tests
    (`validate=True`), not at every build (compiling the schema costs about a second).
    """
    result = chart.to_dict(validate=validate)
    result.pop("$schema", None)
    return result
