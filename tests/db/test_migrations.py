"""The migrations build exactly the models' schema, and run down and up again cleanly.

Autogenerate's comparison covers tables, columns and their types and nullability,
server defaults (asked for here), indexes, unique constraints and foreign keys. It
does not look at CHECK constraints or triggers, so the CHECKs are compared here
separately, and the down-and-up tests compare a full fingerprint of the schema read
from the catalog (SQLite's stored DDL; PostgreSQL's columns, constraints, indexes,
triggers and functions as the server prints them). The triggers' behaviour is
tested in test_constraints.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, cast

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import CheckConstraint, ForeignKeyConstraint, Table, inspect, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from tokenbank import ManualClock, TokenService
from tokenbank.config import Settings
from tokenbank.db.engine import create_engine
from tokenbank.db.migrate import (
    alembic_config,
    current_revision,
    downgrade,
    head_revision,
    upgrade,
)
from tokenbank.db.models import Base

# On PostgreSQL, migration 0002 makes wallets.plan a real foreign key to plans.name;
# SQLite cannot add a foreign key to an existing table, so there (and in the models,
# which describe both engines) the rule is kept by triggers instead. Autogenerate
# therefore sees one constraint on PostgreSQL that the models lack. It is the only
# difference allowed, and it must be there (if the models gain the key, SQLite's
# schema will differ instead, and this allowance must go).
ENGINE_ONLY_DIFFERENCES: dict[str, set[tuple[str, str, str]]] = {
    "sqlite": set(),
    "postgresql": {("remove_fk", "wallets", "fk_wallets_plan_plans")},
}
ENGINE_ONLY_FOREIGN_KEYS = {"postgresql": {("wallets", "fk_wallets_plan_plans")}}


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, Settings())
    try:
        yield engine
    finally:
        await engine.dispose()


async def on_connection(engine: AsyncEngine, function: Any) -> Any:
    async with engine.connect() as conn:
        return await conn.run_sync(function)


# --- comparing the migrated schema with the models -------------------------------------------


def _autogenerate_diff(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(
        conn, opts={"compare_type": True, "compare_server_default": True}
    )
    return list(compare_metadata(context, Base.metadata))


def _describe(difference: Any) -> tuple[str, str, str]:
    """(operation, table, object name) of one autogenerate difference.

    Column modifications come as a list of ("modify_...", schema, table, column, ...);
    column additions and removals as ("add_column", schema, table, column); the rest
    as (operation, object), the object a Table or one with a ``.table``.
    """
    if isinstance(difference, list):
        operation, _schema, table, column, *_ = difference[0]
        return (str(operation), str(table), str(column))
    operation, *rest = difference
    thing = rest[-1]
    if operation.endswith("_column"):
        return (operation, str(rest[-2]), str(thing.name))
    owner = getattr(thing, "table", thing)
    return (operation, str(owner.name), str(thing.name))


async def test_migrated_schema_matches_the_models(engine: AsyncEngine, engine_name: str) -> None:
    differences = await on_connection(engine, _autogenerate_diff)
    described = {_describe(difference) for difference in differences}
    assert len(described) == len(differences), differences
    assert described == ENGINE_ONLY_DIFFERENCES[engine_name], differences


def _model_checks(table: Table) -> dict[str, str]:
    return {
        str(constraint.name): str(constraint.sqltext)
        for constraint in table.constraints
        if isinstance(constraint, CheckConstraint)
    }


def _check_constraints(conn: Connection) -> dict[str, dict[str, str]]:
    inspector = inspect(conn)
    return {
        table.name: {
            str(check["name"]): check["sqltext"]
            for check in inspector.get_check_constraints(table.name)
        }
        for table in Base.metadata.sorted_tables
    }


async def test_migrated_check_constraints_match_the_models(
    engine: AsyncEngine, engine_name: str
) -> None:
    """Every CHECK of the models is in the database under its name, and no other.

    SQLite keeps the DDL as written, so the text must match too; PostgreSQL stores a
    normalised form (``status::text = ANY (ARRAY[...])``), so there only names count
    (the constraint tests prove what they refuse).
    """
    reflected = await on_connection(engine, _check_constraints)
    for table in Base.metadata.sorted_tables:
        expected = _model_checks(table)
        if engine_name == "sqlite":
            assert reflected[table.name] == expected, table.name
        else:
            assert set(reflected[table.name]) == set(expected), table.name


def _foreign_key_options(conn: Connection) -> set[tuple[str, str, str | None, str | None, Any]]:
    inspector = inspect(conn)
    return {
        (
            table.name,
            str(fk["name"]),
            fk["options"].get("ondelete"),
            fk["options"].get("initially"),
            bool(fk["options"].get("deferrable", False)),
        )
        for table in Base.metadata.sorted_tables
        for fk in inspector.get_foreign_keys(table.name)
    }


async def test_migrated_foreign_keys_defer_and_cascade_like_the_models(
    engine: AsyncEngine, engine_name: str
) -> None:
    """The ledger's entries-before-header order depends on DEFERRABLE INITIALLY
    DEFERRED. Whether autogenerate compares it depends on Alembic's version and on
    what the dialect reflects, so it is pinned here directly from the catalog."""
    expected = {
        (
            table.name,
            str(fk.name),
            fk.ondelete,
            fk.initially,
            bool(fk.deferrable),
        )
        for table in Base.metadata.sorted_tables
        for fk in table.constraints
        if isinstance(fk, ForeignKeyConstraint)
    }
    reflected = await on_connection(engine, _foreign_key_options)
    extra = {
        (table, name, None, None, False)
        for table, name in ENGINE_ONLY_FOREIGN_KEYS.get(engine_name, set())
    }
    assert reflected == expected | extra
    deferred = ("fk_ledger_entries_transaction_id_ledger_transactions", "DEFERRED", True)
    assert any(row[1:2] + row[3:] == deferred for row in reflected)


def test_migrations_form_one_linear_history() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    assert len(script.get_heads()) == 1
    assert len(script.get_bases()) == 1
    revisions = list(script.walk_revisions())
    assert all(not revision.is_merge_point for revision in revisions)


# --- fingerprints of the schema and of the data ----------------------------------------------

PG_FINGERPRINT = """
SELECT 'column' AS kind, table_name || '.' || column_name AS name,
       concat_ws(' ', data_type, character_maximum_length, is_nullable, column_default) AS spec
  FROM information_schema.columns WHERE table_schema = 'public'
