"""What the sync and async clients share: configuration, requests and answers.

Only the sending differs between :class:`TokenClient` and :class:`AsyncTokenClient`:
their retry loop over :func:`build_request` and :func:`read_answer` is written once, in
``_async/client.py``, and generated for the blocking client (``_sync/client.py``).
"""

from __future__ import annotations

import logging
from typing import Any, TypeVar

import httpx

from tokenbank.client._calls import Call
from tokenbank.client._config import USER_AGENT, resolve_connection
from tokenbank.client._errors import TokenServiceError, UnavailableError, error_from_answer
from tokenbank.client._retry import RetryPolicy

T = TypeVar("T")

logger = logging.getLogger("tokenbank.client")

IDEMPOTENCY_HEADER = "Idempotency-Key"
SERVER_API_KEY_HEADER = "x-server-api-key"


class ClientBase:
    """Where the service is, the key, and the retry policy (never logged: the key)."""

    def __init__(self, base_url: str | None, api_key: str | None, retry: RetryPolicy) -> None:
        connection = resolve_connection(base_url, api_key)
        self._base_url = connection.base_url
        self._api_key = connection.api_key
        self._retry = retry

    @property
    def base_url(self) -> str:
        return self._base_url

    @property
    def buy_tokens_url(self) -> str:
        """Where users buy tokens (the service's ``/tokens`` page)."""
        return f"{self._base_url}/tokens"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self._base_url!r})"

    def _headers(self) -> dict[str, str]:
        return {"User-Agent": USER_AGENT, "Accept": "application/json"}

    def _build_request(
        self, http: httpx.Client | httpx.AsyncClient, call: Call[Any]
    ) -> httpx.Request:
        """The one request every attempt of ``call`` sends, key and body included."""
        headers: dict[str, str] = {}
        if call.server_key_header:
            headers[SERVER_API_KEY_HEADER] = self._api_key
        else:
            headers["Authorization"] = f"Bearer {self._api_key}"
        if call.idempotency_key is not None:
            headers[IDEMPOTENCY_HEADER] = call.idempotency_key
        return http.build_request(
            call.method, call.path, json=call.body, params=call.params, headers=headers
        )

    def _log_retry(self, call: Call[Any], attempt: int, reason: str, delay: float) -> None:
        logger.warning(
            "token service %s %s failed (%s); retry %d of %d in %.2fs",
            call.method,
            call.path,
            reason,
            attempt,
            self._retry.max_attempts - 1,
            delay,
        )

    def _unreachable(self, error: httpx.TransportError) -> UnavailableError:
        return UnavailableError(
            f"Token service unreachable at {self._base_url}"
            f" after {self._retry.max_attempts} attempt(s): {type(error).__name__}"
        )

    def _transport_failed(self, error: httpx.TransportError) -> TokenServiceError:
        return TokenServiceError(
            f"Cannot call the token service at {self._base_url}: {type(error).__name__}: {error}"
        )


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def read_answer(call: Call[T], response: httpx.Response) -> T:
    """The parsed ``data`` of a 2xx answer; the matching exception otherwise."""
    body = _json(response)
    if not response.is_success:
        raise error_from_answer(response.status_code, body, response.text)
    if not isinstance(body, dict) or "data" not in body:
        raise TokenServiceError(
            "Unexpected answer from the token service: no data", response.status_code, body=body
        )
    try:
        return call.parse(body["data"])
    except ValueError as error:
        raise TokenServiceError(
            f"Unexpected answer from the token service: {error}", response.status_code, body=body
        ) from None
