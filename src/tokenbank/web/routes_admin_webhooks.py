"""The admin page of webhook endpoints (decision 15): every app's endpoints with their
latest deliveries; a superadmin adds, enables or disables, rotates the secret of,
deletes, and redelivers. ``WebhookService`` validates again and writes each change's
audit entry in the change's own transaction, by the signed-in person's email."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from tokenbank.accounts.service import SignedIn
from tokenbank.api.state import get_services
from tokenbank.db.models import EVENT_TYPES
from tokenbank.errors import InvalidInput, TokenBankError
from tokenbank.events.endpoints import MAX_DESCRIPTION_LENGTH, MAX_URL_LENGTH
from tokenbank.events.service import Endpoint
from tokenbank.web.admin_common import SuperadminCsrf, done, path_part, refused
from tokenbank.web.admin_forms import checkbox, form_fields, required_text, text
from tokenbank.web.auth import PageAdmin
from tokenbank.web.templating import page

router = APIRouter()

BACK = "/admin/webhooks"
DELIVERIES_SHOWN = 10


async def _webhooks_page(
    request: Request, signed_in: SignedIn, *, status_code: int = 200, **context: Any
) -> HTMLResponse:
    services = get_services(request)
    endpoints = await services.webhooks.list_endpoints()
    deliveries = {
        endpoint.id: await services.webhooks.deliveries(endpoint.id, limit=DELIVERIES_SHOWN)
        for endpoint in endpoints
    }
    return page(
        request,
        "admin_webhooks.html",
        signed_in,
        status_code=status_code,
        section="webhooks",
        endpoints=endpoints,
        deliveries=deliveries,
        apps=[app.slug for app in await services.apps.list_apps()],
        event_types=EVENT_TYPES,
        max_url_length=MAX_URL_LENGTH,
        max_description_length=MAX_DESCRIPTION_LENGTH,
        **context,
    )


@router.get("/webhooks")
async def webhooks_page(request: Request, signed_in: PageAdmin) -> Response:
    return await _webhooks_page(request, signed_in, saved=request.query_params.get("saved"))


def _secret_page(request: Request, signed_in: SignedIn, endpoint: Endpoint) -> HTMLResponse:
    """The signing secret, shown after it is made (the page is never cached)."""
    return page(
        request, "admin_webhook_secret.html", signed_in, section="webhooks", endpoint=endpoint
    )


@router.post("/webhooks")
async def add_endpoint(request: Request, signed_in: SuperadminCsrf) -> Response:
    services = get_services(request)
    fields = await form_fields(request)
    chosen = [kind for kind in EVENT_TYPES if checkbox(fields, f"type_{kind}")]
    try:
        endpoint = await services.webhooks.create(
            required_text(fields, "app", max_length=64),
            required_text(fields, "url", max_length=MAX_URL_LENGTH),
            chosen,
            description=text(fields, "description", max_length=MAX_DESCRIPTION_LENGTH),
            actor=signed_in.email,
        )
    except InvalidInput as bad:
        return await _webhooks_page(
            request, signed_in, status_code=400, error=str(bad), form=fields
        )
    except TokenBankError as error:
        return refused(request, signed_in, error, back=BACK)
    return _secret_page(request, signed_in, endpoint)


@router.post("/webhooks/{endpoint_id}/{action}")
async def change_endpoint(
    request: Request, endpoint_id: str, action: str, signed_in: SuperadminCsrf
) -> Response:
    """``enable``, ``disable``, ``rotate``, ``delete`` or ``redeliver`` (``event_id``)."""
    hooks = get_services(request).webhooks
    fields = await form_fields(request)
    actor = signed_in.email
    try:
        if action in ("enable", "disable"):
            await hooks.update(endpoint_id, actor=actor, enabled=action == "enable")
        elif action == "rotate":
            return _secret_page(
                request, signed_in, await hooks.rotate_secret(endpoint_id, actor=actor)
            )
        elif action == "delete":
            await hooks.delete(endpoint_id, actor=actor)
        elif action == "redeliver":
            event_id = required_text(fields, "event_id", max_length=40)
            await hooks.redeliver(event_id, endpoint_id, actor=actor)
        else:
            raise InvalidInput("action", "must be enable, disable, rotate, delete or redeliver")
    except InvalidInput as bad:
        return await _webhooks_page(request, signed_in, status_code=400, error=str(bad))
    except TokenBankError as error:
        return refused(request, signed_in, error, back=BACK)
    return done(f"{BACK}?saved=1#endpoint-{path_part(endpoint_id)}")
