"""``tokenbank features``: billable features and their pricing rules."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Annotated, Any

import typer

from tokenbank.cli._common import DatabaseUrl, ProfitOption, group, run, with_plans
from tokenbank.cli._errors import BAD_INPUT, fail
from tokenbank.plans.service import FeatureView
from tokenbank.pricing.rules import rule_json

app = group("Billable features and their pricing rules.")


@app.command("create")
def features_create(
    feature_id: Annotated[str, typer.Argument(metavar="ID", help="The feature_endpoint_id.")],
    name: Annotated[str, typer.Option(help="A human-readable name.")],
    rule: Annotated[str | None, typer.Option(help="The pricing rule as JSON.")] = None,
    fixed: Annotated[int | None, typer.Option(help="Rule: this many tokens a call.")] = None,
    output_ratio: Annotated[
        str | None,
        typer.Option(help="Rule: output tokens / RATIO (4 in the Token Process dialect)."),
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


@app.command("list")
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


@app.command("delete")
def features_delete(
    feature_id: Annotated[str, typer.Argument(metavar="ID")], database_url: DatabaseUrl = None
) -> None:
    """Delete a feature (it leaves every plan; past charges keep their record)."""
    run(with_plans(database_url, lambda plans: plans.delete_feature(feature_id)))
    typer.echo(f"feature {feature_id} deleted")


def pricing_rule_from_options(
    rule: str | None, fixed: int | None, output_ratio: str | None, per_unit: bool, image: bool
) -> dict[str, Any]:
    """Exactly one way of giving the rule; JSON numbers with a point become decimals."""
    given = [rule is not None, fixed is not None, output_ratio is not None, per_unit, image]
    if sum(given) != 1:
        fail("give exactly one of --rule, --fixed, --output-ratio, --per-unit, --image", BAD_INPUT)
    if rule is not None:
        return rule_from_json(rule)
    if fixed is not None:
        return {"type": "fixed", "tokens": fixed}
    if output_ratio is not None:
        return {"type": "output_ratio", "ratio": output_ratio}
    return {"type": "per_unit"} if per_unit else {"type": "image"}


def rule_from_json(rule: str) -> dict[str, Any]:
    """``--rule``: a JSON object, its numbers with a point read as decimals."""
    try:
        parsed = json.loads(rule, parse_float=Decimal)
    except json.JSONDecodeError as error:
        fail(f"--rule is not valid JSON: {error}", BAD_INPUT)
    if not isinstance(parsed, dict):
        fail('--rule must be a JSON object such as {"type": "fixed", "tokens": 5}', BAD_INPUT)
    return parsed


def describe_feature(feature: FeatureView) -> str:
    """One feature as a line: id, name, rule, pricing version and extras."""
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
