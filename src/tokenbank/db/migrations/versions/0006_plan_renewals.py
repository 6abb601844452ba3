"""plan renewals: allocation policies, periods anchored on joining, one renewal per period

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


def upgrade() -> None:
    _add_plan_columns()
    _add_wallet_columns()
    _create_renewals()


def downgrade() -> None:
    op.drop_table("plan_renewals")
    op.drop_index(op.f("ix_wallets_renewal_due_at"), table_name="wallets")
    op.drop_column("wallets", "renewal_due_at")
    op.drop_column("wallets", "plan_since")
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint("ck_plans_rollover_cap_in_range", "plans")
        op.drop_constraint("ck_plans_policy_known", "plans")
    op.drop_column("plans", "rollover_cap_tokens")
    op.drop_column("plans", "allocation_policy")
