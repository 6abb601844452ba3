"""Bad input to the embedded TokenService: an ``InvalidInput`` naming the field, no writes.

Every case below is a call that is wrong in exactly one argument. It must raise
:class:`tokenbank.InvalidInput` whose ``.field`` names that argument, and the books
must be exactly as they were: every row of the ledger tables, every user's entries
and balance, and a clean audit.

Business refusals (unknown, suspended or closed wallet, too few tokens, ...) are the
opposite: the call was well-formed, so they come back as results with an
``error_code``, never as exceptions, and they write nothing either.

Validation happens before any database work, so the bad-input table shares one
seeded database per engine (a fresh PostgreSQL database per case would cost a
quarter of a second each); every case compares its own before and after snapshots.
Cases that are known bugs (``BUG:``, they may write) get a second seeded database.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import text

from tests.conftest import ENGINES, _create_pg_database
from tokenbank import ErrorCode, InvalidInput, ManualClock, TokenService
from tokenbank.config import (
    MAX_AMOUNT_TOKENS,
    MAX_DESCRIPTION_LENGTH,
    MAX_HOLD_TTL_SECONDS,
    MAX_IDEMPOTENCY_KEY_LENGTH,
    MAX_METADATA_BYTES,
    MAX_OPERATION_TYPE_LENGTH,
    MAX_PAGE_SIZE,
    MAX_USER_ID_LENGTH,
)
from tokenbank.db.engine import read_transaction
from tokenbank.testing.postgres import PostgresServer

START = datetime(2026, 1, 1, tzinfo=UTC)
ALICE_TOKENS = 1_000
ALICE_HELD = 100
ALICE_SPENT = 30
NAMED_DEBIT = 10
USERS = ("alice", "bob", "carol", "dave")
# Every table the ledger writes, with the column that orders its rows.
LEDGER_TABLES = {
    "wallets": "id",
    "ledger_transactions": "id",
    "ledger_entries": "id",
    "holds": "id",
    "operation_costs": "operation_type",
}
_database_numbers = itertools.count()


@dataclass(frozen=True)
class Ctx:
    """Ids in the seeded ledger that valid-looking calls can refer to."""

    hold_id: str
    debit_id: str


@dataclass(frozen=True)
class Seeded:
    url: str
    ctx: Ctx


Call = Callable[[TokenService, Ctx], Awaitable[object]]


def _service(url: str) -> TokenService:
    return TokenService(url, clock=ManualClock(START), welcome_bonus_tokens=0, auto_migrate=False)


async def _seed(url: str) -> Ctx:
    """alice: active, 1000 tokens, 100 held, 30 spent (10 by the debit the context
    names); bob: suspended with 100; carol: closed with 100; dave: active with 5 (less
    than image_generation costs)."""
    async with _service(url) as service:
        for user in USERS:
            await service.open_wallet(user)
        await service.credit("alice", amount=ALICE_TOKENS + ALICE_SPENT)
        debit = await service.debit("alice", amount=NAMED_DEBIT)
        await service.debit("alice", amount=ALICE_SPENT - NAMED_DEBIT)
        hold = await service.hold("alice", ALICE_HELD, ttl_seconds=3600)
        for user in ("bob", "carol"):
            await service.credit(user, amount=100)
        await service.credit("dave", amount=5)
        await service.set_wallet_status("bob", "suspended")
        await service.set_wallet_status("carol", "closed")
        assert debit.transaction_id is not None and hold.hold_id is not None
        assert (await service.audit()).ok
        return Ctx(hold_id=hold.hold_id, debit_id=debit.transaction_id)


@pytest.fixture(scope="module", params=ENGINES)
def module_engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _seeded_database(
    engine: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Seeded:
    if engine == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path_factory.mktemp("validation") / "ledger.db"
        shutil.copyfile(template, path)
        url = f"sqlite+aiosqlite:///{path}"
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        name = f"validation_{next(_database_numbers)}"
        asyncio.run(_create_pg_database(server, name))
        url = server.async_url(name)
    return Seeded(url=url, ctx=asyncio.run(_seed(url)))


@pytest.fixture(scope="module")
def seeded(
    module_engine: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Seeded:
    """One seeded database per engine, shared by the cases that must not write."""
    return _seeded_database(module_engine, request, tmp_path_factory)


@pytest.fixture(scope="module")
def scratch_seeded(
    module_engine: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Seeded:
    """Another one, for the known bugs: those cases may write, and must not change
    what the other cases see."""
    return _seeded_database(module_engine, request, tmp_path_factory)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared(seeded: Seeded) -> AsyncIterator[TokenService]:
    """One service (and connection pool) per engine: opening one per case is most of
    a case's cost on PostgreSQL. Tests using it run on the module's event loop."""
    async with _service(seeded.url) as service:
        yield service


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def scratch(scratch_seeded: Seeded) -> AsyncIterator[TokenService]:
    async with _service(scratch_seeded.url) as service:
        yield service


on_shared_loop = pytest.mark.asyncio(loop_scope="module")


async def snapshot(service: TokenService) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table the ledger writes, in one read transaction.

    That is every entry and every cached balance, held and spent amount, and more
    than the public views show (they are built from these rows).
    """
    async with read_transaction(await service.engine()) as conn:
        return {
            table: [
                tuple(row)
                for row in await conn.execute(text(f"SELECT * FROM {table} ORDER BY {order}"))
            ]
            for table, order in LEDGER_TABLES.items()
        }


