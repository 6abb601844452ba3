"""What the calls return: small frozen dataclasses, parsed from the ``data`` of an answer.

Field names are the wire names in Python spelling (``ledgerEntryId`` ->
``ledger_entry_id``); the Token Process dialect's ``token`` (a balance) keeps its name. A field the
service did not send is ``None``, so that an older or newer service still parses.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

ACCESSIBLE = "access-able"
RETURNABLE = "return-able"


def _int(data: dict[str, Any], name: str) -> int:
    value = data.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"the token service's answer has no integer {name!r}")
    return value


def _optional_int(data: dict[str, Any], name: str) -> int | None:
    value = data.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _optional_str(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    return value if isinstance(value, str) else None


def _optional_time(data: dict[str, Any], name: str) -> datetime | None:
    value = data.get(name)
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _object(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValueError("the token service's answer has no data object")
    return data


@dataclass(frozen=True, slots=True)
class Balance:
    """``GET /api/tokens/balance/{userId}``: ``available`` is what the user may spend."""

    user_id: str
    balance: int
    available: int
    held: int
    spent: int
    status: str | None
    plan: str | None
    # What the balance is made of: paid and promotional tokens, and the next expiry of
    # a grant (None when none expires). None from a service that does not say.
    paid: int | None = None
    promotional: int | None = None
    next_expiry_at: datetime | None = None
    next_expiry_amount: int | None = None

    @classmethod
    def parse(cls, data: Any) -> Balance:
        data = _object(data)
        balance = _int(data, "balance")
        available = _optional_int(data, "available")
        expiry = data.get("nextExpiry")
        expiry = expiry if isinstance(expiry, dict) else {}
        return cls(
            user_id=_optional_str(data, "userId") or "",
            balance=balance,
            available=balance if available is None else available,
            held=_optional_int(data, "held") or 0,
            spent=_optional_int(data, "spent") or 0,
            status=_optional_str(data, "status"),
            plan=_optional_str(data, "plan"),
            paid=_optional_int(data, "paid"),
            promotional=_optional_int(data, "promotional"),
            next_expiry_at=_optional_time(expiry, "at"),
            next_expiry_amount=_optional_int(expiry, "amount"),
        )


@dataclass(frozen=True, slots=True)
class Grant:
    """One grant of a wallet (``GET /api/tokens/grants/{userId}``): paid or promotional
    tokens, what remains of them, and when they expire (None: never). ``status`` is
    ``active``, ``spent`` or ``expired``; a credit scheduled for later is listed first
    with ``status`` ``scheduled``, no ``grant_id`` yet, its ``scheduled_credit_id``
    and ``effective_at``."""

    grant_id: int | None
    source: str
    category: str
    priority: int
    amount: int
    remaining: int
    expires_at: datetime | None
    created_at: datetime | None
    status: str
    scheduled_credit_id: int | None = None
    effective_at: datetime | None = None

    @classmethod
    def parse(cls, data: Any) -> Grant:
        data = _object(data)
        return cls(
            grant_id=_optional_int(data, "grantId"),
            source=_optional_str(data, "source") or "",
            category=_optional_str(data, "category") or "",
            priority=_int(data, "priority"),
            amount=_int(data, "amount"),
            remaining=_int(data, "remaining"),
            expires_at=_optional_time(data, "expiresAt"),
            created_at=_optional_time(data, "createdAt"),
            status=_optional_str(data, "status") or "",
            scheduled_credit_id=_optional_int(data, "scheduledCreditId"),
            effective_at=_optional_time(data, "effectiveAt"),
        )

    @staticmethod
    def parse_list(data: Any) -> list[Grant]:
        if not isinstance(data, list):
            raise ValueError("the token service's answer has no list of grants")
        return [Grant.parse(grant) for grant in data]


@dataclass(frozen=True, slots=True)
class Receipt:
    """What a deduct, refund or credit did: the balance after it and its ledger entry.

    ``replayed`` is true when the service answered a repeated idempotency key with
    the first result (nothing moved this time).
    """

    balance: int
    ledger_entry_id: int | None
    transaction_id: str | None
    replayed: bool
    # A credit scheduled for later: its id and when it takes effect (nothing moved yet).
    scheduled_credit_id: int | None = None
    effective_at: datetime | None = None

    @classmethod
    def parse(cls, data: Any) -> Receipt:
        data = _object(data)
        scheduled = data.get("scheduled")
        scheduled = scheduled if isinstance(scheduled, dict) else {}
        return cls(
            balance=_int(data, "balance"),
            ledger_entry_id=_optional_int(data, "ledgerEntryId"),
            transaction_id=_optional_str(data, "transactionId"),
            replayed=data.get("replayed") is True,
            scheduled_credit_id=_optional_int(scheduled, "scheduledCreditId"),
            effective_at=_optional_time(scheduled, "effectiveAt"),
        )


@dataclass(frozen=True, slots=True)
class Charge:
    """Tokens deducted for one piece of work, and how to name them in a refund."""

    user_id: str
    amount: int
    reference_id: str
    receipt: Receipt

    @property
    def balance(self) -> int:
        return self.receipt.balance

    @property
    def ledger_entry_id(self) -> int | None:
        return self.receipt.ledger_entry_id


@dataclass(frozen=True, slots=True)
class Hold:
    """A reservation of tokens (two-phase spending) after a place, capture, void or read.

    ``status`` is ``pending``, ``captured``, ``voided`` or ``expired``. Place, capture
    and void answers carry the wallet's ``balance`` and ``available``; a read carries
    ``operation_type``, ``created_at`` and ``resolved_at`` instead.
    """

    hold_id: str
    user_id: str | None
    status: str
    amount: int
    captured_amount: int | None
    expires_at: datetime | None
    balance: int | None = None
    available: int | None = None
    ledger_entry_id: int | None = None
    transaction_id: str | None = None
    replayed: bool = False
    operation_type: str | None = None
    created_at: datetime | None = None
    resolved_at: datetime | None = None

    @classmethod
    def parse(cls, data: Any) -> Hold:
        data = _object(data)
        return cls(
            hold_id=_optional_str(data, "holdId") or "",
            user_id=_optional_str(data, "userId"),
            status=_optional_str(data, "status") or "",
            amount=_int(data, "amount"),
            captured_amount=_optional_int(data, "capturedAmount"),
            expires_at=_optional_time(data, "expiresAt"),
            balance=_optional_int(data, "balance"),
            available=_optional_int(data, "available"),
            ledger_entry_id=_optional_int(data, "ledgerEntryId"),
            transaction_id=_optional_str(data, "transactionId"),
            replayed=data.get("replayed") is True,
            operation_type=_optional_str(data, "operationType"),
            created_at=_optional_time(data, "createdAt"),
            resolved_at=_optional_time(data, "resolvedAt"),
        )


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One entry of a user's ledger; ``amount`` is negative for a debit or capture."""

    id: int
    transaction_id: str | None
    operation_type: str
    amount: int
    balance_before: int | None
    balance_after: int | None
    description: str | None
    metadata: dict[str, Any] | None
    created_at: datetime | None
    refund_of: str | None
    hold_id: str | None

    @classmethod
    def parse(cls, data: Any) -> LedgerEntry:
        data = _object(data)
        metadata = data.get("metadata")
        return cls(
            id=_int(data, "id"),
            transaction_id=_optional_str(data, "transactionId"),
            operation_type=_optional_str(data, "type") or "",
            amount=_int(data, "amount"),
            balance_before=_optional_int(data, "balanceBefore"),
            balance_after=_optional_int(data, "balanceAfter"),
            description=_optional_str(data, "description"),
            metadata=metadata if isinstance(metadata, dict) else None,
            created_at=_optional_time(data, "createdAt"),
            refund_of=_optional_str(data, "refundOf"),
            hold_id=_optional_str(data, "holdId"),
        )

    @staticmethod
    def parse_page(data: Any) -> list[LedgerEntry]:
        entries = _object(data).get("entries")
        if not isinstance(entries, list):
            raise ValueError("the token service's answer has no list of entries")
        return [LedgerEntry.parse(entry) for entry in entries]


