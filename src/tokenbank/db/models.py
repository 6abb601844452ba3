"""Table definitions: the single source of truth for the schema.

The migrations create exactly these tables (plus the triggers that SQLAlchemy cannot
express); a test compares the two. Every money invariant that a row can state about
itself is a CHECK constraint here, so that the database refuses a bad row even when
the Python layer is bypassed.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Computed,
    Date,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from tokenbank.db.types import BigId, UTCDateTime

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

WALLET_STATUSES = ("active", "suspended", "closed")
SUSPENSION_REASONS = ("overdraft", "admin")
TRANSACTION_KINDS = ("credit", "debit", "refund", "expiry", "clawback")
HOLD_STATUSES = ("pending", "captured", "voided", "expired")
SYSTEM_ACCOUNTS = (
    "tokens_sold",
    "tokens_granted",
    "tokens_consumed",
    "tokens_expired",
    "tokens_clawed_back",
)
GRANT_CATEGORIES = ("paid", "promotional")
MIN_GRANT_PRIORITY = 0
MAX_GRANT_PRIORITY = 100
# How a grant's remainder changes after it is granted (docs/architecture.md, decision 13).
GRANT_MOVEMENT_KINDS = ("consume", "capture", "return", "expire", "settle", "clawback")
# What a renewal does with what is left of the previous allocation (decision 16).
ALLOCATION_POLICIES = ("expire", "rollover", "keep")


def _in(column: str, values: tuple[str, ...]) -> str:
    quoted = ", ".join(f"'{value}'" for value in values)
    return f"{column} IN ({quoted})"


def _grant_term_checks() -> tuple[CheckConstraint, CheckConstraint]:
    """A grant's terms, as grants and scheduled credits both hold them."""
    return (
        CheckConstraint(_in("category", GRANT_CATEGORIES), name="category_known"),
        CheckConstraint(
            f"priority >= {MIN_GRANT_PRIORITY} AND priority <= {MAX_GRANT_PRIORITY}",
            name="priority_in_range",
        ),
    )


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Wallet(Base):
    """A user's token account with its cached balance (decision 2, docs/architecture.md)."""

    __tablename__ = "wallets"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(128), unique=True)
    balance_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    held_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    spent_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    status: Mapped[str] = mapped_column(String(16), default="active")
    suspended_reason: Mapped[str | None] = mapped_column(String(16))
    plan: Mapped[str | None] = mapped_column(String(64))
    last_renewal_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The earliest moment one of the wallet's grants expires and has not been expired
    # yet (never later than the truth): a spend checks it against its wallet row and
    # takes the slow path, which expires what is due, only when it has passed.
    next_grant_event_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When the wallet joined its plan: its renewal periods are whole months from here.
    plan_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When its plan's next allocation is due (None: not on a plan).
    renewal_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When the wallet last bought tokens (a paid purchase or auto-recharge).
    last_purchase_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Auto-recharge armed below this many available tokens (None: off). Kept by a
    # trigger from auto_recharge_settings; read by the trigger that queues a
    # recharge when a change takes the available tokens across it (decision 14).
    recharge_below_tokens: Mapped[int | None] = mapped_column(BigInteger)
    # The balance alert levels (decision 15), copied from balance_alert_levels by
    # triggers, so that the crossing trigger's WHEN clause reads the updated row only.
    low_balance_tokens: Mapped[int | None] = mapped_column(BigInteger)
    critical_balance_tokens: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint(_in("status", WALLET_STATUSES), name="status_known"),
        CheckConstraint(
            "suspended_reason IS NULL OR " + _in("suspended_reason", SUSPENSION_REASONS),
            name="suspended_reason_known",
        ),
        CheckConstraint(
            "(status = 'suspended') = (suspended_reason IS NOT NULL)",
            name="suspended_has_reason",
        ),
        CheckConstraint("held_tokens >= 0", name="held_not_negative"),
        CheckConstraint("spent_tokens >= 0", name="spent_not_negative"),
        # Decision 3 (docs/architecture.md): an active wallet can never spend more than
        # it has. Only usage that already happened (decision 6) may overdraw, and it
        # suspends the wallet.
        CheckConstraint(
            "status <> 'active' OR balance_tokens >= held_tokens",
            name="active_not_overdrawn",
        ),
        Index("ix_wallets_next_grant_event_at", "next_grant_event_at"),
        Index("ix_wallets_renewal_due_at", "renewal_due_at"),
    )


