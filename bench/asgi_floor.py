"""Python cost per request of the hot routes, in process, with no HTTP server.

The wrk cases measure a whole stack on a shared 2-core machine; this measures only
the application's own Python per request, by calling the ASGI app directly with a
prepared scope (no sockets, no uvicorn, no wrk), side by side in one process:

- the framework floors: a Starlette route and a FastAPI route answering ``{}``;
- tokenbank's ``GET /api/ping`` (auth, no database), and its balance read and
  deduct on SQLite (in a temporary directory), with the app's key; with
  ``--postgres``, on a private PostgreSQL server as well (durable, as in production).

    python -m bench.asgi_floor [--requests N] [--postgres]

Prints microseconds per request (the median of 5 rounds) for each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message

from tokenbank.api.app import create_app
from tokenbank.apps.service import AppService
from tokenbank.config import Settings
from tokenbank.db.models import API_SCOPES
from tokenbank.ledger.service import TokenService
from tokenbank.testing.postgres import PostgresServer

ROUNDS = 5
USER = "floor-user"


def _scope(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"floor.bench"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


Call = Callable[[], Awaitable[int]]


def caller(app: ASGIApp, method: str, path: str, key: str, body: bytes = b"") -> Call:
    headers = [(b"authorization", f"Bearer {key}".encode())]
    if body:
        headers += [(b"content-type", b"application/json")]
        headers += [(b"content-length", str(len(body)).encode())]

    async def call() -> int:
        status = 0

        async def receive() -> Message:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await app(_scope(method, path, headers), receive, send)
        return status

    return call


async def per_request_us(call: Call, requests: int) -> float:
    rounds = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(requests):
            status = await call()
            if status != 200:
                raise SystemExit(f"answered {status}")
        rounds.append((time.perf_counter() - started) / requests * 1e6)
    return statistics.median(rounds)


def starlette_floor() -> ASGIApp:
    async def ping(request: Request) -> JSONResponse:
        return JSONResponse({})

    return Starlette(routes=[Route("/api/ping", ping)])


def fastapi_floor() -> ASGIApp:
    app = FastAPI()

    @app.get("/api/ping")
    async def ping() -> dict[str, Any]:
        return {}

    return app


async def tokenbank_calls(database_url: str, engine_name: str, requests: int) -> dict[str, float]:
    settings = Settings(database_url=database_url, hold_sweep_interval_seconds=0)
    tokens = TokenService(settings=settings, auto_migrate=True)
    engine = await tokens.engine()
    _, key = await AppService(engine).create_app("floor", scopes=API_SCOPES)
    await tokens.open_wallet(USER)
    await tokens.credit(USER, amount=10**12, operation_type="bonus")
    app = create_app(settings, token_service=tokens)
    deduct = json.dumps({"userId": USER, "amount": 1}).encode()
    results = {}
    async with app.router.lifespan_context(app):
        for name, call in (
            ("tokenbank GET /api/ping", caller(app, "GET", "/api/ping", key)),
            (
                f"tokenbank balance ({engine_name})",
                caller(app, "GET", f"/api/tokens/balance/{USER}", key),
            ),
            (
                f"tokenbank deduct ({engine_name})",
                caller(app, "POST", "/api/tokens/deduct", key, deduct),
            ),
        ):
            await per_request_us(call, requests // 10)  # warm
            results[name] = await per_request_us(call, requests)
    await tokens.close()
    return results


async def main(requests: int, postgres: bool) -> None:
    results = {
        "Starlette route {}": await per_request_us(
            caller(starlette_floor(), "GET", "/api/ping", "-"), requests
        ),
        "FastAPI route {}": await per_request_us(
            caller(fastapi_floor(), "GET", "/api/ping", "-"), requests
        ),
    }
    with tempfile.TemporaryDirectory(prefix="tokenbank-floor-") as directory:
        url = f"sqlite+aiosqlite:///{Path(directory) / 'floor.db'}"
        results |= await tokenbank_calls(url, "SQLite", requests)
    if postgres:
        server = PostgresServer(durable=True).start()
        try:
            server.create_database("floor")
            results |= await tokenbank_calls(server.async_url("floor"), "PostgreSQL", requests)
        finally:
            server.stop()
    for name, microseconds in results.items():
        print(f"{name:32} {microseconds:8.1f} us/request")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--postgres", action="store_true", help="also on PostgreSQL")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.requests, arguments.postgres))
