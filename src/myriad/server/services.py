"""The composition root: every room's long-lived object, built once from settings."""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from myriad.agents import Agent, AgentHost
from myriad.errors import ConfigError
from myriad.identity import Identity, KeyStore
from myriad.models import Gateway
from myriad.sandbox import Sandboxes
from myriad.settings import Settings
from myriad.server.database import build_storage, migrate_database
from myriad.storage import Storage
from myriad.telemetry import setup_telemetry


@dataclass
class Services:
    """What the server (and the CLI) hand to request handlers: ``request.app.state.services``."""

    settings: Settings
    storage: Storage
    keys: KeyStore
    host: AgentHost
    sandboxes: Any = None
    models: Any = None
    meter: Any = None
    telemetry: Any = None
    identity: Any = None
    responses: Any = None
    """``/v1/responses`` over ``models`` (``myriad.models.responses.Responses``)."""
    _closers: list[Any] = field(default_factory=list)
    """Close callbacks (sync or async), in build order; they run in reverse."""
    _starters: list[Any] = field(default_factory=list)
    """Start callbacks (sync or async), run in order after the host and telemetry started."""
    _stack: AsyncExitStack | None = None

    async def start(self) -> None:
        """Start every room. Each one's close is pushed on one ``AsyncExitStack`` as it
        starts, so ``close`` (or a failure half-way through starting) unwinds exactly what
        started, in reverse; background tasks belong to the room that started them."""
        stack = AsyncExitStack()
        try:
            await self._start(stack)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack

    async def _start(self, stack: AsyncExitStack) -> None:
        if self.settings.storage.database:  # create or upgrade every component's tables first
            import asyncio

            await asyncio.to_thread(migrate_database, self.settings.storage.database,
                                    self.settings.storage.connect_timeout)
        await self.storage.open()
        stack.push_async_callback(self.storage.close)
        self.keys.open()
        stack.callback(self.keys.close)
        for close in self._closers:
            stack.push_async_callback(_maybe_await, close)
        await self.host.start()
        stack.push_async_callback(self.host.stop)
        if self.telemetry is not None:
            await self.telemetry.start()
        for start in self._starters:
            await _maybe_await(start)

    async def close(self) -> None:
        stack, self._stack = self._stack, None
        if stack is None:  # never started: close what was built (same order as a started one)
            stack = AsyncExitStack()
            stack.push_async_callback(self.storage.close)
            stack.callback(self.keys.close)
            for close in self._closers:
                stack.push_async_callback(_maybe_await, close)
            stack.push_async_callback(self.host.stop)
        await stack.aclose()


async def _maybe_await(fn: Any) -> None:
    result = fn()
    if inspect.isawaitable(result):
        await result