UNION ALL
SELECT 'constraint', conrelid::regclass::text || '.' || conname, pg_get_constraintdef(oid)
  FROM pg_constraint WHERE connamespace = 'public'::regnamespace
UNION ALL
SELECT 'index', indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'
UNION ALL
SELECT 'trigger', tgrelid::regclass::text || '.' || tgname, pg_get_triggerdef(oid)
  FROM pg_trigger WHERE NOT tgisinternal
UNION ALL
SELECT 'function', proname, prosrc FROM pg_proc WHERE pronamespace = 'public'::regnamespace
UNION ALL
SELECT 'sequence', sequencename, data_type::text FROM pg_sequences WHERE schemaname = 'public'
ORDER BY 1, 2, 3
"""

SQLITE_FINGERPRINT = """
SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY 1, 2
"""


def _fingerprint(conn: Connection) -> list[tuple[Any, ...]]:
    """The whole schema as the catalog describes it (no data, no oids)."""
    query = SQLITE_FINGERPRINT if conn.dialect.name == "sqlite" else PG_FINGERPRINT
    return [tuple(row) for row in conn.execute(text(query))]


async def fingerprint(engine: AsyncEngine) -> list[tuple[Any, ...]]:
    return cast(list[tuple[Any, ...]], await on_connection(engine, _fingerprint))


async def data(engine: AsyncEngine, *, timestamps: bool = True) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table in key order; without timestamps, rows as a migration
    seeds them whenever it runs."""
    tables: dict[str, list[tuple[Any, ...]]] = {}
    async with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            statement = select(table).order_by(*table.primary_key.columns)
            tables[table.name] = [
                tuple(value for value in row if timestamps or not isinstance(value, datetime))
                for row in await conn.execute(statement)
            ]
    return tables


async def use_the_ledger(database_url: str) -> None:
    """Some of everything the ledger writes, so the downgrade meets a used database."""
    async with TokenService(
        database_url, clock=ManualClock(), welcome_bonus_tokens=100, auto_migrate=False
    ) as service:
        await service.open_wallet("alice")
        debit = await service.debit("alice", amount=30)
        assert debit.success and debit.transaction_id is not None
        assert (await service.refund("alice", 10, refund_of=debit.transaction_id)).success
        hold = await service.hold("alice", 20, ttl_seconds=60)
        assert hold.hold_id is not None
        assert (await service.capture(hold.hold_id, 5)).success
        assert (await service.hold("alice", 5, ttl_seconds=60)).success


def _user_objects(conn: Connection) -> list[tuple[Any, ...]]:
    """What remains besides Alembic's own version table."""
    return [row for row in _fingerprint(conn) if "alembic_version" not in str(row[1])]


# --- down and up ---------------------------------------------------------------------------------


async def test_downgrade_to_base_then_upgrade_to_head(
    engine: AsyncEngine, database_url: str
) -> None:
    at_head = await fingerprint(engine)
    seeded = await data(engine, timestamps=False)
    await use_the_ledger(database_url)

    await downgrade(engine, "base")
    assert await current_revision(engine) is None
    assert await on_connection(engine, _user_objects) == []

    await upgrade(engine)
    assert await current_revision(engine) == head_revision()
    assert await fingerprint(engine) == at_head
    assert await data(engine, timestamps=False) == seeded


async def test_each_revision_downgrades_to_exactly_its_predecessor(engine: AsyncEngine) -> None:
    """Going up one revision at a time and down again passes through the same schemas."""
    script = ScriptDirectory.from_config(alembic_config())
    revisions = [revision.revision for revision in reversed(list(script.walk_revisions()))]
    await downgrade(engine, "base")
    going_up: dict[str | None, list[tuple[Any, ...]]] = {None: await fingerprint(engine)}
    for revision in revisions:
        await upgrade(engine, revision)
        assert await current_revision(engine) == revision
        going_up[revision] = await fingerprint(engine)
    for revision, previous in reversed(list(zip(revisions, [None, *revisions[:-1]], strict=True))):
        assert await fingerprint(engine) == going_up[revision]
        await downgrade(engine, previous or "base")
        assert await current_revision(engine) == previous
    assert await fingerprint(engine) == going_up[None]


async def test_upgrade_twice_is_a_no_op(engine: AsyncEngine, database_url: str) -> None:
    await use_the_ledger(database_url)
    schema, rows = await fingerprint(engine), await data(engine)
    await upgrade(engine)
    assert await current_revision(engine) == head_revision()
    assert await fingerprint(engine) == schema
    assert await data(engine) == rows
    async with engine.connect() as conn:
        versions = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
    assert [row.version_num for row in versions] == [head_revision()]
