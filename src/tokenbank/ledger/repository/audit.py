"""Prove the books (``tokenbank audit``).

Every check is a query that returns the rows that break a rule; a clean ledger
returns none. The rules: each transaction's entries sum to zero (two or more of
them, one per wallet), every entry has its header, each wallet's cached balance,
held and spent amounts equal what its entries and holds say, and each wallet's
entries chain: every balance_before is the previous entry's balance_after. And for
grants (decision 13): each remainder is within its amount and equals its amount plus
its movements, a wallet's grants add up to its balance (0 while overdrawn), each
transaction moved its grants by what it moved the non-negative balance, no return
gives back more than its consumption took, and a clawback names a credit of its
wallet and takes only from that credit's grants (no other transaction has a clawback
movement). A scheduled credit, once applied, names a credit of its wallet and amount,
and each plan renewal names the grant of its allocation (decision 16).
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenbank.ledger.results import AuditReport

MAX_REPORTED_ROWS = 20
# Transactions written before grants existed (migration 0005) moved no grant: the
# migration recorded the last entry id of that time.
# (The query below names the setting: ledger.grants_since_entry_id.)

CHECKS: dict[str, str] = {
    "unbalanced transactions": """
        SELECT t.id, COUNT(e.id) AS entries, COALESCE(SUM(e.amount_tokens), 0) AS total
        FROM ledger_transactions t LEFT JOIN ledger_entries e ON e.transaction_id = t.id
        GROUP BY t.id HAVING COUNT(e.id) < 2 OR COALESCE(SUM(e.amount_tokens), 0) <> 0""",
    "entries without a transaction": """
        SELECT e.id, e.transaction_id FROM ledger_entries e
        LEFT JOIN ledger_transactions t ON t.id = e.transaction_id WHERE t.id IS NULL""",
    "wallet balance differs from its entries": """
        SELECT w.user_id, w.balance_tokens, COALESCE(SUM(e.amount_tokens), 0) AS from_entries
        FROM wallets w LEFT JOIN ledger_entries e ON e.wallet_id = w.id
        GROUP BY w.id, w.user_id, w.balance_tokens
        HAVING w.balance_tokens <> COALESCE(SUM(e.amount_tokens), 0)""",
    "wallet held amount differs from its pending holds": """
        SELECT w.user_id, w.held_tokens, COALESCE(SUM(h.amount_tokens), 0) AS from_holds
        FROM wallets w LEFT JOIN holds h ON h.wallet_id = w.id AND h.status = 'pending'
        GROUP BY w.id, w.user_id, w.held_tokens
        HAVING w.held_tokens <> COALESCE(SUM(h.amount_tokens), 0)""",
    "wallet spent amount differs from its debits and refunds": """
        SELECT w.user_id, w.spent_tokens, COALESCE(-SUM(CASE WHEN t.kind IN ('debit', 'refund')
                                            THEN e.amount_tokens ELSE 0 END), 0) AS from_entries
        FROM wallets w LEFT JOIN ledger_entries e ON e.wallet_id = w.id
        LEFT JOIN ledger_transactions t ON t.id = e.transaction_id
        GROUP BY w.id, w.user_id, w.spent_tokens
        HAVING w.spent_tokens <> COALESCE(-SUM(CASE WHEN t.kind IN ('debit', 'refund')
                                            THEN e.amount_tokens ELSE 0 END), 0)""",
    "broken balance chain": """
        SELECT id, wallet_id, balance_before, previous_after FROM (
            SELECT id, wallet_id, balance_before,
                   LAG(balance_after, 1, 0) OVER (PARTITION BY wallet_id ORDER BY id)
                       AS previous_after
            FROM ledger_entries WHERE wallet_id IS NOT NULL) chained
        WHERE balance_before <> previous_after""",
    "refund larger than its debit": """
        SELECT r.refund_of_id, SUM(e.amount_tokens) AS refunded, MAX(d.debited) AS debited
        FROM ledger_transactions r
        JOIN ledger_entries e ON e.transaction_id = r.id AND e.wallet_id IS NOT NULL
        JOIN (SELECT transaction_id, -amount_tokens AS debited FROM ledger_entries
              WHERE wallet_id IS NOT NULL) d ON d.transaction_id = r.refund_of_id
        WHERE r.refund_of_id IS NOT NULL
        GROUP BY r.refund_of_id HAVING SUM(e.amount_tokens) > MAX(d.debited)""",
    "active wallet overdrawn": """
        SELECT user_id, balance_tokens, held_tokens FROM wallets
        WHERE status = 'active' AND balance_tokens < held_tokens""",
    "grant remainder out of bounds": """
        SELECT id, amount_tokens, remaining_tokens FROM grants
        WHERE remaining_tokens < 0 OR remaining_tokens > amount_tokens""",
    "grant remainder differs from its movements": """
        SELECT g.id, g.remaining_tokens, g.amount_tokens + COALESCE(SUM(m.amount_tokens), 0)
        FROM grants g LEFT JOIN grant_movements m ON m.grant_id = g.id
        GROUP BY g.id, g.remaining_tokens, g.amount_tokens
        HAVING g.remaining_tokens <> g.amount_tokens + COALESCE(SUM(m.amount_tokens), 0)""",
    "wallet balance differs from its grants": """
        SELECT w.user_id, w.balance_tokens, COALESCE(SUM(g.remaining_tokens), 0)
        FROM wallets w LEFT JOIN grants g ON g.wallet_id = w.id
        GROUP BY w.id, w.user_id, w.balance_tokens
        HAVING COALESCE(SUM(g.remaining_tokens), 0)
               <> CASE WHEN w.balance_tokens > 0 THEN w.balance_tokens ELSE 0 END""",
    "transaction's grants differ from its wallet entry": """
        SELECT t.id, e.balance_before, e.balance_after FROM ledger_transactions t
        JOIN ledger_entries e ON e.transaction_id = t.id AND e.wallet_id IS NOT NULL
        WHERE e.id > COALESCE((SELECT CAST(CAST(value AS TEXT) AS BIGINT) FROM settings
                               WHERE key = 'ledger.grants_since_entry_id'), 0)
          AND (CASE WHEN e.balance_after > 0 THEN e.balance_after ELSE 0 END)
              - (CASE WHEN e.balance_before > 0 THEN e.balance_before ELSE 0 END)
          <> COALESCE((SELECT SUM(amount_tokens) FROM grants g WHERE g.transaction_id = t.id), 0)
           + COALESCE((SELECT SUM(amount_tokens) FROM grant_movements m
                       WHERE m.transaction_id = t.id), 0)""",
    "grant return beyond its consumption": """
        SELECT c.id, -c.amount_tokens, SUM(r.amount_tokens) FROM grant_movements c
        JOIN grant_movements r ON r.returns_movement_id = c.id
        GROUP BY c.id, c.amount_tokens HAVING SUM(r.amount_tokens) > -c.amount_tokens""",
    "clawback of something other than a credit of its wallet": """
        SELECT t.id, t.clawback_of_id, c.kind FROM ledger_transactions t
        LEFT JOIN ledger_transactions c ON c.id = t.clawback_of_id
        WHERE t.kind = 'clawback'
          AND (c.id IS NULL OR c.kind <> 'credit' OR c.wallet_id <> t.wallet_id)""",
    "clawback movement outside its credit's grants": """
        SELECT t.id, t.kind, m.id, m.kind, g.transaction_id FROM grant_movements m
        JOIN ledger_transactions t ON t.id = m.transaction_id
        LEFT JOIN grants g ON g.id = m.grant_id
        WHERE (t.kind = 'clawback' OR m.kind = 'clawback')
          AND (t.kind <> 'clawback' OR m.kind <> 'clawback' OR g.id IS NULL
               OR g.transaction_id IS NULL OR g.transaction_id <> t.clawback_of_id
               OR g.wallet_id <> t.wallet_id)""",
    "scheduled credit applied by something other than its credit": """
        SELECT s.id, s.transaction_id FROM scheduled_credits s
        WHERE s.transaction_id IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM ledger_transactions t
            JOIN ledger_entries e ON e.transaction_id = t.id AND e.wallet_id = s.wallet_id
            WHERE t.id = s.transaction_id AND t.kind = 'credit'
              AND e.amount_tokens = s.amount_tokens)""",
    "renewal without its allocation": """
        SELECT r.wallet_id, r.period_start FROM plan_renewals r
        WHERE NOT EXISTS (SELECT 1 FROM grants g
            WHERE g.transaction_id = r.transaction_id AND g.wallet_id = r.wallet_id
              AND g.source = 'renewal' AND g.amount_tokens = r.granted_tokens)""",
}


async def run_audit(conn: AsyncConnection) -> AuditReport:
    report = AuditReport()
    for name, query in CHECKS.items():
        rows = (await conn.execute(text(query))).all()
        if rows:
            report.problems[name] = [tuple(row) for row in rows[:MAX_REPORTED_ROWS]]
    report.transactions = await _count(conn, "ledger_transactions")
    report.entries = await _count(conn, "ledger_entries")
    report.wallets = await _count(conn, "wallets")
    system = await conn.execute(
        text(
            "SELECT system_account, SUM(amount_tokens) FROM ledger_entries"
            " WHERE system_account IS NOT NULL GROUP BY system_account"
        )
    )
    report.system_balances = {name: int(total) for name, total in system}
    return report


async def _count(conn: AsyncConnection, table: str) -> int:
    # Table names come from the fixed list above, never from input.
    return int((await conn.execute(text(f"SELECT COUNT(*) FROM {table}"))).scalar_one())  # noqa: S608
