"""Request limits, enforced before any route runs: JSON bodies only, bounded size.

A pure ASGI middleware (no per-request task or response wrapping), because it sits
in front of every request on the hot path.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tokenbank.api.errors import error_body

METHODS_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})
JSON_CONTENT_TYPE = b"application/json"
# The pages' forms post these; the API (under /api/) takes JSON only.
FORM_CONTENT_TYPES = frozenset({b"application/x-www-form-urlencoded", b"multipart/form-data"})


class RequestLimitsMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in METHODS_WITH_BODY:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
            await self._refuse(scope, send, 413, self._too_large())
            return
        body = await self._read_body(receive)
        if body is None:
            await self._refuse(scope, send, 413, self._too_large())
            return
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if body and not _accepted(scope["path"], content_type):
            await self._refuse(scope, send, 415, "Content-Type must be application/json")
            return
        await self.app(scope, _replay(body, receive), send)

    def _too_large(self) -> str:
        return f"Request body larger than {self.max_body_bytes} bytes"

    async def _read_body(self, receive: Receive) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"".join(chunks)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _refuse(self, scope: Scope, send: Send, status: int, message: str) -> None:
        code = "payload_too_large" if status == 413 else "unsupported_media_type"
        body = json.dumps(error_body(scope["path"], status, message, code)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _accepted(path: str, content_type: bytes) -> bool:
    if content_type == JSON_CONTENT_TYPE:
        return True
    return content_type in FORM_CONTENT_TYPES and not path.startswith("/api/")


def _replay(body: bytes, original: Receive) -> Receive:
    """Hand the buffered body to the app once; after that, listen for a disconnect."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return await original()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive
