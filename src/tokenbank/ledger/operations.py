"""The operations the ledger writer applies, each validated when it is built.

An operation is a plain immutable value: it can be queued, batched with others and
applied in one database transaction. Validation happens here, before any database
work, so bad input raises :class:`InvalidInput` and writes nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tokenbank.config import (
    MAX_DESCRIPTION_LENGTH,
    MAX_HOLD_TTL_SECONDS,
    MAX_IDEMPOTENCY_KEY_LENGTH,
    MAX_OPERATION_TYPE_LENGTH,
)
from tokenbank.errors import InvalidInput
from tokenbank.ledger.accounts import CREDIT_OPERATION_TYPES, RESERVED_OPERATION_TYPES, USAGE
from tokenbank.ledger.grants import (
    DEFAULT_GRANT_PRIORITY,
    GRANT_CATEGORIES,
    MAX_GRANT_PRIORITY,
    MIN_GRANT_PRIORITY,
    default_category,
)
from tokenbank.validation import (
    validate_amount,
    validate_metadata,
    validate_text,
    validate_user_id,
)

OPERATION_TYPE_PATTERN = re.compile(r"^[a-z][a-z0-9_.:-]*$")
HOLD_ID_PATTERN = re.compile(r"^hold_[0-9a-f]{32}$")
TRANSACTION_ID_PATTERN = re.compile(r"^[0-9a-f-]{36}$")


def validate_operation_type(value: object) -> None:
    validate_text(
        value, field_name="operation_type", max_length=MAX_OPERATION_TYPE_LENGTH, required=True
    )
    if not OPERATION_TYPE_PATTERN.fullmatch(str(value)):
        raise InvalidInput(
            "operation_type", "must be lower case letters, digits and _ . : - (a letter first)"
        )


def validate_common(op: LedgerOperation) -> None:
    validate_text(
        op.description, field_name="description", max_length=MAX_DESCRIPTION_LENGTH, required=False
    )
    validate_metadata(op.metadata)
    validate_text(
        op.idempotency_key,
        field_name="idempotency_key",
        max_length=MAX_IDEMPOTENCY_KEY_LENGTH,
        required=False,
    )
    if op.idempotency_key is not None and not op.idempotency_key.strip():
        raise InvalidInput("idempotency_key", "must not be empty")
    if not isinstance(op.idempotency_scope, str) or len(op.idempotency_scope) > 64:
        raise InvalidInput("idempotency_scope", "must be a string of at most 64 characters")


def fingerprint(*parts: object) -> str:
    """What makes two requests "the same" for an idempotency key.

    Only the fields that move money count: metadata and descriptions often carry
    timestamps that differ between a request and its retry.
    """
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class SpendCap:
    """The daily spend cap of the API key an operation is made with (issue 14).

    What the operation debits counts against ``cap_tokens`` for the key and the UTC
    day, in the same database transaction as the debit (``ledger/spend_caps.py``).
    Not part of a request's fingerprint: a retry is the same request whatever the cap.
    """

    key_id: int
    cap_tokens: int

    def __post_init__(self) -> None:
        validate_amount(self.cap_tokens, field_name="daily_spend_cap_tokens")


@dataclass(frozen=True, slots=True, kw_only=True)
class LedgerOperation:
    description: str | None = None
    metadata: dict[str, Any] | None = None
    idempotency_key: str | None = None
    # Keys of different apps never collide: each app has its own scope.
    idempotency_scope: str = ""

    def request_hash(self) -> str:
        raise NotImplementedError

    @property
    def user_key(self) -> str | None:
        """The user whose balance this operation changes, when known up front."""
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenWallet(LedgerOperation):
    user_id: str
    welcome_bonus_tokens: int = 0
    welcome_bonus_expires_at: datetime | None = None

    def __post_init__(self) -> None:
        validate_user_id(self.user_id)
        validate_amount(self.welcome_bonus_tokens, field_name="welcome_bonus", allow_zero=True)

    def request_hash(self) -> str:
        return fingerprint("open", self.user_id)

    @property
    def user_key(self) -> str:
        return self.user_id


@dataclass(frozen=True, slots=True, kw_only=True)
class Credit(LedgerOperation):
    """Add tokens to a wallet as one grant (decision 13, docs/architecture.md).

    ``category`` defaults by source (purchases are paid, the rest promotional),
    ``priority`` to the default; ``expires_at`` None never expires. A credit with
    ``effective_at`` in the future is scheduled: it changes nothing until then.
    """

    user_id: str
    amount_tokens: int
    operation_type: str = "purchase"
    category: str | None = None
    priority: int = DEFAULT_GRANT_PRIORITY
    expires_at: datetime | None = None
    effective_at: datetime | None = None

    def __post_init__(self) -> None:
        validate_user_id(self.user_id)
        validate_amount(self.amount_tokens)
        validate_operation_type(self.operation_type)
        if self.operation_type not in CREDIT_OPERATION_TYPES:
            known = ", ".join(sorted(CREDIT_OPERATION_TYPES))
            raise InvalidInput("operation_type", f"a credit must be one of: {known}")
        validate_grant_terms(self.category, self.priority, self.expires_at)
        validate_effective_at(self.effective_at, self.expires_at)
        validate_common(self)

    def scheduled(self, now: datetime) -> bool:
        """Whether it takes effect later than ``now`` (then it waits)."""
        return self.effective_at is not None and self.effective_at > now

    @property
    def grant_category(self) -> str:
        return self.category or default_category(self.operation_type)

    def request_hash(self) -> str:
        parts: list[object] = ["credit", self.user_id, self.amount_tokens, self.operation_type]
        # Only terms that differ from the defaults join the fingerprint, so that keys
        # recorded before grants existed keep their hashes.
        terms = (self.category, self.priority, self.expires_at)
        if terms != (None, DEFAULT_GRANT_PRIORITY, None):
            parts.extend([self.grant_category, self.priority, self.expires_at])
        if self.effective_at is not None:
            parts.extend(["effective", self.effective_at])
        return fingerprint(*parts)

    @property
    def user_key(self) -> str:
        return self.user_id


@dataclass(frozen=True, slots=True, kw_only=True)
class Debit(LedgerOperation):
    """Take tokens from a wallet.

    ``allow_overdraft`` is for usage that already happened (decision 6,
    docs/architecture.md): the full cost is recorded even past zero, and an overdrawn
    wallet is suspended.
    """

    user_id: str
    amount_tokens: int
    operation_type: str = USAGE
    allow_overdraft: bool = False
    pricing: dict[str, Any] | None = field(default=None)
    spend_cap: SpendCap | None = None

    def __post_init__(self) -> None:
        validate_user_id(self.user_id)
        validate_amount(self.amount_tokens)
        validate_operation_type(self.operation_type)
        if self.operation_type in RESERVED_OPERATION_TYPES:
            raise InvalidInput("operation_type", f"{self.operation_type!r} is not a debit")
        if not isinstance(self.allow_overdraft, bool):
            raise InvalidInput("allow_overdraft", "must be true or false")
        validate_metadata(self.pricing, field_name="pricing")
        validate_common(self)

    def request_hash(self) -> str:
        return fingerprint(
            "debit", self.user_id, self.amount_tokens, self.operation_type, self.allow_overdraft
        )

    @property
    def user_key(self) -> str:
        return self.user_id


@dataclass(frozen=True, slots=True, kw_only=True)
class Refund(LedgerOperation):
    """Give back tokens that were spent; never more than the named debit, or than spent."""

    user_id: str
    amount_tokens: int
    refund_of: str | None = None

    def __post_init__(self) -> None:
        validate_user_id(self.user_id)
        validate_amount(self.amount_tokens)
        if self.refund_of is not None and not TRANSACTION_ID_PATTERN.fullmatch(str(self.refund_of)):
            raise InvalidInput("refund_of", "must be a transaction id")
        validate_common(self)

    def request_hash(self) -> str:
        return fingerprint("refund", self.user_id, self.amount_tokens, self.refund_of)

    @property
    def user_key(self) -> str:
        return self.user_id


@dataclass(frozen=True, slots=True, kw_only=True)
class PlaceHold(LedgerOperation):
    user_id: str
    amount_tokens: int
    ttl_seconds: int
    operation_type: str = USAGE
    spend_cap: SpendCap | None = None

    def __post_init__(self) -> None:
        validate_user_id(self.user_id)
        validate_amount(self.amount_tokens)
        if not isinstance(self.ttl_seconds, int) or isinstance(self.ttl_seconds, bool):
            raise InvalidInput("ttl_seconds", "must be a whole number of seconds")
        if not 1 <= self.ttl_seconds <= MAX_HOLD_TTL_SECONDS:
            raise InvalidInput("ttl_seconds", f"must be between 1 and {MAX_HOLD_TTL_SECONDS}")
        validate_operation_type(self.operation_type)
        if self.operation_type in RESERVED_OPERATION_TYPES:
            raise InvalidInput("operation_type", f"{self.operation_type!r} is not a debit")
        validate_common(self)

    def request_hash(self) -> str:
        return fingerprint(
            "hold", self.user_id, self.amount_tokens, self.ttl_seconds, self.operation_type
        )

    @property
    def user_key(self) -> str:
        return self.user_id


@dataclass(frozen=True, slots=True, kw_only=True)
class ClawBack(LedgerOperation):
    """Take back what is left of one credit's grant (decision 13, docs/architecture.md).

    At most ``amount_tokens``, from the grant ``credit_transaction_id`` made and from
    no other, and never what the wallet's pending holds need; what cannot be taken is
    the caller's to report (a refunded purchase's tokens already spent).
    """

    user_id: str
    credit_transaction_id: str
    amount_tokens: int

    def __post_init__(self) -> None:
        validate_user_id(self.user_id)
        if not TRANSACTION_ID_PATTERN.fullmatch(str(self.credit_transaction_id)):
            raise InvalidInput("credit_transaction_id", "must be a transaction id")
        validate_amount(self.amount_tokens)
        validate_common(self)

    def request_hash(self) -> str:
        return fingerprint("clawback", self.user_id, self.credit_transaction_id, self.amount_tokens)

    @property
    def user_key(self) -> str:
        return self.user_id


def validate_grant_terms(category: object, priority: object, expires_at: object) -> None:
    if category is not None and category not in GRANT_CATEGORIES:
        raise InvalidInput("category", f"must be one of: {', '.join(GRANT_CATEGORIES)}")
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise InvalidInput("priority", "must be a whole number")
    if not MIN_GRANT_PRIORITY <= priority <= MAX_GRANT_PRIORITY:
        raise InvalidInput("priority", f"must be from {MIN_GRANT_PRIORITY} to {MAX_GRANT_PRIORITY}")
    if expires_at is not None and (
        not isinstance(expires_at, datetime) or expires_at.tzinfo is None
    ):
        raise InvalidInput("expires_at", "must be a date-time with a timezone")


def validate_effective_at(effective_at: object, expires_at: datetime | None) -> None:
    if effective_at is None:
        return
    if not isinstance(effective_at, datetime) or effective_at.tzinfo is None:
        raise InvalidInput("effective_at", "must be a date-time with a timezone")
    if expires_at is not None and expires_at <= effective_at:
        raise InvalidInput("expires_at", "must be after effective_at")


def validate_hold_id(value: object) -> None:
    if not isinstance(value, str) or not HOLD_ID_PATTERN.fullmatch(value):
        raise InvalidInput("hold_id", "must be a hold id (hold_ followed by 32 hex digits)")


@dataclass(frozen=True, slots=True, kw_only=True)
class CaptureHold(LedgerOperation):
    """Settle a hold for the actual amount (less, equal or more than held)."""

    hold_id: str
    amount_tokens: int
    pricing: dict[str, Any] | None = None
    spend_cap: SpendCap | None = None

    def __post_init__(self) -> None:
        validate_hold_id(self.hold_id)
        validate_amount(self.amount_tokens, allow_zero=True)
        validate_metadata(self.pricing, field_name="pricing")
        validate_common(self)

    def request_hash(self) -> str:
        return fingerprint("capture", self.hold_id, self.amount_tokens)


@dataclass(frozen=True, slots=True, kw_only=True)
class VoidHold(LedgerOperation):
    hold_id: str

    def __post_init__(self) -> None:
        validate_hold_id(self.hold_id)

    def request_hash(self) -> str:
        return fingerprint("void", self.hold_id)


Operation = OpenWallet | Credit | Debit | Refund | ClawBack | PlaceHold | CaptureHold | VoidHold