def build_services(settings: Settings, agent_classes: list[type[Agent]] | None = None) -> Services:
    """Build (but do not start) every room from settings."""
    storage = build_storage(settings)
    keys = KeyStore(settings.data_dir, settings.storage.database, pool_size=max(2, settings.storage.pool_size // 2),
                    connect_timeout=settings.storage.connect_timeout)
    telemetry = setup_telemetry(settings.telemetry, os.environ, install_global=True)
    gateway = Gateway.from_settings(settings.models, env=os.environ)
    # One pipeline (myriad.models.pipeline): identity, then tracing, then admission, then the gateway.
    models: Any = telemetry.instrument_gateway(gateway)
    meter = None
    if settings.metering.enabled:
        from myriad.metering import Meter, gateway_price_version, meter_gateway

        meter = Meter.from_settings(settings)
        prices = None if settings.metering.price_file else gateway_price_version(gateway)
        if prices:
            meter.ensure_prices(prices)  # the deployment file's prices, a new version only when they change
        meter_gateway(gateway, meter, default_max_output=settings.metering.default_max_output_tokens)
    identity = Identity(settings.identity, keys, settings.data_dir)
    # nothing starts until a sandbox opens (or start() recovers what a dead process left);
    # hooks on the room's events, metering outside tracing as for the gateway
    sandboxes = Sandboxes(settings.sandbox, data_dir=settings.data_dir)
    # Identity first: scope checks, the user's credentials and the signature, before metering counts it.
    sandboxes.egress.add_hook(identity.outbound.proxy_hook)
    if meter is not None:
        from myriad.metering import SandboxMetering, egress_hook

        sandboxes.egress.add_hook(egress_hook(meter))
        sandboxes.add_hook(SandboxMetering(meter, live_ttl_s=settings.sandbox.max_lifetime or 86_400.0))
    if (tracing := telemetry.sandbox_hook()) is not None:
        sandboxes.add_hook(tracing)
        telemetry.observe_sandboxes(sandboxes.live_by_tier)
    turn_wrappers: list[Any] = [telemetry.instrument_host()]
    counter = None
    if meter is not None:
        from myriad.metering import TurnMeter, UsageCounter

        counter = UsageCounter(meter)
        turn_wrappers.append(TurnMeter(counter))
    host = AgentHost(storage, settings.agents, models=models, sandboxes=sandboxes, meter=meter,
                     instrumentation=turn_wrappers)
    services = Services(settings=settings, storage=storage, keys=keys, host=host, models=models, meter=meter,
                        sandboxes=sandboxes, telemetry=telemetry)
    services.identity = identity
    services.responses = _responses(settings, models)
    services._closers.append(services.responses.aclose)  # writes the stored responses still buffered
    host.identity = services.identity  # agents reach it as self.identity
    services._closers.append(telemetry.aclose)  # closers run in reverse: telemetry flushes last
    if meter is not None:
        services._closers.append(meter.aclose)  # writes pending settles; runs after the gateway and sandboxes close
    services._closers.append(gateway.aclose)
    if counter is not None:
        services._starters.append(counter.start)
        services._closers.append(counter.stop)  # flushes the last counts before the meter closes
    services._closers.append(sandboxes.aclose)
    services._starters.append(sandboxes.start)
    for cls in agent_classes or []:
        host.register(cls)
    for module in settings.agents_modules:
        for cls in agent_classes_in(load_module(module)):
            host.register(cls)
    return services


def _responses(settings: Settings, models: Any) -> Any:
    from myriad.models.responses import MemoryResponseStore, PostgresResponseStore, Responses, SQLiteResponseStore

    m = settings.models
    if m.responses_store == "memory":
        return Responses(models, MemoryResponseStore(ttl=m.responses_ttl, max_per_tenant=m.responses_max_per_tenant))
    if m.responses_store != "sqlite":
        raise ConfigError(f"models.responses_store must be 'sqlite' or 'memory', not {m.responses_store!r}")
    if settings.storage.database:  # shared with every machine on the database (its tables: migrations)
        return Responses(models, PostgresResponseStore(
            settings.storage.database, ttl=m.responses_ttl, max_per_tenant=m.responses_max_per_tenant,
            pool_size=max(2, settings.storage.pool_size // 4), connect_timeout=settings.storage.connect_timeout))
    return Responses(models, SQLiteResponseStore(settings.data_dir / "responses.db", ttl=m.responses_ttl,
                                                 max_per_tenant=m.responses_max_per_tenant))


def load_module(name: str) -> ModuleType:
    """Import an agents module by dotted name (the working directory is importable)."""
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        raise ConfigError(f"cannot import agents module {name!r}: {e}") from None


def agent_classes_in(module: ModuleType) -> list[type[Agent]]:
    """Every ``Agent`` subclass defined in ``module`` (not merely imported into it)."""
    found = [
        obj for obj in vars(module).values()
        if isinstance(obj, type) and issubclass(obj, Agent) and obj is not Agent and obj.__module__ == module.__name__
    ]
    if not found:
        raise ConfigError(f"module {module.__name__!r} defines no Agent subclass")
    return found


__all__ = ["Services", "build_services", "load_module", "agent_classes_in"]
