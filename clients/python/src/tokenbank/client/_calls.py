"""Every endpoint as a description of one call, free of I/O.

The sync and async clients differ only in how they send; what they send (path, body,
idempotency key) and how they read the answer is built here once. A mutating call
carries one idempotency key, made here when the caller gave none, and the same key
goes in the body (``referenceId`` or ``request_id``) and in the ``Idempotency-Key``
header, for every attempt.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from tokenbank.client._config import MAX_IDEMPOTENCY_KEY_LENGTH
from tokenbank.client._models import (
    Balance,
    Cost,
    Estimate,
    Grant,
    Hold,
    LedgerEntry,
    ProcessEnd,
    ProcessStart,
    Receipt,
    Stats,
    Wallet,
)

T = TypeVar("T")

TOKENS_PATH = "/api/tokens"
PROCESS_PATH = "/api/token-process"


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One request and how to read its answer's ``data``."""

    method: str
    path: str
    parse: Callable[[Any], T]
    body: dict[str, Any] | None = None
    params: dict[str, str | int] | None = None
    idempotency_key: str | None = None
    # The Token Process dialect authenticates with x-server-api-key; the Token Service
    # dialect with Bearer.
    server_key_header: bool = False


def new_key() -> str:
    return str(uuid.uuid4())


def derived_key(key: str, suffix: str) -> str:
    """A second key that belongs to ``key`` (its refund, its capture), deterministic
    so that a retried follow-up reuses it; hashed when it would be too long."""
    derived = f"{key}:{suffix}"
    if len(derived) <= MAX_IDEMPOTENCY_KEY_LENGTH:
        return derived
    return f"{hashlib.sha256(key.encode()).hexdigest()}:{suffix}"


def _segment(value: str) -> str:
    return quote(value, safe="")


def _compact(fields: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in fields.items() if value is not None}


