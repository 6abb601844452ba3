"""Start a private localstripe, a stateful fake Stripe, for the payment tests.

Why this exists: tokenbank takes money through Stripe with the official SDK, and its
payment tests must drive that SDK against something that keeps state (customers,
PaymentIntents, SetupIntents, refunds, subscriptions, invoices) and sends webhooks
signed as Stripe signs them, without anything reaching the internet.  `LocalStripe`
runs localstripe (PyPI `localstripe`, an aiohttp app) as a child of this interpreter
and hands out `stripe.StripeClient`s pointed at it.

It does not run ``python -m localstripe``, which would do three things a shared test
machine must not have:

- bind every interface (``::``): here the child serves a socket this process bound on
  127.0.0.1 and passed down, so no other process can take the port in between;
- pickle its whole store into ``/tmp/localstripe.pickle`` after every write and load
  it at start: one file shared by every localstripe on the machine (state leaking
  between runs, races between concurrent ones); here the store lives in memory only;
- outlive a starter killed outright: here the child reads a pipe only this process
  holds, and end-of-file (this process is gone, however it died) ends the child.

`WebhookReceiver` is the other end: a loopback HTTP server that records what
localstripe posts, for tests that check webhooks.  Webhooks only go to loopback
addresses (`configure_webhook` refuses any other), so a test cannot make localstripe
post an event off the machine.
"""

from __future__ import annotations

import atexit
import contextlib
import http.server
import ipaddress
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import IO, Any

import requests
import stripe

__all__ = ["DEFAULT_SECRET_KEY", "LocalStripe", "ReceivedWebhook", "WebhookReceiver"]

HOST = "127.0.0.1"
# localstripe accepts any key that starts with "sk_" and is longer than 5 characters.
DEFAULT_SECRET_KEY = "sk_test_tokenbank_localstripe"  # noqa: S105 - a fake, for a fake
DEFAULT_WEBHOOK_NAME = "tokenbank"
_START_TIMEOUT_S = 30.0
_STOP_TIMEOUT_S = 10.0
_REQUEST_TIMEOUT_S = 10.0
_LOG_TAIL_CHARS = 4000
_LOOPBACK_NAMES = ("localhost",)

# The child's program, run with `python -I -c` (argv[1]: the listening socket's fd).
# Kept to the standard library, localstripe and aiohttp: the child imports nothing of
# tokenbank, so it starts fast and cannot be broken by a tokenbank change.
_CHILD_PROGRAM = """
import os, signal, socket, sys, threading
from aiohttp import web
from localstripe import resources, server

# In memory only: no shared /tmp/localstripe.pickle (module docstring).
resources.Store.dump_to_disk = lambda self: None
resources.Store.try_load_from_disk = lambda self: None

def exit_when_the_starter_is_gone():
    sys.stdin.buffer.read()  # returns at end-of-file: the starter closed it or died
    os._exit(0)

threading.Thread(target=exit_when_the_starter_is_gone, daemon=True).start()
# SIGTERM ends it at once: aiohttp's graceful shutdown takes a second and keeps nothing.
signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
listener = socket.socket(fileno=int(sys.argv[1]))
web.run_app(server.app, sock=listener, access_log=None, print=None, handle_signals=False)
"""


