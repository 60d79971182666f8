"""The ASGI app: every room's HTTP and WebSocket doors on one Starlette app."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from typing import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from myriad import __version__
from myriad.errors import MyriadError
from myriad.server import (agents_api, gateway_api, identity_api, mcp_api, oauth_api, openapi, responses_api,
                           sandbox_api, telemetry_api, usage_api)
from myriad.server.auth import require_principal
from myriad.server.errors import HANDLERS
from myriad.server.services import Services


async def health(request: Request) -> JSONResponse:
    """Anonymous callers learn only that the server is up; a caller with a valid
    credential also gets the version, the event loop and the agent host's counts."""
    if request.headers.get("authorization") is None:
        return JSONResponse({"status": "ok"})
    try:
        await require_principal(request)
    except MyriadError:
        return JSONResponse({"status": "ok"})
    services: Services = request.app.state.services
    host = services.host
    return JSONResponse({
        "status": "ok",
        "version": __version__,
        "loop": type(asyncio.get_running_loop()).__module__.split(".")[0],  # "uvloop" under myriad serve
        "agents": {"classes": sorted(host.classes), "resident": host.resident_count,
                   "connections": host.connection_count, **host.stats},
    })


def create_app(services: Services, *, manage_services: bool = True) -> Starlette:
    """The app for ``services``. With ``manage_services`` the app's lifespan starts
    and closes them."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if manage_services:
            await services.start()
        # Everything alive now (modules, classes, the rooms) lives as long as the
        # process: move it out of the collector's sight so full collections scan only
        # what turns create. Without this a gen-2 pause reached ~190 ms with 2,000
        # sessions (bench density).
        gc.collect()
        gc.freeze()
        if services.settings.gc_threshold:
            gc.set_threshold(*services.settings.gc_threshold)
        try:
            yield
        finally:
            await mcp_api.close(app)
            if manage_services:
                await services.close()

    routes: list[BaseRoute] = [Route("/healthz", health, methods=["GET"])]
    routes += gateway_api.routes()  # first: exact paths, and the hottest (routes are matched in order)
    routes += responses_api.routes()
    routes += agents_api.routes()
    routes += usage_api.routes()
    routes += sandbox_api.routes()
    routes += telemetry_api.routes()
    routes += identity_api.routes()
    routes += openapi.routes()
    routes += mcp_api.routes()
    routes += oauth_api.routes()
    app = Starlette(routes=routes, exception_handlers=HANDLERS, lifespan=lifespan)
    telemetry_api.install(app, services)
    app.state.services = services
    return app


__all__ = ["create_app"]
