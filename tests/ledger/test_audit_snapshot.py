"""`tokenbank audit` reads the books in one snapshot, with no statement timeout.

At 10,000,000 ledger entries one of its statements takes longer than the 15 s a
request may (the bench's --scale build failed its audit with "canceling statement
due to statement timeout"), and totals read by separate statements must come from
one moment while the service keeps writing. Both are checked from inside the audit.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenbank import TokenService
from tokenbank.ledger import service as service_module
from tokenbank.ledger.repository.audit import run_audit

POSTGRESQL_ONLY = pytest.mark.parametrize("engine_name", ["postgresql"], indirect=True)


@POSTGRESQL_ONLY
async def test_the_audit_runs_in_one_read_only_snapshot_without_a_timeout(
    service: TokenService, monkeypatch: pytest.MonkeyPatch
) -> None:
    await service.open_wallet("alice")
    await service.credit("alice", amount=10, operation_type="bonus")
    seen: dict[str, Any] = {}
    real_audit = run_audit

    async def audit_and_look(conn: AsyncConnection) -> Any:
        for setting in ("statement_timeout", "transaction_isolation", "transaction_read_only"):
            seen[setting] = (await conn.exec_driver_sql(f"SHOW {setting}")).scalar()
        return await real_audit(conn)

    monkeypatch.setattr(service_module, "run_audit", audit_and_look)
    report = await service.audit()
    assert report.ok, report
    assert seen == {
        "statement_timeout": "0",
        "transaction_isolation": "repeatable read",
        "transaction_read_only": "on",
    }
    # The pooled connection comes back as the service's: its own timeout, READ COMMITTED.
    engine = await service.engine()
    async with engine.connect() as conn:
        assert (await conn.exec_driver_sql("SHOW statement_timeout")).scalar() != "0"
        isolation = (await conn.exec_driver_sql("SHOW transaction_isolation")).scalar()
        assert isolation == "read committed"
