"""The ``myriad`` command: serve agents, run benchmarks, manage tenants and keys."""

from __future__ import annotations

import argparse
import importlib
import logging
import re
import sys
from pathlib import Path
from typing import Any, Callable

from myriad import __version__
from myriad.errors import MyriadError

DESCRIPTION = """\
Myriad: durable, addressable one-to-one AI agents on few machines.

  myriad serve --agents examples.counter      serve every Agent class in a module
  myriad tenants create acme                  add a tenant
  myriad keys create --tenant acme            make an API key (printed last)
  myriad bench hibernation --agents 100000    measure; prints a table and one JSON line

Settings come from flags, MYRIAD_* environment variables and an optional TOML
file (--config); see docs/configuration in the README.
"""


def _settings(args: argparse.Namespace, **overrides: Any) -> Any:
    from myriad.settings import Settings

    return Settings.load(
        getattr(args, "config", None),
        data_dir=getattr(args, "data_dir", None),
        **overrides,
    )


# -- serve -----------------------------------------------------------------------

def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from myriad.server import build_services, create_app
    from myriad.server.bootstrap import ensure_default_tenant, secure_data_dir

    modules = [m for spec in (args.agents or []) for m in spec.split(",") if m]
    settings = _settings(args, host=args.host, port=args.port, agents_modules=modules or None)
    if args.hibernate_after is not None:
        settings.agents.hibernate_after = args.hibernate_after
    if args.database:
        settings.storage.database = args.database
    if getattr(args, "cluster", None):
        from myriad.cluster._cli import run_serve

        return run_serve(args, settings)
    step = _Steps()
    if settings.storage.database:  # here, so a bad URL or a down server is one clear line
        from myriad.server.database import migrate_database

        step(f"migrating database {_redact(settings.storage.database)}")
        migrate_database(settings.storage.database, settings.storage.connect_timeout)
    step("loading agent modules " + (", ".join(settings.agents_modules) or "(none)"))
    secure_data_dir(settings.data_dir)  # before anything writes there
    services = build_services(settings)
    step(f"opening data directory {settings.data_dir.resolve()}")
    key_note = ensure_default_tenant(services.keys, settings.data_dir)
    app = create_app(services)
    url = f"http://{settings.host}:{settings.port}"
    classes = ", ".join(f"/agents/{k}/{{name}}" for k in sorted(services.host.classes)) or "(no agents: pass --agents MODULE)"
    banner = [
        "",
        f"  Myriad {__version__} serving on {url}",
        f"  agents:    {classes}",
        f"  data:      {settings.data_dir.resolve()}",
        *([f"  database:  {_redact(settings.storage.database)}"] if settings.storage.database else []),
        "  models:    " + (f"deployments from {settings.models.config}" if settings.models.config
                          else "SIMULATED (no provider configured: set MYRIAD_MODELS__CONFIG to a deployment file)"),
        f"  API key:   {key_note}",
        f"  try:       curl -H \"Authorization: Bearer $(cat {settings.data_dir / 'default.key'})\" {url}/v1/agents",
        f"  dashboard: {url}/dashboard?token=<API key>   (then a cookie keeps you signed in)",
        "",
    ]
    print("\n".join(banner), flush=True)
    from myriad.server.slow_clients import guarded_http_protocol

    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=guarded_http_protocol(settings.header_timeout, settings.body_timeout),
        log_level=settings.log_level,
        ws_max_size=settings.agents.max_frame_bytes,
        ws_ping_interval=settings.agents.ping_interval or None,
        ws_ping_timeout=settings.agents.ping_timeout or None,
        lifespan="on",
    )
    for name in ("uvicorn.access", "uvicorn.error"):  # uvicorn logs WebSocket handshakes on .error
        logging.getLogger(name).addFilter(_RedactTokens())
    # Server.run, not asyncio.run(serve()): it applies uvicorn's loop setup (uvloop when installed)
    uvicorn.Server(config).run()
    return 0


class _RedactTokens(logging.Filter):
    """Keys travel as ``?token=`` on WebSockets and the dashboard's first load; the
    access log must not keep them."""

    _pattern = re.compile(r"(token=)[^&\s\"]+")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = tuple(self._pattern.sub(r"\1[redacted]", a) if isinstance(a, str) else a
                                for a in record.args)
        return True


