"""app origins: where an app's pages may embed the balance widget

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-29

The widget answers a browser only from an origin some app registered (CORS with
credentials: the session cookie or a user JWT); decision 17, docs/architecture.md.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tokenbank.db.types import UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "app_origins",
        sa.Column("app_id", BIG_ID, nullable=False),
        sa.Column("origin", sa.String(length=255), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["app_id"], ["apps.id"], name=op.f("fk_app_origins_app_id_apps")),
        sa.PrimaryKeyConstraint("app_id", "origin", name=op.f("pk_app_origins")),
    )
    op.create_index("ix_app_origins_origin", "app_origins", ["origin"])


def downgrade() -> None:
    op.drop_table("app_origins")
