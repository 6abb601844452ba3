"""``tokenbank webhooks``: add, list, rotate-secret, deliveries, redeliver, remove;
bad input exits 2 and writes nothing; every change is audited as ``cli``."""

from __future__ import annotations

import asyncio
import re

from sqlalchemy import text
from typer.testing import CliRunner, Result

from tokenbank import TokenService
from tokenbank.apps.service import AppService
from tokenbank.cli import app

runner = CliRunner()


def invoke(url: str, *args: str) -> Result:
    return runner.invoke(app, [*args, "--database-url", url])


async def _prepare(url: str) -> None:
    async with TokenService(url, welcome_bonus_tokens=0, auto_migrate=False) as bank:
        await AppService(await bank.engine()).create_app("shop")
        await bank.open_wallet("ann")
        await bank.credit("ann", amount=1_500, operation_type="purchase")
        await bank.debit("ann", amount=600, operation_type="usage")


async def _scalar(url: str, query: str) -> str:
    async with TokenService(url, auto_migrate=False) as bank:
        engine = await bank.engine()
        async with engine.connect() as conn:
            return str((await conn.execute(text(query))).scalar_one())


def test_webhooks_commands(database_url: str) -> None:
    asyncio.run(_prepare(database_url))
    added = invoke(
        database_url, "webhooks", "add", "shop", "https://shop.example.test/h", "--event", "*"
    )
    assert added.exit_code == 0, added.output
    endpoint_id = re.search(r"endpoint (whep_\w+)", added.output)
    secret = re.search(r"signing secret: (whsec_\S+)", added.output)
    assert endpoint_id is not None and secret is not None
    listed = invoke(database_url, "webhooks", "list", "--app", "shop")
    assert endpoint_id.group(1) in listed.output and secret.group(1) not in listed.output
    rotated = invoke(database_url, "webhooks", "rotate-secret", endpoint_id.group(1))
    assert rotated.exit_code == 0 and secret.group(1) not in rotated.output
    event_id = asyncio.run(_scalar(database_url, "SELECT id FROM events"))
    again = invoke(database_url, "webhooks", "redeliver", endpoint_id.group(1), event_id)
    assert again.exit_code == 0, again.output
    log = invoke(database_url, "webhooks", "deliveries", endpoint_id.group(1))
    assert f"{event_id}  balance.low  pending  attempts 0" in log.output
    removed = invoke(database_url, "webhooks", "remove", endpoint_id.group(1))
    assert removed.exit_code == 0
    audited = asyncio.run(_scalar(database_url, "SELECT count(*) FROM admin_audit_log"))
    assert audited == "4"


def test_bad_input_exits_2_and_writes_nothing(database_url: str) -> None:
    asyncio.run(_prepare(database_url))
    for url, event in (("ftp://x.test/", "balance.low"), ("https://x.test/", "balance.up")):
        result = invoke(database_url, "webhooks", "add", "shop", url, "--event", event)
        assert result.exit_code == 2, result.output
    missing = invoke(database_url, "webhooks", "add", "nope", "https://x.test/", "--event", "*")
    assert missing.exit_code == 1
    assert asyncio.run(_scalar(database_url, "SELECT count(*) FROM webhook_endpoints")) == "0"
