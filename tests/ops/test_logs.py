"""Logs read back: JSON lines, each with the request id the client sent or one made."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from tests.ops.conftest import Ops
from tests.support.server import free_port
from tokenbank.logs import TEXT_FORMAT, JsonFormatter, RequestIdFilter, request_id_var

MADE_ID = re.compile(r"^[0-9a-f]{32}$")


class JsonLines:
    """What a JSON handler on the root logger wrote, one object a line."""

    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines()]

    def of(self, request_id: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line["request_id"] == request_id]


# Loggers these tests turn up (and put back): the access lines and SQLAlchemy's SQL,
# which runs in the ledger, inside the request.
LOUD = ("tokenbank", "sqlalchemy.engine", "uvicorn.access", "uvicorn.error")


@pytest.fixture
def json_logs() -> Iterator[JsonLines]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    saved = {name: logging.getLogger(name).level for name in LOUD}
    for name in LOUD:
        logging.getLogger(name).setLevel(logging.INFO)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield JsonLines(stream)
    finally:
        root.removeHandler(handler)
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


async def _deduct(ops: Ops, headers: dict[str, str]) -> httpx.Response:
    return await ops.client.post(
        "/api/tokens/deduct",
        json={"userId": "alice", "amount": 1},
        headers=ops.headers() | headers,
    )


async def test_the_clients_request_id_is_echoed_and_on_every_line(
    ops: Ops, json_logs: JsonLines
) -> None:
    await ops.services.tokens.open_wallet("alice")
    await ops.services.tokens.credit("alice", amount=10, operation_type="bonus")
    answer = await _deduct(ops, {"X-Request-ID": "client-id-123"})
    assert answer.status_code == 200
    assert answer.headers["x-request-id"] == "client-id-123"

    mine = json_logs.of("client-id-123")
    loggers = {line["logger"] for line in mine}
    # The access line, and the ledger's SQL (run by the group-commit writer it started).
    assert "tokenbank.access" in loggers, loggers
    assert any(name.startswith("sqlalchemy.engine") for name in loggers), loggers
    access = next(line for line in mine if line["logger"] == "tokenbank.access")
    assert access["fields"]["route"] == "/api/tokens/deduct"
    assert access["fields"]["status"] == 200
    assert access["level"] == "info" and isinstance(access["pid"], int)
    # Outside a request, no id (the setup's own SQL above ran before it).
    assert any(line["request_id"] is None for line in json_logs.lines())
    assert request_id_var.get() is None


async def test_a_request_without_an_id_gets_a_new_one(ops: Ops, json_logs: JsonLines) -> None:
    first = await ops.client.get("/healthz")
    second = await ops.client.get("/healthz")
    made = first.headers["x-request-id"]
    assert MADE_ID.fullmatch(made)
    assert second.headers["x-request-id"] != made
    (access,) = [line for line in json_logs.of(made) if line["logger"] == "tokenbank.access"]
    assert access["fields"]["path"] == "/healthz"


@pytest.mark.parametrize(
    "sent",
    [
        "has space",
        "x" * 129,
        "<script>alert(1)</script>",
        'quote"inside',
        "new\\nline",
        "",
        "caf\u00e9",
    ],
)
async def test_an_invalid_request_id_is_replaced(ops: Ops, json_logs: JsonLines, sent: str) -> None:
    headers = [(b"X-Request-ID", sent.encode("latin-1"))]
    headers += [(name.encode(), value.encode()) for name, value in ops.headers().items()]
    answer = await ops.client.get("/api/ping", headers=headers)
    assert answer.status_code == 200
    given = answer.headers["x-request-id"]
    assert MADE_ID.fullmatch(given) and given != sent
    assert json_logs.of(given)
    assert not [line for line in json_logs.lines() if sent and sent in json.dumps(line)]


async def test_the_longest_safe_request_id_is_kept(ops: Ops) -> None:
    sent = "A-z0.9_:" * 16  # 128 characters
    answer = await ops.client.get("/healthz", headers={"X-Request-ID": sent})
    assert answer.headers["x-request-id"] == sent


@pytest.fixture
def uvicorn_access_propagates(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """uvicorn.access as a fresh process has it: an earlier test's uvicorn (started with
    uvicorn's own log config) may have given it and "uvicorn" handlers of their own and
    no propagation, which would keep its lines from the handler this module reads."""
    for name in ("uvicorn", "uvicorn.access"):  # its parent too: it may stop propagation
        logger = logging.getLogger(name)
        monkeypatch.setattr(logger, "handlers", [])
        monkeypatch.setattr(logger, "propagate", True)
        monkeypatch.setattr(logger, "disabled", False)
    access = logging.getLogger("uvicorn.access")
    level = access.level
    access.setLevel(logging.INFO)
    yield
    access.setLevel(level)


@pytest.mark.usefixtures("uvicorn_access_propagates")
async def test_uvicorns_access_lines_carry_the_request_id(ops: Ops, json_logs: JsonLines) -> None:
    """A real server: uvicorn's own access log is written inside the request, too."""
    port = free_port()
    config = uvicorn.Config(
        ops.app,
        host="127.0.0.1",
        port=port,
        lifespan="off",  # the fixture started the app's services
        log_config=None,
        access_log=True,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(200):
            if server.started:
                break
            await asyncio.sleep(0.025)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            answer = await client.get("/healthz", headers={"X-Request-ID": "over-tcp-1"})
        assert answer.headers["x-request-id"] == "over-tcp-1"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)
    loggers = {line["logger"] for line in json_logs.of("over-tcp-1")}
    assert {"uvicorn.access", "tokenbank.access"} <= loggers, loggers


