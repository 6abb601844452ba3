"""The asyncio client, :class:`AsyncTokenClient`, and its :class:`AsyncReservation`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

import httpx

from tokenbank.client import _calls as calls
from tokenbank.client._base import ClientBase, read_answer
from tokenbank.client._calls import Call, new_key
from tokenbank.client._concurrency import async_run_to_the_end, async_sleep
from tokenbank.client._config import DEFAULT_LIMITS, DEFAULT_TIMEOUT
from tokenbank.client._errors import TokenServiceError
from tokenbank.client._models import (
    Balance,
    Charge,
    Cost,
    Estimate,
    Grant,
    Hold,
    LedgerEntry,
    ProcessEnd,
    ProcessStart,
    Receipt,
    Stats,
    Wallet,
)
from tokenbank.client._process import (
    TokenProcess,
    UnsettledHandler,
    access_refused,
    log_release_failure,
    report_unsettled,
)
from tokenbank.client._retry import (
    DEFAULT_RETRY_POLICY,
    RETRYABLE_TRANSPORT_ERRORS,
    RetryPolicy,
    is_retryable_status,
    retry_after_seconds,
)
from tokenbank.client._spending import capture_arguments, log_failed_follow_up, refund_arguments

T = TypeVar("T")


class AsyncTokenClient(ClientBase):
    """The asyncio client of the token service: the Token Service dialect's calls and
    the Token Process dialect's token process.

    ``base_url`` and ``api_key`` default to ``TOKEN_SERVICE_URL`` and
    ``TOKEN_SERVICE_API_KEY`` (or the Token Process dialect's ``TOKEN_SERVER_URL`` and
    ``SERVER_API_KEY``). Use it as an async context manager, or call :meth:`aclose`.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        limits: httpx.Limits = DEFAULT_LIMITS,
        retry: RetryPolicy = DEFAULT_RETRY_POLICY,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key, retry)
        self._http = httpx.AsyncClient(
            base_url=self._base_url,
            headers=self._headers(),
            timeout=timeout,
            limits=limits,
            transport=transport,
        )

    async def __aenter__(self) -> AsyncTokenClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: Call[T]) -> T:
        request = self._build_request(self._http, call)
        attempt = 1
        while True:
            last = attempt >= self._retry.max_attempts
            try:
                response = await self._http.send(request)
            except RETRYABLE_TRANSPORT_ERRORS as error:
                if last:
                    raise self._unreachable(error) from error
                await self._pause(call, attempt, type(error).__name__, None)
            except httpx.TransportError as error:
                raise self._transport_failed(error) from error
            else:
                if last or not is_retryable_status(response.status_code):
                    return read_answer(call, response)
                reason = f"HTTP {response.status_code}"
                await self._pause(call, attempt, reason, retry_after_seconds(response))
            attempt += 1

    async def _pause(
        self, call: Call[Any], attempt: int, reason: str, retry_after: float | None
    ) -> None:
        delay = self._retry.delay_seconds(attempt, retry_after)
        self._log_retry(call, attempt, reason, delay)
        await async_sleep(delay)

    # --- the Token Service dialect -----------------------------------------------------------

    async def get_balance(self, user_id: str) -> Balance:
        """The user's balance, and ``available`` (balance minus held)."""
        return await self._send(calls.balance(user_id))

    async def deduct(
        self,
        user_id: str,
        amount: int,
        *,
        description: str | None = None,
        reference_id: str | None = None,
        operation_type: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Receipt:
        """Take ``amount`` tokens; :class:`InsufficientTokensError` (402) when too few."""
        return await self._send(
            calls.deduct(
                user_id,
                amount,
                description=description,
                reference_id=reference_id,
                operation_type=operation_type,
                metadata=metadata,
            )
        )

    async def refund(
        self,
        user_id: str,
        amount: int,
        *,
        ledger_entry_id: int | None = None,
        refund_of: str | None = None,
        description: str | None = None,
        reference_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Receipt:
        """Give tokens back, bounded by the named deduct (``ledger_entry_id`` or
        ``refund_of``, its transaction id), else by what the user has spent."""
        return await self._send(
            calls.refund(
                user_id,
                amount,
                ledger_entry_id=ledger_entry_id,
                refund_of=refund_of,
                description=description,
                reference_id=reference_id,
                metadata=metadata,
            )
        )

    async def credit(
        self,
        user_id: str,
        amount: int,
        *,
        operation_type: str | None = None,
        description: str | None = None,
        reference_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        category: str | None = None,
        priority: int | None = None,
        expires_at: datetime | None = None,
        effective_at: datetime | None = None,
    ) -> Receipt:
        """Add tokens as one grant (``operation_type``: purchase, bonus, admin_grant (the
        service's default), renewal or auto_recharge; ``category``: paid or promotional;
        ``priority``: 0-100, lower is spent first; ``expires_at``: None never expires;
        ``effective_at`` in the future schedules it: the receipt then carries
        ``scheduled_credit_id``). Needs the ``credit`` scope."""
        return await self._send(
            calls.credit(
                user_id,
                amount,
                operation_type=operation_type,
                description=description,
                reference_id=reference_id,
                metadata=metadata,
                category=category,
                priority=priority,
                expires_at=expires_at,
                effective_at=effective_at,
            )
        )

    async def get_grants(
        self, user_id: str, *, limit: int | None = None, offset: int | None = None
    ) -> list[Grant]:
        """The user's grants, newest first: paid or promotional, what remains, expiry."""
        return await self._send(calls.grants(user_id, limit=limit, offset=offset))

    async def hold(
        self,
        user_id: str,
        amount: int,
        *,
        ttl_seconds: int | None = None,
        description: str | None = None,
        reference_id: str | None = None,
        operation_type: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Hold:
        """Reserve ``amount`` tokens until captured, voided or expired."""
        return await self._send(
            calls.hold(
                user_id,
                amount,
                ttl_seconds=ttl_seconds,
                description=description,
                reference_id=reference_id,
                operation_type=operation_type,
                metadata=metadata,
            )
        )

    async def capture(
        self,
        hold_id: str,
        amount: int,
        *,
        description: str | None = None,
        reference_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Hold:
        """Settle a hold for the actual ``amount`` (0 allowed); the rest is released."""
        return await self._send(
            calls.capture(
                hold_id,
                amount,
                description=description,
                reference_id=reference_id,
                metadata=metadata,
            )
        )

    async def void(self, hold_id: str) -> Hold:
        """Release a hold without spending (voiding it again succeeds again)."""
        return await self._send(calls.void(hold_id))

    async def get_hold(self, hold_id: str) -> Hold:
        return await self._send(calls.get_hold(hold_id))

    async def get_ledger(
        self,
        user_id: str,
        *,
        limit: int | None = None,
        offset: int | None = None,
        operation_type: str | None = None,
        start_date: datetime | None = None,
        end_date: datetime | None = None,
    ) -> list[LedgerEntry]:
        """The user's ledger entries, newest first (dates inclusive, timezone-aware)."""
        return await self._send(
            calls.ledger(
                user_id,
                limit=limit,
                offset=offset,
                operation_type=operation_type,
                start_date=start_date,
                end_date=end_date,
            )
        )

    async def get_stats(
        self,
        user_id: str,
        *,
        start_date: datetime | None = None,
        end_date: datetime | None = None,
    ) -> Stats:
        return await self._send(calls.stats(user_id, start_date=start_date, end_date=end_date))

    async def get_costs(self) -> list[Cost]:
        """The service's cost table, with dollar estimates."""
        return await self._send(calls.costs())

    async def estimate(
        self,
        *,
        user_id: str | None = None,
        action: str | None = None,
        amount: int | None = None,
        feature_endpoint_id: str | None = None,
        model: str | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
    ) -> Estimate:
        """What an ``action``, an ``amount`` or a usage would cost (give one kind)."""
        return await self._send(
            calls.estimate(
                user_id=user_id,
                action=action,
                amount=amount,
                feature_endpoint_id=feature_endpoint_id,
                model=model,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
            )
        )

    async def open_wallet(self, user_id: str) -> Wallet:
        """Open the user's wallet (idempotent; needs the ``credit`` scope)."""
        return await self._send(calls.open_wallet(user_id))

    # --- the Token Process dialect -----------------------------------------------------------

    async def start_token_process(
        self,
        user_id: str,
        feature_endpoint_id: str,
        *,
        hold: bool | None = None,
        hold_tokens: int | None = None,
        request_id: str | None = None,
    ) -> ProcessStart:
        """the Token Process dialect's start: read ``.accessible`` (this call does not raise on
        ``not-access-able``; :meth:`token_process` does)."""
        return await self._send(
            calls.start_token_process(
                user_id,
                feature_endpoint_id,
                hold=hold,
                hold_tokens=hold_tokens,
                request_id=request_id,
            )
        )

    async def end_token_process(
        self,
        user_id: str,
        feature_endpoint_id: str,
        *,
        input_token: int,
        output_token: int,
        model: str | None = None,
        request_id: str | None = None,
        hold_id: str | None = None,
    ) -> ProcessEnd:
        """the Token Process dialect's end: the service prices the usage and charges it, once per
        ``request_id``."""
        return await self._send(
            calls.end_token_process(
                user_id,
                feature_endpoint_id,
                input_token=input_token,
                output_token=output_token,
                model=model,
                request_id=request_id,
                hold_id=hold_id,
            )
        )

    # --- flows ----------------------------------------------------------------------------

    @asynccontextmanager
    async def charge(
        self,
        user_id: str,
        amount: int,
        *,
        description: str | None = None,
        reference_id: str | None = None,
        operation_type: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> AsyncIterator[Charge]:
        """Deduct ``amount`` now; refund it if the body raises (dynamic costs).

        ``async with client.charge(user_id, COSTS[kind], description=...) as charge: ...``
        """
        key = reference_id or new_key()
        receipt = await self.deduct(
            user_id,
            amount,
            description=description,
            reference_id=key,
            operation_type=operation_type,
            metadata=metadata,
        )
        charge = Charge(user_id=user_id, amount=amount, reference_id=key, receipt=receipt)
        try:
            yield charge
        except BaseException:
            await self.refund_charge(charge, description=description)
            raise

    async def refund_charge(
        self, charge: Charge, *, description: str | None = None
    ) -> Receipt | None:
        """Refund a whole charge, once however often it is called; a failure is logged
        with what replays it, and answers ``None``."""
        arguments = refund_arguments(charge, description)
        try:
            return await async_run_to_the_end(self.refund(**arguments))
        except TokenServiceError as error:
            log_failed_follow_up("refund", arguments, error)
            return None

    @asynccontextmanager
    async def reserve(
        self,
        user_id: str,
        maximum: int,
        *,
        ttl_seconds: int | None = None,
        description: str | None = None,
        reference_id: str | None = None,
        operation_type: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> AsyncIterator[AsyncReservation]:
        """Hold ``maximum`` tokens; the body settles with ``reservation.settle(actual)``.

        On leaving, a reservation not settled is captured in full (the maximum is the
        price unless the body says less); if the body raises, it is voided instead.
        """
        key = reference_id or new_key()
        placed = await self.hold(
            user_id,
            maximum,
            ttl_seconds=ttl_seconds,
            description=description,
            reference_id=key,
            operation_type=operation_type,
            metadata=metadata,
        )
        reservation = AsyncReservation(self, placed, reference_id=key)
        try:
            yield reservation
        except BaseException:
            await reservation.release()
            raise
        await reservation.finish()

    @asynccontextmanager
    async def token_process(
        self,
        user_id: str,
        feature_endpoint_id: str,
        *,
        hold: bool | None = None,
        hold_tokens: int | None = None,
        request_id: str | None = None,
        on_unsettled: UnsettledHandler | None = None,
    ) -> AsyncIterator[TokenProcess]:
        """the Token Process dialect's flow around the body, which calls ``process.record(...)``.

        Raises :class:`InsufficientTokensError` before the body when the start is not
        access-able. An end that fails never raises: see :class:`UnsettledUsage`.
        """
        process = TokenProcess(user_id, feature_endpoint_id, request_id or new_key())
        process.started = await self.start_token_process(
            user_id,
            feature_endpoint_id,
            hold=hold,
            hold_tokens=hold_tokens,
            request_id=process.start_request_id,
        )
        if not process.started.accessible:
            raise access_refused(process)
        try:
            yield process
        except BaseException:
            await self._release_process(process)
            raise
        await self._end_process(process, on_unsettled)

    async def _end_process(
        self, process: TokenProcess, on_unsettled: UnsettledHandler | None
    ) -> None:
        if not process.needs_end:
            return
        try:
            process.ended = await self.end_token_process(**process.end_arguments())
        except TokenServiceError as error:
            report_unsettled(process, error, on_unsettled)

    async def _release_process(self, process: TokenProcess) -> None:
        if process.hold_id is None:
            return
        try:
            process.ended = await async_run_to_the_end(
                self.end_token_process(**process.release_arguments())
            )
        except TokenServiceError as error:
            log_release_failure(process, error)


class AsyncReservation:
    """Tokens held by :meth:`AsyncTokenClient.reserve`, to be settled for the actual cost."""

    def __init__(self, client: AsyncTokenClient, hold: Hold, *, reference_id: str) -> None:
        self._client = client
        self.hold = hold
        self.reference_id = reference_id
        self.settled: Hold | None = None

    @property
    def hold_id(self) -> str:
        return self.hold.hold_id

    @property
    def maximum(self) -> int:
        return self.hold.amount

    async def settle(self, amount: int) -> Hold:
        """Capture the actual ``amount`` (above the maximum is charged in full)."""
        if self.settled is not None:
            raise RuntimeError(f"reservation {self.hold_id} is already settled")
        self.settled = await self._client.capture(
            **capture_arguments(self.hold_id, amount, self.reference_id)
        )
        return self.settled

    async def finish(self) -> None:
        """Capture the maximum unless already settled; a failure is logged, not raised."""
        if self.settled is not None:
            return
        arguments = capture_arguments(self.hold_id, self.maximum, self.reference_id)
        try:
            self.settled = await self._client.capture(**arguments)
        except TokenServiceError as error:
            log_failed_follow_up("capture", arguments, error)

    async def release(self) -> None:
        """Void the hold unless already settled; a failure is logged, not raised."""
        if self.settled is not None:
            return
        try:
            self.settled = await async_run_to_the_end(self._client.void(self.hold_id))
        except TokenServiceError as error:
            log_failed_follow_up("void", {"hold_id": self.hold_id}, error)