def _direct_opener() -> urllib.request.OpenerDirector:
    """A urllib opener that ignores $HTTP_PROXY and friends: loopback is always direct."""
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _listen_on_loopback() -> socket.socket:
    """A listening socket on a free 127.0.0.1 port (Popen's pass_fds hands it down)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((HOST, 0))
    listener.listen(128)
    return listener


def _is_loopback_url(url: str) -> bool:
    parsed = urllib.parse.urlsplit(url)
    host = parsed.hostname or ""
    if parsed.scheme not in ("http", "https"):
        return False
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _end_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL, the child we started (by its pid, through its Popen)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=_STOP_TIMEOUT_S)
    if process.stdin is not None:
        with contextlib.suppress(OSError):
            process.stdin.close()


class LocalStripe:
    """A private localstripe on 127.0.0.1, empty when started, gone when stopped.

    Usage::

        with LocalStripe() as fake:
            client = fake.client()
            customer = client.v1.customers.create({"email": "a@example.test"})
    """

    def __init__(self, *, start_timeout: float = _START_TIMEOUT_S) -> None:
        self._start_timeout = start_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._port: int | None = None
        self._sessions: list[requests.Session] = []

    # ----------------------------------------------------------------- properties

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("LocalStripe is not running; call start() first")
        return self._port

    @property
    def api_base(self) -> str:
        """What the SDK's base address should be: ``http://127.0.0.1:PORT``."""
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> LocalStripe:
        """Start the child on a free loopback port and wait until it answers."""
        if self._process is not None:
            raise RuntimeError("LocalStripe already started")
        atexit.register(self.stop)
        try:
            self._spawn()
            self._wait_until_answering()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """End the child this object started, close its clients' sessions. Idempotent."""
        atexit.unregister(self.stop)
        # Sessions first: the server's graceful shutdown waits for open keep-alive connections.
        sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()
        process, self._process = self._process, None
        if process is not None:
            _end_process(process)
        log, self._log = self._log, None
        if log is not None:
            log.close()
        self._port = None

    def __enter__(self) -> LocalStripe:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -------------------------------------------------------------------- clients

    def client(
        self, secret_key: str = DEFAULT_SECRET_KEY, *, max_network_retries: int = 0
    ) -> stripe.StripeClient:
        """An official SDK client whose every base address is this localstripe.

        Retries default to none: localstripe ignores Idempotency-Key, so a retried
        POST would create a second object, and a retry would hide the error a test
        wants to see.
        """
        session = requests.Session()
        session.trust_env = False  # never through a proxy from the environment
        self._sessions.append(session)
        base = self.api_base
        return stripe.StripeClient(
            secret_key,
            base_addresses={"api": base, "connect": base, "files": base, "meter_events": base},
            http_client=stripe.RequestsClient(session=session, timeout=_REQUEST_TIMEOUT_S),
            max_network_retries=max_network_retries,
        )

    # ------------------------------------------------------------ localstripe config

    def configure_webhook(
        self,
        url: str,
        secret: str,
        events: list[str] | None = None,
        *,
        name: str = DEFAULT_WEBHOOK_NAME,
    ) -> None:
        """Make localstripe POST each event (of `events`, or all) to `url`, signed with
        `secret`.  A second call with the same `name` replaces the first."""
        if not _is_loopback_url(url):
            raise ValueError(f"webhooks may only go to a loopback address, not {url!r}")
        if not secret:
            raise ValueError("a webhook needs a non-empty signing secret")
        body: dict[str, Any] = {"url": url, "secret": secret}
        if events is not None:
            body["events"] = list(events)
        self._config_request("POST", f"/_config/webhooks/{urllib.parse.quote(name)}", body)

    def remove_webhook(self, name: str = DEFAULT_WEBHOOK_NAME) -> None:
        """Stop posting to the webhook `name`.

        localstripe has no way to delete one, so it is replaced by one that subscribes
        to no event type (an empty list matches nothing) and points at a closed port.
        """
        body = {"url": f"http://{HOST}:9/", "secret": "removed", "events": []}
        self._config_request("POST", f"/_config/webhooks/{urllib.parse.quote(name)}", body)

    def flush(self) -> None:
        """Delete every object (``DELETE /_config/data``).

        Webhooks stay configured, and events already scheduled (localstripe posts
        each one a second after the call that caused it) are still delivered.
        """
        self._config_request("DELETE", "/_config/data", None)

    def log(self) -> str:
        """What the child has written so far: the tracebacks behind its 500 answers."""
        if self._log is None:
            return ""
        # pread, not seek + read: the child writes through the same file offset.
        fd = self._log.fileno()
        return os.pread(fd, os.fstat(fd).st_size, 0).decode("utf-8", errors="replace")

    # ------------------------------------------------------------------ internals

    def _spawn(self) -> None:
        listener = _listen_on_loopback()
        try:
            self._port = int(listener.getsockname()[1])
            # Unnamed, gone when closed; a file, not a pipe, so the child never blocks on it.
            self._log = tempfile.TemporaryFile(prefix="tokenbank-localstripe-")  # noqa: SIM115
            self._process = subprocess.Popen(  # noqa: S603 - this interpreter, our program
                [sys.executable, "-I", "-c", _CHILD_PROGRAM, str(listener.fileno())],
                stdin=subprocess.PIPE,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                pass_fds=(listener.fileno(),),
                cwd="/",
            )
        finally:
            # The child has its own copy; ours would keep accepting after it died.
            listener.close()

    def _wait_until_answering(self) -> None:
        """Poll a request without side effects until the app answers it."""
        deadline = time.monotonic() + self._start_timeout
        url = f"{self.api_base}/v1/customers?limit=1"
        headers = {"Authorization": f"Bearer {DEFAULT_SECRET_KEY}"}
        while True:
            self._raise_if_exited()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(f"localstripe did not answer in time\n{self._log_tail()}")
            try:
                request = urllib.request.Request(url, headers=headers)  # noqa: S310 - loopback
                with _direct_opener().open(request, timeout=min(remaining, 5.0)):
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)

    def _raise_if_exited(self) -> None:
        if self._process is not None and self._process.poll() is not None:
            code = self._process.returncode
            raise RuntimeError(f"localstripe exited with {code}\n{self._log_tail()}")

    def _log_tail(self) -> str:
        return f"--- localstripe output ---\n{self.log()[-_LOG_TAIL_CHARS:]}"

    def _config_request(self, method: str, path: str, body: dict[str, Any] | None) -> None:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310 - our loopback server
            self.api_base + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with _direct_opener().open(request, timeout=_REQUEST_TIMEOUT_S):
                return
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", errors="replace")
            raise RuntimeError(f"localstripe {method} {path}: {exc.code} {detail}") from None


