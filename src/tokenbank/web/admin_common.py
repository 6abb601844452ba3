"""What every admin page shares: who may change things, how a page answers, and how a
change is written to the audit log (decision 17).

Seeing is for ``PageAdmin`` (admin or superadmin); every change is a POST that
depends on ``SuperadminCsrf``: the role is checked first (an admin is refused
whatever the form carries), then the session's CSRF token.
"""

from __future__ import annotations

import json
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from tokenbank.accounts.service import SignedIn
from tokenbank.api.state import Services
from tokenbank.errors import TokenBankError
from tokenbank.web.auth import PageSuperadmin, csrf_checked
from tokenbank.web.templating import page, templates


async def superadmin_csrf(request: Request, signed_in: PageSuperadmin) -> SignedIn:
    """A superadmin, with this session's CSRF token on the request."""
    return await csrf_checked(request, signed_in)


SuperadminCsrf = Annotated[SignedIn, Depends(superadmin_csrf)]


def compact_json(value: Any) -> str:
    """An audit value as one short line: sorted keys, no spaces."""
    if value is None:
        return "-"
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def path_part(value: str) -> str:
    """A user id, slug or pack id as one part of a URL path."""
    return quote(value, safe="")


def query_string(fields: dict[str, str]) -> str:
    return urlencode(fields)


templates.env.filters["compact_json"] = compact_json
templates.env.filters["path_part"] = path_part
templates.env.filters["query_string"] = query_string


def changed(before: dict[str, Any], after: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The fields that differ, as (before, after): an audit entry says what changed."""
    keys = [key for key in after if before.get(key) != after[key]]
    return {key: before.get(key) for key in keys}, {key: after[key] for key in keys}


async def audit(
    services: Services,
    signed_in: SignedIn,
    action: str,
    target: str | None,
    before: Any,
    after: Any,
) -> None:
    """One audit entry, by the signed-in person's email. The services these pages
    change open their own transactions, so the entry follows the change's commit."""
    await services.accounts.audit(signed_in.email, action, target, before, after)


def message(
    request: Request,
    signed_in: SignedIn | None,
    title: str,
    text: str,
    *,
    status_code: int,
    back: str = "/admin/tokens",
) -> HTMLResponse:
    return page(
        request,
        "message.html",
        signed_in,
        status_code=status_code,
        title=title,
        message=text,
        back=back,
    )


def refused(
    request: Request, signed_in: SignedIn, error: TokenBankError, *, back: str
) -> HTMLResponse:
    """A service's refusal (no such thing, a clash) as a page with its status."""
    titles = {404: "Not found", 409: "Not changed"}
    return message(
        request,
        signed_in,
        titles.get(error.status_code, "Not changed"),
        str(error),
        status_code=error.status_code,
        back=back,
    )


def done(path: str) -> RedirectResponse:
    """After a change, back to the page that shows it (a reload does not post again)."""
    return RedirectResponse(path, status_code=303)
