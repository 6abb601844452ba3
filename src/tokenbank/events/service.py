"""WebhookService: an app's webhook endpoints, their delivery log, redelivery, and the
balance alert levels the database's triggers read (decision 15).

Every change to an endpoint writes an ``admin_audit_log`` entry in its transaction,
whoever makes it (the pages, the admin API, the CLI); a secret never enters the log.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tokenbank.accounts import repository as audit_repo
from tokenbank.apps import repository as apps_repo
from tokenbank.clock import Clock, system_clock
from tokenbank.config import Settings
from tokenbank.db.engine import read_transaction, write_transaction
from tokenbank.db.rows import AnyRow
from tokenbank.errors import InvalidInput
from tokenbank.events import repository as repo
from tokenbank.events.endpoints import (
    new_endpoint_id,
    new_secret,
    validate_description,
    validate_event_types,
    validate_url,
)
from tokenbank.events.errors import AppNotFound, EndpointNotFound, EventNotFound

MAX_PAGE = 200
# What the user's pages say about each event type.
ALERT_TEXTS = {
    "balance.low": "Your balance went below the low-balance level.",
    "balance.critical": "Your balance went below the critical level.",
    "balance.recovered": "Your balance is back above the low-balance level.",
    "wallet.suspended": "Your wallet was suspended.",
    "wallet.reactivated": "Your wallet was reactivated.",
    "purchase.succeeded": "A purchase was paid and its tokens credited.",
    "purchase.failed": "A purchase failed: nothing was charged.",
    "auto_recharge.succeeded": "Auto-recharge bought tokens.",
    "auto_recharge.failed": "Auto-recharge failed.",
    "grant.expired": "Some of your tokens expired.",
    "renewal.completed": "Your plan's monthly tokens were renewed.",
    "hold.expired": "A reservation of tokens expired and was released.",
}


@dataclass(frozen=True, slots=True)
class Alert:
    type: str
    text: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Endpoint:
    id: str
    app: str
    url: str
    event_types: list[str]
    enabled: bool
    description: str | None
    secret: str
    created_at: datetime
    updated_at: datetime

    def public(self) -> dict[str, Any]:
        """What the audit log and listings show: everything but the secret."""
        return {
            "id": self.id,
            "app": self.app,
            "url": self.url,
            "eventTypes": self.event_types,
            "enabled": self.enabled,
            "description": self.description,
        }


async def sync_alert_levels(engine: AsyncEngine, settings: Settings, now: datetime) -> bool:
    """Make the database's balance alert levels the settings' (``TOKENBANK_LOW_BALANCE_TOKENS``,
    ``TOKENBANK_CRITICAL_BALANCE_TOKENS``); a trigger copies them onto every wallet.
    True when they changed. Called when a server or worker starts."""
    low, critical = settings.low_balance_tokens, settings.critical_balance_tokens
    if critical > low:
        raise InvalidInput(
            "critical_balance_tokens", "must not be above TOKENBANK_LOW_BALANCE_TOKENS"
        )
    async with read_transaction(engine) as conn:
        current = await repo.alert_levels(conn)
    if current is not None and (current.low_tokens, current.critical_tokens) == (low, critical):
        return False
    async with write_transaction(engine) as conn:
        await repo.set_alert_levels(conn, low, critical, now)
    return True


class WebhookService:
    def __init__(self, engine: AsyncEngine, *, clock: Clock = system_clock) -> None:
        self._engine = engine
        self._clock = clock

    # --- endpoints -----------------------------------------------------------------------

    async def create(
        self,
        app: str,
        url: str,
        event_types: list[str],
        *,
        description: str | None = None,
        enabled: bool = True,
        actor: str = "cli",
    ) -> Endpoint:
        values = {
            "url": validate_url(url),
            "event_types": validate_event_types(event_types),
            "description": validate_description(description),
            "enabled": bool(enabled),
        }
        now = self._clock()
        endpoint_id = new_endpoint_id()
        async with write_transaction(self._engine) as conn:
            app_row = await self._app(conn, app)
            await repo.insert_endpoint(
                conn,
                {
                    "id": endpoint_id,
                    "app_id": app_row.id,
                    "secret": new_secret(),
                    "created_at": now,
                    "updated_at": now,
                    **values,
                },
            )
            endpoint = await self._load(conn, endpoint_id)
            await self._audit(conn, actor, "webhook.create", endpoint, None, endpoint.public())
        return endpoint

    async def list_endpoints(self, app: str | None = None) -> list[Endpoint]:
        async with read_transaction(self._engine) as conn:
            app_id = (await self._app(conn, app)).id if app is not None else None
            rows = await repo.endpoint_rows(conn, app_id)
            slugs = await _slugs(conn)
        return [_endpoint(row, slugs) for row in rows]

    async def get(self, endpoint_id: str) -> Endpoint:
        async with read_transaction(self._engine) as conn:
            return await self._load(conn, endpoint_id)

    async def update(self, endpoint_id: str, *, actor: str = "cli", **changes: Any) -> Endpoint:
        """Change ``url``, ``event_types``, ``enabled`` or ``description``."""
        values = _checked_changes(changes)
        async with write_transaction(self._engine) as conn:
            before = await self._load(conn, endpoint_id)
            await repo.update_endpoint(conn, endpoint_id, {**values, "updated_at": self._clock()})
            after = await self._load(conn, endpoint_id)
            await self._audit(conn, actor, "webhook.update", after, before.public(), after.public())
        return after

    async def rotate_secret(self, endpoint_id: str, *, actor: str = "cli") -> Endpoint:
        """A new secret; deliveries from now on are signed with it."""
        async with write_transaction(self._engine) as conn:
            await self._load(conn, endpoint_id)
            values = {"secret": new_secret(), "updated_at": self._clock()}
            await repo.update_endpoint(conn, endpoint_id, values)
            endpoint = await self._load(conn, endpoint_id)
            await self._audit(conn, actor, "webhook.rotate_secret", endpoint, None, None)
        return endpoint

    async def delete(self, endpoint_id: str, *, actor: str = "cli") -> None:
        async with write_transaction(self._engine) as conn:
            endpoint = await self._load(conn, endpoint_id)
            await repo.delete_endpoint(conn, endpoint_id)
            await self._audit(conn, actor, "webhook.delete", endpoint, endpoint.public(), None)

    # --- the delivery log and redelivery -------------------------------------------------

    async def deliveries(
        self, endpoint_id: str, *, limit: int = 50, status: str | None = None
    ) -> list[dict[str, Any]]:
        """The endpoint's latest deliveries, newest first, each with its attempts."""
        limit = max(1, min(limit, MAX_PAGE))
        async with read_transaction(self._engine) as conn:
            await self._load(conn, endpoint_id)
            rows = await repo.delivery_rows(conn, endpoint_id, limit, status)
            attempts = await repo.attempt_rows(conn, [row.id for row in rows]) if rows else []
        by_delivery: dict[int, list[dict[str, Any]]] = {}
        for attempt in attempts:
            by_delivery.setdefault(attempt.delivery_id, []).append(attempt_json(attempt))
        return [delivery_json(row, by_delivery.get(row.id, [])) for row in rows]

    async def redeliver(self, event_id: str, endpoint_id: str, *, actor: str = "cli") -> None:
        """Send ``event_id`` to ``endpoint_id`` again, now (whatever became of its
        delivery: delivered, dead or never made); then retried on the schedule."""
        now = self._clock()
        async with write_transaction(self._engine) as conn:
            endpoint = await self._load(conn, endpoint_id)
            if await repo.event_row(conn, event_id) is None:
                raise EventNotFound(event_id)
            delivery = await repo.delivery_of(conn, event_id, endpoint_id)
            if delivery is None:
                await repo.insert_deliveries(conn, [new_delivery(event_id, endpoint_id, now)])
            else:
                await repo.requeue_delivery(conn, delivery.id, now)
            await self._audit(conn, actor, "webhook.redeliver", endpoint, None, {"event": event_id})

    # --- a user's events (their pages' alerts) --------------------------------------------

    async def user_alerts(self, user_id: str, *, limit: int = 10) -> list[Alert]:
        """The user's latest events, newest first, as their pages say them."""
        async with read_transaction(self._engine) as conn:
            rows = await repo.user_events(conn, user_id, max(1, min(limit, MAX_PAGE)))
        return [Alert(row.type, ALERT_TEXTS[row.type], row.created_at) for row in rows]

    # --- helpers -------------------------------------------------------------------------

    async def _app(self, conn: AsyncConnection, slug: str) -> AnyRow:
        row = await apps_repo.app_by_slug(conn, slug)
        if row is None:
            raise AppNotFound(slug)
        return row

    async def _load(self, conn: AsyncConnection, endpoint_id: str) -> Endpoint:
        row = await repo.endpoint_row(conn, endpoint_id)
        if row is None:
            raise EndpointNotFound(endpoint_id)
        return _endpoint(row, await _slugs(conn))

    async def _audit(
        self,
        conn: AsyncConnection,
        actor: str,
        action: str,
        endpoint: Endpoint,
        before: Any,
        after: Any,
    ) -> None:
        await audit_repo.insert_audit(
            conn,
            {
                "actor": actor,
                "action": action,
                "target": f"{endpoint.app}/{endpoint.id}",
                "before": before,
                "after": after,
                "created_at": self._clock(),
            },
        )


