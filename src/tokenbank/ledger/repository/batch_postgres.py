"""The batch kernel's writes on PostgreSQL: two statements per batch, whatever its size.

A batch's rows go in as one array per column and come out of ``unnest``, so the
SQL text never changes with the batch size: one prepared statement each, one
round trip each. The generic path (parameter lists) costs a bind-and-execute
per row in asyncpg's ``executemany`` and a freshly rendered multi-row INSERT per
batch size; measured, those were 40% of the CPU a batch took.

1. The wallets' relative updates, the credits' new grants, the debits' changes of
   grant remainders and their movements, the holds placed and captured, and the
   entries, in one statement (a
   data-modifying CTE: PostgreSQL runs it to completion whether or not the main
   query reads it). The CHECK constraints and the triggers judge every row as they
   do on the generic path.
2. The idempotency keys and the headers, in one statement. The header trigger
   reads the entries, which statement 1 wrote, so it sees them all.

A refused row (a key taken meanwhile, a constraint) fails the whole statement,
as on the generic path: the writer then applies the batch one operation at a time.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import TextClause, bindparam, text
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenbank.db.types import UTCDateTime

_NOW = bindparam("now", type_=UTCDateTime())

WALLETS_AND_ENTRIES: TextClause = text(
    """
    WITH changes AS (
      SELECT * FROM unnest(
        CAST(:wallet_ids AS bigint[]), CAST(:balance_deltas AS bigint[]),
        CAST(:spent_deltas AS bigint[]), CAST(:held_deltas AS bigint[]),
        CAST(:statuses AS varchar[]), CAST(:reasons AS varchar[]),
        CAST(:next_events AS timestamptz[])
      ) AS c(wallet_id, balance_delta, spent_delta, held_delta, status, reason, next_event)
    ), updated AS (
      UPDATE wallets SET
        balance_tokens = wallets.balance_tokens + c.balance_delta,
        spent_tokens = wallets.spent_tokens + c.spent_delta,
        held_tokens = wallets.held_tokens + c.held_delta,
        status = c.status,
        suspended_reason = c.reason,
        next_grant_event_at = c.next_event,
        updated_at = :now
      FROM changes AS c WHERE wallets.id = c.wallet_id
      RETURNING wallets.id
    ), new_grants AS (
      INSERT INTO grants (wallet_id, transaction_id, source, category, priority, expires_at,
                          amount_tokens, remaining_tokens, created_at)
      SELECT g.wallet_id, g.transaction_id, g.source, g.category, g.priority, g.expires_at,
             g.amount_tokens, g.amount_tokens, :now
      FROM unnest(
        CAST(:grant_wallet_ids AS bigint[]), CAST(:grant_transaction_ids AS varchar[]),
        CAST(:grant_sources AS varchar[]), CAST(:grant_categories AS varchar[]),
        CAST(:grant_priorities AS integer[]), CAST(:grant_expiries AS timestamptz[]),
        CAST(:grant_amounts AS bigint[])
      ) AS g(wallet_id, transaction_id, source, category, priority, expires_at, amount_tokens)
    ), grant_changes AS (
      UPDATE grants SET remaining_tokens = grants.remaining_tokens + d.delta
      FROM unnest(CAST(:changed_grant_ids AS bigint[]), CAST(:grant_deltas AS bigint[]))
        AS d(id, delta)
      WHERE grants.id = d.id
    ), new_movements AS (
      INSERT INTO grant_movements (transaction_id, grant_id, kind, amount_tokens, created_at)
      SELECT m.transaction_id, m.grant_id, m.kind, m.amount_tokens, :now
      FROM unnest(
        CAST(:movement_transaction_ids AS varchar[]), CAST(:movement_grant_ids AS bigint[]),
        CAST(:movement_kinds AS varchar[]), CAST(:movement_amounts AS bigint[])
      ) AS m(transaction_id, grant_id, kind, amount_tokens)
    ), new_holds AS (
      INSERT INTO holds (id, wallet_id, amount_tokens, status, operation_type, description,
                         metadata, idempotency_scope, idempotency_key, request_hash,
                         expires_at, created_at)
      SELECT h.id, h.wallet_id, h.amount_tokens, 'pending', h.operation_type, h.description,
             CAST(h.metadata AS json), h.idempotency_scope, h.idempotency_key,
             h.request_hash, h.expires_at, :now
      FROM unnest(
        CAST(:hold_ids AS varchar[]), CAST(:hold_wallet_ids AS bigint[]),
        CAST(:hold_amounts AS bigint[]), CAST(:hold_operation_types AS varchar[]),
        CAST(:hold_descriptions AS varchar[]), CAST(:hold_metadata AS text[]),
        CAST(:hold_scopes AS varchar[]), CAST(:hold_keys AS varchar[]),
        CAST(:hold_hashes AS varchar[]), CAST(:hold_expiries AS timestamptz[])
      ) AS h(id, wallet_id, amount_tokens, operation_type, description, metadata,
             idempotency_scope, idempotency_key, request_hash, expires_at)
    ), captured_holds AS (
      -- Locked as pending by the kernel's read (batch_holds.lock_holds).
      UPDATE holds SET status = 'captured', captured_tokens = d.captured_tokens,
                       resolved_at = :now
      FROM unnest(CAST(:captured_hold_ids AS varchar[]), CAST(:captured_amounts AS bigint[]))
        AS d(id, captured_tokens)
      WHERE holds.id = d.id AND holds.status = 'pending'
    )
    INSERT INTO ledger_entries (transaction_id, wallet_id, system_account, amount_tokens,
                                balance_before, balance_after, created_at)
    SELECT e.transaction_id, e.wallet_id, e.system_account, e.amount_tokens,
           e.balance_before, e.balance_after, :now
    FROM unnest(
      CAST(:transaction_ids AS varchar[]), CAST(:entry_wallet_ids AS bigint[]),
      CAST(:system_accounts AS varchar[]), CAST(:amounts AS bigint[]),
      CAST(:balances_before AS bigint[]), CAST(:balances_after AS bigint[])
    ) WITH ORDINALITY AS e(transaction_id, wallet_id, system_account, amount_tokens,
                           balance_before, balance_after, position)
    ORDER BY e.position  -- ids in batch order: a wallet's balance chain follows them
    RETURNING id, transaction_id, wallet_id
    """
).bindparams(_NOW)

KEYS_AND_HEADERS: TextClause = text(
    """
    WITH keys AS (
      INSERT INTO idempotency_keys (scope, key, request_hash, operation, created_at)
      SELECT k.scope, k.key, k.request_hash, k.operation, :now
      FROM unnest(
        CAST(:key_scopes AS varchar[]), CAST(:keys AS varchar[]),
        CAST(:key_hashes AS varchar[]), CAST(:key_operations AS varchar[])
      ) AS k(scope, key, request_hash, operation)
    )
    INSERT INTO ledger_transactions (id, wallet_id, kind, operation_type, description,
                                     metadata, pricing, idempotency_scope, idempotency_key,
                                     request_hash, hold_id, created_at)
    SELECT h.id, h.wallet_id, h.kind, h.operation_type, h.description,
           CAST(h.metadata AS json), CAST(h.pricing AS json), h.idempotency_scope,
           h.idempotency_key, h.request_hash, h.hold_id, :now
    FROM unnest(
      CAST(:ids AS varchar[]), CAST(:header_wallet_ids AS bigint[]),
      CAST(:kinds AS varchar[]), CAST(:operation_types AS varchar[]),
      CAST(:descriptions AS varchar[]), CAST(:metadata AS text[]),
      CAST(:pricing AS text[]), CAST(:idempotency_scopes AS varchar[]),
      CAST(:idempotency_keys AS varchar[]), CAST(:request_hashes AS varchar[]),
      CAST(:header_hold_ids AS varchar[])
    ) AS h(id, wallet_id, kind, operation_type, description, metadata, pricing,
           idempotency_scope, idempotency_key, request_hash, hold_id)
    """
).bindparams(_NOW)

# The header columns statement 2 writes; a header with any other is not the kernel's.
HEADER_COLUMNS = frozenset(
    {
        "id",
        "wallet_id",
        "kind",
        "operation_type",
        "description",
        "metadata",
        "pricing",
        "idempotency_scope",
        "idempotency_key",
        "request_hash",
        "hold_id",
        "created_at",
    }
)


def _json_text(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _column(rows: list[dict[str, Any]], name: str) -> list[Any]:
    return [row[name] for row in rows]


def _hold_columns(
    placed: list[dict[str, Any]], captured: list[dict[str, Any]]
) -> dict[str, list[Any]]:
    """The holds placed (rows of the holds table) and captured (``hold_id``,
    ``captured_tokens``) as the statement's arrays."""
    return {
        "hold_ids": _column(placed, "id"),
        "hold_wallet_ids": _column(placed, "wallet_id"),
        "hold_amounts": _column(placed, "amount_tokens"),
        "hold_operation_types": _column(placed, "operation_type"),
        "hold_descriptions": _column(placed, "description"),
        "hold_metadata": [_json_text(hold["metadata"]) for hold in placed],
        "hold_scopes": _column(placed, "idempotency_scope"),
        "hold_keys": _column(placed, "idempotency_key"),
        "hold_hashes": _column(placed, "request_hash"),
        "hold_expiries": _column(placed, "expires_at"),
        "captured_hold_ids": _column(captured, "hold_id"),
        "captured_amounts": _column(captured, "captured_tokens"),
    }


