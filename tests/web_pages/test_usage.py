"""/tokens/usage: tokens that debits took over the last 30 UTC days, by operation type
and by model (the pricing record's model, else the app's metadata ``model``), as the
JSON the charts are drawn from and as tables; plotly.js served from the plotly wheel."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import timedelta
from typing import Any

from tests.web_pages.conftest import Site
from tokenbank.ledger.pages import SETTLE_SECONDS, UserPages

# The record the token process keeps on a charge (pricing/calculator.py, Quote.record).
PRICED = {"rule": {"type": "per_unit", "model": "gpt-4o"}, "model": "gpt-4o", "cost_tokens": 7}


def usage_json(html: str) -> dict[str, Any]:
    found = re.search(r'<script type="application/json" id="usage-data">(.*?)</script>', html)
    assert found is not None
    data: dict[str, Any] = json.loads(found.group(1))
    return data


async def seed(site: Site) -> None:
    """Debits on 2026-01-01 (40 days before the page's day), 2026-02-01 and
    2026-02-10, the page's day."""
    tokens = site.tokens
    await tokens.set_operation_cost("image_generation", 50)
    await tokens.credit("alice", amount=100_000, operation_type="bonus")
    await tokens.debit("alice", amount=1_000, metadata={"model": "gpt-4o"})  # too old
    site.clock.set(site.clock() + timedelta(days=31))  # 2026-02-01
    await tokens.debit("alice", amount=7, pricing=PRICED, metadata={"model": "ignored"})
    await tokens.debit("alice", amount=10, metadata={"model": "claude-3"})
    await tokens.debit("alice", amount=50, operation_type="image_generation")
    site.clock.set(site.clock() + timedelta(days=9))  # 2026-02-10
    await tokens.debit("alice", amount=20, metadata={"model": "claude-3"})
    await tokens.debit("alice", amount=100, operation_type="image_generation")
    await tokens.credit("alice", amount=500, operation_type="admin_grant")  # not usage
    hold = await tokens.hold("alice", amount=30)
    assert hold.hold_id is not None
    await tokens.capture(hold.hold_id, amount=25)  # a captured hold is usage too
    await tokens.debit("bob", amount=9, allow_overdraft=True)  # another wallet


async def test_usage_totals_by_type_and_model(site: Site) -> None:
    await seed(site)

    answer = await site.alice.get("/tokens/usage")

    assert answer.status_code == 200
    usage = usage_json(answer.text)
    assert len(usage["days"]) == 30
    assert (usage["days"][0], usage["days"][-1]) == ("2026-01-12", "2026-02-10")
    totals = usage["totals"]
    assert (totals["tokens"], totals["operations"]) == (212, 6)
    assert totals["byType"] == {"image_generation": 150, "usage": 62}
    assert totals["byModel"] == {"(no model)": 175, "claude-3": 30, "gpt-4o": 7}
    assert totals["operationsByModel"] == {"(no model)": 3, "claude-3": 2, "gpt-4o": 1}
    first, last = usage["days"].index("2026-02-01"), 29
    assert usage["byType"]["usage"][first] == 17 and usage["byType"]["usage"][last] == 45
    assert usage["byType"]["image_generation"][first] == 50
    assert usage["byModel"]["gpt-4o"] == [0] * first + [7] + [0] * (29 - first)
    assert sum(usage["byModel"]["claude-3"]) == 30
    # The same numbers as tables, and the charts' scripts from tokenbank itself.
    assert "212 tokens spent in 6 operations" in answer.text
    assert '<th scope="row">gpt-4o</th><td class="num">7</td><td class="num">1</td>' in answer.text
    assert '<script src="/static/vendor/plotly.min.js" defer></script>' in answer.text
    assert '<script src="/static/usage-charts.js" defer></script>' in answer.text
    # Nothing from another host. (A substring test such as "cdn" fails whenever the
    # random CSRF token on the page happens to spell it.)
    assert re.findall(r'(?:src|href)="(?:[a-z]+:)?//', answer.text) == []


async def test_usage_follows_new_debits_today_and_past_days_stay_right(site: Site) -> None:
    await seed(site)
    before = usage_json((await site.alice.get("/tokens/usage")).text)["totals"]

    await site.tokens.debit("alice", amount=5, metadata={"model": "gpt-4o"})
    today = usage_json((await site.alice.get("/tokens/usage")).text)["totals"]
    site.clock.advance(timedelta(days=1))
    await site.tokens.debit("alice", amount=3)
    tomorrow = usage_json((await site.alice.get("/tokens/usage")).text)

    assert today["tokens"] == before["tokens"] + 5
    assert today["byModel"]["gpt-4o"] == 12
    assert tomorrow["days"][-1] == "2026-02-11"
    assert tomorrow["totals"]["tokens"] == before["tokens"] + 5 + 3
    assert tomorrow["byType"]["usage"][-2:] == [50, 3]


async def test_kept_usage_stays_exact_as_the_ledger_grows(site: Site) -> None:
    """Settled entries are summed once and kept; newer ones are read on each visit;
    a kept sum that counts fewer entries than the database (a late commit below its
    mark) is made again from the start."""
    await seed(site)

    async def tokens() -> int:
        return int(usage_json((await site.alice.get("/tokens/usage")).text)["totals"]["tokens"])

    assert await tokens() == 212
    pages = reads_of(site)
    # Today's debits (written at the clock's now) are not settled yet: read, not kept.
    (early,) = pages._usage.values()
    assert sum(v[0] for v in early.usage.values()) == 7 + 10 + 50
    site.clock.advance(timedelta(seconds=SETTLE_SECONDS + 1))
    assert await tokens() == 212
    (kept,) = pages._usage.values()
    assert kept.upto_id > early.upto_id and sum(v[0] for v in kept.usage.values()) == 212
    await site.tokens.debit("alice", amount=5)  # newer than the mark: read on each visit
    assert await tokens() == 217
    assert next(iter(pages._usage.values())) is kept
    site.clock.advance(timedelta(seconds=SETTLE_SECONDS + 1))
    assert await tokens() == 217
    (grown,) = pages._usage.values()
    assert grown.upto_id > kept.upto_id
    key = next(iter(pages._usage))
    pages._usage[key] = dataclasses.replace(grown, entries=grown.entries - 1, usage={})
    assert await tokens() == 217  # the count told; summed again from the start


def reads_of(site: Site) -> UserPages:
    found = site.app.state.user_pages
    assert isinstance(found, UserPages)
    return found


async def test_a_model_name_cannot_break_out_of_the_json(site: Site) -> None:
    await site.tokens.credit("alice", amount=100, operation_type="bonus")
    await site.tokens.debit("alice", amount=1, metadata={"model": "</script><b>x"})

    html = (await site.alice.get("/tokens/usage")).text

    assert "</script><b>" not in html
    assert usage_json(html)["totals"]["byModel"] == {"</script><b>x": 1}


async def test_usage_without_any_debit(site: Site) -> None:
    answer = await site.alice.get("/tokens/usage")

    assert answer.status_code == 200
    assert usage_json(answer.text)["totals"]["tokens"] == 0
    assert "No usage in these days." in answer.text


async def test_plotly_is_served_from_the_installed_package(site: Site) -> None:
    answer = await site.anonymous.get("/static/vendor/plotly.min.js")
    again = await site.anonymous.get(
        "/static/vendor/plotly.min.js", headers={"If-None-Match": answer.headers["etag"]}
    )

    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/javascript")
    assert len(answer.content) > 1_000_000 and b"plotly.js" in answer.content[:2_000]
    assert again.status_code == 304 and again.content == b""
    # The stylesheet beside it still comes from the static folder.
    assert (await site.anonymous.get("/static/tokenbank.css")).status_code == 200
    assert (await site.anonymous.get("/static/usage-charts.js")).status_code == 200
