"""Helpers for tests that run a real ``tokenbank serve`` process over loopback."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import httpx

STARTUP_TIMEOUT_SECONDS = 30.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_healthy(
    base_url: str,
    process: subprocess.Popen[bytes],
    log: Path,
    *,
    timeout_seconds: float = STARTUP_TIMEOUT_SECONDS,
) -> None:
    """Until /healthz answers 200; fail with the server's log if it exits or stalls."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"tokenbank serve exited early:\n{log.read_text()}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError("tokenbank serve did not become healthy in time")
