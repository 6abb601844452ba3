"""people: accounts, web sessions, sign-in attempts, the admin audit log

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29

Accounts sign in with an email and an Argon2 hash; users own a wallet. A session's
cookie token is stored only as its SHA-256, with the session's CSRF token, an expiry
and a revocation time. Failed sign-ins are counted per email hash (known or not) for
slowing and locking. Admin changes are logged with before and after (decision 17,
docs/architecture.md).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tokenbank.db.types import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _create_accounts() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint(
            "role IN ('superadmin', 'admin', 'user')", name=op.f("ck_accounts_role_known")
        ),
        sa.CheckConstraint(
            "email = lower(email) AND email LIKE '%_@_%'", name=op.f("ck_accounts_email_normal")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["wallets.user_id"], name=op.f("fk_accounts_user_id_wallets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.UniqueConstraint("email", name=op.f("uq_accounts_email")),
        sa.UniqueConstraint("user_id", name=op.f("uq_accounts_user_id")),
    )


def _create_sessions() -> None:
    op.create_table(
        "web_sessions",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("account_id", BIG_ID, nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.CheckConstraint("length(token_hash) = 64", name=op.f("ck_web_sessions_hash_length")),
        sa.CheckConstraint(
            "expires_at > created_at", name=op.f("ck_web_sessions_expires_after_creation")
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_web_sessions_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_web_sessions")),
    )
    op.create_index("ix_web_sessions_account_id", "web_sessions", ["account_id"])
    op.create_table(
        "sign_in_attempts",
        sa.Column("email_hash", sa.String(length=64), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failure_at", UTCDateTime(), nullable=False),
        sa.Column("locked_until", UTCDateTime(), nullable=True),
        sa.CheckConstraint("failures >= 0", name=op.f("ck_sign_in_attempts_failures_not_negative")),
        sa.PrimaryKeyConstraint("email_hash", name=op.f("pk_sign_in_attempts")),
    )


def _create_audit_log() -> None:
    op.create_table(
        "admin_audit_log",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("actor", sa.String(length=254), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=255), nullable=True),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_admin_audit_log")),
    )
    op.create_index("ix_admin_audit_log_created_at", "admin_audit_log", ["created_at"])


def upgrade() -> None:
    _create_accounts()
    _create_sessions()
    _create_audit_log()


def downgrade() -> None:
    for table in ("admin_audit_log", "sign_in_attempts", "web_sessions", "accounts"):
        op.drop_table(table)