async def assert_refused_without_writes(
    service: TokenService, ctx: Ctx, call: Call, field: str
) -> None:
    before = await snapshot(service)
    with pytest.raises(InvalidInput) as raised:
        await call(service, ctx)
    assert raised.value.field == field, str(raised.value)
    assert await snapshot(service) == before
    assert (await service.audit()).ok


# --- the table of bad inputs ---------------------------------------------------------

BAD_AMOUNTS: dict[str, object] = {
    "zero": 0,
    "negative": -5,
    "float": 1.5,
    "bool": True,
    "str": "5",
    "too_large": MAX_AMOUNT_TOKENS + 1,
    "none": None,
}

# method -> (call with the amount, the field InvalidInput must name)
AMOUNT_CALLS: dict[str, tuple[Callable[[TokenService, Ctx, Any], Awaitable[object]], str]] = {
    "credit": (lambda s, c, a: s.credit("alice", amount=a), "amount"),
    "debit": (lambda s, c, a: s.debit("alice", amount=a), "amount"),
    "refund": (lambda s, c, a: s.refund("alice", a), "amount"),
    "hold": (lambda s, c, a: s.hold("alice", a, ttl_seconds=60), "amount"),
    "capture": (lambda s, c, a: s.capture(c.hold_id, a), "amount"),
    "set_operation_cost": (lambda s, c, a: s.set_operation_cost("new_op", a), "tokens"),
}

BAD_USER_IDS: dict[str, object] = {
    "empty": "",
    "whitespace": "  \t ",
    "too_long": "u" * (MAX_USER_ID_LENGTH + 1),
    "nul": "ali\x00ce",
    "none": None,
    "int": 42,
}

USER_CALLS: dict[str, Callable[[TokenService, Any], Awaitable[object]]] = {
    "credit": lambda s, u: s.credit(u, amount=1),
    "debit": lambda s, u: s.debit(u, amount=1),
    "refund": lambda s, u: s.refund(u, 1),
    "hold": lambda s, u: s.hold(u, 1, ttl_seconds=60),
    "charge_for_operation": lambda s, u: s.charge_for_operation(u, "image_generation"),
    "can_afford": lambda s, u: s.can_afford(u, "image_generation"),
    "open_wallet": lambda s, u: s.open_wallet(u),
    "get_user_entries": lambda s, u: s.get_ledger().get_user_entries(u),
    "get_user_statistics": lambda s, u: s.get_ledger().get_user_statistics(u),
    "get_balance": lambda s, u: s.get_balance(u),
    "set_wallet_status": lambda s, u: s.set_wallet_status(u, "suspended"),
}

# Calls that accept metadata, a description and an idempotency key, given as kwargs.
KWARG_CALLS: dict[str, Callable[[TokenService, Ctx, dict[str, Any]], Awaitable[object]]] = {
    "credit": lambda s, c, kw: s.credit("alice", amount=1, **kw),
    "debit": lambda s, c, kw: s.debit("alice", amount=1, **kw),
    "refund": lambda s, c, kw: s.refund("alice", 1, **kw),
    "hold": lambda s, c, kw: s.hold("alice", 1, ttl_seconds=60, **kw),
    "capture": lambda s, c, kw: s.capture(c.hold_id, 1, **kw),
    "charge_for_operation": lambda s, c, kw: s.charge_for_operation(
        "alice", "image_generation", **kw
    ),
}