class LedgerTransaction(Base):
    """One atomic, balanced movement of tokens; append-only.

    The header row is inserted after its entries; a trigger refuses the header
    unless those entries sum to zero, and refuses any entry added afterwards.
    """

    __tablename__ = "ledger_transactions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    wallet_id: Mapped[int] = mapped_column(BigId, ForeignKey("wallets.id"))
    kind: Mapped[str] = mapped_column(String(16))
    operation_type: Mapped[str] = mapped_column(String(64))
    description: Mapped[str | None] = mapped_column(String(500))
    metadata_json: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)
    pricing: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    idempotency_scope: Mapped[str] = mapped_column(String(64), default="")
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    refund_of_id: Mapped[str | None] = mapped_column(
        String(36), ForeignKey("ledger_transactions.id")
    )
    hold_id: Mapped[str | None] = mapped_column(String(40), ForeignKey("holds.id"), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The credit a clawback takes back from: it may take from that credit's grants only
    # (decision 13; the header trigger of migration 0009).
    clawback_of_id: Mapped[str | None] = mapped_column(
        String(36), ForeignKey("ledger_transactions.id")
    )

    __table_args__ = (
        CheckConstraint(_in("kind", TRANSACTION_KINDS), name="kind_known"),
        CheckConstraint("refund_of_id IS NULL OR kind = 'refund'", name="refund_link_on_refund"),
        CheckConstraint(
            "(kind = 'clawback') = (clawback_of_id IS NOT NULL)", name="clawback_names_its_credit"
        ),
        UniqueConstraint(
            "idempotency_scope", "idempotency_key", name="uq_ledger_transactions_idempotency"
        ),
        Index("ix_ledger_transactions_wallet_created", "wallet_id", "created_at"),
        Index("ix_ledger_transactions_refund_of", "refund_of_id"),
        # Clawbacks only: every other header would add an entry of NULL.
        Index(
            "ix_ledger_transactions_clawback_of",
            "clawback_of_id",
            postgresql_where=text("clawback_of_id IS NOT NULL"),
            sqlite_where=text("clawback_of_id IS NOT NULL"),
        ),
    )


class LedgerEntry(Base):
    """One leg of a transaction: a wallet or a system account, and a signed amount."""

    __tablename__ = "ledger_entries"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    transaction_id: Mapped[str] = mapped_column(String(36))
    wallet_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("wallets.id"))
    system_account: Mapped[str | None] = mapped_column(String(32))
    amount_tokens: Mapped[int] = mapped_column(BigInteger)
    balance_before: Mapped[int | None] = mapped_column(BigInteger)
    balance_after: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        # Deferred: entries are written before their header (see LedgerTransaction).
        ForeignKeyConstraint(
            ["transaction_id"],
            ["ledger_transactions.id"],
            name="fk_ledger_entries_transaction_id_ledger_transactions",
            deferrable=True,
            initially="DEFERRED",
        ),
        CheckConstraint("amount_tokens <> 0", name="amount_not_zero"),
        CheckConstraint("(wallet_id IS NULL) <> (system_account IS NULL)", name="one_account"),
        CheckConstraint(
            "system_account IS NULL OR " + _in("system_account", SYSTEM_ACCOUNTS),
            name="system_account_known",
        ),
        CheckConstraint(
            "wallet_id IS NULL OR (balance_before IS NOT NULL"
            " AND balance_after = balance_before + amount_tokens)",
            name="wallet_balance_chain",
        ),
        CheckConstraint(
            "wallet_id IS NOT NULL OR (balance_before IS NULL AND balance_after IS NULL)",
            name="system_no_balance",
        ),
        Index("ix_ledger_entries_wallet_id", "wallet_id", "id"),
        Index("ix_ledger_entries_transaction_id", "transaction_id"),
    )


class Hold(Base):
    """A reservation of tokens (decision 5, docs/architecture.md); only a pending hold
    may change."""

    __tablename__ = "holds"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    wallet_id: Mapped[int] = mapped_column(BigId, ForeignKey("wallets.id"))
    amount_tokens: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    captured_tokens: Mapped[int | None] = mapped_column(BigInteger)
    operation_type: Mapped[str] = mapped_column(String(64))
    description: Mapped[str | None] = mapped_column(String(500))
    metadata_json: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)
    idempotency_scope: Mapped[str] = mapped_column(String(64), default="")
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint("amount_tokens > 0", name="amount_positive"),
        CheckConstraint(_in("status", HOLD_STATUSES), name="status_known"),
        CheckConstraint("(status = 'pending') = (resolved_at IS NULL)", name="resolved_at_set"),
        CheckConstraint(
            "(status = 'captured') = (captured_tokens IS NOT NULL)", name="captured_amount_set"
        ),
        CheckConstraint(
            "captured_tokens IS NULL OR captured_tokens >= 0", name="captured_not_negative"
        ),
        UniqueConstraint("idempotency_scope", "idempotency_key", name="uq_holds_idempotency"),
        Index("ix_holds_status_expires_at", "status", "expires_at"),
        Index("ix_holds_wallet_id_status", "wallet_id", "status"),
    )


