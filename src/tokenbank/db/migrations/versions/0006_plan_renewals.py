"""plan renewals and scheduled credits

Plan renewals: allocation policies, periods anchored on joining, one renewal per period.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29

A plan says what a renewal does with what is left of the previous allocation
(``expire``, ``rollover`` up to a cap, or ``keep``); a wallet remembers when it joined
its plan (its periods are whole months from then) and when its next allocation is
due; ``plan_renewals`` records each allocation granted, and its primary key (wallet,
period start) lets a period be renewed once however many runners race (decision 16,
docs/architecture.md).

Wallets already on a plan are taken to have joined it now, and their first allocation
is due now: nothing granted plan allocations before this revision.

Scheduled credits: a credit that takes effect later waits in ``scheduled_credits``
and becomes an ordinary credit at its time (decision 13). Triggers: a row is never
deleted, and only its ``transaction_id`` ever changes, once, from NULL to a credit of
the same wallet and amount.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from tokenbank.db.types import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

POLICIES = "'expire', 'rollover', 'keep'"
MAX_TOKENS = 1_000_000_000_000


def _add_plan_columns() -> None:
    # Raw DDL: SQLite adds a column with its CHECK in place (no table rebuild), and
    # PostgreSQL reads the same statement.
    op.execute(
        "ALTER TABLE plans ADD COLUMN allocation_policy VARCHAR(16) DEFAULT 'expire' NOT NULL"
        f" CONSTRAINT ck_plans_policy_known CHECK (allocation_policy IN ({POLICIES}))"
    )
    op.execute(
        "ALTER TABLE plans ADD COLUMN rollover_cap_tokens BIGINT"
        " CONSTRAINT ck_plans_rollover_cap_in_range CHECK (rollover_cap_tokens IS NULL OR"
        f" (rollover_cap_tokens >= 0 AND rollover_cap_tokens <= {MAX_TOKENS}))"
    )


def _add_wallet_columns() -> None:
    op.add_column("wallets", sa.Column("plan_since", UTCDateTime(), nullable=True))
    op.add_column("wallets", sa.Column("renewal_due_at", UTCDateTime(), nullable=True))
    op.create_index(op.f("ix_wallets_renewal_due_at"), "wallets", ["renewal_due_at"])
    wallets = sa.table(
        "wallets",
        sa.column("plan", sa.String()),
        sa.column("plan_since", UTCDateTime()),
        sa.column("renewal_due_at", UTCDateTime()),
    )
    now = datetime.now(UTC)
    op.execute(
        wallets.update()
        .where(wallets.c.plan.is_not(None))
        .values(plan_since=now, renewal_due_at=now)
    )


def _create_renewals() -> None:
    big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "plan_renewals",
        sa.Column("wallet_id", big_id, nullable=False),
        sa.Column("period_start", UTCDateTime(), nullable=False),
        sa.Column("period_end", UTCDateTime(), nullable=False),
        sa.Column("plan", sa.String(length=64), nullable=False),
        sa.Column("policy", sa.String(length=16), nullable=False),
        sa.Column("granted_tokens", sa.BigInteger(), nullable=False),
        sa.Column("carried_tokens", sa.BigInteger(), nullable=False),
        sa.Column("forfeited_tokens", sa.BigInteger(), nullable=False),
        sa.Column("transaction_id", sa.String(length=36), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint(
            "period_end > period_start", name=op.f("ck_plan_renewals_period_not_empty")
        ),
        sa.CheckConstraint(f"policy IN ({POLICIES})", name=op.f("ck_plan_renewals_policy_known")),
        sa.CheckConstraint("granted_tokens > 0", name=op.f("ck_plan_renewals_granted_positive")),
        sa.CheckConstraint(
            "carried_tokens >= 0 AND forfeited_tokens >= 0",
            name=op.f("ck_plan_renewals_carry_not_negative"),
        ),
        sa.ForeignKeyConstraint(
            ["wallet_id"], ["wallets.id"], name=op.f("fk_plan_renewals_wallet_id_wallets")
        ),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["ledger_transactions.id"],
            name=op.f("fk_plan_renewals_transaction_id_ledger_transactions"),
        ),
        sa.PrimaryKeyConstraint("wallet_id", "period_start", name=op.f("pk_plan_renewals")),
    )


def _create_scheduled_credits() -> None:
    big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "scheduled_credits",
        sa.Column("id", big_id, nullable=False),
        sa.Column("wallet_id", big_id, nullable=False),
        sa.Column("operation_type", sa.String(length=64), nullable=False),
        sa.Column("category", sa.String(length=16), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("amount_tokens", sa.BigInteger(), nullable=False),
        sa.Column("effective_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        sa.Column("description", sa.String(length=500), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("idempotency_scope", sa.String(length=64), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("request_hash", sa.String(length=64), nullable=True),
        sa.Column("transaction_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint(
            "category IN ('paid', 'promotional')",
            name=op.f("ck_scheduled_credits_category_known"),
        ),
        sa.CheckConstraint(
            "priority >= 0 AND priority <= 100",
            name=op.f("ck_scheduled_credits_priority_in_range"),
        ),
        sa.CheckConstraint("amount_tokens > 0", name=op.f("ck_scheduled_credits_amount_positive")),
        sa.CheckConstraint(
            "expires_at IS NULL OR expires_at > effective_at",
            name=op.f("ck_scheduled_credits_expires_after_effective"),
        ),
        sa.ForeignKeyConstraint(
            ["wallet_id"], ["wallets.id"], name=op.f("fk_scheduled_credits_wallet_id_wallets")
        ),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["ledger_transactions.id"],
            name=op.f("fk_scheduled_credits_transaction_id_ledger_transactions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scheduled_credits")),
        sa.UniqueConstraint(
            "idempotency_scope", "idempotency_key", name="uq_scheduled_credits_idempotency"
        ),
        sa.UniqueConstraint("transaction_id", name=op.f("uq_scheduled_credits_transaction_id")),
    )
    op.create_index(
        op.f("ix_scheduled_credits_effective_at"), "scheduled_credits", ["effective_at"]
    )
    op.create_index(op.f("ix_scheduled_credits_wallet_id"), "scheduled_credits", ["wallet_id"])


# Everything but transaction_id: it never changes.
_FIXED = (
    "id, wallet_id, operation_type, category, priority, amount_tokens, effective_at,"
    " expires_at, description, idempotency_scope, idempotency_key, request_hash, created_at"
)
_APPLIED_BY_ITS_CREDIT = """EXISTS (SELECT 1 FROM ledger_entries
      WHERE transaction_id = NEW.transaction_id AND wallet_id = NEW.wallet_id
        AND amount_tokens = NEW.amount_tokens)"""
SQLITE_TRIGGERS = {
    "scheduled_credits_no_delete": """CREATE TRIGGER scheduled_credits_no_delete
    BEFORE DELETE ON scheduled_credits
    BEGIN SELECT RAISE(ABORT, 'scheduled credits are never deleted'); END""",
    "scheduled_credits_applied_once": f"""CREATE TRIGGER scheduled_credits_applied_once
    BEFORE UPDATE ON scheduled_credits
    WHEN OLD.transaction_id IS NOT NULL OR NEW.transaction_id IS NULL
      OR NOT {_APPLIED_BY_ITS_CREDIT}
      OR ({", ".join("NEW." + c.strip() for c in _FIXED.split(","))})
         IS NOT ({", ".join("OLD." + c.strip() for c in _FIXED.split(","))})
    BEGIN SELECT RAISE(ABORT,
      'a scheduled credit is applied once, by a credit of its wallet and amount'); END""",
}
POSTGRES_FUNCTION = f"""CREATE FUNCTION tokenbank_scheduled_credit_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    RAISE EXCEPTION 'scheduled credits are never deleted'
      USING ERRCODE = 'integrity_constraint_violation';
  END IF;
  IF OLD.transaction_id IS NOT NULL OR NEW.transaction_id IS NULL
     OR NOT {_APPLIED_BY_ITS_CREDIT}
     OR ({", ".join("NEW." + c.strip() for c in _FIXED.split(","))})
        IS DISTINCT FROM ({", ".join("OLD." + c.strip() for c in _FIXED.split(","))}) THEN
    RAISE EXCEPTION 'a scheduled credit is applied once, by a credit of its wallet and amount'
      USING ERRCODE = 'integrity_constraint_violation';
  END IF;
  RETURN NEW;
