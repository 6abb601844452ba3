"""The ledger's part of /metrics: each operation counted by name and outcome.

Children are looked up once per (operation, outcome) and kept, since this runs on
every deduct (a label lookup takes a lock).
"""

from __future__ import annotations

from prometheus_client.metrics import Counter

from tokenbank.ledger.errors import ErrorCode
from tokenbank.ledger.results import LedgerResult
from tokenbank.metrics import ledger_operations_total

_counters: dict[tuple[str, str], Counter] = {}


def outcome_of(result: LedgerResult) -> str:
    """ok, replay, insufficient, conflict or refused (any other business refusal)."""
    if result.replayed:
        return "replay"
    if result.success:
        return "ok"
    if result.error_code == ErrorCode.INSUFFICIENT_TOKENS:
        return "insufficient"
    if result.error_code == ErrorCode.IDEMPOTENCY_CONFLICT:
        return "conflict"
    return "refused"


def count(operation: str, outcome: str) -> None:
    counter = _counters.get((operation, outcome))
    if counter is None:
        counter = _counters[(operation, outcome)] = ledger_operations_total.labels(
            operation, outcome
        )
    counter.inc()
