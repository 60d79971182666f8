"""The gateway's small HTTP/1.1 client: keep-alive reuse, streaming bodies, and a
server that closes idle connections behind its back."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from myriad.models.providers._wire import Pool, WireError, encode_headers
from myriad.models.simulated import start_simulated_upstream

pytestmark = pytest.mark.integration

HEADERS = encode_headers({"content-type": "application/json"})
BODY = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})


@pytest.fixture(scope="module")
def up():
    handle = start_simulated_upstream(tokens=6)
    yield handle
    handle.close()


async def test_keep_alive_reuses_one_connection(up):
    pool = Pool(up.base_url)
    for _ in range(5):
        r = await pool.request("/chat/completions", BODY, HEADERS)
        assert r.status == 200
        assert orjson.loads(await r.read())["object"] == "chat.completion"
    assert len(pool.idle) == 1
    pool.close()


async def test_streaming_body_and_error_status(up):
    pool = Pool(up.base_url)
    r = await pool.request("/chat/completions", orjson.dumps({**orjson.loads(BODY), "stream": True}), HEADERS)
    got = b"".join([piece async for piece in r.iter()])
    assert got.endswith(b"data: [DONE]\n\n") and got.count(b"data: ") == 8
    r = await pool.request("/chat/completions", b"{nope", HEADERS)
    assert r.status == 400 and b"invalid_json" in await r.read()
    assert len(pool.idle) == 1  # both exchanges completed cleanly on one connection
    pool.close()


async def test_server_closing_idle_connections_is_survived():
    served = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        await reader.readuntil(b"\r\n\r\n")
        served += 1
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()  # keep-alive promised, connection closed anyway

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = Pool(f"http://127.0.0.1:{port}/v1")
    for _ in range(3):
        r = await pool.request("/x", b"{}", HEADERS)
        assert await r.read() == b"ok"
        await asyncio.sleep(0.05)
    assert served == 3
    server.close()
    await server.wait_closed()
    with pytest.raises(WireError, match="cannot connect"):
        await Pool(f"http://127.0.0.1:{port}").request("/x", b"{}", HEADERS)
    pool.close()


async def test_body_delimited_by_close():
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
        for part in (b'{"a": ', b'1}'):
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    pool = Pool(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
    r = await pool.request("/x", b"{}", HEADERS)
    assert orjson.loads(await r.read()) == {"a": 1}
    assert not pool.idle  # not reusable
    server.close()
    await server.wait_closed()


def test_bad_base_url():
    async def go() -> None:
        Pool("ftp://example")

    with pytest.raises(ValueError, match="http"):
        asyncio.run(go())
