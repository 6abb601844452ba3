"""The direct routes (tokenbank.api.direct) answer exactly what the FastAPI routes do.

Every request below, good and bad, is sent twice to the same app: once as served
(the direct route first), once with the direct routes taken out, so that FastAPI's
route with the same path answers. Status, body and the headers a client reads must
be the same. Successful deducts go to two wallets with the same balance (ids in
the answer are compared by kind, not value).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.api.conftest import Api
from tokenbank import metrics
from tokenbank.api.direct import DirectRoute, call_endpoint

SQLITE_ONLY = pytest.mark.parametrize("engine_name", ["sqlite"], indirect=True)
JSON = {"Content-Type": "application/json"}
KEY = "{key}"  # replaced by the app key with the scope the case names
Case = tuple[str, str, dict[str, str], bytes | None]


class Served:
    def __init__(self, app: FastAPI, client: httpx.AsyncClient, keys: dict[str, str]) -> None:
        self.app = app
        self.client = client
        self.keys = keys
        self.holds: dict[str, str] = {}  # the last hold placed for each user

    @contextmanager
    def without_direct_routes(self) -> Iterator[None]:
        routes = list(self.app.router.routes)
        self.app.router.routes[:] = [r for r in routes if not isinstance(r, DirectRoute)]
        try:
            yield
        finally:
            self.app.router.routes[:] = routes

    async def send(self, case: Case, user: str) -> dict[str, Any]:
        method, path, headers, body = case
        path = path.replace("{hold}", self.holds.get(user, "hold_unknown"))
        headers = {name: value.replace(KEY, self.keys["all"]) for name, value in headers.items()}
        headers = {
            n: v.replace("{read}", self.keys["read"]).replace("{user}", user)
            for n, v in headers.items()
        }
        content = body.replace(b"{user}", user.encode()) if body is not None else None
        answer = await self.client.request(
            method, path.replace("{user}", user), headers=headers, content=content
        )
        hold_id = answer.json().get("data", {}).get("holdId") if answer.content else None
        if hold_id and path.endswith("/holds"):
            self.holds[user] = hold_id
        text = answer.text.replace(user, "{user}")
        if user in self.holds:
            text = text.replace(self.holds[user], "{hold}")
        return {
            "status": answer.status_code,
            "body": _kinds(json.loads(text)) if text else None,
            "content-type": answer.headers.get("content-type"),
            "allow": answer.headers.get("allow"),
            "retry-after": answer.headers.get("retry-after"),
        }


def _kinds(body: Any) -> Any:
    """Ids that differ between two wallets' answers, by kind."""
    data = body.get("data") if isinstance(body, dict) else None
    if isinstance(data, dict) and "transactionId" in data:
        ids = {"ledgerEntryId": "int", "transactionId": "str"}
        return {"data": {**data, **{k: v for k, v in ids.items() if data.get(k) is not None}}}
    return body


@pytest.fixture
async def served(api: Api) -> Served:
    for user in ("twin-direct", "twin-fastapi"):
        await api.tokens.open_wallet(user)
        await api.tokens.credit(user, amount=100, operation_type="bonus")
    return Served(api.app, api.client, api.keys)