class _Steps:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self, text: str) -> None:
        self.n += 1
        print(f"[{self.n}] {text}", flush=True)


def _redact(url: str) -> str:
    from myriad.storage.postgres import redact

    return redact(url)


# -- db ----------------------------------------------------------------------------

def cmd_db_migrate(args: argparse.Namespace) -> int:
    from myriad.server.database import migrate_database

    settings = _settings(args)
    url = args.database or settings.storage.database
    if not url:
        print("myriad: error: no database: pass --database postgresql://... or set MYRIAD_DATABASE "
              "(the embedded SQLite files need no migrating)", file=sys.stderr)
        return 2
    applied = migrate_database(url, settings.storage.connect_timeout)
    for component, versions in applied.items():
        done = f"applied {', '.join(map(str, versions))}" if versions else "up to date"
        print(f"{component:<12} {done}")
    return 0


def cmd_db_copy(args: argparse.Namespace) -> int:
    from myriad.server.dbcopy import copy_database

    settings = _settings(args)
    url = args.database or settings.storage.database
    if not url:
        print("myriad: error: no database: pass --to postgresql://... (or set MYRIAD_DATABASE)", file=sys.stderr)
        return 2
    source = Path(args.source) if args.source else settings.data_dir
    report = copy_database(source, url, timeout=settings.storage.connect_timeout)
    print(f"copied {source} into {_redact(url)}")
    for line in report.lines():
        print(f"  {line}")
    print(f"note: the vault and signing keys open only with the same identity key: copy {source / 'identity.key'} into "
          "every machine's data directory, or set identity.secret_key (MYRIAD_IDENTITY__SECRET_KEY) everywhere")
    return 0


# -- tenants and keys ------------------------------------------------------------

def _keystore(args: argparse.Namespace) -> Any:
    from myriad.identity import KeyStore

    settings = _settings(args)
    store = KeyStore(settings.data_dir, settings.storage.database, connect_timeout=settings.storage.connect_timeout)
    store.open()
    return store


def cmd_tenants_create(args: argparse.Namespace) -> int:
    _keystore(args).create_tenant(args.name)
    print(f"created tenant {args.name}")
    return 0


def cmd_tenants_list(args: argparse.Namespace) -> int:
    for name in _keystore(args).list_tenants():
        print(name)
    return 0


def cmd_keys_create(args: argparse.Namespace) -> int:
    info, plaintext = _keystore(args).create_key(args.tenant, label=args.label or "", ttl=args.ttl,
                                                 scopes=args.scopes or "*")
    print(f"created key {info.id} for tenant {info.tenant}" + (f" (expires in {args.ttl:g}s)" if args.ttl else ""))
    print("store it now: it is not shown again", file=sys.stderr)
    print(plaintext)
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    import time

    for k in _keystore(args).list_keys(args.tenant):
        status = "revoked" if k.revoked else ("expired" if k.expires and k.expires < time.time() else "active")
        print(f"{k.id}  {k.tenant:<20} {status:<8} {k.scopes:<24} {k.label}")
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    _keystore(args).revoke_key(args.key_id)
    print(f"revoked key {args.key_id}")
    return 0


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    info, plaintext = _keystore(args).rotate_key(args.key_id, grace=args.grace)
    ends = f"in {args.grace:g}s" if args.grace else "now"
    print(f"rotated key {args.key_id} -> {info.id} (the old key stops working {ends})")
    print("store it now: it is not shown again", file=sys.stderr)
    print(plaintext)
    return 0


# -- bench -----------------------------------------------------------------------

