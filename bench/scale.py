"""`python -m bench --scale`: a tokenbank database of a million users and ten million
ledger entries, built in minutes, to deduct against beside the usual 10,000 users.

The base (schema, app key, feature, plan, hot user) goes through tokenbank's own API
(bench/populate.py with no users). Then one SQL script, run by psql on the server, adds
in one transaction what the API would have written for `users` users, each opened with
a welcome grant of START_BALANCE_TOKENS and put on the bench plan, and as many 1-token
debits (round after round over the users, as time would interleave them) as bring the
ledger to `entries` entries: the wallets, the opening credits (two entries and a grant
each), and the debits (two entries and one grant movement each), with every balance
chain, cached balance, spent amount and grant remainder as the service keeps them.
`tokenbank audit` must pass afterwards; then VACUUM ANALYZE and a CHECKPOINT, so that
no run pays for the load's dirty pages or missing statistics.

The PostgreSQL cluster is private to one harness run (tokenbank.testing.postgres
removes it at the end), so nothing is cached between runs: the build's rate is what
decides the mode's cost (it is printed and kept in the JSON).
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.common import BenchFailure, log
from bench.databases import Database, audit, populate
from bench.populate import PLAN_NAME, START_BALANCE_TOKENS, USER_PREFIX
from bench.processes import clean_env
from tokenbank.testing.postgres import PostgresServer, find_bin_dir

SCALE_DATABASE = "tokenbank_scale_bench"
HISTORY_DAYS = 30  # the loaded debits are spread over the last days, oldest first
LOAD_TIMEOUT_SECONDS = 6 * 3600
# One `tokenbank audit` reads the whole ledger (about a minute per 10,000,000 entries,
# extrapolated from 500,000): a generous bound, not an expectation.
AUDIT_TIMEOUT_SECONDS = 3600.0
LOADED = re.compile(r"^scale_debits=(\d+)$", re.MULTILINE)

# Transaction ids are 36-character strings in UUID form; the loaded ones count up
# (opening i, debit j) so that their index fills in order. Random version-4 ids, as the
# service writes, will not meet them: the "4" and "8" nibbles are fixed, the first
# eight digits tell openings (00000000) from debits (00000001).
OPENING_ID = "'00000000-0000-4000-8000-' || lpad(to_hex(i), 12, '0')"
DEBIT_ID = "'00000001-0000-4000-8000-' || lpad(to_hex(j), 12, '0')"
# Debit j's time: spread evenly over the HISTORY_DAYS after the openings.
DEBIT_AT = "b.t0 + interval '1 second' * (1 + j * ({days} * 86400.0 / GREATEST(b.d, 1)))"

# {users} and {entries} are integers (formatted by bulk_load_sql, never text from input).
# Debit j (0 .. d - 1) is user j % users's, in round j / users (0-based): ids grow with
# the rounds, so a wallet's entries keep its chain (before START - round, after one
# less). User i has per_user + (i < extra) debits (per_user = d / users, extra = d % users).
BULK_LOAD_SQL = """
BEGIN;
-- The ledger's triggers check each statement's rows (sealed transactions, balanced
-- entries, grants matching balances) and take an advisory lock per transaction id:
-- millions of locks in one statement would exhaust the lock table, and the checks
-- would cost more than the load. session_replication_role = replica skips them (and
-- the foreign-key triggers) for this transaction only; CHECK, NOT NULL and UNIQUE
-- constraints still hold, and build_scale_database runs `tokenbank audit` (every rule
-- the triggers keep, over the whole ledger) after the load, before any run.
SET LOCAL session_replication_role = replica;
CREATE TEMP TABLE scale_base ON COMMIT DROP AS
SELECT b.*, b.d / {users} AS per_user, b.d % {users} AS extra
FROM (SELECT
    (SELECT COALESCE(MAX(id), 0) FROM wallets) AS wallet0,
    (SELECT COALESCE(MAX(id), 0) FROM grants) AS grant0,
    (SELECT COALESCE(MAX(id), 0) FROM ledger_entries) AS entry0,
    (SELECT COALESCE(MAX(id), 0) FROM grant_movements) AS movement0,
    GREATEST(0, ({entries} - 2 * {users} - (SELECT COUNT(*) FROM ledger_entries)) / 2) AS d,
    now() - interval '{days} days' AS t0,
    -- what the wallets' BEFORE INSERT trigger copies (it does not fire here)
    (SELECT low_tokens FROM balance_alert_levels WHERE id = 1) AS low,
    (SELECT critical_tokens FROM balance_alert_levels WHERE id = 1) AS critical) b;