BEARER = {"Authorization": f"Bearer {KEY}"}
DEDUCT = "/api/tokens/deduct"
ONE = b'{"userId": "{user}", "amount": 1}'
HOLDS = "/api/tokens/holds"
PROCESS = "/api/token-process"
START = b'{"user_id": "{user}", "feature_endpoint_id": "none"}'
END = b'{"user_id": "{user}", "feature_endpoint_id": "none", "input_token": 1, "output_token": 1}'
KEYED = {"Idempotency-Key": "k-{user}"}
CASES: list[Case] = [
    ("GET", "/api/ping", BEARER, None),
    ("GET", "/api/ping", {"x-server-api-key": KEY}, None),
    ("GET", "/api/ping", {}, None),
    ("GET", "/api/ping", {"x-server-api-key": ""}, None),
    ("GET", "/api/ping", {"Authorization": "Bearer tb_wrong"}, None),
    ("GET", "/api/ping", {"Authorization": f"Basic {KEY}"}, None),
    ("GET", "/api/ping", {"Authorization": f"Bearer {KEY} extra"}, None),
    ("GET", "/api/ping", {"Authorization": f"bearer   {KEY}  "}, None),
    ("POST", "/api/ping", BEARER, None),
    ("GET", "/api/tokens/balance/{user}", BEARER, None),
    ("GET", "/api/tokens/balance/{user}", {"Authorization": "Bearer {read}"}, None),
    ("GET", "/api/tokens/balance/nobody", BEARER, None),
    ("GET", "/api/tokens/balance/a%20b", BEARER, None),
    ("GET", "/api/tokens/balance/" + "x" * 129, BEARER, None),
    ("GET", "/api/tokens/balance/" + "x" * 129, {}, None),
    ("GET", "/api/tokens/balance/", BEARER, None),
    ("DELETE", "/api/tokens/balance/{user}", BEARER, None),
    ("POST", DEDUCT, BEARER | JSON, b'{"userId": "{user}", "amount": 7}'),
    ("POST", DEDUCT, BEARER | JSON, b'{"userId": "{user}", "amount": 7, "referenceId": "r{user}"}'),
    ("POST", DEDUCT, BEARER | JSON, b'{"userId": "{user}", "amount": 8, "referenceId": "r{user}"}'),
    ("POST", DEDUCT, BEARER | JSON, b'{"userId": "{user}", "amount": 1000}'),
    ("POST", DEDUCT, BEARER | JSON, b'{"userId": "nobody", "amount": 1}'),
    ("POST", DEDUCT, BEARER | JSON | KEYED, ONE),
    ("POST", DEDUCT, BEARER | KEYED, ONE),
    ("POST", DEDUCT, BEARER | {"Idempotency-Key": " "}, ONE),
    (
        "POST",
        DEDUCT,
        BEARER | JSON | {"Idempotency-Key": "a"},
        b'{"userId": "{user}", "amount": 1, "referenceId": "b"}',
    ),
    ("POST", DEDUCT, BEARER | JSON, None),
    ("POST", DEDUCT, BEARER | JSON, b"{"),
    ("POST", DEDUCT, BEARER | JSON, b'{"userId": "\xff"}'),
    ("POST", DEDUCT, BEARER | JSON, b"[" * 100_000),
    ("POST", DEDUCT, BEARER | JSON, b"[]"),
    ("POST", DEDUCT, BEARER | JSON, b"null"),
    ("POST", DEDUCT, BEARER | JSON, b'{"userId": "{user}", "amount": "5"}'),
    ("POST", DEDUCT, BEARER | JSON, b'{"userId": "{user}", "amount": 5.0}'),
    ("POST", DEDUCT, BEARER | JSON, b'{"userId": "{user}", "amount": 0}'),
    ("POST", DEDUCT, BEARER | JSON, b'{"userId": "{user}", "amount": true}'),
    ("POST", DEDUCT, BEARER | JSON, b'{"userId": "{user}"}'),
    ("POST", DEDUCT, BEARER | JSON, b'{"userId": "", "amount": -1, "extra": 1}'),
    ("POST", DEDUCT, BEARER | JSON, b'{"userId": "{user}", "amount": 1, "operationType": "A"}'),
    ("POST", DEDUCT, BEARER | JSON, b'{"userId": "{user}", "amount": 1, "metadata": []}'),
    ("POST", DEDUCT, JSON, b"{"),
    ("POST", DEDUCT, {"Authorization": "Bearer {read}"} | JSON, b"{"),
    ("POST", DEDUCT, {"Authorization": "Bearer {read}"} | JSON, b'{"userId": "{user}"}'),
    ("POST", DEDUCT, BEARER | {"Content-Type": "text/plain"}, b'{"userId": "{user}"}'),
    ("GET", DEDUCT, BEARER, None),
    ("POST", HOLDS, BEARER | JSON, b'{"userId": "{user}", "amount": 5, "ttlSeconds": 60}'),
    ("POST", HOLDS, BEARER | JSON, b'{"userId": "{user}", "amount": 5, "ttlSeconds": 0}'),
    ("POST", HOLDS, BEARER | JSON, b'{"userId": "{user}", "amount": 10000}'),
    ("POST", HOLDS, {"Authorization": "Bearer {read}"} | JSON, b"{"),
    ("POST", HOLDS + "/{hold}/capture", BEARER | JSON, b'{"amount": 3}'),
    ("POST", HOLDS + "/{hold}/capture", BEARER | JSON, b'{"amount": 3}'),
    ("POST", HOLDS + "/{hold}/capture", BEARER | JSON, b'{"amount": 4}'),
    ("POST", HOLDS + "/hold_unknown/capture", BEARER | JSON, b'{"amount": 1}'),
    ("POST", HOLDS + "/hold_" + "0" * 32 + "/capture", BEARER | JSON, b'{"amount": 1}'),
    ("POST", HOLDS + "/{hold}/capture", BEARER | JSON, b'{"amount": -1}'),
    ("POST", HOLDS + "/{hold}/capture", BEARER | JSON, None),
    ("GET", HOLDS + "/{hold}/capture", BEARER, None),
    ("POST", PROCESS + "/start", {"x-server-api-key": KEY} | JSON, START),
    ("POST", PROCESS + "/start", {"x-server-api-key": "tb_wrong"} | JSON, START),
    ("POST", PROCESS + "/start", JSON, b"{"),
    ("POST", PROCESS + "/start", {"x-server-api-key": KEY} | JSON, b'{"user_id": 1}'),
    ("POST", PROCESS + "/end", {"x-server-api-key": KEY} | JSON, END),
    ("POST", PROCESS + "/end", {"x-server-api-key": KEY} | JSON, b"[]"),
    ("POST", PROCESS + "/end", {"x-server-api-key": "{read}"} | JSON, END),
]


