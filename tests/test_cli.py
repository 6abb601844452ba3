"""The ``tokenbank`` command, on SQLite and PostgreSQL, through Typer's CliRunner.

A scripted session runs every command against an empty database and checks each
printed balance; the error paths check the promise of the module docstring of
``tokenbank.cli``: one line on stderr starting ``error:``, nothing on stdout, exit 2
for bad input and 1 for everything else, and never a traceback.

This Typer's CliRunner (Typer >= 0.16 vendors Click) keeps the streams apart:
``result.stdout`` and ``result.stderr``, with ``result.output`` the two interleaved.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from queue import SimpleQueue
from typing import Any, cast

import aiosqlite.core
import pytest
from sqlalchemy import text
from typer.testing import CliRunner, Result

from tests.conftest import ENGINES, _create_pg_database
from tokenbank import ManualClock, TokenService
from tokenbank.cli import app
from tokenbank.config import MAX_AMOUNT_TOKENS, MAX_DESCRIPTION_LENGTH, get_settings
from tokenbank.db.engine import create_engine
from tokenbank.db.migrate import head_revision
from tokenbank.testing.postgres import PostgresServer

runner = CliRunner()
_database_numbers = itertools.count()
OK_LINE = re.compile(r"^ok: balance (-?\d+) \(entry (\d+), transaction ([0-9a-f-]{36})\)$")
NOT_MIGRATED = "error: the database is not migrated: run `tokenbank db upgrade` first"


# --- helpers ---------------------------------------------------------------------------


def invoke(url: str | None, *args: str, env: dict[str, str] | None = None) -> Result:
    """Run one command; an exception other than the exit itself is a traceback."""
    argv = [*args, "--database-url", url] if url is not None else list(args)
    result = runner.invoke(app, argv, env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(
            f"tokenbank {' '.join(args)} raised {result.exception!r}"
        ) from result.exception
    assert "Traceback" not in result.output
    return result


def ok(url: str | None, *args: str) -> list[str]:
    """Run a command that must succeed; its stdout lines."""
    result = invoke(url, *args)
    assert result.exit_code == 0, (args, result.output)
    assert result.stderr == "", (args, result.stderr)
    return result.stdout.splitlines()


def fails(url: str | None, *args: str, code: int) -> str:
    """Run a command that must fail cleanly; its one line of error."""
    result = invoke(url, *args)
    assert result.exit_code == code, (args, result.exit_code, result.output)
    assert result.stdout == "", (args, result.stdout)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, (args, result.stderr)
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def balance_line(
    user: str, balance: int, *, held: int = 0, spent: int = 0, status: str = "active"
) -> str:
    return (
        f"{user}: balance {balance}, held {held}, available {balance - held},"
        f" spent {spent}, status {status}"
    )


def costs_table(url: str) -> dict[str, int]:
    table: dict[str, int] = {}
    for line in ok(url, "costs", "list"):
        name, tokens = line.split()
        table[name] = int(tokens)
    return table


def run_sql(url: str, *statements: str) -> None:
    """Change the database behind the ledger's back (to break the books on purpose)."""

    async def execute() -> None:
        engine = create_engine(url, get_settings())
        try:
            async with engine.begin() as conn:
                for statement in statements:
                    await conn.execute(text(statement))
        finally:
            await engine.dispose()

    asyncio.run(execute())


def place_expired_hold(url: str, user: str, amount: int) -> None:
    """A hold placed two hours ago for one minute: expired now, still pending."""

    async def place() -> None:
        two_hours_ago = ManualClock(datetime.now(UTC) - timedelta(hours=2))
        async with TokenService(url, clock=two_hours_ago, auto_migrate=False) as service:
            hold = await service.hold(user, amount, ttl_seconds=60)
            assert hold.success, hold

    asyncio.run(place())


@dataclass(frozen=True)
class EmptyDatabase:
    engine: str
    url: str  # the plain form a person types: sqlite:///... or postgresql://...
    server: PostgresServer | None
    name: str

    def table_count(self) -> int:
        if self.server is None:
            path = self.url.removeprefix("sqlite:///")
            with sqlite3.connect(path) as conn:
                return int(conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0])
        output = self.server.execute_sql(
            self.name, "SELECT COUNT(*) FROM pg_tables WHERE schemaname = 'public';"
        )
        return int(output.strip())


