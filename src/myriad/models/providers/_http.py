"""What HTTP providers share: one aiohttp session per event loop, SSE line reading,
and the translation of upstream HTTP failures into ``myriad.errors``.

aiohttp rather than httpx on this path because its per-request overhead is a
fraction of httpx's, and the gateway's whole promise is to add well under a
millisecond.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from typing import Any, AsyncIterator, Mapping

import aiohttp
import orjson

from myriad.errors import (
    ContextWindowExceeded,
    ModelError,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
)


class HTTPClient:
    """A lazily created aiohttp session, remade if the event loop changed."""

    def __init__(self, base_url: str, headers: Mapping[str, str], name: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"content-type": "application/json", **headers}
        self.name = name
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            self._loop = loop
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=30),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def post_json(self, path: str, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
                        ) -> dict[str, Any]:
        """POST and return the parsed JSON body, or raise a translated error."""
        try:
            async with self.session().post(self.base_url + path, data=orjson.dumps(body),
                                           headers=_merge(self.headers, headers)) as r:
                raw = await r.read()
                if r.status != 200:
                    raise translate_status(r.status, raw, r.headers, self.name)
        except aiohttp.ClientError as e:
            raise UpstreamError(f"{self.name}: cannot reach upstream: {e}",
                                details={"deployment": self.name}) from None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamError(f"{self.name}: upstream sent invalid JSON", details={"deployment": self.name}) from None

    async def post_sse(self, path: str, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
                       ) -> AsyncIterator[list[tuple[str | None, bytes]]]:
        """POST and yield the server-sent events ``(event, data)`` that arrived together,
        one list per network read: what the upstream wrote at once stays together, so
        the gateway can pass it on in one write too."""
        try:
            async with self.session().post(self.base_url + path, data=orjson.dumps(body),
                                           headers=_merge(self.headers, headers)) as r:
                if r.status != 200:
                    raise translate_status(r.status, await r.read(), r.headers, self.name)
                buf = b""
                async for data in r.content.iter_any():
                    buf += data.replace(b"\r\n", b"\n") if b"\r" in data else data
                    if b"\n\n" not in buf:
                        continue
                    *events, buf = buf.split(b"\n\n")
                    batch = [ev for ev in map(_parse_event, events) if ev is not None]
                    if batch:
                        yield batch
                if buf.strip():
                    ev = _parse_event(buf)
                    if ev is not None:
                        yield [ev]
        except aiohttp.ClientError as e:
            raise UpstreamError(f"{self.name}: stream from upstream broke: {e}",
                                details={"deployment": self.name}) from None

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            try:
                await self._session.close()
            except RuntimeError:  # its loop is gone; nothing left to close
                pass
        self._session = None


def _parse_event(raw: bytes) -> tuple[str | None, bytes] | None:
    event: str | None = None
    data: list[bytes] = []
    for line in raw.split(b"\n"):
        if line.startswith(b"data:"):
            data.append(line[5:].lstrip(b" "))
        elif line.startswith(b"event:"):
            event = line[6:].strip().decode()
    if not data:
        return None
    return event, b"\n".join(data)


def _merge(a: Mapping[str, str], b: Mapping[str, str] | None) -> Mapping[str, str]:
    return {**a, **b} if b else a


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if not ra:
        return None
    try:
        return max(0.0, float(ra))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(ra)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def translate_status(status: int, raw: bytes, headers: Mapping[str, str], name: str) -> ModelError:
    """An upstream HTTP error as the gateway's exception."""
    message, code = _error_text(raw)
    details = {"deployment": name, "upstream_status": status}
    text = f"{name}: upstream answered {status}: {message}"
    if status == 429:
        return UpstreamRateLimited(text, retry_after=parse_retry_after(headers), details=details)
    if status in (408, 504):
        return UpstreamTimeout(text, details=details)
    if status >= 500 or status in (401, 403, 404):
        # a bad key or a missing model is this deployment's problem: another may serve
        return UpstreamError(text, details=details)
    low = message.lower()
    if code == "context_length_exceeded" or "context length" in low or "context window" in low or (
            "too long" in low and "prompt" in low):
        return ContextWindowExceeded(text, details=details)
    return UpstreamRejected(text, details=details)


def _error_text(raw: bytes) -> tuple[str, str | None]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw[:300].decode("utf-8", "replace") or "(empty body)", None
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        return str(err.get("message") or err), err.get("code") or err.get("type")
    if isinstance(err, str):
        return err, None
    return str(body)[:300], None


__all__ = ["HTTPClient", "translate_status", "parse_retry_after"]
