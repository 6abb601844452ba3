"""The token process as one object: start, run the work, end with its usage.

The flow (the same for ``client.token_process(...)`` and ``@with_token_process``):

1. ``start``; unless the answer is ``access-able`` the work does not run and
   :class:`InsufficientTokensError` is raised (a 403 or 404 raises its own error).
2. The work runs and reports ``input_token``, ``output_token`` and ``model``.
3. ``end`` with that usage, unless both counts are zero (nothing to charge).
   In hold mode the start reserved tokens, so an end is always sent: with zero usage,
   or when the work raised, it releases the hold at once instead of at its expiry.
4. An ``end`` that fails is retried with the same ``request_id`` (the service charges
   a request id once). If it still fails, the usage is logged with everything needed
   to replay it, handed to ``on_unsettled`` if given, and the work's result is
   returned all the same: the user already has it ("don't block the result").
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from tokenbank.client._calls import derived_key
from tokenbank.client._errors import InsufficientTokensError
from tokenbank.client._models import ProcessEnd, ProcessStart

logger = logging.getLogger("tokenbank.client")

START_SUFFIX = "start"
USAGE_FIELDS = ("input_token", "output_token")


@dataclass(frozen=True, slots=True)
class UnsettledUsage:
    """Usage the service has not recorded because ``end`` failed.

    Replay it with ``client.end_token_process(**usage.replay_arguments())``: the
    request id is the one the failed end used, so a replay charges at most once.
    """

    user_id: str
    feature_endpoint_id: str
    input_token: int
    output_token: int
    model: str | None
    request_id: str
    hold_id: str | None
    error: str

    def replay_arguments(self) -> dict[str, Any]:
        arguments = asdict(self)
        del arguments["error"]
        return arguments


UnsettledHandler = Callable[[UnsettledUsage], object]


def _count(value: Any, name: str) -> int:
    if value is None:
        return 0
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a whole number >= 0, got {value!r}")
    return value


class TokenProcess:
    """One run of the token process; the body of ``token_process`` records its usage."""

    def __init__(self, user_id: str, feature_endpoint_id: str, request_id: str) -> None:
        self.user_id = user_id
        self.feature_endpoint_id = feature_endpoint_id
        self.request_id = request_id
        self.input_token = 0
        self.output_token = 0
        self.model: str | None = None
        self.started: ProcessStart | None = None
        self.ended: ProcessEnd | None = None
        self.unsettled: UnsettledUsage | None = None

    def __repr__(self) -> str:
        return (
            f"TokenProcess(user_id={self.user_id!r}, feature_endpoint_id="
            f"{self.feature_endpoint_id!r}, input_token={self.input_token},"
            f" output_token={self.output_token}, model={self.model!r})"
        )

    @property
    def start_request_id(self) -> str:
        return derived_key(self.request_id, START_SUFFIX)

    @property
    def hold_id(self) -> str | None:
        return None if self.started is None else self.started.hold_id

    def record(
        self, *, input_token: int = 0, output_token: int = 0, model: str | None = None
    ) -> None:
        """What the work used; the end charges it."""
        self.input_token = _count(input_token, "input_token")
        self.output_token = _count(output_token, "output_token")
        self.model = model or None

    def record_result(self, result: Any) -> None:
        """Read ``input_token``, ``output_token`` and ``model`` from a result: a mapping
        (the Token Process dialect's object) or anything with those attributes; missing means 0."""
        if isinstance(result, Mapping):
            values = {name: result.get(name) for name in (*USAGE_FIELDS, "model")}
        else:
            values = {name: getattr(result, name, None) for name in (*USAGE_FIELDS, "model")}
        model = values["model"]
        self.record(
            input_token=_count(values["input_token"], "input_token"),
            output_token=_count(values["output_token"], "output_token"),
            model=model if isinstance(model, str) and model else None,
        )

    @property
    def needs_end(self) -> bool:
        """No end when both counts are zero, unless a hold waits for release."""
        return self.input_token > 0 or self.output_token > 0 or self.hold_id is not None

    def end_arguments(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "feature_endpoint_id": self.feature_endpoint_id,
            "input_token": self.input_token,
            "output_token": self.output_token,
            "model": self.model,
            "request_id": self.request_id,
            "hold_id": self.hold_id,
        }

    def release_arguments(self) -> dict[str, Any]:
        """An end with no usage: releases the start's hold now, charging nothing."""
        return {**self.end_arguments(), "input_token": 0, "output_token": 0, "model": None}


def access_refused(process: TokenProcess) -> InsufficientTokensError:
    started = process.started
    available = None if started is None else started.available
    return InsufficientTokensError(
        f"Insufficient tokens for {process.feature_endpoint_id!r}: the token service answered"
        f" not-access-able (available {available})",
        402,
        available=available,
        code="not_access_able",
    )


def report_unsettled(
    process: TokenProcess, error: BaseException, on_unsettled: UnsettledHandler | None
) -> UnsettledUsage:
    """Log the usage that was not recorded, with what replays it, and hand it over."""
    usage = UnsettledUsage(**process.end_arguments(), error=f"{type(error).__name__}: {error}")
    replay = json.dumps(usage.replay_arguments(), sort_keys=True)
    logger.error(
        "token process end failed, usage not recorded (%s); replay with"
        " client.end_token_process(**%s)",
        usage.error,
        replay,
        extra={"tokenbank_unsettled_usage": usage.replay_arguments()},
    )
    if on_unsettled is not None:
        try:
            on_unsettled(usage)
        except Exception:
            logger.exception("on_unsettled raised; the usage above is still unsettled")
    process.unsettled = usage
    return usage


def log_release_failure(process: TokenProcess, error: BaseException) -> None:
    logger.warning(
        "could not release hold %s of token process %s (%s: %s); it is released when it expires",
        process.hold_id,
        process.request_id,
        type(error).__name__,
        error,
    )
