"""An injectable clock, so tests can move through hold expiry and periods."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)


class ManualClock:
    """A clock that only moves when told to; for tests and simulations."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self._now

    def advance(self, seconds: float | timedelta) -> None:
        self._now += seconds if isinstance(seconds, timedelta) else timedelta(seconds=seconds)

    def set(self, moment: datetime) -> None:
        """Move to ``moment`` (forward only: the books never go back in time)."""
        if moment.tzinfo is None or moment < self._now:
            raise ValueError("a manual clock moves forward only, to a date-time with a timezone")
        self._now = moment
