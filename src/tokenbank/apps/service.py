"""Registering apps, issuing, rotating and revoking keys, and authenticating them.

An app key may act on any user (option C in docs/compatibility.md): the key is the trust
boundary, and the app is responsible for knowing who its user is.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tokenbank.apps import keys
from tokenbank.apps import repository as repo
from tokenbank.apps.errors import AppExists, AppNotFound, KeyNotFound
from tokenbank.clock import Clock, system_clock
from tokenbank.config import MAX_RATE_LIMIT_PER_MINUTE
from tokenbank.db.engine import read_transaction, write_transaction
from tokenbank.db.models import API_SCOPES
from tokenbank.db.rows import AnyRow
from tokenbank.errors import InvalidInput
from tokenbank.validation import validate_amount

SLUG_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
DEFAULT_SCOPES = ("read", "spend", "refund")
DURATION_PATTERN = re.compile(r"^(\d{1,9})([smhd]?)$")
DURATION_UNITS_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
KEY_CACHE_TTL_SECONDS = 5.0
KEY_CACHE_MAX_ENTRIES = 10_000


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: an app and what its key may do."""

    app_slug: str
    scopes: frozenset[str]
    key_id: int | None = None
    # The key's limits (issue 14); None: unlimited.
    rate_limit_per_minute: int | None = None
    daily_spend_cap_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class KeyInfo:
    display_prefix: str
    scopes: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    active: bool
    rate_limit_per_minute: int | None = None
    daily_spend_cap_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class AppInfo:
    slug: str
    name: str | None
    created_at: datetime
    keys: list[KeyInfo] = field(default_factory=list)


def validate_slug(slug: object) -> str:
    if not isinstance(slug, str) or not SLUG_PATTERN.fullmatch(slug):
        raise InvalidInput("slug", "must be 1-64 lower case letters, digits, - or _")
    return slug


def validate_scopes(scopes: object) -> tuple[str, ...]:
    if not isinstance(scopes, list | tuple) or not scopes:
        raise InvalidInput("scopes", f"give at least one of: {', '.join(API_SCOPES)}")
    unknown = [scope for scope in scopes if scope not in API_SCOPES]
    if unknown:
        raise InvalidInput("scopes", f"unknown {unknown}; known: {', '.join(API_SCOPES)}")
    return tuple(sorted(set(scopes), key=API_SCOPES.index))


LIMIT_FIELDS = ("rate_limit_per_minute", "daily_spend_cap_tokens")


def validate_limits(limits: Mapping[str, object]) -> dict[str, int | None]:
    """A key's limits to set: each a positive whole number, or None for no limit."""
    unknown = sorted(set(limits) - set(LIMIT_FIELDS))
    if unknown:
        raise InvalidInput(unknown[0], f"unknown limit; known: {', '.join(LIMIT_FIELDS)}")
    checked: dict[str, int | None] = {}
    for name, value in limits.items():
        if value is None:
            checked[name] = None
        elif name == "daily_spend_cap_tokens":
            checked[name] = validate_amount(value, field_name=name)
        elif not isinstance(value, int) or isinstance(value, bool):
            raise InvalidInput(name, "must be a whole number of requests per minute")
        elif not 1 <= value <= MAX_RATE_LIMIT_PER_MINUTE:
            raise InvalidInput(name, f"must be from 1 to {MAX_RATE_LIMIT_PER_MINUTE}")
        else:
            checked[name] = value
    return checked


def parse_duration_seconds(text: str) -> int:
    """``90``, ``30s``, ``15m``, ``24h`` or ``7d`` in seconds."""
    match = DURATION_PATTERN.fullmatch(text.strip())
    if not match:
        raise InvalidInput("duration", "use a number with s, m, h or d, like 15m or 24h")
    return int(match.group(1)) * DURATION_UNITS_SECONDS[match.group(2)]


ORIGIN = re.compile(r"^https?://[a-z0-9.-]+(:[0-9]{1,5})?$")


