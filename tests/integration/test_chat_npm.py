"""Chat agents driven by the unmodified npm clients against a real server:
``useAgentChat`` itself (rendered by react-test-renderer, tests/node/chat/react-chat.mjs)
and its transport ``WebSocketChatTransport`` with ``AgentClient`` and the AI SDK's own
stream reader (chat.mjs; @cloudflare/ai-chat 0.12.2, agents 0.32.0, ai 7): tools,
approval, client tools, persistence, cancel, clear, and the three resume cases
(socket dropped mid-stream, agent hibernated between chunks, server kill -9'd and
restarted mid-stream), keepalive pings and the capnweb refusal."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from tests.integration.chat_agents import SLOW_MODELS
from tests.integration.live import LiveServer

NODE_DIR = Path(__file__).resolve().parents[1] / "node" / "chat"
AGENTS = "examples.support,tests.integration.chat_agents"

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node not installed (scripts/setup.sh --test)")


def _server(tmp_path: Path, **env: str) -> LiveServer:
    if not (NODE_DIR / "node_modules" / "@cloudflare" / "ai-chat").exists():
        pytest.fail("npm packages missing: run scripts/setup.sh --test (npm install in tests/node/chat)")
    models = tmp_path / "models.toml"
    models.write_text(SLOW_MODELS)
    return LiveServer(tmp_path / "data", agents=AGENTS, env={"MYRIAD_MODELS__CONFIG": str(models), **env}).start()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    s = _server(tmp_path_factory.mktemp("chat"))  # one server for the module; kill tests restart it
    yield s
    s.stop()


def node(server: LiveServer, scenario: str, name: str, agent: str = "Support", script: str = "chat.mjs") -> dict[str, Any]:
    proc = subprocess.run(["node", script, scenario, f"127.0.0.1:{server.port}", server.key, name, agent],
                          cwd=NODE_DIR, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "error" not in out, out["error"]
    return out


def test_chat_with_tools_approval_client_tools_and_persistence(server: LiveServer):
    out = node(server, "flow", "ann")
    assert out["initialMessages"] == 0
    # a server tool ran inside the reply, and the model answered from its result
    assert out["weather"]["tools"] == [["tool-weather", "output-available", {"city": "simulated", "forecast": "sunny", "celsius": 21}]]
    assert "tool result" in out["weather"]["text"] and not out["weather"]["errors"]
    # a tool that needs approval stops the reply; approving continues the same message
    assert out["approvalAsked"] == {"type": "tool-refund", "state": "approval-requested", "hasApprovalId": True, "finish": "finish"}
    assert out["approved"]["id"] is True and not out["approved"]["errors"]
    assert out["approved"]["tools"] == [["tool-refund", "output-available", {"order_id": "simulated", "refunded": True}]]
    assert '"refunded": true' in out["approved"]["text"]
    # a client tool: asked of the client, answered with cf_agent_tool_result, reply goes on
    assert out["clientToolAsked"] == {"type": "tool-local_time", "state": "input-available"}
    assert out["clientToolDone"]["tools"] == [["tool-local_time", "output-available", {"time": "09:41"}]]
    assert "09:41" in out["clientToolDone"]["text"]
    assert out["messageUpdated"] == [["output-available"]]
    # persisted in the agent's SQL: a new client gets it on connect and over HTTP
    assert out["persisted"] == {"count": 6, "sameAsClient": True, "roles": ["user", "assistant"] * 3}
    assert out["httpMessages"] == 6
    assert out["otherTabSawChunks"] is True and out["afterClear"] == 0
    assert out["unknownAnswered"] == "Method wakes does not exist" and out["repliesToUnknown"] == 0


def test_cancel_mid_stream_keeps_the_partial_reply(server: LiveServer):
    out = node(server, "cancel", "cat", "SlowSupport")
    assert out["doneFrame"]["outcome"] == "aborted"
    assert out["cancelMs"] < 2000
    assert out["storedPartial"]["count"] == 2 and out["storedPartial"]["text"].startswith("[simulated slow]")


def _assert_whole_reply(out: dict[str, Any]) -> None:
    r = out["resumed"]
    assert r["requestId"] and r["done"] and not r["errors"], r
    assert r["seqs"]["contiguous"] and r["seqs"]["unique"], r  # no gap, no duplicate
    assert r["replayed"] >= len(out["beforeDrop"])  # what was sent before is replayed...
    assert r["startsWithCut"] and r["cutLength"] > 0  # ...and what the client had is a prefix
    assert {"start", "text-delta", "finish"} <= set(r["chunkTypes"])
    assert out["stored"] == {"count": 2, "sameText": True, "id": True}


def test_resume_after_socket_dropped_mid_stream(server: LiveServer):
    out = node(server, "resume-drop", "dan", "SlowSupport")
    assert out["firstStreamErrors"] == ["WebSocket closed mid-stream"]
    _assert_whole_reply(out)
    assert out["resumed"]["live"] > 0  # the reply was still being produced after the resume


def test_resume_with_agent_hibernating_between_chunks(tmp_path: Path):
    s = _server(tmp_path, MYRIAD_AGENTS__HIBERNATE_AFTER="0.02")
    try:
        out = node(s, "resume-drop", "hib", "SlowSupport")
    finally:
        s.stop()
    _assert_whole_reply(out)
    assert out["wakes"] >= 3, out  # the instance left memory between chunks and came back


def _killed_mid_stream(server: LiveServer, script: str, name: str) -> dict[str, Any]:
    proc = subprocess.Popen(["node", script, "resume-kill", f"127.0.0.1:{server.port}", server.key, name, "SlowSupport"],
                            cwd=NODE_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("MIDSTREAM"), line
        server.kill9()
        time.sleep(0.3)
        server.start()
        rest, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    out: dict[str, Any] = json.loads(rest.strip().splitlines()[-1])
    assert "error" not in out, out.get("error", "") + err
    return out


def test_resume_after_server_killed_mid_stream(server: LiveServer):
    out = _killed_mid_stream(server, "chat.mjs", "kim")
    assert out["firstStreamErrors"] == ["WebSocket closed mid-stream"]
    _assert_whole_reply(out)
    assert out["resumed"]["live"] > 0  # finished by the restarted server


def test_use_agent_chat_hook_holds_a_chat_with_tools_and_approval(server: LiveServer):
    out = node(server, "flow", "hook", script="react-chat.mjs")
    assert out["weather"]["tools"] == [["tool-weather", "output-available"]] and "celsius" in out["weather"]["text"]
    assert out["asked"] == "approval-requested"
    assert out["approved"]["tools"] == [["tool-refund", "output-available"]] and "refunded" in out["approved"]["text"]
    assert "09:41" in out["clientTool"]["text"]
    # AI SDK 7 resumes a client-tool continuation into a new assistant message (its rule:
    # only a message with a tool part still awaiting output is continued); the stored
    # conversation has it as one. The same frames from Cloudflare's server do the same.
    assert out["roles"][:6] == ["user", "assistant"] * 3
    stored = httpx.get(f"{server.url}/agents/support/hook/get-messages", headers=server.headers()).json()
    assert [m["role"] for m in stored] == ["user", "assistant"] * 3


def _assert_hook_resumed(out: dict[str, Any]) -> None:
    assert out["count"] == 2 and out["textParts"] == 1  # one reply, one text part: no duplicate
    assert out["text"] == out["stored"]["text"] and out["text"].startswith(out["cutAt"])
    assert len(out["text"]) > len(out["cutAt"])


def test_use_agent_chat_hook_resumes_after_socket_drop(server: LiveServer):
    _assert_hook_resumed(node(server, "resume-drop", "hookdrop", "SlowSupport", script="react-chat.mjs"))


def test_use_agent_chat_hook_resumes_after_kill9(server: LiveServer):
    _assert_hook_resumed(_killed_mid_stream(server, "react-chat.mjs", "hookkill"))


def test_idle_resume_probe_answers_at_once(server: LiveServer):
    out = node(server, "idle", "ida")
    assert out["resume"] is None and out["resumeMs"] < 1000


def test_capnweb_refused_with_close_code_and_reason(server: LiveServer):
    out = node(server, "capnweb", "cap")
    assert out["closed"]["code"] == 4005 and "capnweb" in out["closed"]["reason"] and out["closed"]["ms"] < 2000


def test_keepalive_pings_and_drops_dead_peers(tmp_path: Path):
    s = _server(tmp_path, MYRIAD_AGENTS__PING_INTERVAL="0.3", MYRIAD_AGENTS__PING_TIMEOUT="0.5")
    try:
        out = node(s, "keepalive", "kee")
    finally:
        s.stop()
    assert out["deafClosed"]["code"] == 1011  # no pong within ping_timeout: closed by the server
    assert out["pings"] >= 2 and out["goodClosed"] is None  # an answering client stays
