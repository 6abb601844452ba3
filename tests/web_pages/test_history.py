"""/tokens/history: the ledger a page at a time (newest first), filtered by type and by
UTC days; /tokens/history.csv: the same rows, every page, with formula cells
neutralised; bad filters answer 400 with the page."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta

import pytest

from tests.web_pages.conftest import Site

# Descriptions an app may send that a spreadsheet would run as formulas.
FORMULAS = ["=1+1", "+SUM(A1:A2)", "-2+3", "@cmd", "\tTAB"]


@pytest.fixture
async def history(site: Site) -> Site:
    """101 entries of alice over four UTC days, starting 2026-01-01:
    a bonus of 10,000 (01-01); 40 usage debits of 1 (01-02); 30 image_generation
    debits of 2 (01-03); 25 usage debits of 3 and 5 with formula descriptions (01-04)."""
    tokens = site.tokens
    await tokens.set_operation_cost("image_generation", 2)
    await tokens.credit("alice", amount=10_000, operation_type="bonus", description="welcome")
    site.clock.advance(timedelta(days=1))
    for _ in range(40):
        await tokens.debit("alice", amount=1, description="chat")
    site.clock.advance(timedelta(days=1))
    for _ in range(30):
        await tokens.debit("alice", amount=2, operation_type="image_generation")
    site.clock.advance(timedelta(days=1))
    for n in range(25):
        await tokens.debit("alice", amount=3, description=f"job {n}")
        site.clock.advance(timedelta(seconds=1))
    for text in FORMULAS:
        await tokens.debit("alice", amount=3, description=text)
    await tokens.debit("bob", amount=1, allow_overdraft=True)  # another wallet's row
    return site


def rows_of(html: str) -> list[list[str]]:
    """The history table's rows as their cells' text."""
    body = html.split("<tbody>")[1].split("</tbody>")[0]
    found = []
    for row in re.findall(r"<tr>(.*?)</tr>", body, re.S):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        if len(cells) == 5:
            found.append([cell.strip() for cell in cells])
    return found


async def test_the_history_pages_newest_first(history: Site) -> None:
    first = await history.alice.get("/tokens/history")
    second = await history.alice.get("/tokens/history?page=2")
    third = await history.alice.get("/tokens/history?page=3")

    assert first.status_code == second.status_code == third.status_code == 200
    one, two, three = rows_of(first.text), rows_of(second.text), rows_of(third.text)
    assert (len(one), len(two), len(three)) == (50, 50, 1)
    # Day 4's 30 debits of 3, then the newest 20 of day 3's images of 2.
    assert one[0] == ["2026-01-04 00:00:25", "usage", "TAB", "-3", "9,810"]
    assert one[30] == ["2026-01-03 00:00:00", "image_generation", "", "-2", "9,900"]
    assert [row[1] for row in one].count("usage") == 30
    assert three[0] == ["2026-01-01 00:00:00", "bonus", "welcome", "+10,000", "10,000"]
    # Each page links to the next older one, and back.
    assert 'href="/tokens/history?page=2" rel="next"' in first.text
    assert 'rel="prev"' not in first.text
    assert 'href="/tokens/history?" rel="prev"' in second.text
    assert 'href="/tokens/history?page=3" rel="next"' in second.text
    assert 'rel="next"' not in third.text


async def test_the_history_filters_by_type_and_days(history: Site) -> None:
    images = rows_of((await history.alice.get("/tokens/history?type=image_generation")).text)
    one_day = await history.alice.get("/tokens/history?from=2026-01-02&to=2026-01-02")
    since = await history.alice.get("/tokens/history?from=2026-01-03")
    since_two = await history.alice.get("/tokens/history?from=2026-01-03&page=2")
    until = rows_of((await history.alice.get("/tokens/history?to=2026-01-01")).text)
    nothing = await history.alice.get("/tokens/history?type=refund")

    assert len(images) == 30 and {row[1] for row in images} == {"image_generation"}
    day = rows_of(one_day.text)
    assert len(day) == 40 and {(row[1], row[3]) for row in day} == {("usage", "-1")}
    assert 'value="2026-01-02"' in one_day.text  # the filters stay in the form
    assert len(rows_of(since.text)) == 50
    assert 'href="/tokens/history?from=2026-01-03&amp;page=2" rel="next"' in since.text
    assert len(rows_of(since_two.text)) == 10
    assert [row[1] for row in until] == ["bonus"]
    assert rows_of(nothing.text) == [] and "Nothing here for these filters" in nothing.text
    # The CSV link carries the same filters.
    assert 'href="/tokens/history.csv?from=2026-01-02&amp;to=2026-01-02"' in one_day.text


async def test_nobody_sees_another_wallets_history(history: Site) -> None:
    rows = rows_of((await history.bob.get("/tokens/history")).text)

    assert rows == [[rows[0][0], "usage", "", "-1", "-1"]]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("type=Not%20A%20Type!", "Type: must be lower case letters"),
        ("from=2026-13-01", "From: a date as YYYY-MM-DD"),
        ("to=9999-12-31", "To: a date from 1970-01-01 to 9998-12-31"),
        ("from=0001-01-01", "From: a date from 1970-01-01"),
        ("to=yesterday", "To: a date as YYYY-MM-DD"),
        ("from=2026-01-04&to=2026-01-01", "From: must not be after the last day"),
        ("page=0", "page: a page number from 1 to 10,000"),
        ("page=abc", "page: a page number"),
        ("page=10001", "page: a page number"),
        ("type=" + "a" * 65, "Type: must be"),
    ],
)
async def test_bad_filters_answer_400_with_the_page(
    history: Site, query: str, message: str
) -> None:
    page = await history.alice.get(f"/tokens/history?{query}")
    export = await history.alice.get(f"/tokens/history.csv?{query}")

    assert page.status_code == 400 and message in page.text
    assert rows_of(page.text) == []
    if not query.startswith("page="):  # the export has no pages
        assert export.status_code == 400 and message in export.text


def csv_rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


async def test_the_csv_has_every_row_and_no_formula(history: Site) -> None:
    answer = await history.alice.get("/tokens/history.csv")

    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/csv; charset=utf-8"
    assert answer.headers["content-disposition"] == ('attachment; filename="tokenbank-history.csv"')
    header, *rows = csv_rows(answer.text)
    assert header == ["date", "type", "description", "amount", "balance_after", "transaction_id"]
    assert len(rows) == 101
    assert rows[-1][:5] == ["2026-01-01T00:00:00+00:00", "bonus", "welcome", "10000", "10000"]
    written = [row[2] for row in rows[:5]]
    assert sorted(written) == sorted("'" + text for text in FORMULAS)
    assert all(not cell.startswith(("=", "+", "-", "@", "\t")) for row in rows for cell in row[:3])
    assert rows[5][2] == "job 24" and rows[5][3] == "-3"  # numbers stay numbers


async def test_the_csv_follows_the_filters(history: Site) -> None:
    day = csv_rows(
        (await history.alice.get("/tokens/history.csv?from=2026-01-02&to=2026-01-02")).text
    )
    images = csv_rows((await history.alice.get("/tokens/history.csv?type=image_generation")).text)

    assert len(day) == 41 and {row[1] for row in day[1:]} == {"usage"}
    assert len(images) == 31 and {row[3] for row in images[1:]} == {"-2"}
