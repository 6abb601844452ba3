"""No API key or secret in plain text: not in the database, not in any log record at
any level, not in any answer.

A run issues keys (every scope, a revoked one, a rotated one), uses them over the
ASGI app and over a real uvicorn server on loopback, rotates and revokes again, and
makes failing calls (missing, wrong, revoked and expired keys, bad bodies, unknown
users, a key sent by mistake where an id belongs), with every logger at DEBUG (the
SQL statements and their parameters included). Then every table is dumped (and, on
SQLite, the raw database and WAL files are read) and everything is searched for every
secret: each key, its secret part after the displayable prefix, TOKENBANK_API_KEY and
TOKENBANK_JWT_SECRET. The logs are searched as records and as the lines tokenbank
writes (JSON and text, request ids included), and the answers include /metrics.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from sqlalchemy.engine import make_url

from tests.security.conftest import (
    ENV_API_KEY,
    JWT_SECRET,
    STRIPE_SECRET_KEY,
    STRIPE_WEBHOOK_SECRET,
    Secured,
    table_rows,
)
from tests.support.server import free_port
from tokenbank.apps.keys import DISPLAY_PREFIX_LENGTH, generate_key
from tokenbank.logs import TEXT_FORMAT, JsonFormatter, RequestIdFilter

# Loggers that may be silent by default: set to DEBUG explicitly, in case something
# configured them (or their propagation) before this test.
LOGGERS = (
    "",
    "tokenbank",
    "sqlalchemy",
    "sqlalchemy.engine",
    "sqlalchemy.pool",
    "sqlalchemy.dialects",
    "aiosqlite",
    "asyncpg",
    "alembic",
    "httpx",
    "httpcore",
    "fastapi",
    "starlette",
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "uvicorn.asgi",
    "asyncio",
    "stripe",
)


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=1)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def texts(self) -> list[str]:
        """Each record as every handler could render it: message, args, traceback."""
        out = []
        for record in self.records:
            parts = [record.name, str(record.msg), repr(record.args)]
            try:
                parts.append(record.getMessage())
            except Exception as error:  # a record that fails to format is still searched
                parts.append(repr(error))
            if record.exc_info:
                parts.append(logging.Formatter().formatException(record.exc_info))
            parts.append(repr(record.__dict__))
            out.append("\n".join(parts))
        return out


@pytest.fixture
def debug_logs() -> Iterator[Capture]:
    capture = Capture()
    saved = {}
    for name in LOGGERS:
        logger = logging.getLogger(name)
        saved[name] = (logger.level, logger.propagate, logger.disabled)
        logger.setLevel(1)  # below DEBUG: uvicorn's TRACE (5) too
        logger.propagate = True
        logger.disabled = False
    root = logging.getLogger()
    root.addHandler(capture)
    try:
        yield capture
    finally:
        root.removeHandler(capture)
        for name, (level, propagate, disabled) in saved.items():
            logger = logging.getLogger(name)
            logger.setLevel(level)
            logger.propagate = propagate
            logger.disabled = disabled


@pytest.fixture
def written_logs(debug_logs: Capture) -> Iterator[dict[str, io.StringIO]]:
    """The lines tokenbank's handlers write (JSON and text), of the same DEBUG run."""
    streams = {"json": io.StringIO(), "text": io.StringIO()}
    formatters = {"json": JsonFormatter(), "text": logging.Formatter(TEXT_FORMAT)}
    handlers = []
    for name, stream in streams.items():
        handler = logging.StreamHandler(stream)
        handler.setLevel(1)
        handler.setFormatter(formatters[name])
        handler.addFilter(RequestIdFilter())
        handlers.append(handler)
        logging.getLogger().addHandler(handler)
    try:
        yield streams
    finally:
        for handler in handlers:
            logging.getLogger().removeHandler(handler)


def _needles(secret: str) -> list[str]:
    """The secret, and for a key the part after what may be displayed."""
    needles = [secret]
    if secret.startswith("tb_"):
        needles.append(secret[DISPLAY_PREFIX_LENGTH:])
    return needles


