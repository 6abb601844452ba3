"""Bounded retries on connection errors and 5xx, one idempotency key for all attempts."""

from __future__ import annotations

import logging

import httpx
import pytest

from tests.client.conftest import Script, async_client, failure, ok, sync_client
from tokenbank.client import (
    DEFAULT_RETRY_POLICY,
    NO_RETRIES,
    RetryPolicy,
    TokenServiceError,
    UnavailableError,
)
from tokenbank.client._retry import retry_after_seconds

RECEIPT = {"balance": 95, "ledgerEntryId": 3, "transactionId": "tx", "replayed": True}


def _keys(script: Script) -> set[tuple[str, str]]:
    return {
        (script.body(index)["referenceId"], request.headers["idempotency-key"])
        for index, request in enumerate(script.requests)
    }


def test_a_5xx_is_retried_with_the_same_key(caplog: pytest.LogCaptureFixture) -> None:
    script = Script(
        [failure(503, {"error": "Database unavailable"}), failure(500, {}), ok(RECEIPT)]
    )
    with sync_client(script) as client, caplog.at_level(logging.WARNING, "tokenbank.client"):
        receipt = client.deduct("alice", 5)
    assert receipt.replayed
    assert len(script.requests) == 3
    ((body_key, header_key),) = _keys(script)
    assert body_key == header_key
    assert [request.content for request in script.requests] == [script.requests[0].content] * 3
    assert "retry 1 of 2" in caplog.text and "HTTP 503" in caplog.text
    assert "tb_test_key" not in caplog.text


def test_connection_errors_are_retried_with_the_same_key() -> None:
    script = Script([httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), ok(RECEIPT)])
    with sync_client(script) as client:
        client.deduct("alice", 5, reference_id="job-7")
    assert _keys(script) == {("job-7", "job-7")}


def test_retries_are_bounded_then_unavailable() -> None:
    script = Script([httpx.ConnectError("refused")])
    with sync_client(script) as client, pytest.raises(UnavailableError) as raised:
        client.get_balance("alice")
    assert len(script.requests) == DEFAULT_RETRY_POLICY.max_attempts == 3
    assert raised.value.status_code is None
    assert "after 3 attempt(s): ConnectError" in str(raised.value)


def test_the_last_5xx_is_raised_with_its_status() -> None:
    script = Script([failure(500, {"error": "Internal error", "code": "internal_error"})])
    with sync_client(script) as client, pytest.raises(TokenServiceError) as raised:
        client.get_balance("alice")
    assert (raised.value.status_code, raised.value.code) == (500, "internal_error")
    assert len(script.requests) == 3


def test_no_retries_means_one_attempt() -> None:
    script = Script([failure(503, {})])
    with sync_client(script, retry=NO_RETRIES) as client, pytest.raises(UnavailableError):
        client.get_balance("alice")
    assert len(script.requests) == 1


def test_a_bad_url_is_not_retried() -> None:
    script = Script([httpx.UnsupportedProtocol("no")])
    with sync_client(script) as client, pytest.raises(TokenServiceError) as raised:
        client.get_balance("alice")
    assert not isinstance(raised.value, UnavailableError)
    assert len(script.requests) == 1


async def test_async_retries_reuse_the_key() -> None:
    script = Script([httpx.RemoteProtocolError("dropped"), failure(502, {}), ok(RECEIPT)])
    async with async_client(script) as client:
        await client.refund("alice", 5)
    assert len(script.requests) == 3
    assert len(_keys(script)) == 1


async def test_async_token_process_end_reuses_the_request_id() -> None:
    end = {"user_id": "a", "token": 1, "cost": 2, "status": "return-able"}
    script = Script([httpx.ReadTimeout("slow"), httpx.Response(200, json={"data": end})])
    async with async_client(script) as client:
        await client.end_token_process("a", "f", input_token=1, output_token=8)
    ids = {
        (script.body(i)["request_id"], r.headers["idempotency-key"])
        for i, r in enumerate(script.requests)
    }
    assert len(ids) == 1


# --- the policy -----------------------------------------------------------------------------


def test_backoff_grows_is_capped_and_jittered() -> None:
    policy = RetryPolicy(backoff_seconds=0.2, multiplier=2, max_backoff_seconds=1.0)
    for _ in range(50):
        assert 0.1 <= policy.delay_seconds(1) <= 0.2
        assert 0.2 <= policy.delay_seconds(2) <= 0.4
        assert 0.5 <= policy.delay_seconds(5) <= 1.0


def test_retry_after_is_honoured_up_to_the_cap() -> None:
    policy = RetryPolicy(backoff_seconds=0.1, max_backoff_seconds=2.0)
    assert policy.delay_seconds(1, retry_after_seconds=1.5) == 1.5
    assert policy.delay_seconds(1, retry_after_seconds=60) == 2.0
    response = httpx.Response(503, headers={"Retry-After": "3"})
    assert retry_after_seconds(response) == 3.0
    assert retry_after_seconds(httpx.Response(503, headers={"Retry-After": "soon"})) is None


@pytest.mark.parametrize(
    "options",
    [{"max_attempts": 0}, {"max_attempts": 11}, {"backoff_seconds": -1}, {"multiplier": 0.5}],
)
def test_a_bad_policy_is_refused(options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"max_attempts|backoff"):
        RetryPolicy(**options)  # type: ignore[arg-type]
