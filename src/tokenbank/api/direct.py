"""The hottest API routes, served without FastAPI's per-request machinery (issue 15).

For every request FastAPI walks the route's dependency tree, builds the security
schemes' objects, validates the body through its own field wrappers and encodes
the answer. Measured in process (``python -m bench.asgi_floor``), a FastAPI route
answering ``{}`` costs about 32 us against a Starlette route's 8, and tokenbank's
ping cost 94 us: more than the whole peer service spends on a request.

A :class:`DirectRoute` does the same steps by hand, in the same order: the API key
(both headers, then the key's rate, then its scope), the path parameters, the JSON
body through the same pydantic model, then the same endpoint function that the
FastAPI route declares. Every refusal is raised as the same exception, so the
handlers of :mod:`tokenbank.api.handlers` answer it as before. The FastAPI routes
stay registered behind these: they are what the OpenAPI document describes, and
they answer the methods a direct route does not serve (a 405 that names the
allowed ones). ``tests/api/test_direct_routes.py`` sends the same requests, good
and bad, through both and requires the same answers.

:class:`DirectFirstAPI` serves a request that a direct route matches in front of
FastAPI's middleware stack, through a shorter one built from the same parts: the
server-error handler, the app's own middlewares (request id, metrics, access log,
limits) and the exception handlers, in FastAPI's order. What it leaves out does
nothing for these routes: FastAPI's telemetry is off, no body size is set on
FastAPI itself (the limits middleware enforces tokenbank's), and no file is opened
that an exit stack would close. Measured in process, that stack and the router in
front of the direct routes cost about a quarter of a ping.
"""

from __future__ import annotations

import functools
import inspect
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette._utils import get_route_path  # what Starlette's own routes match on
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from tokenbank.api.auth import authenticate_presented, check_scope, presented_key

# The FastAPI route's own function: called with the arguments it names, out of the
# request, the key's principal, the validated body and the path parameters (each by
# its Python name: ``{userId}`` is ``user_id``, as the routes' aliases have it).
Endpoint = Callable[..., Awaitable[Any]]
GIVEN = frozenset({"request", "principal", "body"})


@dataclass(frozen=True)
class Direct:
    """One route: its method and path template, the endpoint, the scope its key
    needs, the body model it takes, and rules for path parameters that have some."""

    method: str
    path: str
    endpoint: Endpoint
    scope: str | None = None  # None: any valid key
    body_model: type[BaseModel] | None = None
    path_params: Mapping[str, TypeAdapter[Any]] | None = None

    def __post_init__(self) -> None:
        # An endpoint asking for what no request gives fails here, at import.
        known = GIVEN | {_python_name(name) for name in compile_path(self.path)[2]}
        unknown = (_parameters(self.endpoint) or frozenset()) - known
        if unknown:
            raise TypeError(f"{self.path}: the endpoint asks for {sorted(unknown)}")


class DirectRoute(BaseRoute):
    def __init__(self, direct: Direct) -> None:
        self.direct = direct
        self.path = direct.path  # what the metrics and the access log name the route
        self.name = f"direct {direct.method} {direct.path}"
        self.path_regex, self.path_format, convertors = compile_path(direct.path)
        self._python_names = {name: _python_name(name) for name in convertors}

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        # Another method falls through to the FastAPI route at the same path.
        if scope["type"] != "http" or scope["method"] != self.direct.method:
            return Match.NONE, {}
        found = self.path_regex.match(get_route_path(scope))
        if found is None:
            return Match.NONE, {}
        return Match.FULL, {"route": self, "path_params": found.groupdict()}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_json(send, await self.answer(Request(scope, receive)))

    async def answer(self, request: Request) -> Any:
        """What the endpoint answers (before any of it is sent); a refusal raises."""
        direct = self.direct
        principal = await authenticate_presented(request, presented_key(request))
        if direct.scope is not None:
            check_scope(principal, direct.scope)
        params = _path_params(direct, request.path_params)
        body = await _body(request, direct.body_model) if direct.body_model else None
        given = {"request": request, "principal": principal, "body": body}
        given |= {self._python_names[name]: value for name, value in params.items()}
        return await call_endpoint(direct.endpoint, given)


# What Starlette's JSONResponse renders, with the same options, from one encoder: it
# builds an encoder (json.dumps with options) and a response object per request.
_JSON_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_JSON_CONTENT_TYPE = (b"content-type", b"application/json")


async def send_json(send: Send, answer: Any) -> None:
    """A 200 with ``answer`` as JSON, as ``JSONResponse(answer)`` sends it."""
    body = _JSON_ENCODER.encode(answer).encode("utf-8")
    headers = [(b"content-length", str(len(body)).encode("latin-1")), _JSON_CONTENT_TYPE]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def call_endpoint(endpoint: Endpoint, given: dict[str, Any]) -> Any:
    """``endpoint`` with the arguments it names (all of them if it takes ``**``)."""
    names = _parameters(endpoint)
    return await endpoint(**(given if names is None else {name: given[name] for name in names}))


@functools.cache
def _parameters(endpoint: Endpoint) -> frozenset[str] | None:
    """The endpoint's argument names; None when it takes any (``**kwargs``)."""
    parameters = inspect.signature(endpoint).parameters.values()
    if any(parameter.kind is parameter.VAR_KEYWORD for parameter in parameters):
        return None
    return frozenset(parameter.name for parameter in parameters)


