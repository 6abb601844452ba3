"""cheaper grant checks: remainder updates stay on their page, checks run once per statement

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29

Grants (0005) cut PostgreSQL's deduct throughput by a third (bench/PROFILE.md, "Grants
without the cost"). Two changes take most of that back; what the database refuses is
unchanged.

- ``ix_grants_wallet_id`` no longer holds ``remaining_tokens`` but ``live``, a column
  the database computes (``remaining_tokens > 0``; stored on PostgreSQL, virtual on
  SQLite). With the remainder in an index, every debit's update of a grant was a
  new row version with new entries in all three of its indexes (never a HOT
  update); now only the update that spends a grant to 0 changes an indexed column,
  the others are rewritten on their page, and PostgreSQL keeps room on each page
  for that (``fillfactor`` 80). A wallet's live grants are still found through the
  index alone, however many spent grants it has (tests/db/test_sqlite_plans.py);
  SQLite's header trigger looks them up by ``live`` for the same reason.
- ``ix_grant_movements_returns_movement_id`` holds returns only (both engines): a
  consumption, most movements, no longer adds an index entry of NULL.
- On PostgreSQL, the checks of a header, an entry and a grant movement run once per
  INSERT statement instead of once per row: ``AFTER INSERT ... FOR EACH STATEMENT``
  triggers that see the statement's rows as a transition table and check them all
  in a few set-based queries (the batch kernel writes a batch's entries, movements
  and headers in one statement each). Each checks exactly what the row trigger it
  replaces checked, and raises the same error: a header's entries balance and move
  one wallet in its kind's direction; a refund stays within its debit; a
  transaction's grants and movements equal what it moved the wallet's non-negative
  balance by; each wallet's grants add up to its balance; nothing joins a sealed
  transaction (the same advisory locks, taken once the rows are in: the writer of
  an entry and the writer of its header still queue on one lock, and the second
  reads what the first committed); a movement names a known grant, consumes no
  expired one, and returns no more than its consumption took. An AFTER trigger sees
  its statement's own rows in the table, so the refund and return bounds sum what
  is there (this row included) rather than adding the new row to the rest.

The row-level functions of 0001 and 0005 are dropped; the downgrade restores them
word for word (read from those revisions' files) with their triggers.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

FILLFACTOR = 80


def _is_sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


# --- the grants index ----------------------------------------------------------------------

# PostgreSQL computes a generated column when the row is written (STORED only, before
# 18); SQLite can add one to a table only as VIRTUAL (its index stores the value).
LIVE_COLUMN = {
    "postgresql": "ALTER TABLE grants ADD COLUMN live boolean NOT NULL"
    " GENERATED ALWAYS AS (remaining_tokens > 0) STORED",
    "sqlite": "ALTER TABLE grants ADD COLUMN live BOOLEAN NOT NULL"
    " GENERATED ALWAYS AS (remaining_tokens > 0) VIRTUAL",
}
# SQLite's check of a sealed header sums the wallet's live grants: through the index.
SQLITE_OLD_LIVE, SQLITE_NEW_LIVE = "AND remaining_tokens > 0)", "AND live = 1)"
SQLITE_VALID_GRANTS = "ledger_transactions_valid_grants"


def _sqlite_valid_grants_0005() -> str:
    (statement,) = (
        s
        for s in _earlier_revision("0005_grants.py").SQLITE_TRIGGERS
        if f"CREATE TRIGGER {SQLITE_VALID_GRANTS} " in s
    )
    if statement.count(SQLITE_OLD_LIVE) != 1:  # pragma: no cover
        raise RuntimeError(f"0005's {SQLITE_VALID_GRANTS} is not the one 0007 expects")
    return str(statement)


def _index_by_live() -> None:
    op.drop_index("ix_grants_wallet_id", table_name="grants")
    op.execute(LIVE_COLUMN[op.get_bind().dialect.name])
    op.create_index("ix_grants_wallet_id", "grants", ["wallet_id", "live"])
    if _is_sqlite():
        op.execute(f"DROP TRIGGER {SQLITE_VALID_GRANTS}")
        op.execute(_sqlite_valid_grants_0005().replace(SQLITE_OLD_LIVE, SQLITE_NEW_LIVE))


def _index_by_remainder() -> None:
    if _is_sqlite():
        op.execute(f"DROP TRIGGER {SQLITE_VALID_GRANTS}")
        op.execute(_sqlite_valid_grants_0005())
    op.drop_index("ix_grants_wallet_id", table_name="grants")
    op.drop_column("grants", "live")
    op.create_index("ix_grants_wallet_id", "grants", ["wallet_id", "remaining_tokens"])


# --- PostgreSQL: statement-level checks -----------------------------------------------------

ENTRIES_SEALED = """CREATE FUNCTION tokenbank_entries_sealed() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
      -- Serialise writers of one transaction id: a header still uncommitted in
      -- another session would otherwise be invisible here (READ COMMITTED).
      PERFORM pg_advisory_xact_lock(hashtextextended(transaction_id, 0))
        FROM (SELECT DISTINCT transaction_id FROM new_entries ORDER BY transaction_id) AS e;
      IF EXISTS (SELECT 1 FROM ledger_transactions
                 WHERE id IN (SELECT transaction_id FROM new_entries)) THEN
        RAISE EXCEPTION 'ledger transaction is sealed: no entry can be added'
          USING ERRCODE = 'integrity_constraint_violation';
      END IF;
      RETURN NULL;
    END $$"""

# Per header, as 0005's tokenbank_transaction_valid: the entries (balanced, one wallet
# in the kind's direction), the refund bound, the transaction's grants and movements
# against what it moved the wallet's non-negative balance by; then per wallet, its
# grants against its balance (once per wallet, not once per header). Every lookup is a
# scalar or lateral subquery, so each is an index probe per header or wallet.
TRANSACTIONS_VALID = """CREATE FUNCTION tokenbank_transactions_valid() RETURNS trigger
    LANGUAGE plpgsql AS $$
    DECLARE
      unbalanced boolean; misdirected boolean; mismoved boolean;
      refund record; refunded bigint; debited bigint;
    BEGIN
      PERFORM pg_advisory_xact_lock(hashtextextended(id, 0))
        FROM (SELECT id FROM new_headers ORDER BY id) AS h;
      SELECT bool_or(e.entry_count < 2 OR e.total <> 0),
             bool_or(e.wallet_entries <> 1 OR e.wallet_amount IS NULL
                     OR (h.kind IN ('debit', 'expiry') AND e.wallet_amount >= 0)
                     OR (h.kind NOT IN ('debit', 'expiry') AND e.wallet_amount <= 0)),
             bool_or(m.moved
                     + CASE WHEN h.kind IN ('credit', 'refund')  -- the kinds that make grants
                         THEN (SELECT COALESCE(SUM(g.amount_tokens), 0) FROM grants g
                               WHERE g.transaction_id = h.id)
                         ELSE 0 END
                     <> GREATEST(e.after_tokens, 0) - GREATEST(e.before_tokens, 0))
        INTO unbalanced, misdirected, mismoved
        FROM new_headers AS h
        CROSS JOIN LATERAL (
          SELECT COUNT(*) AS entry_count, COALESCE(SUM(amount_tokens), 0) AS total,
                 COUNT(wallet_id) AS wallet_entries,
                 SUM(amount_tokens) FILTER (WHERE wallet_id = h.wallet_id) AS wallet_amount,
                 MAX(balance_before) FILTER (WHERE wallet_id = h.wallet_id) AS before_tokens,
                 MAX(balance_after) FILTER (WHERE wallet_id = h.wallet_id) AS after_tokens
          FROM ledger_entries WHERE transaction_id = h.id) AS e
        CROSS JOIN LATERAL (
          SELECT COALESCE(SUM(amount_tokens), 0) AS moved FROM grant_movements
          WHERE transaction_id = h.id) AS m;
      IF unbalanced THEN
        RAISE EXCEPTION 'unbalanced ledger transaction' USING ERRCODE = 'check_violation';
      END IF;
      IF misdirected THEN
        RAISE EXCEPTION 'ledger transaction must move one wallet in its kind''s direction'
          USING ERRCODE = 'check_violation';
      END IF;
      FOR refund IN SELECT DISTINCT wallet_id, refund_of_id FROM new_headers
                    WHERE refund_of_id IS NOT NULL ORDER BY refund_of_id LOOP
        -- Concurrent refunds of one debit queue here, and each sees the others.
        PERFORM pg_advisory_xact_lock(hashtextextended(refund.refund_of_id, 1));
        SELECT -SUM(e.amount_tokens) INTO debited FROM ledger_entries e
          JOIN ledger_transactions t ON t.id = e.transaction_id
          WHERE t.id = refund.refund_of_id AND t.kind = 'debit'
            AND t.wallet_id = refund.wallet_id AND e.wallet_id IS NOT NULL;
        -- Every refund of the debit, this statement's included.
        SELECT COALESCE(SUM(e.amount_tokens), 0) INTO refunded FROM ledger_entries e
          JOIN ledger_transactions t ON t.id = e.transaction_id
          WHERE t.refund_of_id = refund.refund_of_id AND e.wallet_id IS NOT NULL;
        IF debited IS NULL OR refunded > debited THEN
          RAISE EXCEPTION 'refund exceeds the debit it refunds' USING ERRCODE = 'check_violation';
        END IF;
      END LOOP;
      IF mismoved OR EXISTS (
          SELECT 1 FROM (SELECT DISTINCT wallet_id FROM new_headers) AS h
          WHERE (SELECT COALESCE(SUM(remaining_tokens), 0) FROM grants
                 WHERE grants.wallet_id = h.wallet_id AND live)
                IS DISTINCT FROM (SELECT GREATEST(balance_tokens, 0) FROM wallets
                                  WHERE wallets.id = h.wallet_id)) THEN
        RAISE EXCEPTION 'grants do not match the wallet''s balance'
          USING ERRCODE = 'check_violation';
      END IF;
      RETURN NULL;
    END $$"""

MOVEMENTS_VALID = """CREATE FUNCTION tokenbank_grant_movements_valid() RETURNS trigger
    LANGUAGE plpgsql AS $$
    DECLARE
      sealed boolean; refused boolean; given_back record; consumed bigint; returned bigint;
    BEGIN
      -- A movement joins an open transaction only. Unlike an entry's, this check takes
      -- no lock: a movement slipped in beside a header still has to make the wallet's
      -- grants add up to its balance at the next seal, and the audit reads them all.
      -- And it names a known grant, and consumes none that has expired.
      SELECT bool_or(t.id IS NOT NULL),
             bool_or(g.id IS NULL OR (m.kind = 'consume' AND g.expires_at <= m.created_at))
        INTO sealed, refused
        FROM new_movements AS m
        LEFT JOIN ledger_transactions AS t ON t.id = m.transaction_id
        LEFT JOIN grants AS g ON g.id = m.grant_id;
      IF sealed THEN
        RAISE EXCEPTION 'ledger transaction is sealed: nothing can be added'
          USING ERRCODE = 'integrity_constraint_violation';
      END IF;
      IF refused THEN
        RAISE EXCEPTION 'grant movement refused: an unknown or expired grant'
          USING ERRCODE = 'check_violation';
      END IF;
      FOR given_back IN SELECT DISTINCT grant_id, returns_movement_id FROM new_movements
                        WHERE kind = 'return' ORDER BY returns_movement_id LOOP
        -- Concurrent returns of one consumption queue here, and each sees the others.
        PERFORM pg_advisory_xact_lock(
          hashtextextended(given_back.returns_movement_id::text, 2));
        SELECT -amount_tokens INTO consumed FROM grant_movements
          WHERE id = given_back.returns_movement_id AND grant_id = given_back.grant_id
            AND kind IN ('consume', 'capture', 'settle');
        -- Every return of the consumption, this statement's included.
        SELECT COALESCE(SUM(amount_tokens), 0) INTO returned FROM grant_movements
          WHERE returns_movement_id = given_back.returns_movement_id;
        IF consumed IS NULL OR returned > consumed THEN
          RAISE EXCEPTION 'grant movement refused: a return beyond its consumption'
            USING ERRCODE = 'check_violation';
        END IF;
      END LOOP;
      RETURN NULL;
    END $$"""

# (trigger, table, transition table, new function, the row function it replaces)
STATEMENT_TRIGGERS = (
    (
        "ledger_entries_sealed",
        "ledger_entries",
        "new_entries",
        "tokenbank_entries_sealed",
        "tokenbank_entry_sealed",
    ),
    (
        "ledger_transactions_valid",
        "ledger_transactions",
        "new_headers",
        "tokenbank_transactions_valid",
        "tokenbank_transaction_valid",
    ),
    (
        "grant_movements_valid",
        "grant_movements",
        "new_movements",
        "tokenbank_grant_movements_valid",
        "tokenbank_grant_movement_valid",
    ),
)


def _earlier_revision(filename: str) -> ModuleType:
    """An earlier revision's module, to restore its SQL word for word."""
    path = Path(__file__).with_name(filename)
    spec = importlib.util.spec_from_file_location(f"tokenbank_revision_{path.stem}", path)
    if spec is None or spec.loader is None:  # pragma: no cover
        raise RuntimeError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row_functions() -> dict[str, str]:
    """The row-level functions 0007 replaces, as 0001 and 0005 left them."""
    ledger_core = _earlier_revision("0001_ledger_core.py")
    grants = _earlier_revision("0005_grants.py")

    def defining(name: str, statements: list[str]) -> str:
        (statement,) = (s for s in statements if f"FUNCTION {name}()" in s)
        return str(statement)

    return {
        "tokenbank_entry_sealed": defining(
            "tokenbank_entry_sealed", ledger_core.POSTGRES_FUNCTIONS
        ),
        "tokenbank_transaction_valid": grants.TRANSACTION_VALID,
        "tokenbank_grant_movement_valid": defining(
            "tokenbank_grant_movement_valid", grants.POSTGRES_FUNCTIONS
        ),
    }