@pytest.fixture
def empty_database(
    engine_name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> EmptyDatabase:
    """A database with no schema at all (the SQLite file does not even exist yet)."""
    if engine_name == "sqlite":
        return EmptyDatabase("sqlite", f"sqlite:///{tmp_path / 'cli.db'}", None, "")
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = f"cli_empty_{next(_database_numbers)}"
    server.create_database(name)
    return EmptyDatabase("postgresql", server.sync_dsn(name), server, name)


# --- a scripted session of every command -----------------------------------------------


def test_scripted_session_of_every_command(empty_database: EmptyDatabase) -> None:
    url = empty_database.url
    head = head_revision()
    bonus = get_settings().welcome_bonus_tokens

    # db: an empty database, then migrated (twice: upgrading is idempotent)
    assert ok(url, "db", "current") == [f"current: None  head: {head}"]
    assert ok(url, "db", "upgrade") == [f"database at revision {head}"]
    assert ok(url, "db", "upgrade") == [f"database at revision {head}"]
    assert ok(url, "db", "current") == [f"current: {head}  head: {head}"]

    # users create: a wallet with the welcome bonus, once
    assert ok(url, "users", "create", "alice") == [f"wallet alice created: balance {bonus}"]
    assert ok(url, "users", "create", "alice") == [f"wallet alice already exists: balance {bonus}"]
    assert ok(url, "balance", "alice") == [balance_line("alice", bonus)]

    # grant with a reason
    [granted] = ok(url, "grant", "alice", "5000", "--reason", "beta")
    match = OK_LINE.match(granted)
    assert match is not None, granted
    assert int(match[1]) == bonus + 5000

    # grant with an idempotency key, twice: the same answer, credited once
    retry = ("grant", "alice", "250", "--reason", "retry", "--idempotency-key", "grant-1")
    [first] = ok(url, *retry)
    [second] = ok(url, *retry)
    assert first == second
    first_match = OK_LINE.match(first)
    assert first_match is not None and int(first_match[1]) == bonus + 5250
    balance = bonus + 5250
    assert ok(url, "balance", "alice") == [balance_line("alice", balance)]

    # history, newest first: as text and as JSON
    expected = [("admin_grant", 250, "retry"), ("admin_grant", 5000, "beta")]
    if bonus:
        expected.append(("bonus", bonus, "Welcome bonus"))
    lines = ok(url, "history", "alice")
    assert len(lines) == len(expected)
    for line, (kind, amount, reason) in zip(lines, expected, strict=True):
        assert re.search(rf"#\d+\s+{kind}\s+\+{amount}\s+->", line), line
        assert line.endswith(reason), line
    assert f"-> {balance}" in lines[0]

    entries = [json.loads(line) for line in ok(url, "history", "alice", "--json")]
    assert [(e["type"], e["amount"], e["description"]) for e in entries] == expected
    assert entries[0]["balance_after"] == balance
    for newer, older in itertools.pairwise(entries):
        assert newer["balance_before"] == older["balance_after"]
        assert newer["id"] > older["id"]
    assert all(datetime.fromisoformat(e["created_at"]).tzinfo is not None for e in entries)
    page = [
        json.loads(line)
        for line in ok(url, "history", "alice", "--json", "--limit", "1", "--offset", "1")
    ]
    assert [e["amount"] for e in page] == [5000]
    grants = [
        json.loads(line) for line in ok(url, "history", "alice", "--json", "--type", "admin_grant")
    ]
    assert [e["amount"] for e in grants] == [250, 5000]
    assert ok(url, "history", "nobody") == ["no entries for nobody"]
    assert ok(url, "history", "nobody", "--json") == []

    # costs: the seeded table, then set, change and delete one
    seeded = costs_table(url)
    assert (seeded["image_generation"], seeded["chatgpt_message"]) == (10, 5)
    assert "video_render" not in seeded
    assert ok(url, "costs", "set", "video_render", "42") == ["video_render costs 42 tokens"]
    assert costs_table(url) == seeded | {"video_render": 42}
    assert ok(url, "costs", "set", "video_render", "50") == ["video_render costs 50 tokens"]
    assert costs_table(url) == seeded | {"video_render": 50}
    assert ok(url, "costs", "delete", "video_render") == ["video_render removed"]
    assert costs_table(url) == seeded

    # holds sweep: an expired hold is released, once
    place_expired_hold(url, "alice", 300)
    assert ok(url, "balance", "alice") == [balance_line("alice", balance, held=300)]
    assert ok(url, "holds", "sweep") == ["released 1 expired holds"]
    assert ok(url, "holds", "sweep") == ["released 0 expired holds"]
    assert ok(url, "balance", "alice") == [balance_line("alice", balance)]

    # users set-status: suspended, active again, closed (and a closed wallet takes nothing)
    for status in ("suspended", "active", "closed"):
        assert ok(url, "users", "set-status", "alice", status) == [f"wallet alice is now {status}"]
        assert ok(url, "balance", "alice") == [balance_line("alice", balance, status=status)]
    closed = fails(url, "grant", "alice", "1", "--reason", "late", code=1)
    assert closed == "error: Wallet is closed (wallet_closed)"
    assert ok(url, "balance", "alice") == [balance_line("alice", balance, status="closed")]

    # audit: the books prove out
    transactions = 3 if bonus else 2
    assert ok(url, "audit") == [
        f"{transactions} transactions, {2 * transactions} entries, 1 wallets",
        f"  system account tokens_granted: {-balance}",
        "audit passed: every transaction sums to zero and every balance matches",
    ]


def test_database_url_from_the_environment(database_url: str) -> None:
    result = invoke(None, "users", "create", "erin", env={"TOKENBANK_DATABASE_URL": database_url})
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("wallet erin created")
    assert ok(database_url, "balance", "erin")[0].startswith("erin: balance ")


# --- error paths: one line on stderr, a non-zero exit, nothing written -----------------


@dataclass(frozen=True)
class CliDatabase:
    url: str
    balance: str  # what `balance alice` prints; no error case may change it


@pytest.fixture(scope="module", params=ENGINES)
def cli_database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> CliDatabase:
    """One migrated database per engine for the error cases (they must not write)."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path_factory.mktemp("cli") / "tokenbank.db"
        shutil.copyfile(template, path)
        url = f"sqlite+aiosqlite:///{path}"
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        name = f"cli_errors_{next(_database_numbers)}"
        asyncio.run(_create_pg_database(server, name))
        url = server.async_url(name)
    ok(url, "users", "create", "alice")
    ok(url, "grant", "alice", "100", "--reason", "seed")
    [balance] = ok(url, "balance", "alice")
    return CliDatabase(url=url, balance=balance)


ERROR_CASES = [
    pytest.param(
        ["balance", "bob"], 1, "error: no wallet for user 'bob'", id="balance-unknown-user"
    ),
    pytest.param(
        ["users", "set-status", "bob", "active"],
        1,
        "error: no wallet for user 'bob'",
        id="set-status-unknown-user",
    ),
    pytest.param(
        ["users", "set-status", "alice", "frozen"],
        2,
        "error: status: must be active, suspended or closed",
        id="set-status-bad-status",
    ),
    pytest.param(
        ["grant", "alice", "0", "--reason", "x"],
        2,
        "error: amount: must be at least 1",
        id="grant-zero",
    ),
    pytest.param(
        ["grant", "alice", str(MAX_AMOUNT_TOKENS + 1), "--reason", "x"],
        2,
        f"error: amount: must be at most {MAX_AMOUNT_TOKENS}",
        id="grant-too-large",
    ),
    pytest.param(
        ["grant", "bob", "5", "--reason", "x"],
        1,
        "error: User wallet not found (wallet_not_found)",
        id="grant-unknown-user",
    ),
    pytest.param(
        ["grant", "alice", "5", "--reason", "r" * (MAX_DESCRIPTION_LENGTH + 1)],
        2,
        f"error: description: must be at most {MAX_DESCRIPTION_LENGTH} characters",
        id="grant-reason-too-long",
    ),
    pytest.param(
        ["grant", "alice", "5", "--reason", "x", "--idempotency-key", " "],
        2,
        "error: idempotency_key: must not be empty",
        id="grant-blank-idempotency-key",
    ),
    pytest.param(
        ["costs", "delete", "nothing_here"],
        1,
        "error: no cost is set for 'nothing_here'",
        id="costs-delete-unknown",
    ),
    pytest.param(
        ["costs", "set", "usage", "5"],
        2,
        "error: operation_type: 'usage' is reserved",
        id="costs-set-reserved",
    ),
    pytest.param(
        ["costs", "set", "video_render", "0"],
        2,
        "error: tokens: must be at least 1",
        id="costs-set-zero",
    ),
    pytest.param(
        ["costs", "set", "Video Render", "5"],
        2,
        "error: operation_type: must be lower",
        id="costs-set-malformed",
    ),
    pytest.param(
        ["history", "alice", "--limit", "0"],
        2,
        "error: limit: must be a whole number",
        id="history-limit-zero",
    ),
    pytest.param(
        ["history", "alice", "--offset", "-1"],
        2,
        "error: offset: must be a whole number",
        id="history-negative-offset",
    ),
    pytest.param(
        ["history", "alice", "--type", "Bad Type"],
        2,
        "error: operation_type: must be lower",
        id="history-malformed-type",
    ),
    pytest.param(
        ["users", "create", ""], 2, "error: user_id: must not be empty", id="create-empty-user"
    ),
    pytest.param(
        ["users", "create", "u" * 129],
        2,
        "error: user_id: must be at most 128 characters",
        id="create-long-user",
    ),
]


@pytest.mark.parametrize(("args", "code", "message"), ERROR_CASES)
def test_error_prints_one_line_and_writes_nothing(
    cli_database: CliDatabase, args: Sequence[str], code: int, message: str
) -> None:
    line = fails(cli_database.url, *args, code=code)
    assert line.startswith(message), line
    assert ok(cli_database.url, "balance", "alice") == [cli_database.balance]


def test_idempotency_key_reused_for_another_amount(database_url: str) -> None:
    ok(database_url, "users", "create", "alice")
    [first] = ok(database_url, "grant", "alice", "7", "--reason", "x", "--idempotency-key", "k-1")
    [balance] = ok(database_url, "balance", "alice")
    conflict = fails(
        database_url, "grant", "alice", "8", "--reason", "x", "--idempotency-key", "k-1", code=2
    )
    assert conflict == "error: Idempotency key was already used with a different request"
    assert ok(database_url, "balance", "alice") == [balance]
    assert ok(database_url, "grant", "alice", "7", "--reason", "x", "--idempotency-key", "k-1") == [
        first
    ]


@pytest.mark.parametrize(
    "args",
    [["balance", "alice"], ["grant", "alice", "5", "--reason", "x"], ["audit"], ["holds", "sweep"]],
    ids=["balance", "grant", "audit", "holds-sweep"],
)
def test_unmigrated_database_is_refused_not_migrated(
    empty_database: EmptyDatabase, args: Sequence[str]
) -> None:
    if empty_database.engine == "sqlite":
        Path(empty_database.url.removeprefix("sqlite:///")).touch()
    assert fails(empty_database.url, *args, code=1) == NOT_MIGRATED
    assert empty_database.table_count() == 0


@pytest.mark.parametrize(
    "args",
    [["db", "upgrade"], ["db", "current"], ["balance", "alice"]],
    ids=["upgrade", "current", "balance"],
)
def test_unsupported_database_url(args: Sequence[str]) -> None:
    line = fails("mysql://x", *args, code=2)
    assert line == "error: unsupported database URL 'mysql': use sqlite or postgresql"


@pytest.mark.parametrize(
    "args",
    [["db", "upgrade"], ["db", "current"], ["balance", "alice"]],
    ids=["upgrade", "current", "balance"],
)
def test_unreachable_postgresql(args: Sequence[str]) -> None:
    line = fails("postgresql://u@127.0.0.1:1/db", *args, code=1)
    assert line.startswith("error: cannot use the database: "), line


def _join_sqlite_worker_threads() -> None:
    """Wait for aiosqlite's worker threads, so what they raise is raised in this test."""
    for thread in threading.enumerate():
        if "worker_thread" in thread.name and thread is not threading.current_thread():
            thread.join(timeout=10)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_unopenable_sqlite_file(tmp_path: Path) -> None:
    """The error line is right; what may follow it is the next test's business."""
    url = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'x.db'}"
    line = fails(url, "db", "upgrade", code=2)
    _join_sqlite_worker_threads()
    assert line.startswith("error: the directory for the SQLite file does not exist")


