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
    TokenServiceError,
    UnauthorizedError,
    UnavailableError,
    _errors,
)

DIALECT_A = [
    (400, "invalid_input", InvalidRequestError),
    (401, "unauthorized", UnauthorizedError),
    (402, "insufficient_tokens", InsufficientTokensError),
    (403, "wallet_suspended", ForbiddenError),
    (404, "wallet_not_found", NotFoundError),
    (409, "idempotency_conflict", ConflictError),
    (413, "payload_too_large", InvalidRequestError),
    (422, "invalid_request", InvalidRequestError),
    (429, "too_many", TokenServiceError),
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
    assert error.is_insufficient_tokens == (status == 402)
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
        UnavailableError,
    ):
        assert error_class.__bases__ == (TokenServiceError,)
        assert f"── {error_class.__name__}" in doc
