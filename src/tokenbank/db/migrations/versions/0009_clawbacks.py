"""clawbacks: take back what is left of one credit's grant

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02

When a purchase is refunded or disputed, its tokens that were not spent leave the
wallet as a ``clawback`` transaction towards a new system account,
``tokens_clawed_back`` (decision 13, docs/architecture.md). The database holds it to
the one credit it claws back:

- a new transaction kind, ``clawback``, that moves its wallet down (like ``debit``
  and ``expiry``), and a new grant-movement kind, ``clawback``;
- ``ledger_transactions.clawback_of_id`` names the credit; a CHECK makes it required
  exactly on a clawback;
- when a header seals a transaction (the trigger that already checks its entries and
  grants; a movement is written before its header, so it is checked then): a
  clawback names a credit of its own wallet, and every movement of it is a
  ``clawback`` movement of a grant that credit made, in that wallet; and no other
  transaction has a ``clawback`` movement.

The downgrade refuses a database that holds clawbacks: their rows could not be
told apart from what the older schema allows.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa
from alembic import op

# A plain constant: the revision may be renumbered when branches merge.
revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def _is_sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def _earlier_revision(filename: str) -> ModuleType:
    """An earlier revision's module, to restore its SQL word for word."""
    path = Path(__file__).with_name(filename)
    spec = importlib.util.spec_from_file_location(f"tokenbank_revision_{path.stem}", path)
    if spec is None or spec.loader is None:  # pragma: no cover
        raise RuntimeError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- CHECKs: the new kinds and account, and the link to the credit ----------------------------

# (table, constraint, before, after)
WIDENED_CHECKS = (
    (
        "ledger_transactions",
        "ck_ledger_transactions_kind_known",
        "kind IN ('credit', 'debit', 'refund', 'expiry')",
        "kind IN ('credit', 'debit', 'refund', 'expiry', 'clawback')",
    ),
    (
        "grant_movements",
        "ck_grant_movements_kind_known",
        "kind IN ('consume', 'capture', 'return', 'expire', 'settle')",
        "kind IN ('consume', 'capture', 'return', 'expire', 'settle', 'clawback')",
    ),
    (
        "ledger_entries",
        "ck_ledger_entries_system_account_known",
        "system_account IS NULL OR system_account IN"
        " ('tokens_sold', 'tokens_granted', 'tokens_consumed', 'tokens_expired')",
        "system_account IS NULL OR system_account IN"
        " ('tokens_sold', 'tokens_granted', 'tokens_consumed', 'tokens_expired',"
        " 'tokens_clawed_back')",
    ),
)

COLUMN = "clawback_of_id"
LINK_CHECK = "ck_ledger_transactions_clawback_names_its_credit"
LINK_RULE = "(kind = 'clawback') = (clawback_of_id IS NOT NULL)"
LINK_KEY = "fk_ledger_transactions_clawback_of_id_ledger_transactions"
LINK_INDEX = "ix_ledger_transactions_clawback_of"
# Where SQLite's DDL of ledger_transactions gets the CHECK and the key (its last
# constraint, as 0001 wrote it), and what it gets, in the layout SQLAlchemy writes.
SQLITE_ANCHOR = (
    "CONSTRAINT uq_ledger_transactions_idempotency UNIQUE (idempotency_scope, idempotency_key)"
)
SQLITE_LINK = (
    f", \n\tCONSTRAINT {LINK_CHECK} CHECK ({LINK_RULE})"
    f", \n\tCONSTRAINT {LINK_KEY} FOREIGN KEY({COLUMN}) REFERENCES ledger_transactions (id)"
)


def _edit_sqlite_ddl(table: str, replacements: list[tuple[str, str]]) -> None:
    """Edit a table's stored DDL: SQLite cannot add or alter a table constraint.

    Its documented way for a change that no stored row can break (these only allow
    more, or constrain a column that is NULL in every row): rewrite the DDL in
    sqlite_schema and bump the schema version, so that every connection reloads it.
    """
    bind = op.get_bind()
    query = "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?"
    ddl = str(bind.exec_driver_sql(query, (table,)).scalar_one())
    for old, new in replacements:
        if ddl.count(old) != 1:  # pragma: no cover
            raise RuntimeError(f"{table}'s DDL is not the one 0009 expects: {old!r}")
        ddl = ddl.replace(old, new)
    version = bind.exec_driver_sql("PRAGMA schema_version").scalar_one()
    bind.exec_driver_sql("PRAGMA writable_schema=ON")
    bind.exec_driver_sql(
        "UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = ?", (ddl, table)
    )
    bind.exec_driver_sql(f"PRAGMA schema_version={int(version) + 1}")
    bind.exec_driver_sql("PRAGMA writable_schema=OFF")


