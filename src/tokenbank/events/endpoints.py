"""Checking what an endpoint is made of: its URL, the event types it hears, its secret."""

from __future__ import annotations

import base64
import secrets
from urllib.parse import urlsplit

from tokenbank.db.models import EVENT_TYPES
from tokenbank.errors import InvalidInput

MAX_URL_LENGTH = 2_048
MAX_DESCRIPTION_LENGTH = 500
SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
# Standard Webhooks: a secret of 24 to 64 random bytes; 32, like its reference servers.
SECRET_BYTES = 32


def new_secret() -> str:
    """A signing secret in the Standard Webhooks format: ``whsec_`` + base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def new_endpoint_id() -> str:
    return f"whep_{secrets.token_hex(12)}"


def validate_url(value: object) -> str:
    """An absolute http(s) URL with a host, as short as a column allows."""
    if not isinstance(value, str) or not value or len(value) > MAX_URL_LENGTH:
        raise InvalidInput("url", f"must be an http(s) URL of at most {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(value)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        raise InvalidInput("url", "is not a valid URL") from None
    # Spelled in lower case, as the database's CHECK reads it (urlsplit lowers it).
    scheme_ok = value.startswith(("http://", "https://"))
    if not scheme_ok or not parts.hostname or not port_ok:
        raise InvalidInput("url", "must be an absolute http:// or https:// URL")
    if any(character.isspace() for character in value):
        raise InvalidInput("url", "must not contain whitespace")
    return value


def validate_event_types(value: object) -> list[str]:
    """A non-empty list of known event types, each once, in the order given; ``*``
    alone means every type."""
    if not isinstance(value, list | tuple) or not value:
        raise InvalidInput("eventTypes", "must be a non-empty list of event types")
    if list(value) == ["*"]:
        return list(EVENT_TYPES)
    unknown = [item for item in value if item not in EVENT_TYPES]
    if unknown:
        raise InvalidInput(
            "eventTypes", f"unknown event type {unknown[0]!r}; known: {', '.join(EVENT_TYPES)}"
        )
    return list(dict.fromkeys(value))


def validate_description(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_DESCRIPTION_LENGTH:
        raise InvalidInput(
            "description", f"must be text of at most {MAX_DESCRIPTION_LENGTH} characters"
        )
    return value
