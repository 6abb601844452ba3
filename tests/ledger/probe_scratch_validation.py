from __future__ import annotations
import traceback
from datetime import datetime
from typing import Any
import pytest
from tokenbank import TokenService, InvalidInput

async def try_(label: str, coro: Any) -> None:
    try:
        r = await coro
        print(f"{label}: RETURNED {r!r}"[:300])
    except InvalidInput as e:
        print(f"{label}: InvalidInput field={e.field} {e}"[:300])
    except BaseException as e:
        print(f"{label}: OTHER {type(e).__module__}.{type(e).__name__}: {e}"[:300])

async def test_probe(service: TokenService, engine_name: str) -> None:
    print("\n=== ", engine_name)
    await service.open_wallet("alice")
    await service.credit("alice", amount=100)
    deep: dict[str, Any] = {}
    d = deep
    for _ in range(1200):
        d["a"] = {}
        d = d["a"]
    await try_("deep metadata", service.credit("alice", amount=1, metadata=deep))
    await try_("nul in metadata value", service.credit("alice", amount=1, metadata={"a": "x\x00y"}))
    await try_("nul in metadata key", service.credit("alice", amount=1, metadata={"a\x00": "x"}))
    await try_("surrogate description", service.credit("alice", amount=1, description="\ud800"))
    await try_("surrogate user", service.credit("al\ud800", amount=1))
    await try_("surrogate user open", service.open_wallet("al\ud800"))
    await try_("surrogate metadata", service.credit("alice", amount=1, metadata={"a": "\ud800"}))
    await try_("scope 65", service.credit("alice", amount=1, idempotency_key="k1", idempotency_scope="s" * 65))
    await try_("scope None", service.credit("alice", amount=1, idempotency_key="k2", idempotency_scope=None))  # type: ignore[arg-type]
    await try_("pricing nonjson", service.debit("alice", amount=1, pricing={"a": object()}))
    await try_("pricing list", service.debit("alice", amount=1, pricing=[1, 2]))  # type: ignore[arg-type]
    await try_("pricing nan", service.debit("alice", amount=1, pricing={"a": float("nan")}))
    await try_("start_date str", service.get_ledger().get_user_entries("alice", start_date="2020-01-01"))  # type: ignore[arg-type]
    await try_("cost newline", service.set_operation_cost("foo\n", 5))
    print(await service.get_operation_costs())
    await try_("void newline", service.void("hold_" + "0" * 32 + "\n"))
    await try_("refund_of dashes", service.refund("alice", 1, refund_of="-" * 36))
    await try_("refund_of newline", service.refund("alice", 1, refund_of="0" * 36 + "\n"))
    await try_("can_afford nl", service.can_afford("alice", "image_generation\n"))
    await try_("metadata float key", service.credit("alice", amount=1, metadata={1.5: "x"}))
    await try_("metadata int big", service.credit("alice", amount=1, metadata={"a": 10**30}))
    await try_("overdraft str", service.debit("alice", amount=1, allow_overdraft="no"))  # type: ignore[arg-type]
    await try_("status None", service.set_wallet_status("alice", None))  # type: ignore[arg-type]
    await try_("stats naive", service.get_ledger().get_user_statistics("alice", start_date=datetime(2020,1,1)))
    await try_("entries optype none str", service.get_ledger().get_user_entries("alice", operation_type=5))  # type: ignore[arg-type]
    await try_("hold ttl float", service.hold("alice", 1, ttl_seconds=1.5))  # type: ignore[arg-type]
    await try_("get_hold bad", service.get_hold("x"))
    await try_("description bytes", service.credit("alice", amount=1, description=b"x"))  # type: ignore[arg-type]
    await try_("user_id 128 ok", service.open_wallet("u" * 128))
    await try_("key 255 ok", service.credit("alice", amount=1, idempotency_key="k" * 255))
    await try_("metadata 8192 exactly", service.credit("alice", amount=1, metadata={"a": "x" * (8192 - 9)}))
    await try_("desc 500 ok", service.credit("alice", amount=1, description="d" * 500))
    print((await service.audit()).problems)
    print([ (e.operation_type, e.tokens_amount, e.metadata) for e in await service.get_ledger().get_user_entries("alice")][:3])