def _circular() -> dict[str, Any]:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    return loop


BAD_METADATA: dict[str, object] = {
    "list": [1, 2],
    "str": "x",
    "object_value": {"a": object()},
    "datetime_value": {"at": START},
    "set_value": {"a": {1, 2}},
    "nan": {"a": math.nan},
    "tuple_key": {(1, 2): "x"},
    "circular": _circular(),
    "over_8_kib": {"a": "x" * MAX_METADATA_BYTES},
}

BAD_DESCRIPTIONS: dict[str, object] = {
    "too_long": "d" * (MAX_DESCRIPTION_LENGTH + 1),
    "int": 5,
    "nul": "bad\x00description",
}

BAD_IDEMPOTENCY_KEYS: dict[str, object] = {
    "too_long": "k" * (MAX_IDEMPOTENCY_KEY_LENGTH + 1),
    "empty": "",
    "whitespace": "   ",
    "int": 5,
    "nul": "key\x00",
}

BAD_HOLD_IDS: dict[str, object] = {
    "empty": "",
    "no_hex": "hold_",
    "short": "hold_" + "0" * 31,
    "long": "hold_" + "0" * 33,
    "upper_prefix": "HOLD_" + "0" * 32,
    "upper_hex": "hold_" + "A" * 32,
    "not_hex": "hold_" + "g" * 32,
    "uuid": "hold_00000000-0000-0000-0000-000000000000",
    "none": None,
    "int": 5,
}

HOLD_ID_CALLS: dict[str, Callable[[TokenService, Any], Awaitable[object]]] = {
    "capture": lambda s, h: s.capture(h, 1),
    "void": lambda s, h: s.void(h),
    "get_hold": lambda s, h: s.get_hold(h),
}

NAIVE = datetime(2026, 1, 1)  # deliberately naive