@dataclass(frozen=True, slots=True)
class Stats:
    """A user's totals over a period."""

    total_spent: int
    total_earned: int
    net_change: int
    operation_count: int

    @classmethod
    def parse(cls, data: Any) -> Stats:
        data = _object(data)
        return cls(
            total_spent=_int(data, "totalSpent"),
            total_earned=_int(data, "totalEarned"),
            net_change=_int(data, "netChange"),
            operation_count=_int(data, "operationCount"),
        )


@dataclass(frozen=True, slots=True)
class Cost:
    """One row of the service's cost table, with its dollar estimate."""

    action: str
    tokens: int
    estimated_usd: str | None
    estimated_usd_cents: int | None

    @classmethod
    def parse(cls, data: Any) -> Cost:
        data = _object(data)
        return cls(
            action=_optional_str(data, "action") or "",
            tokens=_int(data, "tokens"),
            estimated_usd=_optional_str(data, "estimatedUsd"),
            estimated_usd_cents=_optional_int(data, "estimatedUsdCents"),
        )

    @staticmethod
    def parse_table(data: Any) -> list[Cost]:
        if not isinstance(data, list):
            raise ValueError("the token service's answer has no cost table")
        return [Cost.parse(row) for row in data]


@dataclass(frozen=True, slots=True)
class Estimate:
    """What an action, an amount or a usage would cost; nothing is written.

    ``current_balance``, ``can_afford`` and ``remaining_after`` are ``None`` when no
    user was named.
    """

    action: str
    cost: int
    exact_cost: str | None
    current_balance: int | None
    available: int | None
    can_afford: bool | None
    remaining_after: int | None
    rule: dict[str, Any] | None

    @classmethod
    def parse(cls, data: Any) -> Estimate:
        data = _object(data)
        can_afford = data.get("canAfford")
        rule = data.get("rule")
        return cls(
            action=_optional_str(data, "action") or "",
            cost=_int(data, "cost"),
            exact_cost=_optional_str(data, "exactCost"),
            current_balance=_optional_int(data, "currentBalance"),
            available=_optional_int(data, "available"),
            can_afford=can_afford if isinstance(can_afford, bool) else None,
            remaining_after=_optional_int(data, "remainingAfter"),
            rule=rule if isinstance(rule, dict) else None,
        )


