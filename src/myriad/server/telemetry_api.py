"""The dashboard at ``/dashboard`` and its JSON under ``/dashboard/api``, plus the
telemetry middleware (``install``).

Authentication is the API's: a tenant key as ``Authorization: Bearer`` or
``?token=``. A browser opens ``/dashboard?token=KEY`` once; the key is then kept in an
HttpOnly, SameSite=Strict cookie scoped to ``/dashboard`` and the token is dropped
from the address bar. Everything shown is the caller's tenant's only.

    GET /dashboard                      the page (HTML/JS/CSS shipped as package data)
    GET /dashboard/static/{file}
    GET /dashboard/api/overview         agents per class (resident, hibernated), host and telemetry status
    GET /dashboard/api/turns            recent turns (?limit=)
    GET /dashboard/api/traces/{id}      one trace's spans (the waterfall)
    GET /dashboard/api/usage            tokens/cost over time (?by=tenant|user|agent|model&bucket=&since= minutes)
    GET /dashboard/api/ledger           metered totals per model and resource (when metering is on)
    GET /dashboard/api/errors           failed spans and correlated warnings/errors
    GET /dashboard/api/sandboxes        sandbox runs per tier
"""

from __future__ import annotations

import time
from importlib import resources
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from myriad import __version__
from myriad.errors import AuthenticationError, InvalidRequest, NotFound
from myriad.identity import Principal
from myriad.server.auth import presented_key, require_principal
from myriad.server.ownership import require_tenant_wide
from myriad.server.params import int_param

COOKIE = "myriad_dashboard"
_STATIC = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8",
           "index.html": "text/html; charset=utf-8"}
_LOGIN = """<!doctype html><meta charset="utf-8"><title>Myriad dashboard</title>
<body style="font:15px system-ui;margin:3em;max-width:40em"><h1>Myriad dashboard</h1>
<p>{message}</p><p>Open <code>/dashboard?token=YOUR_API_KEY</code> (the key <code>myriad serve</code>
printed, or one from <code>myriad keys create</code>). The key is then kept in a cookie for this page only.</p>"""
_STARTED = time.time()
_CSP = ("default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
"""Nothing but this server, and no framing (the page holds a tenant's data)."""


def _asset(name: str) -> str:
    return resources.files("myriad.telemetry.dashboard").joinpath(name).read_text("utf-8")


async def _principal(request: Request) -> Principal:
    """The caller, who must be able to read the whole tenant's usage: the dashboard
    shows every user's turns, traces and ledger. So: the ``usage`` scope, a token's
    audience must include ``urn:myriad:usage``, and no token acting for one user."""
    principal: Principal | None = None
    if presented_key(request) is None:
        cookie = request.cookies.get(COOKIE)
        if cookie:
            services = request.app.state.services
            identity = services.identity  # a key lookup may be a query: off the event loop on PostgreSQL
            principal = (await identity.off_loop(services.keys.verify, cookie) if identity is not None
                         else services.keys.verify(cookie))
            request.scope["myriad.principal"] = principal
    if principal is None:
        principal = await require_principal(request)
    principal.admit("usage")
    principal.require("usage")
    require_tenant_wide(principal, "the dashboard")
    return principal


def _telemetry(request: Request) -> Any:
    return request.app.state.services.telemetry


def _store(request: Request) -> Any:
    tel = _telemetry(request)
    return None if tel is None else tel.store




async def page(request: Request) -> Response:
    token = request.query_params.get("token")
    try:
        principal = await _principal(request)
    except AuthenticationError as e:
        return HTMLResponse(_LOGIN.format(message=e.message), status_code=401)
    if token:
        # keep the key out of the address bar, history and Referer from now on
        response: Response = RedirectResponse("/dashboard", status_code=303)
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/dashboard",
                            secure=request.url.scheme == "https")
        return response
    html = _asset("index.html").replace("{{tenant}}", principal.tenant).replace("{{version}}", __version__)
    return HTMLResponse(html, headers={"cache-control": "no-store", "content-security-policy": _CSP,
                                       "x-content-type-options": "nosniff", "referrer-policy": "no-referrer"})


async def static(request: Request) -> Response:
    await _principal(request)
    name = request.path_params["name"]
    media = _STATIC.get(name)
    if media is None:
        raise NotFound(f"no dashboard asset {name!r}")
    return Response(_asset(name), media_type=media, headers={"cache-control": "no-cache"})


