"""the ledger's statement-level checks look rows up by key, whatever their plan was made for

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-30

The statement-level checks of 0007 run inside PL/pgSQL functions, which plan each
query once per connection and keep the plan: a query without parameters is never
planned again until the tables' statistics change. A plan made while a ledger table
was small reads it whole, and kept it doing so as the table grew. Measured with
pg_stat_statements and auto_explain on a new database: the entries' sealed check,
planned when ``ledger_transactions`` held 40 rows as a nested loop over a scan of the
whole table, took 13 ms of a 32-debit batch's 17 once the table held 13,000 rows
(0.5 ms when the plan probed the key). The check asked for matching headers as a join
(``id IN (SELECT ...)``, ``LEFT JOIN``), which the planner may also make a hash join
over the whole table when the batch is large.

Now each check looks up each written row's header (and each movement's grant) in a
scalar or ``OFFSET 0`` lateral subquery, which stays a lookup per row, and the three
check functions run with ``enable_seqscan`` off, so that lookup is an index probe
whatever the statistics said when it was planned. What they refuse, their errors and
their locks are unchanged. PostgreSQL only; SQLite checks row by row.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

ENTRIES_SEALED = """CREATE OR REPLACE FUNCTION tokenbank_entries_sealed() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
      -- Serialise writers of one transaction id: a header still uncommitted in
      -- another session would otherwise be invisible here (READ COMMITTED).
      PERFORM pg_advisory_xact_lock(hashtextextended(transaction_id, 0))
        FROM (SELECT DISTINCT transaction_id FROM new_entries ORDER BY transaction_id) AS e;
      -- One primary-key probe per entry (a scalar subquery is never made a join).
      IF EXISTS (SELECT 1 FROM new_entries AS e
                 WHERE (SELECT true FROM ledger_transactions AS t
                        WHERE t.id = e.transaction_id)) THEN
        RAISE EXCEPTION 'ledger transaction is sealed: no entry can be added'
          USING ERRCODE = 'integrity_constraint_violation';
      END IF;
      RETURN NULL;
    END $$"""

# 0007's function with its first query's two joins made probes; the rest is the same.
_MOVEMENTS_JOINS = """      SELECT bool_or(t.id IS NOT NULL),
             bool_or(g.id IS NULL OR (m.kind = 'consume' AND g.expires_at <= m.created_at))
        INTO sealed, refused
        FROM new_movements AS m
        LEFT JOIN ledger_transactions AS t ON t.id = m.transaction_id
        LEFT JOIN grants AS g ON g.id = m.grant_id;"""
_MOVEMENTS_PROBES = """      SELECT bool_or((SELECT true FROM ledger_transactions AS t
                      WHERE t.id = m.transaction_id)),
             bool_or(g.id IS NULL OR (m.kind = 'consume' AND g.expires_at <= m.created_at))
        INTO sealed, refused
        FROM new_movements AS m
        -- OFFSET 0 keeps the subquery apart: a probe of the grant's key per movement.
        LEFT JOIN LATERAL (SELECT grants.id, grants.expires_at FROM grants
                           WHERE grants.id = m.grant_id OFFSET 0) AS g ON true;"""


def _revision_0007() -> ModuleType:
    path = Path(__file__).with_name("0007_cheaper_grant_checks.py")
    spec = importlib.util.spec_from_file_location(f"tokenbank_revision_{path.stem}", path)
    if spec is None or spec.loader is None:  # pragma: no cover
        raise RuntimeError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _replacing(statement: str) -> str:
    return statement.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)


def movements_valid() -> str:
    """0007's movement check, its first query looking up each row's header and grant."""
    earlier = str(_revision_0007().MOVEMENTS_VALID)
    if _MOVEMENTS_JOINS not in earlier:  # pragma: no cover - 0007 is never edited
        raise RuntimeError("0007's movement check is not the one this revision rewrites")
    return _replacing(earlier.replace(_MOVEMENTS_JOINS, _MOVEMENTS_PROBES))


# The statement-level checks (0007); each looks up the rows it checks by key.
CHECKS = (
    "tokenbank_entries_sealed",
    "tokenbank_transactions_valid",
    "tokenbank_grant_movements_valid",
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(ENTRIES_SEALED)
    op.execute(movements_valid())
    # After CREATE OR REPLACE, which would drop a function's settings.
    for function in CHECKS:
        op.execute(f"ALTER FUNCTION {function}() SET enable_seqscan = off")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for function in CHECKS:
        op.execute(f"ALTER FUNCTION {function}() RESET enable_seqscan")
    earlier = _revision_0007()
    op.execute(_replacing(str(earlier.ENTRIES_SEALED)))
    op.execute(_replacing(str(earlier.MOVEMENTS_VALID)))
