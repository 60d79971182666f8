"""One typed settings object, built once at start-up and passed down.

Sources, lowest precedence first: the defaults below, a TOML file (``--config`` or
``MYRIAD_CONFIG``), environment variables, explicit overrides (CLI flags).

Environment names: ``MYRIAD_<FIELD>`` for a top-level field (``MYRIAD_PORT``), and
``MYRIAD_<SECTION>__<FIELD>`` for a field of a section (``MYRIAD_AGENTS__HIBERNATE_AFTER``).
In TOML, sections are tables: ``[agents] hibernate_after = 30``.

Each room's section is a dataclass declared here (``AgentSettings``, ...), so the whole
shape is visible in one file. Nothing here runs at import; rooms never read the
environment themselves.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from myriad.errors import ConfigError


@dataclass
class AgentSettings:
    """The agent runtime (``myriad.agents``)."""

    hibernate_after: float = 10.0
    """Seconds an instance may stay idle in memory before it hibernates."""
    max_resident: int = 50_000
    """Cap on instances held in memory; the least recently used idle ones leave first."""
    max_frame_bytes: int = 1_048_576
    """Largest WebSocket frame accepted; bigger ones close the socket with 1009."""
    frame_rate: float = 100.0
    """Frames per second one WebSocket may send (sustained); past it the server stops
    reading that socket for a while (TCP pushes back on the client), so one flooding
    client cannot starve the others."""
    frame_burst: int = 20
    """Frames one WebSocket may send at once before ``frame_rate`` applies."""
    revalidate_every: float = 10.0
    """Seconds between re-checks of open WebSockets' credentials (a revoked or expired
    one closes its sockets with 4001; revoking through the admin door closes at once)."""
    ping_interval: float = 20.0
    """Seconds between WebSocket pings to each client (RFC 6455 control frames, which
    browsers and ``ws`` answer by themselves): keeps idle sockets open through proxies
    and finds dead peers. 0 turns pings off."""
    ping_timeout: float = 20.0
    """A client that has not answered a ping within this many seconds is closed (1011)."""
    schedule_max_attempts: int = 6
    """A schedule firing that keeps failing is retried this many times, then dropped."""
    schedule_backoff: float = 1.0
    """First retry delay in seconds; doubles per attempt (capped at 5 minutes)."""
    schedule_lease: float = 60.0
    """Seconds a host's claim on a due schedule lasts unless renewed (a third of it, while
    firing): on a shared database, how long the schedules of a host that died wait
    before another host fires them."""


@dataclass
class SandboxSettings:
    """Sandboxes (``myriad.sandbox``); per-sandbox limits may only tighten these."""

    root: str = ""
    """Directory for sandbox workspaces and snapshots; empty means ``<data_dir>/sandboxes``."""
    base: str = "host"
    """Read-only root of the container tier: ``host`` (the host's /usr) or a template directory."""
    cgroup: str = "auto"
    """Resource limits backend: ``auto``, ``v2``, ``v1`` or ``rlimit`` (no cgroups)."""
    cgroup_parent: str = "myriad-sandboxes"
    """Cgroup under which each sandbox root gets a subtree (``<parent>/<hash of root>/``) and each sandbox a group."""
    timeout: float = 30.0
    """Default wall-clock limit of one run/exec, in seconds."""
    memory_mb: int = 512
    """Default memory limit of a container sandbox, in MiB."""
    isolate_memory_mb: int = 64
    """Default hard heap limit of an isolate, in MiB."""
    cpu: float = 1.0
    """Default CPU limit of a container sandbox, in cores."""
    pids: int = 256
    """Default maximum number of processes in a container sandbox."""
    output_bytes: int = 1_048_576
    """Largest output kept from one run (console / stdout / stderr each)."""
    idle_timeout: float = 900.0
    """A container sandbox unused this many seconds is deleted."""
    max_lifetime: float = 86_400.0
    """A container sandbox is deleted this many seconds after creation, used or not."""
    max_containers_per_owner: int = 32
    """Live container sandboxes one owner (tenant or agent) may hold at once."""
    max_snapshots_per_owner: int = 32
    """Snapshots one owner may keep (each is at most one workspace, copied sparsely)."""
    warm_isolates: int = 10_000
    """Isolates kept warm per host (least recently used leave first)."""
    isolate_idle_timeout: float = 60.0
    """A warm isolate unused this many seconds is closed, so agents idle that long
    (hibernated, typically) hold no isolate; their next run starts a fresh one."""
    seccomp: bool = True
    """Install Myriad's seccomp deny-list in container sandboxes (x86_64 only)."""
    uid_base: int = 200_000
    """When Myriad runs as root, each container sandbox runs as a host uid in [uid_base, uid_base + 65536)."""
    egress_allow_private: list[str] = field(default_factory=list)
    """Non-public addresses, networks or host names sandboxes may reach through the egress
    proxy (e.g. ``["10.1.2.3"]`` for an internal package mirror). An operator decision: a
    sandbox's own ``network.allow_private`` may only name entries covered by this list."""
    isolates_per_tenant: int = 1_000
    """Live isolates one tenant (with all its agents) may hold; past it the tenant's own
    least recently used isolate is closed, never another tenant's."""
    disk_mb: int = 1024
    """Disk quota of one container sandbox (workspace and /tmp together), in MiB; 0 turns it off."""
    disk: str = "auto"
    """Disk quota backend: ``loop`` (an ext4 image per sandbox; needs root), ``fsize`` (a
    per-file size cap only) or ``auto`` (loop where possible)."""


@dataclass
class ModelsSettings:
    """The model gateway (``myriad.models``)."""

    config: str = ""
    """Path to the deployment file (TOML); empty serves the simulated models."""
    responses_store: str = "sqlite"
    """Where ``/v1/responses`` keeps responses: ``sqlite`` (``<data_dir>/responses.db``,
    survives restarts; with ``storage.database`` set, PostgreSQL, shared by every machine)
    or ``memory``."""
    responses_ttl: float = 86400.0
    """Seconds a stored ``/v1/responses`` response stays readable (``previous_response_id``)."""
    responses_max_per_tenant: int = 10000
    """Stored responses kept per tenant (the oldest are dropped first)."""
    mcp_allow_private: bool = False
    """Let ``type: "mcp"`` tools reach MCP servers on private addresses (loopback, RFC 1918):
    an operator's decision for servers on its own network, never a tenant's."""
    mcp_max_rounds: int = 8
    """Model turns one request may spend calling ``type: "mcp"`` tools before it answers."""
    mcp_timeout: float = 30.0
    """Seconds the gateway waits for one MCP server request."""


@dataclass
class MeteringSettings:
    """Usage metering, prices and budgets (``myriad.metering``)."""

    enabled: bool = True
    """Meter model calls and sandbox runs (budgets and limits are enforced only when on)."""
    ledger_url: str = ""
    """Ledger location; empty means ``sqlite:///<data_dir>/metering.db``."""
    synchronous: str = "NORMAL"
    """SQLite synchronous mode: NORMAL survives a killed process, FULL also power loss."""
    reservation_ttl: float = 900.0
    """Seconds before an unsettled reservation (its holder died) is released."""
    price_file: str = ""
    """JSON or TOML price book loaded at start-up (versions not yet in the ledger are appended)."""
    default_max_output_tokens: int = 4096
    """Output tokens reserved for a model call that sets no max_tokens."""
    settle_in_background: bool = False
    """Write actual usage after the call returns, batched (~0.3-0.6 ms less per model call);
    a crash can then lose the last moments' usage records (holds still expire safely).
    Only for a shared ledger: an owned one (``shared_ledger = false``) always does this."""
    shared_ledger: bool = False
    """Whether other processes admit against the same SQLite ledger file. False (one
    ``myriad serve`` owns its data directory): budgets, limits and holds are kept in
    memory and settled usage is written in group commits every ``flush_interval``;
    ``kill -9`` can lose at most that window's usage events (see docs/metering.md).
    True: every admission is a SQLite transaction (atomic across processes)."""
    flush_interval: float = 0.02
    """Seconds between group commits of settled usage when the ledger is owned."""


@dataclass
class TelemetrySettings:
    """OpenTelemetry and the local dashboard (``myriad.telemetry``). Exporters, endpoints
    and sampling come from the standard ``OTEL_*`` variables (see docs/telemetry.md)."""

    enabled: bool = True
    """Trace and measure (``OTEL_SDK_DISABLED=true`` turns it off as well)."""
    service_name: str = "myriad"
    """``service.name`` when ``OTEL_SERVICE_NAME`` is not set."""
    capture_content: bool = False
    """Record prompts and replies on spans (redacted); also ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``."""
    store_spans: int = 5_000
    """Finished spans kept in memory for the dashboard (oldest dropped first)."""
    store_minutes: int = 1440
    """Minutes of per-minute token and cost rollups kept for the dashboard charts."""
    exclude_paths: list[str] = field(default_factory=lambda: ["/healthz", "/dashboard"])
    """HTTP path prefixes that get no server span."""


@dataclass
class IdentitySettings:
    """Tokens, workload identities, the credential vault and signed requests (``myriad.identity``)."""

    trust_domain: str = "myriad.local"
    """SPIFFE trust domain of agent identities (``spiffe://{trust_domain}/tenant/...``)."""
    issuer: str = "http://127.0.0.1:8787"
    """``iss`` of the tokens Myriad mints; also the base of its well-known URLs."""
    secret_key: str = ""
    """Base64url 32-byte key that encrypts the vault and private signing keys at rest.
    Empty: one is generated once into ``<data_dir>/identity.key`` (mode 0600)."""
    agent_token_ttl: float = 300.0
    """Lifetime in seconds of an agent's workload token."""
    delegated_token_ttl: float = 300.0
    """Upper bound in seconds on a token from the token endpoint (never beyond its subject's)."""
    key_rotation: float = 86_400.0
    """Seconds a signing key signs before a new one takes over (old ones stay published until their tokens expire)."""
    user_issuer: str = ""
    """``iss`` of users' JWTs from the application's identity provider; empty accepts none."""
    user_jwks_url: str = ""
    """JWKS URL of that issuer (fetched, cached, refetched on an unknown ``kid``)."""
    user_audience: str = ""
    """Required ``aud`` of users' JWTs (empty: not checked)."""
    user_tenant_claim: str = "tenant"
    """Claim naming the user's tenant; when absent, ``user_default_tenant`` applies."""
    user_default_tenant: str = ""
    """Tenant of users whose JWT has no tenant claim (empty: such tokens are refused)."""
    user_scopes: str = "agents models"
    """Scopes of a user arriving with a JWT that carries no ``scope`` claim."""
    signature_agent: str = ""
    """``Signature-Agent`` value of outbound signed requests; empty means ``issuer``."""
    signature_agent_legacy: bool = False
    """Send the older bare-string ``Signature-Agent`` form instead of the working-group
    draft's dictionary form (``sig1="..."``), for verifiers that still expect it."""


@dataclass
class StorageSettings:
    """Where durable state lives (``myriad.storage``)."""

    database: str | None = None
    """PostgreSQL URL (``postgresql://user@host/db``) for agents, schedules, per-agent SQL
    and the other stores; None keeps everything in SQLite files under ``data_dir``.
    Also ``--database`` and ``MYRIAD_DATABASE``."""
    pool_size: int = 10
    """Most connections one process holds to the database."""
    connect_timeout: float = 5.0
    """Seconds to wait for a connection before a request fails with 503."""
    synchronous_commit: str = "on"
    """PostgreSQL ``synchronous_commit`` of the runtime's writes: ``on`` waits for the
    server's WAL fsync (survives the database machine losing power); ``off`` returns
    once the server has the commit (survives the loss of Myriad's machine, like SQLite's
    default; a database crash can lose its last fraction of a second)."""


@dataclass
class Settings:
    """Everything Myriad can be configured with."""

    data_dir: Path = Path(".myriad")
    host: str = "127.0.0.1"
    port: int = 8787
    agents_modules: list[str] = field(default_factory=list)
    log_level: str = "info"
    header_timeout: float = 10.0
    """Seconds a connection may take to send a request's headers (slow clients cost little)."""
    body_timeout: float = 30.0
    """Longest pause, in seconds, between two pieces of a request body."""
    gc_threshold: list[int] = field(default_factory=lambda: [50_000, 50, 100])
    """``gc.set_threshold`` for the server process (empty: Python's 700,10,10). Fewer,
    rarer collections: with 2,000 sessions the default's gen-2 pauses put p99 at
    334 ms, these at 112 ms (``myriad bench density``)."""
    agents: AgentSettings = field(default_factory=AgentSettings)
    models: ModelsSettings = field(default_factory=ModelsSettings)
    metering: MeteringSettings = field(default_factory=MeteringSettings)
    identity: IdentitySettings = field(default_factory=IdentitySettings)
    sandbox: SandboxSettings = field(default_factory=SandboxSettings)
    telemetry: TelemetrySettings = field(default_factory=TelemetrySettings)
    storage: StorageSettings = field(default_factory=StorageSettings)

    @classmethod
    def load(
        cls,
        config_file: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> "Settings":
        """Build settings from a TOML file, the environment and explicit overrides."""
        env = os.environ if env is None else env
        settings = cls()
        path = config_file or env.get("MYRIAD_CONFIG")
        if path:
            _apply_toml(settings, Path(path))
        _apply_env(settings, env)
        for name, value in overrides.items():
            if value is not None:
                _set(settings, name, value, source="argument")
        return settings


def _apply_toml(settings: Settings, path: Path) -> None:
    from myriad import safe_json

    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    data = safe_json.config_loads(raw, f"config file {path}")  # depth, NaN/inf: ConfigError
    _apply_mapping(settings, data, source=str(path))


def _apply_mapping(target: Any, data: Mapping[str, Any], source: str, prefix: str = "") -> None:
    fields = {f.name: f for f in dataclasses.fields(target)}
    for key, value in data.items():
        f = fields.get(key)
        if f is None:
            raise ConfigError(f"{source}: unknown setting {prefix}{key!r}")
        current = getattr(target, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {prefix}{key} must be a table")
            _apply_mapping(current, value, source, prefix=f"{prefix}{key}.")
        else:
            _set(target, key, value, source=source, label=f"{prefix}{key}")


def _apply_env(settings: Settings, env: Mapping[str, str]) -> None:
    for name, raw in env.items():
        if not name.startswith("MYRIAD_") or name == "MYRIAD_CONFIG":
            continue
        parts = name[len("MYRIAD_"):].lower().split("__")
        if parts == ["database"]:  # the short spelling of MYRIAD_STORAGE__DATABASE
            parts = ["storage", "database"]
        target: Any = settings
        for section in parts[:-1]:
            target = getattr(target, section, None)
            if not dataclasses.is_dataclass(target):
                target = None
                break
        if target is None or parts[-1] not in {f.name for f in dataclasses.fields(target)}:
            continue  # not ours (other tools share the prefix rarely; ignore quietly)
        _set(target, parts[-1], raw, source=f"environment variable {name}")


def _set(target: Any, name: str, value: Any, source: str, label: str | None = None) -> None:
    hints = typing.get_type_hints(type(target))
    if name not in hints:
        raise ConfigError(f"{source}: unknown setting {label or name!r}")
    setattr(target, name, _coerce(hints[name], value, f"{source}: {label or name}"))


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    try:
        if hint is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if hint in (int, float, str):
            if hint is not str and isinstance(value, bool):
                raise ValueError(value)
            return hint(value)
        if hint is Path:
            return Path(value)
        if hint == (str | None):
            return None if value is None else str(value)
        if origin is list:
            (item,) = typing.get_args(hint) or (str,)
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            return [item(v) for v in value]
    except (TypeError, ValueError):
        raise ConfigError(f"{where} must be {getattr(hint, '__name__', hint)}, got {value!r}") from None
    return value


__all__ = ["Settings", "AgentSettings", "SandboxSettings", "ModelsSettings", "MeteringSettings", "IdentitySettings",
           "TelemetrySettings", "StorageSettings"]
