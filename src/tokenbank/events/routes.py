"""Webhook endpoints' admin routes: create, list, change, delete, rotate the secret,
the delivery log, redelivery (admin scope; decision 15). The secret is answered when
an endpoint is made, read one by one, or rotated; never in a listing."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Path, Query, Request
from pydantic import Field, StrictBool
from pydantic.json_schema import SkipJsonSchema

from tokenbank.api.admin import AdminModel, PatchModel, admin_router, given
from tokenbank.api.auth import AdminKey
from tokenbank.api.responses import WITH_BODY, WITH_INPUT, errors
from tokenbank.api.state import get_services
from tokenbank.events.endpoints import MAX_DESCRIPTION_LENGTH, MAX_URL_LENGTH
from tokenbank.events.service import Endpoint

router = admin_router()

EndpointIdPath = Annotated[str, Path(alias="endpointId", min_length=1, max_length=40)]
Url = Annotated[str, Field(min_length=1, max_length=MAX_URL_LENGTH)]
EventTypes = Annotated[
    list[Annotated[str, Field(max_length=64)]], Field(min_length=1, max_length=50)
]
EndpointDescription = Annotated[str, Field(max_length=MAX_DESCRIPTION_LENGTH)] | None


class EndpointCreate(AdminModel):
    app: Annotated[str, Field(min_length=1, max_length=64)]
    url: Url
    # Known event types, or ["*"] for all of them.
    event_types: EventTypes
    description: EndpointDescription = None
    enabled: StrictBool = True


class EndpointUpdate(PatchModel):
    not_null = ("url", "event_types", "enabled")

    url: Url | SkipJsonSchema[None] = None
    event_types: EventTypes | SkipJsonSchema[None] = None
    description: EndpointDescription = None
    enabled: StrictBool | SkipJsonSchema[None] = None


class Redelivery(AdminModel):
    event_id: Annotated[str, Field(min_length=1, max_length=40)]


def endpoint_json(endpoint: Endpoint, *, with_secret: bool) -> dict[str, Any]:
    view = {
        **endpoint.public(),
        "createdAt": endpoint.created_at.isoformat(),
        "updatedAt": endpoint.updated_at.isoformat(),
    }
    if with_secret:
        view["secret"] = endpoint.secret
    return view


def _actor(principal: AdminKey) -> str:
    return f"api:{principal.app_slug}"


@router.get(
    "/webhooks",
    summary="List webhook endpoints (without their secrets)",
    responses=errors(WITH_INPUT, 404),
)
async def list_endpoints(
    request: Request,
    principal: AdminKey,
    app: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    endpoints = await get_services(request).webhooks.list_endpoints(app)
    return {"data": [endpoint_json(endpoint, with_secret=False) for endpoint in endpoints]}


@router.post(
    "/webhooks",
    status_code=201,
    summary="Add a webhook endpoint to an app (answers its signing secret)",
    responses=errors(WITH_BODY, 404),
)
async def create_endpoint(
    request: Request, body: EndpointCreate, principal: AdminKey
) -> dict[str, Any]:
    endpoint = await get_services(request).webhooks.create(
        body.app,
        body.url,
        body.event_types,
        description=body.description,
        enabled=body.enabled,
        actor=_actor(principal),
    )
    return {"data": endpoint_json(endpoint, with_secret=True)}


@router.get(
    "/webhooks/{endpointId}", summary="One webhook endpoint", responses=errors(WITH_INPUT, 404)
)
async def get_endpoint(
    request: Request, endpoint_id: EndpointIdPath, principal: AdminKey
) -> dict[str, Any]:
    endpoint = await get_services(request).webhooks.get(endpoint_id)
    return {"data": endpoint_json(endpoint, with_secret=True)}


@router.patch(
    "/webhooks/{endpointId}",
    summary="Change an endpoint's URL, event types, description or enabled",
    responses=errors(WITH_BODY, 404),
)
async def update_endpoint(
    request: Request, endpoint_id: EndpointIdPath, body: EndpointUpdate, principal: AdminKey
) -> dict[str, Any]:
    endpoint = await get_services(request).webhooks.update(
        endpoint_id, actor=_actor(principal), **given(body)
    )
    return {"data": endpoint_json(endpoint, with_secret=False)}


@router.delete(
    "/webhooks/{endpointId}",
    summary="Delete an endpoint and its delivery log",
    responses=errors(WITH_INPUT, 404),
)
async def delete_endpoint(
    request: Request, endpoint_id: EndpointIdPath, principal: AdminKey
) -> dict[str, Any]:
    await get_services(request).webhooks.delete(endpoint_id, actor=_actor(principal))
    return {"data": {"id": endpoint_id, "deleted": True}}


@router.post(
    "/webhooks/{endpointId}/rotate-secret",
    summary="A new signing secret (answered once here)",
    responses=errors(WITH_BODY, 404),
)
async def rotate_secret(
    request: Request, endpoint_id: EndpointIdPath, principal: AdminKey
) -> dict[str, Any]:
    endpoint = await get_services(request).webhooks.rotate_secret(
        endpoint_id, actor=_actor(principal)
    )
    return {"data": endpoint_json(endpoint, with_secret=True)}


@router.get(
    "/webhooks/{endpointId}/deliveries",
    summary="The endpoint's latest deliveries, each with its attempts",
    responses=errors(WITH_INPUT, 404),
)
async def list_deliveries(
    request: Request,
    endpoint_id: EndpointIdPath,
    principal: AdminKey,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    status: Literal["pending", "delivered", "dead"] | None = None,
) -> dict[str, Any]:
    deliveries = await get_services(request).webhooks.deliveries(
        endpoint_id, limit=limit, status=status
    )
    return {"data": deliveries}


@router.post(
    "/webhooks/{endpointId}/redeliver",
    status_code=202,
    summary="Send one event to the endpoint again, now",
    responses=errors(WITH_BODY, 404),
)
async def redeliver(
    request: Request, endpoint_id: EndpointIdPath, body: Redelivery, principal: AdminKey
) -> dict[str, Any]:
    await get_services(request).webhooks.redeliver(
        body.event_id, endpoint_id, actor=_actor(principal)
    )
    return {"data": {"endpointId": endpoint_id, "eventId": body.event_id, "queued": True}}