class Grant(Base):
    """A lot of tokens in a wallet (decision 13, docs/architecture.md): its category,
    priority and expiry decide when debits consume it.

    A credit creates it in the credit's transaction; every later change of its
    remainder is a :class:`GrantMovement` of some transaction. Only the remainder may
    change (a trigger), and it stays between 0 and the granted amount (a CHECK).
    """

    __tablename__ = "grants"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    wallet_id: Mapped[int] = mapped_column(BigId, ForeignKey("wallets.id"))
    # NULL only for the grants that migration 0005 made of the balances it found.
    transaction_id: Mapped[str | None] = mapped_column(String(36))
    source: Mapped[str] = mapped_column(String(64))
    category: Mapped[str] = mapped_column(String(16))
    priority: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    amount_tokens: Mapped[int] = mapped_column(BigInteger)
    remaining_tokens: Mapped[int] = mapped_column(BigInteger)
    # Whether the grant has tokens left, kept by the database (stored on PostgreSQL,
    # virtual on SQLite; migration 0007): the wallet index holds this, not the
    # remainder, so a debit's change of a remainder is a HOT update on PostgreSQL
    # and a wallet's spent grants are not read again. Never written.
    live: Mapped[bool] = mapped_column(Boolean, Computed("remaining_tokens > 0"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        # Deferred: a grant is written before the header of the credit that makes it.
        ForeignKeyConstraint(
            ["transaction_id"],
            ["ledger_transactions.id"],
            name="fk_grants_transaction_id_ledger_transactions",
            deferrable=True,
            initially="DEFERRED",
        ),
        *_grant_term_checks(),
        CheckConstraint("amount_tokens > 0", name="amount_positive"),
        CheckConstraint(
            "remaining_tokens >= 0 AND remaining_tokens <= amount_tokens",
            name="remaining_within_amount",
        ),
        CheckConstraint(
            "transaction_id IS NOT NULL OR source = 'migration'", name="made_by_a_transaction"
        ),
        # A wallet's live grants (``live = true``); not on the remainder (see ``live``).
        Index("ix_grants_wallet_id", "wallet_id", "live"),
        Index("ix_grants_transaction_id", "transaction_id"),
    )


class ScheduledCredit(Base):
    """A credit that takes effect later (decision 13): nothing in the books until its
    ``effective_at``, then an ordinary credit (a grant) whose transaction it names.

    It is applied once: ``transaction_id`` goes from NULL to the credit's id and never
    changes again, and the row is never deleted (triggers, migration 0006).
    """

    __tablename__ = "scheduled_credits"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    wallet_id: Mapped[int] = mapped_column(BigId, ForeignKey("wallets.id"))
    operation_type: Mapped[str] = mapped_column(String(64))
    category: Mapped[str] = mapped_column(String(16))
    priority: Mapped[int] = mapped_column(Integer)
    amount_tokens: Mapped[int] = mapped_column(BigInteger)
    effective_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    description: Mapped[str | None] = mapped_column(String(500))
    metadata_json: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)
    idempotency_scope: Mapped[str] = mapped_column(String(64), default="")
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    # The credit that applied it (NULL while it waits).
    transaction_id: Mapped[str | None] = mapped_column(
        String(36), ForeignKey("ledger_transactions.id"), unique=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        *_grant_term_checks(),
        CheckConstraint("amount_tokens > 0", name="amount_positive"),
        CheckConstraint(
            "expires_at IS NULL OR expires_at > effective_at", name="expires_after_effective"
        ),
        UniqueConstraint(
            "idempotency_scope", "idempotency_key", name="uq_scheduled_credits_idempotency"
        ),
        Index("ix_scheduled_credits_effective_at", "effective_at"),
        Index("ix_scheduled_credits_wallet_id", "wallet_id"),
    )