# (id, call, field): the one-off cases.
SPECIFIC_CASES: list[tuple[str, Call, str]] = [
    # operation types: unknown, reserved, the wrong kind, malformed
    (
        "debit-type-unknown",
        lambda s, c: s.debit("alice", amount=1, operation_type="teleport"),
        "operation_type",
    ),
    (
        "debit-type-refund",
        lambda s, c: s.debit("alice", amount=1, operation_type="refund"),
        "operation_type",
    ),
    (
        "debit-type-purchase",
        lambda s, c: s.debit("alice", amount=1, operation_type="purchase"),
        "operation_type",
    ),
    (
        "debit-type-admin_grant",
        lambda s, c: s.debit("alice", amount=1, operation_type="admin_grant"),
        "operation_type",
    ),
    (
        "debit-type-empty",
        lambda s, c: s.debit("alice", amount=1, operation_type=""),
        "operation_type",
    ),
    (
        "debit-type-upper",
        lambda s, c: s.debit("alice", amount=1, operation_type="Usage"),
        "operation_type",
    ),
    (
        "debit-type-none",
        lambda s, c: s.debit("alice", amount=1, operation_type=None),  # type: ignore[arg-type]
        "operation_type",
    ),
    (
        "debit-type-too-long",
        lambda s, c: s.debit(
            "alice", amount=1, operation_type="x" * (MAX_OPERATION_TYPE_LENGTH + 1)
        ),
        "operation_type",
    ),
    (
        "credit-type-usage",
        lambda s, c: s.credit("alice", amount=1, operation_type="usage"),
        "operation_type",
    ),
    (
        "credit-type-refund",
        lambda s, c: s.credit("alice", amount=1, operation_type="refund"),
        "operation_type",
    ),
    (
        "credit-type-priced",
        lambda s, c: s.credit("alice", amount=1, operation_type="image_generation"),
        "operation_type",
    ),
    (
        "credit-type-unknown",
        lambda s, c: s.credit("alice", amount=1, operation_type="gift"),
        "operation_type",
    ),
    (
        "hold-type-unknown",
        lambda s, c: s.hold("alice", 1, ttl_seconds=60, operation_type="x"),
        "operation_type",
    ),
    (
        "hold-type-refund",
        lambda s, c: s.hold("alice", 1, ttl_seconds=60, operation_type="refund"),
        "operation_type",
    ),
    (
        "hold-type-purchase",
        lambda s, c: s.hold("alice", 1, ttl_seconds=60, operation_type="purchase"),
        "operation_type",
    ),
    (
        "charge-type-unknown",
        lambda s, c: s.charge_for_operation("alice", "teleport"),
        "operation_type",
    ),
    (
        "charge-type-refund",
        lambda s, c: s.charge_for_operation("alice", "refund"),
        "operation_type",
    ),
    ("charge-type-usage", lambda s, c: s.charge_for_operation("alice", "usage"), "operation_type"),
    (
        "charge-type-malformed",
        lambda s, c: s.charge_for_operation("alice", "Bad Type"),
        "operation_type",
    ),
    ("can_afford-type-unknown", lambda s, c: s.can_afford("alice", "teleport"), "operation_type"),
    ("can_afford-type-empty", lambda s, c: s.can_afford("alice", ""), "operation_type"),
    (
        "can_afford-type-too-long",
        lambda s, c: s.can_afford("alice", "x" * (MAX_OPERATION_TYPE_LENGTH + 1)),
        "operation_type",
    ),
    (
        "entries-type-malformed",
        lambda s, c: s.get_ledger().get_user_entries("alice", operation_type="Bad Type"),
        "operation_type",
    ),
    (
        "entries-type-int",
        lambda s, c: s.get_ledger().get_user_entries("alice", operation_type=5),  # type: ignore[arg-type]
        "operation_type",
    ),
    ("set_cost-type-usage", lambda s, c: s.set_operation_cost("usage", 5), "operation_type"),
    ("set_cost-type-refund", lambda s, c: s.set_operation_cost("refund", 5), "operation_type"),
    ("set_cost-type-purchase", lambda s, c: s.set_operation_cost("purchase", 5), "operation_type"),
    ("set_cost-type-malformed", lambda s, c: s.set_operation_cost("Bad Type", 5), "operation_type"),
    ("set_cost-type-empty", lambda s, c: s.set_operation_cost("", 5), "operation_type"),
    (
        "set_cost-type-too-long",
        lambda s, c: s.set_operation_cost("x" * (MAX_OPERATION_TYPE_LENGTH + 1), 5),
        "operation_type",
    ),
    (
        "set_cost-description-too-long",
        lambda s, c: s.set_operation_cost("new_op", 5, description="d" * 501),
        "description",
    ),
    # hold lifetimes
    ("hold-ttl-zero", lambda s, c: s.hold("alice", 1, ttl_seconds=0), "ttl_seconds"),
    ("hold-ttl-negative", lambda s, c: s.hold("alice", 1, ttl_seconds=-1), "ttl_seconds"),
    (
        "hold-ttl-too-large",
        lambda s, c: s.hold("alice", 1, ttl_seconds=MAX_HOLD_TTL_SECONDS + 1),
        "ttl_seconds",
    ),
    ("hold-ttl-float", lambda s, c: s.hold("alice", 1, ttl_seconds=1.5), "ttl_seconds"),  # type: ignore[arg-type]
    ("hold-ttl-bool", lambda s, c: s.hold("alice", 1, ttl_seconds=True), "ttl_seconds"),
    ("hold-ttl-str", lambda s, c: s.hold("alice", 1, ttl_seconds="60"), "ttl_seconds"),  # type: ignore[arg-type]
    # pages and periods of the history
    ("entries-limit-zero", lambda s, c: s.get_ledger().get_user_entries("alice", limit=0), "limit"),
    (
        "entries-limit-too-large",
        lambda s, c: s.get_ledger().get_user_entries("alice", limit=MAX_PAGE_SIZE + 1),
        "limit",
    ),
    (
        "entries-limit-negative",
        lambda s, c: s.get_ledger().get_user_entries("alice", limit=-1),
        "limit",
    ),
    (
        "entries-limit-float",
        lambda s, c: s.get_ledger().get_user_entries("alice", limit=1.5),  # type: ignore[arg-type]
        "limit",
    ),
    (
        "entries-limit-bool",
        lambda s, c: s.get_ledger().get_user_entries("alice", limit=True),
        "limit",
    ),
    (
        "entries-offset-negative",
        lambda s, c: s.get_ledger().get_user_entries("alice", offset=-1),
        "offset",
    ),
    (
        "entries-offset-float",
        lambda s, c: s.get_ledger().get_user_entries("alice", offset=0.5),  # type: ignore[arg-type]
        "offset",
    ),
    (
        "entries-offset-str",
        lambda s, c: s.get_ledger().get_user_entries("alice", offset="0"),  # type: ignore[arg-type]
        "offset",
    ),
    (
        "entries-start-naive",
        lambda s, c: s.get_ledger().get_user_entries("alice", start_date=NAIVE),
        "start_date",
    ),
    (
        "entries-end-naive",
        lambda s, c: s.get_ledger().get_user_entries("alice", end_date=NAIVE),
        "end_date",
    ),
    (
        "entries-start-after-end",
        lambda s, c: s.get_ledger().get_user_entries(
            "alice", start_date=START, end_date=START - timedelta(seconds=1)
        ),
        "start_date",
    ),
    (
        "statistics-start-naive",
        lambda s, c: s.get_ledger().get_user_statistics("alice", start_date=NAIVE),
        "start_date",
    ),
    (
        "statistics-end-naive",
        lambda s, c: s.get_ledger().get_user_statistics("alice", end_date=NAIVE),
        "end_date",
    ),
    # the rest
    (
        "refund-refund_of-malformed",
        lambda s, c: s.refund("alice", 1, refund_of="not-a-txn"),
        "refund_of",
    ),
    ("refund-refund_of-empty", lambda s, c: s.refund("alice", 1, refund_of=""), "refund_of"),
    ("set_wallet_status-unknown", lambda s, c: s.set_wallet_status("alice", "frozen"), "status"),
    ("set_wallet_status-none", lambda s, c: s.set_wallet_status("alice", None), "status"),  # type: ignore[arg-type]
]


