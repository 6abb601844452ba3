"""a transaction is sealed by the statement that writes its header, not before it ends

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-01

The entries' and the movements' checks (0007, 0015) are statement-level triggers: they
run when their statement ends and refuse a row whose transaction already has a header.
A statement that writes entries, movements and their headers together (the batch
kernel's one statement, ``ledger/repository/batch_postgres.py``) saw its own headers
there, so every such statement was refused.

Now a header seals its transaction against rows written by any other statement: the
checks look up the (sub)transaction and command that wrote the statement's own rows
(one of them, by key: a statement's rows share both) and pass a header written by that
same command. The header's own check runs when the same statement ends and sees
every row of it, so nothing joins a transaction after its header was checked. A row
written by a later statement, of this transaction or another, is refused as before.
A header written by an earlier command of the same transaction has the same ``xmin``
and a smaller ``cmin``; by another transaction, another ``xmin``. PostgreSQL only:
SQLite checks row by row, as each row is written.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from alembic import op
from alembic.script import ScriptDirectory

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

ENTRIES_SEALED = """CREATE OR REPLACE FUNCTION tokenbank_entries_sealed() RETURNS trigger
    LANGUAGE plpgsql AS $$
    DECLARE
      writer record;
    BEGIN
      -- Serialise writers of one transaction id: a header still uncommitted in
      -- another session would otherwise be invisible here (READ COMMITTED).
      PERFORM pg_advisory_xact_lock(hashtextextended(transaction_id, 0))
        FROM (SELECT DISTINCT transaction_id FROM new_entries ORDER BY transaction_id) AS e;
      -- Who wrote this statement's entries: a header they wrote is sealed by this
      -- statement (its check runs now too), not before it.
      SELECT l.xmin AS xid, l.cmin AS command INTO writer FROM ledger_entries AS l
        WHERE l.id = (SELECT e.id FROM new_entries AS e LIMIT 1);
      -- One primary-key probe per entry (a scalar subquery is never made a join).
      IF EXISTS (SELECT 1 FROM new_entries AS e
                 WHERE (SELECT true FROM ledger_transactions AS t
                        WHERE t.id = e.transaction_id
                          AND NOT (t.xmin = writer.xid AND t.cmin = writer.command))) THEN
        RAISE EXCEPTION 'ledger transaction is sealed: no entry can be added'
          USING ERRCODE = 'integrity_constraint_violation';
      END IF;
      RETURN NULL;
    END $$"""

# 0015's function, the sealed test passing a header written by the movements' own command.
_SEALED_ANY_HEADER = """      SELECT bool_or((SELECT true FROM ledger_transactions AS t
                      WHERE t.id = m.transaction_id)),"""
_SEALED_EARLIER_HEADER = """      SELECT l.xmin AS xid, l.cmin AS command INTO writer
        FROM grant_movements AS l WHERE l.id = (SELECT m.id FROM new_movements AS m LIMIT 1);
      SELECT bool_or((SELECT true FROM ledger_transactions AS t
                      WHERE t.id = m.transaction_id
                        AND NOT (t.xmin = writer.xid AND t.cmin = writer.command))),"""
_DECLARED = "sealed boolean; refused boolean;"
_DECLARED_WITH_WRITER = "writer record; sealed boolean; refused boolean;"

# The statement-level checks this revision replaces; CREATE OR REPLACE drops settings.
CHECKS = ("tokenbank_entries_sealed", "tokenbank_grant_movements_valid")


def _revision_0015() -> ModuleType:
    """0015's module, loaded by Alembic from this directory, to reuse its SQL word for word."""
    scripts = ScriptDirectory(str(Path(__file__).parent.parent))
    script = scripts.get_revision("0015")
    if script is None:  # pragma: no cover - 0015 is this revision's predecessor
        raise RuntimeError("revision 0015 not found")
    return script.module


def movements_valid() -> str:
    """0015's movement check, passing the headers its own statement wrote."""
    earlier = str(_revision_0015().movements_valid())
    if _SEALED_ANY_HEADER not in earlier or _DECLARED not in earlier:  # pragma: no cover
        raise RuntimeError("0015's movement check is not the one this revision rewrites")
    with_writer = earlier.replace(_DECLARED, _DECLARED_WITH_WRITER, 1)
    return with_writer.replace(_SEALED_ANY_HEADER, _SEALED_EARLIER_HEADER, 1)


def _keep_probing_by_key() -> None:
    # 0015's setting: each lookup stays an index probe whatever its plan was made for.
    for function in CHECKS:
        op.execute(f"ALTER FUNCTION {function}() SET enable_seqscan = off")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(ENTRIES_SEALED)
    op.execute(movements_valid())
    _keep_probing_by_key()


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    earlier = _revision_0015()
    op.execute(str(earlier.ENTRIES_SEALED))
    op.execute(earlier.movements_valid())
    _keep_probing_by_key()
