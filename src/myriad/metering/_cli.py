"""``myriad usage``: reports, exports, prices, budgets and limits from the command line.

The CLI adds the verb with::

    u = sub.add_parser("usage", parents=[common], help="usage, spend, budgets; exports and invoices")
    add_usage_arguments(u)
    u.set_defaults(func=lambda args: cli_usage(args, _settings(args)))

and ``cli_usage`` does the rest, reading the ledger named by ``settings.metering``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable, TextIO

from myriad.errors import InvalidRequest
from myriad.metering._events import Subject, parse_when
from myriad.metering._export import (
    budget_report,
    export_cloudevents,
    invoice_lines,
    meter_events,
    rows_to_csv,
    usage_report,
    write_jsonl,
)
from myriad.metering._limits import LIMIT_KINDS, PERIODS, Budget, Limit, Scope
from myriad.metering._store import UsageQuery

_when = parse_when


def add_usage_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``usage`` sub-verbs and their options to ``parser``."""
    verbs = parser.add_subparsers(dest="usage_verb", metavar="VERB", required=True)

    def report(name: str, help: str) -> argparse.ArgumentParser:
        p = verbs.add_parser(name, help=help)
        p.add_argument("--tenant", required=True)
        p.add_argument("--user")
        p.add_argument("--agent", help="agent path")
        p.add_argument("--since", help="RFC 3339 time or 30m/24h/7d ago")
        p.add_argument("--until", help="RFC 3339 time or 30m/24h/7d ago")
        return p

    for name, help in (("totals", "totals grouped by subject/resource/model"), ("series", "a time series")):
        p = report(name, help)
        p.add_argument("--model")
        p.add_argument("--resource")
        p.add_argument("--by", default="resource,model", help="comma list of tenant,user,agent,resource,model,deployment")
        p.add_argument("--bucket", default="day" if name == "series" else None, choices=["hour", "day", "month"])
        p.add_argument("--format", default="json", choices=["json", "csv"])
    report("budgets", "spend against budgets in their current period")
    report("events", "CloudEvents JSON lines (with cost)")
    p = report("meter-events", "billing-system meter events with idempotency identifiers (JSON lines)")
    p.add_argument("--customer", default="user", choices=["tenant", "user", "agent"])
    p.add_argument("--customer-key", default="customer", help="payload key, e.g. stripe_customer_id")
    p = report("invoice", "invoice lines per customer for --since..--until")
    p.add_argument("--customer", default="user", choices=["tenant", "user", "agent"])

    verbs.add_parser("prices", help="list price versions")
    p = verbs.add_parser("add-prices", help="append price versions from a JSON/TOML file, or one version as JSON")
    p.add_argument("source", help="a file path, or '-' for one version as JSON on stdin")
    p = verbs.add_parser("set-budget", help="create or replace a budget")
    p.add_argument("--tenant", required=True)
    p.add_argument("--user")
    p.add_argument("--agent")
    p.add_argument("--period", default="month", choices=list(PERIODS))
    p.add_argument("--hard", help="refuse past this amount")
    p.add_argument("--soft", help="notice and warn past this amount")
    p.add_argument("--id")
    p = verbs.add_parser("set-limit", help="create or replace a rate or concurrency limit")
    p.add_argument("--tenant", required=True)
    p.add_argument("--user")
    p.add_argument("--agent")
    p.add_argument("--kind", required=True, choices=list(LIMIT_KINDS))
    p.add_argument("--limit", type=int, required=True)
    p.add_argument("--operation", default="*", help="model, sandbox, model.chat, ... or *")
    p.add_argument("--id")
    p = verbs.add_parser("limits", help="list limits")
    p.add_argument("--tenant")
    for what in ("budget", "limit"):
        p = verbs.add_parser(f"delete-{what}", help=f"delete a {what} by id")
        p.add_argument("id")


def cli_usage(args: argparse.Namespace, settings: Any, out: TextIO | None = None) -> int:
    """Run one ``myriad usage`` verb against the ledger in ``settings``; returns the exit code."""
    from myriad.metering._meter import Meter

    out = out or sys.stdout
    meter = Meter.from_settings(settings)
    try:
        return _VERBS[args.usage_verb](meter, args, out)
    finally:
        meter.close()


