"""grants: tokens with a category, a priority and an expiry

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29

Every credit now makes a grant; debits and captures consume grants in one order, and
each change of a grant's remainder is a grant movement of some ledger transaction
(decision 13, docs/architecture.md). The database holds the books to it:

- a grant's remainder stays within 0 and its amount (CHECK), and nothing else of a
  grant ever changes (trigger);
- grants and movements join an open transaction only, like entries (trigger);
- movements are append-only; a consumption never takes from an expired grant, and a
  return gives back no more than the consumption it names took (trigger);
- when a transaction is sealed, what its grants and movements add up to equals what
  it moved the wallet's non-negative balance by, and the wallet's grants add up to
  its balance (or 0 while it is overdrawn) (trigger).

Expired tokens leave as a new transaction kind, ``expiry``, towards a new system
account, ``tokens_expired``. Balances found here become grants of source
``migration``, without expiry: purchases are paid and everything else promotional,
the promotional part consumed first (the order the ledger uses from now on).
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from tokenbank.db.types import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

DEFAULT_PRIORITY = 50  # tokenbank.ledger.grants.DEFAULT_GRANT_PRIORITY when written

OLD_KINDS = "kind IN ('credit', 'debit', 'refund')"
NEW_KINDS = "kind IN ('credit', 'debit', 'refund', 'expiry')"
OLD_ACCOUNTS = "system_account IN ('tokens_sold', 'tokens_granted', 'tokens_consumed')"
NEW_ACCOUNTS = (
    "system_account IN ('tokens_sold', 'tokens_granted', 'tokens_consumed', 'tokens_expired')"
)
WIDENED_CHECKS = (
    ("ledger_transactions", "ck_ledger_transactions_kind_known", OLD_KINDS, NEW_KINDS),
    (
        "ledger_entries",
        "ck_ledger_entries_system_account_known",
        "system_account IS NULL OR " + OLD_ACCOUNTS,
        "system_account IS NULL OR " + NEW_ACCOUNTS,
    ),
)


def _is_sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


# --- tables --------------------------------------------------------------------------------


def _create_tables() -> None:
    op.add_column("wallets", sa.Column("next_grant_event_at", UTCDateTime(), nullable=True))
    op.create_index(op.f("ix_wallets_next_grant_event_at"), "wallets", ["next_grant_event_at"])
    _create_grants()
    _create_movements()


def _create_grants() -> None:
    op.create_table(
        "grants",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "wallet_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("transaction_id", sa.String(length=36), nullable=True),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("category", sa.String(length=16), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        sa.Column("amount_tokens", sa.BigInteger(), nullable=False),
        sa.Column("remaining_tokens", sa.BigInteger(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint(
            "category IN ('paid', 'promotional')", name=op.f("ck_grants_category_known")
        ),
        sa.CheckConstraint(
            "priority >= 0 AND priority <= 100", name=op.f("ck_grants_priority_in_range")
        ),
        sa.CheckConstraint("amount_tokens > 0", name=op.f("ck_grants_amount_positive")),
        sa.CheckConstraint(
            "remaining_tokens >= 0 AND remaining_tokens <= amount_tokens",
            name=op.f("ck_grants_remaining_within_amount"),
        ),
        sa.CheckConstraint(
            "transaction_id IS NOT NULL OR source = 'migration'",
            name=op.f("ck_grants_made_by_a_transaction"),
        ),
        sa.ForeignKeyConstraint(
            ["wallet_id"], ["wallets.id"], name=op.f("fk_grants_wallet_id_wallets")
        ),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["ledger_transactions.id"],
            name="fk_grants_transaction_id_ledger_transactions",
            deferrable=True,
            initially="DEFERRED",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_grants")),
    )
    op.create_index("ix_grants_wallet_id", "grants", ["wallet_id", "remaining_tokens"])
    op.create_index("ix_grants_transaction_id", "grants", ["transaction_id"])


def _create_movements() -> None:
    big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "grant_movements",
        sa.Column("id", big_id, nullable=False),
        sa.Column("transaction_id", sa.String(length=36), nullable=False),
        sa.Column("grant_id", big_id, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("amount_tokens", sa.BigInteger(), nullable=False),
        sa.Column("returns_movement_id", big_id, nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint(
            "kind IN ('consume', 'capture', 'return', 'expire', 'settle')",
            name=op.f("ck_grant_movements_kind_known"),
        ),
        sa.CheckConstraint(
            "(kind = 'return') = (amount_tokens > 0) AND amount_tokens <> 0",
            name=op.f("ck_grant_movements_sign_follows_kind"),
        ),
        sa.CheckConstraint(
            "(kind = 'return') = (returns_movement_id IS NOT NULL)",
            name=op.f("ck_grant_movements_return_names_its_consumption"),
        ),
        sa.ForeignKeyConstraint(
            ["returns_movement_id"],
            ["grant_movements.id"],
            name=op.f("fk_grant_movements_returns_movement_id_grant_movements"),
        ),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["ledger_transactions.id"],
            name="fk_grant_movements_transaction_id_ledger_transactions",
            deferrable=True,
            initially="DEFERRED",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_grant_movements")),
    )
    for name, columns in (
        ("ix_grant_movements_transaction_id", ["transaction_id"]),
        ("ix_grant_movements_returns_movement_id", ["returns_movement_id"]),
    ):
        op.create_index(name, "grant_movements", columns)


# --- widening two CHECKs ---------------------------------------------------------------------


def _replace_check(table: str, name: str, old: str, new: str) -> None:
    if not _is_sqlite():
        op.drop_constraint(op.f(name), table, type_="check")
        op.create_check_constraint(op.f(name), table, new)
        return
    # SQLite cannot alter a CHECK. Its documented way for a change that no stored row
    # can break (this one only allows more): edit the table's DDL in sqlite_schema and
    # bump the schema version, so every connection reloads it.
    bind = op.get_bind()
    version = bind.exec_driver_sql("PRAGMA schema_version").scalar_one()
    bind.exec_driver_sql("PRAGMA writable_schema=ON")
    bind.exec_driver_sql(
        "UPDATE sqlite_master SET sql = replace(sql, ?, ?) WHERE type = 'table' AND name = ?",
        (old, new, table),
    )
    bind.exec_driver_sql(f"PRAGMA schema_version={int(version) + 1}")
    bind.exec_driver_sql("PRAGMA writable_schema=OFF")


# --- triggers ------------------------------------------------------------------------------

# Shared by both engines: a sealed transaction's grants and movements against the
# wallet's balance before and after it.
_GRANTS_OF = "(SELECT COALESCE(SUM(amount_tokens), 0) FROM grants WHERE transaction_id = {id})"
_MOVED_BY = (
    "(SELECT COALESCE(SUM(amount_tokens), 0) FROM grant_movements WHERE transaction_id = {id})"
)

SQLITE_KIND_DIRECTION = """CREATE TRIGGER ledger_transactions_one_wallet
    BEFORE INSERT ON ledger_transactions
    WHEN (SELECT COUNT(*) FROM ledger_entries
          WHERE transaction_id = NEW.id AND wallet_id IS NOT NULL) <> 1
      OR NOT EXISTS (SELECT 1 FROM ledger_entries
          WHERE transaction_id = NEW.id AND +wallet_id = NEW.wallet_id
            AND ((NEW.kind IN ({negative}) AND amount_tokens < 0)
                 OR (NEW.kind NOT IN ({negative}) AND amount_tokens > 0)))
    BEGIN SELECT RAISE(ABORT, 'ledger transaction must move one wallet in its kind''s direction');
    END"""

# Every column of a grant but its remainder.
_FIXED_COLUMNS = (
    "id, wallet_id, transaction_id, source, category, priority, expires_at, amount_tokens,"
    " created_at"
)

SQLITE_TRIGGERS = [
    *(
        f"""CREATE TRIGGER grant_movements_no_{action} BEFORE {action.upper()} ON grant_movements
        BEGIN SELECT RAISE(ABORT, 'grant_movements is append-only'); END"""
        for action in ("update", "delete")
    ),
    """CREATE TRIGGER grants_no_delete BEFORE DELETE ON grants
    BEGIN SELECT RAISE(ABORT, 'grants are never deleted'); END""",
    # Only an UPDATE that sets another column fires it: a consumption (remainder only)
    # costs nothing.
    f"""CREATE TRIGGER grants_only_remainder_changes BEFORE UPDATE OF {_FIXED_COLUMNS} ON grants
    WHEN NEW.id <> OLD.id OR NEW.wallet_id <> OLD.wallet_id
      OR NEW.transaction_id IS NOT OLD.transaction_id OR NEW.source <> OLD.source
      OR NEW.category <> OLD.category OR NEW.priority <> OLD.priority
      OR NEW.expires_at IS NOT OLD.expires_at OR NEW.amount_tokens <> OLD.amount_tokens
      OR NEW.created_at <> OLD.created_at
    BEGIN SELECT RAISE(ABORT, 'only a grant''s remainder may change'); END""",
    """CREATE TRIGGER grants_sealed BEFORE INSERT ON grants
    WHEN NEW.transaction_id IS NOT NULL
      AND EXISTS (SELECT 1 FROM ledger_transactions WHERE id = NEW.transaction_id)
    BEGIN SELECT RAISE(ABORT, 'ledger transaction is sealed: no grant can be added'); END""",
    """CREATE TRIGGER grant_movements_sealed BEFORE INSERT ON grant_movements
    WHEN EXISTS (SELECT 1 FROM ledger_transactions WHERE id = NEW.transaction_id)
    BEGIN SELECT RAISE(ABORT, 'ledger transaction is sealed: no grant movement can be added');
    END""",
    """CREATE TRIGGER grant_movements_valid BEFORE INSERT ON grant_movements
    WHEN NOT EXISTS (SELECT 1 FROM grants WHERE id = NEW.grant_id)
      OR (NEW.kind = 'consume' AND EXISTS (SELECT 1 FROM grants
          WHERE id = NEW.grant_id AND expires_at <= NEW.created_at))
      OR (NEW.kind = 'return' AND (
          NOT EXISTS (SELECT 1 FROM grant_movements
              WHERE id = NEW.returns_movement_id AND grant_id = NEW.grant_id
                AND kind IN ('consume', 'capture', 'settle'))
          OR (SELECT COALESCE(SUM(amount_tokens), 0) FROM grant_movements
              WHERE returns_movement_id = NEW.returns_movement_id) + NEW.amount_tokens
             > (SELECT -amount_tokens FROM grant_movements WHERE id = NEW.returns_movement_id)))
    BEGIN SELECT RAISE(ABORT,
      'grant movement refused: an unknown or expired grant, or a return beyond its consumption');
    END""",
    f"""CREATE TRIGGER ledger_transactions_valid_grants BEFORE INSERT ON ledger_transactions
    WHEN {_GRANTS_OF.format(id="NEW.id")} + {_MOVED_BY.format(id="NEW.id")}
         <> (SELECT MAX(balance_after, 0) - MAX(balance_before, 0) FROM ledger_entries
             WHERE transaction_id = NEW.id AND wallet_id IS NOT NULL)
      OR (SELECT COALESCE(SUM(remaining_tokens), 0) FROM grants
          WHERE wallet_id = NEW.wallet_id AND remaining_tokens > 0)
         <> (SELECT MAX(balance_tokens, 0) FROM wallets WHERE id = NEW.wallet_id)
    BEGIN SELECT RAISE(ABORT, 'grants do not match the wallet''s balance'); END""",
]

SQLITE_TRIGGER_NAMES = (
    "grant_movements_sealed",
    "grant_movements_no_update",
    "grant_movements_no_delete",
    "grants_no_delete",
    "grants_only_remainder_changes",
    "grants_sealed",
    "grant_movements_valid",
    "ledger_transactions_valid_grants",
)

POSTGRES_FUNCTIONS = [
    """CREATE FUNCTION tokenbank_grant_sealed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF NEW.transaction_id IS NULL THEN
        RETURN NEW;
      END IF;
      PERFORM pg_advisory_xact_lock(hashtextextended(NEW.transaction_id, 0));
      IF EXISTS (SELECT 1 FROM ledger_transactions WHERE id = NEW.transaction_id) THEN
        RAISE EXCEPTION 'ledger transaction is sealed: nothing can be added'
          USING ERRCODE = 'integrity_constraint_violation';
      END IF;
      RETURN NEW;
    END $$""",
    """CREATE FUNCTION tokenbank_grant_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF (NEW.id, NEW.wallet_id, NEW.transaction_id, NEW.source, NEW.category, NEW.priority,
          NEW.expires_at, NEW.amount_tokens, NEW.created_at)
         IS DISTINCT FROM
         (OLD.id, OLD.wallet_id, OLD.transaction_id, OLD.source, OLD.category, OLD.priority,
          OLD.expires_at, OLD.amount_tokens, OLD.created_at) THEN
        RAISE EXCEPTION 'only a grant''s remainder may change'
          USING ERRCODE = 'integrity_constraint_violation';
      END IF;
      RETURN NEW;
    END $$""",
    """CREATE FUNCTION tokenbank_grant_movement_valid() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
      consumed bigint; returned bigint; grant_expiry timestamptz;
    BEGIN
      -- A movement joins an open transaction only. Unlike an entry's, this check takes
      -- no lock: a movement slipped in beside a header still has to make the wallet's
      -- grants add up to its balance at the next seal, and the audit reads them all.
      IF EXISTS (SELECT 1 FROM ledger_transactions WHERE id = NEW.transaction_id) THEN
        RAISE EXCEPTION 'ledger transaction is sealed: nothing can be added'
          USING ERRCODE = 'integrity_constraint_violation';
      END IF;
      SELECT expires_at INTO grant_expiry FROM grants WHERE id = NEW.grant_id;
      IF NOT FOUND OR (NEW.kind = 'consume' AND grant_expiry <= NEW.created_at) THEN
        RAISE EXCEPTION 'grant movement refused: an unknown or expired grant'
          USING ERRCODE = 'check_violation';
      END IF;
      IF NEW.kind = 'return' THEN
        -- Concurrent returns of one consumption queue here, and each sees the others.
        PERFORM pg_advisory_xact_lock(hashtextextended(NEW.returns_movement_id::text, 2));
        SELECT -amount_tokens INTO consumed FROM grant_movements
          WHERE id = NEW.returns_movement_id AND grant_id = NEW.grant_id
            AND kind IN ('consume', 'capture', 'settle');
        SELECT COALESCE(SUM(amount_tokens), 0) INTO returned FROM grant_movements
          WHERE returns_movement_id = NEW.returns_movement_id;
        IF consumed IS NULL OR returned + NEW.amount_tokens > consumed THEN
          RAISE EXCEPTION 'grant movement refused: a return beyond its consumption'
            USING ERRCODE = 'check_violation';
        END IF;
      END IF;
      RETURN NEW;
    END $$""",
]

# The header trigger of migration 0001, replaced whole: 'expiry' moves a wallet down
# like 'debit', and the grants are checked in the same call (one trigger per header:
# a second one was a measurable part of every debit). The downgrade restores 0001's.
TRANSACTION_VALID = """CREATE OR REPLACE FUNCTION tokenbank_transaction_valid() RETURNS trigger
    LANGUAGE plpgsql AS $$
    DECLARE
      entry_count bigint; total bigint; wallet_entries bigint; wallet_amount bigint;
      refunded bigint; debited bigint; before_tokens bigint; after_tokens bigint;
      moved bigint; remaining bigint; balance bigint;
    BEGIN
      PERFORM pg_advisory_xact_lock(hashtextextended(NEW.id, 0));
      SELECT COUNT(*), COALESCE(SUM(amount_tokens), 0), COUNT(wallet_id),
             SUM(amount_tokens) FILTER (WHERE wallet_id = NEW.wallet_id),
             MAX(balance_before) FILTER (WHERE wallet_id = NEW.wallet_id),
             MAX(balance_after) FILTER (WHERE wallet_id = NEW.wallet_id)
        INTO entry_count, total, wallet_entries, wallet_amount, before_tokens, after_tokens
        FROM ledger_entries WHERE transaction_id = NEW.id;
      IF entry_count < 2 OR total <> 0 THEN
        RAISE EXCEPTION 'unbalanced ledger transaction' USING ERRCODE = 'check_violation';
      END IF;
      IF wallet_entries <> 1 OR wallet_amount IS NULL
         OR (NEW.kind IN ('debit', 'expiry') AND wallet_amount >= 0)
         OR (NEW.kind NOT IN ('debit', 'expiry') AND wallet_amount <= 0) THEN
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
      -- Grants (decision 13): what the transaction moved them by is what it moved the
      -- wallet's non-negative balance by, and the wallet's grants add up to its balance.
      SELECT COALESCE(SUM(amount_tokens), 0) INTO moved FROM grant_movements
        WHERE transaction_id = NEW.id;
      IF NEW.kind IN ('credit', 'refund') THEN  -- the only kinds that make grants
        moved := moved + (SELECT COALESCE(SUM(amount_tokens), 0) FROM grants
                          WHERE transaction_id = NEW.id);
      END IF;
      SELECT COALESCE(SUM(remaining_tokens), 0) INTO remaining FROM grants
        WHERE wallet_id = NEW.wallet_id AND remaining_tokens > 0;
      SELECT GREATEST(balance_tokens, 0) INTO balance FROM wallets WHERE id = NEW.wallet_id;
      IF moved <> GREATEST(after_tokens, 0) - GREATEST(before_tokens, 0)
         OR remaining IS DISTINCT FROM balance THEN
        RAISE EXCEPTION 'grants do not match the wallet''s balance'
          USING ERRCODE = 'check_violation';
      END IF;
      RETURN NEW;
    END $$"""

# Migration 0001's function, word for word, for the downgrade.
TRANSACTION_VALID_0001 = """CREATE OR REPLACE FUNCTION tokenbank_transaction_valid() RETURNS trigger
    LANGUAGE plpgsql AS $$
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
    END $$"""

POSTGRES_TRIGGERS = [
    """CREATE TRIGGER grant_movements_append_only BEFORE UPDATE OR DELETE ON grant_movements
    FOR EACH ROW EXECUTE FUNCTION tokenbank_refuse_change()""",
    *(
        f"""CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
        FOR EACH STATEMENT EXECUTE FUNCTION tokenbank_refuse_change()"""
        for table in ("grants", "grant_movements")
    ),
    """CREATE TRIGGER grants_no_delete BEFORE DELETE ON grants
    FOR EACH ROW EXECUTE FUNCTION tokenbank_refuse_change()""",
    f"""CREATE TRIGGER grants_only_remainder_changes BEFORE UPDATE OF {_FIXED_COLUMNS} ON grants
    FOR EACH ROW EXECUTE FUNCTION tokenbank_grant_change()""",
    """CREATE TRIGGER grants_sealed BEFORE INSERT ON grants
    FOR EACH ROW EXECUTE FUNCTION tokenbank_grant_sealed()""",
    """CREATE TRIGGER grant_movements_valid BEFORE INSERT ON grant_movements
    FOR EACH ROW EXECUTE FUNCTION tokenbank_grant_movement_valid()""",
]

POSTGRES_FUNCTION_NAMES = (
    "tokenbank_grant_sealed",
    "tokenbank_grant_change",
    "tokenbank_grant_movement_valid",
)

# Migration 0004's trigger, restored word for word by the downgrade.
SQLITE_0004_KIND_DIRECTION = """CREATE TRIGGER ledger_transactions_one_wallet BEFORE INSERT ON ledger_transactions
    WHEN (SELECT COUNT(*) FROM ledger_entries
          WHERE transaction_id = NEW.id AND wallet_id IS NOT NULL) <> 1
      OR NOT EXISTS (SELECT 1 FROM ledger_entries
          WHERE transaction_id = NEW.id AND +wallet_id = NEW.wallet_id
            AND ((NEW.kind = 'debit' AND amount_tokens < 0)
                 OR (NEW.kind <> 'debit' AND amount_tokens > 0)))
    BEGIN SELECT RAISE(ABORT, 'ledger transaction must move one wallet in its kind''s direction');
    END"""  # noqa: E501


def _set_kind_direction(*, negative_kinds: str) -> None:
    if _is_sqlite():
        op.execute("DROP TRIGGER IF EXISTS ledger_transactions_one_wallet")
        if negative_kinds == "'debit'":
            op.execute(SQLITE_0004_KIND_DIRECTION)
        else:
            op.execute(SQLITE_KIND_DIRECTION.format(negative=negative_kinds))
        return
    op.execute(TRANSACTION_VALID_0001 if negative_kinds == "'debit'" else TRANSACTION_VALID)


def _create_triggers() -> None:
    statements = SQLITE_TRIGGERS if _is_sqlite() else [*POSTGRES_FUNCTIONS, *POSTGRES_TRIGGERS]
    for statement in statements:
        op.execute(statement)


def _drop_triggers() -> None:
    if _is_sqlite():
        for name in SQLITE_TRIGGER_NAMES:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        return
    for name in POSTGRES_FUNCTION_NAMES:
        op.execute(f"DROP FUNCTION IF EXISTS {name}() CASCADE")


# --- balances found become grants ------------------------------------------------------------

# Per wallet with tokens: what purchases credited (paid), what other credits did
# (promotional), and its balance. The promotional part is consumed first.
_CREDITED = """
    SELECT w.id AS wallet_id, w.balance_tokens AS balance,
           COALESCE(SUM(CASE WHEN t.operation_type IN ('purchase', 'auto_recharge')
                             THEN e.amount_tokens END), 0) AS paid,
           COALESCE(SUM(CASE WHEN t.operation_type NOT IN ('purchase', 'auto_recharge')
                             THEN e.amount_tokens END), 0) AS promotional
    FROM wallets w
    LEFT JOIN ledger_entries e ON e.wallet_id = w.id
    LEFT JOIN ledger_transactions t ON t.id = e.transaction_id AND t.kind = 'credit'
    WHERE w.balance_tokens > 0
    GROUP BY w.id, w.balance_tokens
