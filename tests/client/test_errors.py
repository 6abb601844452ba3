"""Every answer of either dialect becomes the right exception, with its fields."""

from __future__ import annotations

import httpx
import pytest

from tests.client.conftest import Script, failure, sync_client
from tokenbank.client import (
    ConflictError,
    ForbiddenError,
    InsufficientTokensError,
    InvalidRequestError,
    NotFoundError,
    RateLimitedError,
    SpendCapExceededError,
    TokenServiceError,
    UnauthorizedError,
    UnavailableError,
    _errors,
)
from tokenbank.client._refusals import refusal_answer

DIALECT_A = [
    (400, "invalid_input", InvalidRequestError),
    (401, "unauthorized", UnauthorizedError),
    (402, "insufficient_tokens", InsufficientTokensError),
    (402, "daily_spend_cap_exceeded", SpendCapExceededError),
    (403, "wallet_suspended", ForbiddenError),
    (404, "wallet_not_found", NotFoundError),
    (409, "idempotency_conflict", ConflictError),
    (413, "payload_too_large", InvalidRequestError),
    (422, "invalid_request", InvalidRequestError),
    (429, "rate_limited", RateLimitedError),
]


@pytest.mark.parametrize(("status", "code", "error_class"), DIALECT_A)
def test_dialect_a_errors(status: int, code: str, error_class: type[Exception]) -> None:
    script = Script([failure(status, {"error": f"message {status}", "code": code})])
    with sync_client(script) as client, pytest.raises(error_class) as raised:
        client.deduct("alice", 5)
    error = raised.value
    assert type(error) is error_class
    assert isinstance(error, TokenServiceError)
    assert (error.status_code, error.code, str(error)) == (status, code, f"message {status}")
    assert error.is_insufficient_tokens == (error_class is InsufficientTokensError)
    assert len(script.requests) == 1  # a 4xx is never retried


def test_insufficient_tokens_carries_the_seed_fields() -> None:
    body = {
        "error": "Insufficient tokens",
        "code": "insufficient_tokens",
        "available": 3,
        "required": 5,
        "buyTokensUrl": "https://tokens.example/tokens",
    }
    script = Script([failure(402, body)])
    with sync_client(script) as client, pytest.raises(InsufficientTokensError) as raised:
        client.deduct("alice", 5)
    error = raised.value
    assert (error.available, error.required) == (3, 5)
    assert error.buy_tokens_url == "https://tokens.example/tokens"
    assert error.body == body
    assert repr(error) == "InsufficientTokensError('Insufficient tokens', status_code=402)"


@pytest.mark.parametrize(
    ("status", "message", "error_class"),
    [
        (401, "Invalid server API key", UnauthorizedError),
        (403, "Feature endpoint is not available in your package", ForbiddenError),
        (404, "User wallet not found", NotFoundError),
    ],
)
def test_dialect_b_errors(status: int, message: str, error_class: type[Exception]) -> None:
    body = {"success": False, "status": status, "message": message}
    script = Script([failure(status, body)])
    with sync_client(script) as client, pytest.raises(error_class, match=message) as raised:
        client.start_token_process("alice", "summarize")
    assert raised.value.status_code == status  # type: ignore[attr-defined]


@pytest.mark.parametrize("status", [502, 503, 504])
def test_gateway_failures_are_unavailable(status: int) -> None:
    script = Script([httpx.Response(status, text="<html>Bad Gateway</html>")])
    with sync_client(script) as client, pytest.raises(UnavailableError) as raised:
        client.get_balance("alice")
    assert raised.value.status_code == status
    assert "Bad Gateway" in raised.value.message
    assert len(script.requests) == 3


def test_an_empty_error_body_still_says_something() -> None:
    error = _errors.error_from_answer(500, None, "")
    assert type(error) is TokenServiceError
    assert str(error) == "Token service answered HTTP 500"


def test_the_tree_in_the_docstring_matches_the_classes() -> None:
    doc = _errors.__doc__ or ""
    for error_class in (
        InsufficientTokensError,
        UnauthorizedError,
        ForbiddenError,
        NotFoundError,
        ConflictError,
        InvalidRequestError,
        RateLimitedError,
        SpendCapExceededError,
        UnavailableError,
    ):
        assert error_class.__bases__ == (TokenServiceError,)
        assert f"── {error_class.__name__}" in doc


def test_a_rate_limited_key_hears_when_it_may_call_again() -> None:
    body = {"error": "Rate limit", "code": "rate_limited", "retryAfterSeconds": 42}
    script = Script([failure(429, body)])
    with sync_client(script) as client, pytest.raises(RateLimitedError) as raised:
        client.deduct("alice", 5)
    assert raised.value.retry_after_seconds == 42
    assert len(script.requests) == 1


def test_an_apps_user_hears_429_for_the_apps_own_limits() -> None:
    url = "https://tokens.example/tokens"
    limited = _errors.error_from_answer(429, {"code": "rate_limited"}, "")
    capped = _errors.error_from_answer(402, {"code": "daily_spend_cap_exceeded"}, "")
    poor = _errors.error_from_answer(402, {"code": "insufficient_tokens"}, "")
    assert refusal_answer(limited, buy_tokens_url=url)[0] == 429
    status, body = refusal_answer(capped, buy_tokens_url=url)
    assert status == 429 and "buyTokensUrl" not in body  # buying would not help
    assert refusal_answer(poor, buy_tokens_url=url)[0] == 402