def new_delivery(event_id: str, endpoint_id: str, now: datetime) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "endpoint_id": endpoint_id,
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
        "updated_at": now,
    }


def _checked_changes(changes: dict[str, Any]) -> dict[str, Any]:
    checks = {
        "url": validate_url,
        "event_types": validate_event_types,
        "description": validate_description,
        "enabled": _validate_enabled,
    }
    unknown = set(changes) - set(checks)
    if unknown:
        raise InvalidInput(sorted(unknown)[0], "cannot be changed")
    return {name: checks[name](value) for name, value in changes.items()}


def _validate_enabled(value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput("enabled", "must be true or false")
    return value


async def _slugs(conn: AsyncConnection) -> dict[int, str]:
    return {row.id: row.slug for row in await apps_repo.list_apps(conn)}


def _endpoint(row: AnyRow, slugs: dict[int, str]) -> Endpoint:
    return Endpoint(
        id=row.id,
        app=slugs.get(row.app_id, str(row.app_id)),
        url=row.url,
        event_types=list(row.event_types),
        enabled=bool(row.enabled),
        description=row.description,
        secret=row.secret,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def attempt_json(row: AnyRow) -> dict[str, Any]:
    return {
        "attempt": row.attempt,
        "startedAt": _iso(row.started_at),
        "durationMs": row.duration_ms,
        "statusCode": row.status_code,
        "error": row.error,
    }


def delivery_json(row: AnyRow, attempts: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": row.id,
        "eventId": row.event_id,
        "eventType": row.type,
        "status": row.status,
        "attempts": row.attempts,
        "nextAttemptAt": _iso(row.next_attempt_at),
        "lastStatusCode": row.last_status_code,
        "lastError": row.last_error,
        "deliveredAt": _iso(row.delivered_at),
        "createdAt": _iso(row.created_at),
        "log": attempts,
    }
