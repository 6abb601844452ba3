"""The apps' admin routes: a key's request rate limit and daily spend cap (issue 14)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path, Request
from pydantic import Field, StrictInt

from tokenbank.api.admin import PatchModel, admin_router, given
from tokenbank.api.auth import AdminKey
from tokenbank.api.responses import WITH_BODY, errors
from tokenbank.api.state import get_services
from tokenbank.apps.service import KeyInfo
from tokenbank.config import MAX_AMOUNT_TOKENS, MAX_RATE_LIMIT_PER_MINUTE

router = admin_router()

SlugPath = Annotated[str, Path(min_length=1, max_length=64)]
KeyPrefixPath = Annotated[str, Path(alias="keyPrefix", min_length=1, max_length=16)]


class KeyLimitsUpdate(PatchModel):
    """Only the limits sent change; null removes a limit."""

    rate_limit_per_minute: (
        Annotated[StrictInt, Field(ge=1, le=MAX_RATE_LIMIT_PER_MINUTE)] | None
    ) = None
    daily_spend_cap_tokens: Annotated[StrictInt, Field(ge=1, le=MAX_AMOUNT_TOKENS)] | None = None


def key_limits_json(key: KeyInfo) -> dict[str, Any]:
    return {
        "keyPrefix": key.display_prefix,
        "scopes": list(key.scopes),
        "active": key.active,
        "rateLimitPerMinute": key.rate_limit_per_minute,
        "dailySpendCapTokens": key.daily_spend_cap_tokens,
    }


@router.patch(
    "/apps/{slug}/keys/{keyPrefix}/limits",
    summary="Set or remove a key's request rate limit and daily spend cap",
    responses=errors(WITH_BODY, 404),
)
async def set_key_limits(
    request: Request,
    slug: SlugPath,
    key_prefix: KeyPrefixPath,
    body: KeyLimitsUpdate,
    principal: AdminKey,
) -> dict[str, Any]:
    """``keyPrefix`` is the key as ``tokenbank apps list`` shows it (``tb_xxxxxxx``).
    Answers ``{"data": {keyPrefix, scopes, active, rateLimitPerMinute,
    dailySpendCapTokens}}``; other processes apply the change within 5 seconds."""
    key = await get_services(request).apps.set_key_limits(slug, key_prefix, given(body))
    return {"data": key_limits_json(key)}