def test_the_logging_config_writes_json_or_text_and_keeps_sql_quiet() -> None:
    """What `tokenbank serve` and `jobs run` install, in a process of its own."""
    script = (
        "import logging, sys\n"
        "from tokenbank.logs import configure_logging, request_id_var\n"
        "configure_logging(sys.argv[1], 'info')\n"
        "request_id_var.set('req-42')\n"
        "logging.getLogger('tokenbank.ledger').info('hello %s', 'there')\n"
        "logging.getLogger('tokenbank.ledger').debug('too detailed')\n"
        "logging.getLogger('sqlalchemy.engine.Engine').info('SELECT 1')\n"
        "try:\n"
        "    1 / 0\n"
        "except ZeroDivisionError:\n"
        "    logging.getLogger('tokenbank').exception('failed')\n"
    )

    def run(log_format: str) -> list[str]:
        done = subprocess.run(
            [sys.executable, "-c", script, log_format],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return done.stderr.splitlines()

    lines = [json.loads(line) for line in run("json") if line.startswith("{")]
    assert [line["message"] for line in lines] == ["hello there", "failed"]
    assert all(line["request_id"] == "req-42" for line in lines)
    assert "ZeroDivisionError" in lines[1]["exc"]
    text = run("text")
    assert "[req-42] hello there" in text[0] and "INFO tokenbank.ledger" in text[0]
    assert not any("SELECT 1" in line or "too detailed" in line for line in text)
    assert TEXT_FORMAT.count("%(request_id)s") == 1


@pytest.mark.parametrize(
    ("path", "shape"), [("/api/test-unexpected", "json"), ("/test-unexpected", "text")]
)
async def test_an_unexpected_error_answers_500_with_the_request_id(
    ops: Ops, json_logs: JsonLines, path: str, shape: str
) -> None:
    """The server error answer is made outside the request id's middleware; it still
    carries the id, and a line logged with it says what failed, so the answer a client
    reports can be found."""

    async def broken() -> None:
        raise RuntimeError("a bug")

    ops.app.add_api_route(path, broken)
    transport = httpx.ASGITransport(app=ops.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        answer = await client.get(path, headers={"X-Request-ID": "failed-123"})
    assert answer.status_code == 500
    assert answer.headers["x-request-id"] == "failed-123"
    if shape == "json":
        assert answer.json()["code"] == "internal_error"
    else:
        assert answer.text == "Internal Server Error"
    said = [line["message"] for line in json_logs.lines() if "failed-123" in line["message"]]
    assert said == ["unhandled RuntimeError: answered 500 (request id failed-123)"], said
