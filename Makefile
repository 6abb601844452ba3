# tokenbank: `make run` serves it on SQLite; `make test` runs the whole suite;
# `make bench` measures it (README, "Benchmarks"). Each sets everything up first
# (virtual environment, dependencies, database, load generator).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
HOST   ?= 127.0.0.1
PORT   ?= 8000
# `make fuzz`: generated requests per API operation and phase, and the engines.
FUZZ_EXAMPLES ?= 100
FUZZ_ENGINES  ?= sqlite,postgresql
# `make security`: rounds of the database fault tests.
FAULT_ROUNDS  ?= 20
# `make test`: processes running the suite (pytest-xdist), a file at a time each. Two
# took it from 30 to about 20 minutes on two cores (three: no faster, the cores are
# busy); 0 runs it in this process alone.
TEST_WORKERS  ?= 2
# `make crash`: SIGKILLs of the server under load, and the kill phase's length (s).
CRASH_KILLS   ?= 30
CRASH_SECONDS ?= 240

.PHONY: install run migrate test lint typecheck check clean bench bench-quick bench-scale fuzz security crash crash-many

# The SDK, tokenbank-client (clients/python), comes first in the same pip run: the
# server requires it, and pip takes it from there rather than from an index.
$(STAMP): pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ./clients/python -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

migrate: install
	$(BIN)/tokenbank db upgrade

run: migrate
	$(BIN)/tokenbank serve --host $(HOST) --port $(PORT)

lint: install
	$(BIN)/ruff check src tests bench clients
	$(BIN)/ruff format --check src tests bench clients

# One run checks the server, the SDK (clients/python) and bench ([tool.mypy] in pyproject.toml).
typecheck: install
	$(BIN)/mypy

# The SDK's blocking client (clients/python/src/tokenbank/client/_sync) is generated from
# its asyncio client (_async); tests/client/test_generated.py fails when it is stale.
.PHONY: sync-client
sync-client: install
	$(BIN)/python clients/python/scripts/generate_sync.py

test: install lint typecheck
	./scripts/ensure-postgres.sh
	./scripts/ensure-wrk.sh || echo "wrk unavailable: tests/bench will be skipped"
	./scripts/ensure-chromium.sh || echo "chromium unavailable: tests/web will be skipped"
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# Every benchmark case in one run (~10-15 min); prints the table, writes
# bench/results/*.json and updates bench/RESULTS.md. BENCH_ARGS passes options,
# e.g. make bench BENCH_ARGS="--workers 4 --cases deduct,ping".
bench: install
	./scripts/ensure-postgres.sh
	./scripts/ensure-wrk.sh
	$(BIN)/python -m bench $(BENCH_ARGS)

# The same in under a minute (1 s runs, one repeat, 200 users): a smoke run.
bench-quick: install
	./scripts/ensure-postgres.sh
	./scripts/ensure-wrk.sh
	$(BIN)/python -m bench --quick $(BENCH_ARGS)

# Deduct at 1,000,000 users and 10,000,000 ledger entries beside deduct at 10,000
# users (bench/scale.py builds the large database); updates its section of bench/RESULTS.md.
# PostgreSQL gets the cache a deployment of that size would (docs/operations.md,
# "Sizing PostgreSQL"): its 128MB default does not hold a million wallets.
SCALE_SHARED_BUFFERS ?= 1GB
bench-scale: install
	./scripts/ensure-postgres.sh
	./scripts/ensure-wrk.sh
	$(BIN)/python -m bench --scale --pg-shared-buffers $(SCALE_SHARED_BUFFERS) $(BENCH_ARGS)

# The long variants of tests/security (`make test` runs the short ones): Schemathesis
# with its coverage phase and more examples on both engines (~10 min); the whole
# security suite with more database fault rounds.
fuzz: install
	./scripts/ensure-postgres.sh
	TOKENBANK_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) TOKENBANK_FUZZ_ENGINES=$(FUZZ_ENGINES) \
	TOKENBANK_FUZZ_COVERAGE=1 $(BIN)/python -m pytest tests/security/test_fuzz.py \
		-p no:cacheprovider -q -s

security: install
	./scripts/ensure-postgres.sh
	TOKENBANK_FAULT_ROUNDS=$(FAULT_ROUNDS) $(BIN)/python -m pytest tests/security \
		-p no:cacheprovider -q --durations=10

# The long crash test (tests/reliability; `make test` runs the short one): 16 clients,
# CRASH_KILLS kill -9s of `tokenbank serve` over CRASH_SECONDS on each engine (~10 min).
crash: install
	./scripts/ensure-postgres.sh
	for engine in sqlite postgresql; do \
		$(BIN)/python tests/reliability/crash.py --engine $$engine --clients 16 \
			--kills $(CRASH_KILLS) --seconds $(CRASH_SECONDS) || exit 1; \
	done

# The crash test over the topology of a deployment with several processes (PostgreSQL):
# two `tokenbank serve` on two ports and two `tokenbank jobs run` over one database,
# any of the four SIGKILLed; renewals, expiries, auto-recharges (on a localstripe) and
# webhook deliveries (to a loopback receiver) checked to happen once too
# (docs/operations.md).
crash-many: install
	./scripts/ensure-postgres.sh
	$(BIN)/python tests/reliability/crash.py --engine postgresql --servers 2 --job-workers 2 \
		--recharges 4 --webhooks --clients 16 --kills $(CRASH_KILLS) --seconds $(CRASH_SECONDS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache tokenbank.db tokenbank.db-wal tokenbank.db-shm
