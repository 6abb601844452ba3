"""Start a throwaway PostgreSQL server for the test suite and the benchmarks.

Why this exists: tokenbank's correctness claims (row locks, serialisable
transfers, concurrent holds) only mean something against a real PostgreSQL,
and the test suite must not depend on a server somebody happens to have
running.  `PostgresServer` runs `initdb` into a fresh temporary directory,
starts a private postmaster on a free 127.0.0.1 port with durability switched
off (the data is disposable), and removes everything again on `stop()` or at
interpreter exit.

A process killed outright (SIGKILL, or a SIGTERM nobody handles) runs neither
`stop()` nor its atexit hooks, and the postmaster, which is not its child, would
outlive it.  So each server has a watchdog: this file run as a script (in its own
session, so that the signals of a terminal or a process group do not reach it),
which blocks reading a pipe only the starting process holds open.  When the
starter is gone, the pipe reads end-of-file and the watchdog stops the server and
removes its directory; `stop()`, once it has done that itself, kills the watchdog
(its child) by its process id.

`initdb` refuses to run as root, so when the tests run as root (CI containers)
every server-side binary is run as the `postgres` system user via `runuser`.

Only the standard library is used, so this works before anything else is
importable.  Requires PostgreSQL >= 13 (`DROP DATABASE ... WITH (FORCE)`).
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

__all__ = ["PostgresServer", "find_bin_dir", "quote_ident"]

# PostgreSQL's own default; small enough for many servers side by side in tests.
DEFAULT_SHARED_BUFFERS = "128MB"
HOST = "127.0.0.1"
ROOT_DB_USER = "postgres"
_BIN_ENV = "TOKENBANK_PG_BIN"
_START_TIMEOUT_S = 60
_PORT_ATTEMPTS = 5
_LOG_TAIL_LINES = 40
# Unix socket paths are limited to ~107 bytes; keep the socket dir short.
_MAX_SOCKET_DIR_LEN = 80
# The command-line word that makes this file, run as a script, a watchdog.
_WATCHDOG_ARG = "--watchdog"
_INSTALL_HINT = (
    "No PostgreSQL server binaries found (looked in ${env}, "
    "/usr/lib/postgresql/*/bin and `pg_config --bindir`). Install the Debian "
    "`postgresql` package (apt-get install postgresql) or set ${env} to the "
    "directory containing initdb, pg_ctl and psql."
).replace("${env}", _BIN_ENV)


def quote_ident(name: str) -> str:
    """Quote `name` as an SQL identifier (double quotes, embedded quotes doubled)."""
    if not name or "\x00" in name:
        raise ValueError(f"invalid SQL identifier: {name!r}")
    return '"' + name.replace('"', '""') + '"'


def _checked_lsn(lsn: str) -> str:
    """A WAL position as PostgreSQL prints it (``16/B374D848``), safe to quote in SQL."""
    if re.fullmatch(r"[0-9A-F]{1,8}/[0-9A-F]{1,8}", lsn) is None:
        raise ValueError(f"not a WAL position: {lsn!r}")
    return lsn


def _has_server_binaries(path: Path) -> bool:
    return all((path / exe).is_file() for exe in ("initdb", "pg_ctl", "psql"))


def _version_key(path: str) -> tuple[int, ...]:
    version = Path(path).parent.name
    return tuple(int(part) for part in re.findall(r"\d+", version))


def _run_tool(
    command: list[str], *, timeout: float, cwd: Path | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL tool (never through a shell) without the caller's PG* variables."""
    return subprocess.run(  # noqa: S603 - argv of the server binaries this module found
        command,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        env=_clean_env(),
        cwd=cwd,
    )


def _pg_config_bindir() -> Path | None:
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        return None
    result = _run_tool([pg_config, "--bindir"], timeout=30)
    return Path(result.stdout.strip()) if result.returncode == 0 else None


def find_bin_dir() -> Path:
    """Directory holding initdb/pg_ctl/psql: $TOKENBANK_PG_BIN, newest Debian dir, pg_config."""
    explicit = os.environ.get(_BIN_ENV)
    if explicit:
        if _has_server_binaries(Path(explicit)):
            return Path(explicit)
        raise RuntimeError(f"${_BIN_ENV}={explicit} lacks initdb/pg_ctl/psql. {_INSTALL_HINT}")
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True):
        if _has_server_binaries(Path(candidate)):
            return Path(candidate)
    from_pg_config = _pg_config_bindir()
    if from_pg_config is not None and _has_server_binaries(from_pg_config):
        return from_pg_config
    raise RuntimeError(_INSTALL_HINT)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _clean_env() -> dict[str, str]:
    """The caller's environment minus PG* variables that could redirect the tools."""
    return {key: value for key, value in os.environ.items() if not key.startswith("PG")}


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<could not read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


