"""A Stripe sandbox on this machine for trying tokenbank's payments: localstripe plus
the test front's Checkout, on loopback, sending signed webhooks to tokenbank.

    .venv/bin/python -m tokenbank.testing.stripe_sandbox --port 12111 \\
        --webhook-url http://127.0.0.1:8000/api/stripe/webhook

then run tokenbank with the settings it prints. Nothing leaves the machine; the
sandbox forgets everything when it stops (Ctrl-C, or after --seconds).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import threading

from tokenbank.testing.localstripe import LocalStripe
from tokenbank.testing.stripe_front import StripeFront

# Not secrets: the fixed keys of a fake Stripe that only this machine can reach.
SANDBOX_SECRET_KEY = "sk_test_sandbox"  # noqa: S105
SANDBOX_WEBHOOK_SECRET = "whsec_sandbox"  # noqa: S105


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=12111, help="the Stripe API's port")
    parser.add_argument("--webhook-url", help="where to post events (tokenbank's webhook)")
    parser.add_argument("--webhook-secret", default=SANDBOX_WEBHOOK_SECRET)
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long")
    args = parser.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with LocalStripe() as localstripe, StripeFront(localstripe, port=args.port) as front:
        if args.webhook_url:
            front.configure_webhook(args.webhook_url, args.webhook_secret)
        print(f"Stripe sandbox on {front.api_base}; run tokenbank with:", flush=True)
        print(
            f"  TOKENBANK_STRIPE_API_BASE={front.api_base}"
            f" TOKENBANK_STRIPE_SECRET_KEY={SANDBOX_SECRET_KEY}"
            f" TOKENBANK_STRIPE_WEBHOOK_SECRET={args.webhook_secret}",
            flush=True,
        )
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait(args.seconds)


if __name__ == "__main__":
    main()
