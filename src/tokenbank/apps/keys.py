"""API key format: a recognisable prefix and 256 random bits (decision 12, docs/architecture.md).

Keys look like ``tb_4Yc...`` (the prefix makes a leaked key easy to find with a
secret scanner). Only the SHA-256 of a key is stored: keys are random and long, so
a fast hash is enough; there is nothing to brute-force.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

KEY_PREFIX = "tb_"
KEY_RANDOM_BYTES = 32
DISPLAY_PREFIX_LENGTH = 10
MAX_KEY_LENGTH = 200


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(KEY_RANDOM_BYTES)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def display_prefix(key: str) -> str:
    """What may be shown of a key in lists and logs: never enough to use it."""
    return key[:DISPLAY_PREFIX_LENGTH]


def keys_match(presented: str, expected: str) -> bool:
    return hmac.compare_digest(presented.encode(), expected.encode())
