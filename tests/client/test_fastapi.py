"""The FastAPI integration: dependencies that charge, refuse in the Token Service
dialect's shape, refund.

The app runs in-process (httpx ASGITransport); the token service is a MockTransport
script, so each test sees exactly which calls the dependencies made.
"""

# No `from __future__ import annotations`: FastAPI reads these routes' annotations at
# runtime, and they name local variables (bank).

import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import jwt
import pytest
from fastapi import Depends, FastAPI, HTTPException, Request

from tests.client.conftest import Script, async_client, failure, ok
from tokenbank.client import AsyncReservation, AsyncTokenClient, Charge
from tokenbank.client.fastapi import Charges, TokenBank, jwt_user_id

RECEIPT = {"balance": 95, "ledgerEntryId": 3, "transactionId": "tx", "replayed": False}
HOLD_ID = "hold_" + "d" * 32
HOLD = {
    "holdId": HOLD_ID,
    "userId": "alice",
    "status": "pending",
    "amount": 50,
    "capturedAmount": None,
    "expiresAt": None,
    "balance": 100,
    "available": 50,
}
INSUFFICIENT = {
    "error": "Insufficient tokens",
    "code": "insufficient_tokens",
    "available": 2,
    "required": 5,
    "buyTokensUrl": "https://tokens.example/tokens",
}
SECRET = "k" * 48


def header_user(request: Request) -> str | None:
    return request.headers.get("x-user")


def build_app(client: AsyncTokenClient, *, install: bool = True) -> FastAPI:
    app = FastAPI()
    bank = TokenBank(app if install else None, user_id=header_user, client=client)

    @app.post("/fixed", dependencies=[bank.require_tokens(5, description="Image gen")])
    async def fixed(request: Request) -> dict[str, Any]:
        charge: Charge = request.state.token_charge
        return {"balance": charge.balance}

    @app.post("/fixed-fails")
    async def fixed_fails(charge: Annotated[Charge, bank.require_tokens(5)]) -> None:
        raise RuntimeError("generation failed")

    @app.post("/fixed-http-error")
    async def fixed_http_error(charge: Annotated[Charge, bank.require_tokens(5)]) -> None:
        raise HTTPException(400, "prompt refused")

    @app.post("/dynamic/{cost}")
    async def dynamic(
        cost: int, charges: Annotated[Charges, bank.charges()], fail: bool = False
    ) -> dict[str, Any]:
        first = await charges.deduct(cost, description="part 1")
        await charges.deduct(1, description="part 2")
        if fail:
            raise RuntimeError("generation failed")
        return {"total": charges.total, "balance": first.balance, "user": charges.user_id}

    @app.post("/reserve")
    async def reserve(
        reservation: Annotated[AsyncReservation, bank.reserve_tokens(50)],
        actual: int | None = None,
        fail: bool = False,
    ) -> dict[str, Any]:
        if fail:
            raise RuntimeError("video failed")
        if actual is not None:
            await reservation.settle(actual)
        return {"hold": reservation.hold_id}

    return app


async def call(
    app: FastAPI, path: str, *, user: str | None = "alice", headers: dict[str, str] | None = None
) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    sent = dict(headers or {})
    if user is not None:
        sent["x-user"] = user
    async with httpx.AsyncClient(transport=transport, base_url="http://app.test") as http:
        return await http.post(path, headers=sent)


@pytest.fixture
async def bank_client() -> AsyncIterator[tuple[Script, AsyncTokenClient]]:
    script = Script([ok(RECEIPT)])
    client = async_client(script)
    yield script, client
    await client.aclose()


async def test_require_tokens_deducts_before_the_handler(
    bank_client: tuple[Script, AsyncTokenClient],
) -> None:
    script, client = bank_client
    response = await call(build_app(client), "/fixed")
    assert response.status_code == 200 and response.json() == {"balance": 95}
    assert script.paths == ["/api/tokens/deduct"]
    assert script.body()["description"] == "Image gen"
    assert script.body()["userId"] == "alice" and script.body()["amount"] == 5


async def test_too_few_tokens_is_the_seed_402(bank_client: tuple[Script, AsyncTokenClient]) -> None:
    script, client = bank_client
    script.answers[:] = [failure(402, INSUFFICIENT)]
    response = await call(build_app(client), "/fixed")
    assert response.status_code == 402
    assert response.json() == {
        "error": "Insufficient tokens",
        "required": 5,
        "available": 2,
        "buyTokensUrl": "https://tokens.example/tokens",
    }


@pytest.mark.parametrize(("path", "status"), [("/fixed-fails", 500), ("/fixed-http-error", 400)])
async def test_a_handler_that_raises_is_refunded(
    bank_client: tuple[Script, AsyncTokenClient], path: str, status: int
) -> None:
    script, client = bank_client
    response = await call(build_app(client), path)
    assert response.status_code == status
    assert script.paths == ["/api/tokens/deduct", "/api/tokens/refund"]
    refund = script.body(1)
    assert refund["ledgerEntryId"] == 3 and refund["amount"] == 5
    assert refund["referenceId"] == f"{script.body(0)['referenceId']}:refund"


async def test_no_user_is_401(bank_client: tuple[Script, AsyncTokenClient]) -> None:
    script, client = bank_client
    response = await call(build_app(client), "/fixed", user=None)
    assert response.status_code == 401
    assert response.json() == {"error": "Unauthorized"}
    assert script.requests == []


