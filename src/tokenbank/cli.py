"""The ``tokenbank`` command.

Every command takes ``--database-url`` (or ``TOKENBANK_DATABASE_URL``). Errors print
one line on stderr and exit non-zero: 2 for bad input, 1 for everything else.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Coroutine
from decimal import Decimal
from typing import Annotated, Any, NoReturn, TypeVar

import jwt
import typer
from sqlalchemy.exc import DBAPIError, OperationalError

from tokenbank.apps.service import DEFAULT_SCOPES, AppService, parse_duration_seconds
from tokenbank.config import DEFAULT_PAGE_SIZE, MAX_USER_ID_LENGTH, Settings, get_settings
from tokenbank.db.engine import create_engine
from tokenbank.db.migrate import current_revision, head_revision, upgrade
from tokenbank.errors import IdempotencyConflict, InvalidInput, TokenBankError
from tokenbank.ledger.results import AuditReport, OperationResult
from tokenbank.ledger.service import TokenService
from tokenbank.plans.service import FeatureView, PlanService, PlanView
from tokenbank.pricing.rates import ModelRate
from tokenbank.pricing.rules import rule_json
from tokenbank.pricing.service import PricingService

T = TypeVar("T")

app = typer.Typer(
    name="tokenbank",
    help="tokenbank: wallets, a double-entry token ledger, and the API apps bill through.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
users_app = typer.Typer(help="User wallets.", no_args_is_help=True)
costs_app = typer.Typer(help="The operation cost table.", no_args_is_help=True)
holds_app = typer.Typer(help="Token holds (reservations).", no_args_is_help=True)
apps_app = typer.Typer(help="Registered apps and their API keys.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(users_app, name="users")
app.add_typer(costs_app, name="costs")
app.add_typer(holds_app, name="holds")
app.add_typer(apps_app, name="apps")

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="TOKENBANK_DATABASE_URL",
        help="SQLAlchemy URL (default: a SQLite file tokenbank.db in this directory).",
        show_envvar=True,
    ),
]


class CommandFailed(Exception):
    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def fail(message: str, exit_code: int = 1) -> NoReturn:
    raise CommandFailed(message, exit_code)


def die(message: str, exit_code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(exit_code)


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; turn every expected failure into one clear line."""
    try:
        return asyncio.run(coroutine)
    except CommandFailed as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(error.exit_code) from None
    except (InvalidInput, IdempotencyConflict) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    except TokenBankError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    except (OperationalError, OSError) as error:
        typer.echo(f"error: cannot use the database: {_first_line(error)}", err=True)
        raise typer.Exit(1) from None
    except DBAPIError as error:
        typer.echo(f"error: database refused the operation: {_first_line(error)}", err=True)
        raise typer.Exit(1) from None
    except ValueError as error:  # e.g. an unsupported database URL
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None


def _first_line(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error)
    return text.strip().splitlines()[0] if text.strip() else type(error).__name__


def _url(database_url: str | None) -> str:
    return database_url or get_settings().database_url


async def with_service(
    database_url: str | None, action: Callable[[TokenService], Awaitable[T]]
) -> T:
    """Open the service on a migrated database (refusing an unmigrated one) and act."""
    async with TokenService(_url(database_url), auto_migrate=False) as service:
        current = await current_revision(await service.engine())
        if current != head_revision():
            fail("the database is not migrated: run `tokenbank db upgrade` first")
        return await action(service)


def echo_result(result: OperationResult) -> None:
    if not result.success:
        die(f"{result.error} ({result.error_code})")
    typer.echo(
        f"ok: balance {result.new_balance} (entry {result.ledger_entry_id},"
        f" transaction {result.transaction_id})"
    )


# --- db ----------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(database_url: DatabaseUrl = None) -> None:
    """Create or migrate the database schema to the newest version."""

    async def action() -> str | None:
        engine = create_engine(_url(database_url), get_settings())
        try:
            await upgrade(engine)
            return await current_revision(engine)
        finally:
            await engine.dispose()

    typer.echo(f"database at revision {run(action())}")


