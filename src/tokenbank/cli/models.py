"""``tokenbank models``: per-model rates, the shipped table and its overrides."""

from __future__ import annotations

from typing import Annotated

import typer

from tokenbank.cli._common import DatabaseUrl, group, run, with_pricing
from tokenbank.cli._errors import fail
from tokenbank.pricing.rates import ModelRate

app = group("Per-model rates (per_unit and image rules).")


@app.command("list")
def models_list(database_url: DatabaseUrl = None) -> None:
    """List model rates: the shipped table with the database's overrides."""
    for rate in run(with_pricing(database_url, lambda pricing: pricing.list_model_rates())):
        typer.echo(describe_rate(rate))


@app.command("set")
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


@app.command("delete")
def models_delete(model: str, database_url: DatabaseUrl = None) -> None:
    """Remove a model's override (its shipped rates, if any, apply again)."""
    if not run(with_pricing(database_url, lambda pricing: pricing.delete_model_rate(model))):
        fail(f"no override is set for model {model!r}")
    typer.echo(f"override for {model} removed")


def describe_rate(rate: ModelRate) -> str:
    """One model's rates as a line of the ``models list`` table."""
    image = "-" if rate.image_tokens is None else str(rate.image_tokens)
    return (
        f"{rate.model:<32} input {rate.input_tokens_per_unit:<10} output"
        f" {rate.output_tokens_per_unit:<10} image {image:<10} ({rate.source})"
    )
