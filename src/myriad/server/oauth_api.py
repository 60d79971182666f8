"""The OAuth 2.1 authorization-server doors (for MCP clients; ``myriad.identity.authorization``).

    POST /v1/oauth/register     RFC 7591 dynamic client registration (public clients, PKCE)
    GET  /v1/oauth/authorize    the consent page: who asks for what; the person pastes a Myriad key or token
    POST /v1/oauth/authorize    approve: 302 back to the client with ``code`` (or ``error``) and ``state``

The token endpoint (``/v1/oauth/token``, in ``identity_api``) redeems the code
(``grant_type=authorization_code`` + ``code_verifier``) and refresh tokens.
"""

from __future__ import annotations

import html
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from myriad.errors import MyriadError
from myriad.server.params import parse_json_object

_PARAMS = ("response_type", "client_id", "redirect_uri", "scope", "state", "code_challenge",
           "code_challenge_method", "resource")
_HEADERS = {"cache-control": "no-store", "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; "
            "form-action 'self'; frame-ancestors 'none'", "x-frame-options": "DENY", "referrer-policy": "no-referrer"}


def _server(request: Request) -> Any:
    return request.app.state.services.identity.authorization


def _oauth_error(e: MyriadError) -> JSONResponse:
    return JSONResponse({"error": e.details.get("oauth", "invalid_request"), "error_description": e.message},
                        status_code=400, headers={"cache-control": "no-store"})


async def register(request: Request) -> Response:
    try:
        raw = await request.body()
        if len(raw) > 16 * 1024:
            raise MyriadError("registration metadata is larger than 16 KiB")
        return JSONResponse(_server(request).register(parse_json_object(raw, required=True)), status_code=201,
                            headers={"cache-control": "no-store"})
    except MyriadError as e:
        return _oauth_error(e)


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font:15px system-ui;max-width:34rem;margin:3rem auto;padding:0 1rem}}code{{background:#f3f3f3;padding:0 .2em}}
input[type=password]{{width:100%;padding:.4rem;margin:.5rem 0}}button{{padding:.4rem 1.2rem}}</style></head>
<body>{body}</body></html>""", status_code=status, headers=_HEADERS)


async def authorize_page(request: Request) -> Response:
    params = {k: v for k, v in request.query_params.items() if k in _PARAMS}
    try:
        client, redirect = _server(request).check_request(params)
    except MyriadError as e:
        return _page("Authorization request refused", f"<h1>This request cannot be approved</h1><p>{html.escape(e.message)}</p>",
                     status=400)
    hidden = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">' for k, v in params.items())
    scopes = html.escape(params.get("scope") or "everything your credential holds")
    return _page("Authorize " + client.name, f"""<h1>Authorize {html.escape(client.name)}</h1>
<p><b>{html.escape(client.name)}</b> asks to act for you on Myriad with the scopes <code>{scopes}</code>
and will be sent back to <code>{html.escape(redirect)}</code>.</p>
<form method="post" action="/v1/oauth/authorize">{hidden}
<label>Your Myriad API key or token<input type="password" name="credential" autocomplete="off" required></label>
<button type="submit">Approve</button></form>
<p>It gets at most the scopes your credential holds, never more.</p>""")


async def approve(request: Request) -> Response:
    raw = await request.body()
    if len(raw) > 64 * 1024:
        return _page("Too large", "<h1>The form is too large</h1>", status=413)
    form = await request.form()
    params = {k: str(form[k]) for k in _PARAMS if k in form}
    identity = request.app.state.services.identity
    try:
        _server(request).check_request(params)
    except MyriadError as e:
        return _page("Authorization request refused", f"<h1>This request cannot be approved</h1><p>{html.escape(e.message)}</p>",
                     status=400)
    try:
        principal = await identity.authenticate(str(form.get("credential") or ""))
    except MyriadError:
        return _page("Not approved", "<h1>That key or token is not valid</h1><p>Go back and try again.</p>", status=401)
    try:  # a database write: off the event loop on PostgreSQL
        await identity.off_loop(lambda: identity.audit.record(principal, "oauth.approve", params.get("client_id", "")[:60],
                                                              scope=params.get("scope", "")))
    except MyriadError as e:
        return _page("Try again", f"<h1>Try again shortly</h1><p>{html.escape(e.message)}</p>", status=e.status)
    return RedirectResponse(_server(request).approve(principal, params), status_code=302, headers=_HEADERS)


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/oauth/register", register, methods=["POST"]),
        Route("/v1/oauth/authorize", authorize_page, methods=["GET"]),
        Route("/v1/oauth/authorize", approve, methods=["POST"]),
    ]


__all__ = ["routes"]