@pytest.mark.parametrize(
    ("status", "body", "expected_status", "expected_error"),
    [
        (
            404,
            {"error": "User wallet not found", "code": "wallet_not_found"},
            404,
            "User wallet not found",
        ),
        (
            403,
            {"error": "Wallet is suspended", "code": "wallet_suspended"},
            403,
            "Wallet is suspended",
        ),
        (
            403,
            {"error": "API key lacks the 'spend' scope", "code": "forbidden"},
            502,
            "Token service error",
        ),
        (401, {"error": "Invalid API key", "code": "unauthorized"}, 502, "Token service error"),
        (
            503,
            {"error": "Database unavailable"},
            503,
            "Token service unavailable: try again shortly",
        ),
    ],
)
async def test_other_refusals(
    bank_client: tuple[Script, AsyncTokenClient],
    status: int,
    body: dict[str, str],
    expected_status: int,
    expected_error: str,
) -> None:
    script, client = bank_client
    script.answers[:] = [failure(status, body)]
    response = await call(build_app(client), "/fixed")
    assert (response.status_code, response.json()) == (expected_status, {"error": expected_error})


async def test_without_install_the_status_is_still_right(
    bank_client: tuple[Script, AsyncTokenClient],
) -> None:
    script, client = bank_client
    script.answers[:] = [failure(402, INSUFFICIENT)]
    response = await call(build_app(client, install=False), "/fixed")
    assert response.status_code == 402
    assert response.json()["detail"]["required"] == 5


async def test_dynamic_costs_are_charged(bank_client: tuple[Script, AsyncTokenClient]) -> None:
    script, client = bank_client
    response = await call(build_app(client), "/dynamic/12")
    assert response.json() == {"total": 13, "balance": 95, "user": "alice"}
    assert [script.body(i)["amount"] for i in range(2)] == [12, 1]


async def test_dynamic_costs_are_all_refunded_on_failure(
    bank_client: tuple[Script, AsyncTokenClient],
) -> None:
    script, client = bank_client
    response = await call(build_app(client), "/dynamic/12?fail=true")
    assert response.status_code == 500
    assert script.paths == ["/api/tokens/deduct"] * 2 + ["/api/tokens/refund"] * 2
    assert sorted(script.body(i)["amount"] for i in (2, 3)) == [1, 12]


async def test_a_second_deduct_refused_refunds_the_first(
    bank_client: tuple[Script, AsyncTokenClient],
) -> None:
    script, client = bank_client
    script.answers[:] = [ok(RECEIPT), failure(402, INSUFFICIENT), ok(RECEIPT)]
    response = await call(build_app(client), "/dynamic/12")
    assert response.status_code == 402
    assert script.paths[-1] == "/api/tokens/refund" and script.body(-1)["amount"] == 12


@pytest.mark.parametrize(
    ("query", "last_path", "last_body"),
    [
        ("?actual=20", f"/api/tokens/holds/{HOLD_ID}/capture", {"amount": 20}),
        ("", f"/api/tokens/holds/{HOLD_ID}/capture", {"amount": 50}),
        ("?fail=true", f"/api/tokens/holds/{HOLD_ID}/void", {}),
    ],
)
async def test_reserve_tokens_settles_captures_or_voids(
    bank_client: tuple[Script, AsyncTokenClient],
    query: str,
    last_path: str,
    last_body: dict[str, int],
) -> None:
    script, client = bank_client
    script.answers[:] = [ok(HOLD), ok(HOLD | {"status": "captured"})]
    await call(build_app(client), f"/reserve{query}")
    assert script.paths == ["/api/tokens/holds", last_path]
    body = script.body(1)
    body.pop("referenceId", None)
    assert body == last_body


def test_costs_must_be_whole_tokens() -> None:
    bank = TokenBank(user_id=header_user, client=AsyncTokenClient("http://x", "tb"))
    with pytest.raises(ValueError, match="cost"):
        bank.require_tokens(0)
    with pytest.raises(ValueError, match="maximum"):
        bank.reserve_tokens(-5)


# --- identity: tokenbank-issued JWTs --------------------------------------------------------


async def test_jwt_user_id(bank_client: tuple[Script, AsyncTokenClient]) -> None:
    script, client = bank_client
    app = FastAPI()
    bank = TokenBank(app, user_id=jwt_user_id(SECRET), client=client)

    @app.post("/whoami")
    async def whoami(charge: Annotated[Charge, bank.require_tokens(1)]) -> dict[str, str]:
        return {"user": charge.user_id}

    token = jwt.encode({"sub": "carol", "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    good = await call(app, "/whoami", user=None, headers={"Authorization": f"Bearer {token}"})
    assert good.json() == {"user": "carol"}
    bad = await call(app, "/whoami", user=None, headers={"Authorization": "Bearer x.y.z"})
    assert (bad.status_code, bad.json()) == (401, {"error": "Invalid or expired token"})
    assert bad.headers["www-authenticate"] == "Bearer"
    missing = await call(app, "/whoami", user=None)
    assert missing.status_code == 401
    assert len(script.requests) == 1


async def test_a_resolver_may_use_the_apps_own_dependencies(
    bank_client: tuple[Script, AsyncTokenClient],
) -> None:
    script, client = bank_client

    def session(request: Request) -> dict[str, str]:
        return {"user": request.headers.get("x-user", "")}

    def user_from_session(current: Annotated[dict[str, str], Depends(session)]) -> str:
        return current["user"]

    app = FastAPI()
    bank = TokenBank(app, user_id=user_from_session, client=client)

    @app.post("/x", dependencies=[bank.require_tokens(2)])
    async def handler() -> dict[str, bool]:
        return {"ok": True}

    assert (await call(app, "/x", user="dave")).status_code == 200
    assert script.body()["userId"] == "dave"
