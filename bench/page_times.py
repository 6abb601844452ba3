"""How long tokenbank takes to answer its pages, on a database of 100,000 ledger entries.

Case 10 of `make bench`. The server's time only: the app runs in this process and httpx
calls it through ASGI (no socket, no browser), so a page's time is what tokenbank spends
on it, templates and queries included. The database is first topped up, through the
ledger's own API, until it holds ``--entries`` ledger entries, most of them the page
user's (so their history, usage and the admin's account page read the most rows);
then a user and a superadmin sign in and every page is read in turn for ``--seconds``.
The first visit of each page is reported on its own: it is what the first person after
a restart waits for.

Usage:
    python -m bench.page_times --database-url URL [--entries 100000] [--seconds 10] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import time
from typing import Any

import httpx
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.cases import PAGE_ENTRIES, PAGE_TARGET_MS
from tokenbank import TokenService
from tokenbank.api.app import create_app
from tokenbank.config import Settings
from tokenbank.db.migrate import upgrade
from tokenbank.db.models import LedgerEntry
from tokenbank.ledger.operations import Credit, Debit, OpenWallet
from tokenbank.ledger.pages import SETTLE_SECONDS as PAGES_SETTLE_SECONDS
from tokenbank.web.admin_reads import SETTLE_SECONDS as ADMIN_SETTLE_SECONDS

PAGE_USER = "bench-pages"
USER_EMAIL = "pages-user@bench.example"
ADMIN_EMAIL = "pages-admin@bench.example"
PASSWORD = "bench pages password"  # noqa: S105 (a bench database's throwaway accounts)
ENTRIES = PAGE_ENTRIES
BATCH = 200  # debits to a transaction while filling
MODELS = ("gpt-4o", "gpt-4o-mini", "claude-sonnet", "")
OPERATIONS = ("usage", "image_generation", "chat")
TARGET_MS = PAGE_TARGET_MS
USER_PAGES = (
    "/tokens",
    "/tokens/history",
    "/tokens/history?page=200",
    "/tokens/history?type=usage",
    "/tokens/usage",
    "/settings/billing",
)
ADMIN_PAGES = (
    "/admin/tokens",
    "/admin/accounts",
    f"/admin/accounts/{PAGE_USER}",
    "/admin/audit",
    "/admin/settings",
    "/admin/packs",
    "/admin/plans",
    "/admin/apps",
)


async def entry_count(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(LedgerEntry)) or 0)


async def top_up(service: TokenService, entries: int) -> int:
    """Debits on the page user until the ledger holds `entries` entries; how many now."""
    engine = await service.engine()
    await service.apply([OpenWallet(user_id=PAGE_USER, welcome_bonus_tokens=0)])
    have = await entry_count(engine)
    if have < entries:
        credit = Credit(user_id=PAGE_USER, amount_tokens=entries * 10, operation_type="purchase")
        await service.apply([credit])
    number = 0
    while have < entries:
        debits = [_debit(number + i) for i in range(BATCH)]
        failed = [r for r in await service.apply(debits) if not r.success]
        if failed:
            raise SystemExit(f"filling failed: {failed[0].error}")
        number += BATCH
        have += 2 * BATCH  # a debit writes two entries: the wallet's and the system's
    return await entry_count(engine)


def _debit(number: int) -> Debit:
    model = MODELS[number % len(MODELS)]
    return Debit(
        user_id=PAGE_USER,
        amount_tokens=1 + number % 7,
        operation_type=OPERATIONS[number % len(OPERATIONS)],
        pricing={"model": model} if model else None,
    )


async def ensure_accounts(app_services: Any) -> None:
    people = app_services.accounts
    for email, role, user_id in (
        (USER_EMAIL, "user", PAGE_USER),
        (ADMIN_EMAIL, "superadmin", None),
    ):
        if not await people.email_taken(email):
            await people.create(email, PASSWORD, role=role, user_id=user_id)


async def sign_in(client: httpx.AsyncClient, email: str) -> None:
    form = await client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    if token is None:
        raise SystemExit("the sign-in page carries no CSRF token")
    data = {"email": email, "password": PASSWORD, "csrf_token": token.group(1)}
    answer = await client.post("/login", data=data)
    if answer.status_code != 303:
        raise SystemExit(f"signing in as {email} failed: {answer.status_code}")


async def timed_get(client: httpx.AsyncClient, path: str) -> float:
    started = time.perf_counter()
    answer = await client.get(path)
    elapsed_ms = (time.perf_counter() - started) * 1000
    if answer.status_code != 200:
        raise SystemExit(f"GET {path}: {answer.status_code}")
    return elapsed_ms


async def measure(settings: Settings, seconds: float) -> dict[str, Any]:
    # The heap frozen at start, as the server runs the app (create_server_app): left
    # to the collector, the top-up's heap cost one page load a full collection of
    # 110-160 ms in most runs, which became the slowest page's p99.
    app = create_app(settings, freeze_heap_after_start=True)
    transport = httpx.ASGITransport(app=app)
    times: dict[str, list[float]] = {}
    first: dict[str, float] = {}
    async with app.router.lifespan_context(app):
        await ensure_accounts(app.state.services)
        base = "http://pages.bench"
        async with (
            httpx.AsyncClient(transport=transport, base_url=base) as user,
            httpx.AsyncClient(transport=transport, base_url=base) as admin,
        ):
            await sign_in(user, USER_EMAIL)
            await sign_in(admin, ADMIN_EMAIL)
            rounds = [(user, path) for path in USER_PAGES] + [(admin, p) for p in ADMIN_PAGES]
            for client, path in rounds:
                first[path] = await timed_get(client, path)
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                for client, path in rounds:
                    times.setdefault(path, []).append(await timed_get(client, path))
    return _summary(times, first, seconds)


def _summary(
    times: dict[str, list[float]], first: dict[str, float], seconds: float
) -> dict[str, Any]:
    pages = {
        path: {
            "first_ms": round(first[path], 2),
            "p50_ms": round(statistics.median(values), 2),
            "p95_ms": round(_percentile(values, 0.95), 2),
            "p99_ms": round(_percentile(values, 0.99), 2),
            "max_ms": round(max(values), 2),
            "loads": len(values),
        }
        for path, values in times.items()
    }
    loads = sum(len(v) for v in times.values())
    slowest = max(pages, key=lambda p: pages[p]["p99_ms"])
    return {
        "pages": pages,
        "page_loads": loads,
        "pages_per_s": round(loads / seconds, 1),
        "slowest_page": slowest,
        "slowest_p50_ms": max(row["p50_ms"] for row in pages.values()),
        "slowest_p99_ms": pages[slowest]["p99_ms"],
        "slowest_first_ms": max(first.values()),
        "target_ms": TARGET_MS,
    }


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


async def run(database_url: str, entries: int, seconds: float) -> dict[str, Any]:
    settings = Settings(database_url=database_url, welcome_bonus_tokens=0)
    async with TokenService(settings=settings, auto_migrate=False) as service:
        await upgrade(await service.engine())
        have = await top_up(service, entries)
        engine = await service.engine()
        if engine.dialect.name == "postgresql":
            # What autovacuum does soon after a bulk write: statistics for the planner.
            async with engine.connect() as conn:
                await conn.execute(text("ANALYZE"))
                await conn.commit()
    # The pages keep what settled entries add up to: wait until what was just written
    # has settled, as it has on a server that has been running (the first visits,
    # reported on their own, still pay for reading the whole ledger once).
    await asyncio.sleep(max(PAGES_SETTLE_SECONDS, ADMIN_SETTLE_SECONDS) + 1)
    result = await measure(settings, seconds)
    return {"entries": have, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--entries", type=int, default=ENTRIES)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--json", action="store_true", help="one JSON line, for the harness")
    args = parser.parse_args()
    result = asyncio.run(run(args.database_url, args.entries, args.seconds))
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['entries']:,} ledger entries; {result['page_loads']} page loads")
    print(f"{'page':<32} {'first':>8} {'p50':>8} {'p95':>8} {'p99':>8}  (ms)")
    for path, row in result["pages"].items():
        print(
            f"{path:<32} {row['first_ms']:>8.1f} {row['p50_ms']:>8.1f}"
            f" {row['p95_ms']:>8.1f} {row['p99_ms']:>8.1f}"
        )
    verdict = "MET" if result["slowest_p99_ms"] < TARGET_MS else "NOT MET"
    print(f"slowest p99: {result['slowest_p99_ms']} ms ({result['slowest_page']}): {verdict}")


if __name__ == "__main__":
    main()
