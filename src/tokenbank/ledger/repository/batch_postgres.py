"""The batch kernel's writes on PostgreSQL: one statement per batch, whatever its size.

A batch's rows go in as one JSON document per table (an array of rows, each an
array of values in a fixed column order) and come out of ``json_array_elements``,
so the SQL text never changes with the batch size: one prepared statement, one
round trip. It goes to asyncpg directly (:func:`tokenbank.db.direct.driver_fetch`),
inside the transaction the kernel's lock read began through SQLAlchemy.

Measured (bench/PROFILE.md, eighth section): SQLAlchemy's execution path and
asyncpg's encoding of some forty typed arrays (an abstract-class check per element)
cost about 800 us of Python per batch of 16 debits; a JSON document per table,
made by the standard library's C encoder, and asyncpg alone cost about 200. The
generic path before both (parameter lists) cost a bind-and-execute per row.

The statement is a data-modifying CTE (PostgreSQL runs each part to completion
whether or not the main query reads it): the wallets' relative updates, the credits'
new grants, the debits' changes of grant remainders and their movements, the holds
placed and captured, the entries and the idempotency keys, then the headers. The
CHECK constraints and the triggers judge every row as they do on the generic path;
the statement-level checks run when it ends, and the headers' check then reads every
entry and movement the statement wrote.

A refused row (a key taken meanwhile, a constraint) fails the whole statement,
as on the generic path: the writer then applies the batch one operation at a time.
JSON columns (metadata, pricing) travel as text made by ``json.dumps``, as
SQLAlchemy's JSON type writes them on the per-operation path, so both paths store
the same text.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from operator import itemgetter
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tokenbank.db.direct import driver_fetch

# Each table's columns: the key of the kernel's row dicts (also the name the SQL
# gives it), and its SQL type. A row travels as an array of values in this order.
Columns = tuple[tuple[str, str], ...]
CHANGE_COLUMNS: Columns = (
    ("wallet_id", "bigint"),
    ("balance_delta", "bigint"),
    ("spent_delta", "bigint"),
    ("held_delta", "bigint"),
    ("new_status", "text"),
    ("new_reason", "text"),
    ("next_event_at", "timestamptz"),
)
GRANT_COLUMNS: Columns = (
    ("wallet_id", "bigint"),
    ("transaction_id", "text"),
    ("source", "text"),
    ("category", "text"),
    ("priority", "integer"),
    ("expires_at", "timestamptz"),
    ("amount_tokens", "bigint"),
)
GRANT_DELTA_COLUMNS: Columns = (("grant_id", "bigint"), ("delta", "bigint"))
MOVEMENT_COLUMNS: Columns = (
    ("transaction_id", "text"),
    ("grant_id", "bigint"),
    ("kind", "text"),
    ("amount_tokens", "bigint"),
)
HOLD_COLUMNS: Columns = (
    ("id", "text"),
    ("wallet_id", "bigint"),
    ("amount_tokens", "bigint"),
    ("operation_type", "text"),
    ("description", "text"),
    ("metadata", "json"),
    ("idempotency_scope", "text"),
    ("idempotency_key", "text"),
    ("request_hash", "text"),
    ("expires_at", "timestamptz"),
)
CAPTURE_COLUMNS: Columns = (("hold_id", "text"), ("captured_tokens", "bigint"))
LEG_COLUMNS: Columns = (
    ("transaction_id", "text"),
    ("wallet_id", "bigint"),
    ("system_account", "text"),
    ("amount_tokens", "bigint"),
    ("balance_before", "bigint"),
    ("balance_after", "bigint"),
)
KEY_COLUMNS: Columns = (
    ("scope", "text"),
    ("key", "text"),
    ("request_hash", "text"),
    ("operation", "text"),
)
HEADER_COLUMN_TYPES: Columns = (
    ("id", "text"),
    ("wallet_id", "bigint"),
    ("kind", "text"),
    ("operation_type", "text"),
    ("description", "text"),
    ("metadata", "json"),
    ("pricing", "json"),
    ("idempotency_scope", "text"),
    ("idempotency_key", "text"),
    ("request_hash", "text"),
    ("hold_id", "text"),
)
# The header columns statement 2 writes; a header with any other is not the kernel's.
HEADER_COLUMNS = frozenset({name for name, _ in HEADER_COLUMN_TYPES} | {"created_at"})
JSON_COLUMNS = frozenset({"metadata", "pricing"})


def _rows_of(parameter: int, columns: Columns) -> str:
    """A subquery of the rows in parameter ``$parameter`` (a JSON array of rows),
    with their position in it. Made at import, of this module's constants only."""
    fields = ", ".join(
        f"CAST(r->>{index} AS {sql_type}) AS {name}"
        for index, (name, sql_type) in enumerate(columns)
    )
    # unnest(ARRAY(...)) rather than the JSON function alone: the planner expects
    # ten rows of an array it cannot see, and a hundred of json_array_elements, for
    # which it reads every wallet rather than look each one up by its key.
    document = f"json_array_elements(CAST(${parameter} AS json))"
    in_order = "WITH ORDINALITY AS j(element, position) ORDER BY j.position"
    elements = f"ARRAY(SELECT element FROM {document} {in_order})"  # noqa: S608
    from_elements = f"FROM unnest({elements}) WITH ORDINALITY AS t(r, position)"
    return f"(SELECT {fields}, t.position {from_elements})"


