"""``tokenbank plans``: plans, their allocations and the features they include."""

from __future__ import annotations

from typing import Annotated

import typer

from tokenbank.cli._common import DatabaseUrl, ProfitOption, group, run, with_plans
from tokenbank.plans.service import PlanView

app = group("Plans: the features users may use.")


@app.command("create")
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
    return (
        f"{plan.name}  allocation {plan.monthly_allocation_tokens}/month,"
        f" profit {plan.profit_percent}%: {features}"
    )
