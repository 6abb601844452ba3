"""The events tests use the API tests' app and the admin pages' site fixtures too."""

from tests.api.conftest import api
from tests.web_admin.conftest import site

__all__ = ["api", "site"]
