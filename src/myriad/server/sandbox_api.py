"""``/v1/sandboxes``: sandboxes over HTTP, scoped to the caller's tenant.

Shapes follow E2B / Cloudflare's Sandbox SDK: create a sandbox, run code or exec
commands in it, move files, manage background processes, pause, snapshot, delete.
A sandbox id is looked up only among the caller's tenant's sandboxes, so another
tenant's id is a 404, exactly like an id that never existed.

    POST   /v1/sandboxes                          {tier?, needs?, limits?, network?, id?} -> 201
    GET    /v1/sandboxes
    GET    /v1/sandboxes/{id}
    DELETE /v1/sandboxes/{id}
    POST   /v1/sandboxes/{id}/run                 {code, language?, timeout?}
    POST   /v1/sandboxes/{id}/exec                {cmd, env?, cwd?, timeout?, stdin?, stream?}
    GET    /v1/sandboxes/{id}/files               ?path=&recursive=      (listing)
    GET    /v1/sandboxes/{id}/files/content       ?path=                 (raw bytes)
    PUT    /v1/sandboxes/{id}/files/content       ?path=   body: raw bytes
    POST   /v1/sandboxes/{id}/files/mkdir         {path}
    GET    /v1/sandboxes/{id}/files/exists        ?path=
    DELETE /v1/sandboxes/{id}/files               ?path=&recursive=
    POST   /v1/sandboxes/{id}/processes           {cmd, env?, cwd?}
    GET    /v1/sandboxes/{id}/processes
    GET    /v1/sandboxes/{id}/processes/{pid}
    GET    /v1/sandboxes/{id}/processes/{pid}/logs
    DELETE /v1/sandboxes/{id}/processes/{pid}     (kill)
    POST   /v1/sandboxes/{id}/pause | /resume
    POST   /v1/sandboxes/{id}/snapshots           -> {id, ...}
    POST   /v1/sandboxes/{id}/restore             {snapshot_id}
    POST   /v1/sandboxes/{id}/fork                {id?} -> 201
    GET    /v1/snapshots/{snapshot_id}
    DELETE /v1/snapshots/{snapshot_id}

With ``"stream": true`` exec answers ``application/x-ndjson``: one line per output
chunk ``{"type": "stdout"|"stderr", "data": ...}`` and a final
``{"type": "result", ...}`` (or ``{"type": "error", "error": {...}}``).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from typing import Any, AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from myriad.errors import InvalidRequest, MyriadError, NotFound, PayloadTooLarge, TierUnavailable
from myriad.sandbox import ContainerSandbox, Sandbox, Sandboxes
from myriad.server.auth import require_principal
from myriad.server.ownership import owners
from myriad.server.params import json_object

MAX_BODY = 64 * 1024 * 1024
_UPLOAD_HANDOVER = asyncio.Semaphore(1)
"""Uploads arrive concurrently on disk; only one at a time is in memory."""
MAX_JSON = 2 * 1024 * 1024


async def _ctx(request: Request) -> tuple[Sandboxes, str]:
    principal = await require_principal(request)
    sandboxes = request.app.state.services.sandboxes
    if sandboxes is None:
        raise NotFound("sandboxes are not enabled on this server")
    return sandboxes, principal.tenant


async def _sandbox(request: Request) -> tuple[Sandboxes, str, Sandbox]:
    """The addressed sandbox, if this principal may touch it: created by its user
    (a user's token), and of a tier its scopes cover (``sandbox:<tier>``) on every
    door, not only at creation."""
    sandboxes, tenant = await _ctx(request)
    sandbox = sandboxes.get(tenant, request.path_params["id"])
    principal = await require_principal(request)
    owners(request.app).require("sandbox", tenant, sandbox.id, principal)
    principal.require(f"sandbox:{sandbox.tier}")
    return sandboxes, tenant, sandbox


def _visible(request: Request, tenant: str, sandbox: Sandbox) -> bool:
    principal = request.scope["myriad.principal"]
    return owners(request.app).reaches("sandbox", tenant, sandbox.id, principal) and \
        principal.capabilities.covers(f"sandbox:{sandbox.tier}")


async def _snapshot_id(request: Request, tenant: str, snap_id: str) -> str:
    owners(request.app).require("snapshot", tenant, snap_id, await require_principal(request))
    return snap_id


async def _container(request: Request, what: str) -> ContainerSandbox:
    _, _, sandbox = await _sandbox(request)
    if sandbox.tier != "container":  # by tier, not class: metering and tracing wrap sandboxes
        raise TierUnavailable(f"sandbox {sandbox.id} is an {sandbox.tier} sandbox; {what} needs the container tier")
    return sandbox  # type: ignore[return-value]


async def _json(request: Request, required: bool = True) -> dict[str, Any]:
    return await json_object(request, MAX_JSON, required=required)


def _field(body: dict[str, Any], name: str, kind: type | tuple[type, ...], required: bool = False) -> Any:
    value = body.get(name)
    if value is None:
        if required:
            raise InvalidRequest(f"{name!r} is required")
        return None
    if not isinstance(value, kind) or isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise InvalidRequest(f"{name!r} must be {names}")
    return value


def _env(body: dict[str, Any]) -> dict[str, str] | None:
    env: dict[str, str] | None = _field(body, "env", dict)
    if env is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise InvalidRequest("'env' must map names to strings")
    return env


def _cmd(body: dict[str, Any]) -> str | list[str]:
    cmd: str | list[str] = _field(body, "cmd", (str, list), required=True)
    if isinstance(cmd, list) and not all(isinstance(a, str) for a in cmd):
        raise InvalidRequest("'cmd' must be a string or a list of strings")
    return cmd


def _path(request: Request, required: bool = True) -> str:
    path = request.query_params.get("path")
    if path is None:
        if required:
            raise InvalidRequest("query parameter 'path' is required")
        return "."
    return path


def _flag(request: Request, name: str) -> bool:
    raw = request.query_params.get(name, "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise InvalidRequest(f"query parameter {name!r} must be true or false")
    return raw in ("true", "1")


# -- sandboxes --------------------------------------------------------------------------


async def _admit(request: Request, sandboxes: Sandboxes, tenant: str, sandbox: Sandbox) -> None:
    """The caller must hold ``sandbox:<tier>`` and ``egress:<host>`` for each allowed host;
    the sandbox's egress then acts for the caller (credentials of its user, signatures)."""
    identity = getattr(request.app.state.services, "identity", None)
    if identity is None:
        return
    try:
        principal = await require_principal(request)
        await identity.off_loop(identity.outbound.admit_sandbox, principal, sandbox)  # audit rows: off the loop
    except MyriadError:
        await sandboxes.close(tenant, sandbox.id)
        raise


async def create(request: Request) -> Response:
    sandboxes, tenant = await _ctx(request)
    body = await _json(request, required=False)
    _field(body, "id", str)  # a list or object here was a TypeError 500 (found by tests/security/test_fuzz_http.py)
    sandbox = await sandboxes.open_for(tenant, body)
    await _admit(request, sandboxes, tenant, sandbox)
    owners(request.app).record("sandbox", tenant, sandbox.id, await require_principal(request))
    return JSONResponse(sandbox.info().to_json(), status_code=201)


async def list_sandboxes(request: Request) -> Response:
    sandboxes, tenant = await _ctx(request)
    return JSONResponse({"sandboxes": [s.info().to_json() for s in sandboxes.list(tenant) if _visible(request, tenant, s)]})


async def get_sandbox(request: Request) -> Response:
    _, _, sandbox = await _sandbox(request)
    return JSONResponse(sandbox.info().to_json())


async def delete_sandbox(request: Request) -> Response:
    sandboxes, tenant, sandbox = await _sandbox(request)
    await sandboxes.close(tenant, sandbox.id)
    owners(request.app).forget("sandbox", tenant, sandbox.id)
    return JSONResponse({"id": request.path_params["id"], "deleted": True})


async def run(request: Request) -> Response:
    _, _, sandbox = await _sandbox(request)
    body = await _json(request)
    code = _field(body, "code", str, required=True)
    result = await sandbox.run(code, language=_field(body, "language", str), timeout=_field(body, "timeout", (int, float)))
    return JSONResponse(result.to_json())


async def exec_(request: Request) -> Response:
    sandbox = await _container(request, "exec")
    body = await _json(request)
    cmd = _cmd(body)
    stdin = _field(body, "stdin", str)
    kwargs: dict[str, Any] = {"env": _env(body), "cwd": _field(body, "cwd", str),
                              "timeout": _field(body, "timeout", (int, float)), "stdin": stdin}
    if not _field(body, "stream", bool):
        result = await sandbox.exec(cmd, **kwargs)
        return JSONResponse(result.to_json())
    return StreamingResponse(_stream_exec(sandbox, cmd, kwargs), media_type="application/x-ndjson")


async def _stream_exec(sandbox: ContainerSandbox, cmd: Any, kwargs: dict[str, Any]) -> AsyncIterator[bytes]:
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    def on_output(stream: str, chunk: bytes) -> None:
        queue.put_nowait(json.dumps({"type": stream, "data": chunk.decode(errors="replace")}).encode() + b"\n")

    async def work() -> None:
        try:
            result = await sandbox.exec(cmd, on_output=on_output, **kwargs)
            queue.put_nowait(json.dumps({"type": "result", **result.to_json()}).encode() + b"\n")
        except MyriadError as e:
            queue.put_nowait(json.dumps({"type": "error", "status": e.status, **e.to_json()}).encode() + b"\n")
        finally:
            queue.put_nowait(None)

    task = asyncio.ensure_future(work())
    try:
        while (item := await queue.get()) is not None:
            yield item
    finally:
        if not task.done():
            task.cancel()


# -- files ------------------------------------------------------------------------------


async def list_files(request: Request) -> Response:
    sandbox = await _container(request, "files")
    entries = await sandbox.list_files(_path(request, required=False), recursive=_flag(request, "recursive"))
    return JSONResponse({"files": [e.to_json() for e in entries]})


async def read_file(request: Request) -> Response:
    sandbox = await _container(request, "files")
    data = await sandbox.read_file(_path(request))
    return Response(data, media_type="application/octet-stream")


async def write_file(request: Request) -> Response:
    sandbox = await _container(request, "files")
    path = _path(request)
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > MAX_BODY:
        raise PayloadTooLarge(f"uploads are limited to {MAX_BODY} bytes")
    # Stream the upload to a spool file (disk past 1 MiB), then hand it over one upload at a
    # time: eight concurrent 60 MB uploads held 0.5 GB in memory while they arrived.
    with tempfile.SpooledTemporaryFile(max_size=1 << 20) as spool:
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > MAX_BODY:
                raise PayloadTooLarge(f"uploads are limited to {MAX_BODY} bytes")
            spool.write(chunk)
        async with _UPLOAD_HANDOVER:
            spool.seek(0)
            written = await sandbox.write_file(path, spool.read())
    return JSONResponse({"path": path, "bytes": written})


async def mkdir(request: Request) -> Response:
    sandbox = await _container(request, "files")
    body = await _json(request)
    path = _field(body, "path", str, required=True)
    await sandbox.mkdir(path)
    return JSONResponse({"path": path, "created": True})


async def exists(request: Request) -> Response:
    sandbox = await _container(request, "files")
    return JSONResponse({"exists": await sandbox.exists(_path(request))})


async def delete_file(request: Request) -> Response:
    sandbox = await _container(request, "files")
    path = _path(request)
    await sandbox.delete_file(path, recursive=_flag(request, "recursive"))
    return JSONResponse({"path": path, "deleted": True})


# -- processes --------------------------------------------------------------------------


async def start_process(request: Request) -> Response:
    sandbox = await _container(request, "processes")
    body = await _json(request)
    info = await sandbox.start_process(_cmd(body), env=_env(body), cwd=_field(body, "cwd", str))
    return JSONResponse(info.to_json(), status_code=201)


async def list_processes(request: Request) -> Response:
    sandbox = await _container(request, "processes")
    return JSONResponse({"processes": [p.to_json() for p in sandbox.list_processes()]})


async def get_process(request: Request) -> Response:
    sandbox = await _container(request, "processes")
    pid = request.path_params["pid"]
    for p in sandbox.list_processes():
        if p.id == pid:
            return JSONResponse(p.to_json())
    raise NotFound(f"sandbox {sandbox.id} has no process {pid!r}")


async def process_logs(request: Request) -> Response:
    sandbox = await _container(request, "processes")
    return JSONResponse(sandbox.process_logs(request.path_params["pid"]))


async def kill_process(request: Request) -> Response:
    sandbox = await _container(request, "processes")
    info = await sandbox.kill_process(request.path_params["pid"])
    return JSONResponse(info.to_json())


# -- pause, snapshots -------------------------------------------------------------------


async def pause(request: Request) -> Response:
    sandbox = await _container(request, "pause")
    await sandbox.pause()
    return JSONResponse(sandbox.info().to_json())


async def resume(request: Request) -> Response:
    sandbox = await _container(request, "resume")
    await sandbox.resume()
    return JSONResponse(sandbox.info().to_json())


async def snapshot(request: Request) -> Response:
    sandboxes, tenant, sandbox = await _sandbox(request)
    snap = await sandboxes.snapshot(tenant, sandbox.id)
    owners(request.app).record("snapshot", tenant, snap.id, await require_principal(request))
    return JSONResponse(snap.to_json(), status_code=201)


async def restore(request: Request) -> Response:
    sandboxes, tenant, _ = await _sandbox(request)
    body = await _json(request)
    snap_id = await _snapshot_id(request, tenant, _field(body, "snapshot_id", str, required=True))
    await sandboxes.restore(tenant, request.path_params["id"], snap_id)
    return JSONResponse({"id": request.path_params["id"], "restored_from": snap_id})


async def fork(request: Request) -> Response:
    sandboxes, tenant, sandbox = await _sandbox(request)
    body = await _json(request, required=False)
    child = await sandboxes.fork(tenant, sandbox.id, new_id=_field(body, "id", str))
    await _admit(request, sandboxes, tenant, child)
    owners(request.app).record("sandbox", tenant, child.id, await require_principal(request))
    return JSONResponse(child.info().to_json(), status_code=201)


async def get_snapshot(request: Request) -> Response:
    sandboxes, tenant = await _ctx(request)
    snap_id = await _snapshot_id(request, tenant, request.path_params["snapshot_id"])
    return JSONResponse(sandboxes.get_snapshot(tenant, snap_id).to_json())


async def delete_snapshot(request: Request) -> Response:
    sandboxes, tenant = await _ctx(request)
    await sandboxes.delete_snapshot(tenant, await _snapshot_id(request, tenant, request.path_params["snapshot_id"]))
    return JSONResponse({"id": request.path_params["snapshot_id"], "deleted": True})


def routes() -> list[BaseRoute]:
    base = "/v1/sandboxes/{id}"
    return [
        Route("/v1/sandboxes", create, methods=["POST"]),
        Route("/v1/sandboxes", list_sandboxes, methods=["GET"]),
        Route(base, get_sandbox, methods=["GET"]),
        Route(base, delete_sandbox, methods=["DELETE"]),
        Route(base + "/run", run, methods=["POST"]),
        Route(base + "/exec", exec_, methods=["POST"]),
        Route(base + "/files", list_files, methods=["GET"]),
        Route(base + "/files", delete_file, methods=["DELETE"]),
        Route(base + "/files/content", read_file, methods=["GET"]),
        Route(base + "/files/content", write_file, methods=["PUT"]),
        Route(base + "/files/mkdir", mkdir, methods=["POST"]),
        Route(base + "/files/exists", exists, methods=["GET"]),
        Route(base + "/processes", start_process, methods=["POST"]),
        Route(base + "/processes", list_processes, methods=["GET"]),
        Route(base + "/processes/{pid}", get_process, methods=["GET"]),
        Route(base + "/processes/{pid}", kill_process, methods=["DELETE"]),
        Route(base + "/processes/{pid}/logs", process_logs, methods=["GET"]),
        Route(base + "/pause", pause, methods=["POST"]),
        Route(base + "/resume", resume, methods=["POST"]),
        Route(base + "/snapshots", snapshot, methods=["POST"]),
        Route(base + "/restore", restore, methods=["POST"]),
        Route(base + "/fork", fork, methods=["POST"]),
        Route("/v1/snapshots/{snapshot_id}", get_snapshot, methods=["GET"]),
        Route("/v1/snapshots/{snapshot_id}", delete_snapshot, methods=["DELETE"]),
    ]


__all__ = ["routes"]