def _bind_amount(
    call: Callable[[TokenService, Ctx, Any], Awaitable[object]], value: object
) -> Call:
    return lambda s, c: call(s, c, value)


def _bind_user(call: Callable[[TokenService, Any], Awaitable[object]], value: object) -> Call:
    return lambda s, c: call(s, value)


def _bind_kwargs(
    call: Callable[[TokenService, Ctx, dict[str, Any]], Awaitable[object]], kwargs: dict[str, Any]
) -> Call:
    return lambda s, c: call(s, c, kwargs)


def _variants(method: str, values: dict[str, object], core: tuple[str, ...]) -> dict[str, object]:
    """Every method gets the core variants; the first method of each table gets them all.

    The checks are shared code, so one method proves the full list and the others
    prove that they call it, while keeping the table (and the run) short.
    """
    if method in FULL_VARIANT_METHODS:
        return values
    return {name: value for name, value in values.items() if name in core}


FULL_VARIANT_METHODS = frozenset({"credit", "open_wallet", "void"})
CORE_USER_IDS = ("empty", "whitespace", "too_long", "nul")
CORE_METADATA = ("list", "object_value", "over_8_kib")
CORE_DESCRIPTIONS = ("too_long",)
CORE_IDEMPOTENCY_KEYS = ("too_long", "empty")
CORE_HOLD_IDS = ("empty", "short", "upper_hex", "none")


def _case(call: Call, field: str, case_id: str) -> Any:
    return pytest.param(call, field, id=case_id)


def _amount_cases() -> list[Any]:
    cases: list[Any] = []
    for method, (amount_call, field) in AMOUNT_CALLS.items():
        for name, value in BAD_AMOUNTS.items():
            if method == "capture" and name == "zero":
                continue  # capturing nothing is valid: it releases the whole hold
            cases.append(_case(_bind_amount(amount_call, value), field, f"{method}-{field}-{name}"))
    return cases


def _user_id_cases() -> list[Any]:
    return [
        _case(_bind_user(user_call, value), "user_id", f"{method}-user_id-{name}")
        for method, user_call in USER_CALLS.items()
        for name, value in _variants(method, BAD_USER_IDS, CORE_USER_IDS).items()
    ]


def _kwarg_cases() -> list[Any]:
    return [
        _case(_bind_kwargs(kwarg_call, {field: value}), field, f"{method}-{field}-{name}")
        for method, kwarg_call in KWARG_CALLS.items()
        for field, values, core in (
            ("metadata", BAD_METADATA, CORE_METADATA),
            ("description", BAD_DESCRIPTIONS, CORE_DESCRIPTIONS),
            ("idempotency_key", BAD_IDEMPOTENCY_KEYS, CORE_IDEMPOTENCY_KEYS),
        )
        for name, value in _variants(method, values, core).items()
    ]


