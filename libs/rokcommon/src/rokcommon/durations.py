"""Durations as retention rules write them, the way restic's ``--keep-within`` does: ``30d``, ``12h``, ``1y2m``.

A duration is a sequence of numbers, each followed by its unit: ``y`` years, ``m`` months, ``w`` weeks,
``d`` days, ``h`` hours. Years and months are calendar ones: ``1m`` before March 31st is February 28th (or
29th), as a person counts. ``m`` is months, never minutes, as in restic.

>>> str(parse_duration("1y2m"))
'1y2m'
>>> parse_duration("30d").before(datetime(2026, 12, 31, tzinfo=UTC)).isoformat()
'2026-12-01T00:00:00+00:00'
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from rokcommon.errors import InvalidRequest

__all__ = ["UTC", "Duration", "parse_duration"]

_PART = re.compile(r"(\d+)([ymwdh])")
_UNITS = "ymwdh"
_MAX = 100_000  # of any unit: far beyond any retention, short of what a datetime can count back


@dataclass(frozen=True)
class Duration:
    years: int = 0
    months: int = 0
    weeks: int = 0
    days: int = 0
    hours: int = 0

    def __str__(self) -> str:
        values = (self.years, self.months, self.weeks, self.days, self.hours)
        return "".join(f"{n}{unit}" for n, unit in zip(values, _UNITS, strict=True) if n) or "0h"

    def before(self, moment: datetime) -> datetime:
        """``moment`` less this duration: calendar years and months first, then weeks, days and hours."""
        months = moment.year * 12 + (moment.month - 1) - self.years * 12 - self.months
        year, month = divmod(months, 12)
        if year < 1:
            return datetime.min.replace(tzinfo=moment.tzinfo)
        day = min(moment.day, calendar.monthrange(year, month + 1)[1])
        shifted = moment.replace(year=year, month=month + 1, day=day)
        try:
            return shifted - timedelta(weeks=self.weeks, days=self.days, hours=self.hours)
        except OverflowError:
            return datetime.min.replace(tzinfo=moment.tzinfo)


def parse_duration(text: str) -> Duration:
    """The duration ``text`` writes, or :class:`InvalidRequest` saying how one is written."""
    given = text.strip().lower() if isinstance(text, str) else ""
    shape = "a number and a unit, repeated: 30d, 12h, 2w, 1y2m (y years, m months, w weeks, d days, h hours)"
    if not given:
        raise InvalidRequest(f"empty duration: write {shape}")
    values = dict.fromkeys(_UNITS, 0)
    position = 0
    for match in _PART.finditer(given):
        if match.start() != position:
            break
        number, unit = int(match.group(1)), match.group(2)
        if values[unit] or number > _MAX:
            raise InvalidRequest(f"duration {text!r}: {unit} is given twice or is too large; write {shape}")
        values[unit] = number
        position = match.end()
    if position != len(given):
        raise InvalidRequest(f"duration {text!r} is not {shape}")
    return Duration(values["y"], values["m"], values["w"], values["d"], values["h"])
