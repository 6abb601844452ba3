"""The signed-in user's history (a page at a time, or all of it as CSV) and usage of
the last 30 days (charts drawn in the browser from the page's JSON, and the same
numbers as tables)."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from tokenbank.accounts.service import SignedIn
from tokenbank.api.state import get_services
from tokenbank.db.reads import Freshness
from tokenbank.errors import InvalidInput
from tokenbank.ledger.accounts import RESERVED_OPERATION_TYPES, USAGE
from tokenbank.ledger.pages import HistoryFilters, HistoryRow, UsageRow
from tokenbank.web.auth import PageUser
from tokenbank.web.templating import page
from tokenbank.web.wallet_pages import no_wallet, parse_day, parse_page, reads, refusal_text

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 50
USAGE_DAYS = 30
KNOWN_TYPES = sorted({USAGE, *RESERVED_OPERATION_TYPES})
NO_MODEL_LABEL = "(no model)"
CSV_HEADER = ("date", "type", "description", "amount", "balance_after", "transaction_id")
# A spreadsheet runs a cell that starts with one of these as a formula (OWASP's CSV
# injection list): such a cell is written with a leading quote, read as text.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

TypeQuery = Annotated[str, Query(alias="type")]
FromQuery = Annotated[str, Query(alias="from")]
ToQuery = Annotated[str, Query(alias="to")]


@dataclass(frozen=True, slots=True)
class FilterForm:
    """The filters as typed (shown again in the form) and as parsed."""

    operation_type: str
    first_day: str
    last_day: str

    def parsed(self) -> HistoryFilters:
        return HistoryFilters(
            operation_type=self.operation_type.strip() or None,
            first_day=parse_day(self.first_day, "first_day"),
            last_day=parse_day(self.last_day, "last_day"),
        )

    def query(self, **more: Any) -> str:
        values = {"type": self.operation_type, "from": self.first_day, "to": self.last_day}
        return urlencode({k: v for k, v in {**values, **more}.items() if v})


def _history_page(
    request: Request,
    signed_in: SignedIn,
    form: FilterForm,
    *,
    rows: list[HistoryRow] | None = None,
    page_number: int = 1,
    has_next: bool = False,
    error: str | None = None,
    freshness: Freshness | None = None,
) -> HTMLResponse:
    return page(
        request,
        "history.html",
        signed_in,
        status_code=400 if error else 200,
        form=form,
        rows=rows or [],
        page_number=page_number,
        has_next=has_next,
        known_types=KNOWN_TYPES,
        error=error,
        freshness=freshness,
    )


@router.get("/tokens/history")
async def history(
    request: Request,
    signed_in: PageUser,
    operation_type: TypeQuery = "",
    first_day: FromQuery = "",
    last_day: ToQuery = "",
    page_number: Annotated[str, Query(alias="page")] = "",
) -> Response:
    form = FilterForm(operation_type[:200], first_day[:200], last_day[:200])
    if signed_in.user_id is None:
        return no_wallet(request, signed_in)
    try:
        filters, number = form.parsed(), parse_page(page_number)
    except InvalidInput as bad:
        return _history_page(request, signed_in, form, error=refusal_text(bad))
    # One row more than a page says whether there is a next page, without a count.
    found = await reads(request).history(
        signed_in.user_id, filters, limit=PAGE_SIZE + 1, offset=(number - 1) * PAGE_SIZE
    )
    if found is None:
        return no_wallet(request, signed_in)
    return _history_page(
        request,
        signed_in,
        form,
        rows=found[:PAGE_SIZE],
        page_number=number,
        has_next=len(found) > PAGE_SIZE,
        freshness=await reads(request).freshness(),
    )


def safe_cell(text: str | None) -> str:
    value = text or ""
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def csv_lines(rows: Iterable[HistoryRow]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    for row in rows:
        writer.writerow(
            (
                row.created_at.isoformat(),
                safe_cell(row.operation_type),
                safe_cell(row.description),
                row.amount_tokens,
                row.balance_after,
                row.transaction_id,
            )
        )
    return out.getvalue()


@router.get("/tokens/history.csv")
async def history_csv(
    request: Request,
    signed_in: PageUser,
    operation_type: TypeQuery = "",
    first_day: FromQuery = "",
    last_day: ToQuery = "",
) -> Response:
    """The whole filtered history, newest first, streamed a chunk at a time."""
    form = FilterForm(operation_type[:200], first_day[:200], last_day[:200])
    user_id = signed_in.user_id
    if user_id is None:
        return no_wallet(request, signed_in)
    try:
        filters = form.parsed()
    except InvalidInput as bad:
        return _history_page(request, signed_in, form, error=refusal_text(bad))
    chunks = reads(request).history_chunks(user_id, filters)

    async def body() -> AsyncIterator[str]:
        yield ",".join(CSV_HEADER) + "\r\n"
        async for chunk in chunks:
            yield csv_lines(chunk)

    headers = {
        "Content-Disposition": 'attachment; filename="tokenbank-history.csv"',
        "Cache-Control": "no-store",
    }
    return StreamingResponse(body(), media_type="text/csv; charset=utf-8", headers=headers)


# --- usage -----------------------------------------------------------------------------------


@dataclass
class Series:
    """Tokens and operations per day for each name (an operation type, or a model)."""

    days: list[str]
    tokens: dict[str, list[int]] = field(default_factory=dict)
    operations: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, day_index: int, row: UsageRow) -> None:
        self.tokens.setdefault(name, [0] * len(self.days))[day_index] += row.tokens
        self.operations[name] = self.operations.get(name, 0) + row.operations

    def totals(self) -> dict[str, int]:
        return {name: sum(values) for name, values in sorted(self.tokens.items())}

    def by_day(self) -> list[dict[str, Any]]:
        names = sorted(self.tokens)
        return [
            {"day": day, "values": [self.tokens[name][i] for name in names]}
            for i, day in enumerate(self.days)
        ]


def usage_summary(rows: list[UsageRow], days: list[str]) -> dict[str, Any]:
    """The page's JSON (usage-charts.js draws it) and its tables' numbers."""
    by_type, by_model = Series(days), Series(days)
    index = {day: i for i, day in enumerate(days)}
    for row in rows:
        if row.day in index:
            by_type.add(row.operation_type, index[row.day], row)
            by_model.add(row.model or NO_MODEL_LABEL, index[row.day], row)
    return {
        "days": days,
        "byType": dict(sorted(by_type.tokens.items())),
        "byModel": dict(sorted(by_model.tokens.items())),
        "totals": {
            "tokens": sum(row.tokens for row in rows if row.day in index),
            "operations": sum(row.operations for row in rows if row.day in index),
            "byType": by_type.totals(),
            "byModel": by_model.totals(),
            "operationsByType": dict(sorted(by_type.operations.items())),
            "operationsByModel": dict(sorted(by_model.operations.items())),
        },
        "tables": {"byType": by_type.by_day(), "byModel": by_model.by_day()},
    }


@router.get("/tokens/usage")
async def usage(request: Request, signed_in: PageUser) -> Response:
    user_id = signed_in.user_id
    rows = None if user_id is None else await reads(request).usage(user_id, USAGE_DAYS)
    if rows is None:
        return no_wallet(request, signed_in)
    today = get_services(request).tokens.clock().astimezone(UTC).date()
    days = [(today - timedelta(days=n)).isoformat() for n in range(USAGE_DAYS - 1, -1, -1)]
    summary = usage_summary(rows, days)
    tables = summary.pop("tables")
    freshness = await reads(request).freshness()
    return page(request, "usage.html", signed_in, usage=summary, tables=tables, freshness=freshness)