def _add_bench(sub: Any) -> None:
    from myriad.bench import BENCHES

    bench = sub.add_parser("bench", help="run a benchmark (prints a table and one JSON line)",
                           description="Benchmarks measure their baseline in the same run; quote medians and ratios.")
    names = bench.add_subparsers(dest="bench", metavar="NAME", required=True)
    for name, module in BENCHES.items():
        mod = importlib.import_module(module)
        p = names.add_parser(name, help=mod.DESCRIPTION.splitlines()[0], description=mod.DESCRIPTION,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(func=_bench_runner(mod))


def _bench_runner(mod: Any) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from myriad.bench.report import emit_json

        result = mod.run(args)
        emit_json(result)
        from myriad.bench.capacity import save_result

        save_result(result)  # for `myriad capacity`
        return 0

    return run


# -- parser ----------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="myriad", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"myriad {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", type=Path, help="where state lives (default .myriad, env MYRIAD_DATA_DIR)")
    common.add_argument("--config", help="TOML settings file (env MYRIAD_CONFIG)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = sub.add_parser("serve", parents=[common], help="serve agents over HTTP and WebSocket",
                           description="Serve every Agent subclass of the given modules at /agents/{class}/{name}.")
    serve.add_argument("--agents", action="append", metavar="MODULE",
                       help="dotted module with Agent classes (repeat or comma-separate)")
    serve.add_argument("--host", help="interface to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8787)")
    serve.add_argument("--hibernate-after", type=float, help="seconds idle before an instance hibernates (default 10)")
    serve.add_argument("--database", metavar="URL",
                       help="PostgreSQL URL for all durable state (env MYRIAD_DATABASE; default: SQLite in --data-dir)")
    serve.set_defaults(func=cmd_serve)
    from myriad.cluster._cli import add_commands as add_cluster_commands, add_serve_arguments as add_cluster_arguments

    add_cluster_arguments(serve)
    add_cluster_commands(sub, _settings)

    db = sub.add_parser("db", help="the shared PostgreSQL database").add_subparsers(dest="verb", required=True,
                                                                                   metavar="VERB")
    dm = db.add_parser("migrate", parents=[common], help="create or upgrade every component's tables")
    dm.add_argument("--database", metavar="URL", help="PostgreSQL URL (default: MYRIAD_DATABASE / [storage] database)")
    dm.set_defaults(func=cmd_db_migrate)
    dc = db.add_parser("copy", parents=[common], help="move an embedded deployment (SQLite files) into PostgreSQL")
    dc.add_argument("--from", dest="source", metavar="DIR", help="the data directory to copy (default: --data-dir)")
    dc.add_argument("--to", dest="database", metavar="URL", help="PostgreSQL URL (default: MYRIAD_DATABASE / [storage] database)")
    dc.set_defaults(func=cmd_db_copy)

    tenants = sub.add_parser("tenants", help="manage tenants").add_subparsers(dest="verb", required=True, metavar="VERB")
    t = tenants.add_parser("create", parents=[common], help="create a tenant")
    t.add_argument("name")
    t.set_defaults(func=cmd_tenants_create)
    tenants.add_parser("list", parents=[common], help="list tenants").set_defaults(func=cmd_tenants_list)

    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(dest="verb", required=True, metavar="VERB")
    k = keys.add_parser("create", parents=[common], help="create a key (printed as the last line)")
    k.add_argument("--tenant", required=True)
    k.add_argument("--label")
    k.add_argument("--ttl", type=float, help="seconds until the key expires")
    k.add_argument("--scopes", help="space-separated scopes, e.g. 'agents models:gpt-4o-mini usage' (default *)")
    k.set_defaults(func=cmd_keys_create)
    kl = keys.add_parser("list", parents=[common], help="list keys (never the secrets)")
    kl.add_argument("--tenant")
    kl.set_defaults(func=cmd_keys_list)
    kr = keys.add_parser("revoke", parents=[common], help="revoke a key by id")
    kr.add_argument("key_id")
    kr.set_defaults(func=cmd_keys_revoke)
    kx = keys.add_parser("rotate", parents=[common], help="replace a key by a new one (printed last)")
    kx.add_argument("key_id")
    kx.add_argument("--grace", type=float, default=0.0, help="seconds the old key keeps working (default 0)")
    kx.set_defaults(func=cmd_keys_rotate)

    from myriad.metering import add_usage_arguments, cli_usage

    usage = sub.add_parser("usage", parents=[common], help="usage, spend and budgets; exports and invoices",
                           description="Read the usage ledger: totals, time series, budgets, CloudEvents and "
                                       "billing exports, invoice lines; set budgets and limits.")
    add_usage_arguments(usage)
    usage.set_defaults(func=lambda a: cli_usage(a, _settings(a)))

    _add_bench(sub)
    from myriad.bench.capacity import add_command as add_capacity

    add_capacity(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MyriadError as e:
        print(f"myriad: error: {e.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


__all__ = ["main", "build_parser"]
