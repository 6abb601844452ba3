"""``__all__`` is honest: everything listed exists and says it lives in the package,
and every public name the package defines is listed (httpx's test_exported_members)."""

from __future__ import annotations

import types

import pytest

import tokenbank
import tokenbank.client
from tokenbank.client import asgi, fastapi


def _public_names(module: types.ModuleType) -> set[str]:
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }


def test_every_listed_name_exists_and_is_unique() -> None:
    names = tokenbank.client.__all__
    assert len(names) == len(set(names))
    for name in names:
        assert hasattr(tokenbank.client, name), name


def test_every_public_name_is_listed() -> None:
    assert _public_names(tokenbank.client) == set(tokenbank.client.__all__)


def test_exported_classes_and_functions_belong_to_the_package() -> None:
    for name in tokenbank.client.__all__:
        value = getattr(tokenbank.client, name)
        if isinstance(value, type | types.FunctionType):
            assert value.__module__ == "tokenbank.client", name


def test_private_modules_stay_private() -> None:
    submodules = {
        name
        for name, value in vars(tokenbank.client).items()
        if isinstance(value, types.ModuleType)
    }
    assert all(name.startswith("_") or name in {"fastapi", "asgi"} for name in submodules)


def test_integration_modules_list_their_names() -> None:
    assert set(fastapi.__all__) == {"Charges", "TokenBank", "jwt_user_id", "session_user_id"}
    assert set(asgi.__all__) == {"RequireTokensMiddleware", "jwt_user_id"}
    for module in (fastapi, asgi):
        for name in module.__all__:
            assert hasattr(module, name)


def test_the_embedded_api_is_still_exported_lazily() -> None:
    for name in tokenbank.__all__:
        assert getattr(tokenbank, name).__name__ == name
    assert set(tokenbank.__all__) <= set(dir(tokenbank))
    from tokenbank import TokenService  # the README's import

    assert TokenService.__module__ == "tokenbank.ledger.service"


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="NoSuchThing"):
        tokenbank.NoSuchThing  # noqa: B018
