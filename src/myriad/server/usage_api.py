"""``/v1/usage``: a tenant's usage, spend, budgets and limits, and its exports.

Every route is scoped to the caller's tenant (from its API key); a ``tenant``
query parameter naming another tenant is refused with 403. Budgets and limits a
tenant sets here are ``managed_by: tenant``; those the operator set (``myriad usage
set-budget``) are visible but cannot be changed or removed with a tenant key (403). Prices are read-only
here (operators set them with ``myriad usage add-prices`` or the price file).

    GET    /v1/usage                 totals / time series (?by=&bucket=&since=&until=&user=&agent=&model=&resource=&format=csv)
    GET    /v1/usage/budgets         spend against budgets (?user=&agent=)
    POST   /v1/usage/budgets         create or replace a budget of this tenant
    DELETE /v1/usage/budgets/{id}
    GET    /v1/usage/limits          rate and concurrency limits
    POST   /v1/usage/limits
    DELETE /v1/usage/limits/{id}
    GET    /v1/usage/events          CloudEvents JSON lines with cost (?since=&until=&after=)
    GET    /v1/usage/meter-events    billing meter events, JSON lines (?customer=user&customer_key=)
    GET    /v1/usage/invoice         invoice lines (?since=&until=&customer=)
    GET    /v1/usage/notices         soft-limit and overrun notices, CloudEvents JSON
    GET    /v1/usage/prices          the price book
"""

from __future__ import annotations

import json
from typing import Any, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from myriad.errors import InvalidRequest, NotFound, PermissionDenied
from myriad.identity import Principal
from myriad.metering import (
    Budget,
    Limit,
    Meter,
    Scope,
    Subject,
    UsageQuery,
    budget_report,
    export_cloudevents,
    invoice_lines,
    meter_events,
    parse_when,
    rows_to_csv,
    usage_report,
)
from myriad.server.auth import require_principal
from myriad.server.ownership import require_tenant_wide
from myriad.server.params import int_param, json_object

MAX_EXPORT = 100_000


async def _ctx(request: Request) -> tuple[Meter, Principal]:
    principal = await require_principal(request)
    meter = request.app.state.services.meter
    if meter is None:
        raise NotFound("metering is disabled on this server (settings.metering.enabled = false)")
    other = request.query_params.get("tenant")
    if other is not None and other != principal.tenant:
        raise PermissionDenied("an API key can read only its own tenant's usage")
    if principal.user is not None and request.url.path not in _USER_VIEWS:
        require_tenant_wide(principal, f"{request.method} {request.url.path}")
    return meter, principal


_USER_VIEWS = ("/v1/usage", "/v1/usage/budgets", "/v1/usage/prices")
"""The views a token acting for a user may read (GET), each narrowed to that user."""


def _user(request: Request, p: Principal) -> str | None:
    """The ``user`` filter: a user's token sees only its own user (403 for another)."""
    asked = request.query_params.get("user")
    if p.user is None:
        return asked
    if asked not in (None, p.user):
        raise PermissionDenied("a token acting for a user reads only that user's usage")
    return p.user


def _time(request: Request, name: str) -> Any:
    return parse_when(request.query_params.get(name), f"query parameter {name!r}")




async def usage(request: Request) -> Response:
    meter, p = await _ctx(request)
    q = request.query_params
    by = tuple(x.strip() for x in q.get("by", "resource,model").split(",") if x.strip())
    query = UsageQuery(p.tenant, user=_user(request, p), agent=q.get("agent"), resource=q.get("resource"),
                       model=q.get("model"), start=_time(request, "since"), end=_time(request, "until"),
                       group_by=by, bucket=q.get("bucket"))
    fmt = q.get("format", "json")
    if fmt == "csv":
        rows = await meter.run(meter.store.totals, query)
        return Response(rows_to_csv(rows, query.group_by, query.bucket), media_type="text/csv")
    if fmt != "json":
        raise InvalidRequest(f"format must be json or csv, got {fmt!r}")
    return JSONResponse(await meter.run(usage_report, meter.store, query))


async def budgets(request: Request) -> Response:
    meter, p = await _ctx(request)
    if request.method == "POST":
        require_tenant_wide(p, "setting budgets")
        body = await _json(request)
        unknown = set(body) - {"id", "user", "agent", "period", "hard", "soft"}
        if unknown:
            raise InvalidRequest(f"unknown budget field(s): {', '.join(sorted(unknown))}")
        kw = {"id": str(body["id"])} if body.get("id") else {}
        b = Budget(Scope(p.tenant, body.get("user"), body.get("agent")), body.get("period", "month"),
                   body.get("hard"), body.get("soft"), managed_by="tenant", **kw)
        await meter.run(meter.store.put_budget, b)
        return JSONResponse(b.to_json(), status_code=201)
    q = request.query_params
    user = _user(request, p)
    subject = Subject(p.tenant, user, q.get("agent")) if (user or q.get("agent")) else None
    return JSONResponse({"budgets": await meter.run(budget_report, meter.store, p.tenant, subject)})


