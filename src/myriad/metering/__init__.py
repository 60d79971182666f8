"""Metering: usage events, the ledger, prices, budgets with atomic reservations, limits, export.

The public surface (everything else in this room is private)::

    from myriad.metering import Meter, Subject, Usage, Budget, Limit, Scope

    meter = Meter.open("sqlite:///data/metering.db")
    meter.add_prices({"currency": "USD", "prices": [
        {"resource": "model.output_tokens", "model": "gpt-x", "unit_price": "0.60", "per": 1000000}]})
    meter.set_budget(Budget(Scope("acme"), "month", hard="100.00"))
    async with meter.reserve(Subject("acme", "ann"), Usage.tokens_of("gpt-x", input=900, output=512)) as r:
        r.commit(Usage.tokens_of("gpt-x", input=900, output=37))

See README.md in this directory for what the gateway and the sandboxes call.
"""

from myriad.metering._cli import add_usage_arguments, cli_usage
from myriad.metering._agents import TurnMeter
from myriad.metering._counter import UsageCounter
from myriad.metering._events import Resources, Subject, Usage, UsageEvent, from_nanos, money_str, parse_when
from myriad.metering._export import (
    InvoiceLine,
    budget_report,
    export_cloudevents,
    invoice_lines,
    meter_events,
    rows_to_csv,
    usage_report,
    write_jsonl,
)
from myriad.metering._gateway import GatewayMetering, gateway_price_version, meter_gateway
from myriad.metering._limits import Budget, BudgetStatus, Limit, Scope
from myriad.metering._meter import Meter, Reservation
from myriad.metering._postgres_schema import MIGRATIONS as LEDGER_MIGRATIONS
from myriad.metering._prices import Price, PriceBook, PriceVersion
from myriad.metering._wrap import (
    MeteredProvider,
    charging,
    current_subject,
    estimate_chat,
    metered,
    usage_of_openai,
)
from myriad.metering._sandbox import SandboxMetering, egress_hook, subject_of_owner
from myriad.metering._store import (
    STORES,
    AppendResult,
    LedgerStore,
    Notice,
    StoredEvent,
    UsageQuery,
    UsageRow,
    open_store,
)

__all__ = [
    "AppendResult",
    "Budget",
    "BudgetStatus",
    "InvoiceLine",
    "LEDGER_MIGRATIONS",
    "LedgerStore",
    "GatewayMetering",
    "MeteredProvider",
    "Limit",
    "Meter",
    "Notice",
    "Price",
    "PriceBook",
    "PriceVersion",
    "Reservation",
    "Resources",
    "STORES",
    "SandboxMetering",
    "Scope",
    "StoredEvent",
    "Subject",
    "Usage",
    "UsageCounter",
    "TurnMeter",
    "UsageEvent",
    "UsageQuery",
    "UsageRow",
    "add_usage_arguments",
    "budget_report",
    "charging",
    "cli_usage",
    "current_subject",
    "egress_hook",
    "estimate_chat",
    "export_cloudevents",
    "invoice_lines",
    "meter_events",
    "metered",
    "usage_of_openai",
    "from_nanos",
    "gateway_price_version",
    "meter_gateway",
    "money_str",
    "open_store",
    "parse_when",
    "rows_to_csv",
    "subject_of_owner",
    "usage_report",
    "write_jsonl",
]
