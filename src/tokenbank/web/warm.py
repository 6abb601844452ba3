"""Warming the pages when a process starts, so that the first person to open one after
a deploy does not wait for what every later visit finds ready: every template compiled,
and the ledger's settled sums that the admin dashboard keeps (``admin_reads``) added up.
It runs in the background: the process serves at once, and a visit that comes first
simply does the work itself."""

from __future__ import annotations

import logging

from sqlalchemy.exc import SQLAlchemyError

from tokenbank.db.engine import read_transaction
from tokenbank.ledger.service import TokenService
from tokenbank.web.admin_reads import ledger_sums
from tokenbank.web.templating import templates

logger = logging.getLogger("tokenbank.web")


async def warm_pages(tokens: TokenService) -> None:
    for name in templates.env.list_templates():
        templates.env.get_template(name)
    engine = await tokens.engine()
    try:
        async with read_transaction(engine) as conn:
            await ledger_sums(conn, engine, tokens.clock())
    except SQLAlchemyError:
        # Only a head start: the dashboard's first visit adds up the ledger itself.
        logger.warning("warming the admin dashboard failed", exc_info=True)