@SQLITE_ONLY
async def test_every_case_answers_the_same_through_both_routes(served: Served) -> None:
    assert isinstance(served.app.router.routes[0], DirectRoute)
    for case in CASES:
        direct = await served.send(case, "twin-direct")
        with served.without_direct_routes():
            through_fastapi = await served.send(case, "twin-fastapi")
        assert direct == through_fastapi, case


@SQLITE_ONLY
async def test_the_direct_routes_serve_and_are_named_in_the_metrics(served: Served) -> None:
    """The answers come from the direct routes (not a fall-through), and each keeps
    its route template as the metrics label."""
    seen: list[str] = []
    for route in served.app.router.routes:
        if isinstance(route, DirectRoute):

            async def spy(_original: Any = route.direct.endpoint, **given: Any) -> Any:
                seen.append(given["request"].url.path)
                return await call_endpoint(_original, given)

            route.direct = replace(route.direct, endpoint=spy)
    for case in (CASES[0], CASES[9], CASES[17]):
        assert (await served.send(case, "twin-direct"))["status"] == 200
    balance = "/api/tokens/balance/twin-direct"
    assert seen == ["/api/ping", balance, "/api/tokens/deduct"]
    exposition = metrics.exposition().decode()
    assert 'route="/api/tokens/balance/{userId}",status="200"' in exposition


async def _refuse(scope: Any, receive: Any, send: Any) -> None:
    """An ASGI app standing in for FastAPI's whole middleware stack."""
    await send({"type": "http.response.start", "status": 418, "headers": []})
    await send({"type": "http.response.body", "body": b"the long way"})


@SQLITE_ONLY
async def test_the_direct_routes_are_served_in_front_of_fastapis_stack(served: Served) -> None:
    """A direct route's request never enters FastAPI's middleware stack; any other does."""
    app = served.app
    stack = app.middleware_stack
    app.middleware_stack = _refuse
    try:
        assert (await served.send(CASES[0], "twin-direct"))["status"] == 200
        assert (await served.send(CASES[17], "twin-direct"))["status"] == 200
        assert (await served.client.get("/healthz")).status_code == 418
        # A method the direct route does not serve takes the long way (its 405).
        assert (await served.client.post("/api/ping")).status_code == 418
        key = {"Authorization": f"Bearer {served.keys['all']}"}
        with served.without_direct_routes():
            assert (await served.client.get("/api/ping", headers=key)).status_code == 418
    finally:
        app.middleware_stack = stack


def _break_ping(app: FastAPI, error: Exception) -> None:
    async def broken(**given: Any) -> Any:
        raise error

    for route in app.router.routes:
        if isinstance(route, DirectRoute) and route.direct.path == "/api/ping":
            route.direct = replace(route.direct, endpoint=broken)


@SQLITE_ONLY
async def test_errors_in_a_direct_route_meet_the_apps_handlers(served: Served) -> None:
    """An error with a handler gets its answer, with the request id; any other error
    the server error answer (with the request id too), counted as a 500 under the
    route's name."""
    _break_ping(served.app, ConnectionRefusedError())
    key = {"Authorization": f"Bearer {served.keys['all']}"}
    answer = await served.client.get("/api/ping", headers=key)
    assert answer.status_code == 503
    assert answer.json()["code"] == "database_unavailable"
    assert answer.headers["x-request-id"]

    _break_ping(served.app, RuntimeError("a bug"))
    transport = httpx.ASGITransport(app=served.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        answer = await client.get("/api/ping", headers=key)
    assert answer.status_code == 500
    assert answer.json()["code"] == "internal_error"  # the API's error shape
    assert answer.headers["x-request-id"]  # to find it in the logs
    exposition = metrics.exposition().decode()
    assert 'method="GET",route="/api/ping",status="500"' in exposition
