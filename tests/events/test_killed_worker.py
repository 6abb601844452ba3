"""A ``tokenbank jobs run`` process killed (SIGKILL) while its deliveries hang loses
no event: another worker delivers each one when its claim's lease ends, and the
receiver accepts each event once (decision 15)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from sqlalchemy import text

from tests.events.receiver import RunningReceiver
from tests.events.test_delivery import event_ids, low_balances
from tokenbank import TokenService
from tokenbank.apps.service import AppService
from tokenbank.events.service import WebhookService

TOKENBANK = str(Path(sys.executable).parent / "tokenbank")
WORKER_ENV = {
    "TOKENBANK_WEBHOOK_TIMEOUT_SECONDS": "8",  # the lease: 8 + 10 s
    "TOKENBANK_WEBHOOK_INTERVAL_SECONDS": "0.2",
    "TOKENBANK_WEBHOOK_RETRY_SECONDS": "[0.2, 0.2, 0.2]",
}


def start_worker(database_url: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, **WORKER_ENV}
    command = [TOKENBANK, "jobs", "run", "--database-url", database_url]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def wait_until(condition: object, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.1)
    raise AssertionError("timed out waiting")


async def deliveries(service: TokenService) -> set[tuple[str, int]]:
    async with (await service.engine()).connect() as conn:
        query = text("SELECT status, attempts FROM webhook_deliveries")
        return {(row.status, row.attempts) for row in (await conn.execute(query)).all()}


async def test_a_killed_worker_process_loses_no_event(
    service: TokenService, database_url: str
) -> None:
    with RunningReceiver(hang_seconds=30) as receiver:
        await AppService(await service.engine()).create_app("shop")
        await WebhookService(await service.engine()).create(
            "shop", receiver.base_url + "/hang/1", ["*"]
        )
        await low_balances(service, ["kim", "lou"])
        ids = await event_ids(service)
        first = start_worker(database_url)
        try:
            # Killed while the receiver holds all four of its requests.
            await asyncio.to_thread(wait_until, lambda: len(receiver.at("/hang/1")) == 4, 60)
        finally:
            first.kill()
            first.wait()
        assert await deliveries(service) == {("pending", 1)}
        second = start_worker(database_url)
        try:
            await asyncio.to_thread(
                wait_until, lambda: len(receiver.accepted("/hang/1")) == len(ids), 60
            )
            # The receiver's 2xx reaches the worker, which then records it: wait for
            # the records too before the worker is stopped.
            for _ in range(300):
                if await deliveries(service) == {("delivered", 2)}:
                    break
                await asyncio.sleep(0.1)
        finally:
            second.terminate()
            second.wait(timeout=30)
    assert receiver.accepted("/hang/1") == Counter(dict.fromkeys(ids, 1))
    assert await deliveries(service) == {("delivered", 2)}
