"""idempotency keys

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21

One registry of idempotency keys for every kind of request, so that a key can never
serve two different requests (a hold and a debit, say). Keys already on ledger
transactions and holds are carried over.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tokenbank.db.types import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("scope", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("operation", sa.String(length=16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "key", name=op.f("pk_idempotency_keys")),
    )
    _carry_over_existing_keys()


def _carry_over_existing_keys() -> None:
    for table, operation in (("ledger_transactions", "kind"), ("holds", "'hold'")):
        op.execute(
            "INSERT INTO idempotency_keys (scope, key, request_hash, operation, created_at)"
            f" SELECT idempotency_scope, idempotency_key, request_hash, {operation}, created_at"
            f" FROM {table} WHERE idempotency_key IS NOT NULL AND request_hash IS NOT NULL"
        )


def downgrade() -> None:
    op.drop_table("idempotency_keys")
