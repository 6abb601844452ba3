"""ledger core

Revision ID: 0001
Revises:
Create Date: 2026-11-21

The tables of the ledger, and the triggers that make the database itself refuse an
unbalanced transaction, any change to a ledger row, a refund larger than its debit,
and any change to a resolved hold.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from tokenbank.db.types import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "operation_costs",
        sa.Column("operation_type", sa.String(length=64), nullable=False),
        sa.Column("cost_tokens", sa.BigInteger(), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint(
            "cost_tokens > 0 AND cost_tokens <= 1000000000000",
            name=op.f("ck_operation_costs_cost_in_range"),
        ),
        sa.PrimaryKeyConstraint("operation_type", name=op.f("pk_operation_costs")),
    )
    op.create_table(
        "wallets",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("balance_tokens", sa.BigInteger(), nullable=False),
        sa.Column("held_tokens", sa.BigInteger(), nullable=False),
        sa.Column("spent_tokens", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("suspended_reason", sa.String(length=16), nullable=True),
        sa.Column("plan", sa.String(length=64), nullable=True),
        sa.Column("last_renewal_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint(
            "(status = 'suspended') = (suspended_reason IS NOT NULL)",
            name=op.f("ck_wallets_suspended_has_reason"),
        ),
        sa.CheckConstraint(
            "status <> 'active' OR balance_tokens >= held_tokens",
            name=op.f("ck_wallets_active_not_overdrawn"),
        ),
        sa.CheckConstraint(
            "status IN ('active', 'suspended', 'closed')", name=op.f("ck_wallets_status_known")
        ),
        sa.CheckConstraint(
            "suspended_reason IS NULL OR suspended_reason IN ('overdraft', 'admin')",
            name=op.f("ck_wallets_suspended_reason_known"),
        ),
        sa.CheckConstraint("held_tokens >= 0", name=op.f("ck_wallets_held_not_negative")),
        sa.CheckConstraint("spent_tokens >= 0", name=op.f("ck_wallets_spent_not_negative")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wallets")),
        sa.UniqueConstraint("user_id", name=op.f("uq_wallets_user_id")),
    )
    op.create_table(
        "holds",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column(
            "wallet_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("amount_tokens", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("captured_tokens", sa.BigInteger(), nullable=True),
        sa.Column("operation_type", sa.String(length=64), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("idempotency_scope", sa.String(length=64), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("request_hash", sa.String(length=64), nullable=True),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("resolved_at", UTCDateTime(), nullable=True),
        sa.CheckConstraint(
            "(status = 'captured') = (captured_tokens IS NOT NULL)",
            name=op.f("ck_holds_captured_amount_set"),
        ),
        sa.CheckConstraint(
            "(status = 'pending') = (resolved_at IS NULL)", name=op.f("ck_holds_resolved_at_set")
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'captured', 'voided', 'expired')",
            name=op.f("ck_holds_status_known"),
        ),
        sa.CheckConstraint("amount_tokens > 0", name=op.f("ck_holds_amount_positive")),
        sa.CheckConstraint(
            "captured_tokens IS NULL OR captured_tokens >= 0",
            name=op.f("ck_holds_captured_not_negative"),
        ),
        sa.ForeignKeyConstraint(
            ["wallet_id"], ["wallets.id"], name=op.f("fk_holds_wallet_id_wallets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_holds")),
        sa.UniqueConstraint("idempotency_scope", "idempotency_key", name="uq_holds_idempotency"),
    )
    op.create_index("ix_holds_status_expires_at", "holds", ["status", "expires_at"])
    op.create_index("ix_holds_wallet_id_status", "holds", ["wallet_id", "status"])

    op.create_table(
        "ledger_transactions",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column(
            "wallet_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("operation_type", sa.String(length=64), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("pricing", sa.JSON(), nullable=True),
        sa.Column("idempotency_scope", sa.String(length=64), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("request_hash", sa.String(length=64), nullable=True),
        sa.Column("refund_of_id", sa.String(length=36), nullable=True),
        sa.Column("hold_id", sa.String(length=40), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint(
            "kind IN ('credit', 'debit', 'refund')", name=op.f("ck_ledger_transactions_kind_known")
        ),
        sa.CheckConstraint(
            "refund_of_id IS NULL OR kind = 'refund'",
            name=op.f("ck_ledger_transactions_refund_link_on_refund"),
        ),
        sa.ForeignKeyConstraint(
            ["hold_id"], ["holds.id"], name=op.f("fk_ledger_transactions_hold_id_holds")
        ),
        sa.ForeignKeyConstraint(
            ["refund_of_id"],
            ["ledger_transactions.id"],
            name=op.f("fk_ledger_transactions_refund_of_id_ledger_transactions"),
        ),
        sa.ForeignKeyConstraint(
            ["wallet_id"], ["wallets.id"], name=op.f("fk_ledger_transactions_wallet_id_wallets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_transactions")),
        sa.UniqueConstraint("hold_id", name=op.f("uq_ledger_transactions_hold_id")),
        sa.UniqueConstraint(
            "idempotency_scope", "idempotency_key", name="uq_ledger_transactions_idempotency"
        ),
    )
    op.create_index("ix_ledger_transactions_refund_of", "ledger_transactions", ["refund_of_id"])
    op.create_index(
        "ix_ledger_transactions_wallet_created", "ledger_transactions", ["wallet_id", "created_at"]
    )

    op.create_table(
        "ledger_entries",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("transaction_id", sa.String(length=36), nullable=False),
        sa.Column("wallet_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("system_account", sa.String(length=32), nullable=True),
        sa.Column("amount_tokens", sa.BigInteger(), nullable=False),
        sa.Column("balance_before", sa.BigInteger(), nullable=True),
        sa.Column("balance_after", sa.BigInteger(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint(
            "system_account IS NULL OR system_account IN"
            " ('tokens_sold', 'tokens_granted', 'tokens_consumed')",
            name=op.f("ck_ledger_entries_system_account_known"),
        ),
        sa.CheckConstraint(
            "(wallet_id IS NULL) <> (system_account IS NULL)",
            name=op.f("ck_ledger_entries_one_account"),
        ),
        sa.CheckConstraint("amount_tokens <> 0", name=op.f("ck_ledger_entries_amount_not_zero")),
        sa.CheckConstraint(
            "wallet_id IS NOT NULL OR (balance_before IS NULL AND balance_after IS NULL)",
            name=op.f("ck_ledger_entries_system_no_balance"),
        ),
        sa.CheckConstraint(
            "wallet_id IS NULL OR (balance_before IS NOT NULL"
            " AND balance_after = balance_before + amount_tokens)",
            name=op.f("ck_ledger_entries_wallet_balance_chain"),
        ),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["ledger_transactions.id"],
            name="fk_ledger_entries_transaction_id_ledger_transactions",
            initially="DEFERRED",
            deferrable=True,
        ),
        sa.ForeignKeyConstraint(
            ["wallet_id"], ["wallets.id"], name=op.f("fk_ledger_entries_wallet_id_wallets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_entries")),
    )
    op.create_index("ix_ledger_entries_transaction_id", "ledger_entries", ["transaction_id"])
    op.create_index("ix_ledger_entries_wallet_id", "ledger_entries", ["wallet_id", "id"])

    _create_triggers()
    _seed_operation_costs()


def downgrade() -> None:
    _drop_triggers()
    op.drop_table("ledger_entries")
    op.drop_table("ledger_transactions")
    op.drop_table("holds")
    op.drop_table("wallets")
    op.drop_table("operation_costs")


# The seed cost table of the embedded API (the embedded API): what one operation costs.
SEED_OPERATION_COSTS = {"image_generation": 10, "chatgpt_message": 5}


def _seed_operation_costs() -> None:
    table = sa.table(
        "operation_costs",
        sa.column("operation_type", sa.String),
        sa.column("cost_tokens", sa.BigInteger),
        sa.column("description", sa.String),
        sa.column("updated_at", UTCDateTime()),
    )
    now = datetime.now(UTC)
    op.bulk_insert(
        table,
        [
            {"operation_type": name, "cost_tokens": cost, "description": None, "updated_at": now}
            for name, cost in SEED_OPERATION_COSTS.items()
        ],
    )


APPEND_ONLY_TABLES = ("ledger_transactions", "ledger_entries")

# A transaction header is valid when its entries (written before it) number at
# least two, sum to zero, and include exactly one entry for the header's wallet
# whose sign matches the kind: credits and refunds add to the wallet, debits take.
SQLITE_TRIGGERS = [
    *(
        f"""CREATE TRIGGER {table}_no_{action} BEFORE {action.upper()} ON {table}
        BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"""
        for table in APPEND_ONLY_TABLES
        for action in ("update", "delete")
    ),
    """CREATE TRIGGER ledger_entries_sealed BEFORE INSERT ON ledger_entries
    WHEN EXISTS (SELECT 1 FROM ledger_transactions WHERE id = NEW.transaction_id)
    BEGIN SELECT RAISE(ABORT, 'ledger transaction is sealed: no entry can be added'); END""",
    """CREATE TRIGGER ledger_transactions_balanced BEFORE INSERT ON ledger_transactions
    WHEN (SELECT COUNT(*) FROM ledger_entries WHERE transaction_id = NEW.id) < 2
      OR (SELECT SUM(amount_tokens) FROM ledger_entries WHERE transaction_id = NEW.id) <> 0
    BEGIN SELECT RAISE(ABORT, 'unbalanced ledger transaction'); END""",
    """CREATE TRIGGER ledger_transactions_one_wallet BEFORE INSERT ON ledger_transactions
    WHEN (SELECT COUNT(*) FROM ledger_entries
          WHERE transaction_id = NEW.id AND wallet_id IS NOT NULL) <> 1
      OR NOT EXISTS (SELECT 1 FROM ledger_entries
          WHERE transaction_id = NEW.id AND wallet_id = NEW.wallet_id
            AND ((NEW.kind = 'debit' AND amount_tokens < 0)
                 OR (NEW.kind <> 'debit' AND amount_tokens > 0)))
    BEGIN SELECT RAISE(ABORT, 'ledger transaction must move one wallet in its kind''s direction');
    END""",
    """CREATE TRIGGER ledger_transactions_refund_bound BEFORE INSERT ON ledger_transactions
    WHEN NEW.refund_of_id IS NOT NULL AND (
      NOT EXISTS (SELECT 1 FROM ledger_transactions
                  WHERE id = NEW.refund_of_id AND kind = 'debit' AND wallet_id = NEW.wallet_id)
      OR (SELECT COALESCE(SUM(e.amount_tokens), 0) FROM ledger_entries e
          JOIN ledger_transactions t ON t.id = e.transaction_id
          WHERE t.refund_of_id = NEW.refund_of_id AND e.wallet_id IS NOT NULL)
       + (SELECT SUM(amount_tokens) FROM ledger_entries
          WHERE transaction_id = NEW.id AND wallet_id IS NOT NULL)
       > (SELECT -SUM(amount_tokens) FROM ledger_entries
          WHERE transaction_id = NEW.refund_of_id AND wallet_id IS NOT NULL))
    BEGIN SELECT RAISE(ABORT, 'refund exceeds the debit it refunds'); END""",
    """CREATE TRIGGER holds_resolved_immutable BEFORE UPDATE ON holds
    WHEN OLD.status <> 'pending' OR NEW.amount_tokens <> OLD.amount_tokens
      OR NEW.wallet_id <> OLD.wallet_id
    BEGIN SELECT RAISE(ABORT, 'only a pending hold may change, and only its status'); END""",
    """CREATE TRIGGER holds_no_delete BEFORE DELETE ON holds
    BEGIN SELECT RAISE(ABORT, 'holds are never deleted'); END""",
    """CREATE TRIGGER wallets_no_delete BEFORE DELETE ON wallets
    BEGIN SELECT RAISE(ABORT, 'wallets are closed, never deleted'); END""",
]

POSTGRES_FUNCTIONS = [
    """CREATE FUNCTION tokenbank_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      RAISE EXCEPTION '% is append-only', TG_TABLE_NAME
        USING ERRCODE = 'integrity_constraint_violation';
    END $$""",
    """CREATE FUNCTION tokenbank_entry_sealed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      -- Serialise writers of one transaction id: a header still uncommitted in
      -- another session would otherwise be invisible here (READ COMMITTED).
      PERFORM pg_advisory_xact_lock(hashtextextended(NEW.transaction_id, 0));
      IF EXISTS (SELECT 1 FROM ledger_transactions WHERE id = NEW.transaction_id) THEN
        RAISE EXCEPTION 'ledger transaction is sealed: no entry can be added'
          USING ERRCODE = 'integrity_constraint_violation';
      END IF;
      RETURN NEW;
    END $$""",
    """CREATE FUNCTION tokenbank_transaction_valid() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
      entry_count bigint; total bigint; wallet_entries bigint; wallet_amount bigint;
      refunded bigint; debited bigint;
    BEGIN
      PERFORM pg_advisory_xact_lock(hashtextextended(NEW.id, 0));
      SELECT COUNT(*), COALESCE(SUM(amount_tokens), 0), COUNT(wallet_id),
             SUM(amount_tokens) FILTER (WHERE wallet_id = NEW.wallet_id)
        INTO entry_count, total, wallet_entries, wallet_amount
        FROM ledger_entries WHERE transaction_id = NEW.id;
      IF entry_count < 2 OR total <> 0 THEN
        RAISE EXCEPTION 'unbalanced ledger transaction' USING ERRCODE = 'check_violation';
      END IF;
      IF wallet_entries <> 1 OR wallet_amount IS NULL
         OR (NEW.kind = 'debit' AND wallet_amount >= 0)
         OR (NEW.kind <> 'debit' AND wallet_amount <= 0) THEN
        RAISE EXCEPTION 'ledger transaction must move one wallet in its kind''s direction'
          USING ERRCODE = 'check_violation';
      END IF;
      IF NEW.refund_of_id IS NOT NULL THEN
        -- Concurrent refunds of one debit queue here, and each sees the others.
        PERFORM pg_advisory_xact_lock(hashtextextended(NEW.refund_of_id, 1));
        SELECT -SUM(e.amount_tokens) INTO debited FROM ledger_entries e
          JOIN ledger_transactions t ON t.id = e.transaction_id
          WHERE t.id = NEW.refund_of_id AND t.kind = 'debit' AND t.wallet_id = NEW.wallet_id
            AND e.wallet_id IS NOT NULL;
        SELECT COALESCE(SUM(e.amount_tokens), 0) INTO refunded FROM ledger_entries e
          JOIN ledger_transactions t ON t.id = e.transaction_id
          WHERE t.refund_of_id = NEW.refund_of_id AND e.wallet_id IS NOT NULL;
        IF debited IS NULL OR refunded + wallet_amount > debited THEN
          RAISE EXCEPTION 'refund exceeds the debit it refunds' USING ERRCODE = 'check_violation';
        END IF;
      END IF;
      RETURN NEW;
    END $$""",
    """CREATE FUNCTION tokenbank_hold_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF OLD.status <> 'pending' OR NEW.amount_tokens <> OLD.amount_tokens
         OR NEW.wallet_id <> OLD.wallet_id THEN
        RAISE EXCEPTION 'only a pending hold may change, and only its status'
          USING ERRCODE = 'integrity_constraint_violation';
      END IF;
      RETURN NEW;
    END $$""",
]

POSTGRES_TRIGGERS = [
    *(
        f"""CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}
        FOR EACH ROW EXECUTE FUNCTION tokenbank_refuse_change()"""
        for table in APPEND_ONLY_TABLES
    ),
    *(
        f"""CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
        FOR EACH STATEMENT EXECUTE FUNCTION tokenbank_refuse_change()"""
        for table in (*APPEND_ONLY_TABLES, "holds", "wallets")
    ),
    """CREATE TRIGGER ledger_entries_sealed BEFORE INSERT ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION tokenbank_entry_sealed()""",
    """CREATE TRIGGER ledger_transactions_valid BEFORE INSERT ON ledger_transactions
    FOR EACH ROW EXECUTE FUNCTION tokenbank_transaction_valid()""",
    """CREATE TRIGGER holds_resolved_immutable BEFORE UPDATE ON holds
    FOR EACH ROW EXECUTE FUNCTION tokenbank_hold_change()""",
    """CREATE TRIGGER holds_no_delete BEFORE DELETE ON holds
    FOR EACH ROW EXECUTE FUNCTION tokenbank_refuse_change()""",
    """CREATE TRIGGER wallets_no_delete BEFORE DELETE ON wallets
    FOR EACH ROW EXECUTE FUNCTION tokenbank_refuse_change()""",
]

POSTGRES_FUNCTION_NAMES = (
    "tokenbank_refuse_change",
    "tokenbank_entry_sealed",
    "tokenbank_transaction_valid",
    "tokenbank_hold_change",
)


def _create_triggers() -> None:
    if op.get_bind().dialect.name == "sqlite":
        statements = SQLITE_TRIGGERS
    else:
        statements = [*POSTGRES_FUNCTIONS, *POSTGRES_TRIGGERS]
    for statement in statements:
        op.execute(statement)


def _drop_triggers() -> None:
    # Dropping the tables drops their triggers; PostgreSQL keeps the functions.
    if op.get_bind().dialect.name == "postgresql":
        for name in POSTGRES_FUNCTION_NAMES:
            op.execute(f"DROP FUNCTION IF EXISTS {name}() CASCADE")
