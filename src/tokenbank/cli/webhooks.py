"""``tokenbank webhooks``: apps' webhook endpoints, their delivery log, redelivery
(decision 15). Changes are written to the admin audit log as ``cli``."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer

from tokenbank.cli._common import DatabaseUrl, group, run, with_service
from tokenbank.events.service import WebhookService
from tokenbank.ledger.service import TokenService

app = group("Apps' webhook endpoints: where events are delivered, signed.")

T = TypeVar("T")

EventOption = Annotated[
    list[str],
    typer.Option("--event", help="An event type to deliver (repeat), or * for all of them."),
]


async def with_webhooks(
    database_url: str | None, action: Callable[[WebhookService], Awaitable[T]]
) -> T:
    async def act(service: TokenService) -> T:
        return await action(WebhookService(await service.engine(), clock=service.clock))

    return await with_service(database_url, act)


@app.command("add")
def webhooks_add(
    app_slug: Annotated[str, typer.Argument(metavar="APP")],
    url: str,
    event: EventOption,
    description: Annotated[str | None, typer.Option(help="What the endpoint is for.")] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Add an endpoint to an app; prints its id and signing secret."""
    endpoint = run(
        with_webhooks(
            database_url, lambda s: s.create(app_slug, url, event, description=description)
        )
    )
    typer.echo(f"endpoint {endpoint.id} for {endpoint.app}: {endpoint.url}")
    typer.echo(f"events: {', '.join(endpoint.event_types)}")
    typer.echo(f"signing secret: {endpoint.secret}")


@app.command("list")
def webhooks_list(
    app_slug: Annotated[str | None, typer.Option("--app", help="Only this app's.")] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """List endpoints (without their secrets)."""
    for endpoint in run(with_webhooks(database_url, lambda s: s.list_endpoints(app_slug))):
        state = "enabled" if endpoint.enabled else "disabled"
        typer.echo(
            f"{endpoint.id}  {endpoint.app}  {endpoint.url}  {state}"
            f"  {','.join(endpoint.event_types)}"
        )


@app.command("remove")
def webhooks_remove(endpoint_id: str, database_url: DatabaseUrl = None) -> None:
    """Delete an endpoint and its delivery log."""
    run(with_webhooks(database_url, lambda s: s.delete(endpoint_id)))
    typer.echo(f"endpoint {endpoint_id} removed")


@app.command("rotate-secret")
def webhooks_rotate_secret(endpoint_id: str, database_url: DatabaseUrl = None) -> None:
    """Give an endpoint a new signing secret; prints it."""
    endpoint = run(with_webhooks(database_url, lambda s: s.rotate_secret(endpoint_id)))
    typer.echo(f"new signing secret for {endpoint.id}: {endpoint.secret}")


@app.command("deliveries")
def webhooks_deliveries(
    endpoint_id: str,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """An endpoint's latest deliveries and their attempts, newest first."""
    deliveries = run(with_webhooks(database_url, lambda s: s.deliveries(endpoint_id, limit=limit)))
    if as_json:
        typer.echo(json.dumps(deliveries, indent=2))
        return
    for delivery in deliveries:
        codes = " ".join(
            str(attempt["statusCode"] or attempt["error"]) for attempt in delivery["log"]
        )
        typer.echo(
            f"{delivery['eventId']}  {delivery['eventType']}  {delivery['status']}"
            f"  attempts {delivery['attempts']}  [{codes}]"
        )


@app.command("redeliver")
def webhooks_redeliver(endpoint_id: str, event_id: str, database_url: DatabaseUrl = None) -> None:
    """Send one event to an endpoint again, at the worker's next pass."""
    run(with_webhooks(database_url, lambda s: s.redeliver(event_id, endpoint_id)))
    typer.echo(f"event {event_id} queued for {endpoint_id}")
