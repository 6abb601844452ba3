"""The events tests use the API tests' app fixture too."""

from tests.api.conftest import api

__all__ = ["api"]
