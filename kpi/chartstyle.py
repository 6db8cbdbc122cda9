"""Chart style: the series palette and the light and dark Vega themes.

Shared by the Altair templates (`kpi.charts`) and the pages that embed them (`kpi.site`), which
need them without importing Altair.
"""

from __future__ import annotations

# Colour-blind-friendly categorical palette (Tableau 10 and two more), readable on light and
# dark backgrounds; a series' colour is its rank by volume.
PALETTE = (
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948",
    "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac", "#b6992d", "#8cd17d",
)


def _theme(ink: str, muted: str, grid: str) -> dict:
    return {
        "background": None,  # the page's background shows through (light or dark)
        "font": "system-ui, -apple-system, Segoe UI, sans-serif",
        "axis": {"labelColor": muted, "titleColor": ink, "gridColor": grid,
                 "domainColor": muted, "tickColor": muted, "labelFontSize": 11},
        "title": {"color": ink},
        "view": {"stroke": None},
        "text": {"color": muted},
        "rule": {"color": muted},
    }


# Vega configs for `prefers-color-scheme: light` and `dark` (the page picks one).
THEMES = {
    "light": _theme(ink="#1d2733", muted="#5b6878", grid="#e6e9ee"),
    "dark": _theme(ink="#e6e9ee", muted="#a7b1be", grid="#33404f"),
}
