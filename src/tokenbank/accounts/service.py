"""AccountService: accounts, sign-in with slowing and locking, sessions, the audit log.

Sessions: the cookie carries a random token; the database keeps only its SHA-256, so
reading the table gives no session away. Every sign-in starts a new session (a token
planted before sign-in is never the one signed in: no session fixation). Failed
sign-ins are counted per email, known or not (so the counting tells nothing), slowed
after a few and locked for a while after more (decision 17).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from tokenbank.accounts import passwords
from tokenbank.accounts import repository as repo
from tokenbank.accounts.errors import AccountExists, AccountNotFound, SignInRefused
from tokenbank.clock import Clock
from tokenbank.config import Settings
from tokenbank.db.engine import read_transaction, write_transaction
from tokenbank.db.models import ACCOUNT_ROLES
from tokenbank.db.rows import AnyRow
from tokenbank.errors import InvalidInput
from tokenbank.validation import validate_user_id

EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
MAX_EMAIL_LENGTH = 254
MAX_SLOWDOWN_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class AccountView:
    id: int
    email: str
    role: str
    user_id: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class SignedIn:
    """The person behind a live session."""

    account_id: int
    email: str
    role: str
    user_id: str | None
    csrf_token: str
    expires_at: datetime

    @property
    def roles(self) -> tuple[str, ...]:
        return (self.role,)

    @property
    def is_admin(self) -> bool:
        return self.role in ("admin", "superadmin")

    @property
    def is_superadmin(self) -> bool:
        return self.role == "superadmin"


@dataclass(frozen=True, slots=True)
class NewSession:
    token: str  # for the cookie, never stored
    signed_in: SignedIn


def normalize_email(value: object) -> str:
    if not isinstance(value, str):
        raise InvalidInput("email", "an email address")
    email = value.strip().lower()
    if len(email) > MAX_EMAIL_LENGTH or not EMAIL.match(email):
        raise InvalidInput("email", "an email address")
    return email


def validate_role(role: object) -> str:
    if role not in ACCOUNT_ROLES:
        raise InvalidInput("role", f"one of {', '.join(ACCOUNT_ROLES)}")
    return str(role)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _view(row: AnyRow) -> AccountView:
    return AccountView(row.id, row.email, row.role, row.user_id, row.created_at)


class AccountService:
    def __init__(self, engine: AsyncEngine, *, settings: Settings, clock: Clock) -> None:
        self._engine = engine
        self._settings = settings
        self._clock = clock

    # --- accounts ------------------------------------------------------------------------

    async def create(
        self, email: str, password: str, *, role: str = "user", user_id: str | None = None
    ) -> AccountView:
        """An account; ``user_id`` names the wallet it owns (which must exist)."""
        email = normalize_email(email)
        validate_role(role)
        if user_id is not None:
            validate_user_id(user_id)
        password_hash = passwords.hash_password(password)
        now = self._clock()
        values = {
            "email": email,
            "password_hash": password_hash,
            "role": role,
            "user_id": user_id,
            "created_at": now,
            "updated_at": now,
        }
        try:
            async with write_transaction(self._engine) as conn:
                account_id = await repo.insert_account(conn, values)
        except IntegrityError:
            raise AccountExists("an account with that email or wallet exists") from None
        return AccountView(account_id, email, role, user_id, now)

    @staticmethod
    def new_user_id() -> str:
        """The wallet id of a person who signs up by themselves."""
        return f"usr_{uuid.uuid4().hex}"

    async def email_taken(self, email: str) -> bool:
        async with read_transaction(self._engine) as conn:
            return await repo.account_by_email(conn, normalize_email(email)) is not None

    async def get(self, email: str) -> AccountView:
        async with read_transaction(self._engine) as conn:
            row = await repo.account_by_email(conn, normalize_email(email))
        if row is None:
            raise AccountNotFound("no such account")
        return _view(row)

    async def list_accounts(
        self, *, search: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[AccountView]:
        async with read_transaction(self._engine) as conn:
            rows = await repo.account_rows(conn, search=search, limit=limit, offset=offset)
        return [_view(row) for row in rows]

    async def set_role(self, email: str, role: str, *, actor: str) -> AccountView:
        validate_role(role)
        account = await self.get(email)
        async with write_transaction(self._engine) as conn:
            await repo.update_account(conn, account.id, {"role": role, "updated_at": self._clock()})
            await self._audit(
                conn,
                actor,
                "account.set_role",
                account.email,
                {"role": account.role},
                {"role": role},
            )
        return AccountView(account.id, account.email, role, account.user_id, account.created_at)

    async def reset_password(self, email: str, password: str, *, actor: str) -> int:
        """A new password; every session of the account ends. How many ended."""
        account = await self.get(email)
        password_hash = passwords.hash_password(password)
        now = self._clock()
        async with write_transaction(self._engine) as conn:
            await repo.update_account(
                conn, account.id, {"password_hash": password_hash, "updated_at": now}
            )
            ended = await repo.revoke_sessions_of(conn, account.id, now)
            await self._audit(conn, actor, "account.reset_password", account.email, None, None)
        return ended

    # --- signing in ------------------------------------------------------------------------

    async def sign_in(self, email: object, password: object) -> NewSession:
        """A new session for the right email and password; SignInRefused otherwise, the
        same whatever was wrong (no such email, wrong password, locked)."""
        if not isinstance(password, str) or not isinstance(email, str):
            raise SignInRefused()
        address = email.strip().lower()
        key = token_hash(f"sign-in:{address}")
        async with read_transaction(self._engine) as conn:
            tries = await repo.attempts_row(conn, key)
            account = await repo.account_by_email(conn, address)
        now = self._clock()
        if tries is not None and tries.locked_until is not None and tries.locked_until > now:
            raise SignInRefused()
        await asyncio.sleep(self._slowdown_seconds(tries))
        verified = passwords.verify_password(
            account.password_hash if account is not None else None, password
        )
        if account is None or not verified:
            await self._count_failure(key, tries, now)
            raise SignInRefused()
        async with write_transaction(self._engine) as conn:
            await repo.clear_attempts(conn, key)
            if passwords.needs_rehash(account.password_hash):
                await repo.update_account(
                    conn, account.id, {"password_hash": passwords.hash_password(password)}
                )
        return await self.start_session(account)

    def _slowdown_seconds(self, tries: AnyRow | None) -> float:
        failures = tries.failures if tries is not None else 0
        over = failures - self._settings.sign_in_slow_after_failures + 1
        if over <= 0:
            return 0.0
        return min(over * self._settings.sign_in_slowdown_seconds, MAX_SLOWDOWN_SECONDS)

    async def _count_failure(self, key: str, tries: AnyRow | None, now: datetime) -> None:
        failures = (tries.failures if tries is not None else 0) + 1
        locked = failures >= self._settings.sign_in_lock_after_failures
        lock = timedelta(minutes=self._settings.sign_in_lock_minutes)
        values: dict[str, Any] = {
            "email_hash": key,
            # A lock starts the count again once it has run out.
            "failures": 0 if locked else failures,
            "last_failure_at": now,
            "locked_until": now + lock if locked else None,
        }
        async with write_transaction(self._engine) as conn:
            await repo.save_attempts(conn, values)

    async def start_session(self, account: AnyRow | AccountView) -> NewSession:
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        now = self._clock()
        expires_at = now + timedelta(hours=self._settings.session_ttl_hours)
        async with write_transaction(self._engine) as conn:
            await repo.insert_session(
                conn,
                {
                    "token_hash": token_hash(token),
                    "account_id": account.id,
                    "csrf_token": csrf,
                    "created_at": now,
                    "expires_at": expires_at,
                },
            )
        signed_in = SignedIn(
            account.id, account.email, account.role, account.user_id, csrf, expires_at
        )
        return NewSession(token, signed_in)

    async def session(self, token: str | None) -> SignedIn | None:
        """Who a session cookie's token belongs to, while it lives."""
        if not token or len(token) > 128:
            return None
        async with read_transaction(self._engine) as conn:
            row = await repo.live_session(conn, token_hash(token), self._clock())
        if row is None:
            return None
        return SignedIn(
            row.account_id, row.email, row.role, row.user_id, row.csrf_token, row.expires_at
        )

    async def end_session(self, token: str) -> None:
        async with write_transaction(self._engine) as conn:
            await repo.revoke_session(conn, token_hash(token), self._clock())

    async def end_every_session(self, account_id: int) -> int:
        async with write_transaction(self._engine) as conn:
            return await repo.revoke_sessions_of(conn, account_id, self._clock())

    # --- the audit log -----------------------------------------------------------------------

    async def audit(
        self, actor: str, action: str, target: str | None, before: Any, after: Any
    ) -> None:
        async with write_transaction(self._engine) as conn:
            await self._audit(conn, actor, action, target, before, after)

    async def _audit(
        self, conn: Any, actor: str, action: str, target: str | None, before: Any, after: Any
    ) -> None:
        await repo.insert_audit(
            conn,
            {
                "actor": actor,
                "action": action,
                "target": target,
                "before": before,
                "after": after,
                "created_at": self._clock(),
            },
        )

    async def audit_entries(self, *, limit: int = 50, offset: int = 0) -> list[AnyRow]:
        async with read_transaction(self._engine) as conn:
            return await repo.audit_rows(conn, limit=limit, offset=offset)