INSERT INTO wallets (id, user_id, balance_tokens, held_tokens, spent_tokens, status, plan,
                     created_at, updated_at, plan_since, renewal_due_at,
                     low_balance_tokens, critical_balance_tokens)
SELECT b.wallet0 + 1 + i, '{prefix}' || i, {start} - n, 0, n, 'active', '{plan}',
       b.t0, now(), b.t0, now(), b.low, b.critical
FROM scale_base b, generate_series(0, {users} - 1) AS i,
     LATERAL (SELECT b.per_user + CASE WHEN i < b.extra THEN 1 ELSE 0 END AS n) AS counts;

INSERT INTO ledger_transactions (id, wallet_id, kind, operation_type, description, metadata,
                                 idempotency_scope, created_at)
SELECT {opening_id}, b.wallet0 + 1 + i, 'credit', 'bonus', 'Welcome bonus', 'null', '', b.t0
FROM scale_base b, generate_series(0, {users} - 1) AS i;

INSERT INTO ledger_entries (id, transaction_id, wallet_id, system_account, amount_tokens,
                            balance_before, balance_after, created_at)
SELECT b.entry0 + 1 + k, {opening_id},
       CASE side WHEN 0 THEN b.wallet0 + 1 + i END,
       CASE side WHEN 1 THEN 'tokens_granted' END,
       CASE side WHEN 0 THEN {start} ELSE -{start} END,
       CASE side WHEN 0 THEN 0 END, CASE side WHEN 0 THEN {start} END, b.t0
FROM scale_base b, generate_series(0, 2 * {users} - 1) AS k,
     LATERAL (SELECT k / 2 AS i, k % 2 AS side) AS entry;

INSERT INTO grants (id, wallet_id, transaction_id, source, category, priority, amount_tokens,
                    remaining_tokens, created_at)
SELECT b.grant0 + 1 + i, b.wallet0 + 1 + i, {opening_id}, 'bonus', 'promotional', 50,
       {start}, {start} - b.per_user - CASE WHEN i < b.extra THEN 1 ELSE 0 END, b.t0
FROM scale_base b, generate_series(0, {users} - 1) AS i;

INSERT INTO ledger_transactions (id, wallet_id, kind, operation_type, idempotency_scope,
                                 created_at)
SELECT {debit_id}, b.wallet0 + 1 + j % {users}, 'debit', 'usage', '', {debit_at}
FROM scale_base b, generate_series(0, b.d - 1) AS j;

INSERT INTO ledger_entries (id, transaction_id, wallet_id, system_account, amount_tokens,
                            balance_before, balance_after, created_at)
SELECT b.entry0 + 2 * {users} + 1 + k, {debit_id},
       CASE side WHEN 0 THEN b.wallet0 + 1 + j % {users} END,
       CASE side WHEN 1 THEN 'tokens_consumed' END,
       CASE side WHEN 0 THEN -1 ELSE 1 END,
       CASE side WHEN 0 THEN {start} - j / {users} END,
       CASE side WHEN 0 THEN {start} - j / {users} - 1 END, {debit_at}
FROM scale_base b, generate_series(0, 2 * b.d - 1) AS k,
     LATERAL (SELECT k / 2 AS j, k % 2 AS side) AS entry;

INSERT INTO grant_movements (id, transaction_id, grant_id, kind, amount_tokens, created_at)
SELECT b.movement0 + 1 + j, {debit_id}, b.grant0 + 1 + j % {users}, 'consume', -1, {debit_at}
FROM scale_base b, generate_series(0, b.d - 1) AS j;

