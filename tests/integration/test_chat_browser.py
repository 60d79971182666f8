"""The support chat example (examples/support.py + support.html) in headless Chromium:
served by Myriad, a server tool, an approval, a client tool, persistence across a
reload, and a reply resumed after the page's socket dropped mid-stream."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.chat_agents import SLOW_MODELS
from tests.integration.live import LiveServer

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]


def _assistant_texts(page: Any) -> list[str]:
    return page.eval_on_selector_all(".msg.assistant", "els => els.map(e => e.textContent)")


def test_support_chat_in_chromium(tmp_path: Path):
    if not os.path.exists(CHROMIUM):
        pytest.fail("Chromium missing: run scripts/setup.sh --test (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    models = tmp_path / "models.toml"
    models.write_text(SLOW_MODELS)
    server = LiveServer(tmp_path / "data", agents="examples.support,tests.integration.chat_agents",
                        env={"MYRIAD_MODELS__CONFIG": str(models)}).start()
    foreign: list[str] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page()
            page.on("request", lambda r: None if r.url.startswith(server.url) else foreign.append(r.url))
            page.goto(f"{server.url}/agents/support/web/ui?token={server.key}")
            page.wait_for_selector("#status:has-text('connected')")

            def ask(text: str) -> None:
                page.fill("#text", text)
                page.click("#send")

            ask("What is the weather in Paris?")
            page.wait_for_selector(".tool[data-tool='weather'][data-state='output-available']")
            page.wait_for_function("() => [...document.querySelectorAll('.msg.assistant')].at(-1)?.textContent.includes('celsius')"
                                   " && !window.chat.active")
            ask("Please refund order 7")
            page.click(".tool[data-tool='refund'] button:has-text('Approve')")
            page.wait_for_selector(".tool[data-tool='refund'][data-state='output-available']")
            page.wait_for_function("() => [...document.querySelectorAll('.msg.assistant')].at(-1)?.textContent.includes('refunded')"
                                   " && !window.chat.active")
            ask("What is my local_time?")
            page.wait_for_selector(".tool[data-tool='local_time'][data-state='output-available']")
            page.wait_for_function("() => /You said: tool result \\{\"time\"/.test("
                                   "[...document.querySelectorAll('.msg.assistant')].at(-1)?.textContent) && !window.chat.active")
            before = _assistant_texts(page)
            page.reload()
            page.wait_for_function("() => document.querySelectorAll('.msg').length === 6")
            assert _assistant_texts(page) == before  # the conversation lives in the agent

            # a slow reply, the page's socket dropped mid-stream: it reconnects and resumes
            page.goto(f"{server.url}/agents/slow-support/web/ui?token={server.key}")
            page.wait_for_selector("#status:has-text('connected')")
            ask("tell me a long story")
            page.wait_for_function("() => ([...document.querySelectorAll('.msg.assistant')].at(-1)?.textContent || '').split(' ').length > 5")
            page.evaluate("() => window.chat.ws.close()")
            page.wait_for_function("() => window.chat.active === null && document.querySelectorAll('.msg.assistant').length === 1"
                                   " && document.querySelector('.msg.assistant').textContent.endsWith('.')", timeout=20000)
            shown = _assistant_texts(page)[0]
            browser.close()
        stored = httpx.get(f"{server.url}/agents/slow-support/web/get-messages", headers=server.headers()).json()
        text = "".join(p["text"] for p in stored[-1]["parts"] if p["type"] == "text")
        assert shown == text and len(text.split()) >= 20  # the whole reply, once
    finally:
        server.stop()
    assert not foreign, f"the page fetched from elsewhere: {foreign}"