END $$"""


def _create_scheduled_credit_triggers() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for statement in SQLITE_TRIGGERS.values():
            op.execute(statement)
        return
    op.execute(POSTGRES_FUNCTION)
    op.execute(
        "CREATE TRIGGER scheduled_credits_applied_once BEFORE UPDATE OR DELETE"
        " ON scheduled_credits FOR EACH ROW EXECUTE FUNCTION tokenbank_scheduled_credit_change()"
    )


def upgrade() -> None:
    _add_plan_columns()
    _add_wallet_columns()
    _create_renewals()
    _create_scheduled_credits()
    _create_scheduled_credit_triggers()


def downgrade() -> None:
    op.drop_table("scheduled_credits")  # its triggers go with it
    if op.get_bind().dialect.name != "sqlite":
        op.execute("DROP FUNCTION tokenbank_scheduled_credit_change()")
    op.drop_table("plan_renewals")
    op.drop_index(op.f("ix_wallets_renewal_due_at"), table_name="wallets")
    op.drop_column("wallets", "renewal_due_at")
    op.drop_column("wallets", "plan_since")
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint("ck_plans_rollover_cap_in_range", "plans")
        op.drop_constraint("ck_plans_policy_known", "plans")
    op.drop_column("plans", "rollover_cap_tokens")
    op.drop_column("plans", "allocation_policy")
