// Chat scenarios driven by the unmodified npm clients: AgentClient (agents 0.32.0),
// WebSocketChatTransport (the transport useAgentChat of @cloudflare/ai-chat 0.12 uses)
// and the AI SDK's own stream reader (ai 6, readUIMessageStream), so every chunk the
// server sends is checked by the code a React front end runs.
//
// Usage: node chat.mjs SCENARIO HOST:PORT TOKEN NAME [AGENT]
// Prints progress lines ("MIDSTREAM ...") the Python test may act on, and one JSON line
// of observations last.
import { AgentClient } from "agents/client";
import { WebSocketChatTransport } from "agents/chat/transport";
import { readUIMessageStream } from "ai";
import WebSocket from "ws";

const [scenario, host, token, name, agentName = "Support"] = process.argv.slice(2);
const out = {};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const timeout = (p, ms, what) => Promise.race([p, sleep(ms).then(() => { throw new Error("timeout: " + what); })]);
const waitFor = async (pred, what, ms = 20000) => {
  const end = Date.now() + ms;
  while (Date.now() < end) { if (pred()) return; await sleep(20); }
  throw new Error("timeout: " + what);
};

function connect(agent = agentName) {
  const frames = [];
  const client = new AgentClient({
    host, agent, name, WebSocket, query: { token },
    minReconnectionDelay: 100, maxReconnectionDelay: 300,
  });
  client.addEventListener("message", (e) => { try { frames.push(JSON.parse(e.data)); } catch {} });
  const transport = new WebSocketChatTransport({ agent: client, activeRequestIds: new Set() });
  // The resume handshake's three server frames reach the transport through its
  // owner's message handler; these three lines are what useAgentChat does.
  client.addEventListener("message", (e) => {
    let d; try { d = JSON.parse(e.data); } catch { return; }
    if (d.type === "cf_agent_stream_resuming") transport.handleStreamResuming(d);
    else if (d.type === "cf_agent_stream_resume_none") transport.handleStreamResumeNone(d);
    else if (d.type === "cf_agent_stream_pending") transport.handleStreamPending();
  });
  return { client, frames, transport };
}

const user = (id, text) => ({ id, role: "user", parts: [{ type: "text", text }] });
const textOf = (m) => (m?.parts ?? []).filter((p) => p.type === "text").map((p) => p.text).join("");
const toolParts = (m) => (m?.parts ?? []).filter((p) => p.type.startsWith("tool-"));

// Read a UI message stream the way useChat does; also keep the raw chunks.
async function read(stream, message) {
  const [forMessage, forChunks] = stream.tee();
  const chunks = [];
  const errors = [];
  const drain = (async () => { for await (const c of forChunks) chunks.push(c); })().catch((e) => errors.push(String(e?.message ?? e)));
  let last;
  try {
    for await (const m of readUIMessageStream({ stream: forMessage, message, onError: (e) => errors.push(String(e?.message ?? e)) })) last = m;
  } catch (e) { errors.push(String(e?.message ?? e)); }
  await drain;
  return { message: last, chunks, errors };
}

async function send(transport, messages, body) {
  const stream = await transport.sendMessages({
    chatId: name, messages, trigger: "submit-message", messageId: undefined, abortSignal: undefined, body,
  });
  return stream;
}

// What useAgentChat does after addToolApprovalResponse / addToolOutput: notify the
// server, then attach to the continuation through the resume handshake.
async function continueAfter(conn, frame, message) {
  conn.client.send(JSON.stringify(frame));
  conn.transport.expectToolContinuation();
  const stream = await timeout(conn.transport.reconnectToStream({ chatId: name }), 10000, "continuation");
  if (!stream) throw new Error("no continuation stream");
  return read(stream, message);
}

async function getMessages() {
  const r = await fetch(`http://${host}/agents/${agentName.replace(/[A-Z]/g, (c, i) => (i ? "-" : "") + c.toLowerCase())}/${name}/get-messages`,
    { headers: { Authorization: `Bearer ${token}` } });
  return r.json();
}

const seqsOf = (frames, id) => frames.filter((f) => f.type === "cf_agent_use_chat_response" && f.id === id && f.seq !== undefined).map((f) => f.seq);

