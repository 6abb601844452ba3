"""PlanService over a real database: plans, features, membership, a user's plan."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tokenbank import InvalidInput, TokenService
from tokenbank.apps.service import AppService
from tokenbank.plans import (
    AlreadyExists,
    FeatureNotFound,
    PlanInUse,
    PlanNotFound,
    PlanService,
    WalletNotFound,
)
from tokenbank.pricing import FixedRule, OutputRatioRule


async def test_plans_and_features_story(service: TokenService) -> None:
    engine = await service.engine()
    plans = PlanService(engine, clock=service.clock)
    await AppService(engine).create_app("image-gen")

    chat = await plans.create_feature(
        "chat", name="Chat", rule={"type": "output_ratio"}, min_balance_tokens=10
    )
    assert (chat.rule, chat.pricing_version, chat.profit_percent, chat.app) == (
        OutputRatioRule(),
        1,
        None,
        None,
    )
    image = await plans.create_feature(
        "img-1",
        name="Image",
        rule=FixedRule(tokens=5),
        hold_tokens=50,
        app="image-gen",
        profit_percent="7.50",
    )
    assert (image.app, image.hold_tokens, image.profit_percent) == ("image-gen", 50, Decimal("7.5"))
    with pytest.raises(AlreadyExists):
        await plans.create_feature("chat", name="again", rule={"type": "fixed", "tokens": 1})
    assert [f.id for f in await plans.list_features(app="image-gen")] == ["img-1"]

    # Only a change of rule or profit bumps the pricing version.
    assert (await plans.update_feature("chat", name="Chat 2")).pricing_version == 1
    assert (
        await plans.update_feature("chat", rule={"type": "output_ratio", "ratio": "4"})
    ).pricing_version == 1
    assert (
        await plans.update_feature("chat", rule={"type": "output_ratio", "ratio": 5})
    ).pricing_version == 2
    assert (await plans.update_feature("chat", profit_percent="1")).pricing_version == 3
    cleared = await plans.update_feature("img-1", hold_tokens=None, app=None, profit_percent=None)
    assert (cleared.hold_tokens, cleared.app, cleared.profit_percent, cleared.pricing_version) == (
        None,
        None,
        None,
        2,
    )

    pro = await plans.create_plan(
        "pro", monthly_allocation_tokens=1_000, profit_percent=20, features=["chat", "chat"]
    )
    assert (pro.features, pro.profit_percent, pro.monthly_allocation_tokens) == (
        ("chat",),
        Decimal(20),
        1_000,
    )
    with pytest.raises(AlreadyExists):
        await plans.create_plan("pro")
    assert (await plans.add_feature_to_plan("pro", "img-1")).features == ("chat", "img-1")
    assert (await plans.remove_feature_from_plan("pro", "chat")).features == ("img-1",)
    assert (await plans.remove_feature_from_plan("pro", "chat")).features == ("img-1",)
    updated = await plans.update_plan(
        "pro", features=["chat"], description="Pro", profit_percent="0"
    )
    assert (updated.features, updated.description, updated.profit_percent) == (
        ("chat",),
        "Pro",
        Decimal(0),
    )

    # A wallet on a plan: its features and the plan's profit.
    await service.open_wallet("u1")
    assert await plans.set_user_plan("u1", "pro") == "pro"
    access = await plans.access("u1", "chat")
    assert access.in_plan and access.wallet is not None and access.wallet.plan == "pro"
    assert access.profit().source == "feature"  # chat's own 1% overrides the plan
    assert not (await plans.access("u1", "img-1")).in_plan
    with pytest.raises(PlanInUse):
        await plans.delete_plan("pro")
    await plans.set_user_plan("u1", None)
    await plans.delete_feature("chat")
    assert (await plans.get_plan("pro")).features == ()
    await plans.delete_plan("pro")
    assert await plans.list_plans() == []


async def test_plan_and_feature_errors(service: TokenService) -> None:
    plans = PlanService(await service.engine())
    await plans.create_plan("basic")
    await service.open_wallet("u1")

    for not_found, call in (
        (PlanNotFound, plans.get_plan("gold")),
        (PlanNotFound, plans.update_plan("gold", description="x")),
        (PlanNotFound, plans.delete_plan("gold")),
        (FeatureNotFound, plans.get_feature("nope")),
        (FeatureNotFound, plans.update_feature("nope", name="x")),
        (FeatureNotFound, plans.delete_feature("nope")),
        (FeatureNotFound, plans.add_feature_to_plan("basic", "nope")),
        (PlanNotFound, plans.add_feature_to_plan("gold", "nope")),
        (WalletNotFound, plans.set_user_plan("nobody", "basic")),
    ):
        with pytest.raises(not_found) as raised:
            await call
        assert raised.value.status_code == 404

    for field, call in (
        ("plan", plans.set_user_plan("u1", "gold")),
        ("name", plans.create_plan("has space")),
        ("profit_percent", plans.create_plan("p", profit_percent="1001")),
        ("profit_percent", plans.create_plan("p", profit_percent=2.5)),
        ("monthly_allocation_tokens", plans.create_plan("p", monthly_allocation_tokens=-1)),
        ("features", plans.create_plan("p", features=["missing"])),
        ("id", plans.create_feature("", name="x", rule={"type": "fixed", "tokens": 1})),
        ("name", plans.create_feature("f", name=" ", rule={"type": "fixed", "tokens": 1})),
        ("rule", plans.create_feature("f", name="F", rule={"type": "fixed"})),
        (
            "hold_tokens",
            plans.create_feature("f", name="F", rule={"type": "fixed", "tokens": 1}, hold_tokens=0),
        ),
        (
            "app",
            plans.create_feature(
                "f", name="F", rule={"type": "fixed", "tokens": 1}, app="unregistered"
            ),
        ),
    ):
        with pytest.raises(InvalidInput) as invalid:
            await call
        assert invalid.value.field == field, invalid.value
    # Nothing was written by the refused calls.
    assert [p.name for p in await plans.list_plans()] == ["basic"]
    assert await plans.list_features() == []
    balance = await service.get_balance("u1")
    assert balance is not None and balance.tier is None
