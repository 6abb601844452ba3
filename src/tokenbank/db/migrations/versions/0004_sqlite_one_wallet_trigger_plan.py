"""SQLite: the one-wallet trigger looks entries up by transaction, not by wallet

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21

The trigger that checks a header against its entries filtered on both the
transaction id and the wallet id, and SQLite's planner chose the wallet index for
it: every header then scanned all of its wallet's entries, so a wallet's writes
slowed as its history grew (measured: one busy user deducting at half the rate of
many users, p99 over a second). ``+wallet_id`` keeps the planner on the
transaction index (two rows per transaction). Same rule, same refusals;
PostgreSQL's trigger already reads entries by transaction id.
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TRIGGER = "ledger_transactions_one_wallet"

_TEMPLATE = """CREATE TRIGGER {name} BEFORE INSERT ON ledger_transactions
    WHEN (SELECT COUNT(*) FROM ledger_entries
          WHERE transaction_id = NEW.id AND wallet_id IS NOT NULL) <> 1
      OR NOT EXISTS (SELECT 1 FROM ledger_entries
          WHERE transaction_id = NEW.id AND {wallet_column} = NEW.wallet_id
            AND ((NEW.kind = 'debit' AND amount_tokens < 0)
                 OR (NEW.kind <> 'debit' AND amount_tokens > 0)))
    BEGIN SELECT RAISE(ABORT, 'ledger transaction must move one wallet in its kind''s direction');
    END"""


def _replace(wallet_column: str) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute(f"DROP TRIGGER IF EXISTS {TRIGGER}")
    op.execute(_TEMPLATE.format(name=TRIGGER, wallet_column=wallet_column))


def upgrade() -> None:
    # Unary + on a column: SQLite's documented way to keep an index off a term.
    _replace("+wallet_id")


def downgrade() -> None:
    _replace("wallet_id")
