"""Proves tokenbank.testing.postgres can run a real, disposable PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import asyncpg
import pytest

from tokenbank.testing.postgres import PostgresServer, find_bin_dir, quote_ident


async def _fetch_all(dsn: str, query: str) -> list[tuple[object, ...]]:
    conn = await asyncpg.connect(dsn)
    try:
        return [tuple(row) for row in await conn.fetch(query)]
    finally:
        await conn.close()


def test_server_lifecycle_databases_and_templates() -> None:
    server = PostgresServer()
    server.start()
    try:
        base_dir = server.base_dir
        assert server.host == "127.0.0.1"
        assert server.async_url("app") == (
            f"postgresql+asyncpg://{server.user}@127.0.0.1:{server.port}/app"
        )
        assert server.data_dir.is_dir()

        server.create_database("app")
        assert asyncio.run(_fetch_all(server.sync_dsn("app"), "SELECT 1")) == [(1,)]

        server.execute_sql("app", "CREATE TABLE t (v int); INSERT INTO t VALUES (42);")
        server.create_database("app copy", template="app")
        rows = asyncio.run(_fetch_all(server.sync_dsn("app copy"), "SELECT v FROM t"))
        assert rows == [(42,)]
        assert server.execute_sql("app copy", "SELECT count(*) FROM t").strip() == "1"

        server.drop_database("app copy")
        server.drop_database("app copy")  # IF EXISTS: dropping twice is fine
        listed = server.execute_sql("postgres", "SELECT datname FROM pg_database").split()
        assert "app" in listed
        assert "app copy" not in listed
    finally:
        server.stop()
    assert not base_dir.exists()
    assert not server.running
    server.stop()  # idempotent


def test_context_manager_and_failed_sql() -> None:
    with PostgresServer() as server:
        base_dir = server.base_dir
        with pytest.raises(RuntimeError, match="psql failed"):
            server.execute_sql("postgres", "SELECT * FROM no_such_table")
    assert not base_dir.exists()


def test_atexit_stops_server_of_aborted_run(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        from tokenbank.testing.postgres import PostgresServer
        server = PostgresServer().start()
        print(server.base_dir, server.port, flush=True)
        raise SystemExit(0)  # no stop(): atexit must clean up
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    base_dir, port = result.stdout.split()
    assert not Path(base_dir).exists()
    with pytest.raises(ConnectionRefusedError):
        asyncio.run(_fetch_all(f"postgresql://postgres@127.0.0.1:{port}/postgres", "SELECT 1"))


def test_not_started_server_has_no_port() -> None:
    server = PostgresServer()
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.port
    server.stop()  # stopping a never-started server is a no-op


def test_missing_binaries_give_install_hint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TOKENBANK_PG_BIN", str(tmp_path))
    with pytest.raises(RuntimeError, match="postgresql"):
        find_bin_dir()
    with pytest.raises(RuntimeError, match="TOKENBANK_PG_BIN"):
        PostgresServer().start()


def test_bin_dir_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOKENBANK_PG_BIN", raising=False)
    found = find_bin_dir()
    monkeypatch.setenv("TOKENBANK_PG_BIN", str(found))
    assert find_bin_dir() == found
    assert os.access(found / "initdb", os.X_OK)


def test_quote_ident() -> None:
    assert quote_ident("app") == '"app"'
    assert quote_ident('we"ird') == '"we""ird"'
    with pytest.raises(ValueError, match="invalid"):
        quote_ident("")


def test_a_server_whose_starter_was_killed_is_stopped_and_removed() -> None:
    # A pytest run killed with SIGKILL never runs its finalizers; the watchdog must
    # stop the server and remove its directory all the same.
    starter = textwrap.dedent(
        """
        import time
        from tokenbank.testing.postgres import PostgresServer
        server = PostgresServer()
        server.start()
        print(server.base_dir, server.sync_dsn("postgres"), flush=True)
        time.sleep(120)
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", starter], stdout=subprocess.PIPE, text=True
    ) as child:
        assert child.stdout is not None
        base_dir, dsn = child.stdout.readline().split()
        assert asyncio.run(_fetch_all(dsn, "SELECT 1")) == [(1,)]
        child.kill()
    deadline = time.monotonic() + 30
    while Path(base_dir).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(base_dir).exists()
    with pytest.raises(ConnectionRefusedError):
        asyncio.run(_fetch_all(dsn, "SELECT 1"))