NOW = "CAST($1 AS timestamptz)"
# Every write of the batch in one statement. Its parts run in an order PostgreSQL
# chooses, except where one reads another's rows; the headers read all the others'
# (a count of each), so they go in last: the grants' row check (``grants_sealed``)
# refuses a grant whose header it can already see. The statement-level checks run
# when the statement ends and see all of it (migration 0016: a header seals its
# transaction against the rows of other statements).
BATCH = f"""
WITH updated AS (
  UPDATE wallets SET
    balance_tokens = wallets.balance_tokens + c.balance_delta,
    spent_tokens = wallets.spent_tokens + c.spent_delta,
    held_tokens = wallets.held_tokens + c.held_delta,
    status = c.new_status,
    suspended_reason = c.new_reason,
    next_grant_event_at = c.next_event_at,
    updated_at = {NOW}
  FROM {_rows_of(2, CHANGE_COLUMNS)} AS c WHERE wallets.id = c.wallet_id
  RETURNING wallets.id
), new_grants AS (
  INSERT INTO grants (wallet_id, transaction_id, source, category, priority, expires_at,
                      amount_tokens, remaining_tokens, created_at)
  SELECT g.wallet_id, g.transaction_id, g.source, g.category, g.priority, g.expires_at,
         g.amount_tokens, g.amount_tokens, {NOW}
  FROM {_rows_of(3, GRANT_COLUMNS)} AS g
  RETURNING grants.id
), grant_changes AS (
  UPDATE grants SET remaining_tokens = grants.remaining_tokens + d.delta
  FROM {_rows_of(4, GRANT_DELTA_COLUMNS)} AS d WHERE grants.id = d.grant_id
  RETURNING grants.id
), movements AS (
  INSERT INTO grant_movements (transaction_id, grant_id, kind, amount_tokens, created_at)
  SELECT m.transaction_id, m.grant_id, m.kind, m.amount_tokens, {NOW}
  FROM {_rows_of(5, MOVEMENT_COLUMNS)} AS m
  RETURNING grant_movements.id
), new_holds AS (
  INSERT INTO holds (id, wallet_id, amount_tokens, status, operation_type, description,
                     metadata, idempotency_scope, idempotency_key, request_hash,
                     expires_at, created_at)
  SELECT h.id, h.wallet_id, h.amount_tokens, 'pending', h.operation_type, h.description,
         h.metadata, h.idempotency_scope, h.idempotency_key, h.request_hash,
         h.expires_at, {NOW}
  FROM {_rows_of(6, HOLD_COLUMNS)} AS h
  RETURNING holds.id
), captured_holds AS (
  -- Locked as pending by the kernel's read (batch_holds.lock_holds).
  UPDATE holds SET status = 'captured', captured_tokens = d.captured_tokens,
                   resolved_at = {NOW}
  FROM {_rows_of(7, CAPTURE_COLUMNS)} AS d
  WHERE holds.id = d.hold_id AND holds.status = 'pending'
  RETURNING holds.id
), entries AS (
  INSERT INTO ledger_entries (transaction_id, wallet_id, system_account, amount_tokens,
                              balance_before, balance_after, created_at)
  SELECT e.transaction_id, e.wallet_id, e.system_account, e.amount_tokens,
         e.balance_before, e.balance_after, {NOW}
  FROM {_rows_of(8, LEG_COLUMNS)} AS e
  ORDER BY e.position  -- ids in batch order: a wallet's balance chain follows them
  RETURNING id, transaction_id, wallet_id
), keys AS (
  INSERT INTO idempotency_keys (scope, key, request_hash, operation, created_at)
  SELECT k.scope, k.key, k.request_hash, k.operation, {NOW}
  FROM {_rows_of(9, KEY_COLUMNS)} AS k
  RETURNING 1
), written AS (
  SELECT 1 FROM updated UNION ALL SELECT 1 FROM new_grants
  UNION ALL SELECT 1 FROM grant_changes UNION ALL SELECT 1 FROM movements
  UNION ALL SELECT 1 FROM new_holds UNION ALL SELECT 1 FROM captured_holds
  UNION ALL SELECT 1 FROM entries UNION ALL SELECT 1 FROM keys
), headers AS (
  INSERT INTO ledger_transactions (id, wallet_id, kind, operation_type, description,
                                   metadata, pricing, idempotency_scope, idempotency_key,
                                   request_hash, hold_id, created_at)
  SELECT h.id, h.wallet_id, h.kind, h.operation_type, h.description, h.metadata,
         h.pricing, h.idempotency_scope, h.idempotency_key, h.request_hash, h.hold_id,
         {NOW}
  FROM {_rows_of(10, HEADER_COLUMN_TYPES)} AS h
  WHERE (SELECT count(*) FROM written) >= 0  -- after every other part has run
  RETURNING 1
)
SELECT id, transaction_id, wallet_id FROM entries
WHERE (SELECT count(*) FROM headers) >= 0  -- the headers run, whether or not read
"""  # noqa: S608 - made of this module's constants


