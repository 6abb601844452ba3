"""Request bodies of the ledger's admin routes."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from tokenbank.api.admin import AdminModel
from tokenbank.api.schemas import ReferenceId, Tokens, UserId
from tokenbank.config import MAX_DESCRIPTION_LENGTH

WALLET_STATUSES = ("active", "suspended", "closed")


class UserStatusUpdate(AdminModel):
    status: Annotated[
        str, Field(min_length=1, max_length=16, json_schema_extra={"enum": list(WALLET_STATUSES)})
    ]


class CostUpdate(AdminModel):
    tokens: Tokens
    description: Annotated[str | None, Field(max_length=MAX_DESCRIPTION_LENGTH)] = None


class GrantRequest(AdminModel):
    user_id: UserId
    amount: Tokens
    reason: Annotated[str, Field(min_length=1, max_length=MAX_DESCRIPTION_LENGTH)]
    reference_id: ReferenceId = None
