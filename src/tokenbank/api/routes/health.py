"""Liveness that tells the truth: 200 only when the database answers."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from tokenbank.api.auth import AnyKey
from tokenbank.api.direct import Direct
from tokenbank.api.responses import HealthBody, errors
from tokenbank.api.state import get_services
from tokenbank.db.engine import read_transaction

HEALTH_CHECK_TIMEOUT_SECONDS = 2.0

router = APIRouter(tags=["health"])


@router.get(
    "/healthz",
    summary="200 when the service and its database answer, else 503",
    response_model=HealthBody,
    responses={503: {"model": HealthBody, "description": "The database does not answer"}},
)
async def healthz(request: Request) -> JSONResponse:
    engine = await get_services(request).tokens.engine()
    try:
        async with asyncio.timeout(HEALTH_CHECK_TIMEOUT_SECONDS):
            # A read: on SQLite it neither takes nor waits for the write lock.
            async with read_transaction(engine) as conn:
                await conn.execute(text("SELECT 1"))
    except Exception as error:  # any failure to reach the database is "unavailable"
        body = {"status": "unavailable", "database": type(error).__name__}
        return JSONResponse(body, status_code=503)
    return JSONResponse({"status": "ok", "database": "ok"})


@router.get(
    "/api/ping",
    summary="Check an API key (answers from the key cache when it can)",
    responses=errors(401, 503),
)
async def ping(principal: AnyKey) -> dict[str, Any]:
    return {"data": {"app": principal.app_slug, "scopes": sorted(principal.scopes)}}


# Served first by tokenbank.api.direct (issue 15): the route every client's health
# check calls.
DIRECT = (Direct("GET", "/api/ping", ping),)