def _timestamp(name: str, value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware (the service compares instants)")
    return value.isoformat()


# --- dialect A: /api/tokens, /api/users, /api/costs, /api/estimate ------------------------


def balance(user_id: str) -> Call[Balance]:
    return Call("GET", f"{TOKENS_PATH}/balance/{_segment(user_id)}", Balance.parse)


def deduct(
    user_id: str,
    amount: int,
    *,
    description: str | None,
    reference_id: str | None,
    operation_type: str | None,
    metadata: dict[str, Any] | None,
) -> Call[Receipt]:
    key = reference_id or new_key()
    body = _compact(
        {
            "userId": user_id,
            "amount": amount,
            "description": description,
            "referenceId": key,
            "operationType": operation_type,
            "metadata": metadata,
        }
    )
    return Call("POST", f"{TOKENS_PATH}/deduct", Receipt.parse, body=body, idempotency_key=key)


def refund(
    user_id: str,
    amount: int,
    *,
    ledger_entry_id: int | None,
    refund_of: str | None,
    description: str | None,
    reference_id: str | None,
    metadata: dict[str, Any] | None,
) -> Call[Receipt]:
    key = reference_id or new_key()
    body = _compact(
        {
            "userId": user_id,
            "amount": amount,
            "ledgerEntryId": ledger_entry_id,
            "refundOf": refund_of,
            "description": description,
            "referenceId": key,
            "metadata": metadata,
        }
    )
    return Call("POST", f"{TOKENS_PATH}/refund", Receipt.parse, body=body, idempotency_key=key)


def credit(
    user_id: str,
    amount: int,
    *,
    operation_type: str | None,
    description: str | None,
    reference_id: str | None,
    metadata: dict[str, Any] | None,
    category: str | None = None,
    priority: int | None = None,
    expires_at: datetime | None = None,
    effective_at: datetime | None = None,
) -> Call[Receipt]:
    key = reference_id or new_key()
    body = _compact(
        {
            "userId": user_id,
            "amount": amount,
            "operationType": operation_type,
            "description": description,
            "referenceId": key,
            "metadata": metadata,
            "category": category,
            "priority": priority,
            "expiresAt": _timestamp("expires_at", expires_at),
            "effectiveAt": _timestamp("effective_at", effective_at),
        }
    )
    return Call("POST", f"{TOKENS_PATH}/credit", Receipt.parse, body=body, idempotency_key=key)


def hold(
    user_id: str,
    amount: int,
    *,
    ttl_seconds: int | None,
    description: str | None,
    reference_id: str | None,
    operation_type: str | None,
    metadata: dict[str, Any] | None,
) -> Call[Hold]:
    key = reference_id or new_key()
    body = _compact(
        {
            "userId": user_id,
            "amount": amount,
            "ttlSeconds": ttl_seconds,
            "operationType": operation_type,
            "description": description,
            "referenceId": key,
            "metadata": metadata,
        }
    )
    return Call("POST", f"{TOKENS_PATH}/holds", Hold.parse, body=body, idempotency_key=key)


def capture(
    hold_id: str,
    amount: int,
    *,
    description: str | None,
    reference_id: str | None,
    metadata: dict[str, Any] | None,
) -> Call[Hold]:
    key = reference_id or new_key()
    body = _compact(
        {"amount": amount, "description": description, "referenceId": key, "metadata": metadata}
    )
    path = f"{TOKENS_PATH}/holds/{_segment(hold_id)}/capture"
    return Call("POST", path, Hold.parse, body=body, idempotency_key=key)


def void(hold_id: str) -> Call[Hold]:
    # A void is idempotent by its hold: voiding a voided hold answers success again.
    return Call("POST", f"{TOKENS_PATH}/holds/{_segment(hold_id)}/void", Hold.parse, body={})


def get_hold(hold_id: str) -> Call[Hold]:
    return Call("GET", f"{TOKENS_PATH}/holds/{_segment(hold_id)}", Hold.parse)


def ledger(
    user_id: str,
    *,
    limit: int | None,
    offset: int | None,
    operation_type: str | None,
    start_date: datetime | None,
    end_date: datetime | None,
) -> Call[list[LedgerEntry]]:
    params = _compact(
        {
            "limit": limit,
            "offset": offset,
            "type": operation_type,
            "startDate": _timestamp("start_date", start_date),
            "endDate": _timestamp("end_date", end_date),
        }
    )
    path = f"{TOKENS_PATH}/ledger/{_segment(user_id)}"
    return Call("GET", path, LedgerEntry.parse_page, params=params)


def grants(user_id: str, *, limit: int | None, offset: int | None) -> Call[list[Grant]]:
    params = _compact({"limit": limit, "offset": offset})
    return Call("GET", f"{TOKENS_PATH}/grants/{_segment(user_id)}", Grant.parse_list, params=params)


def stats(user_id: str, *, start_date: datetime | None, end_date: datetime | None) -> Call[Stats]:
    params = _compact(
        {
            "startDate": _timestamp("start_date", start_date),
            "endDate": _timestamp("end_date", end_date),
        }
    )
    return Call("GET", f"{TOKENS_PATH}/stats/{_segment(user_id)}", Stats.parse, params=params)


def costs() -> Call[list[Cost]]:
    return Call("GET", "/api/costs", Cost.parse_table)


def estimate(
    *,
    user_id: str | None,
    action: str | None,
    amount: int | None,
    feature_endpoint_id: str | None,
    model: str | None,
    input_tokens: int | None,
    output_tokens: int | None,
) -> Call[Estimate]:
    body = _compact(
        {
            "userId": user_id,
            "action": action,
            "amount": amount,
            "featureEndpointId": feature_endpoint_id,
            "model": model,
            "inputTokens": input_tokens,
            "outputTokens": output_tokens,
        }
    )
    return Call("POST", "/api/estimate", Estimate.parse, body=body)


def open_wallet(user_id: str) -> Call[Wallet]:
    # Idempotent by the user id itself: opening an open wallet grants nothing.
    return Call("POST", "/api/users", Wallet.parse, body={"userId": user_id})


# --- dialect B: /api/token-process ----------------------------------------------------------


def start_token_process(
    user_id: str,
    feature_endpoint_id: str,
    *,
    hold: bool | None,
    hold_tokens: int | None,
    request_id: str | None,
) -> Call[ProcessStart]:
    key = request_id or new_key()
    body = _compact(
        {
            "user_id": user_id,
            "feature_endpoint_id": feature_endpoint_id,
            "hold": hold,
            "hold_tokens": hold_tokens,
            "request_id": key,
        }
    )
    return Call(
        "POST",
        f"{PROCESS_PATH}/start",
        ProcessStart.parse,
        body=body,
        idempotency_key=key,
        server_key_header=True,
    )


def end_token_process(
    user_id: str,
    feature_endpoint_id: str,
    *,
    input_token: int,
    output_token: int,
    model: str | None,
    request_id: str | None,
    hold_id: str | None,
) -> Call[ProcessEnd]:
    key = request_id or new_key()
    body = _compact(
        {
            "user_id": user_id,
            "feature_endpoint_id": feature_endpoint_id,
            "input_token": input_token,
            "output_token": output_token,
            "model": model,
            "request_id": key,
            "hold_id": hold_id,
        }
    )
    return Call(
        "POST",
        f"{PROCESS_PATH}/end",
        ProcessEnd.parse,
        body=body,
        idempotency_key=key,
        server_key_header=True,
    )