def _use_statement_triggers() -> None:
    for statement in (ENTRIES_SEALED, TRANSACTIONS_VALID, MOVEMENTS_VALID):
        op.execute(statement)
    for trigger, table, transition, function, row_function in STATEMENT_TRIGGERS:
        op.execute(f"DROP TRIGGER {trigger} ON {table}")
        op.execute(f"DROP FUNCTION {row_function}()")
        op.execute(
            f"CREATE TRIGGER {trigger} AFTER INSERT ON {table}"
            f" REFERENCING NEW TABLE AS {transition}"
            f" FOR EACH STATEMENT EXECUTE FUNCTION {function}()"
        )


def _use_row_triggers() -> None:
    functions = _row_functions()
    for trigger, table, _, function, row_function in STATEMENT_TRIGGERS:
        op.execute(f"DROP TRIGGER {trigger} ON {table}")
        op.execute(f"DROP FUNCTION {function}()")
        op.execute(functions[row_function])
        op.execute(
            f"CREATE TRIGGER {trigger} BEFORE INSERT ON {table}"
            f" FOR EACH ROW EXECUTE FUNCTION {row_function}()"
        )


RETURNS_INDEX = "ix_grant_movements_returns_movement_id"


def _index_returns(*, only_returns: bool) -> None:
    op.drop_index(RETURNS_INDEX, table_name="grant_movements")
    where = sa.text("returns_movement_id IS NOT NULL") if only_returns else None
    op.create_index(
        RETURNS_INDEX,
        "grant_movements",
        ["returns_movement_id"],
        postgresql_where=where,
        sqlite_where=where,
    )


def upgrade() -> None:
    _index_by_live()
    _index_returns(only_returns=True)
    if _is_sqlite():
        return
    op.execute(f"ALTER TABLE grants SET (fillfactor = {FILLFACTOR})")
    _use_statement_triggers()


def downgrade() -> None:
    if not _is_sqlite():
        _use_row_triggers()
        op.execute("ALTER TABLE grants RESET (fillfactor)")
    _index_returns(only_returns=False)
    _index_by_remainder()