-- The serial columns carry on after the ids given above.
SELECT setval(pg_get_serial_sequence('wallets', 'id'), (SELECT MAX(id) FROM wallets));
SELECT setval(pg_get_serial_sequence('grants', 'id'), (SELECT MAX(id) FROM grants));
SELECT setval(pg_get_serial_sequence('ledger_entries', 'id'),
              (SELECT MAX(id) FROM ledger_entries));
SELECT setval(pg_get_serial_sequence('grant_movements', 'id'),
              GREATEST(1, (SELECT MAX(id) FROM grant_movements)));
SELECT 'scale_debits=' || d FROM scale_base;
COMMIT;
"""


def bulk_load_sql(users: int, entries: int) -> str:
    """The load script for `users` users and (about) `entries` ledger entries in all."""
    if users < 1 or entries < 0:
        raise ValueError("users must be >= 1 and entries >= 0")
    return BULK_LOAD_SQL.format(
        users=int(users),
        entries=int(entries),
        days=HISTORY_DAYS,
        start=START_BALANCE_TOKENS,
        prefix=USER_PREFIX,
        plan=PLAN_NAME,
        opening_id=OPENING_ID,
        debit_id=DEBIT_ID,
        debit_at=DEBIT_AT.format(days=HISTORY_DAYS),
    )


def build_scale_database(
    postgres: PostgresServer, *, users: int, entries: int, workdir: Path
) -> tuple[Database, dict[str, Any]]:
    """The scale database, filled, audited and vacuumed; what the build cost."""
    postgres.create_database(SCALE_DATABASE)
    database = Database(
        "postgres-scale",
        postgres.sync_dsn(SCALE_DATABASE),
        audit_timeout_seconds=AUDIT_TIMEOUT_SECONDS,
    )
    started = time.monotonic()
    populate(database, 0, workdir)  # the base, through the API (its audit passes)
    based = time.monotonic()
    output = _psql(postgres, bulk_load_sql(users, entries), workdir / "scale-load.log")
    loaded = time.monotonic()
    _psql(postgres, "VACUUM ANALYZE;\nCHECKPOINT;\n", workdir / "scale-vacuum.log")
    vacuumed = time.monotonic()
    database.transactions, database.consumed = audit(database)  # it must pass
    audited = time.monotonic()
    debits = LOADED.search(output)
    if debits is None:
        raise BenchFailure(f"the scale load printed no count of its debits:\n{output}")
    rows = 5 * users + 4 * int(debits.group(1))  # see BULK_LOAD_SQL: per user, per debit
    load_seconds = loaded - based
    build = {
        "users": users,
        "entries_requested": entries,
        "ledger_transactions": database.transactions,
        "ledger_entries": database.entries,
        "wallets": database.wallets,
        "rows_loaded": rows,
        "base_seconds": round(based - started, 1),
        "load_seconds": round(load_seconds, 1),
        "rows_per_s": round(rows / load_seconds) if load_seconds else None,
        "vacuum_analyze_seconds": round(vacuumed - loaded, 1),
        "first_audit_seconds": round(audited - vacuumed, 1),
        "total_seconds": round(audited - started, 1),
    }
    return database, build


def _psql(postgres: PostgresServer, script: str, log_path: Path) -> str:
    """Run an SQL script with psql (stop at the first error); what it printed."""
    command = [str(find_bin_dir() / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"]
    command += ["-h", postgres.host, "-p", str(postgres.port), "-U", postgres.user]
    command += ["-d", SCALE_DATABASE, "-f", "-"]
    log(f"  scale: psql {log_path.stem} ...")
    result = subprocess.run(
        command,
        input=script,
        capture_output=True,
        text=True,
        timeout=LOAD_TIMEOUT_SECONDS,
        env=clean_env(),
        check=False,
    )
    log_path.write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise BenchFailure(f"the scale load failed ({log_path}):\n{result.stderr[-3000:]}")
    return result.stdout
