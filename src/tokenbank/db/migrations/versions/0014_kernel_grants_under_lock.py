"""the batch kernel reads a waited-for wallet's grants under its lock, in one statement

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30

The batch kernel locks its wallets and reads their live grants in one statement
(decision 3). When that statement waits for a wallet another transaction is writing,
PostgreSQL returns the wallet's newest version, but a subquery still reads the
statement's snapshot: the grants from before the write it waited for. The kernel
noticed (the wallet's ``xmin`` in the snapshot differs from the locked row's) and read
those wallets' grants again: one more round trip, paid by every batch of a contended
wallet (all of them, for one hot user, with two server processes).

``tokenbank_live_grants`` reads one wallet's live grants in a query of its own. It is
VOLATILE, so PostgreSQL neither inlines it nor lets it share the calling statement's
snapshot: each call takes a fresh one. Called for a wallet the statement waited for,
it runs after the wait (PostgreSQL re-evaluates the locked row's expressions then) and
sees what the other transaction committed. PostgreSQL only; SQLite has one writer.
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

LIVE_GRANTS = """CREATE FUNCTION tokenbank_live_grants(for_wallet_id bigint)
RETURNS TABLE (
    id bigint, category varchar, priority integer, expires_at timestamptz,
    remaining_tokens bigint
) LANGUAGE sql VOLATILE AS $$
    SELECT g.id, g.category, g.priority, g.expires_at, g.remaining_tokens
      FROM grants AS g
     WHERE g.wallet_id = for_wallet_id AND g.live
     ORDER BY g.id
$$"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(LIVE_GRANTS)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION tokenbank_live_grants(bigint)")
