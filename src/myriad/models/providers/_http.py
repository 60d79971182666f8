"""What HTTP providers share: a keep-alive pool per event loop (``_wire``), SSE
event parsing, and the translation of upstream HTTP failures into ``myriad.errors``.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from typing import Any, AsyncIterator, Mapping

import orjson

from myriad.errors import (
    ContextWindowExceeded,
    ModelError,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
)
from myriad.models.providers._wire import Pool, WireError, encode_headers
from myriad.telemetry import inject_headers


class HTTPClient:
    """POSTs JSON to one upstream over a keep-alive pool (remade if the loop changed)."""

    def __init__(self, base_url: str, headers: Mapping[str, str], name: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"content-type": "application/json", "user-agent": "myriad-gateway", **headers}
        self._encoded = encode_headers(self.headers)
        self.name = name
        self._pool: Pool | None = None

    def pool(self) -> Pool:
        loop = asyncio.get_running_loop()
        if self._pool is None or self._pool.loop is not loop:
            try:
                self._pool = Pool(self.base_url)
            except ValueError as e:
                raise UpstreamError(f"{self.name}: {e}", details={"deployment": self.name}) from None
        return self._pool

    def _headers(self, extra: Mapping[str, str] | None) -> bytes:
        # the current W3C trace context (traceparent/baggage) rides along when there is one
        extra = inject_headers(extra or {})
        return self._encoded + encode_headers(dict(extra)) if extra else self._encoded

    async def post_json(self, path: str, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
                        ) -> dict[str, Any]:
        """POST and return the parsed JSON body, or raise a translated error."""
        try:
            r = await self.pool().request(path, orjson.dumps(body), self._headers(headers))
            raw = await r.read()
        except WireError as e:
            raise UpstreamError(f"{self.name}: cannot reach upstream: {e}",
                                details={"deployment": self.name}) from None
        if r.status != 200:
            raise translate_status(r.status, raw, r.headers, self.name)
        try:
            return orjson.loads(raw)  # type: ignore[no-any-return]
        except orjson.JSONDecodeError:
            raise UpstreamError(f"{self.name}: upstream sent invalid JSON", details={"deployment": self.name}) from None

    async def post_sse(self, path: str, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
                       ) -> AsyncIterator[list[tuple[str | None, bytes]]]:
        """POST and yield the server-sent events ``(event, data)`` that arrived together,
        one list per network read: what the upstream wrote at once stays together, so
        the gateway can pass it on in one write too."""
        try:
            r = await self.pool().request(path, orjson.dumps(body), self._headers(headers))
        except WireError as e:
            raise UpstreamError(f"{self.name}: cannot reach upstream: {e}",
                                details={"deployment": self.name}) from None
        if r.status != 200:
            try:
                raw = await r.read()
            except WireError:
                raw = b""
            raise translate_status(r.status, raw, r.headers, self.name)
        buf = b""
        body_iter = r.iter()
        try:
            async for data in body_iter:
                buf += data.replace(b"\r\n", b"\n") if b"\r" in data else data
                if b"\n\n" not in buf:
                    continue
                *events, buf = buf.split(b"\n\n")
                batch = [ev for ev in map(_parse_event, events) if ev is not None]
                if batch:
                    yield batch
        except WireError as e:
            raise UpstreamError(f"{self.name}: stream from upstream broke: {e}",
                                details={"deployment": self.name}) from None
        finally:
            await body_iter.aclose()  # type: ignore[attr-defined]
        if buf.strip():
            ev = _parse_event(buf)
            if ev is not None:
                yield [ev]

    async def aclose(self) -> None:
        if self._pool is not None:
            self._pool.close()
        self._pool = None


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
