"""The harness: sets up the tools, databases and servers, runs the rounds, tears down."""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import secrets
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.cases import SCALE_TARGET, TARGET_BACKEND, Case
from bench.common import BENCH, LUA, PYTHON, BenchFailure, log
from bench.databases import (
    SETUP_PROCESSES,
    Database,
    audit,
    check_ledger,
    find_pgbench,
    populate,
)
from bench.processes import (
    CHILDREN,
    Server,
    clean_env,
    ensure_wrk,
    snapshot_build,
    terminate_children,
    wait_quiet,
)
from bench.profiling import Profiler
from bench.runs import (
    Run,
    describe_run,
    run_embedded,
    run_pages,
    run_pgbench,
    run_wrk,
    unanswered,
    wrk_users,
)
from bench.scale import build_scale_database
from tokenbank.testing.postgres import PostgresServer

Plan = list[tuple[Case, str]]


class Harness:
    """One run of the benchmark: what it started, and every Run it measured."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir = Path(tempfile.mkdtemp(prefix="tokenbank-bench-"))
        self.postgres: PostgresServer | None = None
        self.servers: dict[str, Server] = {}
        self.databases: dict[str, Database] = {}
        self.runs: list[Run] = []
        # Per target: (acknowledged, unanswered) of a warm-up not yet checked.
        self.unchecked: dict[str, tuple[int, int]] = {}
        self.checks: dict[str, Future[None]] = {}
        self.checker: ThreadPoolExecutor | None = None
        self.wrk = ""
        self.pgbench = ""
        self.started = time.monotonic()
        self.build_sha256 = snapshot_build(self.workdir)
        self.setup_seconds = 0.0
        self.profiler = Profiler(args.profile_format)
        self.scale_build: dict[str, Any] | None = None  # bench/scale.py's build, if any

    # --- setup -------------------------------------------------------------------------

    def setup(self, plan: Plan) -> None:
        """Tools, databases (each backend in its own thread) and servers, in parallel."""
        started = time.monotonic()
        kinds = {case.kind for case, _ in plan}
        if "wrk" in kinds:
            self.wrk = ensure_wrk()
        if "pgbench" in kinds:
            self.pgbench = find_pgbench()
        server_targets = {target for case, target in plan if case.kind == "wrk"}
        if "bare" in server_targets:
            self._start_server("bare")
        try:
            self._prepare_backends({target for _, target in plan}, server_targets, kinds)
        finally:
            self.setup_seconds = time.monotonic() - started
        for server in self.servers.values():
            server.wait_ready()
            log(f"  server {server.name}: {server.base_url}, workers {server.worker_pids}")
        self._warm_servers()
        self.setup_seconds = time.monotonic() - started
        log(f"setup done in {self.setup_seconds:.0f}s (work dir {self.workdir})")

    def _prepare_backends(
        self, targets: set[str], server_targets: set[str], kinds: set[str]
    ) -> None:
        """Each backend the targets need, in a thread of its own; the first failure raised."""
        backends = sorted({b for t in targets if (b := TARGET_BACKEND[t]) is not None})
        pool = ThreadPoolExecutor(max_workers=max(1, len(backends)))
        try:
            futures = [
                pool.submit(self._prepare_backend, backend, targets, server_targets, kinds)
                for backend in backends
            ]
            for future in futures:
                future.result()  # re-raises the first failure
        except BaseException:
            terminate_children()  # so that the other thread ends too
            raise
        finally:
            pool.shutdown(wait=True)

    def _prepare_backend(
        self, backend: str, targets: set[str], server_targets: set[str], kinds: set[str]
    ) -> None:
        """One backend's database filled (and pgbench's), and its servers started."""
        pgbench_init = None
        if backend == "postgres":
            database, pgbench_init = self._start_postgres(kinds)
        else:
            database = Database("sqlite", f"sqlite:///{self.workdir / 'sqlite-full.db'}")
        log(f"preparing {backend}: schema, app key, {self.args.users:,} users ...")
        self.databases[backend] = database
        self._populate(database, server_targets)
        if pgbench_init is not None:
            _, stderr = pgbench_init.communicate()
            if pgbench_init.returncode != 0:
                raise BenchFailure(f"pgbench -i failed:\n{stderr.decode(errors='replace')}")
        if backend == "sqlite" and "sqlite-normal" in targets:
            self._copy_sqlite_normal(database)
        if backend == "postgres" and "peer" in targets:
            self._prepare_peer()
        if backend == "postgres" and SCALE_TARGET in targets:
            self._prepare_scale()
        for target in sorted(server_targets):
            if TARGET_BACKEND[target] == backend and target not in self.servers:
                self._start_server(target)

    def _start_postgres(self, kinds: set[str]) -> tuple[Database, subprocess.Popen[bytes] | None]:
        """Our PostgreSQL with an empty tokenbank database; `pgbench -i` started if needed."""
        durability = "fsync off" if self.args.pg_nondurable else "durable"
        buffers = f"shared_buffers {self.args.pg_shared_buffers}"
        log(f"starting PostgreSQL ({durability}, {buffers}; tokenbank.testing.postgres) ...")
        self.postgres = PostgresServer(
            durable=not self.args.pg_nondurable, shared_buffers=self.args.pg_shared_buffers
        ).start()
        self.postgres.create_database("tokenbank_bench")
        database = Database("postgres", self.postgres.sync_dsn("tokenbank_bench"))
        if "pgbench" not in kinds:
            return database, None
        self.postgres.create_database("pgbench")
        command = [self.pgbench, "-i", "-q", "-s", str(self.args.pgbench_scale)]
        pgbench_init = subprocess.Popen(
            [*command, *self._pg_connection(), "pgbench"],
            env=clean_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=self.workdir,
        )
        CHILDREN.append(pgbench_init)
        return database, pgbench_init

    def _populate(self, database: Database, server_targets: set[str]) -> None:
        backend = database.backend
        early = None
        if backend == "postgres" and "postgres" in server_targets:
            # Its server can start while the users are created (SQLite's starts after
            # the copy for sqlite-normal, which wants the file closed).
            early = functools.partial(self._start_server, "postgres")
        # SQLite has one writer at a time; PostgreSQL fills faster from several processes
        # (when there are enough users to pay for starting them).
        many = backend == "postgres" and self.args.users >= 2_000
        processes = SETUP_PROCESSES if many else 1
        seconds = populate(
            database, self.args.users, self.workdir, processes=processes, on_base=early
        )
        log(f"  {backend}: {self.args.users:,} users in {seconds:.0f}s, audit passed")

    def _copy_sqlite_normal(self, database: Database) -> None:
        """The same filled database, served at synchronous=NORMAL: a file copy (the
        populate process has closed every connection; nothing else has it open)."""
        source = self.workdir / "sqlite-full.db"
        copy = self.workdir / "sqlite-normal.db"
        for suffix in ("", "-wal", "-shm"):
            if Path(f"{source}{suffix}").exists():
                shutil.copyfile(f"{source}{suffix}", f"{copy}{suffix}")
        self.databases["sqlite-normal"] = replace(
            database, backend="sqlite-normal", url=f"sqlite:///{copy}"
        )

    def _prepare_peer(self) -> None:
        """The peer's own database on our PostgreSQL: its schema and the same users."""
        assert self.postgres is not None
        self.postgres.create_database("peer_bench")
        url = self.postgres.sync_dsn("peer_bench")
        command = [
            PYTHON,
            str(BENCH / "peer_app.py"),
            "setup",
            url,
            "--users",
            str(self.args.users),
        ]
        result = subprocess.run(
            command, env=clean_env(), capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise BenchFailure(f"the peer's setup failed:\n{result.stdout}{result.stderr}")
        database = Database("peer", url, key=f"peer_{secrets.token_hex(32)}")
        database.transactions, database.consumed = audit(database)
        self.databases["peer"] = database
        log(f"  peer: {self.args.users:,} users, audit passed")

    def _prepare_scale(self) -> None:
        """--scale: the large database, bulk-loaded on our PostgreSQL (bench/scale.py)."""
        assert self.postgres is not None
        users, entries = self.args.scale_users, self.args.scale_entries
        log(f"preparing {SCALE_TARGET}: {users:,} users, {entries:,} ledger entries ...")
        database, self.scale_build = build_scale_database(
            self.postgres, users=users, entries=entries, workdir=self.workdir
        )
        self.databases[SCALE_TARGET] = database
        build = self.scale_build
        log(
            f"  {SCALE_TARGET}: {build['rows_loaded']:,} rows loaded in {build['load_seconds']}s"
            f" ({build['rows_per_s']:,} rows/s), VACUUM ANALYZE {build['vacuum_analyze_seconds']}s,"
            f" audit passed in {build['first_audit_seconds']}s"
        )

    def _pg_connection(self) -> list[str]:
        assert self.postgres is not None
        return ["-h", self.postgres.host, "-p", str(self.postgres.port), "-U", self.postgres.user]

    def _start_server(self, target: str) -> None:
        workers = str(self.args.workers)
        log_path = self.workdir / f"server-{target}.log"
        if target == "bare":
            command = [PYTHON, "-m", "uvicorn", "bare_app:app", "--app-dir", str(BENCH)]
            command += ["--workers", workers, "--log-level", "warning"]
            command += ["--no-access-log", "--no-server-header"]
            server = Server(target, command, clean_env(), self.args.workers, log_path, "/")
        elif target == "peer":
            database = self.databases[target]
            key_sha256 = hashlib.sha256(database.key.encode()).hexdigest()
            env = clean_env(PEER_DATABASE_URL=database.url, PEER_KEY_SHA256=key_sha256)
            command = [PYTHON, "-m", "uvicorn", "peer_app:app", "--app-dir", str(BENCH)]
            command += ["--workers", workers, "--log-level", "warning"]
            command += ["--no-access-log", "--no-server-header"]
            server = Server(target, command, env, self.args.workers, log_path, "/healthz")
        else:
            database = self.databases[target]
            env = clean_env(TOKENBANK_DATABASE_URL=database.url)
            if target.startswith("sqlite"):
                synchronous = "NORMAL" if target == "sqlite-normal" else "FULL"
                env["TOKENBANK_SQLITE_SYNCHRONOUS"] = synchronous
            command = [PYTHON, "-m", "tokenbank.cli", "serve", "--no-migrate"]
            command += ["--workers", workers, "--log-level", "warning"]
            server = Server(target, command, env, self.args.workers, log_path, "/healthz")
        server.start()
        self.servers[target] = server

    def _warm_servers(self) -> None:
        """One second of reads on every server at once: pools filled, code paths warm.

        Reads only (the ledger is untouched); the first requests a cold worker answers
        can take a second on a busy machine, which would swallow a --quick run.
        """
        warming = []
        for target, server in self.servers.items():
            script = "static.lua" if target == "bare" else "balance.lua"
            key = self.databases[target].key if target in self.databases else "none"
            command = [self.wrk, "-t", "1", "-c", str(min(8, self.args.connections)), "-d", "1s"]
            command += ["-H", f"Authorization: Bearer {key}", "-s", str(LUA / script)]
            users = wrk_users(target, self.args)
            command += [server.base_url + "/", "--", f"users={users}"]
            warming.append(subprocess.Popen(command, stdout=subprocess.DEVNULL))
            CHILDREN.append(warming[-1])
        for process in warming:
            process.wait(timeout=60)

    # --- running -----------------------------------------------------------------------

    def measure(self, plan: Plan) -> None:
        """Every run of the plan, --repeats rounds in alternating order, checks joined."""
        total = len(plan) * self.args.repeats
        done = 0
        warmed: set[str] = set()
        with ThreadPoolExecutor(max_workers=2) as checker:
            self.checker = checker
            for repeat in range(self.args.repeats):
                order = plan if repeat % 2 == 0 else list(reversed(plan))
                for case, target in order:
                    key = f"{case.name}/{target}"
                    if self.args.warmup and case.kind == "wrk" and key not in warmed:
                        self._run(case, target, repeat=-1, seconds=self.args.warmup)
                        warmed.add(key)
                    done += 1
                    run = self._run(case, target, repeat=repeat, seconds=self.args.duration)
                    log(f"[{done}/{total}] {describe_run(run)}")
            for target in list(self.checks):
                self._join_check(target)

    def _run(self, case: Case, target: str, *, repeat: int, seconds: int) -> Run:
        self._join_check(target)  # this database's books are checked before it is loaded again
        run = Run(key=f"{case.name}/{target}", case=case.name, target=target, repeat=repeat)
        started = time.monotonic()
        self._measure_run(case, run, seconds)
        run.seconds = round(time.monotonic() - started, 2)
        self.runs.append(run)
        if case.mutating and repeat < 0:
            # A warm-up is checked with the measured run that follows it at once.
            self.unchecked[target] = (int(run.detail["ops"]), unanswered(run))
        elif case.mutating:
            # --quick overlaps the audit with the next run on another database; a full
            # run waits for it, so that no audit runs while something is measured.
            assert self.checker is not None
            self.checks[target] = self.checker.submit(self._check_ledger, case, target, run)
            if not self.args.quick:
                self._join_check(target)
        return run

    def _measure_run(self, case: Case, run: Run, seconds: int) -> None:
        target = run.target
        profile = self.args.profile_target == target and run.repeat >= 0 and bool(self.args.profile)
        profiler = self.profiler if profile else None
        if case.kind == "wrk":
            database = self.databases.get(target)
            key = database.key if database else "none"
            run_wrk(
                run,
                case,
                self.servers[target],
                wrk=self.wrk,
                key=key,
                args=self.args,
                seconds=seconds,
                profiler=profiler,
            )
        elif case.kind == "embedded":
            url = self.databases[target].url
            run_embedded(run, url, args=self.args, seconds=seconds, profiler=profiler)
        elif case.kind == "pages":
            url = self.databases[target].url
            run_pages(run, url, entries=self.args.page_entries, seconds=seconds)
        else:
            run_pgbench(
                run,
                pgbench=self.pgbench,
                connection=self._pg_connection(),
                args=self.args,
                seconds=seconds,
                workdir=self.workdir,
            )

    def _join_check(self, target: str) -> None:
        check = self.checks.pop(target, None)
        if check is not None:
            check.result()  # raises the check's BenchFailure

    def _check_ledger(self, case: Case, target: str, run: Run) -> None:
        """Once the server is idle: bench.databases.check_ledger, with any warm-up's counts."""
        server = self.servers.get(target)
        if server is not None:
            wait_quiet(server.worker_pids)
        warmup = self.unchecked.pop(target, (0, 0))
        check_ledger(self.databases[target], case, run, warmup)

    # --- teardown ----------------------------------------------------------------------

    def close(self) -> None:
        """Stop every child, server and PostgreSQL; remove the work dir unless --keep."""
        terminate_children()
        for server in self.servers.values():
            with contextlib.suppress(Exception):
                server.stop()
        if self.postgres is not None:
            with contextlib.suppress(Exception):
                self.postgres.stop()
        if not self.args.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)