async def overview(request: Request) -> JSONResponse:
    p = await _principal(request)
    services = request.app.state.services
    host = services.host
    stored = await host.storage.count_agents(p.tenant)
    resident = host.resident_by_class(p.tenant)
    classes = []
    for name in sorted(set(host.classes) | set(stored)):
        r, s = resident.get(name, 0), stored.get(name, 0)
        classes.append({"agent": name, "resident": r, "stored": s, "hibernated": max(0, s - r)})
    tel = services.telemetry
    store = _store(request)
    return JSONResponse({
        "tenant": p.tenant, "version": __version__, "uptime_s": round(time.time() - _STARTED, 1),
        "agents": classes,
        "telemetry": {**(tel.status if tel is not None else {"enabled": False}),
                      **({"store": store.stats()} if store is not None else {})},
    })


async def turns(request: Request) -> JSONResponse:
    p = await _principal(request)
    store = _store(request)
    limit = int_param(request, "limit", 50, 1, 500)
    return JSONResponse({"turns": store.turns(p.tenant, limit) if store is not None else []})


async def trace(request: Request) -> JSONResponse:
    p = await _principal(request)
    store = _store(request)
    trace_id = request.path_params["trace_id"]
    if len(trace_id) != 32 or any(c not in "0123456789abcdef" for c in trace_id):
        raise InvalidRequest("a trace id is 32 lowercase hex characters")
    spans = store.trace(trace_id, p.tenant) if store is not None else None
    if spans is None:
        raise NotFound(f"trace {trace_id} is not in the local store (it keeps the most recent spans only)")
    return JSONResponse({"trace_id": trace_id, "spans": spans})


async def usage(request: Request) -> JSONResponse:
    p = await _principal(request)
    store = _store(request)
    by = request.query_params.get("by", "model")
    if by not in ("tenant", "user", "agent", "model"):
        raise InvalidRequest(f"by must be tenant, user, agent or model, got {by!r}")
    bucket = int_param(request, "bucket", 1, 1, 1440)
    since = int_param(request, "since", 60, 1, 10080)
    if store is None:
        return JSONResponse({"by": by, "bucket_seconds": bucket * 60, "buckets": [], "series": []})
    return JSONResponse(store.usage_series(p.tenant, by=by, bucket_minutes=bucket, since_minutes=since))


async def ledger(request: Request) -> JSONResponse:
    p = await _principal(request)
    meter = request.app.state.services.meter
    if meter is None:
        return JSONResponse({"enabled": False, "rows": []})
    from myriad.metering import UsageQuery, usage_report

    report = await meter.run(usage_report, meter.store, UsageQuery(p.tenant, group_by=("model", "resource")))
    return JSONResponse({"enabled": True, **report})


async def errors(request: Request) -> JSONResponse:
    p = await _principal(request)
    store = _store(request)
    limit = int_param(request, "limit", 50, 1, 500)
    return JSONResponse(store.errors(p.tenant, limit) if store is not None else {"spans": [], "logs": []})


async def sandboxes(request: Request) -> JSONResponse:
    p = await _principal(request)
    store = _store(request)
    return JSONResponse({"tiers": store.sandboxes(p.tenant) if store is not None else {}})


def install(app: Any, services: Any) -> None:
    """Put the telemetry middleware (HTTP server spans, W3C extraction) in front of ``app``."""
    tel = getattr(services, "telemetry", None)
    if tel is not None and tel.enabled:
        from myriad.telemetry import TelemetryMiddleware

        app.add_middleware(TelemetryMiddleware, telemetry=tel)


def routes() -> list[BaseRoute]:
    """The dashboard routes."""
    return [
        Route("/dashboard", page, methods=["GET"]),
        Route("/dashboard/static/{name}", static, methods=["GET"]),
        Route("/dashboard/api/overview", overview, methods=["GET"]),
        Route("/dashboard/api/turns", turns, methods=["GET"]),
        Route("/dashboard/api/traces/{trace_id}", trace, methods=["GET"]),
        Route("/dashboard/api/usage", usage, methods=["GET"]),
        Route("/dashboard/api/ledger", ledger, methods=["GET"]),
        Route("/dashboard/api/errors", errors, methods=["GET"]),
        Route("/dashboard/api/sandboxes", sandboxes, methods=["GET"]),
    ]


__all__ = ["routes", "install", "COOKIE"]