async function flow() {
  const a = connect();
  await timeout(a.client.ready, 5000, "ready");
  await waitFor(() => a.frames.some((f) => f.type === "cf_agent_chat_messages"), "messages on connect");
  out.initialMessages = a.frames.find((f) => f.type === "cf_agent_chat_messages").messages.length;
  const history = [];

  // 1. a server-side tool
  history.push(user("u1", "What is the weather in Paris?"));
  let r = await read(await send(a.transport, history));
  history.push(r.message);
  out.weather = { tools: toolParts(r.message).map((p) => [p.type, p.state, p.output]), text: textOf(r.message), errors: r.errors };

  // 2. a tool that needs approval: the reply stops at the request, resumes on approval
  history.push(user("u2", "Please refund order 7"));
  r = await read(await send(a.transport, history));
  const pending = toolParts(r.message)[0];
  out.approvalAsked = { type: pending?.type, state: pending?.state, hasApprovalId: Boolean(pending?.approval?.id), finish: r.chunks.at(-1)?.type };
  const approved = structuredClone(r.message);
  approved.parts = approved.parts.map((p) => p.toolCallId === pending.toolCallId ? { ...p, state: "approval-responded", approval: { ...p.approval, approved: true } } : p);
  r = await continueAfter(a, { type: "cf_agent_tool_approval", toolCallId: pending.toolCallId, approved: true, autoContinue: true }, approved);
  history.push(r.message);
  out.approved = { id: r.message.id === approved.id, tools: toolParts(r.message).map((p) => [p.type, p.state, p.output]), text: textOf(r.message), errors: r.errors };

  // 3. a client-side tool: the model asks, the client answers, the reply goes on
  const clientTools = [{ name: "local_time", description: "The user's local time", parameters: { type: "object", properties: {} } }];
  history.push(user("u3", "What is my local_time?"));
  r = await read(await send(a.transport, history, { clientTools }));
  const call = toolParts(r.message)[0];
  out.clientToolAsked = { type: call?.type, state: call?.state };
  const answered = structuredClone(r.message);
  answered.parts = answered.parts.map((p) => p.toolCallId === call.toolCallId ? { ...p, state: "output-available", output: { time: "09:41" } } : p);
  const updates = a.frames.length;
  r = await continueAfter(a, { type: "cf_agent_tool_result", toolCallId: call.toolCallId, toolName: "local_time", output: { time: "09:41" }, autoContinue: true, clientTools }, answered);
  history.push(r.message);
  out.clientToolDone = { tools: toolParts(r.message).map((p) => [p.type, p.state, p.output]), text: textOf(r.message) };
  out.messageUpdated = a.frames.slice(updates).filter((f) => f.type === "cf_agent_message_updated").map((f) => toolParts(f.message).map((p) => p.state));

  // 4. persisted: a second client gets the conversation on connect, and over HTTP
  const b = connect();
  await timeout(b.client.ready, 5000, "ready b");
  await waitFor(() => b.frames.some((f) => f.type === "cf_agent_chat_messages"), "messages on connect b");
  const stored = b.frames.find((f) => f.type === "cf_agent_chat_messages").messages;
  out.persisted = { count: stored.length, sameAsClient: JSON.stringify(stored.map(textOf)) === JSON.stringify(history.map(textOf)), roles: stored.map((m) => m.role) };
  out.httpMessages = (await getMessages()).length;

  // 5. another tab sees a new turn's chunks live; then clear empties both
  history.push(user("u4", "hello again"));
  const bFramesBefore = b.frames.length;
  r = await read(await send(a.transport, history));
  await waitFor(() => b.frames.slice(bFramesBefore).some((f) => f.type === "cf_agent_use_chat_response" && f.done), "b sees done");
  out.otherTabSawChunks = b.frames.slice(bFramesBefore).filter((f) => f.type === "cf_agent_use_chat_response" && f.body).length === r.chunks.length;
  a.client.send(JSON.stringify({ type: "cf_agent_chat_clear" }));
  await waitFor(() => b.frames.some((f) => f.type === "cf_agent_chat_clear"), "b sees clear");
  out.afterClear = (await getMessages()).length;

  // 6. an unknown frame gets no reply (as Cloudflare's base agent)
  const before = a.frames.length;
  a.client.send(JSON.stringify({ type: "cf_agent_something_new" }));
  a.client.send("not json at all");
  out.unknownAnswered = await a.client.call("wakes").then(() => "rpc answered", (e) => e.message);
  out.repliesToUnknown = a.frames.slice(before).filter((f) => f.type !== "rpc").length;
  a.client.close(); b.client.close();
}

// Cancel a slow reply mid-stream: it ends with outcome "aborted", the partial reply is kept.
async function cancel() {
  const a = connect();
  await timeout(a.client.ready, 5000, "ready");
  const stream = await send(a.transport, [user("c1", "tell me a long story")]);
  const reader = read(stream);
  await waitFor(() => a.frames.filter((f) => f.type === "cf_agent_use_chat_response" && f.body?.includes("text-delta")).length >= 3, "3 deltas");
  const started = Date.now();
  a.transport.cancelActiveServerTurn();
  await waitFor(() => a.frames.some((f) => f.type === "cf_agent_use_chat_response" && f.done), "done after cancel");
  out.cancelMs = Date.now() - started;
  out.doneFrame = a.frames.find((f) => f.type === "cf_agent_use_chat_response" && f.done);
  await reader.catch(() => {});
  const stored = await getMessages();
  out.storedPartial = { count: stored.length, text: textOf(stored.at(-1)), deltasSent: a.frames.filter((f) => f.body?.includes("text-delta")).length };
  a.client.close();
}