def _hold_id_cases() -> list[Any]:
    return [
        _case(_bind_user(hold_call, value), "hold_id", f"{method}-hold_id-{name}")
        for method, hold_call in HOLD_ID_CALLS.items()
        for name, value in _variants(method, BAD_HOLD_IDS, CORE_HOLD_IDS).items()
    ]


def _bad_input_cases() -> list[Any]:
    return [
        *_amount_cases(),
        *_user_id_cases(),
        *_kwarg_cases(),
        *_hold_id_cases(),
        *(_case(call, field, case_id) for case_id, call, field in SPECIFIC_CASES),
    ]


BAD_INPUT_CASES = _bad_input_cases()


def test_case_ids_are_unique() -> None:
    ids = [case.id for case in BAD_INPUT_CASES]
    assert len(ids) == len(set(ids))


@on_shared_loop
@pytest.mark.parametrize(("call", "field"), BAD_INPUT_CASES)
async def test_bad_input_raises_invalid_input_and_writes_nothing(
    shared: TokenService, seeded: Seeded, call: Call, field: str
) -> None:
    await assert_refused_without_writes(shared, seeded.ctx, call, field)


@on_shared_loop
async def test_invalid_input_is_a_value_error_with_field_and_message(shared: TokenService) -> None:
    with pytest.raises(ValueError, match=r"^amount: must be at least 1$") as raised:
        await shared.credit("alice", amount=0)
    assert isinstance(raised.value, InvalidInput)
    assert (raised.value.field, raised.value.message) == ("amount", "must be at least 1")


async def test_boundary_values_are_accepted(service: TokenService) -> None:
    """The limits themselves are valid: the table above tests one past each."""
    await service.open_wallet("u" * MAX_USER_ID_LENGTH)
    await service.open_wallet("alice")
    big = await service.credit("alice", amount=MAX_AMOUNT_TOKENS)
    assert big.success and big.new_balance == MAX_AMOUNT_TOKENS
    ok = await service.debit(
        "alice",
        amount=1,
        description="d" * MAX_DESCRIPTION_LENGTH,
        idempotency_key="k" * MAX_IDEMPOTENCY_KEY_LENGTH,
        metadata={"a": "x" * (MAX_METADATA_BYTES - len('{"a": ""}'))},
    )
    assert ok.success
    hold = await service.hold("alice", 1, ttl_seconds=MAX_HOLD_TTL_SECONDS)
    assert hold.success and hold.hold_id is not None
    assert (await service.capture(hold.hold_id, 0)).success
    entries = await service.get_ledger().get_user_entries("alice", limit=MAX_PAGE_SIZE)
    assert len(entries) == 2
    assert (await service.audit()).ok


async def test_snapshot_sees_a_write(service: TokenService) -> None:
    """The no-write assertion is only worth something if a write changes the snapshot."""
    await service.open_wallet("alice")
    before = await snapshot(service)
    await service.credit("alice", amount=1)
    assert await snapshot(service) != before


# --- bugs: bad input that is accepted, written, or raises the wrong exception ---------

DEEP_METADATA: dict[str, Any] = {}
_level = DEEP_METADATA
for _ in range(2_000):  # ~12 KB as JSON, but json.dumps overflows the stack first
    _level["a"] = {}
    _level = _level["a"]

HOLD_ID_WITH_NEWLINE = "hold_" + "0" * 32 + "\n"
TRANSACTION_ID_WITH_NEWLINE = "0" * 36 + "\n"

