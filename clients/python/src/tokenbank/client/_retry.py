"""When a call is tried again, and how long to wait first.

A call is retried on a connection failure or a timeout, and on any 5xx answer; never
on a 4xx (the service has decided). Every attempt of one logical call sends the same
request, idempotency key included, so a retry can never charge twice: the service
answers a repeated key with the first result.

The wait before retry ``n`` (1, 2, ...) is ``backoff_seconds * multiplier ** (n - 1)``,
capped at ``max_backoff_seconds``, then drawn uniformly from its upper half ("equal
jitter") so that many clients failing together do not retry together. A
``Retry-After`` answer header is honoured up to the same cap.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import httpx

DEFAULT_MAX_ATTEMPTS = 3  # the first try and two retries
DEFAULT_BACKOFF_SECONDS = 0.2
DEFAULT_BACKOFF_MULTIPLIER = 2.0
DEFAULT_MAX_BACKOFF_SECONDS = 2.0
MAX_ATTEMPTS_LIMIT = 10

# Transport failures worth another try: the request may not have arrived, or its
# answer was lost. A bad URL or a local protocol error would fail again the same way.
RETRYABLE_TRANSPORT_ERRORS: tuple[type[httpx.TransportError], ...] = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many attempts a call gets, and the backoff between them."""

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    backoff_seconds: float = DEFAULT_BACKOFF_SECONDS
    multiplier: float = DEFAULT_BACKOFF_MULTIPLIER
    max_backoff_seconds: float = DEFAULT_MAX_BACKOFF_SECONDS

    def __post_init__(self) -> None:
        if not 1 <= self.max_attempts <= MAX_ATTEMPTS_LIMIT:
            raise ValueError(f"max_attempts must be 1 to {MAX_ATTEMPTS_LIMIT}")
        if self.backoff_seconds < 0 or self.max_backoff_seconds < 0 or self.multiplier < 1:
            raise ValueError("backoff must be >= 0 and multiplier >= 1")

    def delay_seconds(self, retry_number: int, retry_after_seconds: float | None = None) -> float:
        """The wait before retry ``retry_number`` (1 for the first retry)."""
        ceiling = min(
            self.max_backoff_seconds, self.backoff_seconds * self.multiplier ** (retry_number - 1)
        )
        # Jitter only spreads clients apart; it needs no cryptographic randomness.
        delay = random.uniform(ceiling / 2, ceiling)  # noqa: S311
        if retry_after_seconds is not None:
            delay = max(delay, min(retry_after_seconds, self.max_backoff_seconds))
        return delay


DEFAULT_RETRY_POLICY = RetryPolicy()
NO_RETRIES = RetryPolicy(max_attempts=1)


def is_retryable_status(status_code: int) -> bool:
    return status_code >= 500


def retry_after_seconds(response: httpx.Response) -> float | None:
    """A ``Retry-After`` header given in seconds (the HTTP-date form is ignored)."""
    value = response.headers.get("retry-after", "").strip()
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
