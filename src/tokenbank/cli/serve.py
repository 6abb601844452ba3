"""``tokenbank serve``: the HTTP API under uvicorn."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from tokenbank.cli._common import DatabaseUrl
from tokenbank.cli.db import db_upgrade
from tokenbank.config import get_settings
from tokenbank.logs import logging_config
from tokenbank.metrics import MULTIPROC_DIR_VARIABLE, mark_process_dead

# The client's files are named <kind>_<pid>.db (gauges: <kind>_<mode>_<pid>.db).
_PID_IN_FILE_NAME = re.compile(r"_(\d+)\.db$")
DEAD_WORKER_CHECK_SECONDS = 2.0
DIRECTORY_PREFIX = "tokenbank-metrics-"
_PID_IN_DIRECTORY_NAME = re.compile(rf"^{DIRECTORY_PREFIX}(\d+)-")


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes.", min=1, max=64)] = 1,
    migrate: Annotated[
        bool, typer.Option(help="Run `db upgrade` before serving (once, before workers).")
    ] = True,
    log_level: Annotated[
        str | None, typer.Option(help="Log level (default: TOKENBANK_LOG_LEVEL, info).")
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Serve the HTTP API (OpenAPI and interactive docs at /docs)."""
    import uvicorn  # only the server needs it: the other commands start faster

    if database_url:
        # Workers build their settings from the environment.
        os.environ["TOKENBANK_DATABASE_URL"] = database_url
        get_settings.cache_clear()
    settings = get_settings()
    level = (log_level or settings.log_level).lower()
    if migrate:
        db_upgrade(database_url)
    with _metrics_directory(workers):
        uvicorn.run(
            "tokenbank.api.app:create_server_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_config=logging_config(settings.log_format, level),
            log_level=level,
            # tokenbank logs its own access line (without the query string).
            access_log=False,
            server_header=False,
        )


@contextlib.contextmanager
def _metrics_directory(workers: int) -> Iterator[None]:
    """Prometheus multi-process mode for more than one worker: a directory the workers
    write their values to (the operator's PROMETHEUS_MULTIPROC_DIR, or a temporary one,
    removed after), and a watcher that drops a dead worker's gauges (uvicorn replaces
    a worker that dies without telling anyone).

    In the operator's directory, the files of processes no longer running (a previous
    run's) are removed first; a running process's are kept, so two ``serve`` commands
    may share one directory and one scrape counts both.
    """
    if workers == 1 and not os.environ.get(MULTIPROC_DIR_VARIABLE):
        yield  # one process: the client keeps its values in memory
        return
    given = os.environ.get(MULTIPROC_DIR_VARIABLE)
    directory = Path(given) if given else _new_directory()
    directory.mkdir(parents=True, exist_ok=True)
    _remove_stale_files(directory)
    os.environ[MULTIPROC_DIR_VARIABLE] = str(directory)
    stop = threading.Event()
    watcher = threading.Thread(target=_drop_dead_workers, args=(directory, stop), daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join(timeout=5)
        if not given:
            shutil.rmtree(directory, ignore_errors=True)
            del os.environ[MULTIPROC_DIR_VARIABLE]


def _new_directory() -> Path:
    """A temporary directory named after this process; those of serve commands gone
    without removing theirs (killed) are removed first."""
    for old in Path(tempfile.gettempdir()).glob(f"{DIRECTORY_PREFIX}*"):
        found = _PID_IN_DIRECTORY_NAME.match(old.name)
        if found and not _alive(int(found.group(1))):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{DIRECTORY_PREFIX}{os.getpid()}-"))


def _remove_stale_files(directory: Path) -> None:
    for path in directory.glob("*.db"):
        found = _PID_IN_FILE_NAME.search(path.name)
        if found is None or not _alive(int(found.group(1))):
            path.unlink(missing_ok=True)


def _drop_dead_workers(directory: Path, stop: threading.Event) -> None:
    marked: set[int] = set()
    while not stop.wait(DEAD_WORKER_CHECK_SECONDS):
        for pid in _pids_with_files(directory) - marked:
            if not _alive(pid):
                mark_process_dead(pid)
                marked.add(pid)


def _pids_with_files(directory: Path) -> set[int]:
    pids = set()
    for path in directory.glob("*.db"):
        found = _PID_IN_FILE_NAME.search(path.name)
        if found:
            pids.add(int(found.group(1)))
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process now has the pid
        return False
    return True
