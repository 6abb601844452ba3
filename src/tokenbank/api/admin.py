"""What every domain's admin routes share: the router, the request base models.

Admin routes live with their domain (``ledger/routes.py``, ``plans/routes.py``,
``pricing/routes.py``) and need a key with the ``admin`` scope. Dialect A envelopes:
``{"data": ...}``, errors ``{"error": ..., ...}``. Field names are camelCase on the
wire (``monthlyAllocationTokens``); requests may also use snake_case
(``monthly_allocation_tokens``). Decimals (profit percentages, rates, the token
multiplier) are answered as strings and accepted as strings or whole numbers, never
as floats, so that no binary rounding enters a price.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Self

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator
from pydantic.alias_generators import to_camel

from tokenbank.api.responses import AUTHENTICATED, errors

ADMIN_PREFIX = "/api/admin"

Decimalish = StrictInt | Annotated[str, Field(min_length=1, max_length=32)]


def admin_router() -> APIRouter:
    """A router for one domain's admin routes, under the shared prefix and tag."""
    return APIRouter(prefix=ADMIN_PREFIX, tags=["admin"], responses=errors(AUTHENTICATED))


class AdminModel(BaseModel):
    """camelCase on the wire, snake_case accepted; strict types; unknown fields refused."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        alias_generator=to_camel,
        validate_by_alias=True,
        validate_by_name=True,
    )


class PatchModel(AdminModel):
    """A PATCH body: only the fields sent change.

    Fields that cannot be cleared may be left out but not sent as null (the document
    says so: ``SkipJsonSchema`` keeps null out of their schema).
    """

    not_null: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="after")
    def _no_nulls(self) -> Self:
        for name in self.not_null:
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{to_camel(name)} may be left out, but not null")
        return self


def given(body: BaseModel) -> dict[str, Any]:
    """The fields a PATCH body sent (None among them clears an optional field)."""
    return {name: getattr(body, name) for name in body.model_fields_set}
