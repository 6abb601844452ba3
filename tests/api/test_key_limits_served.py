"""Per-key limits across real processes: two ``tokenbank serve`` on two ports, one
PostgreSQL (issue 14). Requests alternate between the servers and race."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from tests.conftest import _create_pg_database
from tests.support.server import free_port, wait_until_healthy
from tokenbank.testing.postgres import PostgresServer

_numbers = itertools.count()
# A window or a day that ends during the race would let a second one begin.
MARGIN_SECONDS = 8


def _tokenbank(*args: str, env: dict[str, str]) -> str:
    command = [sys.executable, "-m", "tokenbank.cli", *args]
    return subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def servers(
    postgres_server: PostgresServer, tmp_path: Path
) -> Iterator[tuple[list[str], dict[str, str]]]:
    name = f"served_limits_{next(_numbers)}"
    asyncio.run(_create_pg_database(postgres_server, name))
    env = os.environ | {
        "TOKENBANK_DATABASE_URL": postgres_server.async_url(name),
        "TOKENBANK_WELCOME_BONUS_TOKENS": "0",
    }
    processes: list[subprocess.Popen[bytes]] = []
    urls = []
    try:
        for number in range(2):
            port = free_port()
            log_path = tmp_path / f"serve-{number}.log"
            with log_path.open("w") as log:
                command = [sys.executable, "-m", "tokenbank.cli", "serve", "--port", str(port)]
                process = subprocess.Popen(
                    [*command, "--log-level", "warning"],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            processes.append(process)
            urls.append(f"http://127.0.0.1:{port}")
            wait_until_healthy(urls[-1], process, log_path)
        yield urls, env
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_clear_of_a_minute_boundary() -> None:
    second = datetime.now(UTC).second
    if second > 60 - MARGIN_SECONDS:
        time.sleep(60 - second + 1)


async def _race(urls: list[str], key: str, amount: int, count: int) -> Counter[int]:
    headers = {"Authorization": f"Bearer {key}"}
    body = {"userId": "alice", "amount": amount}
    async with (
        httpx.AsyncClient(base_url=urls[0], timeout=30) as first,
        httpx.AsyncClient(base_url=urls[1], timeout=30) as second,
    ):
        clients = (first, second)
        answers = await asyncio.gather(
            *(
                clients[n % 2].post("/api/tokens/deduct", json=body, headers=headers)
                for n in range(count)
            )
        )
    return Counter(answer.status_code for answer in answers)


def _key(env: dict[str, str], slug: str, *limits: str) -> str:
    created = _tokenbank("apps", "create", slug, "--scope", "spend", *limits, env=env)
    return created.strip().splitlines()[-1]


def test_two_servers_share_a_keys_rate_and_cap(servers: tuple[list[str], dict[str, str]]) -> None:
    urls, env = servers
    _tokenbank("users", "create", "alice", env=env)
    _tokenbank("grant", "alice", "1000", "--reason", "test", env=env)
    rated = _key(env, "rated", "--rate-per-minute", "6")
    capped = _key(env, "capped", "--daily-cap-tokens", "10")

    _wait_clear_of_a_minute_boundary()
    assert asyncio.run(_race(urls, rated, 1, 30)) == {200: 6, 429: 24}
    assert asyncio.run(_race(urls, capped, 3, 20)) == {200: 3, 402: 17}
    # 6 deducts of 1 and 3 of 3: 15 spent, nothing more.
    assert "balance 985, held 0, available 985, spent 15" in _tokenbank("balance", "alice", env=env)
    _tokenbank("audit", env=env)