def _leaks(haystacks: list[str], secrets: dict[str, str]) -> list[str]:
    found = []
    for name, secret in secrets.items():
        for needle in _needles(secret):
            for text in haystacks:
                if needle in text:
                    at = text.index(needle)
                    found.append(f"{name}: ...{text[max(0, at - 80) : at]!r}...")
                    break
    return found


class Responses:
    """Every answer the run received: status line, headers and body."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    async def __call__(self, response: httpx.Response) -> None:
        await response.aread()
        self.texts.append(f"{response.status_code} {dict(response.headers)}\n{response.text}")


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _exercise(client: httpx.AsyncClient, keys: dict[str, str]) -> None:
    """Successful and failing calls with every key, in both headers."""
    for name, key in keys.items():
        for headers in (_bearer(key), {"x-server-api-key": key}):
            await client.get("/api/ping", headers=headers)
            await client.get("/api/tokens/balance/alice", headers=headers)
            await client.post(
                "/api/tokens/deduct",
                json={"userId": "alice", "amount": 1, "referenceId": f"{name}-{len(headers)}"},
                headers=headers,
            )
            await client.post(
                "/api/token-process/start",
                json={"user_id": "alice", "feature_endpoint_id": "none"},
                headers=headers,
            )
            await client.get("/api/admin/settings", headers=headers)
    anyone = keys["all"]
    await client.get("/api/ping")  # no key
    await client.get("/api/ping", headers=_bearer(generate_key()))  # a wrong key
    await client.post("/api/tokens/deduct", content=b"{not json", headers=_bearer(anyone) | _json())
    await client.post("/api/tokens/deduct", json={"userId": "alice"}, headers=_bearer(anyone))
    await client.get("/api/tokens/balance/nobody", headers=_bearer(anyone))
    # A key sent by mistake where an id or an amount belongs is not echoed back.
    await client.post(
        "/api/tokens/deduct",
        json={"userId": "alice", "amount": anyone, "operationType": anyone},
        headers=_bearer(anyone),
    )
    await client.post("/api/token-process/end", json={"user_id": anyone}, headers=_bearer(anyone))
    # Payments call Stripe with its secret key; the webhook checks its secret.
    await client.post(
        "/api/payments/intents",
        json={"userId": "alice", "amountCents": 500},
        headers=_bearer(anyone),
    )
    await client.post(
        "/api/stripe/webhook", content=b"{}", headers={"Stripe-Signature": "t=1,v1=x"}
    )
    # A key in the wrong header, or in a malformed Authorization header.
    await client.get("/api/ping", headers={"Authorization": f"Basic {anyone}"})
    await client.get("/api/ping", headers={"Authorization": f"Bearer {anyone} extra"})
    await client.get("/openapi.json")
    await client.get("/healthz")
    await client.get("/metrics", headers=_bearer(anyone))  # what it counted of all the above


def _json() -> dict[str, str]:
    return {"Content-Type": "application/json"}


async def _serve_and_exercise(secured: Secured, keys: dict[str, str], hook: Responses) -> None:
    """The same calls through a real uvicorn (its access and TRACE logs included)."""
    port = free_port()
    config = uvicorn.Config(
        secured.app,
        host="127.0.0.1",
        port=port,
        lifespan="off",  # the fixture already started the app's services
        log_config=None,  # records go to the root logger, where the capture is
        log_level="trace",
        access_log=True,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(200):
            if server.started:
                break
            await asyncio.sleep(0.025)
        assert server.started, "uvicorn did not start"
        # This test is about what is logged, not about speed: with every statement
        # logged at DEBUG on a loaded 2-core machine, one request once took over
        # httpx's default 5 s (its PostgreSQL SELECT answered after the timeout fired).
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}",
            event_hooks={"response": [hook]},
            timeout=httpx.Timeout(60.0),
        ) as client:
            await _exercise(client, keys)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)


def _sqlite_files(url: str) -> list[bytes]:
    database = make_url(url).database
    assert database is not None
    path = Path(database)
    return [p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists()]


async def test_no_secret_in_database_logs_or_answers(
    debug_logs: Capture,
    written_logs: dict[str, io.StringIO],
    secured: Secured,
    database_url: str,
) -> None:
    services = secured.services
    await services.tokens.open_wallet("alice")
    await services.tokens.credit("alice", amount=1_000, operation_type="bonus")
    hook = Responses()
    secured.client.event_hooks["response"].append(hook)
    keys = dict(secured.keys)

    await _exercise(secured.client, keys)
    # Rotate and revoke again, then use the old and new keys.
    _, keys["second-app"] = await services.apps.create_app("second-app", scopes=["read"])
    keys["second-rotated"] = await services.apps.rotate_key(
        "second-app", old_key_expires_in_seconds=0
    )
    keys["third-app"] = (await services.apps.create_app("third-app", scopes=["spend"]))[1]
    await services.apps.revoke_keys("third-app")
    await _exercise(secured.client, keys)
    await _serve_and_exercise(secured, keys, hook)

    secrets = {f"key:{name}": key for name, key in keys.items()}
    secrets |= {"TOKENBANK_API_KEY": ENV_API_KEY, "TOKENBANK_JWT_SECRET": JWT_SECRET}
    secrets |= {
        "TOKENBANK_STRIPE_SECRET_KEY": STRIPE_SECRET_KEY,
        "TOKENBANK_STRIPE_WEBHOOK_SECRET": STRIPE_WEBHOOK_SECRET,
    }

    # The database: every row of every table; on SQLite the raw files too.
    rows = await table_rows(await secured.engine())
    dump = [repr(rows)]
    if database_url.startswith("sqlite"):
        dump += [raw.decode("latin-1") for raw in _sqlite_files(database_url)]
    assert not _leaks(dump, secrets), _leaks(dump, secrets)
    key_rows = rows["api_keys"]
    assert len(key_rows) == len({k for n, k in keys.items() if n != "env"})

    # The logs: a run at DEBUG must have logged SQL, requests and the server.
    logged = debug_logs.texts()
    names = {record.name for record in debug_logs.records}
    assert any(name.startswith("sqlalchemy.engine") for name in names), names
    assert {"uvicorn.error", "uvicorn.access", "uvicorn.asgi"} <= names, names
    assert not _leaks(logged, secrets), _leaks(logged, secrets)
    written = [stream.getvalue() for stream in written_logs.values()]
    assert not _leaks(written, secrets), _leaks(written, secrets)
    json_lines = [json.loads(line) for line in written[0].splitlines()]
    assert len(json_lines) == len(debug_logs.records)
    assert sum(line["request_id"] is not None for line in json_lines) > 100

    # The answers: every body and header.
    assert len(hook.texts) > 100
    assert sum("tokenbank_http_requests_total" in text for text in hook.texts) >= 3
    assert not _leaks(hook.texts, secrets), _leaks(hook.texts, secrets)

    # The settings never show their secrets.
    shown = [repr(secured.settings), str(secured.settings.model_dump())]
    assert not _leaks(
        shown,
        {
            "env": ENV_API_KEY,
            "jwt": JWT_SECRET,
            "stripe": STRIPE_SECRET_KEY,
            "webhook": STRIPE_WEBHOOK_SECRET,
        },
    )


def test_key_format_and_storage() -> None:
    """Keys are tb_ + 256 random bits; what is stored and shown cannot be used."""
    from tokenbank.apps.keys import display_prefix, hash_key

    key = generate_key()
    assert key.startswith("tb_") and len(key) >= 3 + 43
    assert len(hash_key(key)) == 64 and key not in hash_key(key)
    assert len(display_prefix(key)) == DISPLAY_PREFIX_LENGTH
    assert key[DISPLAY_PREFIX_LENGTH:] not in display_prefix(key)
