"""Embedded debits per second: N concurrent tasks debiting through TokenService.

No HTTP: the ledger in-process, as a monolith embeds it (case 8 of `make bench`).

Standalone (prepares its own users first):
    python bench/embedded_debits.py --database-url URL [--tasks 8] [--seconds 5]
As the harness calls it (on users bench/populate.py created; one JSON line out):
    python bench/embedded_debits.py --database-url URL --no-prepare --users 10000 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

from tokenbank import TokenService
from tokenbank.config import Settings

USERS = 1_000
START_BALANCE_TOKENS = 10_000_000
DEBIT_TOKENS = 1


async def prepare(service: TokenService, users: int) -> None:
    for number in range(users):
        user_id = f"bench-{number}"
        await service.open_wallet(user_id)
        await service.credit(user_id, amount=START_BALANCE_TOKENS, operation_type="purchase")


async def worker(
    service: TokenService, task: int, users: int, deadline: float, latencies: list[float]
) -> int:
    done = 0
    while time.monotonic() < deadline:
        started = time.perf_counter()
        result = await service.debit(f"bench-{(task * 7919 + done) % users}", amount=DEBIT_TOKENS)
        latencies.append(time.perf_counter() - started)
        if not result.success:
            raise RuntimeError(f"debit refused: {result.error}")
        done += 1
    return done


def peak_rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


async def run(
    database_url: str, tasks: int, seconds: float, users: int, *, prepare_users: bool, audit: bool
) -> dict[str, object]:
    settings = Settings(database_url=database_url, db_pool_size=max(tasks, 1))
    async with TokenService(settings=settings, welcome_bonus_tokens=0) as service:
        if prepare_users:
            await prepare(service, users)
        latencies: list[float] = []
        started = time.monotonic()
        deadline = started + seconds
        counts = await asyncio.gather(
            *(worker(service, t, users, deadline, latencies) for t in range(tasks))
        )
        elapsed = time.monotonic() - started
        audit_ok = (await service.audit()).ok if audit else None
    ordered = sorted(latencies)
    total = sum(counts)
    return {
        "ops": total,
        "seconds": round(elapsed, 3),
        "ops_per_s": round(total / elapsed, 1),
        "tasks": tasks,
        "debit_tokens": DEBIT_TOKENS,
        "p50_ms": round(statistics.median(ordered) * 1000, 3) if ordered else None,
        "p99_ms": round(ordered[int(len(ordered) * 0.99)] * 1000, 3) if ordered else None,
        "peak_rss_kib": peak_rss_kib(),
        "audit_ok": audit_ok,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--users", type=int, default=USERS)
    parser.add_argument(
        "--no-prepare",
        dest="prepare",
        action="store_false",
        help="use existing users bench-0 ... bench-{users-1} (as bench/populate.py makes)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    arguments = parser.parse_args()
    result = asyncio.run(
        run(
            arguments.database_url,
            arguments.tasks,
            arguments.seconds,
            arguments.users,
            prepare_users=arguments.prepare,
            audit=not arguments.json,
        )
    )
    if arguments.json:
        print(json.dumps(result))
        return
    print(
        f"{result['ops']} debits in {result['seconds']}s: {result['ops_per_s']}/s"
        f" ({arguments.tasks} tasks, p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms);"
        f" audit {'ok' if result['audit_ok'] else 'FAILED'}"
    )


if __name__ == "__main__":
    main()