def _set_checks(*, widened: bool) -> None:
    for table, name, before, after in WIDENED_CHECKS:
        old, new = (before, after) if widened else (after, before)
        if _is_sqlite():
            _edit_sqlite_ddl(table, [(old, new)])
        else:
            op.drop_constraint(op.f(name), table, type_="check")
            op.create_check_constraint(op.f(name), table, new)


def _add_link() -> None:
    op.add_column("ledger_transactions", sa.Column(COLUMN, sa.String(length=36), nullable=True))
    if _is_sqlite():
        _edit_sqlite_ddl("ledger_transactions", [(SQLITE_ANCHOR, SQLITE_ANCHOR + SQLITE_LINK)])
    else:
        op.create_check_constraint(op.f(LINK_CHECK), "ledger_transactions", LINK_RULE)
        op.create_foreign_key(
            op.f(LINK_KEY), "ledger_transactions", "ledger_transactions", [COLUMN], ["id"]
        )
    # Clawbacks only: every other header would add an entry of NULL.
    where = sa.text(f"{COLUMN} IS NOT NULL")
    op.create_index(
        LINK_INDEX, "ledger_transactions", [COLUMN], postgresql_where=where, sqlite_where=where
    )


def _drop_link() -> None:
    op.drop_index(LINK_INDEX, table_name="ledger_transactions")
    if _is_sqlite():
        _edit_sqlite_ddl("ledger_transactions", [(SQLITE_ANCHOR + SQLITE_LINK, SQLITE_ANCHOR)])
        # SQLite (3.35+) removes the column's text from the DDL, as it was before.
        op.execute(f"ALTER TABLE ledger_transactions DROP COLUMN {COLUMN}")
        return
    op.drop_constraint(op.f(LINK_KEY), "ledger_transactions", type_="foreignkey")
    op.drop_constraint(op.f(LINK_CHECK), "ledger_transactions", type_="check")
    op.drop_column("ledger_transactions", COLUMN)


# --- SQLite: the header triggers ---------------------------------------------------------------

NEGATIVE_KINDS_0005 = "'debit', 'expiry'"
NEGATIVE_KINDS = "'debit', 'expiry', 'clawback'"
CLAWBACK_REFUSED = "a clawback takes only from the grants of the credit it names"

# A clawback naming no credit is the CHECK's refusal (SQLite runs BEFORE triggers
# ahead of CHECKs, so this one leaves it alone).
SQLITE_CLAWBACK_TRIGGER = "ledger_transactions_clawback_of_one_credit"
SQLITE_CLAWBACK = f"""CREATE TRIGGER {SQLITE_CLAWBACK_TRIGGER} BEFORE INSERT ON ledger_transactions
    WHEN CASE
      WHEN NEW.kind <> 'clawback' THEN EXISTS (SELECT 1 FROM grant_movements
          WHERE transaction_id = NEW.id AND kind = 'clawback')
      WHEN NEW.clawback_of_id IS NULL THEN 0
      ELSE NOT EXISTS (SELECT 1 FROM ledger_transactions
          WHERE id = NEW.clawback_of_id AND kind = 'credit' AND wallet_id = NEW.wallet_id)
        OR EXISTS (SELECT 1 FROM grant_movements AS m LEFT JOIN grants AS g ON g.id = m.grant_id
          WHERE m.transaction_id = NEW.id
            AND (m.kind <> 'clawback' OR g.transaction_id IS NOT NEW.clawback_of_id
                 OR g.wallet_id IS NOT NEW.wallet_id))
    END
    BEGIN SELECT RAISE(ABORT, '{CLAWBACK_REFUSED}'); END"""


def _sqlite_triggers(*, clawbacks: bool) -> None:
    template = _earlier_revision("0005_grants.py").SQLITE_KIND_DIRECTION
    op.execute("DROP TRIGGER ledger_transactions_one_wallet")
    op.execute(template.format(negative=NEGATIVE_KINDS if clawbacks else NEGATIVE_KINDS_0005))
    if clawbacks:
        op.execute(SQLITE_CLAWBACK)
    else:
        op.execute(f"DROP TRIGGER {SQLITE_CLAWBACK_TRIGGER}")


# --- PostgreSQL: the statement-level header check ----------------------------------------------