def normalize_origin(value: object) -> str:
    """scheme://host[:port], lowercased, without a path (what a browser's Origin says)."""
    if not isinstance(value, str):
        raise InvalidInput("origin", "scheme://host[:port], e.g. https://app.example.com")
    origin = value.strip().lower().rstrip("/")
    if len(origin) > 255 or not ORIGIN.match(origin):
        raise InvalidInput("origin", "scheme://host[:port], e.g. https://app.example.com")
    return origin


class AppService:
    def __init__(self, engine: AsyncEngine, *, clock: Clock = system_clock) -> None:
        self._engine = engine
        self._clock = clock
        # key hash -> (principal or None, the key's expiry, monotonic time cached); a
        # revoked key stops working here at once and in other processes within the TTL.
        # The expiry is checked against the clock on every use, cached or not: a rotated
        # key's grace period ends on time even while its principal is cached.
        self._cache: dict[str, tuple[Principal | None, datetime | None, float]] = {}

    async def create_app(
        self,
        slug: str,
        *,
        scopes: list[str] | tuple[str, ...] = DEFAULT_SCOPES,
        name: str | None = None,
        limits: Mapping[str, object] | None = None,
    ) -> tuple[AppInfo, str]:
        """Register an app and issue its first key (with ``limits``, see
        :meth:`set_key_limits`); the key is returned only here."""
        validate_slug(slug)
        valid_scopes = validate_scopes(scopes)
        checked = validate_limits(limits or {})
        now = self._clock()
        async with write_transaction(self._engine) as conn:
            if await repo.app_by_slug(conn, slug) is not None:
                raise AppExists(f"app {slug!r} already exists")
            app_id = await repo.insert_app(conn, slug, name, now)
            key = await self._issue(conn, app_id, valid_scopes, now, checked)
        return AppInfo(slug=slug, name=name, created_at=now), key

    async def rotate_key(
        self,
        slug: str,
        *,
        old_key_expires_in_seconds: int = 0,
        scopes: list[str] | tuple[str, ...] | None = None,
    ) -> str:
        """Issue a new key; the app's live keys expire after the grace period."""
        now = self._clock()
        async with write_transaction(self._engine) as conn:
            app = await self._app(conn, slug)
            live = await repo.live_keys(conn, app.id, now)
            current = tuple(sorted({s for k in live for s in k.scopes.split(",")}))
            new_scopes = validate_scopes(list(scopes or current or DEFAULT_SCOPES))
            expires_at = now + timedelta(seconds=old_key_expires_in_seconds)
            await repo.expire_keys(conn, [k.id for k in live], expires_at)
            # The new key keeps the newest live key's limits: rotating lifts no limit.
            limits = {name: getattr(live[-1], name) for name in LIMIT_FIELDS} if live else {}
            key = await self._issue(conn, app.id, new_scopes, now, limits)
        self._cache.clear()
        return key

    async def revoke_keys(self, slug: str, *, display_prefix: str | None = None) -> int:
        """Revoke the app's live keys (or only the one shown as ``display_prefix``)."""
        now = self._clock()
        async with write_transaction(self._engine) as conn:
            app = await self._app(conn, slug)
            live = await repo.live_keys(conn, app.id, now)
            chosen = [k.id for k in live if display_prefix in (None, k.display_prefix)]
            revoked = await repo.revoke_keys(conn, chosen, now)
        self._cache.clear()
        return revoked

    async def set_key_limits(
        self, slug: str, display_prefix: str, limits: Mapping[str, object]
    ) -> KeyInfo:
        """Set (or with None clear) a live key's rate limit and daily spend cap (issue 14).

        Only the limits named change. Other processes see the change within
        ``KEY_CACHE_TTL_SECONDS``.
        """
        checked = validate_limits(limits)
        now = self._clock()
        async with write_transaction(self._engine) as conn:
            app = await self._app(conn, slug)
            live = await repo.live_keys(conn, app.id, now)
            chosen = [k for k in live if k.display_prefix == display_prefix]
            if len(chosen) != 1:
                raise KeyNotFound(f"no live key of {slug!r} shown as {display_prefix!r}")
            if checked:
                await repo.set_key_limits(conn, chosen[0].id, checked)
            row = next(k for k in await repo.keys_of(conn, app.id) if k.id == chosen[0].id)
        self._cache.clear()
        return _key_info(row, now)

    # --- origins that may embed the balance widget (decision 17) ---------------------------

    async def add_origin(self, slug: str, origin: str) -> str:
        """Let pages of ``origin`` (scheme://host[:port]) embed the widget; the origin as
        stored."""
        normal = normalize_origin(origin)
        async with write_transaction(self._engine) as conn:
            app = await self._app(conn, slug)
            await repo.add_origin(conn, app.id, normal, self._clock())
        return normal

    async def remove_origin(self, slug: str, origin: str) -> bool:
        normal = normalize_origin(origin)
        async with write_transaction(self._engine) as conn:
            app = await self._app(conn, slug)
            return await repo.remove_origin(conn, app.id, normal)

    async def origins(self, slug: str) -> list[str]:
        async with read_transaction(self._engine) as conn:
            return await repo.origins_of(conn, (await self._app(conn, slug)).id)

    async def origin_allowed(self, origin: str) -> bool:
        """Whether some app registered this exact origin."""
        try:
            normal = normalize_origin(origin)
        except InvalidInput:
            return False
        async with read_transaction(self._engine) as conn:
            return await repo.origin_registered(conn, normal)

    async def list_apps(self) -> list[AppInfo]:
        now = self._clock()
        async with read_transaction(self._engine) as conn:
            return [
                AppInfo(
                    slug=app.slug,
                    name=app.name,
                    created_at=app.created_at,
                    keys=[_key_info(k, now) for k in await repo.keys_of(conn, app.id)],
                )
                for app in await repo.list_apps(conn)
            ]

    async def authenticate(self, presented_key: str) -> Principal | None:
        if not presented_key or len(presented_key) > keys.MAX_KEY_LENGTH:
            return None
        key_hash = keys.hash_key(presented_key)
        cached = self._cache.get(key_hash)
        if cached is not None and time.monotonic() - cached[2] < KEY_CACHE_TTL_SECONDS:
            principal, expires_at, _ = cached
        else:
            principal, expires_at = await self._load(key_hash)
            if len(self._cache) >= KEY_CACHE_MAX_ENTRIES:
                self._cache.clear()
            self._cache[key_hash] = (principal, expires_at, time.monotonic())
        if principal is not None and expires_at is not None and expires_at <= self._clock():
            return None
        return principal

    async def _load(self, key_hash: str) -> tuple[Principal | None, datetime | None]:
        async with read_transaction(self._engine) as conn:
            row = await repo.key_by_hash(conn, key_hash)
        if row is None or not keys.keys_match(row.key_hash, key_hash):
            return None, None
        if not _key_info(row, self._clock()).active:
            return None, None
        principal = Principal(
            app_slug=row.slug,
            scopes=frozenset(row.scopes.split(",")),
            key_id=row.id,
            rate_limit_per_minute=row.rate_limit_per_minute,
            daily_spend_cap_tokens=row.daily_spend_cap_tokens,
        )
        return principal, row.expires_at

    async def _app(self, conn: AsyncConnection, slug: str) -> AnyRow:
        app = await repo.app_by_slug(conn, validate_slug(slug))
        if app is None:
            raise AppNotFound(f"no app {slug!r}")
        return app

    async def _issue(
        self,
        conn: AsyncConnection,
        app_id: int,
        scopes: tuple[str, ...],
        now: datetime,
        limits: dict[str, int | None] | None = None,
    ) -> str:
        key = keys.generate_key()
        await repo.insert_key(
            conn,
            app_id=app_id,
            key_hash=keys.hash_key(key),
            display_prefix=keys.display_prefix(key),
            scopes=",".join(scopes),
            now=now,
            limits=limits,
        )
        return key


def _key_info(row: AnyRow, now: datetime) -> KeyInfo:
    active = row.revoked_at is None and (row.expires_at is None or row.expires_at > now)
    return KeyInfo(
        display_prefix=row.display_prefix,
        scopes=tuple(row.scopes.split(",")),
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        active=active,
        rate_limit_per_minute=row.rate_limit_per_minute,
        daily_spend_cap_tokens=row.daily_spend_cap_tokens,
    )
