"""Child processes: the build they import, their environment, the servers, /proc readings.

Every tokenbank process of a run imports a copy of src/ taken when the run starts
(`snapshot_build`), with the run's --setting values (`clean_env`). Long-running
children are kept in CHILDREN, so that an interrupted run stops them by their ids.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import HOST, PYTHON, REPO, BenchFailure, tail

SERVER_START_TIMEOUT_S = 60.0

# Child processes that may run for long (populate, pgbench -i, warm-ups, embedded):
# stopped by their ids when the harness is interrupted.
CHILDREN: list[subprocess.Popen[Any]] = []

# The build every process of a run imports: a copy of src/ taken when the run starts,
# so that edits made meanwhile (others work in this tree) change no case's code.
BUILD: dict[str, Path] = {}

# --setting NAME=VALUE of the command line, for every tokenbank process.
EXTRA_SETTINGS: dict[str, str] = {}


def terminate_children() -> None:
    """Terminate the CHILDREN still running, and wait for them a little."""
    for child in CHILDREN:
        if child.poll() is None:
            with contextlib.suppress(OSError):
                child.terminate()
    for child in CHILDREN:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def snapshot_build(workdir: Path) -> str:
    """Copy src/tokenbank into the work dir; its SHA-256 over every file, in order."""
    target = workdir / "build"
    shutil.copytree(
        REPO / "src" / "tokenbank",
        target / "tokenbank",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    BUILD["path"] = target
    digest = hashlib.sha256()
    for path in sorted(p for p in (target / "tokenbank").rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(target)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def clean_env(**extra: str) -> dict[str, str]:
    """Our environment without TOKENBANK_* or PG* settings that would redirect a server
    (but with the run's --setting values), importing tokenbank from the run's snapshot
    of src/."""
    env = {
        key: value for key, value in os.environ.items() if not key.startswith(("TOKENBANK_", "PG"))
    }
    source = BUILD.get("path", REPO / "src")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(source), env.get("PYTHONPATH")]))
    env.update(EXTRA_SETTINGS)
    env.update(extra)
    return env


def tokenbank_cli(*args: str, database_url: str, timeout: float = 600) -> str:
    """Run `tokenbank ARGS` on a database; its output (BenchFailure if it fails)."""
    command = [PYTHON, "-m", "tokenbank.cli", *args]
    result = subprocess.run(
        command,
        env=clean_env(TOKENBANK_DATABASE_URL=database_url),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise BenchFailure(
            f"`tokenbank {' '.join(args)}` failed ({result.returncode}):\n"
            f"{result.stdout}{result.stderr}"
        )
    return result.stdout


def ensure_wrk() -> str:
    """The path of `wrk`, installed with scripts/ensure-wrk.sh if it is missing."""
    wrk = shutil.which("wrk")
    if wrk is None:
        subprocess.run([str(REPO / "scripts" / "ensure-wrk.sh")], check=False)
        wrk = shutil.which("wrk")
    if wrk is None:
        raise BenchFailure("wrk is not installed and could not be installed (apt-get install wrk)")
    return wrk


# --- /proc ------------------------------------------------------------------------------


def proc_children() -> dict[int, list[int]]:
    """Every process's children, by parent id."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    return children


def descendants(pid: int) -> list[int]:
    tree = proc_children()
    found, stack = [], [pid]
    while stack:
        for child in tree.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def status_kib(pid: int, field_name: str) -> int | None:
    """A kB field of /proc/PID/status (e.g. VmHWM), or None."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def postgres_processes() -> list[int]:
    """Every PostgreSQL process on the machine: the bench's own servers (one case
    runs at a time, so their CPU during a run is that run's)."""
    pids = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and (entry / "comm").read_text().strip() == "postgres":
                pids.append(int(entry.name))
    return pids


def cpu_ticks(pids: list[int]) -> int:
    """User plus system CPU ticks of the processes, so far."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
    return total


def wait_quiet(pids: list[int], settle: float = 0.3, timeout: float = 20.0) -> None:
    """Wait until the processes use no CPU for `settle` seconds: in-flight work done."""
    deadline = time.monotonic() + timeout
    last, quiet_since = cpu_ticks(pids), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = cpu_ticks(pids)
        if now - last > 1:
            last, quiet_since = now, time.monotonic()
        elif time.monotonic() - quiet_since >= settle:
            return
    raise BenchFailure(f"server processes {pids} still busy {timeout:.0f}s after the load stopped")


# --- servers ----------------------------------------------------------------------------


class Server:
    """One HTTP server we start (uvicorn with --workers), on a free loopback port."""

    def __init__(
        self,
        name: str,
        command: list[str],
        env: dict[str, str],
        workers: int,
        log: Path,
        health_path: str,
    ) -> None:
        self.name = name
        self.port = free_port()
        self.command = [*command, "--host", HOST, "--port", str(self.port)]
        self.env = env
        self.workers = workers
        self.log = log
        self.health_path = health_path
        self.process: subprocess.Popen[bytes] | None = None
        self.worker_pids: list[int] = []

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                self.command,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: we can stop all of it
                cwd=self.log.parent,
            )

    def wait_ready(self) -> None:
        """Until all its workers are up and its health path has answered 200 three times."""
        assert self.process is not None
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        healthy = 0
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchFailure(f"{self.name} server exited early:\n{tail(self.log)}")
            self.worker_pids = self._find_workers()
            if len(self.worker_pids) == self.workers and self._healthy():
                healthy += 1
                if healthy >= 3:
                    return
            time.sleep(0.2)
        raise BenchFailure(f"{self.name} server not ready in time:\n{tail(self.log)}")

    def _find_workers(self) -> list[int]:
        assert self.process is not None
        if self.workers == 1:
            return [self.process.pid]
        return [pid for pid in descendants(self.process.pid) if "spawn_main" in cmdline(pid)]

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.base_url + self.health_path, timeout=2) as answer:
                return bool(answer.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        """Terminate it; after 15 s, SIGKILL its whole process group."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # the group we created for it
            process.wait(timeout=10)