class GrantMovement(Base):
    """One change of one grant's remainder, in one ledger transaction; append-only.

    ``consume`` (a debit) and ``capture`` (a settled hold) take tokens, ``return`` (a
    refund) gives back what one earlier consumption took, ``expire`` takes what an
    expired grant still holds, ``settle`` pays an overdraft from a new grant,
    ``clawback`` takes back what is left of the grant of one credit (a refunded or
    disputed purchase).
    """

    __tablename__ = "grant_movements"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    transaction_id: Mapped[str] = mapped_column(String(36))
    # No foreign key: the movements trigger refuses an unknown grant, and grants are
    # never deleted; a key's check per row was a measurable part of every debit.
    grant_id: Mapped[int] = mapped_column(BigId)
    kind: Mapped[str] = mapped_column(String(16))
    amount_tokens: Mapped[int] = mapped_column(BigInteger)
    returns_movement_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("grant_movements.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        ForeignKeyConstraint(
            ["transaction_id"],
            ["ledger_transactions.id"],
            name="fk_grant_movements_transaction_id_ledger_transactions",
            deferrable=True,
            initially="DEFERRED",
        ),
        CheckConstraint(_in("kind", GRANT_MOVEMENT_KINDS), name="kind_known"),
        CheckConstraint(
            "(kind = 'return') = (amount_tokens > 0) AND amount_tokens <> 0",
            name="sign_follows_kind",
        ),
        CheckConstraint(
            "(kind = 'return') = (returns_movement_id IS NOT NULL)",
            name="return_names_its_consumption",
        ),
        Index("ix_grant_movements_transaction_id", "transaction_id"),
        # Returns only (migration 0007): most movements are consumptions, which need
        # no entry here; a lookup by a consumption's id implies IS NOT NULL.
        Index(
            "ix_grant_movements_returns_movement_id",
            "returns_movement_id",
            postgresql_where=text("returns_movement_id IS NOT NULL"),
            sqlite_where=text("returns_movement_id IS NOT NULL"),
        ),
    )


class OperationCost(Base):
    """The editable cost table: what one operation of a type costs in tokens."""

    __tablename__ = "operation_costs"

    operation_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    cost_tokens: Mapped[int] = mapped_column(BigInteger)
    description: Mapped[str | None] = mapped_column(String(500))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint("cost_tokens > 0 AND cost_tokens <= 1000000000000", name="cost_in_range"),
    )


# --- apps and API keys (issue: HTTP service) ---------------------------------------------

API_SCOPES = ("read", "spend", "refund", "credit", "payments", "admin")


