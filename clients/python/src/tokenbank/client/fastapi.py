"""FastAPI integration: charge for a route with a dependency (``requireTokens``).

::

    from fastapi import FastAPI
    from tokenbank.client.fastapi import TokenBank, jwt_user_id

    app = FastAPI()
    bank = TokenBank(app, user_id=jwt_user_id())  # or your own auth dependency

    @app.post("/generate", dependencies=[bank.require_tokens(5, description="Image gen")])
    async def generate() -> dict: ...

Three dependencies, each deducting before the handler runs and giving the tokens back
when the handler raises (any exception, ``HTTPException`` included):

- :meth:`TokenBank.require_tokens` charges a fixed cost;
- :meth:`TokenBank.charges` lets the handler charge costs it computes (dynamic costs);
- :meth:`TokenBank.reserve_tokens` holds a maximum that the handler settles for the
  actual cost (two-phase: what is not used is never taken).

The user id comes from ``user_id``, a FastAPI dependency the app supplies: its own
auth, or :func:`jwt_user_id` for tokens that tokenbank issued (option B in docs/compatibility.md).
It answers the user id, or ``None`` for 401.

Refusals are answered in the Token Service dialect's shape, e.g. 402 ``{"error":
"Insufficient tokens", "required", "available", "buyTokensUrl"}``, by exception handlers that
``TokenBank(app, ...)`` (or ``bank.install(app)``) registers. The dependencies run
with ``scope="function"``, so a refund is made before the error response is sent.

This module imports FastAPI; ``tokenbank.client`` itself does not.
"""

# No `from __future__ import annotations` here: FastAPI reads the dependencies'
# annotations at runtime, and they name closure variables.

import inspect
import logging
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, cast

import httpx
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from tokenbank.client._async.client import AsyncReservation, AsyncTokenClient
from tokenbank.client._calls import new_key
from tokenbank.client._config import USER_AGENT, resolve_connection
from tokenbank.client._errors import InvalidTokenError, TokenServiceError
from tokenbank.client._jwt import DEFAULT_LEEWAY_SECONDS, bearer_token, verify_jwt
from tokenbank.client._models import Charge
from tokenbank.client._refusals import UNAUTHORIZED, refusal_answer

__all__ = ["Charges", "TokenBank", "jwt_user_id", "session_user_id"]

logger = logging.getLogger("tokenbank.client")

INVALID_JWT = "Invalid or expired token"
# FastAPI >= 0.121 can end a yield dependency before the response is sent.
DEPENDS_HAS_SCOPE = "scope" in inspect.signature(Depends).parameters


class Refused(Exception):
    """An answer for the app's user, rendered by the handler :meth:`TokenBank.install` adds."""

    def __init__(self, status_code: int, body: dict[str, Any]) -> None:
        super().__init__(body.get("error"))
        self.status_code = status_code
        self.body = body


def _installed(request: Request) -> bool:
    return Refused in request.app.exception_handlers


def _refuse(request: Request, status_code: int, body: dict[str, Any]) -> Exception:
    """Our exception if the handler is installed; FastAPI's own (body under ``detail``)
    otherwise, so that the status is right either way."""
    if _installed(request):
        return Refused(status_code, body)
    headers = {"WWW-Authenticate": "Bearer"} if status_code == 401 else None
    return HTTPException(status_code, detail=body, headers=headers)


async def _render_refusal(request: Request, exception: Exception) -> JSONResponse:
    error = cast(Refused, exception)  # registered for Refused only
    headers = {"WWW-Authenticate": "Bearer"} if error.status_code == 401 else None
    return JSONResponse(error.body, status_code=error.status_code, headers=headers)


def _depends(dependency: Callable[..., Any]) -> Any:
    if DEPENDS_HAS_SCOPE:
        return Depends(dependency, scope="function")
    return Depends(dependency)