def _is_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie awaiting its (foreign) parent's reaping."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    os.chown(root, uid, gid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)


def _start_watchdog(stop_command: list[str], base_dir: Path) -> subprocess.Popen[bytes]:
    """Start this file as the watchdog of the server in `base_dir` (module docstring).

    Its stdin is a pipe whose writing end only this process holds (Python opens pipes
    non-inheritable: programs it starts do not get it; a child it merely forks keeps it
    until it exits or execs, delaying the watchdog as long); `-I` keeps the script from
    importing anything but the standard library, whatever the environment says.
    """
    plan = json.dumps({"stop": stop_command, "base_dir": str(base_dir)})
    return subprocess.Popen(  # noqa: S603 - this interpreter running this file
        [sys.executable, "-I", str(Path(__file__).resolve()), _WATCHDOG_ARG, plan],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        cwd="/",
        env=_clean_env(),
    )


def _end_watchdog(watchdog: subprocess.Popen[bytes]) -> None:
    """Disarm a watchdog: kill it (our child: its id is still ours) before closing the pipe."""
    with contextlib.suppress(ProcessLookupError):
        watchdog.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        watchdog.wait(timeout=10)
    if watchdog.stdin is not None:
        with contextlib.suppress(OSError):
            watchdog.stdin.close()


