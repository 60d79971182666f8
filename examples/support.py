"""A support chat agent with a one-page front end, on the chat frames of Cloudflare's
``useAgentChat`` (so a React front end built on ``@cloudflare/ai-chat`` works too).

    myriad serve --agents examples.support
    open http://127.0.0.1:8787/agents/support/me/ui?token=<API key>

The conversation lives in the agent's own SQL. ``weather`` runs on the server;
``refund`` runs only once the user approves it; the page also offers the model a
client-side tool, ``local_time``, which the browser answers. With no provider
configured the models are SIMULATED: a message that names a tool ("weather in
Paris", "refund order 7", "local_time please") makes the model call it.
"""

from pathlib import Path

from myriad import ChatAgent, tool

PAGE = Path(__file__).with_name("support.html")


class Support(ChatAgent):
    system = "You are Acme's support assistant. Use the tools when they help."

    @tool(description="Current weather for a city")
    async def weather(self, city: str) -> dict:
        return {"city": city, "forecast": "sunny", "celsius": 21}

    @tool(description="Refund an order (a person must approve it)", needs_approval=True)
    async def refund(self, order_id: str) -> dict:
        return {"order_id": order_id, "refunded": True}

    async def on_request(self, request):
        if request.method == "GET" and request.url.path.rstrip("/").endswith("/ui"):
            from starlette.responses import HTMLResponse

            return HTMLResponse(PAGE.read_text())
        return await super().on_request(request)