class App(Base):
    """A registered calling service; it authenticates with API keys."""

    __tablename__ = "apps"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AppOrigin(Base):
    """A web origin an app registered: its pages may embed the balance widget (CORS)."""

    __tablename__ = "app_origins"

    app_id: Mapped[int] = mapped_column(BigId, ForeignKey("apps.id"), primary_key=True)
    # scheme://host[:port], lowercased, no path.
    origin: Mapped[str] = mapped_column(String(255), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_app_origins_origin", "origin"),)


class ApiKey(Base):
    """An app's key: only its SHA-256 hash is stored (decision 12, docs/architecture.md)."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    app_id: Mapped[int] = mapped_column(BigId, ForeignKey("apps.id"))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    display_prefix: Mapped[str] = mapped_column(String(16))
    scopes: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Per-key limits (issue 14; None: no limit). Requests per fixed minute, and tokens
    # the key may debit per UTC day.
    rate_limit_per_minute: Mapped[int | None] = mapped_column(Integer)
    daily_spend_cap_tokens: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (
        CheckConstraint("length(key_hash) = 64", name="hash_length"),
        CheckConstraint("scopes <> ''", name="has_scopes"),
        CheckConstraint("rate_limit_per_minute > 0", name="rate_limit_positive"),
        CheckConstraint("daily_spend_cap_tokens > 0", name="spend_cap_positive"),
        Index("ix_api_keys_app_id", "app_id"),
    )


class ApiKeyRequestCount(Base):
    """Requests a rate-limited key claimed in one fixed minute, shared by every process.

    A process claims requests in small lots (``apps/rate_limits.py``): the count is what
    was claimed, so it may pass the limit; what a process may serve never does.
    """

    __tablename__ = "api_key_request_counts"

    key_id: Mapped[int] = mapped_column(BigId, ForeignKey("api_keys.id"), primary_key=True)
    window_start: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    claimed_requests: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (CheckConstraint("claimed_requests > 0", name="claimed_positive"),)


class ApiKeyDailySpend(Base):
    """Tokens a capped key debited on one UTC day, with the cap that applied.

    Written in the same transaction as the debit it counts (``ledger/spend_caps.py``);
    the CHECK refuses a day's spend above its cap whatever code writes it.
    """

    __tablename__ = "api_key_daily_spend"

    key_id: Mapped[int] = mapped_column(BigId, ForeignKey("api_keys.id"), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    spent_tokens: Mapped[int] = mapped_column(BigInteger)
    cap_tokens: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        CheckConstraint("spent_tokens >= 0", name="spent_not_negative"),
        CheckConstraint("cap_tokens > 0", name="cap_positive"),
        CheckConstraint("spent_tokens <= cap_tokens", name="within_cap"),
    )


# --- plans, features, pricing ------------------------------------------------------------


class Plan(Base):
    """What a user is on: features they may use, monthly allocation, profit percentage."""

    __tablename__ = "plans"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    description: Mapped[str | None] = mapped_column(String(500))
    monthly_allocation_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    profit_percent: Mapped[str] = mapped_column(String(32), default="0")
    allocation_policy: Mapped[str] = mapped_column(
        String(16), default="expire", server_default="expire"
    )
    # Under ``rollover``: at most this much of the previous allocation carries over
    # (None: as much as one allocation).
    rollover_cap_tokens: Mapped[int | None] = mapped_column(BigInteger)
    # The Stripe price of a subscription to the plan (None: not sold through Stripe).
    stripe_price_id: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("uq_plans_stripe_price_id", "stripe_price_id", unique=True),
        CheckConstraint(
            "monthly_allocation_tokens >= 0 AND monthly_allocation_tokens <= 1000000000000",
            name="allocation_in_range",
        ),
        CheckConstraint(_in("allocation_policy", ALLOCATION_POLICIES), name="policy_known"),
        CheckConstraint(
            "rollover_cap_tokens IS NULL OR"
            " (rollover_cap_tokens >= 0 AND rollover_cap_tokens <= 1000000000000)",
            name="rollover_cap_in_range",
        ),
    )


class PlanRenewal(Base):
    """One plan allocation granted to one wallet for one period: the primary key makes
    a period's renewal happen once however many runners race (decision 16)."""

    __tablename__ = "plan_renewals"

    wallet_id: Mapped[int] = mapped_column(BigId, ForeignKey("wallets.id"), primary_key=True)
    period_start: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    period_end: Mapped[datetime] = mapped_column(UTCDateTime)
    plan: Mapped[str] = mapped_column(String(64))
    policy: Mapped[str] = mapped_column(String(16))
    granted_tokens: Mapped[int] = mapped_column(BigInteger)
    carried_tokens: Mapped[int] = mapped_column(BigInteger)
    forfeited_tokens: Mapped[int] = mapped_column(BigInteger)
    # The credit that granted the allocation.
    transaction_id: Mapped[str] = mapped_column(String(36), ForeignKey("ledger_transactions.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint("period_end > period_start", name="period_not_empty"),
        CheckConstraint(_in("policy", ALLOCATION_POLICIES), name="policy_known"),
        CheckConstraint("granted_tokens > 0", name="granted_positive"),
        CheckConstraint("carried_tokens >= 0 AND forfeited_tokens >= 0", name="carry_not_negative"),
    )


class Feature(Base):
    """A billable endpoint of an app and its price (``feature_endpoint_id`` in the Token
    Process dialect)."""

    __tablename__ = "features"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    app_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("apps.id"))
    name: Mapped[str] = mapped_column(String(200))
    min_balance_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    hold_tokens: Mapped[int | None] = mapped_column(BigInteger)
    profit_percent: Mapped[str | None] = mapped_column(String(32))
    pricing_rule: Mapped[dict[str, Any]] = mapped_column(JSON)
    pricing_version: Mapped[int] = mapped_column(BigInteger, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint("min_balance_tokens >= 0", name="min_balance_not_negative"),
        CheckConstraint("hold_tokens IS NULL OR hold_tokens > 0", name="hold_positive"),
        CheckConstraint("pricing_version >= 1", name="version_positive"),
    )


class PlanFeature(Base):
    __tablename__ = "plan_features"

    plan_name: Mapped[str] = mapped_column(
        String(64), ForeignKey("plans.name", ondelete="CASCADE"), primary_key=True
    )
    feature_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("features.id", ondelete="CASCADE"), primary_key=True
    )


class ModelPrice(Base):
    """Per-model rates in tokens per unit; overrides the table shipped with tokenbank."""

    __tablename__ = "model_prices"

    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    input_tokens_per_unit: Mapped[str] = mapped_column(String(32))
    output_tokens_per_unit: Mapped[str] = mapped_column(String(32))
    image_tokens: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint("image_tokens IS NULL OR image_tokens > 0", name="image_positive"),
    )