@db_app.command("current")
def db_current(database_url: DatabaseUrl = None) -> None:
    """Print the schema revision of the database and the newest one."""

    async def action() -> str | None:
        engine = create_engine(_url(database_url), get_settings())
        try:
            return await current_revision(engine)
        finally:
            await engine.dispose()

    typer.echo(f"current: {run(action())}  head: {head_revision()}")


# --- users -------------------------------------------------------------------------------


@users_app.command("create")
def users_create(user_id: str, database_url: DatabaseUrl = None) -> None:
    """Open a wallet for USER_ID (idempotent; a new wallet gets the welcome bonus)."""
    result = run(with_service(database_url, lambda service: service.open_wallet(user_id)))
    state = "created" if result.created else "already exists"
    typer.echo(f"wallet {user_id} {state}: balance {result.new_balance}")


@users_app.command("set-status")
def users_set_status(
    user_id: str,
    status: Annotated[str, typer.Argument(help="active, suspended or closed")],
    database_url: DatabaseUrl = None,
) -> None:
    """Suspend, close or reactivate a wallet."""
    info = run(with_service(database_url, lambda s: s.set_wallet_status(user_id, status)))
    if info is None:
        die(f"no wallet for user {user_id!r}")
    typer.echo(f"wallet {user_id} is now {status}")


# --- money ---------------------------------------------------------------------------------


