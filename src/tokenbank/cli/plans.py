"""``tokenbank plans``: plans, their allocations and the features they include."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer

from tokenbank.cli._common import DatabaseUrl, ProfitOption, group, run, with_plans
from tokenbank.cli._errors import BAD_INPUT, fail
from tokenbank.plans.service import PlanView


class AllocationPolicy(StrEnum):
    EXPIRE = "expire"
    ROLLOVER = "rollover"
    KEEP = "keep"


app = group("Plans: the features users may use and their monthly allocations.")

PolicyOption = Annotated[
    AllocationPolicy | None,
    typer.Option(
        "--policy",
        help="What a renewal does with the previous allocation's remainder:"
        " expire (at period end), rollover (up to --rollover-cap) or keep.",
    ),
]
RolloverCapOption = Annotated[
    int | None,
    typer.Option(
        "--rollover-cap",
        min=0,
        help="Under rollover, the most that carries over (default: one allocation).",
    ),
]


@app.command("create")
def plans_create(
    name: str,
    allocation: Annotated[int, typer.Option(help="Monthly allocation in tokens.")] = 0,
    profit_percent: ProfitOption = None,
    feature: Annotated[
        list[str] | None, typer.Option("--feature", help="A feature ID; repeat for several.")
    ] = None,
    description: Annotated[str | None, typer.Option(help="What the plan is.")] = None,
    policy: PolicyOption = None,
    rollover_cap: RolloverCapOption = None,
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
                allocation_policy=(policy or AllocationPolicy.EXPIRE).value,
                rollover_cap_tokens=rollover_cap,
            ),
        )
    )
    typer.echo(f"plan created: {describe_plan(plan)}")


@app.command("update")
def plans_update(
    name: str,
    allocation: Annotated[
        int | None, typer.Option(min=0, help="Monthly allocation in tokens.")
    ] = None,
    policy: PolicyOption = None,
    rollover_cap: RolloverCapOption = None,
    stripe_price_id: Annotated[
        str | None,
        typer.Option(help="The Stripe price of a subscription to the plan ('' removes it)."),
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Change a plan's allocation, policy or Stripe price (each wallet's next renewal
    uses them)."""
    changes: dict[str, Any] = {}
    if allocation is not None:
        changes["monthly_allocation_tokens"] = allocation
    if policy is not None:
        changes["allocation_policy"] = policy.value
    if rollover_cap is not None:
        changes["rollover_cap_tokens"] = rollover_cap
    if stripe_price_id is not None:
        changes["stripe_price_id"] = stripe_price_id or None
    if not changes:
        fail(
            "nothing to change: give --allocation, --policy, --rollover-cap or --stripe-price-id",
            BAD_INPUT,
        )
    plan = run(with_plans(database_url, lambda plans: plans.update_plan(name, **changes)))
    typer.echo(f"plan updated: {describe_plan(plan)}")


@app.command("seed-defaults")
def plans_seed_defaults(database_url: DatabaseUrl = None) -> None:
    """Create the default tiers: Gift 100, Professional 2,000, Business 10,000 tokens a
    month (plans that exist are left as they are)."""
    created = run(with_plans(database_url, lambda plans: plans.seed_default_plans()))
    for plan in created:
        typer.echo(f"plan created: {describe_plan(plan)}")
    typer.echo(f"{len(created)} plan(s) created; existing plans left as they were")


@app.command("list")
def plans_list(database_url: DatabaseUrl = None) -> None:
    """List plans and their features."""
    plans = run(with_plans(database_url, lambda service: service.list_plans()))
    for plan in plans:
        typer.echo(describe_plan(plan))
    if not plans:
        typer.echo("no plans")


@app.command("add-feature")
def plans_add_feature(plan: str, feature_id: str, database_url: DatabaseUrl = None) -> None:
    """Let the plan's users use a feature."""
    updated = run(with_plans(database_url, lambda s: s.add_feature_to_plan(plan, feature_id)))
    typer.echo(f"plan {describe_plan(updated)}")


@app.command("remove-feature")
def plans_remove_feature(plan: str, feature_id: str, database_url: DatabaseUrl = None) -> None:
    """Take a feature out of a plan."""
    updated = run(with_plans(database_url, lambda s: s.remove_feature_from_plan(plan, feature_id)))
    typer.echo(f"plan {describe_plan(updated)}")


@app.command("delete")
def plans_delete(name: str, database_url: DatabaseUrl = None) -> None:
    """Delete a plan that no wallet is on."""
    run(with_plans(database_url, lambda plans: plans.delete_plan(name)))
    typer.echo(f"plan {name} deleted")


def describe_plan(plan: PlanView) -> str:
    """One plan as a line: name, allocation, profit and features."""
    features = ", ".join(plan.features) or "no features"
    policy = plan.allocation_policy
    if policy == "rollover":
        cap = plan.rollover_cap_tokens
        policy += f" (cap {plan.monthly_allocation_tokens if cap is None else cap})"
    return (
        f"{plan.name}  allocation {plan.monthly_allocation_tokens}/month, {policy},"
        f" profit {plan.profit_percent}%: {features}"
    )
