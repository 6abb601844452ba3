"""HS256 verification with the standard library, against tokens PyJWT mints."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt
import pytest
from typer.testing import CliRunner

from tokenbank.cli import app
from tokenbank.client import InvalidTokenError, user_id_from_jwt, verify_jwt

SECRET = "s" * 64
NOW = 1_800_000_000


def mint(claims: dict[str, Any], secret: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, secret, algorithm=algorithm)


def segment(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def test_a_valid_token_gives_its_claims() -> None:
    token = mint({"sub": "alice", "exp": NOW + 60, "nbf": NOW - 1, "email": "a@example.com"})
    claims = verify_jwt(token, SECRET, now=NOW)
    assert claims["sub"] == "alice" and claims["email"] == "a@example.com"
    assert verify_jwt(token, SECRET.encode(), now=NOW) == claims


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (mint({"sub": "alice", "exp": NOW + 60}, secret="t" * 64), "bad signature"),
        (mint({"sub": "alice", "exp": NOW - 31}), "expired"),
        (mint({"sub": "alice", "exp": NOW + 60, "nbf": NOW + 31}), "not valid yet"),
        (mint({"sub": "alice"}), "no exp"),
        (mint({"exp": NOW + 60}), "no sub"),
        (mint({"sub": "", "exp": NOW + 60}), "no sub"),
        (mint({"sub": 42, "exp": NOW + 60}), "no sub"),
        (mint({"sub": "alice", "exp": "tomorrow"}), "not a number"),
        (mint({"sub": "alice", "exp": NOW + 60}, algorithm="HS512"), "algorithm"),
        ("not-a-token", "malformed"),
        ("a.b", "malformed"),
        ("a.b.c.d", "malformed"),
        ("", "malformed"),
        ("x" * 9000, "malformed"),
    ],
)
def test_invalid_tokens_are_refused(token: str, reason: str) -> None:
    with pytest.raises(InvalidTokenError, match=reason):
        verify_jwt(token, SECRET, now=NOW)


def test_leeway_allows_small_clock_skew() -> None:
    token = mint({"sub": "alice", "exp": NOW - 10})
    assert verify_jwt(token, SECRET, now=NOW)["sub"] == "alice"
    with pytest.raises(InvalidTokenError, match="expired"):
        verify_jwt(token, SECRET, now=NOW, leeway_seconds=0)


def test_alg_none_is_refused_even_unsigned() -> None:
    header = segment({"alg": "none", "typ": "JWT"})
    payload = segment({"sub": "mallory", "exp": NOW + 60})
    with pytest.raises(InvalidTokenError, match="algorithm"):
        verify_jwt(f"{header}.{payload}.", SECRET, now=NOW)


def test_a_tampered_payload_is_refused() -> None:
    header, _, signature = mint({"sub": "alice", "exp": NOW + 60}).split(".")
    forged = segment({"sub": "admin", "exp": NOW + 60})
    with pytest.raises(InvalidTokenError, match="bad signature"):
        verify_jwt(f"{header}.{forged}.{signature}", SECRET, now=NOW)


def test_padding_or_foreign_characters_are_malformed() -> None:
    header, payload, signature = mint({"sub": "alice", "exp": NOW + 60}).split(".")
    with pytest.raises(InvalidTokenError, match="malformed"):
        verify_jwt(f"{header}.{payload}.{signature}==", SECRET, now=NOW)


def test_the_secret_defaults_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLATFORM_JWT_SECRET", SECRET)
    token = mint({"sub": "bob", "exp": int(time.time()) + 60})
    assert user_id_from_jwt(token) == "bob"
    monkeypatch.delenv("PLATFORM_JWT_SECRET")
    monkeypatch.delenv("TOKENBANK_JWT_SECRET", raising=False)
    with pytest.raises(ValueError, match="PLATFORM_JWT_SECRET"):
        user_id_from_jwt(token)


# --- `tokenbank users token` ------------------------------------------------------------------

runner = CliRunner()


def test_the_cli_mints_a_token_the_sdk_verifies() -> None:
    result = runner.invoke(
        app,
        ["users", "token", "alice", "--expires-in", "15m"],
        env={"TOKENBANK_JWT_SECRET": SECRET},
    )
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    claims = verify_jwt(token, SECRET)
    assert claims["sub"] == "alice" and claims["iss"] == "tokenbank"
    assert claims["exp"] - claims["iat"] == 900
    assert jwt.decode(token, SECRET, algorithms=["HS256"])["sub"] == "alice"


@pytest.mark.parametrize(
    ("env", "arguments", "exit_code", "message"),
    [
        ({}, [], 1, "error: no JWT secret configured: set TOKENBANK_JWT_SECRET"),
        ({"TOKENBANK_JWT_SECRET": "short"}, [], 1, "at least 32 bytes"),
        ({"TOKENBANK_JWT_SECRET": SECRET}, ["--expires-in", "soon"], 2, "duration"),
        ({"TOKENBANK_JWT_SECRET": SECRET}, ["--expires-in", "0"], 2, "more than 0"),
        ({"TOKENBANK_JWT_SECRET": SECRET}, ["--expires-in", "31d"], 2, "at most 30d"),
    ],
)
def test_the_cli_fails_with_one_clear_line(
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    arguments: list[str],
    exit_code: int,
    message: str,
) -> None:
    monkeypatch.delenv("TOKENBANK_JWT_SECRET", raising=False)
    result = runner.invoke(app, ["users", "token", "alice", *arguments], env=env)
    assert result.exit_code == exit_code
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]