async def budget_item(request: Request) -> Response:
    meter, p = await _ctx(request)
    await meter.run(meter.store.delete_budget, request.path_params["id"], p.tenant, "tenant")
    return Response(status_code=204)


async def limits(request: Request) -> Response:
    meter, p = await _ctx(request)
    if request.method == "POST":
        body = await _json(request)
        unknown = set(body) - {"id", "user", "agent", "kind", "limit", "operation"}
        if unknown:
            raise InvalidRequest(f"unknown limit field(s): {', '.join(sorted(unknown))}")
        kw = {"id": str(body["id"])} if body.get("id") else {}
        kind: Any = body.get("kind")  # Limit validates kind and limit
        value: Any = body.get("limit")
        lim = Limit(Scope(p.tenant, body.get("user"), body.get("agent")), kind, value, str(body.get("operation", "*")),
                    managed_by="tenant", **kw)
        await meter.run(meter.store.put_limit, lim)
        return JSONResponse(lim.to_json(), status_code=201)
    return JSONResponse({"limits": [x.to_json() for x in await meter.run(meter.store.limits, p.tenant)]})


async def limit_item(request: Request) -> Response:
    meter, p = await _ctx(request)
    await meter.run(meter.store.delete_limit, request.path_params["id"], p.tenant, "tenant")
    return Response(status_code=204)


def _jsonl(items: list[dict[str, Any]]) -> Response:
    body = "".join(json.dumps(i, separators=(",", ":"), sort_keys=True) + "\n" for i in items)
    return Response(body, media_type="application/x-ndjson")


def _take(it: Any, limit: int) -> list[dict[str, Any]]:
    out = []
    for item in it:
        out.append(item)
        if len(out) >= limit:
            break
    return out


async def events(request: Request) -> Response:
    meter, p = await _ctx(request)
    after = int_param(request, "after", 0, 0, 2**62)
    limit = int_param(request, "limit", 10_000, 1, MAX_EXPORT)
    it = export_cloudevents(meter.store, p.tenant, start=_time(request, "since"), end=_time(request, "until"),
                            after_seq=after)
    return _jsonl(await meter.run(_take, it, limit))


async def meter_events_route(request: Request) -> Response:
    meter, p = await _ctx(request)
    q = request.query_params
    it = meter_events(meter.store, p.tenant, customer=q.get("customer", "user"),
                      customer_key=q.get("customer_key", "customer"),
                      start=_time(request, "since"), end=_time(request, "until"))
    return _jsonl(await meter.run(_take, it, MAX_EXPORT))


async def invoice(request: Request) -> Response:
    meter, p = await _ctx(request)
    start, end = _time(request, "since"), _time(request, "until")
    if start is None or end is None:
        raise InvalidRequest("invoice needs 'since' and 'until' (RFC 3339 times)")
    return JSONResponse(await meter.run(invoice_lines, meter.store, p.tenant, start=start, end=end,
                                        customer=request.query_params.get("customer", "user")))


async def notices(request: Request) -> Response:
    meter, p = await _ctx(request)
    after = int_param(request, "after", 0, 0, 2**62)
    found = await meter.run(meter.store.notices, p.tenant, after)
    return JSONResponse({"notices": [n.to_cloudevent() for n in found]})


async def prices(request: Request) -> Response:
    meter, _ = await _ctx(request)
    book = await meter.run(meter.store.price_book)
    return JSONResponse({"versions": [v.to_json() for v in book.versions]})


async def _json(request: Request) -> dict[str, Any]:
    return await json_object(request, 1024 * 1024, required=True)  # a budget or limit: small (413 past 1 MiB)


def routes() -> list[BaseRoute]:
    """The ``/v1/usage`` routes."""
    table: list[tuple[str, Callable[..., Any], list[str]]] = [
        ("/v1/usage", usage, ["GET"]),
        ("/v1/usage/budgets", budgets, ["GET", "POST"]),
        ("/v1/usage/budgets/{id}", budget_item, ["DELETE"]),
        ("/v1/usage/limits", limits, ["GET", "POST"]),
        ("/v1/usage/limits/{id}", limit_item, ["DELETE"]),
        ("/v1/usage/events", events, ["GET"]),
        ("/v1/usage/meter-events", meter_events_route, ["GET"]),
        ("/v1/usage/invoice", invoice, ["GET"]),
        ("/v1/usage/notices", notices, ["GET"]),
        ("/v1/usage/prices", prices, ["GET"]),
    ]
    return [Route(path, fn, methods=methods) for path, fn, methods in table]


__all__ = ["routes"]
