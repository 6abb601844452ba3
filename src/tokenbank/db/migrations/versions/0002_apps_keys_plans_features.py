"""apps keys plans features

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21

Apps and their hashed API keys; plans, features and their pricing; per-model prices;
admin-editable settings. A wallet's plan must name an existing plan (a trigger, as
SQLite cannot add a foreign key to an existing table).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tokenbank.db.types import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "apps",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("slug", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_apps")),
        sa.UniqueConstraint("slug", name=op.f("uq_apps_slug")),
    )
    op.create_table(
        "model_prices",
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("input_tokens_per_unit", sa.String(length=32), nullable=False),
        sa.Column("output_tokens_per_unit", sa.String(length=32), nullable=False),
        sa.Column("image_tokens", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint(
            "image_tokens IS NULL OR image_tokens > 0", name=op.f("ck_model_prices_image_positive")
        ),
        sa.PrimaryKeyConstraint("model", name=op.f("pk_model_prices")),
    )
    op.create_table(
        "plans",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=True),
        sa.Column("monthly_allocation_tokens", sa.BigInteger(), nullable=False),
        sa.Column("profit_percent", sa.String(length=32), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint(
            "monthly_allocation_tokens >= 0 AND monthly_allocation_tokens <= 1000000000000",
            name=op.f("ck_plans_allocation_in_range"),
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_plans")),
    )
    op.create_table(
        "settings",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_settings")),
    )
    op.create_table(
        "api_keys",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("app_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("display_prefix", sa.String(length=16), nullable=False),
        sa.Column("scopes", sa.String(length=100), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.CheckConstraint("scopes <> ''", name=op.f("ck_api_keys_has_scopes")),
        sa.CheckConstraint("length(key_hash) = 64", name=op.f("ck_api_keys_hash_length")),
        sa.ForeignKeyConstraint(["app_id"], ["apps.id"], name=op.f("fk_api_keys_app_id_apps")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    op.create_index("ix_api_keys_app_id", "api_keys", ["app_id"])

    op.create_table(
        "features",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("app_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("min_balance_tokens", sa.BigInteger(), nullable=False),
        sa.Column("hold_tokens", sa.BigInteger(), nullable=True),
        sa.Column("profit_percent", sa.String(length=32), nullable=True),
        sa.Column("pricing_rule", sa.JSON(), nullable=False),
        sa.Column("pricing_version", sa.BigInteger(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint(
            "hold_tokens IS NULL OR hold_tokens > 0", name=op.f("ck_features_hold_positive")
        ),
        sa.CheckConstraint(
            "min_balance_tokens >= 0", name=op.f("ck_features_min_balance_not_negative")
        ),
        sa.CheckConstraint("pricing_version >= 1", name=op.f("ck_features_version_positive")),
        sa.ForeignKeyConstraint(["app_id"], ["apps.id"], name=op.f("fk_features_app_id_apps")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_features")),
    )
    op.create_table(
        "plan_features",
        sa.Column("plan_name", sa.String(length=64), nullable=False),
        sa.Column("feature_id", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(
            ["feature_id"],
            ["features.id"],
            name=op.f("fk_plan_features_feature_id_features"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["plan_name"],
            ["plans.name"],
            name=op.f("fk_plan_features_plan_name_plans"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("plan_name", "feature_id", name=op.f("pk_plan_features")),
    )
    _create_plan_triggers()


def downgrade() -> None:
    _drop_plan_triggers()
    op.drop_table("plan_features")
    op.drop_table("features")
    op.drop_table("api_keys")
    op.drop_table("settings")
    op.drop_table("plans")
    op.drop_table("model_prices")
    op.drop_table("apps")


SQLITE_PLAN_TRIGGERS = [
    f"""CREATE TRIGGER wallets_plan_exists_{event} BEFORE {event.upper()} ON wallets
    WHEN NEW.plan IS NOT NULL AND NOT EXISTS (SELECT 1 FROM plans WHERE name = NEW.plan)
    BEGIN SELECT RAISE(ABORT, 'wallet plan must name an existing plan'); END"""
    for event in ("insert", "update")
] + [
    """CREATE TRIGGER plans_in_use BEFORE DELETE ON plans
    WHEN EXISTS (SELECT 1 FROM wallets WHERE plan = OLD.name)
    BEGIN SELECT RAISE(ABORT, 'plan is in use by wallets'); END""",
]


def _create_plan_triggers() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for statement in SQLITE_PLAN_TRIGGERS:
            op.execute(statement)
    else:
        op.execute(
            "ALTER TABLE wallets ADD CONSTRAINT fk_wallets_plan_plans"
            " FOREIGN KEY (plan) REFERENCES plans (name)"
        )


def _drop_plan_triggers() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in ("wallets_plan_exists_insert", "wallets_plan_exists_update", "plans_in_use"):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    else:
        op.execute("ALTER TABLE wallets DROP CONSTRAINT IF EXISTS fk_wallets_plan_plans")
