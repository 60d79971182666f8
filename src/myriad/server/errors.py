"""Turning errors into JSON bodies: every failure a client sees names its problem."""

from __future__ import annotations

import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from myriad.errors import MyriadError
from myriad.server.gateway_api import openai_body

log = logging.getLogger("myriad.server")

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 400: "invalid_request", 413: "payload_too_large"}


async def myriad_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MyriadError)
    return JSONResponse(error_body(request.url.path, exc), status_code=exc.status, headers=error_headers(exc))


def error_body(path: str, exc: MyriadError) -> dict[str, Any]:
    """The JSON body of ``exc`` on ``path``: OpenAI's shape under ``/v1/``, Myriad's
    ``{"error": {"code", "message", ...}}`` elsewhere (the cluster's front door sends
    the same body when it refuses a request before any shard sees it)."""
    return openai_body(exc) if path.startswith("/v1/") else exc.to_json()


def error_headers(exc: MyriadError) -> dict[str, str] | None:
    """``WWW-Authenticate`` on 401; ``Retry-After`` on 429/503 when the error knows the wait."""
    if exc.status == 401:
        return {"WWW-Authenticate": "Bearer"}
    wait = exc.details.get("retry_after")
    if exc.status in (429, 503) and isinstance(wait, (int, float)) and not isinstance(wait, bool):
        return {"Retry-After": str(max(1, round(wait)))}
    return None


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail if exc.status_code != 404 else f"no route for {request.method} {request.url.path}"
    error = MyriadError(message)
    error.status, error.code = exc.status_code, code
    # OpenAI's four fields (message, type, param, code): what OpenAI clients parse on /v1
    return JSONResponse(openai_body(error), status_code=exc.status_code)


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse(
        {"error": {"code": "internal_error", "message": f"internal error ({type(exc).__name__}); see the server log"}},
        status_code=500,
    )


HANDLERS = {MyriadError: myriad_error, HTTPException: http_error, Exception: unexpected_error}

__all__ = ["HANDLERS", "error_body", "error_headers"]
