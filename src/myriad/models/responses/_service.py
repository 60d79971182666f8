"""The Responses API over the gateway: one call in, through the gateway's one
pipeline as a ``responses`` call (so routing, fallbacks, metering, budgets and
telemetry are the ones chat completions get), one response object or event stream
out, stored for ``previous_response_id``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator, Callable, Mapping, TypeVar

from myriad.errors import MyriadError, NotFound
from myriad.models.responses._events import Event, ResponseEvents
from myriad.models.responses._ids import new_id
from myriad.models.responses._output import output_items, response_object
from myriad.models.responses._passthrough import PassthroughEvents, as_ours, upstream_body
from myriad.models.responses._request import ResponsesRequest, parse_request
from myriad.models.responses._store import MemoryResponseStore, ResponseStore, StoredResponse
from myriad.models.types import ChatResult

log = logging.getLogger("myriad.models.responses")
T = TypeVar("T")


class Responses:
    """``create`` and ``stream`` a response through ``gateway`` (anything with the
    gateway's ``chat`` / ``chat_stream_batches``), keeping them in ``store``."""

    def __init__(self, gateway: Any, store: ResponseStore | None = None, *, flush_interval: float = 0.02) -> None:
        self.gateway = gateway
        self.store: ResponseStore = store if store is not None else MemoryResponseStore()
        self.flush_interval = flush_interval
        """How long a buffering store's writes wait for company (seconds)."""
        self._flusher: asyncio.Future[None] | None = None

    async def _store_call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)``, a call of the store: in a worker thread when the store waits on the
        network (PostgreSQL), so a database that is down never stops the event loop."""
        if getattr(self.store, "blocking", False):
            return await asyncio.to_thread(fn, *args)
        return fn(*args)

    async def parse(self, body: Mapping[str, Any], tenant: str | None) -> ResponsesRequest:
        """Validate ``body`` and expand its history from the stored responses of
        ``tenant`` (or of whichever owner the caller partitions the store by)."""

        def previous(rid: str) -> list[dict[str, Any]] | None:
            stored = self.store.get(tenant, rid)
            return list(stored.conversation) if stored else None

        def parse() -> ResponsesRequest:
            return parse_request(body, previous=previous, item=lambda iid: self.store.item(tenant, iid))

        if body.get("previous_response_id") is None and not isinstance(body.get("input"), list):
            return parse()  # nothing to read from the store (no history, no item references)
        return await self._store_call(parse)

    async def create(self, req: ResponsesRequest, *, tenant: str | None = None, agent: str | None = None,
                     owner: str | None = None) -> tuple[dict[str, Any], ChatResult]:
        """A finished response (and the chat result behind it, for its deployment).
        ``owner`` is whose store it goes to (default: the tenant's)."""
        chat = req.to_chat()
        result = await self.gateway.chat(chat, tenant=tenant, agent=agent, kind="responses",
                                         passthrough=upstream_body(req))
        if result.raw.get("object") == "response":  # the deployment took the call as it was
            response = as_ours(req, result.raw)
            await self._keep(owner or tenant, req, response)
            return response, result
        choices = result.raw.get("choices") or [{}]
        finish = choices[0].get("finish_reason")
        output = output_items(choices[0].get("message") or {}, finish)
        response = response_object(req, response_id=new_id("resp"), created_at=int(result.raw.get("created") or 0)
                                   or _now(), model=result.model, output=output, usage=result.usage,
                                   finish_reason=finish)
        await self._keep(owner or tenant, req, response)
        return response, result

    async def create_with_mcp(self, req: ResponsesRequest, toolset: Any, *, tenant: str | None = None,
                              agent: str | None = None, owner: str | None = None,
                              max_rounds: int = 8) -> tuple[dict[str, Any], ChatResult]:
        """A finished response whose ``type: "mcp"`` tools Myriad called (``myriad.models.mcp_tools``):
        ``mcp_list_tools`` items, then an ``mcp_call`` item per call, then the answer."""
        from myriad.models.mcp_tools import chat_with_mcp

        result, calls = await chat_with_mcp(
            lambda turn: self.gateway.chat(turn, tenant=tenant, agent=agent, kind="responses"), req.to_chat(),
            toolset, max_rounds=max_rounds)
        before: list[dict[str, Any]] = [{"id": new_id("mcpl"), "type": "mcp_list_tools", **listed}
                                        for listed in toolset.list_items()]
        before += [{"id": new_id("mcp"), "type": "mcp_call", "server_label": c["server_label"], "name": c["name"],
                    "arguments": c["arguments"], "output": c["output"], "error": c["error"],
                    "status": "failed" if c["error"] else "completed"} for c in calls]
        choices = result.raw.get("choices") or [{}]
        finish = choices[0].get("finish_reason")
        output = before + output_items(choices[0].get("message") or {}, finish)
        response = response_object(req, response_id=new_id("resp"), created_at=_now(), model=result.model,
                                   output=output, usage=result.usage, finish_reason=finish)
        await self._keep(owner or tenant, req, response)
        return response, result

    async def stream(self, req: ResponsesRequest, *, tenant: str | None = None, agent: str | None = None,
                     owner: str | None = None) -> AsyncIterator[tuple[str, list[Event]]]:
        """``(deployment, events)`` as the upstream's chunks arrive. The first item
        comes only after the gateway committed to a deployment (so a refusal before
        any output is raised, not streamed); a later failure becomes ``error`` and
        ``response.failed`` events."""
        chat = dict(req.to_chat(), stream=True, stream_options={"include_usage": True})
        batches = self.gateway.chat_stream_batches(chat, tenant=tenant, agent=agent, kind="responses",
                                                   passthrough=upstream_body(req))
        model = chat.get("model") or self.gateway.default_model()
        try:
            first = await batches.__anext__()
        except StopAsyncIteration:
            first = ("", [])
        except BaseException:
            await batches.aclose()
            raise
        deployment, batch = first
        events: ResponseEvents | PassthroughEvents
        if batch and str(batch[0].get("type", "")).startswith("response."):
            events = PassthroughEvents(req)  # the deployment streams Responses events itself
        else:
            events = ResponseEvents(req, model)
        out = events.start()
        for chunk in batch:
            out += events.feed(chunk)
        try:
            yield deployment, out
            async for deployment, batch in batches:
                out = []
                for chunk in batch:
                    out += events.feed(chunk)
                if out:
                    yield deployment, out
            out = events.finish()
        except MyriadError as e:
            out = events.fail(e.code, e.message)
        finally:
            await batches.aclose()
        if events.response is not None and events.response["status"] != "failed":
            await self._keep(owner or tenant, req, events.response)
        yield deployment, out

    async def get(self, tenant: str | None, response_id: str) -> StoredResponse:
        stored = await self._store_call(self.store.get, tenant, response_id)
        if stored is None:
            raise NotFound(f"Response with id '{response_id}' not found.", details={"param": "response_id"})
        return stored

    async def delete(self, tenant: str | None, response_id: str) -> None:
        if not await self._store_call(self.store.delete, tenant, response_id):
            raise NotFound(f"Response with id '{response_id}' not found.", details={"param": "response_id"})

    async def _keep(self, tenant: str | None, req: ResponsesRequest, response: dict[str, Any]) -> None:
        # kept before the answer is released, so the client's next call can continue from it
        if not req.store:
            return
        stored = StoredResponse(response=response, input_items=req.new_items,
                                conversation=req.items + response["output"])
        if getattr(self.store, "blocking", False):
            # shared by other machines: written before the answer goes (the next call may land
            # elsewhere); a database that refuses leaves it buffered here, written when it is back
            if await asyncio.to_thread(self.store.put_now, tenant, stored):  # type: ignore[attr-defined]
                return
        else:
            self.store.put(tenant, stored)
        if getattr(self.store, "buffered", False) and (self._flusher is None or self._flusher.done()):
            self._flusher = asyncio.ensure_future(self._flush_soon())

    async def _flush_soon(self) -> None:
        """Write a buffering store's responses in a worker thread, a burst at a time."""
        flush = getattr(self.store, "flush")
        while self.store.pending():  # type: ignore[attr-defined]
            await asyncio.sleep(self.flush_interval)
            try:
                await asyncio.to_thread(flush)
            except Exception:  # kept buffered by the store; the disk may come back
                log.exception("could not write stored responses; retrying")
                await asyncio.sleep(1.0)

    async def aclose(self) -> None:
        """Write what is still buffered and close the store."""
        if self._flusher is not None:
            self._flusher.cancel()
            try:
                await self._flusher
            except (asyncio.CancelledError, Exception):
                pass
        close = getattr(self.store, "close", None)
        if close is not None:
            try:
                await asyncio.to_thread(close)
            except Exception:  # the database is down at shutdown: say what is lost, close anyway
                log.exception("could not write %s stored response(s) at close", getattr(self.store, "pending", int)())


def _now() -> int:
    import time

    return int(time.time())


__all__ = ["Responses"]