# Each of these was a bug (now fixed) that a first version of this file pinned.
KNOWN_BUGS: list[Any] = [
    pytest.param(
        lambda s, c: s.set_operation_cost("new_op\n", 5),
        "operation_type",
        id="set_cost-type-trailing-newline",
    ),
    pytest.param(
        lambda s, c: s.void(HOLD_ID_WITH_NEWLINE),
        "hold_id",
        id="void-hold_id-trailing-newline",
    ),
    pytest.param(
        lambda s, c: s.refund("alice", 1, refund_of=TRANSACTION_ID_WITH_NEWLINE),
        "refund_of",
        id="refund-refund_of-trailing-newline",
    ),
    pytest.param(
        lambda s, c: s.credit("alice", amount=1, metadata=DEEP_METADATA),
        "metadata",
        id="credit-metadata-deeply-nested",
    ),
    pytest.param(
        lambda s, c: s.open_wallet("al\ud800ice"),
        "user_id",
        id="open_wallet-user_id-lone-surrogate",
    ),
    pytest.param(
        lambda s, c: s.credit("alice", amount=1, description="\udcff"),
        "description",
        id="credit-description-lone-surrogate",
    ),
    pytest.param(
        lambda s, c: s.credit("alice", amount=1, idempotency_key="k", idempotency_scope="s" * 65),
        "idempotency_scope",
        id="credit-idempotency_scope-too-long",
    ),
    pytest.param(
        lambda s, c: s.credit(
            "alice",
            amount=1,
            idempotency_key="k",
            idempotency_scope=None,
        ),
        "idempotency_scope",
        id="credit-idempotency_scope-none",
    ),
    pytest.param(
        lambda s, c: s.debit("alice", amount=1, pricing={"rate": object()}),
        "pricing",
        id="debit-pricing-not-serialisable",
    ),
    pytest.param(
        lambda s, c: s.debit("alice", amount=1, pricing={"rate": math.nan}),
        "pricing",
        id="debit-pricing-nan",
    ),
    pytest.param(
        lambda s, c: s.debit("alice", amount=1, pricing=[1, 2]),
        "pricing",
        id="debit-pricing-not-a-dict",
    ),
    pytest.param(
        lambda s, c: s.get_ledger().get_user_entries(
            "alice",
            start_date="2026-01-01",
        ),
        "start_date",
        id="entries-start-not-a-datetime",
    ),
]


@on_shared_loop
@pytest.mark.parametrize(("call", "field"), KNOWN_BUGS)
async def test_known_bad_input_bugs(
    scratch: TokenService, scratch_seeded: Seeded, call: Call, field: str
) -> None:
    await assert_refused_without_writes(scratch, scratch_seeded.ctx, call, field)


# --- business refusals are results, not exceptions -------------------------------------

