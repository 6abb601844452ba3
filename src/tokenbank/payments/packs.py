"""Token packs: what tokenbank sells, at what price (billing defaults: four packs)."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from tokenbank.clock import Clock
from tokenbank.db.engine import read_transaction, write_transaction
from tokenbank.db.models import MAX_PRICE_CENTS, MAX_PURCHASE_TOKENS
from tokenbank.db.rows import AnyRow
from tokenbank.errors import InvalidInput
from tokenbank.payments import repository as repo
from tokenbank.payments.errors import PackExists, PackNotFound
from tokenbank.validation import validate_text

PACK_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
CURRENCY = re.compile(r"^[a-z]{3}$")
MAX_SORT_ORDER = 1_000_000


def _check_int(value: object, field_name: str, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(field_name, f"a whole number from {low:,} to {high:,}")


@dataclass(frozen=True, slots=True)
class PackTerms:
    """A pack as an admin writes it (every field; an edit starts from the stored ones)."""

    name: str
    tokens: int
    price_cents: int
    currency: str = "usd"
    description: str | None = None
    stripe_price_id: str | None = None
    active: bool = True
    popular: bool = False
    sort_order: int = 0

    def __post_init__(self) -> None:
        validate_text(self.name, field_name="name", max_length=100, required=True)
        validate_text(self.description, field_name="description", max_length=500, required=False)
        validate_text(
            self.stripe_price_id, field_name="stripePriceId", max_length=255, required=False
        )
        _check_int(self.tokens, "tokens", 1, MAX_PURCHASE_TOKENS)
        _check_int(self.price_cents, "priceCents", 1, MAX_PRICE_CENTS)
        _check_int(self.sort_order, "sortOrder", 0, MAX_SORT_ORDER)
        if not isinstance(self.currency, str) or not CURRENCY.match(self.currency):
            raise InvalidInput("currency", "three lowercase letters (ISO 4217), e.g. usd")
        for flag in ("active", "popular"):
            if not isinstance(getattr(self, flag), bool):
                raise InvalidInput(flag, "true or false")


@dataclass(frozen=True, slots=True)
class Pack:
    id: str
    terms: PackTerms

    def tokens_per_usd(self) -> int | None:
        """What a dollar buys in this pack (None for other currencies)."""
        if self.terms.currency != "usd":
            return None
        return self.terms.tokens * 100 // self.terms.price_cents


# The billing defaults' packs (`tokenbank packs seed-defaults`).
DEFAULT_PACKS = (
    Pack(
        "starter", PackTerms("Starter", 150_000, 1_500, description="To try it out", sort_order=1)
    ),
    Pack(
        "pro",
        PackTerms("Pro", 750_000, 6_500, description="For growing use", popular=True, sort_order=2),
    ),
    Pack(
        "business",
        PackTerms("Business", 2_250_000, 17_500, description="For teams", sort_order=3),
    ),
    Pack(
        "enterprise",
        PackTerms("Enterprise", 7_500_000, 50_000, description="At scale", sort_order=4),
    ),
)


def validate_pack_id(value: object) -> str:
    if not isinstance(value, str) or not PACK_ID.match(value):
        raise InvalidInput(
            "packId",
            "1-64 of lowercase letters, digits, '-' and '_', starting with a letter or digit",
        )
    return value


def pack_from_row(row: AnyRow) -> Pack:
    names = [field.name for field in fields(PackTerms)]
    return Pack(row.id, PackTerms(**{name: getattr(row, name) for name in names}))


class PackService:
    def __init__(self, engine: AsyncEngine, *, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock

    async def list_packs(self, *, active_only: bool) -> list[Pack]:
        async with read_transaction(self._engine) as conn:
            rows = await repo.pack_rows(conn, active_only=active_only)
        return [pack_from_row(row) for row in rows]

    async def get(self, pack_id: str) -> Pack:
        validate_pack_id(pack_id)
        async with read_transaction(self._engine) as conn:
            row = await repo.pack_row(conn, pack_id)
        if row is None:
            raise PackNotFound(f"no pack {pack_id!r}")
        return pack_from_row(row)

    async def create(self, pack: Pack) -> Pack:
        validate_pack_id(pack.id)
        now = self._clock()
        values = {"id": pack.id, **_terms_values(pack.terms), "created_at": now, "updated_at": now}
        async with write_transaction(self._engine) as conn:
            if not await repo.insert_pack(conn, values):
                raise PackExists(f"a pack {pack.id!r} exists")
        return pack

    async def update(self, pack_id: str, changes: dict[str, Any]) -> Pack:
        """Change some of a pack's terms (``changes`` by PackTerms field name)."""
        current = await self.get(pack_id)
        unknown = set(changes) - {field.name for field in fields(PackTerms)}
        if unknown:
            raise InvalidInput(sorted(unknown)[0], "not a field of a pack")
        terms_values = _terms_values(current.terms) | changes
        terms = PackTerms(**terms_values)
        async with write_transaction(self._engine) as conn:
            values = {**_terms_values(terms), "updated_at": self._clock()}
            if not await repo.update_pack(conn, pack_id, values):
                raise PackNotFound(f"no pack {pack_id!r}")
        return Pack(pack_id, terms)

    async def seed_defaults(self) -> list[str]:
        """Create the default packs that do not exist yet; the ids created."""
        created = []
        now = self._clock()
        async with write_transaction(self._engine) as conn:
            for pack in DEFAULT_PACKS:
                values = {
                    "id": pack.id,
                    **_terms_values(pack.terms),
                    "created_at": now,
                    "updated_at": now,
                }
                if await repo.insert_pack(conn, values):
                    created.append(pack.id)
        return created


def _terms_values(terms: PackTerms) -> dict[str, Any]:
    return {field.name: getattr(terms, field.name) for field in fields(PackTerms)}
