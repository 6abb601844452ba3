"""The token process: ``@with_token_process`` (sync and async) and ``token_process``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.client.conftest import (
    Script,
    async_client,
    failure,
    process_ok,
    sync_client,
)
from tokenbank.client import (
    ForbiddenError,
    InsufficientTokensError,
    NotFoundError,
    TokenProcess,
    UnsettledUsage,
    with_token_process,
)

ACCESSIBLE = {"user_id": "alice", "token": 500, "available": 500, "status": "access-able"}
REFUSED = {"user_id": "alice", "token": 5, "available": 5, "status": "not-access-able"}
HELD = ACCESSIBLE | {"hold_id": "hold_" + "c" * 32, "available": 450}
ENDED = {"user_id": "alice", "token": 380, "cost": 120, "status": "return-able"}


class WorkFailed(Exception):
    pass


@dataclass
class Usage:
    text: str
    input_token: int
    output_token: int
    model: str | None = None


def test_sync_decorator_starts_runs_and_ends() -> None:
    script = Script([process_ok(ACCESSIBLE), process_ok(ENDED)])
    client = sync_client(script)

    @with_token_process(
        feature_endpoint_id="summarize", user_id=lambda job: job["user_id"], client=client
    )
    def summarize(job: dict[str, Any]) -> dict[str, Any]:
        """Summarize a text."""
        return {"summary": "short", "input_token": 120, "output_token": 400, "model": "gpt-4o"}

    result = summarize({"user_id": "alice", "text": "long"})
    assert result["summary"] == "short"
    assert summarize.__name__ == "summarize" and summarize.__doc__ == "Summarize a text."
    assert script.paths == ["/api/token-process/start", "/api/token-process/end"]
    start, end = script.body(0), script.body(1)
    assert start["user_id"] == "alice" and start["feature_endpoint_id"] == "summarize"
    assert end == {
        "user_id": "alice",
        "feature_endpoint_id": "summarize",
        "input_token": 120,
        "output_token": 400,
        "model": "gpt-4o",
        "request_id": end["request_id"],
    }
    assert start["request_id"] == f"{end['request_id']}:start"
    client.close()


async def test_async_decorator_reads_usage_from_attributes() -> None:
    script = Script([process_ok(ACCESSIBLE), process_ok(ENDED)])
    client = async_client(script)

    @with_token_process(feature_endpoint_id="translate", user_id="alice", client=client)
    async def translate(text: str) -> Usage:
        return Usage(text.upper(), input_token=3, output_token=8)

    result = await translate("hola")
    assert result.text == "HOLA"
    assert script.body(1)["output_token"] == 8
    assert "model" not in script.body(1)
    await client.aclose()


@pytest.mark.parametrize("result", [{"data": 1}, {"input_token": 0, "output_token": 0}, None])
def test_no_end_when_both_counts_are_zero(result: Any) -> None:
    script = Script([process_ok(ACCESSIBLE)])
    with sync_client(script) as client:
        free = with_token_process(feature_endpoint_id="public", user_id="alice", client=client)(
            lambda: result
        )
        assert free() == result
    assert script.paths == ["/api/token-process/start"]


def test_not_access_able_raises_and_never_runs_the_work() -> None:
    script = Script([process_ok(REFUSED)])
    ran: list[bool] = []
    with sync_client(script) as client:

        @with_token_process(feature_endpoint_id="summarize", user_id="alice", client=client)
        def work() -> dict[str, int]:
            ran.append(True)
            return {"output_token": 1}

        with pytest.raises(InsufficientTokensError, match="not-access-able") as refused:
            work()
    assert ran == []
    assert refused.value.available == 5 and refused.value.is_insufficient_tokens


@pytest.mark.parametrize(
    ("status", "message", "error_class"),
    [
        (403, "Feature endpoint is not available in your package", ForbiddenError),
        (404, "User wallet not found", NotFoundError),
    ],
)
def test_a_refused_start_raises_the_service_error(
    status: int, message: str, error_class: type[Exception]
) -> None:
    script = Script([failure(status, {"success": False, "status": status, "message": message})])
    with sync_client(script) as client:
        work = with_token_process(feature_endpoint_id="f", user_id="alice", client=client)(
            lambda: {"output_token": 1}
        )
        with pytest.raises(error_class, match=message):
            work()


def test_an_exception_in_the_work_propagates_without_an_end() -> None:
    script = Script([process_ok(ACCESSIBLE)])
    with sync_client(script) as client:

        @with_token_process(feature_endpoint_id="summarize", user_id="alice", client=client)
        def work() -> dict[str, int]:
            raise WorkFailed("model down")

        with pytest.raises(WorkFailed, match="model down"):
            work()
    assert script.paths == ["/api/token-process/start"]


async def test_an_exception_in_async_work_releases_the_hold() -> None:
    script = Script([process_ok(HELD), process_ok(ENDED | {"cost": 0})])
    async with async_client(script) as client:

        @with_token_process(feature_endpoint_id="held", user_id="alice", client=client)
        async def work() -> dict[str, int]:
            raise WorkFailed

        with pytest.raises(WorkFailed):
            await work()
    release = script.body(1)
    assert release["hold_id"] == HELD["hold_id"]
    assert (release["input_token"], release["output_token"]) == (0, 0)


def test_hold_mode_passes_the_hold_to_the_end() -> None:
    script = Script([process_ok(HELD), process_ok(ENDED)])
    with sync_client(script) as client:
        work = with_token_process(feature_endpoint_id="held", user_id="alice", client=client)(
            lambda: {"output_token": 400}
        )
        work()
    assert script.body(1)["hold_id"] == HELD["hold_id"]


def test_a_failing_end_is_retried_with_the_same_request_id() -> None:
    script = Script(
        [process_ok(ACCESSIBLE), httpx.ConnectError("down"), failure(503, {}), process_ok(ENDED)]
    )
    with sync_client(script) as client, client.token_process("alice", "summarize") as process:
        process.record(input_token=1, output_token=400)
    assert len(script.requests) == 4
    assert len({script.body(i)["request_id"] for i in (1, 2, 3)}) == 1
    assert process.ended is not None and process.ended.cost == 120
    assert process.unsettled is None


async def test_an_end_that_keeps_failing_is_logged_and_the_result_returned(
    caplog: pytest.LogCaptureFixture,
) -> None:
    script = Script(
        [
            process_ok(ACCESSIBLE),
            failure(503, {"success": False, "status": 503, "message": "Database unavailable"}),
        ]
    )
    unsettled: list[UnsettledUsage] = []
    async with async_client(script) as client:

        @with_token_process(
            feature_endpoint_id="summarize",
            user_id=lambda user, prompt: user,
            client=client,
            on_unsettled=unsettled.append,
        )
        async def generate(user: str, prompt: str) -> dict[str, Any]:
            return {"text": prompt, "input_token": 10, "output_token": 40, "model": "gpt-4o"}

        with caplog.at_level(logging.ERROR, "tokenbank.client"):
            result = await generate("alice", prompt="hi")
    assert result["text"] == "hi"
    (usage,) = unsettled
    assert usage.replay_arguments() == {
        "user_id": "alice",
        "feature_endpoint_id": "summarize",
        "input_token": 10,
        "output_token": 40,
        "model": "gpt-4o",
        "request_id": script.body(1)["request_id"],
        "hold_id": None,
    }
    assert "UnavailableError: Database unavailable" in usage.error
    record = next(r for r in caplog.records if hasattr(r, "tokenbank_unsettled_usage"))
    assert record.tokenbank_unsettled_usage == usage.replay_arguments()
    assert "client.end_token_process(**" in caplog.text


def test_a_failing_on_unsettled_hook_does_not_block_the_result(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(usage: UnsettledUsage) -> None:
        raise RuntimeError("queue full")

    script = Script([process_ok(ACCESSIBLE), httpx.ConnectError("down")])
    with sync_client(script) as client:
        work = with_token_process(
            feature_endpoint_id="f", user_id="alice", client=client, on_unsettled=broken
        )(lambda: {"output_token": 4})
        assert work() == {"output_token": 4}
    assert "on_unsettled raised" in caplog.text


def test_the_context_manager_form() -> None:
    script = Script([process_ok(ACCESSIBLE), process_ok(ENDED)])
    with (
        sync_client(script) as client,
        client.token_process("alice", "summarize", request_id="job-9") as process,
    ):
        assert isinstance(process, TokenProcess)
        assert process.started is not None and process.started.token == 500
        process.record(input_token=120, output_token=400, model="gpt-4o")
    assert script.body(0)["request_id"] == "job-9:start"
    assert script.body(1)["request_id"] == "job-9"
    assert process.ended is not None and process.ended.token == 380


@pytest.mark.parametrize("bad", [-1, 1.5, "12", True])
def test_bad_usage_is_refused(bad: Any) -> None:
    process = TokenProcess("alice", "f", "r")
    with pytest.raises(ValueError, match="whole number"):
        process.record_result({"output_token": bad})


def test_a_client_of_the_wrong_kind_is_refused_at_decoration() -> None:
    script = Script([process_ok(ACCESSIBLE)])
    with sync_client(script) as client, pytest.raises(TypeError, match="AsyncTokenClient"):

        @with_token_process(feature_endpoint_id="f", user_id="a", client=client)
        async def work() -> None: ...


def test_a_user_id_that_is_not_a_string_is_refused() -> None:
    script = Script([process_ok(ACCESSIBLE)])
    with sync_client(script) as client:
        work: Callable[[], dict[str, Any]] = with_token_process(
            feature_endpoint_id="f",
            user_id=lambda: None,  # type: ignore[arg-type, return-value]
            client=client,
        )(lambda: {})
        with pytest.raises(ValueError, match="user_id"):
            work()
    assert script.requests == []


def test_without_a_client_one_is_made_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TOKEN_SERVICE_URL", raising=False)
    monkeypatch.delenv("TOKEN_SERVER_URL", raising=False)
    work: Callable[[], dict[str, Any]] = with_token_process(
        feature_endpoint_id="f", user_id="alice"
    )(lambda: {})
    with pytest.raises(ValueError, match="TOKEN_SERVICE_URL"):
        work()
