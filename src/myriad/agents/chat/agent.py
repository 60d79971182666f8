"""``ChatAgent``: what Cloudflare's ``AIChatAgent`` gives, on the same frames.

A front end built on ``useAgentChat`` / ``WebSocketChatTransport`` (npm
``@cloudflare/ai-chat`` 0.12, ``agents`` 0.32) talks to it unmodified::

    class Support(ChatAgent):
        model = "sim-small"
        system = "You help customers of Acme."

        @tool(description="Look up an order")
        async def order_status(self, order_id: str) -> dict:
            return {"order_id": order_id, "status": "shipped"}

        @tool(description="Refund an order", needs_approval=True)
        async def refund(self, order_id: str) -> str:
            return f"refunded {order_id}"

How a reply runs. A ``cf_agent_use_chat_request`` frame is a turn that stores the
conversation and starts a *producer*: a host-owned task that iterates
``on_chat_message`` (default: the model through ``self.models`` with the tools, in
steps) and hands each chunk to the agent in its own short turn. That turn writes the
chunk to the agent's SQL (numbered), then sends it. So cancel, resume and other
frames interleave with a long reply, the instance may hibernate between chunks (the
next chunk wakes it), and a client that reconnects is replayed exactly the chunks
that were sent, then the live ones, with no gap and no duplicate (the replay and the
live sends are ordered by the same turn queue). A reply whose process died (kill -9,
restart) is a ``streaming`` row with no producer: the next contact (a connect or a
resume probe) starts the producer again in recovery mode, which continues the
message where the stored chunks end.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from myriad.agents.agent import Agent
from myriad.agents.chat import _frames as frames
from myriad.agents.chat._store import ChatStore, StreamRow
from myriad.agents.chat._tools import ToolSpec, tools_of
from myriad.agents.chat._ui import Accumulator, is_tool_part, to_openai, tool_name
from myriad.agents.connection import Connection
from myriad.errors import InvalidRequest

log = logging.getLogger("myriad.agents.chat")

_PENDING = "chat_resume_pending"  # Connection.protocol key: notified of a stream, not yet ACKed
_CANCELLED: set[tuple[str, str]] = set()  # (agent path, request id) cancelled by a client


def _new_id() -> str:
    return uuid.uuid4().hex[:16]


@dataclass
class ChatTurn:
    """What ``on_chat_message`` works from: the conversation so far, the assistant
    message being built (``message``: every chunk yielded is applied to it before the
    next is asked for), and the request's extras."""

    request_id: str
    history: list[dict[str, Any]]
    """The messages before the one being built."""
    message: dict[str, Any]
    """The assistant message being built (continued, for a continuation)."""
    continuation: bool = False
    """True after a tool result or approval: the reply continues the last message."""
    recovering: bool = False
    """True when a reply cut by a crash or restart is being finished."""
    started: bool = False
    """True when the stream already has chunks (its ``start`` was sent)."""
    open_text_id: str | None = None
    """A text part left open by a cut reply: continue it with ``text-delta``s."""
    client_tools: list[dict[str, Any]] = field(default_factory=list)
    """Tools the client runs (``[{"name", "description", "parameters"}]``)."""
    body: dict[str, Any] = field(default_factory=dict)
    """The request's custom body fields (``useAgentChat({ body })``)."""
    owner: str | None = None
    next_seq: int = 0
    _acc: Accumulator | None = None

    def _prepare(self, chunk: Any) -> str:
        """Check a chunk, fill in what the protocol wants (``start``'s message id), fold
        it into ``message`` at once (the next model step reads it), return its JSON."""
        if not isinstance(chunk, dict) or not isinstance(chunk.get("type"), str):
            raise InvalidRequest("on_chat_message must yield UI message chunks (dicts with a 'type')")
        if chunk["type"] == "start":
            chunk = {k: v for k, v in chunk.items() if k != "messageId"}
            if not self.continuation:
                chunk["messageId"] = self.message["id"]
        assert self._acc is not None
        self._acc.apply(chunk)
        return json.dumps(chunk)

    @property
    def messages(self) -> list[dict[str, Any]]:
        """History plus the message being built, as UI messages."""
        return [*self.history, self.message] if self.message.get("parts") else list(self.history)

    def openai_messages(self, system: str | None = None) -> list[dict[str, Any]]:
        """The conversation as OpenAI chat messages (for ``self.models``)."""
        return to_openai(self.messages, system)