@app.command("grant")
def grant(
    user_id: str,
    amount: int,
    reason: Annotated[str, typer.Option("--reason", help="Why: recorded on the ledger.")],
    idempotency_key: Annotated[
        str | None, typer.Option("--idempotency-key", help="Makes a retried grant safe.")
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Grant AMOUNT tokens to USER_ID as an admin_grant."""
    result = run(
        with_service(
            database_url,
            lambda service: service.credit(
                user_id,
                amount=amount,
                operation_type="admin_grant",
                description=reason,
                idempotency_key=idempotency_key,
            ),
        )
    )
    echo_result(result)


@app.command("balance")
def balance(user_id: str, database_url: DatabaseUrl = None) -> None:
    """Show a user's balance, held and available tokens."""
    info = run(with_service(database_url, lambda service: service.get_balance(user_id)))
    if info is None:
        die(f"no wallet for user {user_id!r}")
    typer.echo(
        f"{user_id}: balance {info.tokens_balance}, held {info.held},"
        f" available {info.available}, spent {info.tokens_spent}, status {info.status}"
    )


@app.command("history")
def history(
    user_id: str,
    limit: Annotated[int, typer.Option(help="Entries per page.")] = DEFAULT_PAGE_SIZE,
    offset: Annotated[int, typer.Option(help="Entries to skip.")] = 0,
    operation_type: Annotated[str | None, typer.Option("--type", help="Only this type.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """List a user's ledger entries, newest first."""
    entries = run(
        with_service(
            database_url,
            lambda service: service.get_ledger().get_user_entries(
                user_id, limit=limit, offset=offset, operation_type=operation_type
            ),
        )
    )
    for entry in entries:
        if as_json:
            typer.echo(
                json.dumps(
                    {
                        "id": entry.id,
                        "type": entry.operation_type,
                        "amount": entry.tokens_amount,
                        "balance_before": entry.balance_before,
                        "balance_after": entry.balance_after,
                        "description": entry.description,
                        "created_at": entry.created_at.isoformat(),
                    }
                )
            )
        else:
            typer.echo(
                f"{entry.created_at:%Y-%m-%d %H:%M:%S}  #{entry.id:<6}"
                f" {entry.operation_type:<18} {entry.tokens_amount:>+12}"
                f"  -> {entry.balance_after:<12} {entry.description or ''}"
            )
    if not entries and not as_json:
        typer.echo(f"no entries for {user_id}")


# --- costs ---------------------------------------------------------------------------------


@costs_app.command("set")
def costs_set(operation: str, tokens: int, database_url: DatabaseUrl = None) -> None:
    """Set what one OPERATION costs, in tokens."""
    run(with_service(database_url, lambda service: service.set_operation_cost(operation, tokens)))
    typer.echo(f"{operation} costs {tokens} tokens")


@costs_app.command("list")
def costs_list(database_url: DatabaseUrl = None) -> None:
    """List the cost table."""
    table = run(with_service(database_url, lambda service: service.get_operation_costs()))
    for operation, tokens in sorted(table.items()):
        typer.echo(f"{operation:<32} {tokens:>12}")


@costs_app.command("delete")
def costs_delete(operation: str, database_url: DatabaseUrl = None) -> None:
    """Remove OPERATION from the cost table."""
    deleted = run(
        with_service(database_url, lambda service: service.delete_operation_cost(operation))
    )
    if not deleted:
        die(f"no cost is set for {operation!r}")
    typer.echo(f"{operation} removed")


# --- holds and audit -----------------------------------------------------------------------


@holds_app.command("sweep")
def holds_sweep(database_url: DatabaseUrl = None) -> None:
    """Release every expired hold."""
    released = run(with_service(database_url, lambda service: service.release_expired_holds()))
    typer.echo(f"released {released} expired holds")


@app.command("audit")
def audit(database_url: DatabaseUrl = None) -> None:
    """Prove the books: exit 0 exactly when every check passes."""
    report = run(with_service(database_url, lambda service: service.audit()))
    print_audit(report)
    if not report.ok:
        raise typer.Exit(1)


def print_audit(report: AuditReport) -> None:
    typer.echo(
        f"{report.transactions} transactions, {report.entries} entries, {report.wallets} wallets"
    )
    for account, total in sorted(report.system_balances.items()):
        typer.echo(f"  system account {account}: {total}")
    if report.ok:
        typer.echo("audit passed: every transaction sums to zero and every balance matches")
        return
    for problem, rows in report.problems.items():
        typer.echo(f"FAILED {problem}:", err=True)
        for row in rows:
            typer.echo(f"  {row}", err=True)


# --- apps and API keys ----------------------------------------------------------------------


async def with_apps(database_url: str | None, action: Callable[[AppService], Awaitable[T]]) -> T:
    async def act(service: TokenService) -> T:
        return await action(AppService(await service.engine()))

    return await with_service(database_url, act)


ScopeOption = Annotated[
    list[str] | None,
    typer.Option("--scope", help="read, spend, refund, credit or admin; repeat for several."),
]


@apps_app.command("create")
def apps_create(
    slug: str,
    scope: ScopeOption = None,
    name: Annotated[str | None, typer.Option(help="A human-readable name.")] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Register an app and print its API key (shown this once only)."""
    scopes = tuple(scope) if scope else DEFAULT_SCOPES
    info, key = run(with_apps(database_url, lambda s: s.create_app(slug, scopes=scopes, name=name)))
    typer.echo(f"app {info.slug} created with scopes {','.join(scopes)}")
    typer.echo("API key (store it now: it is not shown again):")
    typer.echo(key)


@apps_app.command("list")
def apps_list(database_url: DatabaseUrl = None) -> None:
    """List apps and their keys (prefixes only)."""
    for info in run(with_apps(database_url, lambda s: s.list_apps())):
        typer.echo(f"{info.slug}  (created {info.created_at:%Y-%m-%d})")
        for key in info.keys:
            state = "active" if key.active else ("revoked" if key.revoked_at else "expired")
            expiry = f", expires {key.expires_at:%Y-%m-%d %H:%M}" if key.expires_at else ""
            typer.echo(f"  {key.display_prefix}...  {','.join(key.scopes)}  {state}{expiry}")


@apps_app.command("rotate-key")
def apps_rotate_key(
    slug: str,
    old_key_expires_in: Annotated[
        str, typer.Option(help="Grace period for the old key: 0, 30s, 15m, 24h, 7d.")
    ] = "0",
    scope: ScopeOption = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Issue a new key; the old ones stop working after the grace period."""
    try:
        seconds = parse_duration_seconds(old_key_expires_in)
    except InvalidInput as error:
        die(str(error), 2)
    key = run(
        with_apps(
            database_url,
            lambda s: s.rotate_key(slug, old_key_expires_in_seconds=seconds, scopes=scope),
        )
    )
    typer.echo(f"new API key for {slug} (store it now: it is not shown again):")
    typer.echo(key)


@apps_app.command("revoke-key")
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
        die(f"no live key to revoke for {slug!r}")
    typer.echo(f"revoked {revoked} key(s) of {slug}")


# --- plans, features and model prices (issue: HTTP service) ---------------------------------

features_app = typer.Typer(help="Billable features and their pricing rules.", no_args_is_help=True)
plans_app = typer.Typer(help="Plans: the features users may use.", no_args_is_help=True)
models_app = typer.Typer(help="Per-model rates (per_unit and image rules).", no_args_is_help=True)
app.add_typer(features_app, name="features")
app.add_typer(plans_app, name="plans")
app.add_typer(models_app, name="models")

ProfitOption = Annotated[
    str | None,
    typer.Option("--profit-percent", help="Profit on top of the base cost, e.g. 20 or 12.5."),
]


async def with_plans(database_url: str | None, action: Callable[[PlanService], Awaitable[T]]) -> T:
    async def act(service: TokenService) -> T:
        return await action(PlanService(await service.engine()))

    return await with_service(database_url, act)


async def with_pricing(
    database_url: str | None, action: Callable[[PricingService], Awaitable[T]]
) -> T:
    async def act(service: TokenService) -> T:
        return await action(PricingService(await service.engine(), settings=get_settings()))

    return await with_service(database_url, act)


def pricing_rule_from_options(
    rule: str | None, fixed: int | None, output_ratio: str | None, per_unit: bool, image: bool
) -> dict[str, Any]:
    """Exactly one way of giving the rule; JSON numbers with a point become decimals."""
    given = [rule is not None, fixed is not None, output_ratio is not None, per_unit, image]
    if sum(given) != 1:
        die("give exactly one of --rule, --fixed, --output-ratio, --per-unit, --image", 2)
    if rule is not None:
        try:
            parsed = json.loads(rule, parse_float=Decimal)
        except json.JSONDecodeError as error:
            die(f"--rule is not valid JSON: {error}", 2)
        if not isinstance(parsed, dict):
            die('--rule must be a JSON object such as {"type": "fixed", "tokens": 5}', 2)
        return parsed
    if fixed is not None:
        return {"type": "fixed", "tokens": fixed}
    if output_ratio is not None:
        return {"type": "output_ratio", "ratio": output_ratio}
    return {"type": "per_unit"} if per_unit else {"type": "image"}


def describe_feature(feature: FeatureView) -> str:
    extras = [f"min balance {feature.min_balance_tokens}"]
    if feature.hold_tokens is not None:
        extras.append(f"hold {feature.hold_tokens}")
    if feature.profit_percent is not None:
        extras.append(f"profit {feature.profit_percent}%")
    if feature.app is not None:
        extras.append(f"app {feature.app}")
    rule = json.dumps(rule_json(feature.rule), separators=(",", ":"))
    return f"{feature.id}  {feature.name!r}  {rule}  v{feature.pricing_version}  " + ", ".join(
        extras
    )


def describe_plan(plan: PlanView) -> str:
    features = ", ".join(plan.features) or "no features"
    return (
        f"{plan.name}  allocation {plan.monthly_allocation_tokens}/month,"
        f" profit {plan.profit_percent}%: {features}"
    )


@features_app.command("create")
def features_create(
    feature_id: Annotated[str, typer.Argument(metavar="ID", help="The feature_endpoint_id.")],
    name: Annotated[str, typer.Option(help="A human-readable name.")],
    rule: Annotated[str | None, typer.Option(help="The pricing rule as JSON.")] = None,
    fixed: Annotated[int | None, typer.Option(help="Rule: this many tokens a call.")] = None,
    output_ratio: Annotated[
        str | None, typer.Option(help="Rule: output tokens / RATIO (seed 001: 4).")
    ] = None,
    per_unit: Annotated[
        bool, typer.Option("--per-unit", help="Rule: model rates x token multiplier.")
    ] = False,
    image: Annotated[
        bool, typer.Option("--image", help="Rule: fixed image cost by model.")
    ] = False,
    min_balance: Annotated[
        int, typer.Option(help="Available tokens a start needs to be access-able.")
    ] = 0,
    hold_tokens: Annotated[
        int | None, typer.Option(help="Hold mode: tokens a start reserves.")
    ] = None,
    app_slug: Annotated[str | None, typer.Option("--app", help="The app it belongs to.")] = None,
    profit_percent: ProfitOption = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create a feature with its pricing rule."""
    pricing_rule = pricing_rule_from_options(rule, fixed, output_ratio, per_unit, image)
    feature = run(
        with_plans(
            database_url,
            lambda plans: plans.create_feature(
                feature_id,
                name=name,
                rule=pricing_rule,
                min_balance_tokens=min_balance,
                hold_tokens=hold_tokens,
                profit_percent=profit_percent,
                app=app_slug,
            ),
        )
    )
    typer.echo(f"feature created: {describe_feature(feature)}")


@features_app.command("list")
def features_list(
    app_slug: Annotated[str | None, typer.Option("--app", help="Only this app's.")] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """List features and their pricing rules."""
    features = run(with_plans(database_url, lambda plans: plans.list_features(app=app_slug)))
    for feature in features:
        typer.echo(describe_feature(feature))
    if not features:
        typer.echo("no features")


@features_app.command("delete")
def features_delete(
    feature_id: Annotated[str, typer.Argument(metavar="ID")], database_url: DatabaseUrl = None
) -> None:
    """Delete a feature (it leaves every plan; past charges keep their record)."""
    run(with_plans(database_url, lambda plans: plans.delete_feature(feature_id)))
    typer.echo(f"feature {feature_id} deleted")


@plans_app.command("create")
def plans_create(
    name: str,
    allocation: Annotated[int, typer.Option(help="Monthly allocation in tokens.")] = 0,
    profit_percent: ProfitOption = None,
    feature: Annotated[
        list[str] | None, typer.Option("--feature", help="A feature ID; repeat for several.")
    ] = None,
    description: Annotated[str | None, typer.Option(help="What the plan is.")] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create a plan."""
    plan = run(
        with_plans(
            database_url,
            lambda plans: plans.create_plan(
                name,
                description=description,
                monthly_allocation_tokens=allocation,
                profit_percent=profit_percent or "0",
                features=feature or [],
            ),
        )
    )
    typer.echo(f"plan created: {describe_plan(plan)}")


@plans_app.command("list")
def plans_list(database_url: DatabaseUrl = None) -> None:
    """List plans and their features."""
    plans = run(with_plans(database_url, lambda service: service.list_plans()))
    for plan in plans:
        typer.echo(describe_plan(plan))
    if not plans:
        typer.echo("no plans")


@plans_app.command("add-feature")
def plans_add_feature(plan: str, feature_id: str, database_url: DatabaseUrl = None) -> None:
    """Let the plan's users use a feature."""
    updated = run(with_plans(database_url, lambda s: s.add_feature_to_plan(plan, feature_id)))
    typer.echo(f"plan {describe_plan(updated)}")


@plans_app.command("remove-feature")
def plans_remove_feature(plan: str, feature_id: str, database_url: DatabaseUrl = None) -> None:
    """Take a feature out of a plan."""
    updated = run(with_plans(database_url, lambda s: s.remove_feature_from_plan(plan, feature_id)))
    typer.echo(f"plan {describe_plan(updated)}")


@plans_app.command("delete")
def plans_delete(name: str, database_url: DatabaseUrl = None) -> None:
    """Delete a plan that no wallet is on."""
    run(with_plans(database_url, lambda plans: plans.delete_plan(name)))
    typer.echo(f"plan {name} deleted")


@users_app.command("set-plan")
def users_set_plan(
    user_id: str,
    plan: Annotated[str, typer.Argument(help="The plan's name.")],
    database_url: DatabaseUrl = None,
) -> None:
    """Put a user on a plan."""
    run(with_plans(database_url, lambda plans: plans.set_user_plan(user_id, plan)))
    typer.echo(f"{user_id} is now on plan {plan}")


def describe_rate(rate: ModelRate) -> str:
    image = "-" if rate.image_tokens is None else str(rate.image_tokens)
    return (
        f"{rate.model:<32} input {rate.input_tokens_per_unit:<10} output"
        f" {rate.output_tokens_per_unit:<10} image {image:<10} ({rate.source})"
    )


@models_app.command("list")
def models_list(database_url: DatabaseUrl = None) -> None:
    """List model rates: the shipped table with the database's overrides."""
    for rate in run(with_pricing(database_url, lambda pricing: pricing.list_model_rates())):
        typer.echo(describe_rate(rate))


@models_app.command("set")
def models_set(
    model: str,
    input_rate: Annotated[
        str, typer.Option("--input", help="Tokens per input unit, e.g. 1 or 0.25.")
    ],
    output_rate: Annotated[str, typer.Option("--output", help="Tokens per output unit.")],
    image_tokens: Annotated[
        int | None, typer.Option("--image", help="Tokens per image (image rule).")
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Set one model's rates (overrides the shipped row)."""
    rate = run(
        with_pricing(
            database_url,
            lambda pricing: pricing.set_model_rate(
                model,
                input_tokens_per_unit=input_rate,
                output_tokens_per_unit=output_rate,
                image_tokens=image_tokens,
            ),
        )
    )
    typer.echo(describe_rate(rate))


@models_app.command("delete")
def models_delete(model: str, database_url: DatabaseUrl = None) -> None:
    """Remove a model's override (its shipped rates, if any, apply again)."""
    if not run(with_pricing(database_url, lambda pricing: pricing.delete_model_rate(model))):
        die(f"no override is set for model {model!r}")
    typer.echo(f"override for {model} removed")


# --- user tokens for apps (issue 4: the client SDK) -------------------------------------------
#
# Seed 000's option B: tokenbank signs a short-lived HS256 JWT whose ``sub`` is the user
# id; an app holding the same secret verifies it (tokenbank.client.verify_jwt) without
# calling tokenbank. This command mints one so that apps can be tested today.

MIN_JWT_SECRET_BYTES = 32  # HS256 wants a key at least as long as its 256-bit hash
MAX_USER_TOKEN_TTL_SECONDS = 30 * 24 * 3600
JWT_ISSUER = "tokenbank"


@users_app.command("token")
def users_token(
    user_id: str,
    expires_in: Annotated[
        str, typer.Option("--expires-in", help="Lifetime: 90, 30s, 15m, 1h or 7d (max 30d).")
    ] = "1h",
) -> None:
    """Mint an HS256 JWT for USER_ID, signed with TOKENBANK_JWT_SECRET (no database)."""
    secret = Settings().jwt_secret
    if secret is None:
        die("no JWT secret configured: set TOKENBANK_JWT_SECRET (at least 32 bytes)")
    key = secret.get_secret_value()
    if len(key.encode()) < MIN_JWT_SECRET_BYTES:
        die(f"TOKENBANK_JWT_SECRET must be at least {MIN_JWT_SECRET_BYTES} bytes")
    if not user_id or len(user_id) > MAX_USER_ID_LENGTH:
        die(f"USER_ID must be 1 to {MAX_USER_ID_LENGTH} characters", 2)
    try:
        seconds = parse_duration_seconds(expires_in)
    except InvalidInput as error:
        die(str(error), 2)
    if not 0 < seconds <= MAX_USER_TOKEN_TTL_SECONDS:
        die("--expires-in must be more than 0 and at most 30d", 2)
    now = int(time.time())
    claims = {"sub": user_id, "iss": JWT_ISSUER, "iat": now, "exp": now + seconds}
    typer.echo(jwt.encode(claims, key, algorithm="HS256"))


# --- serve ----------------------------------------------------------------------------------


@app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes.", min=1, max=64)] = 1,
    migrate: Annotated[
        bool, typer.Option(help="Run `db upgrade` before serving (once, before workers).")
    ] = True,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    database_url: DatabaseUrl = None,
) -> None:
    """Serve the HTTP API (OpenAPI and interactive docs at /docs)."""
    import os

    import uvicorn

    if database_url:
        # Workers build their settings from the environment.
        os.environ["TOKENBANK_DATABASE_URL"] = database_url
        get_settings.cache_clear()
    if migrate:
        db_upgrade(database_url)
    uvicorn.run(
        "tokenbank.api.app:create_server_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        access_log=False,
        server_header=False,
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
