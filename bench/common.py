"""What every part of the harness shares: its paths, its failure, its progress lines."""

from __future__ import annotations

import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
LUA = BENCH / "lua"
RESULTS_DIR = BENCH / "results"
RESULTS_MD = BENCH / "RESULTS.md"
PYTHON = sys.executable
HOST = "127.0.0.1"
STARTED = time.monotonic()


class BenchFailure(RuntimeError):
    """Something the numbers cannot be trusted after: stop and say so."""


def say(message: str) -> None:
    print(message, flush=True)


def log(message: str) -> None:
    """Progress, stamped with the seconds since the harness started."""
    print(f"[{time.monotonic() - STARTED:6.1f}s] {message}", flush=True)


def tail(path: Path, lines: int = 30) -> str:
    """The last `lines` lines of a log file (or why there are none)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as error:
        return f"<no log: {error}>"
