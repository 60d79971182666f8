"""A dead or hanging collector costs dropped telemetry, never a slower or failed turn."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from myriad.agents import Agent, AgentHost, AgentRef, callable
from myriad.models import Gateway
from myriad.settings import AgentSettings, TelemetrySettings
from myriad.telemetry import setup_telemetry


class Echo(Agent):
    @callable()
    async def ask(self, q: str) -> str:
        return (await self.models.chat(q)).text


class BlackHole:
    """Accepts TCP connections and never answers (a hung collector)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)

    def close(self) -> None:
        self.stopped = True
        self.sock.close()
        for c in self.conns:
            c.close()


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("collector, protocol", [("hung", "http/protobuf"), ("refused", "grpc")])
async def test_turns_do_not_wait_for_the_collector(storage, collector: str, protocol: str):
    hole = BlackHole() if collector == "hung" else None
    port = hole.port if hole else _dead_port()
    tel = setup_telemetry(TelemetrySettings(), {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}", "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_BSP_SCHEDULE_DELAY": "5", "OTEL_BSP_MAX_QUEUE_SIZE": "64", "OTEL_METRIC_EXPORT_INTERVAL": "50",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "3000"})
    host = AgentHost(storage, AgentSettings(hibernate_after=3600), models=tel.instrument_gateway(Gateway.simulated()),
                     instrumentation=tel.instrument_host())
    host.register(Echo)
    await host.start()
    try:
        await host.call(AgentRef("t", "echo", "warm"), "ask", ["x"])
        lat = []
        for i in range(300):  # ~600 spans through a 64-span queue: most are dropped, none wait
            t0 = time.perf_counter()
            assert "simulated" in await host.call(AgentRef("t", "echo", f"a{i % 10}"), "ask", ["hi"])
            lat.append(time.perf_counter() - t0)
        lat.sort()
        assert lat[len(lat) // 2] < 0.02, f"p50 turn {lat[len(lat) // 2] * 1000:.1f} ms"
        assert lat[-1] < 0.5, f"max turn {lat[-1] * 1000:.1f} ms"
        assert tel.store.stats()["seen"] >= 600  # the local store still got everything
    finally:
        await host.stop()
        t0 = time.perf_counter()
        await tel.aclose(timeout=1.0)
        assert time.perf_counter() - t0 < 2.0  # shutdown is bounded too
        if hole:
            hole.close()
