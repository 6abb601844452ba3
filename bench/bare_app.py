"""The floor of Python HTTP on this machine: an ASGI app that answers ``{}``.

`make bench` serves it with the same server (uvicorn, same worker count, no access
log, no server header) as ``tokenbank serve``, so case 1 measures uvicorn plus the
event loop and nothing of tokenbank's.
"""

from __future__ import annotations

from typing import Any

BODY = b"{}"
HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"2")]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
