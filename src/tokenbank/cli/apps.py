"""``tokenbank apps``: registered apps and their API keys."""

from __future__ import annotations

from typing import Annotated

import typer

from tokenbank.apps.service import DEFAULT_SCOPES, parse_duration_seconds
from tokenbank.cli._common import DatabaseUrl, group, run, with_apps
from tokenbank.cli._errors import BAD_INPUT, expected_errors, fail

app = group("Registered apps and their API keys.")

ScopeOption = Annotated[
    list[str] | None,
    typer.Option(
        "--scope", help="read, spend, refund, credit, payments or admin; repeat for several."
    ),
]


RateOption = Annotated[
    str | None,
    typer.Option(
        "--rate-per-minute", help="Requests per minute the key may make, or 'none' for no limit."
    ),
]
CapOption = Annotated[
    str | None,
    typer.Option(
        "--daily-cap-tokens",
        help="Tokens the key may spend per UTC day, or 'none' for no cap.",
    ),
]
NO_LIMIT = "none"


def _limits(rate_per_minute: str | None, daily_cap_tokens: str | None) -> dict[str, object]:
    """The limits the options name: a whole number, or 'none' to remove one."""
    limits: dict[str, object] = {}
    for name, text in (
        ("rate_limit_per_minute", rate_per_minute),
        ("daily_spend_cap_tokens", daily_cap_tokens),
    ):
        if text is None:
            continue
        value = text.strip().lower()
        if value != NO_LIMIT and not value.isdigit():
            fail(f"{name}: give a whole number, or '{NO_LIMIT}'", BAD_INPUT)
        limits[name] = None if value == NO_LIMIT else int(value)
    return limits


def _limits_text(rate: int | None, cap: int | None) -> str:
    rate_text = f"{rate}/min" if rate is not None else "no rate limit"
    cap_text = f"{cap} tokens/day" if cap is not None else "no daily cap"
    return f"{rate_text}, {cap_text}"


@app.command("create")
def apps_create(
    slug: str,
    scope: ScopeOption = None,
    name: Annotated[str | None, typer.Option(help="A human-readable name.")] = None,
    rate_per_minute: RateOption = None,
    daily_cap_tokens: CapOption = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Register an app and print its API key (shown this once only)."""
    scopes = tuple(scope) if scope else DEFAULT_SCOPES
    limits = _limits(rate_per_minute, daily_cap_tokens)
    info, key = run(
        with_apps(
            database_url, lambda s: s.create_app(slug, scopes=scopes, name=name, limits=limits)
        )
    )
    typer.echo(f"app {info.slug} created with scopes {','.join(scopes)}")
    typer.echo("API key (store it now: it is not shown again):")
    typer.echo(key)


@app.command("list")
def apps_list(database_url: DatabaseUrl = None) -> None:
    """List apps and their keys (prefixes only)."""
    for info in run(with_apps(database_url, lambda s: s.list_apps())):
        typer.echo(f"{info.slug}  (created {info.created_at:%Y-%m-%d})")
        for key in info.keys:
            state = "active" if key.active else ("revoked" if key.revoked_at else "expired")
            expiry = f", expires {key.expires_at:%Y-%m-%d %H:%M}" if key.expires_at else ""
            limits = _limits_text(key.rate_limit_per_minute, key.daily_spend_cap_tokens)
            typer.echo(
                f"  {key.display_prefix}...  {','.join(key.scopes)}  {state}{expiry}  ({limits})"
            )


@app.command("key-limits")
def apps_key_limits(
    slug: str,
    key_prefix: Annotated[str, typer.Argument(help="The key as 'apps list' shows it: tb_xxxxxxx.")],
    rate_per_minute: RateOption = None,
    daily_cap_tokens: CapOption = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Set or remove a key's request rate limit (429 past it) and daily spend cap (402)."""
    limits = _limits(rate_per_minute, daily_cap_tokens)
    key = run(with_apps(database_url, lambda s: s.set_key_limits(slug, key_prefix, limits)))
    limits_text = _limits_text(key.rate_limit_per_minute, key.daily_spend_cap_tokens)
    typer.echo(f"key {key.display_prefix}... of {slug}: {limits_text}")


@app.command("rotate-key")
def apps_rotate_key(
    slug: str,
    old_key_expires_in: Annotated[
        str, typer.Option(help="Grace period for the old key: 0, 30s, 15m, 24h, 7d.")
    ] = "0",
    scope: ScopeOption = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Issue a new key; the old ones stop working after the grace period."""
    with expected_errors():
        seconds = parse_duration_seconds(old_key_expires_in)
    key = run(
        with_apps(
            database_url,
            lambda s: s.rotate_key(slug, old_key_expires_in_seconds=seconds, scopes=scope),
        )
    )
    typer.echo(f"new API key for {slug} (store it now: it is not shown again):")
    typer.echo(key)


@app.command("revoke-key")
def apps_revoke_key(
    slug: str,
    key_prefix: Annotated[
        str | None, typer.Option(help="Revoke only the key shown with this prefix.")
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Revoke an app's live keys (all of them, or the one named by --key-prefix)."""
    revoked = run(with_apps(database_url, lambda s: s.revoke_keys(slug, display_prefix=key_prefix)))
    if revoked == 0:
        fail(f"no live key to revoke for {slug!r}")
    typer.echo(f"revoked {revoked} key(s) of {slug}")


@app.command("add-origin")
def apps_add_origin(slug: str, origin: str, database_url: DatabaseUrl = None) -> None:
    """Let the app's pages at ORIGIN (https://host[:port]) embed the balance widget."""
    stored = run(with_apps(database_url, lambda s: s.add_origin(slug, origin)))
    typer.echo(f"app {slug}: widget allowed from {stored}")


@app.command("remove-origin")
def apps_remove_origin(slug: str, origin: str, database_url: DatabaseUrl = None) -> None:
    """Stop the widget answering pages at ORIGIN."""
    removed = run(with_apps(database_url, lambda s: s.remove_origin(slug, origin)))
    typer.echo(f"app {slug}: {origin} {'removed' if removed else 'was not registered'}")


@app.command("origins")
def apps_origins(slug: str, database_url: DatabaseUrl = None) -> None:
    """The origins that may embed the balance widget for this app."""
    found = run(with_apps(database_url, lambda s: s.origins(slug)))
    typer.echo("\n".join(found) if found else f"app {slug}: no origins")
