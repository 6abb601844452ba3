"""`tokenbank serve --workers 2`: one scrape shows what both workers counted, and a
worker that dies loses its live gauges, not its counts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.ops.conftest import Samples
from tests.support.server import free_port, wait_until_healthy
from tokenbank import metrics

PING = {"method": "GET", "route": "/api/ping", "status": "200"}
MAX_ROUNDS = 20


@dataclass
class Served:
    base_url: str
    env: dict[str, str]
    log: Path
    metrics_dir: Path
    key: str

    def log_lines(self) -> list[dict[str, Any]]:
        return [
            json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")
        ]

    def scrape(self) -> Samples:
        # A new connection each time: any worker may answer.
        answer = httpx.get(
            f"{self.base_url}/metrics", headers={"Authorization": f"Bearer {self.key}"}
        )
        assert answer.status_code == 200, answer.text
        return Samples.parse(answer.text)


def _tokenbank(*args: str, env: dict[str, str]) -> str:
    command = [sys.executable, "-m", "tokenbank.cli", *args]
    return subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout


@pytest.fixture(params=["given", "made"])
def served(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Served]:
    """Two workers, over the operator's PROMETHEUS_MULTIPROC_DIR ("given", with a file
    a previous run left) or with none set ("made": serve makes one, and removes it)."""
    env = os.environ | {
        "TOKENBANK_DATABASE_URL": f"sqlite:///{tmp_path / 'served.db'}",
        "TOKENBANK_LOG_FORMAT": "json",
        "TMPDIR": str(tmp_path / "tmp"),  # where serve makes its directory
    }
    (tmp_path / "tmp").mkdir()
    killed_before = tmp_path / "tmp" / "tokenbank-metrics-999999-x"  # a SIGKILLed serve's
    killed_before.mkdir()
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if request.param == "given":
        env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "prometheus")
        (tmp_path / "prometheus").mkdir()
        (tmp_path / "prometheus" / "counter_999999.db").write_bytes(b"stale")
    _tokenbank("db", "upgrade", env=env)
    key = _tokenbank("apps", "create", "ops", "--scope", "admin", env=env).strip().splitlines()[-1]
    port = free_port()
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "tokenbank.cli", "serve", "--port", str(port)]
    with log.open("w") as out:
        process = subprocess.Popen(
            [*command, "--workers", "2", "--no-migrate"], env=env, stdout=out, stderr=out
        )
    base_url = f"http://127.0.0.1:{port}"
    metrics_dir = tmp_path / "prometheus"
    try:
        wait_until_healthy(base_url, process, log)
        if request.param == "made":
            assert not killed_before.exists()
            (metrics_dir,) = (tmp_path / "tmp").glob("tokenbank-metrics-*")
        yield Served(base_url, env, log, metrics_dir, key)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if request.param == "made":
        assert not metrics_dir.exists(), "serve left its metrics directory behind"


def _pings(served: Served, count: int, round_number: int) -> None:
    headers = {"Authorization": f"Bearer {served.key}"}

    def ping(index: int) -> int:
        request_id = f"ping-{round_number}-{index}"
        answer = httpx.get(
            f"{served.base_url}/api/ping", headers=headers | {"X-Request-ID": request_id}
        )
        assert answer.headers["x-request-id"] == request_id
        return answer.status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert set(pool.map(ping, range(count))) == {200}


def _ping_pids(served: Served) -> set[int]:
    return {
        line["pid"]
        for line in served.log_lines()
        if line["logger"] == "tokenbank.access" and line["fields"]["route"] == "/api/ping"
    }


def test_one_scrape_counts_both_workers(served: Served) -> None:
    assert not (served.metrics_dir / "counter_999999.db").exists()
    sent = 0
    for round_number in range(MAX_ROUNDS):  # until both workers have answered some
        _pings(served, 40, round_number)
        sent += 40
        if len(_ping_pids(served)) == 2:
            break
    pids = _ping_pids(served)
    assert len(pids) == 2, "the kernel gave every connection to one worker"
    # Each worker folds its tallies into the shared files within a second
    # (metrics.FOLD_INTERVAL_SECONDS); after that, every scrape, whichever worker
    # answers it, counts every worker's requests.
    _wait_until_counted(served, sent)
    for _ in range(6):
        samples = served.scrape()
        assert samples.get("tokenbank_http_requests_total", **PING) == sent
        assert (
            samples.get(
                "tokenbank_http_request_duration_seconds_count", method="GET", route="/api/ping"
            )
            == sent
        )
    # The access lines are JSON with the id each request sent.
    lines = served.log_lines()
    ids = {line["request_id"] for line in lines if line["logger"] == "tokenbank.access"}
    assert {f"ping-0-{index}" for index in range(40)} <= ids

    # A worker killed outright: its counts stay, its live gauges go (the serve
    # command notices the dead pid), and uvicorn starts another worker.
    dead = min(pids)
    os.kill(dead, signal.SIGKILL)
    gauge_file = served.metrics_dir / f"gauge_livesum_{dead}.db"
    deadline = time.monotonic() + 20
    while gauge_file.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not gauge_file.exists()
    wait_until_alive = time.monotonic() + 30
    while time.monotonic() < wait_until_alive:
        try:
            samples = served.scrape()
            break
        except httpx.TransportError:
            time.sleep(0.2)
    assert samples.get("tokenbank_http_requests_total", **PING) == sent


def _wait_until_counted(served: Served, sent: int) -> None:
    deadline = time.monotonic() + 10 * metrics.FOLD_INTERVAL_SECONDS
    while served.scrape().get("tokenbank_http_requests_total", **PING) != sent:
        assert time.monotonic() < deadline, "a worker's tally was never folded in"
        time.sleep(0.1)


def test_the_jobs_worker_serves_its_own_metrics(tmp_path: Path) -> None:
    env = os.environ | {"TOKENBANK_DATABASE_URL": f"sqlite:///{tmp_path / 'jobs.db'}"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    _tokenbank("db", "upgrade", env=env)
    port = free_port()
    log = tmp_path / "jobs.log"
    command = [sys.executable, "-m", "tokenbank.cli", "jobs", "run", "--metrics-port", str(port)]
    with log.open("w") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=out)
    try:
        samples = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the first pass runs when the worker starts
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
            except httpx.TransportError:
                time.sleep(0.2)
                continue
            samples = Samples.parse(text)
            if samples.get("tokenbank_job_runs_total", job="renewals", outcome="ok") == 1:
                break
            time.sleep(0.2)
        assert samples is not None, log.read_text()
        assert samples.get("tokenbank_job_runs_total", job="sweeps", outcome="ok") == 1
        assert samples.get("tokenbank_job_runs_total", job="renewals", outcome="ok") == 1
        assert samples.get("tokenbank_job_duration_seconds_count", job="renewals") == 1
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)
    # Its log lines are JSON too (the default format), outside any request.
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert any(line["logger"] == "tokenbank.jobs" for line in lines)
    assert all(line["request_id"] is None for line in lines)


def test_serve_keeps_a_running_processes_files_and_removes_the_rest(tmp_path: Path) -> None:
    """Two serve commands may share PROMETHEUS_MULTIPROC_DIR: starting one must not
    remove the other's values, only those of processes gone."""
    from tokenbank.cli.serve import _remove_stale_files

    running = tmp_path / f"counter_{os.getpid()}.db"
    gone = tmp_path / "gauge_livesum_999999.db"
    odd = tmp_path / "not-a-pid.db"
    for path in (running, gone, odd):
        path.write_bytes(b"")
    _remove_stale_files(tmp_path)
    assert running.exists()
    assert not gone.exists() and not odd.exists()
