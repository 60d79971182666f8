"""The OpenAI Responses API door: ``POST /v1/responses`` (JSON or typed SSE events),
``GET`` / ``DELETE /v1/responses/{id}``, ``GET /v1/responses/{id}/input_items``.

The work is ``myriad.models.responses.Responses`` (``services.responses``); this
module only authenticates, reads the body and writes the answer. Errors are
OpenAI-shaped, as on the other ``/v1`` doors.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from myriad.errors import InvalidRequest, MyriadError
from myriad.models.mcp_tools import mcp_specs
from myriad.models.responses import sse
from myriad.server import mcp_api
from myriad.server.auth import require_principal
from myriad.server.gateway_api import MAX_BODY, SSEResponse, openai_error
from myriad.server.params import json_object


def _owner(principal: Any) -> str:
    """Whose stored responses a caller sees: the tenant's, or an end user's own when
    the caller acts for one (a user token), so users of a tenant never read each other's."""
    user = getattr(principal, "user", None)
    return f"{principal.tenant}\x00user:{user}" if user else principal.tenant


def _responses(request: Request) -> Any:
    responses = getattr(request.app.state.services, "responses", None)
    if responses is None:
        raise InvalidRequest("no model gateway is configured on this server")
    return responses


async def create(request: Request) -> Any:
    try:
        principal = await require_principal(request)
        responses = _responses(request)
        body = await json_object(request, MAX_BODY, required=True)
        model = body.get("model")
        principal.require(f"models:{model}" if isinstance(model, str) and model else "models")
        owner = _owner(principal)
        specs = mcp_specs(body)
        if specs:  # MCP tools: Myriad calls them (mcp_api), the rest of the request parses as usual
            body = {**body, "tools": [t for t in body["tools"] if t not in specs]}
        req = await responses.parse(body, owner)
        if specs:
            if req.stream:
                raise InvalidRequest("stream=true with mcp tools is not supported on /v1/responses yet: "
                                     "use stream=false", details={"param": "stream"})
            toolset = await mcp_api.open_toolset(request, principal, specs)
            try:
                response, result = await responses.create_with_mcp(
                    req, toolset, tenant=principal.tenant, owner=owner,
                    max_rounds=request.app.state.services.settings.models.mcp_max_rounds)
            finally:
                await toolset.aclose()
            return Response(orjson.dumps(response), media_type="application/json",
                            headers={"x-myriad-deployment": result.deployment})
        if not req.stream:
            response, result = await responses.create(req, tenant=principal.tenant, owner=owner)
            return Response(orjson.dumps(response), media_type="application/json",
                            headers={"x-myriad-deployment": result.deployment})
        stream = responses.stream(req, tenant=principal.tenant, owner=owner)
        first = await stream.__anext__()  # refusals before any output are plain HTTP errors
    except MyriadError as e:
        return openai_error(e)
    return SSEResponse(first, stream, encode=sse, done=b"",
                       headers=[(b"x-myriad-deployment", first[0].encode())])


async def retrieve(request: Request) -> Response:
    try:
        principal = await require_principal(request)
        stored = await _responses(request).get(_owner(principal), request.path_params["response_id"])
    except MyriadError as e:
        return openai_error(e)
    return Response(orjson.dumps(stored.response), media_type="application/json")


async def delete(request: Request) -> Response:
    try:
        principal = await require_principal(request)
        rid = request.path_params["response_id"]
        await _responses(request).delete(_owner(principal), rid)
    except MyriadError as e:
        return openai_error(e)
    return Response(orjson.dumps({"id": rid, "object": "response.deleted", "deleted": True}),
                    media_type="application/json")


async def input_items(request: Request) -> Response:
    try:
        principal = await require_principal(request)
        stored = await _responses(request).get(_owner(principal), request.path_params["response_id"])
    except MyriadError as e:
        return openai_error(e)
    items = list(stored.input_items)
    if request.query_params.get("order", "desc") != "asc":
        items.reverse()
    return Response(orjson.dumps({"object": "list", "data": items, "first_id": items[0]["id"] if items else None,
                                  "last_id": items[-1]["id"] if items else None, "has_more": False}),
                    media_type="application/json")


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/responses", create, methods=["POST"]),
        Route("/v1/responses/{response_id}", retrieve, methods=["GET"]),
        Route("/v1/responses/{response_id}", delete, methods=["DELETE"]),
        Route("/v1/responses/{response_id}/input_items", input_items, methods=["GET"]),
    ]


__all__ = ["routes"]
