"""Identifiers are matched whole: ``re.match`` with ``$`` accepts a trailing newline
(``$`` matches before one), so ``"basic\\n"`` would be a different, valid plan name."""

from __future__ import annotations

import pytest

from tokenbank.apps.service import validate_slug
from tokenbank.errors import InvalidInput
from tokenbank.plans.service import validate_feature_id, validate_plan_name


def test_app_slugs_refuse_a_trailing_newline() -> None:
    assert validate_slug("image-gen") == "image-gen"
    with pytest.raises(InvalidInput):
        validate_slug("image-gen\n")


def test_plan_names_refuse_a_trailing_newline() -> None:
    assert validate_plan_name("basic") == "basic"
    with pytest.raises(InvalidInput):
        validate_plan_name("basic\n")


def test_feature_ids_refuse_a_trailing_newline() -> None:
    assert validate_feature_id("chat") == "chat"
    with pytest.raises(InvalidInput):
        validate_feature_id("chat\n")