class ChatAgent(Agent):
    """An agent that holds one chat (the AI SDK's UI messages) and streams replies."""

    model: str | None = None
    """Model (or virtual model) asked by the default ``on_chat_message``; None: the gateway's default."""
    system: str | None = "You are a helpful assistant."
    max_steps: int = 5
    """Model calls per reply at most (a tool call and its answer take two)."""

    _frames = {
        frames.USE_CHAT_REQUEST: "_chat_request",
        frames.CHAT_REQUEST_CANCEL: "_chat_cancel",
        frames.CHAT_CLEAR: "_chat_clear",
        frames.CHAT_MESSAGES: "_chat_messages",
        frames.STREAM_RESUME_REQUEST: "_chat_resume_request",
        frames.STREAM_RESUME_ACK: "_chat_resume_ack",
        frames.TOOL_RESULT: "_chat_tool_result",
        frames.TOOL_APPROVAL: "_chat_tool_approval",
    }

    # -- what authors use or override ------------------------------------------------
    @property
    def messages(self) -> list[dict[str, Any]]:
        """The stored conversation (UI messages)."""
        return self._chat.messages()

    async def on_chat_message(self, turn: ChatTurn) -> AsyncIterator[dict[str, Any]]:
        """Yield the reply as AI SDK UI message chunks. The default asks ``self.model``
        through the gateway with the ``@tool`` methods and the client's tools, runs
        server tools (after approval when they need it), and stops for client tools."""
        server = tools_of(type(self))
        client = {str(t.get("name")): t for t in turn.client_tools if isinstance(t, dict) and t.get("name")}
        if not turn.started:
            yield {"type": "start"}
        for part in list(turn.message.get("parts") or ()):
            if is_tool_part(part) and part.get("state") == "approval-responded":
                call_id = str(part.get("toolCallId"))
                if (part.get("approval") or {}).get("approved"):
                    yield await self._run_tool(server.get(tool_name(part)), call_id, part.get("input"))
                else:
                    yield {"type": "tool-output-denied", "toolCallId": call_id}
        open_text = turn.open_text_id
        specs = [s.openai() for s in server.values()] + [
            {"type": "function", "function": {"name": name, "description": str(t.get("description") or ""),
                                              "parameters": t.get("parameters") or {"type": "object"}}}
            for name, t in client.items() if name not in server]
        params: dict[str, Any] = {"tools": specs} if specs else {}
        finish = "stop"
        for _ in range(self.max_steps):
            text_id, open_text = open_text, None
            if text_id is None:
                yield {"type": "start-step"}
            calls: dict[int, dict[str, str]] = {}
            async for chunk in self.models.stream(turn.openai_messages(self.system), self.model, **params):
                choices = chunk.raw.get("choices") or ()
                if not choices:
                    continue
                delta = choices[0].get("delta") or {}
                if delta.get("content"):
                    if text_id is None:
                        text_id = _new_id()
                        yield {"type": "text-start", "id": text_id}
                    yield {"type": "text-delta", "id": text_id, "delta": delta["content"]}
                for tc in delta.get("tool_calls") or ():
                    call = calls.setdefault(int(tc.get("index") or 0), {"id": "", "name": "", "args": ""})
                    fn = tc.get("function") or {}
                    call["id"] = call["id"] or str(tc.get("id") or "")
                    call["name"] = call["name"] or str(fn.get("name") or "")
                    call["args"] += str(fn.get("arguments") or "")
            if text_id is not None:
                yield {"type": "text-end", "id": text_id}
            if not calls:
                yield {"type": "finish-step"}
                break
            pause = False
            for call in calls.values():
                call_id, name = call["id"] or _new_id(), call["name"]
                try:
                    args = json.loads(call["args"] or "{}")
                except ValueError:
                    args = {}
                yield {"type": "tool-input-start", "toolCallId": call_id, "toolName": name}
                yield {"type": "tool-input-available", "toolCallId": call_id, "toolName": name, "input": args}
                spec = server.get(name)
                if spec is not None and spec.needs_approval:
                    yield {"type": "tool-approval-request", "approvalId": _new_id(), "toolCallId": call_id}
                    pause = True
                elif spec is not None:
                    yield await self._run_tool(spec, call_id, args)
                elif name in client:
                    pause = True  # the client runs it and answers with cf_agent_tool_result
                else:
                    yield {"type": "tool-output-error", "toolCallId": call_id, "errorText": f"unknown tool {name!r}"}
            yield {"type": "finish-step"}
            if pause:
                finish = "tool-calls"
                break
        yield {"type": "finish", "finishReason": finish}

    async def _run_tool(self, spec: ToolSpec | None, call_id: str, args: Any) -> dict[str, Any]:
        if spec is None:
            return {"type": "tool-output-error", "toolCallId": call_id, "errorText": "tool is not available"}
        try:
            output = await getattr(self, spec.name)(**(args if isinstance(args, dict) else {}))
            json.dumps(output)
        except Exception as e:  # the model sees the error, the reply goes on
            return {"type": "tool-output-error", "toolCallId": call_id, "errorText": f"{type(e).__name__}: {e}"}
        return {"type": "tool-output-available", "toolCallId": call_id, "output": output}

    async def on_request(self, request: Any) -> Any:
        """``GET .../get-messages`` answers the stored conversation (what
        ``useAgentChat`` loads first); anything else is the agent's own."""
        if request.url.path.rstrip("/").endswith("/get-messages"):
            return self.messages
        return await super().on_request(request)

    # -- plumbing ---------------------------------------------------------------------
    @property
    def _chat(self) -> ChatStore:
        store: ChatStore | None = self.__dict__.get("_chat_store")
        if store is None:
            store = self.__dict__["_chat_store"] = ChatStore(self.sql)
        return store

    def _key(self, request_id: str) -> str:
        return f"chat:{self.ref.path}:{request_id}"

    async def _connected(self, conn: Connection) -> None:
        await conn.send(frames.messages(self._chat.messages(), connect=True))
        row = self._live_active()
        if row is not None:  # tell it at once; it ACKs to be replayed (or probes first)
            conn.protocol[_PENDING] = row.request_id
            await conn.send(frames.resuming(row.request_id, None))

    def _live_active(self) -> StreamRow | None:
        """The reply being streamed; one cut by a crash is restarted here."""
        row = self._chat.active()
        if row is not None and self._host.task(self._key(row.request_id)) is None:
            self._spawn(row.request_id, after=None, recovering=True)
        return row

    def _spawn(self, request_id: str, *, after: "list[asyncio.Task[Any]] | None", recovering: bool,
               owner: str | None = None) -> None:
        self._host.spawn(self._key(request_id),
                         _produce(self._host, self.ref, request_id, after, recovering, owner), owner=self.ref)

    def _start(self, continuation: bool, owner: str | None, request_id: str | None = None) -> str:
        request_id = request_id or _new_id()
        after: list["asyncio.Task[Any]"] = []  # replies still running or queued: this one follows them
        for row in self._chat.streaming():
            task = self._host.task(self._key(row.request_id))
            if task is None:
                self._chat.finish(row.request_id, "aborted")  # cut by a crash and superseded
            else:
                after.append(task)
        self._chat.start(request_id, None if continuation else _new_id(), continuation)
        self._spawn(request_id, after=after, recovering=False, owner=owner)
        return request_id

    def _pending_ids(self) -> list[str]:
        return [c.id for c in self.connections if c.protocol.get(_PENDING)]

    # -- frame handlers (each runs as a turn) ------------------------------------------
    async def _chat_request(self, conn: Connection, data: dict[str, Any]) -> None:
        request_id = data.get("id")
        raw_init = data.get("init")
        init: dict[str, Any] = raw_init if isinstance(raw_init, dict) else {}
        if not isinstance(request_id, str) or not request_id or init.get("method", "POST") != "POST":
            return
        try:
            body = json.loads(init.get("body") or "")
            msgs = body["messages"]
            if not (isinstance(msgs, list) and all(isinstance(m, dict) and m.get("id") and m.get("role")
                                                   for m in msgs)):
                raise ValueError
        except (ValueError, KeyError, TypeError):
            await conn.send(frames.response(request_id, 'init.body must be JSON {"messages": [UI messages with'
                                            ' id and role], ...}', done=True, error=True))
            return
        extra = {k: v for k, v in body.items() if k not in ("messages", "clientTools", "trigger")}
        self._chat.replace_all(msgs)
        self._chat.set_context("clientTools", body.get("clientTools") or [])
        self._chat.set_context("body", extra)
        await self.broadcast(frames.messages(msgs), exclude=[conn.id])
        self._start(False, conn.id, request_id)

    async def _chat_cancel(self, conn: Connection, data: dict[str, Any]) -> None:
        request_id = data.get("id")
        if not isinstance(request_id, str):
            return
        task = self._host.task(self._key(request_id))
        if task is not None:
            _CANCELLED.add((self.ref.path, request_id))
            task.cancel()

    async def _chat_clear(self, conn: Connection, data: dict[str, Any]) -> None:
        row = self._chat.active()
        while row is not None:
            task = self._host.task(self._key(row.request_id))
            if task is not None:
                _CANCELLED.add((self.ref.path, row.request_id))
                task.cancel()
            self._chat.finish(row.request_id, "aborted")
            row = self._chat.active()
        self._chat.clear()
        for c in self.connections:
            c.protocol.pop(_PENDING, None)
        await self.broadcast(frames.CLEAR, exclude=[conn.id])

    async def _chat_messages(self, conn: Connection, data: dict[str, Any]) -> None:
        msgs = data.get("messages")
        if isinstance(msgs, list):
            for m in msgs:
                if isinstance(m, dict) and m.get("id") and m.get("role"):
                    self._chat.upsert(m)
            await self.broadcast(frames.messages(self._chat.messages()), exclude=[conn.id])

    async def _chat_resume_request(self, conn: Connection, data: dict[str, Any]) -> None:
        probe = data.get("probeId") if isinstance(data.get("probeId"), str) else None
        row = self._live_active()
        if row is None and conn.protocol.get(_PENDING):
            # The reply it was told of (or started by its tool result) has already
            # ended: it still gets it, replayed whole, when it ACKs.
            row = self._chat.stream(conn.protocol[_PENDING])
        if row is None:
            await conn.send(frames.resume_none(probe))
            return
        conn.protocol[_PENDING] = row.request_id
        await conn.send(frames.resuming(row.request_id, probe))

    async def _chat_resume_ack(self, conn: Connection, data: dict[str, Any]) -> None:
        request_id = data.get("id")
        conn.protocol.pop(_PENDING, None)
        if not isinstance(request_id, str):
            return
        row = self._chat.stream(request_id)
        if row is None:
            await conn.send(frames.response(request_id, done=True, replay=True))
            return
        cont = row.continuation
        for seq, body in enumerate(self._chat.chunks(request_id)):
            await conn.send(frames.response(request_id, body, seq=seq, continuation=cont, replay=True))
        if row.status == "streaming":
            await conn.send(frames.response(request_id, continuation=cont, replay=True, replayComplete=True))
        else:
            extra: dict[str, Any] = {} if row.status == "completed" else {"outcome": row.status}
            await conn.send(frames.response(request_id, done=True, continuation=cont, replay=True, **extra))

    async def _chat_tool_result(self, conn: Connection, data: dict[str, Any]) -> None:
        if data.get("clientTools"):
            self._chat.set_context("clientTools", data["clientTools"])
        failed = data.get("state") == "output-error"

        def apply(part: dict[str, Any]) -> bool:
            if part.get("state") not in ("input-streaming", "input-available", "approval-responded"):
                return False
            if failed:
                part.update(state="output-error", errorText=str(data.get("errorText") or "tool failed"))
            else:
                part.update(state="output-available", output=data.get("output"))
            return True

        await self._update_tool(conn, data, apply)

    async def _chat_tool_approval(self, conn: Connection, data: dict[str, Any]) -> None:
        def apply(part: dict[str, Any]) -> bool:
            if part.get("state") != "approval-requested":
                return False
            part.update(state="approval-responded",
                        approval={**(part.get("approval") or {}), "approved": bool(data.get("approved"))})
            return True

        await self._update_tool(conn, data, apply)

    async def _update_tool(self, conn: Connection, data: dict[str, Any], apply: Any) -> None:
        call_id = data.get("toolCallId")
        for message in reversed(self._chat.messages()):
            for part in message.get("parts") or ():
                if is_tool_part(part) and part.get("toolCallId") == call_id:
                    if apply(part):
                        self._chat.upsert(message)
                        await self.broadcast(frames.message_updated(message))
                        if data.get("autoContinue") and not _awaits_client(message):
                            request_id = self._start(True, conn.id)
                            conn.protocol[_PENDING] = request_id  # it probes, then ACKs for the replay
                    return

    # -- what the producer calls, each in a turn ------------------------------------
    async def _chat_begin(self, request_id: str, recovering: bool, owner: str | None) -> ChatTurn | None:
        row = self._chat.stream(request_id)
        if row is None or row.status != "streaming":
            return None
        history = self._chat.messages()
        base: dict[str, Any] | None = None
        if row.continuation:
            for i in range(len(history) - 1, -1, -1):
                if history[i].get("role") == "assistant":
                    base = history.pop(i)
                    break
        if base is None:
            base = {"id": row.message_id or _new_id(), "role": "assistant", "parts": []}
        acc = Accumulator(base)
        chunks = self._chat.chunks(request_id) if recovering else []
        for body in chunks:
            acc.apply(json.loads(body))
        return ChatTurn(request_id, history, acc.message, continuation=row.continuation, recovering=recovering,
                        started=bool(chunks), open_text_id=acc.open_text_id(), next_seq=len(chunks),
                        client_tools=list(self._chat.context("clientTools") or []),
                        body=dict(self._chat.context("body") or {}), owner=owner, _acc=acc)

    async def _chat_emit(self, turn: ChatTurn, bodies: list[str]) -> None:
        """Write a batch of chunks (one statement) and send each, in one turn."""
        if (self.ref.path, turn.request_id) in _CANCELLED:
            raise asyncio.CancelledError  # cancelled or cleared while this batch waited
        first = turn.next_seq
        self._chat.append_many(turn.request_id, first, bodies)
        turn.next_seq += len(bodies)
        skip = self._pending_ids()
        for i, body in enumerate(bodies):
            await self.broadcast(frames.response(turn.request_id, body, seq=first + i,
                                                 continuation=turn.continuation), exclude=skip)

    async def _chat_drop_queued(self, request_id: str, owner: str | None) -> None:
        """A reply cancelled while it waited for the one before it: it ends, empty."""
        row = self._chat.stream(request_id)
        if row is None or row.status != "streaming":
            return
        self._chat.finish(request_id, "aborted")
        await self.broadcast(frames.response(request_id, done=True, continuation=row.continuation, outcome="aborted"),
                             exclude=self._pending_ids())

    async def _chat_end(self, turn: ChatTurn, outcome: str, error: str | None) -> None:
        row = self._chat.stream(turn.request_id)
        if row is None or row.status != "streaming":
            return
        if turn.message.get("parts"):
            self._chat.upsert(turn.message)
        self._chat.finish(turn.request_id, outcome)
        skip = self._pending_ids()  # they get the replay and this end when they ACK
        if error is not None:
            await self.broadcast(frames.response(turn.request_id, error, error=True,
                                                 continuation=turn.continuation), exclude=skip)
        extra: dict[str, Any] = {} if outcome == "completed" else {"outcome": outcome}
        await self.broadcast(frames.response(turn.request_id, done=True, continuation=turn.continuation, **extra),
                             exclude=skip)
        others = ([turn.owner] if turn.owner else []) + skip
        await self.broadcast(frames.messages(self._chat.messages()), exclude=others)


