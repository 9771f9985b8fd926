"""The fast lane: predict requests (and precomputed lookups) handed from the request
middleware straight to their endpoint.

These endpoints take only path parameters and the request (they read their bodies
themselves, in several media types), so the generic layers between the middleware and
them (exception middleware, exit stacks, the router, FastAPI's dependency solving) do
nothing for them but cost about a third of a one-row request. Their FastAPI routes stay:
they document them in the OpenAPI spec, and answer if the lane is ever bypassed. Errors
get the same answers as through the app's exception handlers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.types import Receive, Scope, Send

from serving.errors import MMServeError
from serving.http._errors import error_response, unexpected_response

Endpoint = Callable[..., Awaitable[Response]]


class FastLane:
    """Matches ``scope`` against the routes of the given endpoints and calls them."""

    def __init__(self, routes: Iterable[object], endpoints: Iterable[Endpoint]):
        wanted = set(endpoints)
        self.routes = [r for r in routes if isinstance(r, APIRoute) and r.endpoint in wanted]

    def match(self, scope: Scope) -> APIRoute | None:
        for route in self.routes:
            if scope["method"] not in (route.methods or ()):
                continue
            found = route.path_regex.match(scope["path"])
            if found is not None:
                scope["route"], scope["path_params"] = route, found.groupdict()
                return route
        return None

    async def handle(self, route: APIRoute, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        try:
            response = await route.endpoint(request=request, **scope["path_params"])
        except MMServeError as err:
            response = error_response(request, err)
        except Exception as err:
            response = unexpected_response(request, err)
        await response(scope, receive, send)
