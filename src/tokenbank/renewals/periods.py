"""Renewal periods: whole calendar months counted from the day a wallet joined its plan.

Period ``k`` starts ``k`` months after the anchor, on the anchor's day of the month
and time of day; in a month without that day (the 31st in April, the 29th-31st in
February) it starts on the month's last day instead. Each start is counted from the
anchor, never from the previous start, so a plan joined on 31 January renews on
28 (or 29) February, 31 March, 30 April, 31 May.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Period:
    start: datetime
    end: datetime  # the next period's start


def add_months(anchor: datetime, months: int) -> datetime:
    """The anchor moved by whole months, its day clamped to the target month's last."""
    month_index = anchor.month - 1 + months
    year, month = anchor.year + month_index // 12, month_index % 12 + 1
    day = min(anchor.day, calendar.monthrange(year, month)[1])
    return anchor.replace(year=year, month=month, day=day)


def period_at(anchor: datetime, moment: datetime) -> Period:
    """The period that contains ``moment`` (the first one, for a moment before the anchor)."""
    months = max((moment.year - anchor.year) * 12 + moment.month - anchor.month, 0)
    if months > 0 and add_months(anchor, months) > moment:
        months -= 1
    return Period(add_months(anchor, months), add_months(anchor, months + 1))


def following(anchor: datetime, period: Period) -> Period:
    """The period after ``period``."""
    return period_at(anchor, period.end)