def _python_name(path_param: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", path_param).lower()


def _path_params(direct: Direct, raw: Mapping[str, str]) -> Mapping[str, str]:
    if not direct.path_params:
        return raw
    errors: list[Any] = []
    for name, adapter in direct.path_params.items():
        try:
            adapter.validate_python(raw[name])
        except ValidationError as error:
            errors += _located(error, ("path", name))
    if errors:
        raise RequestValidationError(errors)
    return raw


async def _body(request: Request, model: type[BaseModel]) -> BaseModel:
    """The body as FastAPI reads it: JSON (the limits middleware refused any other
    content type under /api), required, validated against the model."""
    raw = await request.body()
    if not raw:
        missing = {"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}
        raise RequestValidationError([missing])
    try:
        decoded = json.loads(raw)
    except json.JSONDecodeError as error:
        invalid = {
            "type": "json_invalid",
            "loc": ("body", error.pos),
            "msg": "JSON decode error",
            "input": {},
            "ctx": {"error": error.msg},
        }
        raise RequestValidationError([invalid], body=error.doc) from error
    except Exception as error:  # not text, or nested too deep: FastAPI's answer to them
        raise HTTPException(400, "There was an error parsing the body") from error
    try:
        # As FastAPI validates a body (its wording for a non-object names attributes).
        return model.model_validate(decoded, from_attributes=True)
    except ValidationError as error:
        raise RequestValidationError(_located(error, ("body",)), body=decoded) from error


def _located(error: ValidationError, prefix: tuple[str, ...]) -> list[Any]:
    return [{**item, "loc": (*prefix, *item["loc"])} for item in error.errors()]


def install_direct_routes(app: FastAPI, directs: tuple[Direct, ...]) -> None:
    """Put the direct routes first: the router tries routes in order."""
    app.router.routes[0:0] = [DirectRoute(direct) for direct in directs]


class DirectFirstAPI(FastAPI):
    """FastAPI, serving what a direct route matches through a shorter stack.

    The direct routes are those at the head of the router (where
    :func:`install_direct_routes` puts them): taken out of the router, they are
    no longer served this way either.
    """

    _direct_stack: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.max_body_size is None and self._matched(scope):
            if self._direct_stack is None:
                self._direct_stack = self._build_direct_stack()
            await self._direct_stack(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    def _matched(self, scope: Scope) -> bool:
        """Whether a direct route takes the request; if so, the scope as Starlette's
        app and router would leave it for that route."""
        if self.root_path:
            scope["root_path"] = self.root_path
        for route in self.router.routes:
            if not isinstance(route, DirectRoute):
                return False
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                scope.update(child_scope)
                scope["app"] = self
                scope.setdefault("router", self.router)
                return True
        return False

    def _build_direct_stack(self) -> ASGIApp:
        """FastAPI's stack (``build_middleware_stack``) without the parts these
        routes do not use, around the matched route."""
        error_handler = None
        handlers: dict[Any, Any] = {}
        for key, handler in self.exception_handlers.items():
            if key in (500, Exception):
                error_handler = handler
            else:
                handlers[key] = handler
        app: ASGIApp = _ServeMatched(handlers)
        for cls, args, kwargs in reversed(self.user_middleware):
            app = cls(app, *args, **kwargs)
        return ServerErrorMiddleware(app, handler=error_handler, debug=self.debug)


ErrorHandler = Callable[[Request, Exception], Awaitable[Response]]


class _ServeMatched:
    """The matched route, its refusals answered by the app's exception handlers.

    In the place of Starlette's ExceptionMiddleware, and choosing the handler as it
    does (an HTTPException's status code first, then the exception's classes in
    order), without its wrapper of every ``send`` that notes whether an answer has
    started: a direct route sends nothing until its work is done, so a refusal never
    follows a started answer. (With the answer sent by ``send_json`` and the key read
    off the raw headers, measured together in process: a ping 57-62 -> 34-46 us,
    bench/PROFILE.md.)
    """

    def __init__(self, handlers: Mapping[Any, ErrorHandler]) -> None:
        for handler in handlers.values():
            if not inspect.iscoroutinefunction(handler):
                raise TypeError(f"{handler!r}: the direct routes take async handlers only")
        self._by_status = {key: h for key, h in handlers.items() if isinstance(key, int)}
        self._by_class = {key: h for key, h in handlers.items() if not isinstance(key, int)}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route: DirectRoute = scope["route"]
        request = Request(scope, receive)
        try:
            answer = await route.answer(request)
        except Exception as error:
            handler = self._handler_for(error)
            if handler is None:
                raise
            response = await handler(request, error)
            await response(scope, receive, send)
            error.__traceback__ = None  # as Starlette does: a reused instance's grows
            return
        await send_json(send, answer)

    def _handler_for(self, error: Exception) -> ErrorHandler | None:
        if isinstance(error, StarletteHTTPException):
            handler = self._by_status.get(error.status_code)
            if handler is not None:
                return handler
        for cls in type(error).__mro__:
            if cls in self._by_class:
                return self._by_class[cls]
        return None
