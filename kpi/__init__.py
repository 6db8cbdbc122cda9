"""kpi: nightly KPI pipeline and static report site for Mozilla Persona interaction data."""

__version__ = "0.1.0"