async def write_batch(
    conn: AsyncConnection,
    *,
    changes: list[dict[str, Any]],
    legs: list[dict[str, Any]],
    grants: list[dict[str, Any]],
    grant_deltas: list[dict[str, int]],
    movements: list[dict[str, Any]],
    headers: list[dict[str, Any]],
    key_rows: list[dict[str, Any]],
    placed_holds: list[dict[str, Any]],
    captured_holds: list[dict[str, Any]],
    now: datetime,
) -> dict[str, int]:
    """Write a batch's wallet changes, holds, entries, keys and headers; wallet entry
    ids by transaction id."""
    unexpected = {column for header in headers for column in header} - HEADER_COLUMNS
    if unexpected:
        raise ValueError(f"header columns the batch statement does not write: {unexpected}")
    rows = await conn.execute(
        WALLETS_AND_ENTRIES,
        {
            "now": now,
            "wallet_ids": _column(changes, "wallet_id"),
            "balance_deltas": _column(changes, "balance_delta"),
            "spent_deltas": _column(changes, "spent_delta"),
            "held_deltas": _column(changes, "held_delta"),
            "statuses": _column(changes, "new_status"),
            "reasons": _column(changes, "new_reason"),
            "next_events": _column(changes, "next_event_at"),
            "grant_wallet_ids": _column(grants, "wallet_id"),
            "grant_transaction_ids": _column(grants, "transaction_id"),
            "grant_sources": _column(grants, "source"),
            "grant_categories": _column(grants, "category"),
            "grant_priorities": _column(grants, "priority"),
            "grant_expiries": _column(grants, "expires_at"),
            "grant_amounts": _column(grants, "amount_tokens"),
            "changed_grant_ids": _column(grant_deltas, "grant_id"),
            "grant_deltas": _column(grant_deltas, "delta"),
            "movement_transaction_ids": _column(movements, "transaction_id"),
            "movement_grant_ids": _column(movements, "grant_id"),
            "movement_kinds": _column(movements, "kind"),
            "movement_amounts": _column(movements, "amount_tokens"),
            "transaction_ids": _column(legs, "transaction_id"),
            "entry_wallet_ids": _column(legs, "wallet_id"),
            "system_accounts": _column(legs, "system_account"),
            "amounts": _column(legs, "amount_tokens"),
            "balances_before": _column(legs, "balance_before"),
            "balances_after": _column(legs, "balance_after"),
            **_hold_columns(placed_holds, captured_holds),
        },
    )
    entry_ids = {row.transaction_id: int(row.id) for row in rows if row.wallet_id is not None}
    await conn.execute(
        KEYS_AND_HEADERS,
        {
            "now": now,
            "key_scopes": _column(key_rows, "scope"),
            "keys": _column(key_rows, "key"),
            "key_hashes": _column(key_rows, "request_hash"),
            "key_operations": _column(key_rows, "operation"),
            "ids": _column(headers, "id"),
            "header_wallet_ids": _column(headers, "wallet_id"),
            "kinds": _column(headers, "kind"),
            "operation_types": _column(headers, "operation_type"),
            "descriptions": [header.get("description") for header in headers],
            "metadata": [_json_text(header.get("metadata")) for header in headers],
            "pricing": [_json_text(header.get("pricing")) for header in headers],
            "idempotency_scopes": _column(headers, "idempotency_scope"),
            "idempotency_keys": [header.get("idempotency_key") for header in headers],
            "request_hashes": [header.get("request_hash") for header in headers],
            "header_hold_ids": [header.get("hold_id") for header in headers],
        },
    )
    return entry_ids