// Drop the socket mid-stream (or let Python kill -9 / restart the server), reconnect,
// and resume: the resumed stream must be the whole reply, every chunk exactly once.
async function resume() {
  const a = connect();
  await timeout(a.client.ready, 5000, "ready");
  const stream = await send(a.transport, [user("r1", "tell me a long story")]);
  const first = read(stream);
  await waitFor(() => a.frames.filter((f) => f.type === "cf_agent_use_chat_response" && f.body?.includes("text-delta")).length >= 4, "4 deltas");
  const rid = a.frames.find((f) => f.type === "cf_agent_use_chat_response").id;
  out.beforeDrop = seqsOf(a.frames, rid);
  if (scenario === "resume-drop") a.client.reconnect();  // partysocket: close this socket, open a new one
  else { console.log("MIDSTREAM " + rid); }               // Python kills the server now (and restarts it)
  const framesAtCut = a.frames.length;
  const cut = await first;
  out.firstStreamErrors = cut.errors.length ? cut.errors : cut.chunks.filter((c) => c.type === "error").map((c) => c.errorText);
  const prefix = textOf(cut.message);
  // (not `await client.ready`: each failed reconnect attempt replaces that promise)
  await waitFor(() => a.frames.slice(framesAtCut).some((f) => f.type === "cf_agent_identity"), "identity after reconnect", 30000);
  const framesAtReconnect = a.frames.length;
  const resumed = await timeout(a.transport.reconnectToStream({ chatId: name }), 15000, "resume");
  if (!resumed) throw new Error("server had no stream to resume");
  const r = await read(resumed);
  const after = a.frames.slice(framesAtReconnect).filter((f) => f.type === "cf_agent_use_chat_response" && f.id === rid);
  const seqs = after.filter((f) => f.seq !== undefined).map((f) => f.seq);
  out.resumed = {
    requestId: after[0]?.id === rid,
    seqs: { n: seqs.length, contiguous: seqs.every((s, i) => s === i), unique: new Set(seqs).size === seqs.length },
    replayed: after.filter((f) => f.replay && f.body).length,
    live: after.filter((f) => !f.replay && f.body).length,
    done: after.at(-1)?.done === true,
    text: textOf(r.message), errors: r.errors,
    startsWithCut: textOf(r.message).startsWith(prefix), cutLength: prefix.length,
    chunkTypes: [...new Set(r.chunks.map((c) => c.type))],
  };
  const stored = await getMessages();
  out.stored = { count: stored.length, sameText: textOf(stored.at(-1)) === textOf(r.message), id: stored.at(-1)?.id === r.message.id };
  if (agentName === "SlowSupport") out.wakes = await a.client.call("wakes");
  a.client.close();
}

// A client that reconnects when no reply is streaming is told so at once.
async function idle() {
  const a = connect();
  await timeout(a.client.ready, 5000, "ready");
  const started = Date.now();
  out.resume = await a.transport.reconnectToStream({ chatId: name });
  out.resumeMs = Date.now() - started;
  a.client.close();
}

// ?__agents_transport=capnweb: refused at once, with a close code and a reason. (The
// npm client's CapnWebSocket needs a global CloseEvent, which Node 20 lacks, so the
// upgrade it makes is made here with ws: same URL, same query parameter.)
async function capnweb() {
  const started = Date.now();
  const ws = new WebSocket(`ws://${host}/agents/support/${name}?token=${token}&__agents_transport=capnweb`);
  const closed = await timeout(new Promise((resolve) => ws.on("close", (code, reason) =>
    resolve({ code, reason: String(reason), ms: Date.now() - started }))), 5000, "close");
  out.closed = closed;
}

// Keepalive: the server pings; a client that answers stays, one that does not is dropped.
async function keepalive() {
  const url = `ws://${host}/agents/support/${name}?token=${token}`;
  const good = new WebSocket(url);
  const deaf = new WebSocket(url, { autoPong: false });
  let pings = 0, goodClosed = null, deafClosed = null;
  good.on("ping", () => pings++);
  good.on("close", (code) => goodClosed = code);
  deaf.on("close", (code, reason) => deafClosed = { code, reason: String(reason) });
  await waitFor(() => deafClosed !== null, "deaf client dropped", 10000);
  await sleep(500);
  out.pings = pings; out.goodClosed = goodClosed; out.deafClosed = deafClosed;
  good.close();
}

const scenarios = { flow, cancel, "resume-drop": resume, "resume-kill": resume, idle, capnweb, keepalive };
try {
  await scenarios[scenario]();
} catch (e) {
  out.error = String(e?.stack ?? e);
}
console.log(JSON.stringify(out));
process.exit(0);