class SettingValue(Base):
    """Admin-editable settings (token multiplier, tokens per USD, ...), as JSON values."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class IdempotencyKey(Base):
    """Every idempotency key that a request committed with, whatever the request.

    One row per (scope, key), so a key can never serve two different requests, even
    of different kinds (a hold and a debit), or one that leaves no ledger row (a
    capture of zero). The result itself is found where the request left it.
    """

    __tablename__ = "idempotency_keys"

    scope: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    operation: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


# --- payments (decision 14) ---------------------------------------------------------------

PURCHASE_KINDS = ("pack", "amount", "subscription", "auto_recharge")
PURCHASE_STATUSES = ("pending", "paid", "failed", "canceled")
DISPUTE_STATUSES = ("open", "won", "lost")
RECHARGE_STATUSES = ("queued", "processing", "succeeded", "failed")
RECHARGES_IN_FLIGHT = "status IN ('queued', 'processing')"
MAX_PRICE_CENTS = 100_000_000  # one million in a currency's main unit
MAX_PURCHASE_TOKENS = 1_000_000_000_000


def _currency_check() -> CheckConstraint:
    return CheckConstraint(
        "length(currency) = 3 AND currency = lower(currency)", name="currency_lowercase_iso"
    )


class TokenPack(Base):
    """A pack of tokens sold at a price (seed defaults: Starter, Pro, Business, Enterprise)."""

    __tablename__ = "token_packs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(String(500))
    tokens: Mapped[int] = mapped_column(BigInteger)
    price_cents: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3), default="usd")
    stripe_price_id: Mapped[str | None] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    popular: Mapped[bool] = mapped_column(Boolean, default=False)
    sort_order: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint(f"tokens > 0 AND tokens <= {MAX_PURCHASE_TOKENS}", name="tokens_in_range"),
        CheckConstraint(
            f"price_cents > 0 AND price_cents <= {MAX_PRICE_CENTS}", name="price_in_range"
        ),
        _currency_check(),
    )


class StripeCustomer(Base):
    """The Stripe customer of a user, created once, when first needed."""

    __tablename__ = "stripe_customers"

    user_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("wallets.user_id"), primary_key=True
    )
    customer_id: Mapped[str] = mapped_column(String(255), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Purchase(Base):
    """One attempt to buy tokens (or a plan) and what became of it.

    Paid, it names the one ``purchase``/``auto_recharge`` credit it made. A refund or
    a dispute takes back at most what is left of that credit's grant: the tokens it
    took back, the ones it could not (spent: a loss) and the ones a dispute holds
    never add up to more than the purchase's tokens.
    """

    __tablename__ = "purchases"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128), ForeignKey("wallets.user_id"))
    kind: Mapped[str] = mapped_column(String(16))
    pack_id: Mapped[str | None] = mapped_column(String(64), ForeignKey("token_packs.id"))
    plan: Mapped[str | None] = mapped_column(String(64), ForeignKey("plans.name"))
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    tokens: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    stripe_checkout_session_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    stripe_payment_intent_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    stripe_subscription_id: Mapped[str | None] = mapped_column(String(255))
    credit_transaction_id: Mapped[str | None] = mapped_column(
        String(36), ForeignKey("ledger_transactions.id"), unique=True
    )
    failure_reason: Mapped[str | None] = mapped_column(String(500))
    refunded_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    clawed_back_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    lost_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    dispute_status: Mapped[str | None] = mapped_column(String(16))
    frozen_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint(_in("kind", PURCHASE_KINDS), name="kind_known"),
        CheckConstraint(_in("status", PURCHASE_STATUSES), name="status_known"),
        CheckConstraint(
            f"amount_cents > 0 AND amount_cents <= {MAX_PRICE_CENTS}", name="amount_in_range"
        ),
        _currency_check(),
        CheckConstraint(
            f"tokens >= 0 AND tokens <= {MAX_PURCHASE_TOKENS}"
            " AND (tokens > 0 OR kind = 'subscription')",
            name="tokens_in_range",
        ),
        CheckConstraint(
            "(kind = 'subscription') = (plan IS NOT NULL)", name="plan_iff_subscription"
        ),
        CheckConstraint("(status = 'paid') = (paid_at IS NOT NULL)", name="paid_has_time"),
        # Tokens come from one credit, made when it was paid (a subscription's come
        # from its invoices instead).
        CheckConstraint(
            "credit_transaction_id IS NULL OR status = 'paid'", name="credit_only_when_paid"
        ),
        CheckConstraint(
            "status <> 'paid' OR kind = 'subscription' OR credit_transaction_id IS NOT NULL",
            name="paid_has_credit",
        ),
        CheckConstraint(
            "refunded_cents >= 0 AND refunded_cents <= amount_cents", name="refund_within_amount"
        ),
        CheckConstraint(
            "clawed_back_tokens >= 0 AND lost_tokens >= 0 AND frozen_tokens >= 0"
            " AND clawed_back_tokens + lost_tokens + frozen_tokens <= tokens",
            name="taken_back_within_tokens",
        ),
        CheckConstraint(
            "dispute_status IS NULL OR " + _in("dispute_status", DISPUTE_STATUSES),
            name="dispute_status_known",
        ),
        CheckConstraint(
            "frozen_tokens = 0 OR (dispute_status IS NOT NULL AND dispute_status = 'open')",
            name="frozen_only_in_dispute",
        ),
        Index("ix_purchases_user_id_created_at", "user_id", "created_at"),
        Index("ix_purchases_stripe_subscription_id", "stripe_subscription_id"),
    )


class StripeEvent(Base):
    """Every Stripe event taken in, by its id: written in the same transaction as its
    effect, so a repeated delivery finds it and changes nothing (decision 14)."""

    __tablename__ = "stripe_events"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(100))
    # applied: it changed something; ignored: nothing to do (a type tokenbank does not
    # handle, a purchase it did not sell, a state already reached).
    outcome: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str | None] = mapped_column(String(500))
    purchase_id: Mapped[str | None] = mapped_column(String(40), ForeignKey("purchases.id"))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (CheckConstraint("outcome IN ('applied', 'ignored')", name="outcome_known"),)


class StripeSubscription(Base):
    """A plan subscription bought through Stripe: its invoices grant the allocations."""

    __tablename__ = "stripe_subscriptions"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128), ForeignKey("wallets.user_id"))
    plan: Mapped[str] = mapped_column(String(64), ForeignKey("plans.name"))
    status: Mapped[str] = mapped_column(String(32))
    current_period_end: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_stripe_subscriptions_user_id", "user_id"),)


class AutoRechargeSetting(Base):
    """A user's auto-recharge: when on, a fall of the available tokens below the
    threshold queues one recharge of the pack (or amount) on the saved card."""

    __tablename__ = "auto_recharge_settings"

    user_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("wallets.user_id"), primary_key=True
    )
    enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    threshold_tokens: Mapped[int] = mapped_column(BigInteger)
    pack_id: Mapped[str | None] = mapped_column(String(64), ForeignKey("token_packs.id"))
    amount_cents: Mapped[int | None] = mapped_column(BigInteger)
    payment_method_id: Mapped[str | None] = mapped_column(String(255))
    # Why it was switched off by tokenbank (a declined card), for the user and admins.
    disabled_reason: Mapped[str | None] = mapped_column(String(500))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint(
            f"threshold_tokens > 0 AND threshold_tokens <= {MAX_PURCHASE_TOKENS}",
            name="threshold_in_range",
        ),
        CheckConstraint("(pack_id IS NULL) <> (amount_cents IS NULL)", name="pack_or_amount"),
        CheckConstraint(
            f"amount_cents IS NULL OR (amount_cents > 0 AND amount_cents <= {MAX_PRICE_CENTS})",
            name="amount_in_range",
        ),
        CheckConstraint(
            "NOT enabled OR payment_method_id IS NOT NULL", name="enabled_has_payment_method"
        ),
    )


class Recharge(Base):
    """The outbox of auto-recharges: queued by a trigger in the transaction of the
    change that took the wallet below its threshold; at most one in flight per wallet."""

    __tablename__ = "recharges"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    wallet_id: Mapped[int] = mapped_column(BigId, ForeignKey("wallets.id"))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    available_tokens: Mapped[int] = mapped_column(BigInteger)
    purchase_id: Mapped[str | None] = mapped_column(String(40), ForeignKey("purchases.id"))
    error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint(_in("status", RECHARGE_STATUSES), name="status_known"),
        Index(
            "ix_recharges_one_in_flight",
            "wallet_id",
            unique=True,
            postgresql_where=text(RECHARGES_IN_FLIGHT),
            sqlite_where=text(RECHARGES_IN_FLIGHT),
        ),
        Index("ix_recharges_status", "status"),
    )


# --- people: accounts, sessions, sign-in attempts, the admin audit log (decision 17) -----

ACCOUNT_ROLES = ("superadmin", "admin", "user")


class Account(Base):
    """A person who signs in: email and an Argon2 hash, a role, and (for users) the
    wallet they own."""

    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # Stored lowercased: one account per address however it is typed.
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default="user")
    user_id: Mapped[str | None] = mapped_column(
        String(128), ForeignKey("wallets.user_id"), unique=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint(_in("role", ACCOUNT_ROLES), name="role_known"),
        CheckConstraint("email = lower(email) AND email LIKE '%_@_%'", name="email_normal"),
    )


class WebSession(Base):
    """A signed-in browser. The cookie holds a random token; the row holds only its
    SHA-256, so the table cannot be replayed. Revocable and expiring."""

    __tablename__ = "web_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[int] = mapped_column(BigId, ForeignKey("accounts.id"))
    # The synchronizer token every form and state-changing request of this session
    # must carry (CSRF).
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint("length(token_hash) = 64", name="hash_length"),
        CheckConstraint("expires_at > created_at", name="expires_after_creation"),
        Index("ix_web_sessions_account_id", "account_id"),
    )


class SignInAttempts(Base):
    """Failed sign-ins per email (by its SHA-256, known or not): slowed, then locked."""

    __tablename__ = "sign_in_attempts"

    email_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_at: Mapped[datetime] = mapped_column(UTCDateTime)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (CheckConstraint("failures >= 0", name="failures_not_negative"),)


class AdminAuditEntry(Base):
    """Every change an admin makes, with what it was before and after."""

    __tablename__ = "admin_audit_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # Who: an account's email, or "cli" for the command line.
    actor: Mapped[str] = mapped_column(String(254))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(255))
    before: Mapped[Any | None] = mapped_column(JSON, nullable=True)
    after: Mapped[Any | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_admin_audit_log_created_at", "created_at"),)


# --- events and their delivery to apps (decision 15) ----------------------------------------

EVENT_TYPES = (
    "balance.low",
    "balance.critical",
    "balance.recovered",
    "wallet.suspended",
    "wallet.reactivated",
    "purchase.succeeded",
    "purchase.failed",
    "auto_recharge.succeeded",
    "auto_recharge.failed",
    "grant.expired",
    "renewal.completed",
    "hold.expired",
)
DELIVERY_STATUSES = ("pending", "delivered", "dead")


class BalanceAlertLevels(Base):
    """The one row of balance alert thresholds, kept equal to the settings; triggers
    copy it onto every wallet."""

    __tablename__ = "balance_alert_levels"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    low_tokens: Mapped[int] = mapped_column(BigInteger)
    critical_tokens: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint("id = 1", name="one_row"),
        CheckConstraint(
            "critical_tokens >= 0 AND critical_tokens <= low_tokens", name="critical_within_low"
        ),
    )


class Event(Base):
    """The outbox: one row per event, written by a trigger in its cause's transaction."""

    __tablename__ = "events"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    type: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str | None] = mapped_column(String(128))
    # Set for an event only one app may hear about (none yet: every type concerns a
    # user's wallet, which all apps share).
    app_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("apps.id"))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # When its deliveries were made, one per endpoint that subscribes (None: not yet).
    fanned_out_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint(_in("type", EVENT_TYPES), name="type_known"),
        CheckConstraint("substr(id, 1, 4) = 'evt_'", name="id_shape"),
        Index("ix_events_user_id_created_at", "user_id", "created_at"),
        Index(
            "ix_events_not_fanned_out",
            "created_at",
            postgresql_where=text("fanned_out_at IS NULL"),
            sqlite_where=text("fanned_out_at IS NULL"),
        ),
    )