def test_unopenable_sqlite_file_leaves_no_failing_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deterministic form of the race: the worker thread is slowed as on a busy machine."""
    thread_errors: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", thread_errors.append)
    original_worker = aiosqlite.core._connection_worker_thread

    class SlowQueue:
        def __init__(self, queue: Any) -> None:
            self._queue = queue
            self._seen = 0

        def get(self) -> Any:
            item = self._queue.get()
            self._seen += 1
            if self._seen > 1:  # the connect attempt runs at once; what follows is late
                time.sleep(0.3)
            return item

    def slow_worker_thread(queue: Any) -> None:
        # A stand-in for the worker's SimpleQueue: the worker only calls get().
        original_worker(cast("SimpleQueue[Any]", SlowQueue(queue)))

    monkeypatch.setattr(aiosqlite.core, "_connection_worker_thread", slow_worker_thread)
    url = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'x.db'}"
    fails(url, "db", "upgrade", code=2)
    _join_sqlite_worker_threads()
    assert [str(error.exc_value) for error in thread_errors] == []


def test_unparseable_database_url() -> None:
    line = fails("not a url", "balance", "alice", code=2)
    assert "database URL" in line


def test_in_memory_sqlite_url() -> None:
    fails("sqlite:///:memory:", "db", "current", code=2)


# --- audit on broken books -------------------------------------------------------------

BREAKS = {
    # wallets may be updated (the ledger does it), so no trigger stands in the way
    "cached-balance": {
        "sqlite": ["UPDATE wallets SET balance_tokens = balance_tokens + 1"],
        "postgresql": ["UPDATE wallets SET balance_tokens = balance_tokens + 1"],
    },
    # ledger entries are append-only: take the trigger away first
    "deleted-entry": {
        "sqlite": [
            "DROP TRIGGER ledger_entries_no_delete",
            "DELETE FROM ledger_entries WHERE id = (SELECT MAX(id) FROM ledger_entries"
            " WHERE wallet_id IS NOT NULL)",
        ],
        "postgresql": [
            "ALTER TABLE ledger_entries DISABLE TRIGGER ledger_entries_append_only",
            "DELETE FROM ledger_entries WHERE id = (SELECT MAX(id) FROM ledger_entries"
            " WHERE wallet_id IS NOT NULL)",
        ],
    },
}
EXPECTED_FAILURES = {
    # A wallet's grants add up to its balance (decision 13): the audit sees that too.
    "cached-balance": [
        "wallet balance differs from its entries",
        "wallet balance differs from its grants",
    ],
    "deleted-entry": ["unbalanced transactions", "wallet balance differs from its entries"],
}


@pytest.mark.parametrize("broken", list(BREAKS))
def test_audit_fails_on_broken_books(database_url: str, engine_name: str, broken: str) -> None:
    ok(database_url, "users", "create", "alice")
    ok(database_url, "grant", "alice", "100", "--reason", "x")
    assert ok(database_url, "audit")[-1].startswith("audit passed")

    run_sql(database_url, *BREAKS[broken][engine_name])
    result = invoke(database_url, "audit")
    assert result.exit_code == 1, result.output
    assert "audit passed" not in result.output
    assert re.match(r"^\d+ transactions, \d+ entries, 1 wallets$", result.stdout.splitlines()[0])
    failed = [line for line in result.stderr.splitlines() if line.startswith("FAILED ")]
    assert failed == [f"FAILED {problem}:" for problem in EXPECTED_FAILURES[broken]], result.stderr
    assert "'alice'" in result.stderr


# --- the installed console script ------------------------------------------------------


@pytest.fixture
def console_script() -> str:
    script = shutil.which("tokenbank", path=Path(sys.executable).parent)
    assert script is not None, "the tokenbank console script is not installed next to python"
    return script


def test_installed_console_script(console_script: str) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [console_script, *args], capture_output=True, text=True, timeout=60, check=False
        )

    helped = run("--help")
    assert helped.returncode == 0, helped.stderr
    for command in ("db", "users", "grant", "balance", "history", "costs", "holds", "audit"):
        assert re.search(rf"\b{command}\b", helped.stdout), command

    refused = run("balance", "alice", "--database-url", "mysql://x")
    assert refused.returncode == 2
    assert refused.stdout == ""
    assert refused.stderr == "error: unsupported database URL 'mysql': use sqlite or postgresql\n"