@dataclass(frozen=True)
class ReceivedWebhook:
    """One POST as the receiver got it: the raw body is what signatures are over."""

    path: str
    headers: dict[str, str]
    body: bytes
    received_at: float  # time.time() when it arrived

    @property
    def signature(self) -> str | None:
        return self.headers.get("stripe-signature")

    @property
    def event(self) -> dict[str, Any]:
        """The body parsed, unverified (verify with stripe.Webhook.construct_event)."""
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


class WebhookReceiver:
    """A loopback HTTP server, in a thread, that answers 200 and records every POST."""

    def __init__(self) -> None:
        self._received: list[ReceivedWebhook] = []
        self._changed = threading.Condition()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("WebhookReceiver is not running; call start() first")
        return f"http://{HOST}:{self._server.server_address[1]}/webhooks/stripe"

    @property
    def received(self) -> list[ReceivedWebhook]:
        with self._changed:
            return list(self._received)

    def start(self) -> WebhookReceiver:
        server = http.server.ThreadingHTTPServer((HOST, 0), self._handler_class())
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=_STOP_TIMEOUT_S)

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def wait_for(
        self, matches: Callable[[ReceivedWebhook], bool], *, timeout: float = 10.0
    ) -> ReceivedWebhook:
        """The first webhook (received so far or within `timeout`) that `matches`."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = next((hook for hook in self._received if matches(hook)), None)
                remaining = deadline - time.monotonic()
                if found is not None or remaining <= 0:
                    break
                self._changed.wait(remaining)
        if found is None:
            types = [hook.event.get("type") for hook in self.received]
            raise TimeoutError(f"no matching webhook in {timeout}s; received: {types}")
        return found

    def wait_for_event(
        self, event_type: str, object_id: str, *, timeout: float = 10.0
    ) -> ReceivedWebhook:
        """The webhook of type `event_type` about the object whose id is `object_id`."""

        def matches(hook: ReceivedWebhook) -> bool:
            event = hook.event
            return bool(
                event.get("type") == event_type
                and event.get("data", {}).get("object", {}).get("id") == object_id
            )

        return self.wait_for(matches, timeout=timeout)

    def _record(self, hook: ReceivedWebhook) -> None:
        with self._changed:
            self._received.append(hook)
            self._changed.notify_all()

    def _handler_class(self) -> type[http.server.BaseHTTPRequestHandler]:
        record = self._record

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                headers = {key.lower(): value for key, value in self.headers.items()}
                record(ReceivedWebhook(self.path, headers, body, time.time()))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                """Silent: the test output is no place for an access log."""

        return Handler
