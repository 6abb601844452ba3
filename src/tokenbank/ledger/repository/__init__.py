"""All SQL of the ledger: every statement that reads or writes a ledger table.

Other domains reach wallets, entries, transactions, holds and the idempotency key
registry only through these modules, so the hot path and its indexes can be read in
one place (tests/test_layout.py keeps it so).

- ``tables``: the table handles.
- ``writes``: the statements of the write path (conditional balance updates, entries,
  headers, holds, keys) and the lookups it makes inside its transaction.
- ``batch_postgres``: the batch kernel's two fixed statements on PostgreSQL.
- ``reads``: balances, history, statistics, holds, and wallet reads for plans and the
  token process.
- ``audit``: the queries of ``tokenbank audit``.
"""
