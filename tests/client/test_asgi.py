"""The plain ASGI middleware, around a Starlette app and around a bare ASGI callable."""

from __future__ import annotations

import time
from typing import Any

import httpx
import jwt
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Scope

from tests.client.conftest import Script, async_client, failure, ok
from tokenbank.client import AsyncTokenClient
from tokenbank.client.asgi import RequireTokensMiddleware, jwt_user_id

RECEIPT = {"balance": 95, "ledgerEntryId": 3, "transactionId": "tx", "replayed": False}
SECRET = "m" * 48


async def generate(request: Request) -> JSONResponse:
    charge = request.state.token_charge
    if request.query_params.get("fail") == "raise":
        raise RuntimeError("generation failed")
    if request.query_params.get("fail") == "500":
        return JSONResponse({"error": "failed"}, status_code=500)
    return JSONResponse({"balance": charge.balance, "user": charge.user_id})


async def free(request: Request) -> JSONResponse:
    return JSONResponse({"free": True})


def user_header(scope: Scope) -> str | None:
    return dict(scope["headers"]).get(b"x-user", b"").decode() or None


def starlette_app(client: AsyncTokenClient, **options: Any) -> Starlette:
    options.setdefault("user_id", user_header)
    middleware = Middleware(
        RequireTokensMiddleware, costs={"POST /generate": 5}, client=client, **options
    )
    routes = [Route("/generate", generate, methods=["POST"]), Route("/free", free)]
    return Starlette(routes=routes, middleware=[middleware])


async def call(
    app: Any, method: str, path: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://app.test") as http:
        return await http.request(method, path, headers=headers)


async def test_a_priced_route_is_charged() -> None:
    script = Script([ok(RECEIPT)])
    async with async_client(script) as client:
        response = await call(
            starlette_app(client), "POST", "/generate", headers={"x-user": "alice"}
        )
    assert response.json() == {"balance": 95, "user": "alice"}
    assert script.body() | {"referenceId": "k"} == {
        "userId": "alice",
        "amount": 5,
        "description": "POST /generate",
        "referenceId": "k",
    }


async def test_other_routes_and_methods_are_free() -> None:
    script = Script([ok(RECEIPT)])
    async with async_client(script) as client:
        app = starlette_app(client)
        assert (await call(app, "GET", "/free")).json() == {"free": True}
        assert (await call(app, "GET", "/generate", headers={"x-user": "alice"})).status_code == 405
    assert script.requests == []


async def test_too_few_tokens_is_the_seed_402() -> None:
    body = {"error": "Insufficient tokens", "available": 1, "required": 5}
    script = Script([failure(402, body)])
    async with async_client(script) as client:
        response = await call(
            starlette_app(client), "POST", "/generate", headers={"x-user": "alice"}
        )
    assert response.status_code == 402
    assert response.json() == {
        "error": "Insufficient tokens",
        "required": 5,
        "available": 1,
        "buyTokensUrl": "http://tokens.test/tokens",
    }


@pytest.mark.parametrize("fail", ["raise", "500"])
async def test_a_failing_app_is_refunded(fail: str) -> None:
    script = Script([ok(RECEIPT)])
    async with async_client(script) as client:
        response = await call(
            starlette_app(client), "POST", f"/generate?fail={fail}", headers={"x-user": "alice"}
        )
    assert response.status_code == 500
    assert script.paths == ["/api/tokens/deduct", "/api/tokens/refund"]
    assert script.body(1)["ledgerEntryId"] == 3


async def test_no_user_is_401() -> None:
    script = Script([ok(RECEIPT)])
    async with async_client(script) as client:
        response = await call(starlette_app(client), "POST", "/generate")
    assert (response.status_code, response.json()) == (401, {"error": "Unauthorized"})
    assert script.requests == []


async def test_around_a_bare_asgi_app_with_jwt_users() -> None:
    seen: list[Any] = []

    async def bare(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["state"]["token_charge"].user_id)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    script = Script([ok(RECEIPT)])
    token = jwt.encode({"sub": "erin", "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    async with async_client(script) as client:
        app = RequireTokensMiddleware(
            bare,
            costs={"/anything": 2},
            user_id=jwt_user_id(SECRET),
            client=client,
            buy_tokens_url="https://buy.example",
        )
        assert (
            await call(app, "PUT", "/anything", headers={"authorization": f"Bearer {token}"})
        ).status_code == 204
        assert (
            await call(app, "PUT", "/anything", headers={"authorization": "Bearer bad"})
        ).status_code == 401
    assert seen == ["erin"]
    assert script.body()["amount"] == 2


async def test_an_async_resolver_is_awaited() -> None:
    async def resolver(scope: Any) -> str:
        return "frank"

    script = Script([ok(RECEIPT)])
    async with async_client(script) as client:
        response = await call(starlette_app(client, user_id=resolver), "POST", "/generate")
    assert response.json()["user"] == "frank"


@pytest.mark.parametrize("costs", [{"generate": 5}, {"POST /generate": 0}, {"/x": True}])
def test_a_bad_cost_table_is_refused(costs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="costs"):
        RequireTokensMiddleware(
            Starlette(),  # never called: the cost table is refused first
            costs=costs,
            user_id=user_header,
            client=AsyncTokenClient("http://x", "tb"),
        )
