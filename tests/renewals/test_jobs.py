"""The jobs worker and the renewals commands: two ``tokenbank jobs run`` processes
started together renew each user once; ``renewals run`` reports and exits by outcome."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner, Result

from tokenbank import TokenService
from tokenbank.cli import app
from tokenbank.config import Settings
from tokenbank.jobs.worker import JobsWorker
from tokenbank.ledger import handlers
from tokenbank.ledger.errors import ErrorCode
from tokenbank.ledger.repository.tables import plan_renewals
from tokenbank.ledger.results import refused_operation
from tokenbank.plans.service import PlanService
from tokenbank.renewals import MonthlyRenewalService

TOKENBANK = str(Path(sys.executable).parent / "tokenbank")
runner = CliRunner()
SUMMARY = re.compile(r"^renewed (\d+), failed (\d+), (\d+) renewed by another worker first$", re.M)


async def on_plan(database_url: str, users: list[str], allocation: int = 2_000) -> None:
    async with TokenService(database_url, welcome_bonus_tokens=0, auto_migrate=False) as bank:
        plans = PlanService(await bank.engine())
        await plans.create_plan("pro", monthly_allocation_tokens=allocation)
        for user_id in users:
            await bank.open_wallet(user_id)
            await plans.set_user_plan(user_id, "pro")


async def renewed_balances(database_url: str, users: list[str]) -> tuple[int, list[int]]:
    async with TokenService(database_url, auto_migrate=False) as bank:
        report = await bank.audit()
        assert report.ok, report.problems
        async with (await bank.engine()).connect() as conn:
            count = select(func.count()).select_from(plan_renewals)
            renewals = int((await conn.execute(count)).scalar_one())
        balances = []
        for user_id in users:
            info = await bank.get_balance(user_id)
            assert info is not None
            balances.append(info.tokens_balance)
        return renewals, balances


def test_two_workers_started_together_renew_each_user_once(database_url: str) -> None:
    users = [f"user-{n:04d}" for n in range(400)]
    asyncio.run(on_plan(database_url, users))
    command = [TOKENBANK, "jobs", "run", "--once", "--database-url", database_url]
    workers = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outputs = [worker.communicate(timeout=300)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs
    summaries = [SUMMARY.search(output) for output in outputs]
    assert all(summaries), outputs
    renewed = [int(found[1]) for found in summaries if found]
    skipped = [int(found[3]) for found in summaries if found]
    assert sum(renewed) == len(users), outputs
    print(f"renewed {renewed}, found renewed by the other worker {skipped}")
    renewals, balances = asyncio.run(renewed_balances(database_url, users))
    assert renewals == len(users)
    assert balances == [2_000] * len(users)


async def renewal_count(database_url: str) -> int:
    count = select(func.count()).select_from(plan_renewals)
    async with TokenService(database_url, auto_migrate=False) as bank:
        engine = await bank.engine()
        async with engine.connect() as conn:
            return int((await conn.execute(count)).scalar_one())


def test_two_long_running_workers_renew_each_user_once_and_stop_on_sigterm(
    database_url: str,
) -> None:
    users = [f"user-{n:04d}" for n in range(200)]
    asyncio.run(on_plan(database_url, users, allocation=300))
    command = [TOKENBANK, "jobs", "run", "--database-url", database_url]
    workers = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    try:
        deadline = time.monotonic() + 120
        while asyncio.run(renewal_count(database_url)) < len(users):
            assert time.monotonic() < deadline, "the workers did not renew everyone in 2 min"
            assert all(worker.poll() is None for worker in workers)
            time.sleep(0.5)
        time.sleep(1)  # both workers' first passes are over: nobody is renewed twice
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
    outputs = [worker.communicate(timeout=60)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs
    renewals, balances = asyncio.run(renewed_balances(database_url, users))
    assert renewals == len(users)
    assert balances == [300] * len(users)


async def test_the_worker_renews_at_start_and_stops_when_told(database_url: str) -> None:
    await on_plan(database_url, ["ann", "bo"], allocation=100)
    settings = Settings(sweep_interval_seconds=1, renewal_cron="*/5 * * * *")
    async with TokenService(database_url, settings=settings, auto_migrate=False) as bank:
        stop = asyncio.Event()
        running = asyncio.create_task(JobsWorker(bank).run_forever(stop))
        for _ in range(200):
            info = await bank.get_balance("bo")
            if info is not None and info.tokens_balance == 100:
                break
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(running, timeout=10)
        assert [(await bank.get_balance(u)).tokens_balance for u in ("ann", "bo")] == [100, 100]  # type: ignore[union-attr]
        assert MonthlyRenewalService(bank).get_cron_expression() == "*/5 * * * *"


def test_the_cron_setting_is_checked() -> None:
    assert Settings().renewal_cron == "0 2 * * *"
    with pytest.raises(ValueError, match="not a cron expression"):
        Settings(renewal_cron="every day at two")
    with pytest.raises(ValueError, match="not a cron expression"):
        Settings(renewal_cron="61 2 * * *")


def invoke(url: str, *args: str) -> Result:
    result = runner.invoke(app, [*args, "--database-url", url])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def test_renewals_commands(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    seeded = invoke(database_url, "plans", "seed-defaults")
    assert seeded.exit_code == 0, seeded.output
    assert "3 plan(s) created" in seeded.stdout
    assert "0 plan(s) created" in invoke(database_url, "plans", "seed-defaults").stdout
    updated = invoke(
        database_url, "plans", "update", "Gift", "--policy", "rollover", "--rollover-cap", "50"
    )
    assert "Gift  allocation 100/month, rollover (cap 50)" in updated.stdout, updated.output
    assert invoke(database_url, "plans", "update", "Gift").exit_code == 2
    for user_id, plan in [("ann", "Gift"), ("bo", "Gift"), ("cy", "Business")]:
        assert invoke(database_url, "users", "create", user_id).exit_code == 0
        assert invoke(database_url, "users", "set-plan", user_id, plan).exit_code == 0

    check = invoke(database_url, "renewals", "check", "ann")
    assert "plan Gift  eligible" in check.stdout, check.output
    dry = invoke(database_url, "renewals", "run", "--dry-run", "--tier", "Gift")
    assert dry.exit_code == 0, dry.output
    assert "would renew 2 of 2 due user(s): 0 failed" in dry.stdout

    # One renewal fails (the credit is refused): the others go ahead, the exit is 1.
    real_credit = handlers.credit

    async def refuse_bo(conn, op, now):
        if op.user_id == "bo":
            return refused_operation(ErrorCode.WALLET_NOT_FOUND, user_id="bo")
        return await real_credit(conn, op, now)

    monkeypatch.setattr(handlers, "credit", refuse_bo)
    failed = invoke(database_url, "renewals", "run")
    assert failed.exit_code == 1, failed.output
    assert "renewed 2 of 3 due user(s): 1 failed" in failed.stdout
    assert "FAILED bo:" in failed.stderr
    monkeypatch.setattr(handlers, "credit", real_credit)
    again = invoke(database_url, "renewals", "run")
    assert (again.exit_code, again.stdout.splitlines()[-1]) == (
        0,
        "renewed 1 of 1 due user(s): 0 failed, 0 renewed by another runner first",
    ), again.output
    assert (
        "not eligible: already renewed for this period"
        in invoke(database_url, "renewals", "check", "ann").stdout
    )
    assert invoke(database_url, "renewals", "run", "--tier", "Platinum").exit_code == 2
