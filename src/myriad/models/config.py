"""The gateway's deployment file (TOML), validated at start with errors that name the line.

::

    [router]                      # optional; defaults shown in RouterConfig
    retries = 2
    total_timeout = 60

    [[deployment]]
    model = "fast"                # the alias clients ask for; deployments sharing it form a group
    provider = "openai"           # a registered provider: openai, anthropic, simulated, local
    upstream_model = "gpt-4o-mini"
    base_url = "https://api.openai.com/v1"
    api_key = "env:OPENAI_API_KEY"   # a reference, never the key itself
    price = { input = 0.15, output = 0.60, cached = 0.075 }   # USD per 1M tokens
    context_window = 128000
    rpm = 500
    tpm = 200000
    capabilities = ["tools", "json"]

    [groups.fast]                 # optional per-alias routing
    strategy = "lowest-latency"
    fallbacks = ["smart"]
    context_fallback = "long"

Semantic routes (``[[route]]``), the strong/weak router (``[knn]``) and the cache
(``[cache]``) are parsed here too, so one file describes the whole gateway.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from myriad.errors import ConfigError

SECRET_SCHEMES = ("env", "vault", "secret")
_REF = re.compile(r"^(?P<scheme>[a-z]+):(?P<name>\S+)$")


@dataclass(frozen=True)
class Price:
    """USD per one million tokens."""

    input: float = 0.0
    output: float = 0.0
    cached: float | None = None

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> float:
        cached_rate = self.input if self.cached is None else self.cached
        fresh = max(0, prompt_tokens - cached_tokens)
        return (fresh * self.input + cached_tokens * cached_rate + completion_tokens * self.output) / 1e6


@dataclass(frozen=True)
class Deployment:
    """One place a model alias can be served from."""

    name: str
    model: str
    provider: str
    upstream_model: str
    base_url: str | None = None
    api_key: str | None = None
    """A secret reference (``env:NAME``, ``vault:NAME``), resolved when the provider is built."""
    price: Price = Price()
    context_window: int = 128_000
    rpm: int | None = None
    tpm: int | None = None
    capabilities: frozenset[str] = frozenset()
    weight: float = 1.0
    timeout: float | None = None
    """Per-attempt timeout in seconds (default: the router's ``attempt_timeout``)."""
    kind: str = "chat"
    """``chat`` or ``embedding``."""
    options: Mapping[str, Any] = field(default_factory=dict)
    """Provider-specific extras (e.g. the simulated profile, anthropic_version)."""


@dataclass(frozen=True)
class GroupConfig:
    """Routing for one alias."""

    strategy: str = ""
    """Empty: the router's default strategy."""
    fallbacks: tuple[str, ...] = ()
    context_fallback: str | None = None
    cache: bool | None = None
    """Semantic cache for this alias: True opts in, False opts out, None follows ``[cache]``."""


@dataclass(frozen=True)
class RouterConfig:
    retries: int = 2
    """Passes over the plan after the first one fails, with backoff between passes."""
    backoff: float = 0.05
    """First backoff in seconds; doubles per pass, capped at ``max_backoff``."""
    max_backoff: float = 2.0
    total_timeout: float = 120.0
    attempt_timeout: float = 60.0
    cooldown_failures: int = 3
    """Consecutive failures that open a deployment's circuit."""
    cooldown_seconds: float = 30.0
    max_retry_after: float = 30.0
    """A Retry-After longer than this is not waited for: the caller gets the 429."""
    default_strategy: str = "weighted"
    default_model: str | None = None
    default_embedding_model: str | None = None


@dataclass(frozen=True)
class RouteConfig:
    """A semantic route: prompts like these go to ``model``."""

    name: str
    model: str
    utterances: tuple[str, ...]


@dataclass(frozen=True)
class KnnConfig:
    strong: str
    weak: str
    k: int = 10
    embedding_model: str | None = None
    min_outcomes: int = 20
    """Below this many recorded outcomes a tenant's router explores (strong at the target share, by hash)."""


@dataclass(frozen=True)
class CacheConfig:
    enabled: bool = False
    """On for every single-turn request; otherwise only where a request or route opts in."""
    threshold: float = 0.95
    ttl: float = 3600.0
    max_entries: int = 10_000
    embedding_model: str | None = None


@dataclass(frozen=True)
class GatewayConfig:
    deployments: tuple[Deployment, ...]
    groups: Mapping[str, GroupConfig] = field(default_factory=dict)
    router: RouterConfig = RouterConfig()
    routes: tuple[RouteConfig, ...] = ()
    route_threshold: float | None = None
    """Similarity a prompt needs to take a route; None ("auto") calibrates it from the utterances."""
    route_default: str | None = None
    route_model: str = "auto"
    """The model name that asks the semantic router to choose."""
    route_embedding_model: str | None = None
    knn: KnnConfig | None = None
    cache: CacheConfig = CacheConfig()

    @classmethod
    def load(cls, path: str | Path) -> "GatewayConfig":
        """Read and validate a TOML deployment file."""
        p = Path(path)
        try:
            text = p.read_text()
        except FileNotFoundError:
            raise ConfigError(f"model config {p} does not exist") from None
        return cls.from_toml(text, source=str(p))

    @classmethod
    def from_toml(cls, text: str, source: str = "<models config>") -> "GatewayConfig":
        from myriad.safe_json import config_loads

        data = config_loads(text, source)  # also refuses deep nesting, nan and inf
        return _Parser(data, text, source).parse()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<models config>") -> "GatewayConfig":
        return _Parser(dict(data), "", source).parse()


# ------------------------------------------------------------------ parsing

_DEPLOYMENT_KEYS = {
    "name", "model", "provider", "upstream_model", "base_url", "api_key", "price", "context_window",
    "rpm", "tpm", "capabilities", "weight", "timeout", "kind", "options",
}
_PRICE_KEYS = {"input", "output", "cached"}
_KINDS = ("chat", "embedding")


class _Parser:
    def __init__(self, data: dict[str, Any], text: str, source: str) -> None:
        self.data, self.source = data, source
        self.lines = text.splitlines()

    # -- line lookup: tomllib has no positions, so find the key under its table by scanning

    def line_of(self, table: str, index: int | None, key: str | None) -> int | None:
        header = re.compile(r"^\s*\[\[\s*" + re.escape(table) + r"\s*\]\]" if index is not None
                            else r"^\s*\[\s*" + re.escape(table) + r"\s*\]")
        any_header = re.compile(r"^\s*\[")
        seen, start = -1, None
        for i, line in enumerate(self.lines):
            if header.match(line):
                seen += 1
                if index is None or seen == index:
                    start = i
                    break
        if start is None:
            return None
        if key is None:
            return start + 1
        keyre = re.compile(r"^\s*" + re.escape(key) + r"\s*=")
        for j in range(start + 1, len(self.lines)):
            if any_header.match(self.lines[j]):
                break
            if keyre.match(self.lines[j]):
                return j + 1
        return start + 1

    def fail(self, msg: str, table: str, index: int | None = None, key: str | None = None) -> ConfigError:
        line = self.line_of(table, index, key)
        where = f"{self.source}, line {line}" if line else self.source
        return ConfigError(f"{where}: {msg}")

    # -- typed getters

    def get(self, d: Mapping[str, Any], key: str, types: Any, default: Any, table: str, index: int | None,
            label: str) -> Any:
        if key not in d:
            return default
        v = d[key]
        ok = isinstance(v, types) and not (isinstance(v, bool) and bool not in _as_tuple(types))
        if not ok:
            raise self.fail(f"{label}.{key} must be {_type_name(types)}, got {v!r}", table, index, key)
        return v

    def parse(self) -> GatewayConfig:
        known = {"router", "deployment", "groups", "route", "routes", "knn", "cache"}
        for k in self.data:
            if k not in known:
                raise self.fail(f"unknown section {k!r} (expected one of {sorted(known)})", k, None, None)
        router = self.parse_router()
        deps = self.parse_deployments()
        aliases = {d.model for d in deps}
        groups = self.parse_groups(aliases)
        routes, threshold, default = self.parse_routes(aliases)
        knn = self.parse_knn(aliases)
        cache = self.parse_cache()
        for name, target in (("default_model", router.default_model),
                             ("default_embedding_model", router.default_embedding_model)):
            if target is not None and target not in aliases:
                raise self.fail(f"router.{name} {target!r} is not a deployed model", "router", None, name)
        embedding = {d.model for d in deps if d.kind == "embedding"}
        for table, key, value in (("routes", "embedding_model", self.route_embedding_model),
                                  ("knn", "embedding_model", knn.embedding_model if knn else None),
                                  ("cache", "embedding_model", cache.embedding_model),
                                  ("router", "default_embedding_model", router.default_embedding_model)):
            if value is not None and value not in embedding:
                raise self.fail(f"{table}.{key} {value!r} is not a deployed embedding model", table, None, key)
        needs_embedding = routes or knn or cache.enabled or any(g.cache for g in groups.values())
        if needs_embedding and not embedding:
            raise self.fail("semantic routes, the knn router and the cache need an embedding model: add a "
                            "[[deployment]] with kind = \"embedding\" (provider \"local\" runs MiniLM here)",
                            "route" if routes else "knn" if knn else "cache")
        return GatewayConfig(tuple(deps), groups, router, routes, threshold, default, self.route_model,
                             self.route_embedding_model, knn, cache)

    def parse_router(self) -> RouterConfig:
        raw = self.data.get("router", {})
        if not isinstance(raw, dict):
            raise self.fail("[router] must be a table", "router")
        fields = RouterConfig.__dataclass_fields__
        kw: dict[str, Any] = {}
        for k, v in raw.items():
            if k not in fields:
                raise self.fail(f"unknown router setting {k!r}", "router", None, k)
            default = getattr(RouterConfig(), k)
            types: Any = (int, float) if isinstance(default, (int, float)) and not isinstance(default, bool) else str
            val = self.get(raw, k, types, default, "router", None, "router")
            if isinstance(default, (int, float)) and val < 0:
                raise self.fail(f"router.{k} must not be negative", "router", None, k)
            kw[k] = int(val) if isinstance(default, int) and not isinstance(default, bool) else val
        return RouterConfig(**kw)

    def parse_deployments(self) -> list[Deployment]:
        from myriad.models.providers import PROVIDERS

        raw = self.data.get("deployment", [])
        if not isinstance(raw, list):
            raise self.fail("deployment must be an array of tables: write [[deployment]]", "deployment")
        out: list[Deployment] = []
        names: set[str] = set()
        for i, d in enumerate(raw):
            t, lab = "deployment", f"deployment #{i + 1}"
            for k in d:
                if k not in _DEPLOYMENT_KEYS:
                    raise self.fail(f"unknown key {k!r} in {lab}", t, i, k)
            for req in ("model", "provider"):
                if req not in d:
                    raise self.fail(f"{lab} needs {req!r}", t, i, None)
            model = self.get(d, "model", str, None, t, i, lab)
            provider = self.get(d, "provider", str, None, t, i, lab)
            if provider not in PROVIDERS:
                raise self.fail(f"{lab}: unknown provider {provider!r} (known: {', '.join(sorted(PROVIDERS))})",
                                t, i, "provider")
            name = self.get(d, "name", str, f"{model}#{i + 1}", t, i, lab)
            if name in names:
                raise self.fail(f"two deployments are named {name!r}", t, i, "name")
            names.add(name)
            key = self.get(d, "api_key", str, None, t, i, lab)
            if key is not None:
                m = _REF.match(key)
                if not m or m["scheme"] not in SECRET_SCHEMES:
                    raise self.fail(f"{lab}: api_key must be a reference like \"env:OPENAI_API_KEY\" "
                                    f"({'/'.join(SECRET_SCHEMES)}:NAME), never the key itself", t, i, "api_key")
            price_raw = self.get(d, "price", dict, {}, t, i, lab)
            for k, v in price_raw.items():
                if k not in _PRICE_KEYS or isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                    raise self.fail(f"{lab}: price.{k} must be one of {sorted(_PRICE_KEYS)} with a "
                                    f"non-negative number (USD per 1M tokens), got {v!r}", t, i, "price")
            ctx = self.get(d, "context_window", int, 128_000, t, i, lab)
            if ctx <= 0:
                raise self.fail(f"{lab}: context_window must be positive", t, i, "context_window")
            kind = self.get(d, "kind", str, "chat", t, i, lab)
            if kind not in _KINDS:
                raise self.fail(f"{lab}: kind must be one of {_KINDS}, got {kind!r}", t, i, "kind")
            caps = self.get(d, "capabilities", list, [], t, i, lab)
            if not all(isinstance(c, str) for c in caps):
                raise self.fail(f"{lab}: capabilities must be a list of strings", t, i, "capabilities")
            weight = self.get(d, "weight", (int, float), 1.0, t, i, lab)
            if weight < 0:
                raise self.fail(f"{lab}: weight must not be negative", t, i, "weight")
            timeout = self.get(d, "timeout", (int, float), None, t, i, lab)
            if timeout is not None and timeout <= 0:
                raise self.fail(f"{lab}: timeout must be positive", t, i, "timeout")
            for lim in ("rpm", "tpm"):
                v = self.get(d, lim, int, None, t, i, lab)
                if v is not None and v <= 0:
                    raise self.fail(f"{lab}: {lim} must be positive", t, i, lim)
            out.append(Deployment(
                name=name, model=model, provider=provider,
                upstream_model=self.get(d, "upstream_model", str, model, t, i, lab),
                base_url=self.get(d, "base_url", str, None, t, i, lab),
                api_key=key,
                price=Price(float(price_raw.get("input", 0)), float(price_raw.get("output", 0)),
                            None if "cached" not in price_raw else float(price_raw["cached"])),
                context_window=ctx, rpm=d.get("rpm"), tpm=d.get("tpm"), capabilities=frozenset(caps),
                weight=float(weight), timeout=None if timeout is None else float(timeout), kind=kind,
                options=self.get(d, "options", dict, {}, t, i, lab),
            ))
        return out

    def parse_groups(self, aliases: set[str]) -> dict[str, GroupConfig]:
        from myriad.models.routing import STRATEGIES

        raw = self.data.get("groups", {})
        if not isinstance(raw, dict):
            raise self.fail("groups must be tables: write [groups.ALIAS]", "groups")
        out = {}
        for alias, g in raw.items():
            t = f"groups.{alias}"
            if alias not in aliases:
                raise self.fail(f"[groups.{alias}] names no deployed model", t)
            for k in g:
                if k not in ("strategy", "fallbacks", "context_fallback", "cache"):
                    raise self.fail(f"unknown key {k!r} in [groups.{alias}]", t, None, k)
            strategy = self.get(g, "strategy", str, "", t, None, t)
            if strategy and strategy not in STRATEGIES:
                raise self.fail(f"unknown strategy {strategy!r} (known: {', '.join(sorted(STRATEGIES))})",
                                t, None, "strategy")
            fallbacks = self.get(g, "fallbacks", list, [], t, None, t)
            for f in fallbacks:
                if f not in aliases:
                    raise self.fail(f"fallback {f!r} of {alias!r} is not a deployed model", t, None, "fallbacks")
            cf = self.get(g, "context_fallback", str, None, t, None, t)
            if cf is not None and cf not in aliases:
                raise self.fail(f"context_fallback {cf!r} is not a deployed model", t, None, "context_fallback")
            out[alias] = GroupConfig(strategy, tuple(fallbacks), cf, self.get(g, "cache", bool, None, t, None, t))
        return out

    def parse_routes(self, aliases: set[str]) -> tuple[tuple[RouteConfig, ...], float | None, str | None]:
        opts = self.data.get("routes", {})
        for k in opts:
            if k not in ("threshold", "default", "model", "embedding_model"):
                raise self.fail(f"unknown key {k!r} in [routes]", "routes", None, k)
        raw_thr = opts.get("threshold", "auto")
        if raw_thr == "auto":
            threshold: float | None = None
        elif isinstance(raw_thr, (int, float)) and not isinstance(raw_thr, bool) and -1 <= raw_thr <= 1:
            threshold = float(raw_thr)
        else:
            raise self.fail(f"routes.threshold must be \"auto\" or a cosine similarity in [-1, 1], got {raw_thr!r}",
                            "routes", None, "threshold")
        default = self.get(opts, "default", str, None, "routes", None, "routes")
        if default is not None and default not in aliases:
            raise self.fail(f"routes.default {default!r} is not a deployed model", "routes", None, "default")
        out = []
        for i, r in enumerate(self.data.get("route", [])):
            lab = f"route #{i + 1}"
            for req in ("name", "model", "utterances"):
                if req not in r:
                    raise self.fail(f"{lab} needs {req!r}", "route", i)
            model = self.get(r, "model", str, None, "route", i, lab)
            if model not in aliases:
                raise self.fail(f"{lab}: model {model!r} is not deployed", "route", i, "model")
            utt = self.get(r, "utterances", list, [], "route", i, lab)
            if not utt or not all(isinstance(u, str) and u.strip() for u in utt):
                raise self.fail(f"{lab}: utterances must be a non-empty list of strings", "route", i, "utterances")
            out.append(RouteConfig(self.get(r, "name", str, None, "route", i, lab), model, tuple(utt)))
        self.route_model = self.get(opts, "model", str, "auto", "routes", None, "routes")
        self.route_embedding_model = self.get(opts, "embedding_model", str, None, "routes", None, "routes")
        return tuple(out), threshold, default

    def parse_knn(self, aliases: set[str]) -> KnnConfig | None:
        raw = self.data.get("knn")
        if raw is None:
            return None
        for k in raw:
            if k not in KnnConfig.__dataclass_fields__:
                raise self.fail(f"unknown key {k!r} in [knn]", "knn", None, k)
        for req in ("strong", "weak"):
            v = self.get(raw, req, str, None, "knn", None, "knn")
            if v is None or v not in aliases:
                raise self.fail(f"knn.{req} must name a deployed model, got {v!r}", "knn", None, req)
        return KnnConfig(raw["strong"], raw["weak"], int(self.get(raw, "k", int, 10, "knn", None, "knn")),
                         self.get(raw, "embedding_model", str, None, "knn", None, "knn"),
                         int(self.get(raw, "min_outcomes", int, 20, "knn", None, "knn")))

    def parse_cache(self) -> CacheConfig:
        raw = self.data.get("cache", {})
        kw: dict[str, Any] = {}
        for k in raw:
            if k not in CacheConfig.__dataclass_fields__:
                raise self.fail(f"unknown cache setting {k!r}", "cache", None, k)
        kw["enabled"] = self.get(raw, "enabled", bool, False, "cache", None, "cache")
        th = self.get(raw, "threshold", (int, float), 0.95, "cache", None, "cache")
        if not 0 < th <= 1:
            raise self.fail("cache.threshold must be in (0, 1]", "cache", None, "threshold")
        kw["threshold"] = float(th)
        kw["ttl"] = float(self.get(raw, "ttl", (int, float), 3600.0, "cache", None, "cache"))
        kw["max_entries"] = self.get(raw, "max_entries", int, 10_000, "cache", None, "cache")
        kw["embedding_model"] = self.get(raw, "embedding_model", str, None, "cache", None, "cache")
        return CacheConfig(**kw)


def _as_tuple(t: Any) -> tuple[Any, ...]:
    return t if isinstance(t, tuple) else (t,)


def _type_name(t: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string", list: "a list", dict: "a table",
             bool: "true or false"}
    return " or ".join(names.get(x, x.__name__) for x in _as_tuple(t))


__all__ = ["GatewayConfig", "Deployment", "Price", "GroupConfig", "RouterConfig", "RouteConfig", "KnnConfig",
           "CacheConfig", "SECRET_SCHEMES", "simulated_config"]


def simulated_config(**profile: Any) -> GatewayConfig:
    """What the gateway serves when no real provider is configured: in-process
    simulated models, labelled as such. ``sim-small`` is cheap (the "weak" model),
    ``sim-large`` is pricier with a bigger window (the "strong" one), ``sim-embed``
    embeds. ``profile`` keywords (``ttft``, ``tps``, ...) apply to the chat models."""
    opts = dict(profile)
    return GatewayConfig(
        deployments=(
            Deployment("sim-small", "sim-small", "simulated", "sim-small", price=Price(0.15, 0.6),
                       context_window=16_000, options={**opts, "context_window": 16_000},
                       capabilities=frozenset({"tools", "json"})),
            Deployment("sim-large", "sim-large", "simulated", "sim-large", price=Price(2.5, 10.0),
                       context_window=128_000, options={**opts, "context_window": 128_000},
                       capabilities=frozenset({"tools", "json", "vision"})),
            Deployment("sim-embed", "sim-embed", "simulated", "sim-embed", kind="embedding",
                       price=Price(0.02, 0.0)),
        ),
        groups={"sim-small": GroupConfig(context_fallback="sim-large")},
        router=RouterConfig(default_model="sim-small", default_embedding_model="sim-embed"),
    )
