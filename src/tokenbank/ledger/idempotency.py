"""Idempotency keys: which requests register one, and the registry row they write."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tokenbank.ledger.operations import (
    CaptureHold,
    Credit,
    Debit,
    LedgerOperation,
    PlaceHold,
    Refund,
)

# The requests whose keys the writer claims and replays. A clawback is not among them:
# it runs in its callers' own transactions too, so its handler keeps its key itself.
KEYED_OPERATIONS: dict[type, str] = {
    Credit: "credit",
    Debit: "debit",
    Refund: "refund",
    PlaceHold: "hold",
    CaptureHold: "capture",
}


def key_row(op: LedgerOperation, operation: str, now: datetime) -> dict[str, Any]:
    return {
        "scope": op.idempotency_scope,
        "key": op.idempotency_key,
        "request_hash": op.request_hash(),
        "operation": operation,
        "created_at": now,
    }
