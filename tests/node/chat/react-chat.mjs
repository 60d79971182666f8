// useAgentChat itself (React hook of @cloudflare/ai-chat 0.12.2 over useAgent of
// agents 0.32.0 and useChat of @ai-sdk/react 3), rendered in Node by
// react-test-renderer, against a real Myriad server. Nothing is replaced: the hook
// sends its own frames, runs its own resume handshake and tool continuations.
//
// Usage: node react-chat.mjs SCENARIO HOST:PORT TOKEN NAME [AGENT]  -> one JSON line
import { createElement } from "react";
import TestRenderer, { act } from "react-test-renderer";
import { useAgent } from "agents/react";
import { useAgentChat } from "@cloudflare/ai-chat/react";
import WebSocket from "ws";

globalThis.IS_REACT_ACT_ENVIRONMENT = false;  // updates arrive from sockets, not from act()
const [scenario, host, token, name, agentName = "Support"] = process.argv.slice(2);
const out = {};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const waitFor = async (pred, what, ms = 20000) => {
  const end = Date.now() + ms;
  while (Date.now() < end) { if (pred()) return; await sleep(20); }
  throw new Error("timeout: " + what + " " + JSON.stringify(view()).slice(0, 800));
};
const textOf = (m) => (m?.parts ?? []).filter((p) => p.type === "text").map((p) => p.text).join("");
const tools = (m) => (m?.parts ?? []).filter((p) => p.type.startsWith("tool-")).map((p) => [p.type, p.state]);

let chat, agent;
function App() {
  agent = useAgent({ agent: agentName, name, host, query: { token }, WebSocket,
    minReconnectionDelay: 100, maxReconnectionDelay: 300 });
  chat = useAgentChat({
    agent,
    getInitialMessages: null,  // the conversation comes over the socket (cf_agent_chat_messages)
    tools: { local_time: { description: "The user's local time", parameters: { type: "object", properties: {} },
                           execute: async () => ({ time: "09:41" }) } },
    onToolCall: async ({ toolCall, addToolOutput }) => {
      if (toolCall.toolName === "local_time") addToolOutput({ toolCallId: toolCall.toolCallId, output: { time: "09:41" } });
    },
  });
  return null;
}
const view = () => ({ status: chat?.status, streaming: chat?.isStreaming, n: chat?.messages.length,
  last: chat?.messages.at(-1) && { role: chat.messages.at(-1).role, text: textOf(chat.messages.at(-1)), tools: tools(chat.messages.at(-1)) } });
const last = () => chat.messages.at(-1);
const settled = () => chat.status === "ready" && !chat.isStreaming && last()?.role === "assistant";

async function say(text) {
  const n = chat.messages.length;
  await act(async () => { chat.sendMessage({ text }); });
  await waitFor(() => chat.messages.length >= n + 2 && settled() && textOf(last()).length > 0
    || (chat.messages.length >= n + 2 && chat.status === "ready" && tools(last()).some(([, s]) => s === "approval-requested")), "reply to " + text);
}

async function flow() {
  await say("What is the weather in Paris?");
  out.weather = { tools: tools(last()), text: textOf(last()) };
  await say("Please refund order 7");
  const part = last().parts.find((p) => p.type === "tool-refund");
  out.asked = part.state;
  await act(async () => { chat.addToolApprovalResponse({ id: part.approval.id, approved: true }); });
  await waitFor(() => settled() && tools(last())[0]?.[1] === "output-available" && textOf(last()).includes("refunded"), "approved reply");
  out.approved = { tools: tools(last()), text: textOf(last()) };
  await say("What is my local_time?");
  await waitFor(() => settled() && textOf(last()).includes("09:41"), "client tool reply");
  out.clientTool = { tools: tools(last()), text: textOf(last()) };
  out.roles = chat.messages.map((m) => m.role);
}

async function resume() {
  const n = chat.messages.length;
  await act(async () => { chat.sendMessage({ text: "tell me a long story" }); });
  await waitFor(() => textOf(chat.messages[n + 1]).split(" ").length > 4, "some words");
  out.cutAt = textOf(chat.messages[n + 1]);
  if (scenario === "resume-drop") agent.reconnect();  // the socket drops mid-reply
  else console.log("MIDSTREAM");                       // Python kill -9s the server and restarts it
  await waitFor(() => settled() && chat.messages.length === n + 2 && textOf(last()).endsWith("."), "resumed reply", 30000);
  out.text = textOf(last());
  out.textParts = last().parts.filter((p) => p.type === "text").length;
  out.count = chat.messages.length;
  const r = await fetch(`http://${host}/agents/${agentName.replace(/[A-Z]/g, (c, i) => (i ? "-" : "") + c.toLowerCase())}/${name}/get-messages`,
    { headers: { Authorization: `Bearer ${token}` } });
  const stored = await r.json();
  out.stored = { count: stored.length, text: textOf(stored.at(-1)) };
}

let renderer;
try {
  await act(async () => { renderer = TestRenderer.create(createElement(App)); });
  await waitFor(() => agent?.identified, "identified");
  await { flow, "resume-drop": resume, "resume-kill": resume }[scenario]();
} catch (e) {
  out.error = String(e?.stack ?? e);
}
console.log(JSON.stringify(out));
process.exit(0);