def _timestamp(value: object) -> str:
    """How the encoder writes what JSON has no type for: a timestamp, in ISO 8601."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime refused: timestamps must be timezone-aware")
        return value.isoformat()
    raise TypeError(f"not a column value of the batch: {type(value).__name__}")


_ENCODER = json.JSONEncoder(
    ensure_ascii=False,
    allow_nan=False,
    check_circular=False,
    separators=(",", ":"),
    default=_timestamp,
)


def _json_text(value: Any) -> str | None:
    # As SQLAlchemy's JSON type writes a value (json.dumps' defaults).
    return None if value is None else json.dumps(value)


def _picker(columns: Columns) -> Callable[[dict[str, Any]], Any]:
    """A row's values in column order (rows that have every column)."""
    return itemgetter(*(name for name, _ in columns))


def _table(rows: list[dict[str, Any]], pick: Callable[[dict[str, Any]], Any]) -> str:
    return _ENCODER.encode([pick(row) for row in rows])


def _with_json_text(rows: list[dict[str, Any]], columns: Columns) -> str:
    """Rows that may lack optional columns, their JSON columns as text."""
    return _ENCODER.encode(
        [
            [
                _json_text(row.get(name)) if name in JSON_COLUMNS else row.get(name)
                for name, _ in columns
            ]
            for row in rows
        ]
    )


_CHANGE = _picker(CHANGE_COLUMNS)
_GRANT = _picker(GRANT_COLUMNS)
_GRANT_DELTA = _picker(GRANT_DELTA_COLUMNS)
_MOVEMENT = _picker(MOVEMENT_COLUMNS)
_CAPTURE = _picker(CAPTURE_COLUMNS)
_LEG = _picker(LEG_COLUMNS)
_KEY = _picker(KEY_COLUMNS)


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
    ids by transaction id. Inside the transaction that locked the batch's wallets."""
    unexpected = {column for header in headers for column in header} - HEADER_COLUMNS
    if unexpected:
        raise ValueError(f"header columns the batch statement does not write: {unexpected}")
    rows = await driver_fetch(
        conn,
        BATCH,
        [
            now,
            _table(changes, _CHANGE),
            _table(grants, _GRANT),
            _table(grant_deltas, _GRANT_DELTA),
            _table(movements, _MOVEMENT),
            _with_json_text(placed_holds, HOLD_COLUMNS),
            _table(captured_holds, _CAPTURE),
            _table(legs, _LEG),
            _table(key_rows, _KEY),
            _with_json_text(headers, HEADER_COLUMN_TYPES),
        ],
    )
    return {row["transaction_id"]: int(row["id"]) for row in rows if row["wallet_id"] is not None}