class Charges:
    """The costs one request charges, computed in its handler (dynamic costs).

    Every :meth:`deduct` is refunded, and every reservation not yet settled is voided,
    if the handler raises; a reservation not settled when the handler returns is
    captured in full.
    """

    def __init__(self, bank: "TokenBank", request: Request, user_id: str) -> None:
        self._bank = bank
        self._request = request
        self.user_id = user_id
        self.charges: list[Charge] = []
        self.reservations: list[AsyncReservation] = []

    @property
    def total(self) -> int:
        """Tokens deducted so far by this request (reservations not included)."""
        return sum(charge.amount for charge in self.charges)

    async def deduct(
        self,
        amount: int,
        *,
        description: str | None = None,
        operation_type: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Charge:
        """Deduct ``amount`` now: a 402 for the user when too few tokens."""
        charge = await self._bank._deduct(
            self._request,
            self.user_id,
            amount,
            description=description,
            operation_type=operation_type,
            metadata=metadata,
        )
        self.charges.append(charge)
        return charge

    async def reserve(
        self, maximum: int, *, description: str | None = None, ttl_seconds: int | None = None
    ) -> AsyncReservation:
        """Hold ``maximum`` tokens; ``await reservation.settle(actual)`` when known."""
        reservation = await self._bank._reserve(
            self._request, self.user_id, maximum, description, ttl_seconds
        )
        self.reservations.append(reservation)
        return reservation

    async def _undo(self) -> None:
        for reservation in self.reservations:
            await reservation.release()
        for charge in self.charges:
            await self._bank.client.refund_charge(charge)

    async def _finish(self) -> None:
        for reservation in self.reservations:
            await reservation.finish()


class TokenBank:
    """Token billing for one FastAPI app: dependencies, and the answers for refusals.

    ``client`` defaults to an :class:`AsyncTokenClient` made from the environment on
    first use. ``buy_tokens_url`` defaults to the one the service sends (its
    ``/tokens`` page). Call :meth:`aclose` at shutdown to close the client.
    """

    def __init__(
        self,
        app: FastAPI | None = None,
        *,
        user_id: Callable[..., Any],
        client: AsyncTokenClient | None = None,
        buy_tokens_url: str | None = None,
    ) -> None:
        self._client = client
        self._buy_tokens_url = buy_tokens_url
        self._user = Depends(_user_dependency(user_id))
        if app is not None:
            self.install(app)

    @property
    def client(self) -> AsyncTokenClient:
        if self._client is None:
            self._client = AsyncTokenClient()
        return self._client

    @property
    def buy_tokens_url(self) -> str:
        return self._buy_tokens_url or self.client.buy_tokens_url

    def install(self, app: FastAPI) -> None:
        """Register the handlers that answer refusals in the Token Service dialect's shape."""
        app.add_exception_handler(Refused, _render_refusal)
        app.add_exception_handler(TokenServiceError, self._render_service_error)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def _render_service_error(self, request: Request, exception: Exception) -> JSONResponse:
        error = cast(TokenServiceError, exception)  # registered for TokenServiceError only
        status_code, body = refusal_answer(error, buy_tokens_url=self.buy_tokens_url)
        return JSONResponse(body, status_code=status_code)

    # --- dependencies ------------------------------------------------------------------------

    def require_tokens(self, cost: int, *, description: str | None = None) -> Any:
        """A dependency that deducts ``cost`` before the handler, refunded if it raises.

        Use it in ``dependencies=[...]``, or as a parameter to get the :class:`Charge`
        (``request.state.token_charge`` holds it too).
        """
        _check_amount("cost", cost)
        bank = self

        async def charge_tokens(
            request: Request, user_id: Annotated[str, self._user]
        ) -> AsyncIterator[Charge]:
            charge = await bank._deduct(request, user_id, cost, description=description)
            request.state.token_charge = charge
            try:
                yield charge
            except BaseException:
                await bank.client.refund_charge(charge, description=description)
                raise

        return _depends(charge_tokens)

    def charges(self) -> Any:
        """A dependency giving the handler a :class:`Charges` for costs it computes."""
        bank = self

        async def request_charges(
            request: Request, user_id: Annotated[str, self._user]
        ) -> AsyncIterator[Charges]:
            charges = Charges(bank, request, user_id)
            try:
                yield charges
            except BaseException:
                await charges._undo()
                raise
            await charges._finish()

        return _depends(request_charges)

    def reserve_tokens(
        self, maximum: int, *, description: str | None = None, ttl_seconds: int | None = None
    ) -> Any:
        """A dependency that holds ``maximum`` tokens before the handler, which awaits
        ``reservation.settle(actual)``; voided if the handler raises, captured in full
        if it returns without settling."""
        _check_amount("maximum", maximum)
        bank = self

        async def reserve(
            request: Request, user_id: Annotated[str, self._user]
        ) -> AsyncIterator[AsyncReservation]:
            reservation = await bank._reserve(request, user_id, maximum, description, ttl_seconds)
            try:
                yield reservation
            except BaseException:
                await reservation.release()
                raise
            await reservation.finish()

        return _depends(reserve)

    # --- the calls, with refusals turned into answers ---------------------------------------

    async def _deduct(
        self,
        request: Request,
        user_id: str,
        amount: int,
        *,
        description: str | None = None,
        operation_type: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Charge:
        key = new_key()
        try:
            receipt = await self.client.deduct(
                user_id,
                amount,
                description=description,
                reference_id=key,
                operation_type=operation_type,
                metadata=metadata,
            )
        except TokenServiceError as error:
            raise self._refusal(request, error) from error
        return Charge(user_id=user_id, amount=amount, reference_id=key, receipt=receipt)

    async def _reserve(
        self,
        request: Request,
        user_id: str,
        maximum: int,
        description: str | None,
        ttl_seconds: int | None,
    ) -> AsyncReservation:
        key = new_key()
        try:
            hold = await self.client.hold(
                user_id, maximum, ttl_seconds=ttl_seconds, description=description, reference_id=key
            )
        except TokenServiceError as error:
            raise self._refusal(request, error) from error
        return AsyncReservation(self.client, hold, reference_id=key)

    def _refusal(self, request: Request, error: TokenServiceError) -> Exception:
        status_code, body = refusal_answer(error, buy_tokens_url=self.buy_tokens_url)
        return _refuse(request, status_code, body)


def _check_amount(name: str, amount: int) -> None:
    if not isinstance(amount, int) or isinstance(amount, bool) or amount < 1:
        raise ValueError(f"{name} must be a whole number of tokens >= 1, got {amount!r}")


def _user_dependency(resolver: Callable[..., Any]) -> Callable[..., Any]:
    """The app's resolver, with ``None`` (or anything not a user id) answered 401."""

    async def current_user_id(request: Request, user_id: Annotated[Any, Depends(resolver)]) -> str:
        if not isinstance(user_id, str) or not user_id:
            raise _refuse(request, 401, {"error": UNAUTHORIZED})
        return user_id

    return current_user_id


def jwt_user_id(
    secret: str | bytes | None = None, *, leeway_seconds: float = DEFAULT_LEEWAY_SECONDS
) -> Callable[..., str]:
    """A ``user_id`` dependency for tokenbank-issued JWTs sent as ``Authorization:
    Bearer <token>``: the token's ``sub``, or 401 ``Invalid or expired token``.

    ``secret`` defaults to ``PLATFORM_JWT_SECRET`` (or ``TOKENBANK_JWT_SECRET``), read
    when a request comes.
    """

    def user_id_from_token(request: Request) -> str:
        token = bearer_token(request.headers.get("authorization"))
        if token is None:
            raise _refuse(request, 401, {"error": UNAUTHORIZED})
        try:
            claims = verify_jwt(token, secret, leeway_seconds=leeway_seconds)
        except InvalidTokenError:
            raise _refuse(request, 401, {"error": INVALID_JWT}) from None
        return str(claims["sub"])

    return user_id_from_token


SESSION_COOKIE = "tb_session"
SESSION_TIMEOUT_SECONDS = 5.0


def session_user_id(
    base_url: str | None = None,
    api_key: str | None = None,
    *,
    cookie_name: str = SESSION_COOKIE,
) -> Callable[..., Any]:
    """A ``user_id`` dependency for option A (shared sign-in across subdomains): the
    request's tokenbank session cookie is forwarded to ``GET /api/session`` with the
    app's key; the signed-in user's id, or 401 when there is no live session.

    ``base_url`` and ``api_key`` default to ``TOKEN_SERVICE_URL`` and
    ``TOKEN_SERVICE_API_KEY``, read when a request comes.
    """

    async def user_id_from_session(request: Request) -> str:
        cookie = request.cookies.get(cookie_name)
        if not cookie:
            raise _refuse(request, 401, {"error": UNAUTHORIZED})
        connection = resolve_connection(base_url, api_key)
        headers = {
            "Authorization": f"Bearer {connection.api_key}",
            "Cookie": f"{cookie_name}={cookie}",
            "User-Agent": USER_AGENT,
        }
        async with httpx.AsyncClient(timeout=SESSION_TIMEOUT_SECONDS) as http:
            answer = await http.get(f"{connection.base_url}/api/session", headers=headers)
        user_id = answer.json().get("data", {}).get("userId") if answer.status_code == 200 else None
        if not isinstance(user_id, str) or not user_id:
            raise _refuse(request, 401, {"error": UNAUTHORIZED})
        return user_id

    return user_id_from_session
