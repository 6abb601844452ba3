"""The events domain's exceptions."""

from __future__ import annotations

from tokenbank.errors import NotFound


class EndpointNotFound(NotFound):
    def __init__(self, endpoint_id: str) -> None:
        super().__init__(f"no webhook endpoint {endpoint_id!r}")


class EventNotFound(NotFound):
    def __init__(self, event_id: str) -> None:
        super().__init__(f"no event {event_id!r}")


class AppNotFound(NotFound):
    def __init__(self, slug: str) -> None:
        super().__init__(f"no app {slug!r}")
