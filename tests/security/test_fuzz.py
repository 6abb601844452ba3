"""Schemathesis against tokenbank's own OpenAPI document, through the ASGI app.

Every operation is called with generated requests, valid (positive) and invalid
(negative), with an admin key: no answer may be a 5xx, every answer must match the
status codes and schemas the document declares, and every invalid request must be
refused with a 4xx. The suite runs a short variant on SQLite; ``make fuzz`` runs
more examples on SQLite and PostgreSQL (``TOKENBANK_FUZZ_EXAMPLES``,
``TOKENBANK_FUZZ_ENGINES``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from pydantic import SecretStr
from schemathesis.config import SchemathesisConfig
from schemathesis.python import asgi as schemathesis_asgi

from tests.conftest import _create_pg_database
from tokenbank.api.app import create_app
from tokenbank.config import Settings
from tokenbank.testing.localstripe import LocalStripe
from tokenbank.testing.postgres import PostgresServer
from tokenbank.testing.stripe_front import StripeFront

ADMIN_KEY = "tb_fuzz-admin-key-0123456789abcdefghijklmnopqrstuvwxyz"
MAX_EXAMPLES = int(os.environ.get("TOKENBANK_FUZZ_EXAMPLES", "10"))
# Schemathesis's coverage phase (boundary values and every kind of invalid input, for
# each parameter) sends a few thousand requests: `make fuzz` runs it, the suite doesn't.
COVERAGE = os.environ.get("TOKENBANK_FUZZ_COVERAGE", "0") == "1"
ENGINES = os.environ.get("TOKENBANK_FUZZ_ENGINES", "sqlite").split(",")

# Statuses a schema-valid request may get for reasons no schema can express: 402 (the
# wallet is short), 400 (a rule's contents, metadata's size, a field pair that
# conflicts), on top of Schemathesis's defaults (401, 403, 404, 409).
POSITIVE_STATUSES = ["2xx", "400", "401", "402", "403", "404", "409"]
# An invalid request is a 4xx: never a 2xx, never a 5xx.
NEGATIVE_STATUSES = ["400", "401", "403", "404", "405", "409", "413", "415", "422"]

calls: Counter[tuple[str, int]] = Counter()


def _config() -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(
        {
            "seed": int(os.environ.get("TOKENBANK_FUZZ_SEED", "20260101")),
            "generation": {
                "max-examples": MAX_EXAMPLES,
                "mode": "all",
                "deterministic": False,
            },
            "phases": {"coverage": {"enabled": COVERAGE}},
            "checks": {
                "positive_data_acceptance": {"expected-statuses": POSITIVE_STATUSES},
                "negative_data_rejection": {"expected-statuses": NEGATIVE_STATUSES},
            },
        }
    )


def _database_url(engine: str, request: pytest.FixtureRequest, directory: Path) -> str:
    if engine == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = directory / "fuzz.db"
        shutil.copyfile(template, path)
        return f"sqlite+aiosqlite:///{path}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    asyncio.run(_create_pg_database(server, "fuzz"))
    return server.async_url("fuzz")


@pytest.fixture(scope="module")
def stripe_api_base() -> Iterator[str]:
    """Payments call Stripe: here a localstripe behind the test front (Checkout)."""
    with LocalStripe() as localstripe, StripeFront(localstripe) as front:
        yield front.api_base


@pytest.fixture(scope="module", params=ENGINES)
def fuzz_app(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, stripe_api_base: str
) -> Iterator[Any]:
    url = _database_url(str(request.param), request, tmp_path_factory.mktemp("fuzz"))
    settings = Settings(
        database_url=url,
        api_key=SecretStr(ADMIN_KEY),  # every scope
        hold_sweep_interval_seconds=0,
        stripe_secret_key=SecretStr("sk_test_fuzz"),
        stripe_webhook_secret=SecretStr("whsec_fuzz"),
        stripe_api_base=stripe_api_base,
    )
    # The app builds its own services in its lifespan, on Schemathesis's event loop.
    app = create_app(settings)
    calls.clear()
    try:
        yield app
    finally:
        schemathesis_asgi.shutdown_lifespans()
        total = sum(calls.values())
        print(f"\nfuzz ({request.param}): {total} calls; by status: {_by_status()}")


def _by_status() -> dict[int, int]:
    statuses: Counter[int] = Counter()
    for (_, status), count in calls.items():
        statuses[status] += count
    return dict(sorted(statuses.items()))


# The document is the app's own; building it needs no database.
schema = schemathesis.openapi.from_dict(
    create_app(Settings(database_url="sqlite:///unused.db")).openapi(), config=_config()
)


@schema.parametrize()
def test_api_keeps_its_schema(case: Any, fuzz_app: Any) -> None:
    # parametrize() works on a clone of the schema: point it at this engine's app, so
    # that the checks which send requests of their own reach it too.
    case.operation.schema.app = case.operation.app = fuzz_app
    response = case.call_and_validate(headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    calls[(f"{case.method} {case.path}", response.status_code)] += 1
    if response.status_code == 400 and os.environ.get("FUZZ_DEBUG"):
        print("400", case.method, case.path, response.text[:160])


# --- where JSON Schema cannot say what the API enforces --------------------------------
#
# JSON Schema calls 5.0 an integer; tokenbank's strict JSON does not (a whole-token field
# takes a JSON integer only, a wire contract tested in tests/api). So integral floats that
# Schemathesis generates for integer fields are sent as integers. And startDate after
# endDate is a cross-parameter rule no schema can state: valid cases get them in order.


def _integers(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _integers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_integers(item) for item in value]
    return value


def _ordered_period(query: dict[str, Any]) -> dict[str, Any]:
    start, end = query.get("startDate"), query.get("endDate")
    if not (isinstance(start, str) and isinstance(end, str)):
        return query
    try:
        if datetime.fromisoformat(start) > datetime.fromisoformat(end):
            return {**query, "startDate": end, "endDate": start}
    except (ValueError, TypeError):
        pass
    return query


@schema.hook
def map_case(context: Any, case: Any) -> Any:
    if isinstance(case.body, dict | list):
        case.body = _integers(case.body)
    positive = case.meta is not None and case.meta.generation.mode.name == "POSITIVE"
    if positive and isinstance(case.query, dict):
        case.query = _ordered_period(case.query)
    return case


def test_every_operation_documents_its_errors() -> None:
    """A new route can't forget its error answers (the fuzzer would only find the ones
    it happens to trigger): refusals, the database down, and the request limits."""
    document = create_app(Settings(database_url="sqlite:///unused.db")).openapi()
    problems = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            documented = set(operation["responses"])
            needed = {"503"}
            if operation.get("security"):
                needed |= {"401"} | ({"403"} if path != "/api/ping" else set())
            if method in ("post", "put", "patch"):
                needed |= {"413", "415", "422"}
            if operation.get("parameters"):
                needed |= {"422"}
            if not needed <= documented:
                problems.append(f"{method.upper()} {path}: lacks {sorted(needed - documented)}")
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")) and path != "/healthz":
                    ref = response["content"]["application/json"]["schema"]["$ref"]
                    dialect_b = path.startswith("/api/token-process")
                    model = "ErrorBodyB" if dialect_b else "ErrorBody"
                    if not ref.endswith(f"/{model}"):
                        problems.append(f"{method.upper()} {path} {status}: {ref}")
    assert not problems, "\n".join(problems)
