"""What each request leaves behind: a request id, its metrics and an access line; and
``/metrics``.

A pure ASGI middleware (no per-request task, no response wrapping), outermost, so
that it times and counts every answer, the limits middleware's refusals included.
Metric children are looked up once per (method, route, status) and kept: a label
lookup takes a lock, and this runs on every deduct.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from typing import Annotated, Any

from fastapi import APIRouter, Request, Response, Security
from fastapi.security import HTTPAuthorizationCredentials
from prometheus_client.metrics import Counter
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tokenbank import metrics
from tokenbank.api.auth import bearer_scheme, check_scope, header_scheme, principal_for
from tokenbank.api.errors import ROUTABLE_METHODS
from tokenbank.api.state import get_services
from tokenbank.logs import (
    REQUEST_ID_HEADER,
    REQUEST_ID_STATE,
    accepted_request_id,
    request_id_var,
)

access_logger = logging.getLogger("tokenbank.access")

_REQUEST_ID_KEY = REQUEST_ID_HEADER.encode()
# Methods outside these are counted as "OTHER": a client cannot grow the label set.
_METHODS = frozenset(ROUTABLE_METHODS) | {"HEAD", "OPTIONS"}
POOL_REFRESH_SECONDS = 5.0


def _request_id_header(scope: Scope) -> bytes | None:
    for name, value in scope["headers"]:
        if name == _REQUEST_ID_KEY:
            value_bytes: bytes = value
            return value_bytes
    return None


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else metrics.UNMATCHED_ROUTE


class ObserveMiddleware:
    def __init__(self, app: ASGIApp, *, access_log: bool) -> None:
        self.app = app
        self.access_log = access_log
        self._counters: dict[tuple[str, str, int], Counter] = {}
        self._histograms: dict[tuple[str, str], metrics.FoldingHistogram] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = accepted_request_id(_request_id_header(scope))
        # Where the server-error answer, made outside this middleware, finds it.
        scope.setdefault("state", {})[REQUEST_ID_STATE] = request_id
        echoed = (_REQUEST_ID_KEY, request_id.encode())
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500  # what the server answers if the app fails before answering

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), echoed]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self._record(scope, status, time.perf_counter() - started)
            request_id_var.reset(token)

    def _record(self, scope: Scope, status: int, duration_seconds: float) -> None:
        method = scope["method"] if scope["method"] in _METHODS else "OTHER"
        route = _route_template(scope)
        counter = self._counters.get((method, route, status))
        if counter is None:
            counter = metrics.http_requests_total.labels(method, route, str(status))
            self._counters[(method, route, status)] = counter
        histogram = self._histograms.get((method, route))
        if histogram is None:
            histogram = metrics.http_request_duration_seconds.labels(method, route)
            self._histograms[(method, route)] = histogram
        metrics.http_tally.add(counter, histogram, duration_seconds)
        if self.access_log and access_logger.isEnabledFor(logging.INFO):
            # The path without its query string: a query may carry what must not be logged.
            access_logger.info(
                "%s %s %d",
                method,
                scope["path"],
                status,
                extra={
                    "fields": {
                        "method": method,
                        "path": scope["path"],
                        "route": route,
                        "status": status,
                        "duration_ms": round(duration_seconds * 1000, 3),
                    }
                },
            )


router = APIRouter()


@router.get(
    "/metrics",
    include_in_schema=False,  # Prometheus's text format, not part of the API
)
async def prometheus_metrics(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)],
    server_key: Annotated[str | None, Security(header_scheme)],
) -> Response:
    """Prometheus text; an admin-scope key unless TOKENBANK_METRICS_PUBLIC."""
    services = get_services(request)
    if not services.settings.metrics_public:
        presented = bearer.credentials if bearer is not None else server_key
        check_scope(await principal_for(request, presented), "admin")
    metrics.update_pool_gauges(await services.tokens.engine())
    # In multi-process mode this reads every worker's files: off the event loop.
    body = await asyncio.to_thread(metrics.exposition)
    return Response(body, media_type=metrics.CONTENT_TYPE)


async def keep_metrics_fresh(engine: AsyncEngine) -> None:
    """For the scrapes other workers answer: this process's request tallies folded in
    every second, its pool gauges read every few."""
    folds_per_pool_read = max(round(POOL_REFRESH_SECONDS / metrics.FOLD_INTERVAL_SECONDS), 1)
    try:
        for tick in itertools.count():
            if tick % folds_per_pool_read == 0:
                metrics.update_pool_gauges(engine)
            metrics.http_tally.fold()
            await asyncio.sleep(metrics.FOLD_INTERVAL_SECONDS)
    finally:
        metrics.http_tally.fold()  # the last requests of a worker that stops


async def stop(task: asyncio.Task[Any] | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