def _query(args: argparse.Namespace) -> UsageQuery:
    by = tuple(x.strip() for x in (args.by or "").split(",") if x.strip())
    return UsageQuery(args.tenant, user=args.user, agent=args.agent, resource=args.resource, model=args.model,
                      start=_when(args.since), end=_when(args.until), group_by=by, bucket=args.bucket)


def _totals(meter: Any, args: argparse.Namespace, out: TextIO) -> int:
    q = _query(args)
    if args.format == "csv":
        out.write(rows_to_csv(meter.store.totals(q), q.group_by, q.bucket))
    else:
        json.dump(usage_report(meter.store, q), out, indent=2)
        out.write("\n")
    return 0


def _budgets(meter: Any, args: argparse.Namespace, out: TextIO) -> int:
    subject = Subject(args.tenant, args.user, args.agent) if (args.user or args.agent) else None
    json.dump(budget_report(meter.store, args.tenant, subject), out, indent=2)
    out.write("\n")
    return 0


def _events(meter: Any, args: argparse.Namespace, out: TextIO) -> int:
    write_jsonl(export_cloudevents(meter.store, args.tenant, start=_when(args.since), end=_when(args.until)), out)
    return 0


def _meter_events(meter: Any, args: argparse.Namespace, out: TextIO) -> int:
    write_jsonl(meter_events(meter.store, args.tenant, customer=args.customer, customer_key=args.customer_key,
                             start=_when(args.since), end=_when(args.until)), out)
    return 0


def _invoice(meter: Any, args: argparse.Namespace, out: TextIO) -> int:
    start, end = _when(args.since), _when(args.until)
    if start is None or end is None:
        raise InvalidRequest("invoice needs --since and --until")
    json.dump(invoice_lines(meter.store, args.tenant, start=start, end=end, customer=args.customer), out, indent=2)
    out.write("\n")
    return 0


def _prices(meter: Any, args: argparse.Namespace, out: TextIO) -> int:
    json.dump([v.to_json() for v in meter.store.price_book().versions], out, indent=2)
    out.write("\n")
    return 0


def _add_prices(meter: Any, args: argparse.Namespace, out: TextIO) -> int:
    if args.source == "-":
        from myriad import safe_json

        added = [meter.add_prices(safe_json.config_loads(sys.stdin.read(), "stdin", toml=False))]
    else:
        added = meter.load_prices(args.source)
    for v in added:
        out.write(json.dumps(v.to_json()) + "\n")
    return 0


def _set_budget(meter: Any, args: argparse.Namespace, out: TextIO) -> int:
    kw = {"id": args.id} if args.id else {}
    b = meter.set_budget(Budget(Scope(args.tenant, args.user, args.agent), args.period, args.hard, args.soft, **kw))
    out.write(json.dumps(b.to_json()) + "\n")
    return 0


def _set_limit(meter: Any, args: argparse.Namespace, out: TextIO) -> int:
    kw = {"id": args.id} if args.id else {}
    lim = meter.set_limit(Limit(Scope(args.tenant, args.user, args.agent), args.kind, args.limit, args.operation, **kw))
    out.write(json.dumps(lim.to_json()) + "\n")
    return 0


def _limits(meter: Any, args: argparse.Namespace, out: TextIO) -> int:
    json.dump([lim.to_json() for lim in meter.store.limits(args.tenant)], out, indent=2)
    out.write("\n")
    return 0


def _delete_budget(meter: Any, args: argparse.Namespace, out: TextIO) -> int:
    meter.store.delete_budget(args.id)
    return 0


def _delete_limit(meter: Any, args: argparse.Namespace, out: TextIO) -> int:
    meter.store.delete_limit(args.id)
    return 0


_VERBS: dict[str, Callable[[Any, argparse.Namespace, TextIO], int]] = {
    "totals": _totals,
    "series": _totals,
    "budgets": _budgets,
    "events": _events,
    "meter-events": _meter_events,
    "invoice": _invoice,
    "prices": _prices,
    "add-prices": _add_prices,
    "set-budget": _set_budget,
    "set-limit": _set_limit,
    "limits": _limits,
    "delete-budget": _delete_budget,
    "delete-limit": _delete_limit,
}

__all__ = ["add_usage_arguments", "cli_usage"]
