"""Pieces of "charge, then refund on failure" and "reserve, then settle" that do no I/O.

A follow-up call (the refund of a charge, the capture of a reservation) takes a key
derived from the first call's key, so that retrying it can never move tokens twice.
When a follow-up fails even after its retries, the work is not undone by raising:
the failure is logged with the exact arguments that replay it.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from tokenbank.client._calls import derived_key
from tokenbank.client._models import Charge

logger = logging.getLogger("tokenbank.client")

REFUND_SUFFIX = "refund"
CAPTURE_SUFFIX = "capture"


def refund_arguments(charge: Charge, description: str | None) -> dict[str, Any]:
    """``client.refund(**these)`` gives back ``charge``, once, however often it runs."""
    return {
        "user_id": charge.user_id,
        "amount": charge.amount,
        "ledger_entry_id": charge.ledger_entry_id,
        "description": f"Refund: {description or 'work failed'}",
        "reference_id": derived_key(charge.reference_id, REFUND_SUFFIX),
    }


def capture_arguments(hold_id: str, amount: int, reference_id: str) -> dict[str, Any]:
    return {
        "hold_id": hold_id,
        "amount": amount,
        "reference_id": derived_key(reference_id, CAPTURE_SUFFIX),
    }


def log_failed_follow_up(method: str, arguments: dict[str, Any], error: BaseException) -> None:
    """Say what did not happen, and how to make it happen: ``client.<method>(**args)``."""
    replay = json.dumps(arguments, sort_keys=True, default=str)
    logger.error(
        "token service %s failed (%s: %s); replay with client.%s(**%s)",
        method,
        type(error).__name__,
        error,
        method,
        replay,
        extra={"tokenbank_replay": {"method": method, "arguments": arguments}},
    )