"""


def _grant_existing_balances() -> None:
    now = datetime.now(UTC)
    rows = op.get_bind().execute(sa.text(_CREDITED)).all()
    grants = sa.table(
        "grants",
        sa.column("wallet_id"),
        sa.column("source"),
        sa.column("category"),
        sa.column("priority"),
        sa.column("amount_tokens"),
        sa.column("remaining_tokens"),
        sa.column("created_at", UTCDateTime()),
    )
    values = [
        {
            "wallet_id": row.wallet_id,
            "source": "migration",
            "category": category,
            "priority": DEFAULT_PRIORITY,
            "amount_tokens": amount,
            "remaining_tokens": amount,
            "created_at": now,
        }
        for row in rows
        for category, amount in _split(int(row.balance), int(row.paid), int(row.promotional))
        if amount > 0
    ]
    if values:
        op.bulk_insert(grants, values)


def _split(balance: int, paid: int, promotional: int) -> list[tuple[str, int]]:
    """(category, tokens) of a balance, the promotional tokens consumed first."""
    consumed = paid + promotional - balance
    promotional_left = min(max(promotional - consumed, 0), balance)
    return [("promotional", promotional_left), ("paid", balance - promotional_left)]


# tokenbank.ledger.repository.audit reads it: transactions up to this entry id were
# written before grants existed and moved none.
GRANTS_SINCE_SETTING = "ledger.grants_since_entry_id"


def _mark_where_grants_begin(now: datetime) -> None:
    last_entry_id = (
        op.get_bind()
        .exec_driver_sql("SELECT COALESCE(MAX(id), 0) FROM ledger_entries")
        .scalar_one()
    )
    settings = sa.table(
        "settings",
        sa.column("key"),
        sa.column("value", sa.JSON()),
        sa.column("updated_at", UTCDateTime()),
    )
    op.bulk_insert(
        settings,
        [{"key": GRANTS_SINCE_SETTING, "value": int(last_entry_id), "updated_at": now}],
    )


def upgrade() -> None:
    for table, name, old, new in WIDENED_CHECKS:
        _replace_check(table, name, old, new)
    _create_tables()
    _set_kind_direction(negative_kinds="'debit', 'expiry'")
    _grant_existing_balances()
    _mark_where_grants_begin(datetime.now(UTC))
    _create_triggers()


def downgrade() -> None:
    op.execute(f"DELETE FROM settings WHERE key = '{GRANTS_SINCE_SETTING}'")
    _drop_triggers()
    _set_kind_direction(negative_kinds="'debit'")
    op.drop_table("grant_movements")
    op.drop_table("grants")
    op.drop_index(op.f("ix_wallets_next_grant_event_at"), table_name="wallets")
    op.drop_column("wallets", "next_grant_event_at")
    for table, name, old, new in WIDENED_CHECKS:
        _replace_check(table, name, new, old)
