"""A plain ASGI middleware that charges for routes, for apps that don't use FastAPI.

::

    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from tokenbank.client.asgi import RequireTokensMiddleware, jwt_user_id

    app = Starlette(routes=routes, middleware=[
        Middleware(RequireTokensMiddleware, costs={"POST /generate": 5}, user_id=jwt_user_id()),
    ])

or, around any ASGI app: ``app = RequireTokensMiddleware(app, costs=..., user_id=...)``.

A request whose method and path are in ``costs`` ("POST /generate", or "/generate"
for any method; exact paths) is charged before the app sees it, and refunded if the
app raises or answers 5xx. Refusals are answered in the Token Service dialect's shape (402 with
``required``, ``available`` and ``buyTokensUrl``; 401 when ``user_id`` answers
``None``). The app finds the :class:`Charge` in ``scope["state"]["token_charge"]``
(Starlette: ``request.state.token_charge``).

It needs no web framework: only the standard library and ``httpx``.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from tokenbank.client._async.client import AsyncTokenClient
from tokenbank.client._calls import new_key
from tokenbank.client._errors import InvalidTokenError, TokenServiceError
from tokenbank.client._jwt import DEFAULT_LEEWAY_SECONDS, bearer_token, verify_jwt
from tokenbank.client._models import Charge
from tokenbank.client._refusals import UNAUTHORIZED, refusal_answer

__all__ = ["RequireTokensMiddleware", "jwt_user_id"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
UserIdResolver = Callable[[Scope], str | Awaitable[str | None] | None]

STATE_KEY = "token_charge"
ANY_METHOD = "*"


def _route_costs(costs: Mapping[str, int]) -> dict[tuple[str, str], int]:
    """``{"POST /generate": 5, "/estimate": 1}`` as ``{(method, path): cost}``."""
    table: dict[tuple[str, str], int] = {}
    for route, cost in costs.items():
        method, _, path = route.strip().rpartition(" ")
        if not path.startswith("/"):
            raise ValueError(f"costs: {route!r} is not 'METHOD /path' or '/path'")
        if not isinstance(cost, int) or isinstance(cost, bool) or cost < 1:
            raise ValueError(f"costs: {route!r} must cost a whole number of tokens >= 1")
        table[(method.strip().upper() or ANY_METHOD, path)] = cost
    return table


async def _answer(send: Send, status_code: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))]
    if status_code == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status_code, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class RequireTokensMiddleware:
    """Charge the routes named in ``costs``; refund when the app fails."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        costs: Mapping[str, int],
        user_id: UserIdResolver,
        client: AsyncTokenClient | None = None,
        buy_tokens_url: str | None = None,
    ) -> None:
        self.app = app
        self._costs = _route_costs(costs)
        self._user_id = user_id
        self._client = client
        self._buy_tokens_url = buy_tokens_url

    @property
    def client(self) -> AsyncTokenClient:
        if self._client is None:
            self._client = AsyncTokenClient()
        return self._client

    def _cost(self, scope: Scope) -> int | None:
        path = scope.get("path", "")
        method = scope.get("method", "GET").upper()
        return self._costs.get((method, path), self._costs.get((ANY_METHOD, path)))

    async def _resolve_user(self, scope: Scope) -> str | None:
        user_id = self._user_id(scope)
        if inspect.isawaitable(user_id):
            user_id = await user_id
        return user_id if isinstance(user_id, str) and user_id else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        cost = self._cost(scope) if scope["type"] == "http" else None
        if cost is None:
            await self.app(scope, receive, send)
            return
        user_id = await self._resolve_user(scope)
        if user_id is None:
            await _answer(send, 401, {"error": UNAUTHORIZED})
            return
        description = f"{scope.get('method', 'GET')} {scope.get('path', '')}"
        charge = await self._charge(user_id, cost, description, send)
        if charge is not None:
            scope.setdefault("state", {})[STATE_KEY] = charge
            await self._run(charge, description, scope, receive, send)

    async def _charge(self, user_id: str, cost: int, description: str, send: Send) -> Charge | None:
        key = new_key()
        try:
            receipt = await self.client.deduct(
                user_id, cost, description=description, reference_id=key
            )
        except TokenServiceError as error:
            buy_url = self._buy_tokens_url or self.client.buy_tokens_url
            await _answer(send, *refusal_answer(error, buy_tokens_url=buy_url))
            return None
        return Charge(user_id=user_id, amount=cost, reference_id=key, receipt=receipt)

    async def _run(
        self, charge: Charge, description: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        statuses: list[int] = []

        async def watching_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                statuses.append(int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, watching_send)
        except BaseException:
            await self.client.refund_charge(charge, description=description)
            raise
        if not statuses or statuses[0] >= 500:
            await self.client.refund_charge(charge, description=description)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def jwt_user_id(
    secret: str | bytes | None = None, *, leeway_seconds: float = DEFAULT_LEEWAY_SECONDS
) -> Callable[[Scope], str | None]:
    """A ``user_id`` resolver for tokenbank-issued JWTs (``Authorization: Bearer``):
    the token's ``sub``, or ``None`` (401) when it is missing or invalid."""

    def user_id_from_token(scope: Scope) -> str | None:
        token = bearer_token(_header(scope, b"authorization"))
        if token is None:
            return None
        try:
            return str(verify_jwt(token, secret, leeway_seconds=leeway_seconds)["sub"])
        except InvalidTokenError:
            return None

    return user_id_from_token
