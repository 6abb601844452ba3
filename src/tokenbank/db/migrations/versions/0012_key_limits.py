"""key limits: a request rate and a daily spend cap per API key

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-29

- ``api_keys.rate_limit_per_minute`` and ``api_keys.daily_spend_cap_tokens`` (NULL: no
  limit; CHECKs > 0);
- ``api_key_request_counts``: requests claimed per key and fixed minute, shared by every
  process;
- ``api_key_daily_spend``: tokens debited per key and UTC day, with a CHECK that keeps
  the day's spend within its cap.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tokenbank.db.types import UTCDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# (column, type, constraint, rule)
LIMIT_COLUMNS = (
    (
        "rate_limit_per_minute",
        sa.Integer(),
        "ck_api_keys_rate_limit_positive",
        "rate_limit_per_minute > 0",
    ),
    (
        "daily_spend_cap_tokens",
        sa.BigInteger(),
        "ck_api_keys_spend_cap_positive",
        "daily_spend_cap_tokens > 0",
    ),
)
# Where SQLite's DDL of api_keys gets the CHECKs (its last constraint, as 0002 wrote it).
SQLITE_ANCHOR = "CONSTRAINT uq_api_keys_key_hash UNIQUE (key_hash)"
SQLITE_CHECKS = "".join(
    f", \n\tCONSTRAINT {name} CHECK ({rule})" for _, _, name, rule in LIMIT_COLUMNS
)


def _is_sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def _edit_sqlite_ddl(table: str, old: str, new: str) -> None:
    """Edit a table's stored DDL: SQLite cannot add a table constraint.

    Its documented way for a change no stored row can break (the new columns are NULL
    in every row): rewrite the DDL in sqlite_schema and bump the schema version, so
    that every connection reloads it (as 0009 does).
    """
    bind = op.get_bind()
    query = "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?"
    ddl = str(bind.exec_driver_sql(query, (table,)).scalar_one())
    if ddl.count(old) != 1:  # pragma: no cover
        raise RuntimeError(f"{table}'s DDL is not the one 0012 expects: {old!r}")
    version = bind.exec_driver_sql("PRAGMA schema_version").scalar_one()
    bind.exec_driver_sql("PRAGMA writable_schema=ON")
    bind.exec_driver_sql(
        "UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = ?",
        (ddl.replace(old, new), table),
    )
    bind.exec_driver_sql(f"PRAGMA schema_version={int(version) + 1}")
    bind.exec_driver_sql("PRAGMA writable_schema=OFF")


def _add_limit_columns() -> None:
    for column, column_type, _, _ in LIMIT_COLUMNS:
        op.add_column("api_keys", sa.Column(column, column_type, nullable=True))
    if _is_sqlite():
        _edit_sqlite_ddl("api_keys", SQLITE_ANCHOR, SQLITE_ANCHOR + SQLITE_CHECKS)
        return
    for _, _, name, rule in LIMIT_COLUMNS:
        op.create_check_constraint(op.f(name), "api_keys", rule)


def _drop_limit_columns() -> None:
    if _is_sqlite():
        # SQLite refuses to drop a column a CHECK names: the CHECKs go first.
        _edit_sqlite_ddl("api_keys", SQLITE_ANCHOR + SQLITE_CHECKS, SQLITE_ANCHOR)
        for column, _, _, _ in reversed(LIMIT_COLUMNS):
            op.execute(f"ALTER TABLE api_keys DROP COLUMN {column}")
        return
    for column, _, name, _ in reversed(LIMIT_COLUMNS):
        op.drop_constraint(op.f(name), "api_keys", type_="check")
        op.drop_column("api_keys", column)


def upgrade() -> None:
    _add_limit_columns()
    op.create_table(
        "api_key_request_counts",
        sa.Column("key_id", BIG_ID, nullable=False),
        sa.Column("window_start", UTCDateTime(), nullable=False),
        sa.Column("claimed_requests", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "claimed_requests > 0", name=op.f("ck_api_key_request_counts_claimed_positive")
        ),
        sa.ForeignKeyConstraint(
            ["key_id"], ["api_keys.id"], name=op.f("fk_api_key_request_counts_key_id_api_keys")
        ),
        sa.PrimaryKeyConstraint("key_id", "window_start", name=op.f("pk_api_key_request_counts")),
    )
    op.create_table(
        "api_key_daily_spend",
        sa.Column("key_id", BIG_ID, nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("spent_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cap_tokens", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "spent_tokens >= 0", name=op.f("ck_api_key_daily_spend_spent_not_negative")
        ),
        sa.CheckConstraint("cap_tokens > 0", name=op.f("ck_api_key_daily_spend_cap_positive")),
        sa.CheckConstraint(
            "spent_tokens <= cap_tokens", name=op.f("ck_api_key_daily_spend_within_cap")
        ),
        sa.ForeignKeyConstraint(
            ["key_id"], ["api_keys.id"], name=op.f("fk_api_key_daily_spend_key_id_api_keys")
        ),
        sa.PrimaryKeyConstraint("key_id", "day", name=op.f("pk_api_key_daily_spend")),
    )


def downgrade() -> None:
    op.drop_table("api_key_daily_spend")
    op.drop_table("api_key_request_counts")
    _drop_limit_columns()
