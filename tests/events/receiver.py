"""A webhook receiver on loopback for the tests: a Starlette app under uvicorn, in a
thread of its own, whose routes answer 2xx, fail, time out or answer slowly.

Routes (the last path segment is a number where one is read):

- ``/ok``: 204 at once;
- ``/fail/N``: 500 for the first N tries of each event id, then 204;
- ``/hang/N``: for the first N tries of each event id, sleeps past the sender's
  timeout (then answers 204 to nobody), then 204 at once;
- ``/slow``: 204 after ``SLOW_SECONDS`` (within the timeout);
- ``/down``: always 500.

Every request is recorded with its body and headers, and with what the receiver
meant by it: ``accepted`` (a 2xx the sender read), ``refused`` or ``hung``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.server import free_port

SLOW_SECONDS = 0.3


@dataclass(frozen=True, slots=True)
class Hit:
    path: str
    event_id: str
    body: bytes
    headers: dict[str, str]
    outcome: str


@dataclass
class Receiver:
    hang_seconds: float
    hits: list[Hit] = field(default_factory=list)
    tries: Counter[tuple[str, str]] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    base_url: str = ""

    def accepted(self, path: str) -> Counter[str]:
        """How many times each event id was accepted at ``path``."""
        with self.lock:
            return Counter(
                hit.event_id for hit in self.hits if hit.path == path and hit.outcome == "accepted"
            )

    def at(self, path: str) -> list[Hit]:
        with self.lock:
            return [hit for hit in self.hits if hit.path == path]

    def _record(self, request: Request, body: bytes, outcome: str) -> None:
        hit = Hit(
            request.url.path,
            request.headers.get("webhook-id", ""),
            body,
            dict(request.headers),
            outcome,
        )
        with self.lock:
            self.hits.append(hit)

    def _try(self, request: Request) -> int:
        key = (request.url.path, request.headers.get("webhook-id", ""))
        with self.lock:
            self.tries[key] += 1
            return self.tries[key]

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        kind, _, count = request.url.path.strip("/").partition("/")
        attempt = self._try(request)
        limit = int(count) if count else 0
        if kind == "down" or (kind == "fail" and attempt <= limit):
            self._record(request, body, "refused")
            return Response(status_code=500)
        if kind == "hang" and attempt <= limit:
            self._record(request, body, "hung")
            await asyncio.sleep(self.hang_seconds)
            return Response(status_code=204)
        if kind == "slow":
            await asyncio.sleep(SLOW_SECONDS)
        self._record(request, body, "accepted")
        return Response(status_code=204)


class RunningReceiver:
    """``with RunningReceiver(hang_seconds) as receiver:`` serves until the block ends."""

    def __init__(self, hang_seconds: float = 2.0) -> None:
        self.receiver = Receiver(hang_seconds)
        routes = [Route("/{path:path}", self.receiver.handle, methods=["POST"])]
        port = free_port()
        self.receiver.base_url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(
            Starlette(routes=routes),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="off",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the test receiver did not start")
            time.sleep(0.02)
        return self.receiver

    def __exit__(self, *_: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
