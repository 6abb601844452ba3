"""Every statement of the ledger's write paths is compiled once, then reused.

SQLAlchemy caches a statement's compiled form by its structure; some forms (a
multi-row ``.values([...])``) are never cached and compile on every call. One such
insert in the batch kernel was a quarter of the server's CPU under load, so this
test fails on any uncached or freshly compiled data statement once the paths are
warm. SQLAlchemy's engine log says which: "[generated in ...]" or "[no key ...]".
"""

from __future__ import annotations

import logging

import pytest

from tokenbank import TokenService

DATA_STATEMENTS = ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH")


class _StatementLog(logging.Handler):
    """Pairs each statement the engine logs with the cache note on its next line."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.statement = ""
        self.uncached: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("[generated in") or message.startswith("[no key"):
            if self.statement.lstrip().upper().startswith(DATA_STATEMENTS):
                self.uncached.append(" ".join(self.statement.split())[:300])
        elif not message.startswith("["):
            self.statement = message


async def _every_write_path(service: TokenService, round_number: int) -> None:
    for user in ("alice", "bob"):
        await service.open_wallet(user)
        await service.credit(user, amount=1_000, operation_type="purchase")
        debit = await service.debit(user, amount=5, idempotency_key=f"d-{user}-{round_number}")
        await service.debit(user, amount=5, idempotency_key=f"d-{user}-{round_number}")  # replay
        await service.refund(user, amount=2, refund_of=debit.transaction_id)
        hold = await service.hold(user, amount=7)
        assert hold.hold_id is not None
        await service.capture(hold.hold_id, amount=3)
        voided = await service.hold(user, amount=4)
        assert voided.hold_id is not None
        await service.void(voided.hold_id)
        await service.debit(user, amount=1)  # no key


async def test_write_paths_reuse_compiled_statements(
    service: TokenService, caplog: pytest.LogCaptureFixture
) -> None:
    # Warm: first compilations are expected (the second round takes the paths a
    # first one does not, such as opening a wallet that exists).
    for round_number in (0, 1):
        await _every_write_path(service, round_number)
    log = _StatementLog()
    engine_logger = logging.getLogger("sqlalchemy.engine.Engine")
    engine_logger.addHandler(log)
    previous_level = engine_logger.level
    engine_logger.setLevel(logging.INFO)
    try:
        await _every_write_path(service, 2)
    finally:
        engine_logger.setLevel(previous_level)
        engine_logger.removeHandler(log)
    assert log.uncached == []
