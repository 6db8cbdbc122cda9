"""Numbers as the pipeline writes them: in stored documents (JSON) and published files (CSV).

Standard library only.
"""

from __future__ import annotations

import math


def plain_number(value: object) -> int | float:
    """Integral numbers as int (counts print as integers), others as float."""
    number = float(value)
    return int(number) if number.is_integer() else number


def format_number(value: object) -> str:
    """Counts as integers, other numbers as the shortest round-tripping decimal, null as ''."""
    if type(value) is int:  # the common case first: most values are counts
        return str(value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        msg = f"a report value must be a number, not {value!r}"
        raise TypeError(msg)
    if isinstance(value, int):  # an int subclass; report frames hold plain Python numbers
        return str(value)
    return repr(float(value))