class WebhookEndpoint(Base):
    """Where an app hears about events: a URL, the types it wants, its signing secret."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    app_id: Mapped[int] = mapped_column(BigId, ForeignKey("apps.id"))
    url: Mapped[str] = mapped_column(String(2048))
    event_types: Mapped[list[str]] = mapped_column(JSON)
    # Standard Webhooks: whsec_ + base64 of the key (kept: signing needs the key itself).
    secret: Mapped[str] = mapped_column(String(128))
    enabled: Mapped[bool] = mapped_column(Boolean)
    description: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint("url LIKE 'http://%' OR url LIKE 'https://%'", name="url_http"),
        CheckConstraint("substr(secret, 1, 6) = 'whsec_'", name="secret_shape"),
        Index("ix_webhook_endpoints_app_id", "app_id"),
    )


class WebhookDelivery(Base):
    """One event to one endpoint: pending until delivered, or dead after the last try."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(40), ForeignKey("events.id"))
    endpoint_id: Mapped[str] = mapped_column(String(40), ForeignKey("webhook_endpoints.id"))
    status: Mapped[str] = mapped_column(String(16))
    # Attempts started; also the fencing token of a claim (a worker records only the
    # attempt it claimed).
    attempts: Mapped[int] = mapped_column(Integer)
    # When a pending delivery is next due; a claim moves it past its lease.
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(500))
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint(_in("status", DELIVERY_STATUSES), name="status_known"),
        CheckConstraint("attempts >= 0", name="attempts_not_negative"),
        CheckConstraint(
            "(status = 'delivered') = (delivered_at IS NOT NULL)", name="delivered_has_time"
        ),
        CheckConstraint(
            "(status = 'pending') = (next_attempt_at IS NOT NULL)", name="pending_has_next"
        ),
        UniqueConstraint("event_id", "endpoint_id"),
        Index(
            "ix_webhook_deliveries_due",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
        Index("ix_webhook_deliveries_endpoint_id", "endpoint_id", "id"),
    )


class WebhookAttempt(Base):
    """The delivery log: each attempt's answer (or error) and how long it took."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(BigId, ForeignKey("webhook_deliveries.id"))
    attempt: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    duration_ms: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(500))

    __table_args__ = (
        CheckConstraint("attempt >= 1", name="attempt_positive"),
        CheckConstraint("duration_ms >= 0", name="duration_not_negative"),
        CheckConstraint(
            "status_code IS NULL OR (status_code >= 100 AND status_code <= 599)",
            name="status_code_http",
        ),
        CheckConstraint("status_code IS NOT NULL OR error IS NOT NULL", name="has_outcome"),
        UniqueConstraint("delivery_id", "attempt"),
    )