def _watch(plan_json: str) -> int:
    """The watchdog's body: wait for end-of-file on stdin, then stop the server and clean up.

    Nothing but the starter's death (or its closing the pipe) ends the wait: a
    starter that stops its server itself kills the watchdog before closing the pipe.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    plan = json.loads(plan_json)
    sys.stdin.buffer.read()
    base_dir = Path(plan["base_dir"])
    if (base_dir / "data" / "postmaster.pid").exists():
        # PostgreSQL also shuts down on its own within a minute of losing this file.
        _run_tool([str(part) for part in plan["stop"]], timeout=60, cwd=base_dir)
    shutil.rmtree(base_dir, ignore_errors=True)
    return 0


def _make_temp_dir() -> Path:
    path = tempfile.mkdtemp(prefix="tokenbank-pg-")
    if len(path) > _MAX_SOCKET_DIR_LEN:  # a long $TMPDIR would break the socket path
        shutil.rmtree(path, ignore_errors=True)
        path = tempfile.mkdtemp(prefix="tokenbank-pg-", dir="/tmp")
    return Path(path)


class PostgresServer:
    """A private, disposable PostgreSQL cluster listening on 127.0.0.1.

    Usage::

        with PostgresServer() as pg:
            pg.create_database("app")
            url = pg.async_url("app")  # postgresql+asyncpg://postgres@127.0.0.1:PORT/app
    """

    def __init__(
        self,
        bin_dir: Path | str | None = None,
        *,
        durable: bool = False,
        shared_buffers: str = DEFAULT_SHARED_BUFFERS,
    ) -> None:
        """``durable=True`` keeps PostgreSQL's fsync and synchronous commit on, as in
        production: benchmarks need it; tests don't. ``shared_buffers``: PostgreSQL's
        own page cache (a benchmark of a large database sizes it as production would)."""
        self._bin_dir = Path(bin_dir) if bin_dir is not None else None
        self._durable = durable
        self._shared_buffers = shared_buffers
        self._as_root = os.geteuid() == 0
        self._user = ROOT_DB_USER if self._as_root else pwd.getpwuid(os.geteuid()).pw_name
        self._base_dir: Path | None = None
        self._port: int | None = None
        self._postmaster_pid: int | None = None
        self._paused = False
        self._watchdog: subprocess.Popen[bytes] | None = None
        # Set on a standby (start_standby): the server it streams from.
        self._primary: PostgresServer | None = None

    # ----------------------------------------------------------------- properties

    @property
    def host(self) -> str:
        return HOST

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("PostgresServer is not running; call start() first")
        return self._port

    @property
    def user(self) -> str:
        """Database superuser: 'postgres' when run as root, else the current OS user."""
        return self._user

    @property
    def base_dir(self) -> Path:
        """Temporary directory holding the data dir, the log and the unix socket."""
        if self._base_dir is None:
            raise RuntimeError("PostgresServer is not running; call start() first")
        return self._base_dir

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "postgres.log"

    @property
    def running(self) -> bool:
        return self._port is not None

    @property
    def paused(self) -> bool:
        """True between pause() and resume(): the server is down, its data kept."""
        return self._paused

    def async_url(self, dbname: str) -> str:
        """SQLAlchemy URL for the asyncpg driver."""
        return f"postgresql+asyncpg://{self.user}@{self.host}:{self.port}/{dbname}"

    def sync_dsn(self, dbname: str) -> str:
        """libpq URI, usable by psql (and by asyncpg.connect)."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> PostgresServer:
        """initdb a fresh cluster in a temp dir and start it on a free port."""
        if self._base_dir is not None:
            raise RuntimeError("PostgresServer already started")
        if self._bin_dir is None:
            self._bin_dir = find_bin_dir()
        elif not _has_server_binaries(self._bin_dir):
            raise RuntimeError(f"{self._bin_dir} lacks initdb/pg_ctl/psql. {_INSTALL_HINT}")
        self._base_dir = _make_temp_dir()
        atexit.register(self.stop)
        try:
            self._watchdog = _start_watchdog(self._stop_command(self.data_dir), self._base_dir)
            self._prepare_base_dir()
            if self._primary is None:
                self._initdb()
            else:
                self._base_backup(self._primary)
            self._start_on_free_port()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop this object's server (immediate mode) and delete its temp dir. Idempotent."""
        atexit.unregister(self.stop)
        base_dir, self._base_dir = self._base_dir, None
        if base_dir is None:
            return
        if self._port is not None and not self._paused:
            self._stop_postmaster(base_dir / "data")
        self._paused = False
        self._port = None
        self._postmaster_pid = None
        shutil.rmtree(base_dir, ignore_errors=True)
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            _end_watchdog(watchdog)

    def pause(self) -> None:
        """Take the server down as an outage would (``pg_ctl stop -m fast``: sessions are
        terminated), keeping its data directory and port for resume(). Idempotent."""
        if self._base_dir is None or self._port is None:
            raise RuntimeError("PostgresServer is not running; call start() first")
        if self._paused:
            return
        argv = [self._bin("pg_ctl"), "stop", "-w", "-m", "fast", "-D", str(self.data_dir)]
        result = self._run(argv, timeout=90)
        if result.returncode != 0:
            raise RuntimeError(f"pg_ctl stop failed ({result.returncode}): {result.stderr}")
        self._paused = True
        self._postmaster_pid = None

    def resume(self) -> None:
        """Start a paused server again, on the same data directory and port. Idempotent."""
        if not self._paused:
            return
        result = self._pg_ctl_start(self.port)
        if result.returncode != 0:
            raise RuntimeError(
                f"pg_ctl start failed ({result.returncode}): {result.stdout}{result.stderr}\n"
                f"--- tail of {self.log_file} ---\n{_tail(self.log_file)}"
            )
        self._paused = False
        self._postmaster_pid = self._read_postmaster_pid()

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ databases

    def create_database(self, name: str, template: str | None = None) -> None:
        """CREATE DATABASE name [TEMPLATE template] (the template must have no sessions)."""
        sql = f"CREATE DATABASE {quote_ident(name)}"
        if template is not None:
            sql += f" TEMPLATE {quote_ident(template)}"
        self._psql("postgres", ["-c", sql])

    def drop_database(self, name: str) -> None:
        """DROP DATABASE IF EXISTS name, terminating any sessions still connected to it."""
        self._psql("postgres", ["-c", f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)"])

    def execute_sql(self, dbname: str, sql: str) -> str:
        """Run an SQL script in `dbname`; returns psql's unaligned, tuples-only output."""
        return self._psql(dbname, ["-A", "-t", "-f", "-"], stdin=sql)

    # ------------------------------------------------------------------ standbys

    def start_standby(self) -> PostgresServer:
        """A hot standby of this server, streaming from it, on a port of its own.

        ``pg_basebackup -R`` copies the data directory and writes the standby's
        ``primary_conninfo``; initdb's pg_hba already lets loopback replication
        connections in and PostgreSQL's defaults (``wal_level=replica``, ten WAL
        senders) are what streaming needs. Returns once the standby streams.
        """
        standby = PostgresServer(
            self._bin_dir, durable=self._durable, shared_buffers=self._shared_buffers
        )
        standby._primary = self
        standby.start()
        try:
            standby.wait_streaming()
        except BaseException:
            standby.stop()
            raise
        return standby

    def wait_streaming(self, timeout_seconds: float = _START_TIMEOUT_S) -> None:
        """Wait until this standby's WAL receiver streams from its primary."""
        sql = "SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming'"
        self._wait_until(lambda: self.execute_sql("postgres", sql).strip() == "1", timeout_seconds)

    def current_wal_lsn(self) -> str:
        """Where this primary's WAL ends now (what a standby must replay to be current).

        The insert position, not the written one: without synchronous commit (the
        tests' servers) a committed transaction may sit in WAL buffers for a moment.
        """
        return self.execute_sql("postgres", "SELECT pg_current_wal_insert_lsn()").strip()

    def wait_replayed(self, lsn: str, timeout_seconds: float = _START_TIMEOUT_S) -> None:
        """Wait until this standby has replayed its primary's WAL up to ``lsn``."""
        sql = f"SELECT pg_last_wal_replay_lsn() >= '{_checked_lsn(lsn)}'::pg_lsn"
        self._wait_until(lambda: self.execute_sql("postgres", sql).strip() == "t", timeout_seconds)

    def catch_up(self) -> None:
        """Wait until this standby has replayed everything its primary has written."""
        if self._primary is None:
            raise RuntimeError("catch_up() is for a standby (start_standby)")
        self.wait_replayed(self._primary.current_wal_lsn())

    def pause_replay(self) -> None:
        """Stop applying WAL on this standby (it still receives it): replication lag."""
        self.execute_sql("postgres", "SELECT pg_wal_replay_pause()")

    def resume_replay(self) -> None:
        self.execute_sql("postgres", "SELECT pg_wal_replay_resume()")

    def _wait_until(self, done: Callable[[], bool], timeout_seconds: float) -> None:
        deadline = time.monotonic() + timeout_seconds
        while not done():
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"standby not there after {timeout_seconds} s\n"
                    f"--- tail of {self.log_file} ---\n{_tail(self.log_file)}"
                )
            time.sleep(0.05)

    # ------------------------------------------------------------------ backups

    def dump(self, dbname: str, path: Path) -> None:
        """``pg_dump --format=custom`` of ``dbname`` into ``path`` (a new file)."""
        argv = [
            self._bin("pg_dump"), "--format=custom", "--no-owner",
            "-h", self.host, "-p", str(self.port), "-U", self.user, "-d", dbname,
        ]  # fmt: skip
        self._to_file(argv, path)

    def restore(self, path: Path, dbname: str) -> None:
        """``pg_restore`` a custom-format dump into ``dbname`` (an existing, empty database),
        stopping at the first error."""
        argv = [
            self._bin("pg_restore"), "--exit-on-error", "--no-owner",
            "-h", self.host, "-p", str(self.port), "-U", self.user, "-d", dbname,
        ]  # fmt: skip
        result = self._run_binary(argv, stdin_path=path)
        if result.returncode != 0:
            raise RuntimeError(f"pg_restore failed ({result.returncode}):\n{result.stderr!r}")

    def _to_file(self, argv: list[str], path: Path) -> None:
        with path.open("xb") as out:
            result = subprocess.run(  # noqa: S603 - argv of the server binaries this module found
                self._command(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.PIPE,
                check=False,
                timeout=300,
                env=_clean_env(),
                cwd=self.base_dir,
            )
        if result.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed ({result.returncode}):\n{result.stderr!r}")

    def _run_binary(
        self, argv: list[str], *, stdin_path: Path
    ) -> subprocess.CompletedProcess[bytes]:
        # The file is read by this process and piped in: the server's OS user (when run
        # as root) need not be able to open it.
        with stdin_path.open("rb") as source:
            return subprocess.run(  # noqa: S603 - argv of the server binaries this module found
                self._command(argv),
                stdin=source,
                capture_output=True,
                check=False,
                timeout=300,
                env=_clean_env(),
                cwd=self.base_dir,
            )

    # ------------------------------------------------------------------ internals

    def _bin(self, name: str) -> str:
        assert self._bin_dir is not None
        return str(self._bin_dir / name)

    def _command(self, argv: list[str]) -> list[str]:
        """Wrap argv so it runs as the server's OS user."""
        if self._as_root:
            return ["runuser", "-u", ROOT_DB_USER, "--", *argv]
        return argv

    def _run(
        self, argv: list[str], *, timeout: float, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        # cwd: an unreadable one (e.g. /root) upsets the postgres user.
        return _run_tool(self._command(argv), timeout=timeout, cwd=self.base_dir, stdin=stdin)

    def _prepare_base_dir(self) -> None:
        if not self._as_root:
            return
        try:
            entry = pwd.getpwnam(ROOT_DB_USER)
        except KeyError:
            raise RuntimeError(
                f"running as root but there is no {ROOT_DB_USER!r} system user. {_INSTALL_HINT}"
            ) from None
        _chown_tree(self.base_dir, entry.pw_uid, entry.pw_gid)

    def _initdb(self) -> None:
        argv = [
            self._bin("initdb"),
            "-D", str(self.data_dir),
            "--auth=trust",
            f"--username={self.user}",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        ]  # fmt: skip
        result = self._run(argv, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed ({result.returncode}):\n{result.stderr}")

    def _base_backup(self, primary: PostgresServer) -> None:
        argv = [
            self._bin("pg_basebackup"),
            "-D", str(self.data_dir),
            "-h", primary.host, "-p", str(primary.port), "-U", primary.user,
            "-R", "-X", "stream", "--checkpoint=fast", "--no-sync",
        ]  # fmt: skip
        result = self._run(argv, timeout=300)
        if result.returncode != 0:
            raise RuntimeError(f"pg_basebackup failed ({result.returncode}):\n{result.stderr}")

    def _start_on_free_port(self) -> None:
        for _attempt in range(_PORT_ATTEMPTS):
            port = _free_port()
            result = self._pg_ctl_start(port)
            if result.returncode == 0:
                self._port = port
                self._postmaster_pid = self._read_postmaster_pid()
                return
            log = _tail(self.log_file)
            if "could not bind" not in log and "already in use" not in log:
                break
        raise RuntimeError(
            f"pg_ctl start failed ({result.returncode}): {result.stdout}{result.stderr}\n"
            f"--- tail of {self.log_file} ---\n{_tail(self.log_file)}"
        )

    def _pg_ctl_start(self, port: int) -> subprocess.CompletedProcess[str]:
        options = " ".join(
            [
                f"-c listen_addresses={HOST}",
                f"-c port={port}",
                f"-c unix_socket_directories='{self.base_dir}'",
                *(
                    []
                    if self._durable
                    else ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
                ),
                "-c max_connections=300",
                f"-c shared_buffers={self._shared_buffers}",
            ]
        )
        argv = [
            self._bin("pg_ctl"), "start", "-w",
            "-t", str(_START_TIMEOUT_S),
            "-D", str(self.data_dir),
            "-l", str(self.log_file),
            "-o", options,
        ]  # fmt: skip
        return self._run(argv, timeout=_START_TIMEOUT_S + 30)

    def _read_postmaster_pid(self) -> int | None:
        try:
            first_line = (self.data_dir / "postmaster.pid").read_text().splitlines()[0]
            return int(first_line)
        except (OSError, IndexError, ValueError):
            return None

    def _stop_command(self, data_dir: Path) -> list[str]:
        """pg_ctl's immediate stop, as the server's OS user."""
        return self._command(
            [self._bin("pg_ctl"), "stop", "-w", "-m", "immediate", "-D", str(data_dir)]
        )

    def _stop_postmaster(self, data_dir: Path) -> None:
        result = _run_tool(self._stop_command(data_dir), timeout=60, cwd=data_dir.parent)
        if result.returncode != 0:
            self._kill_postmaster()

    def _kill_postmaster(self) -> None:
        """Fallback when pg_ctl cannot stop it: SIGKILL the postmaster *we* started."""
        pid = self._postmaster_pid
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _is_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)

    def _psql(self, dbname: str, args: list[str], stdin: str | None = None) -> str:
        argv = [
            self._bin("psql"),
            "-X", "-q",
            "-h", self.host,
            "-p", str(self.port),
            "-U", self.user,
            "-d", dbname,
            "-v", "ON_ERROR_STOP=1",
            *args,
        ]  # fmt: skip
        result = self._run(argv, timeout=120, stdin=stdin)
        if result.returncode != 0:
            raise RuntimeError(f"psql failed ({result.returncode}) in {dbname!r}:\n{result.stderr}")
        return result.stdout


if __name__ == "__main__" and sys.argv[1:2] == [_WATCHDOG_ARG]:
    sys.exit(_watch(sys.argv[2]))