@dataclass(frozen=True, slots=True)
class Wallet:
    """A wallet just opened (``created``), or one that already existed."""

    user_id: str
    balance: int
    created: bool
    welcome_bonus: int

    @classmethod
    def parse(cls, data: Any) -> Wallet:
        data = _object(data)
        return cls(
            user_id=_optional_str(data, "userId") or "",
            balance=_int(data, "balance"),
            created=data.get("created") is True,
            welcome_bonus=_optional_int(data, "welcomeBonus") or 0,
        )


@dataclass(frozen=True, slots=True)
class ProcessStart:
    """the Token Process dialect's start answer: ``token`` is the balance, ``status`` the verdict.

    In hold mode ``hold_id`` names the tokens reserved for this process.
    """

    user_id: str
    token: int
    available: int | None
    status: str
    hold_id: str | None
    hold_expires_at: datetime | None

    @property
    def accessible(self) -> bool:
        return self.status == ACCESSIBLE

    @classmethod
    def parse(cls, data: Any) -> ProcessStart:
        data = _object(data)
        return cls(
            user_id=_optional_str(data, "user_id") or "",
            token=_int(data, "token"),
            available=_optional_int(data, "available"),
            status=_optional_str(data, "status") or "",
            hold_id=_optional_str(data, "hold_id"),
            hold_expires_at=_optional_time(data, "hold_expires_at"),
        )


@dataclass(frozen=True, slots=True)
class ProcessEnd:
    """the Token Process dialect's end answer: ``cost`` charged, ``token`` the balance after it.

    ``status`` is ``return-able``, or ``not-return-able`` when the usage overdrew
    the wallet (the charge is kept; the wallet is suspended until topped up).
    """

    user_id: str
    token: int
    cost: int
    status: str
    exact_cost: str | None
    transaction_id: str | None
    hold_id: str | None

    @property
    def returnable(self) -> bool:
        return self.status == RETURNABLE

    @classmethod
    def parse(cls, data: Any) -> ProcessEnd:
        data = _object(data)
        return cls(
            user_id=_optional_str(data, "user_id") or "",
            token=_int(data, "token"),
            cost=_int(data, "cost"),
            status=_optional_str(data, "status") or "",
            exact_cost=_optional_str(data, "exact_cost"),
            transaction_id=_optional_str(data, "transaction_id"),
            hold_id=_optional_str(data, "hold_id"),
        )
