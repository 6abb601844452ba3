"""Errors of apps and their keys; each knows its HTTP status.

TokenBankError
├── Conflict (409)
│   └── AppExists       an app of that slug is registered
└── NotFound (404)
    ├── AppNotFound     no app of that slug
    └── KeyNotFound     no live key of the app shown with that prefix
"""

from __future__ import annotations

from tokenbank.errors import Conflict, NotFound


class AppExists(Conflict):
    pass


class AppNotFound(NotFound):
    pass


class KeyNotFound(NotFound):
    pass