def _awaits_client(message: dict[str, Any]) -> bool:
    """A tool call in ``message`` still waits on the client (a result or an approval)."""
    return any(is_tool_part(p) and p.get("state") in ("input-available", "approval-requested")
               for p in message.get("parts") or ())


_END = object()
_MAX_BATCH = 256


async def _produce(host: Any, ref: Any, request_id: str, after: "list[asyncio.Task[Any]] | None",
                   recovering: bool, owner: str | None) -> None:
    """One reply. ``on_chat_message`` runs in its own task (``pump``) and queues its
    chunks; this loop hands them to the agent in turns, as many as are waiting per turn
    (one SQL statement, one turn for a burst; one per chunk when the model is slower
    than the host)."""
    try:
        if after:
            await asyncio.wait(after)  # replies run in arrival order (the "queue" policy)
    except asyncio.CancelledError:
        if (ref.path, request_id) not in _CANCELLED:
            raise
        _CANCELLED.discard((ref.path, request_id))
        await host.run_step(ref, lambda a: a._chat_drop_queued(request_id, owner))
        return
    turn: ChatTurn | None = await host.run_step(ref, lambda a: a._chat_begin(request_id, recovering, owner))
    if turn is None:
        return
    agent: ChatAgent = await host.run_step(ref, _itself)
    queue: asyncio.Queue[Any] = asyncio.Queue()

    async def pump() -> None:
        try:
            reply = agent.on_chat_message(turn)
            if inspect.isawaitable(reply):  # an async def returning an async iterator
                reply = await reply
            async for chunk in reply:
                queue.put_nowait(turn._prepare(chunk))
            queue.put_nowait(_END)
        except Exception as e:
            queue.put_nowait(e)

    outcome, error = "completed", None
    pumping = asyncio.get_running_loop().create_task(pump())
    try:
        done = False
        while not done:
            batch: list[str] = []
            item = await queue.get()
            while True:
                if item is _END:
                    done = True
                elif isinstance(item, Exception):
                    raise item
                else:
                    batch.append(item)
                if done or queue.empty() or len(batch) >= _MAX_BATCH:
                    break
                item = queue.get_nowait()
            if batch:
                await host.run_step(ref, lambda a, b=batch: a._chat_emit(turn, b))
    except asyncio.CancelledError:
        if (ref.path, request_id) not in _CANCELLED:
            raise  # the host is stopping: the row stays 'streaming' and is picked up after restart
        outcome = "aborted"
    except Exception as e:
        log.warning("chat reply %s of %s failed: %s", request_id, ref.path, e)
        outcome, error = "error", str(e) or type(e).__name__
    finally:
        pumping.cancel()
    _CANCELLED.discard((ref.path, request_id))
    await host.run_step(ref, lambda a: a._chat_end(turn, outcome, error))


async def _itself(agent: Agent) -> Agent:
    return agent


__all__ = ["ChatAgent", "ChatTurn"]