REFUSALS: list[Any] = [
    # unknown wallet
    pytest.param(
        lambda s, c: s.credit("nobody", amount=1),
        ErrorCode.WALLET_NOT_FOUND,
        id="credit-unknown-wallet",
    ),
    pytest.param(
        lambda s, c: s.debit("nobody", amount=1),
        ErrorCode.WALLET_NOT_FOUND,
        id="debit-unknown-wallet",
    ),
    pytest.param(
        lambda s, c: s.refund("nobody", 1), ErrorCode.WALLET_NOT_FOUND, id="refund-unknown-wallet"
    ),
    pytest.param(
        lambda s, c: s.hold("nobody", 1, ttl_seconds=60),
        ErrorCode.WALLET_NOT_FOUND,
        id="hold-unknown-wallet",
    ),
    pytest.param(
        lambda s, c: s.charge_for_operation("nobody", "image_generation"),
        ErrorCode.WALLET_NOT_FOUND,
        id="charge-unknown-wallet",
    ),
    # suspended wallet (bob): no spending
    pytest.param(
        lambda s, c: s.debit("bob", amount=1),
        ErrorCode.WALLET_SUSPENDED,
        id="debit-suspended-wallet",
    ),
    pytest.param(
        lambda s, c: s.hold("bob", 1, ttl_seconds=60),
        ErrorCode.WALLET_SUSPENDED,
        id="hold-suspended-wallet",
    ),
    pytest.param(
        lambda s, c: s.charge_for_operation("bob", "image_generation"),
        ErrorCode.WALLET_SUSPENDED,
        id="charge-suspended-wallet",
    ),
    # closed wallet (carol): nothing moves
    pytest.param(
        lambda s, c: s.credit("carol", amount=1), ErrorCode.WALLET_CLOSED, id="credit-closed-wallet"
    ),
    pytest.param(
        lambda s, c: s.debit("carol", amount=1), ErrorCode.WALLET_CLOSED, id="debit-closed-wallet"
    ),
    pytest.param(
        lambda s, c: s.refund("carol", 1), ErrorCode.WALLET_CLOSED, id="refund-closed-wallet"
    ),
    pytest.param(
        lambda s, c: s.hold("carol", 1, ttl_seconds=60),
        ErrorCode.WALLET_CLOSED,
        id="hold-closed-wallet",
    ),
    pytest.param(
        lambda s, c: s.charge_for_operation("carol", "image_generation"),
        ErrorCode.WALLET_CLOSED,
        id="charge-closed-wallet",
    ),
    # too few tokens: alice has 1000 with 100 held; dave has 5
    pytest.param(
        lambda s, c: s.debit("alice", amount=ALICE_TOKENS - ALICE_HELD + 1),
        ErrorCode.INSUFFICIENT_TOKENS,
        id="debit-insufficient",
    ),
    pytest.param(
        lambda s, c: s.hold("alice", ALICE_TOKENS - ALICE_HELD + 1, ttl_seconds=60),
        ErrorCode.INSUFFICIENT_TOKENS,
        id="hold-insufficient",
    ),
    pytest.param(
        lambda s, c: s.charge_for_operation("dave", "image_generation"),
        ErrorCode.INSUFFICIENT_TOKENS,
        id="charge-insufficient",
    ),
    # refunds and holds that name something that is not there
    pytest.param(
        lambda s, c: s.refund("alice", ALICE_SPENT + 1),
        ErrorCode.REFUND_EXCEEDS_SPENT,
        id="refund-exceeds-spent",
    ),
    pytest.param(
        lambda s, c: s.refund("alice", NAMED_DEBIT + 1, refund_of=c.debit_id),
        ErrorCode.REFUND_EXCEEDS_DEBIT,
        id="refund-exceeds-debit",
    ),
    pytest.param(
        lambda s, c: s.refund("bob", 1, refund_of=c.debit_id),
        ErrorCode.DEBIT_NOT_FOUND,
        id="refund-someone-elses-debit",
    ),
    pytest.param(
        lambda s, c: s.refund("alice", 1, refund_of="0" * 36),
        ErrorCode.DEBIT_NOT_FOUND,
        id="refund-unknown-debit",
    ),
    pytest.param(
        lambda s, c: s.capture("hold_" + "0" * 32, 1),
        ErrorCode.HOLD_NOT_FOUND,
        id="capture-unknown-hold",
    ),
    pytest.param(
        lambda s, c: s.void("hold_" + "0" * 32), ErrorCode.HOLD_NOT_FOUND, id="void-unknown-hold"
    ),
]


@on_shared_loop
@pytest.mark.parametrize(("call", "code"), REFUSALS)
async def test_business_refusal_is_a_result_and_writes_nothing(
    shared: TokenService, seeded: Seeded, call: Call, code: ErrorCode
) -> None:
    before = await snapshot(shared)
    result = await call(shared, seeded.ctx)
    assert getattr(result, "success", None) is False
    assert getattr(result, "error_code", None) == code
    assert getattr(result, "error", None)
    assert await snapshot(shared) == before
    assert (await shared.audit()).ok


@on_shared_loop
async def test_insufficient_tokens_explains_the_shortfall(shared: TokenService) -> None:
    wanted = ALICE_TOKENS - ALICE_HELD + 1
    result = await shared.debit("alice", amount=wanted)
    assert (result.available_tokens, result.required_tokens) == (ALICE_TOKENS - ALICE_HELD, wanted)


AFFORDABILITY: list[Any] = [
    pytest.param("alice", True, None, id="active-enough"),
    pytest.param("dave", False, None, id="active-too-few"),
    pytest.param("nobody", False, ErrorCode.WALLET_NOT_FOUND, id="unknown-wallet"),
    pytest.param("bob", False, ErrorCode.WALLET_SUSPENDED, id="suspended-wallet"),
    pytest.param(
        "carol",
        False,
        ErrorCode.WALLET_CLOSED,
        id="closed-wallet",
    ),
]


@on_shared_loop
@pytest.mark.parametrize(("user", "affordable", "code"), AFFORDABILITY)
async def test_can_afford_answers_without_raising_or_writing(
    shared: TokenService, user: str, affordable: bool, code: ErrorCode | None
) -> None:
    before = await snapshot(shared)
    answer = await shared.can_afford(user, "image_generation")
    assert (answer.can_afford, answer.cost, answer.error_code) == (affordable, 10, code)
    assert await snapshot(shared) == before
