"""``tokenbank packs``: the token packs on sale (decision 14)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer

from tokenbank.cli._common import DatabaseUrl, group, run, with_service
from tokenbank.cli._errors import BAD_INPUT, fail
from tokenbank.ledger.service import TokenService
from tokenbank.payments.packs import Pack, PackService, PackTerms

T = TypeVar("T")

app = group("Token packs: what users buy, at what price, with which Stripe price.")


async def with_packs(database_url: str | None, action: Callable[[PackService], Awaitable[T]]) -> T:
    async def act(service: TokenService) -> T:
        return await action(PackService(await service.engine(), clock=service.clock))

    return await with_service(database_url, act)


def describe_pack(pack: Pack) -> str:
    terms = pack.terms
    price = f"{terms.price_cents // 100}.{terms.price_cents % 100:02d} {terms.currency}"
    flags = [
        flag for flag, on in (("popular", terms.popular), ("off sale", not terms.active)) if on
    ]
    stripe_price = terms.stripe_price_id or "no Stripe price"
    extra = f" ({', '.join(flags)})" if flags else ""
    return f"{pack.id}: {terms.name}, {terms.tokens:,} tokens for {price}, {stripe_price}{extra}"


@app.command("list")
def packs_list(
    all_packs: Annotated[bool, typer.Option("--all", help="Include packs off sale.")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """List the packs on sale, in their order."""
    packs = run(with_packs(database_url, lambda s: s.list_packs(active_only=not all_packs)))
    for pack in packs:
        typer.echo(describe_pack(pack))
    if not packs:
        typer.echo("no packs: `tokenbank packs seed-defaults` creates the default four")


@app.command("seed-defaults")
def packs_seed_defaults(database_url: DatabaseUrl = None) -> None:
    """Create Starter, Pro, Business and Enterprise (packs that exist are left alone)."""
    created = run(with_packs(database_url, lambda s: s.seed_defaults()))
    for pack_id in created:
        typer.echo(f"pack created: {pack_id}")
    typer.echo(f"{len(created)} pack(s) created; existing packs left as they were")


@app.command("create")
def packs_create(
    pack_id: str,
    name: Annotated[str, typer.Option(help="What users see.")],
    tokens: Annotated[int, typer.Option(help="Tokens the pack credits.")],
    price_cents: Annotated[int, typer.Option(help="Its price in cents.")],
    currency: Annotated[str, typer.Option(help="ISO 4217, lowercase.")] = "usd",
    stripe_price_id: Annotated[str | None, typer.Option(help="The Stripe price to sell.")] = None,
    popular: Annotated[bool, typer.Option(help="Highlight it.")] = False,
    sort_order: Annotated[int, typer.Option(help="Its place in the list.")] = 0,
    description: Annotated[str | None, typer.Option(help="A line about it.")] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create a pack."""
    terms = PackTerms(
        name,
        tokens,
        price_cents,
        currency=currency,
        description=description,
        stripe_price_id=stripe_price_id,
        popular=popular,
        sort_order=sort_order,
    )
    pack = run(with_packs(database_url, lambda s: s.create(Pack(pack_id, terms))))
    typer.echo(f"pack created: {describe_pack(pack)}")


@app.command("update")
def packs_update(
    pack_id: str,
    name: Annotated[str | None, typer.Option()] = None,
    tokens: Annotated[int | None, typer.Option()] = None,
    price_cents: Annotated[int | None, typer.Option()] = None,
    stripe_price_id: Annotated[str | None, typer.Option(help="'' removes it.")] = None,
    popular: Annotated[bool | None, typer.Option("--popular/--not-popular")] = None,
    active: Annotated[bool | None, typer.Option("--active/--inactive")] = None,
    sort_order: Annotated[int | None, typer.Option()] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Change a pack: its price, its Stripe price id, whether it is on sale."""
    given: dict[str, Any] = {
        "name": name,
        "tokens": tokens,
        "price_cents": price_cents,
        "popular": popular,
        "active": active,
        "sort_order": sort_order,
    }
    changes = {key: value for key, value in given.items() if value is not None}
    if stripe_price_id is not None:
        changes["stripe_price_id"] = stripe_price_id or None
    if not changes:
        fail("nothing to change: give an option (see --help)", BAD_INPUT)
    pack = run(with_packs(database_url, lambda s: s.update(pack_id, changes)))
    typer.echo(f"pack updated: {describe_pack(pack)}")


@app.command("deactivate")
def packs_deactivate(pack_id: str, database_url: DatabaseUrl = None) -> None:
    """Take a pack off sale (it stays: purchases name it)."""
    pack = run(with_packs(database_url, lambda s: s.update(pack_id, {"active": False})))
    typer.echo(f"pack off sale: {describe_pack(pack)}")
