"""Request bodies shared by the routers: strict JSON, unknown fields refused.

Strict mode means ``1.5``, ``"5"`` and ``true`` are not whole tokens: they are
refused with a 422 that names the field.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    TypeAdapter,
)
from pydantic_core import PydanticCustomError

from tokenbank.config import (
    MAX_AMOUNT_TOKENS,
    MAX_DESCRIPTION_LENGTH,
    MAX_IDEMPOTENCY_KEY_LENGTH,
    MAX_OPERATION_TYPE_LENGTH,
    MAX_USER_ID_LENGTH,
)
from tokenbank.ledger.grants import MAX_GRANT_PRIORITY, MIN_GRANT_PRIORITY


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    if not value.strip():
        raise ValueError("must not be blank")
    return value


# What _no_nul enforces, for the OpenAPI document: no NUL, and not only whitespace (the
# characters str.strip() removes, spelled out: regex engines disagree on what \s is).
_SPACE = (
    r"\t\n\u000b\u000c\r\u001c-\u001f \u0085\u00a0\u1680\u2000-\u200a"
    r"\u2028\u2029\u202f\u205f\u3000"
)
TEXT_PATTERN = rf"^[^\u0000]*[^\u0000{_SPACE}][^\u0000]*$"
_TEXT_SCHEMA = {"pattern": TEXT_PATTERN}

UserId = Annotated[
    str,
    Field(min_length=1, max_length=MAX_USER_ID_LENGTH, json_schema_extra=_TEXT_SCHEMA),
    AfterValidator(_no_nul),
]
Tokens = Annotated[StrictInt, Field(ge=1, le=MAX_AMOUNT_TOKENS)]
TokensOrZero = Annotated[StrictInt, Field(ge=0, le=MAX_AMOUNT_TOKENS)]
Description = Annotated[str | None, Field(max_length=MAX_DESCRIPTION_LENGTH)]
ReferenceId = Annotated[
    str | None,
    Field(min_length=1, max_length=MAX_IDEMPOTENCY_KEY_LENGTH, json_schema_extra=_TEXT_SCHEMA),
    AfterValidator(lambda v: _no_nul(v) if v is not None else v),
]
OperationType = Annotated[
    str, Field(min_length=1, max_length=MAX_OPERATION_TYPE_LENGTH, pattern=r"^[a-z][a-z0-9_.:-]*$")
]
Metadata = dict[str, Any] | None


class ApiModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


# A user id in a URL path (``/balance/{userId}``, ``/users/{userId}/plan``).
UserIdPath = Annotated[str, Path(alias="userId", min_length=1, max_length=MAX_USER_ID_LENGTH)]
# The same rules for a direct route (tokenbank.api.direct), which FastAPI does not see.
USER_ID_PATH_RULES: TypeAdapter[str] = TypeAdapter(
    Annotated[str, Field(min_length=1, max_length=MAX_USER_ID_LENGTH)]
)


DATE_EXAMPLE = "2026-01-31T00:00:00Z"


def aware_datetime(value: object) -> object:
    """Parse a query parameter as an ISO 8601 date-time that names its timezone."""
    if not isinstance(value, str):
        return value
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise PydanticCustomError(
            "datetime_format",
            f"must be an ISO 8601 date-time with a timezone, such as {DATE_EXAMPLE}",
        ) from None
    if parsed.tzinfo is None:
        raise PydanticCustomError(
            "datetime_timezone",
            "must include a timezone (Z, or an offset such as +02:00 sent as %2B02:00),"
            f" such as {DATE_EXAMPLE}",
        )
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise PydanticCustomError("datetime_range", "is out of range") from None


# A grant's terms on a credit (decision 13, docs/architecture.md).
GrantCategory = Literal["paid", "promotional"]
GrantPriority = Annotated[StrictInt, Field(ge=MIN_GRANT_PRIORITY, le=MAX_GRANT_PRIORITY)]
ExpiresAt = Annotated[
    datetime | None,
    BeforeValidator(aware_datetime),
    Field(description=f"ISO 8601 with a timezone, e.g. {DATE_EXAMPLE}; null: never expires"),
]
EffectiveAt = Annotated[
    datetime | None,
    BeforeValidator(aware_datetime),
    Field(description="ISO 8601 with a timezone: when the grant takes effect; null or past: now"),
]
