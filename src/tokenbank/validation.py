"""Checks of input that every domain shares: amounts, text, user ids, metadata.

Each raises :class:`~tokenbank.errors.InvalidInput` naming the field, before any
database work, so bad input writes nothing (decision 11, docs/architecture.md).
"""

from __future__ import annotations

import json
from typing import Any

from tokenbank.config import MAX_AMOUNT_TOKENS, MAX_METADATA_BYTES, MAX_USER_ID_LENGTH
from tokenbank.errors import InvalidInput


def validate_amount(value: object, *, field_name: str = "amount", allow_zero: bool = False) -> int:
    # bool is an int in Python; a JSON true must not become one token.
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInput(field_name, "must be a whole number of tokens")
    low = 0 if allow_zero else 1
    if value < low:
        raise InvalidInput(field_name, f"must be at least {low}")
    if value > MAX_AMOUNT_TOKENS:
        raise InvalidInput(field_name, f"must be at most {MAX_AMOUNT_TOKENS}")
    return value


def validate_text(value: object, *, field_name: str, max_length: int, required: bool) -> None:
    if value is None:
        if required:
            raise InvalidInput(field_name, "is required")
        return
    if not isinstance(value, str):
        raise InvalidInput(field_name, "must be a string")
    if required and not value.strip():
        raise InvalidInput(field_name, "must not be empty")
    if len(value) > max_length:
        raise InvalidInput(field_name, f"must be at most {max_length} characters")
    if "\x00" in value:
        raise InvalidInput(field_name, "must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(field_name, "must be valid Unicode text") from None


def validate_user_id(value: object) -> None:
    validate_text(value, field_name="user_id", max_length=MAX_USER_ID_LENGTH, required=True)


def validate_metadata(value: object, *, field_name: str = "metadata") -> None:
    """A JSON object of bounded size; NaN, deep nesting and odd types are refused."""
    if value is None:
        return
    if not isinstance(value, dict):
        raise InvalidInput(field_name, "must be an object")
    try:
        encoded = json.dumps(value, allow_nan=False, default=_refuse_unserialisable)
        encoded.encode("utf-8")
    except (TypeError, ValueError, RecursionError) as error:
        reason = "nested too deeply" if isinstance(error, RecursionError) else str(error)
        raise InvalidInput(field_name, f"must be JSON-serialisable ({reason})") from None
    if len(encoded.encode()) > MAX_METADATA_BYTES:
        raise InvalidInput(field_name, f"must be at most {MAX_METADATA_BYTES} bytes as JSON")


def _refuse_unserialisable(value: object) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")