# 0007's function with two changes: 'clawback' moves its wallet down, and
# ``misclawed`` (from the movements' counts by kind, read in the same lateral query)
# holds clawbacks to their credit's grants.
TRANSACTIONS_VALID = """CREATE OR REPLACE FUNCTION tokenbank_transactions_valid() RETURNS trigger
    LANGUAGE plpgsql AS $$
    DECLARE
      unbalanced boolean; misdirected boolean; mismoved boolean; misclawed boolean;
      refund record; refunded bigint; debited bigint;
    BEGIN
      PERFORM pg_advisory_xact_lock(hashtextextended(id, 0))
        FROM (SELECT id FROM new_headers ORDER BY id) AS h;
      SELECT bool_or(e.entry_count < 2 OR e.total <> 0),
             bool_or(e.wallet_entries <> 1 OR e.wallet_amount IS NULL
                     OR (h.kind IN ('debit', 'expiry', 'clawback') AND e.wallet_amount >= 0)
                     OR (h.kind NOT IN ('debit', 'expiry', 'clawback') AND e.wallet_amount <= 0)),
             bool_or(m.moved
                     + CASE WHEN h.kind IN ('credit', 'refund')  -- the kinds that make grants
                         THEN (SELECT COALESCE(SUM(g.amount_tokens), 0) FROM grants g
                               WHERE g.transaction_id = h.id)
                         ELSE 0 END
                     <> GREATEST(e.after_tokens, 0) - GREATEST(e.before_tokens, 0)),
             -- Clawback movements belong to clawbacks only; a clawback names a credit of
             -- its wallet and takes only from that credit's grants. (One that names no
             -- credit is the CHECK's refusal.)
             bool_or(CASE
               WHEN h.kind <> 'clawback' THEN m.clawbacks > 0
               WHEN h.clawback_of_id IS NULL THEN false
               ELSE m.clawbacks <> m.movements
                 OR NOT EXISTS (SELECT 1 FROM ledger_transactions c
                                WHERE c.id = h.clawback_of_id AND c.kind = 'credit'
                                  AND c.wallet_id = h.wallet_id)
                 OR EXISTS (SELECT 1 FROM grant_movements gm JOIN grants g ON g.id = gm.grant_id
                            WHERE gm.transaction_id = h.id
                              AND (g.transaction_id IS DISTINCT FROM h.clawback_of_id
                                   OR g.wallet_id <> h.wallet_id))
             END)
        INTO unbalanced, misdirected, mismoved, misclawed
        FROM new_headers AS h
        CROSS JOIN LATERAL (
          SELECT COUNT(*) AS entry_count, COALESCE(SUM(amount_tokens), 0) AS total,
                 COUNT(wallet_id) AS wallet_entries,
                 SUM(amount_tokens) FILTER (WHERE wallet_id = h.wallet_id) AS wallet_amount,
                 MAX(balance_before) FILTER (WHERE wallet_id = h.wallet_id) AS before_tokens,
                 MAX(balance_after) FILTER (WHERE wallet_id = h.wallet_id) AS after_tokens
          FROM ledger_entries WHERE transaction_id = h.id) AS e
        CROSS JOIN LATERAL (
          SELECT COALESCE(SUM(amount_tokens), 0) AS moved, COUNT(*) AS movements,
                 COUNT(*) FILTER (WHERE kind = 'clawback') AS clawbacks
          FROM grant_movements WHERE transaction_id = h.id) AS m;
      IF unbalanced THEN
        RAISE EXCEPTION 'unbalanced ledger transaction' USING ERRCODE = 'check_violation';
      END IF;
      IF misdirected THEN
        RAISE EXCEPTION 'ledger transaction must move one wallet in its kind''s direction'
          USING ERRCODE = 'check_violation';
      END IF;
      IF misclawed THEN
        RAISE EXCEPTION 'a clawback takes only from the grants of the credit it names'
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


def _transactions_valid_0007() -> str:
    statement = str(_earlier_revision("0007_cheaper_grant_checks.py").TRANSACTIONS_VALID)
    # The same function body; only the statement that installs it differs.
    return statement.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)


def _header_checks(*, clawbacks: bool) -> None:
    if _is_sqlite():
        _sqlite_triggers(clawbacks=clawbacks)
    else:
        op.execute(TRANSACTIONS_VALID if clawbacks else _transactions_valid_0007())


def _refuse_if_clawbacks() -> None:
    query = "SELECT COUNT(*) FROM ledger_transactions WHERE kind = 'clawback'"
    found = int(op.get_bind().exec_driver_sql(query).scalar_one())
    if found:
        raise RuntimeError(f"cannot downgrade 0009: the ledger holds {found} clawback transactions")


def upgrade() -> None:
    _set_checks(widened=True)
    _add_link()
    _header_checks(clawbacks=True)


def downgrade() -> None:
    _refuse_if_clawbacks()
    _header_checks(clawbacks=False)
    _drop_link()
    _set_checks(widened=False)
