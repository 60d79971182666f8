"""Reading usage out of the ledger: reports, CloudEvents export, billing meter events, invoice lines.

All functions take a ``LedgerStore`` and a tenant (``None`` = every tenant, for
operators only) and never mutate the ledger.

- ``usage_report``: totals or a time series grouped by subject/resource/model, as JSON.
- ``rows_to_csv``: the same rows as CSV.
- ``budget_report``: each budget's spend, holds and remaining in its current period.
- ``export_cloudevents``: the ledger's events, CloudEvents JSON, with their cost added.
- ``meter_events``: one billing-system meter event per (event, resource), with an
  idempotency key ``<event id>:<resource>`` (the shape Stripe's meter events and
  similar usage-billing APIs ingest: ``event_name``, ``identifier``,
  ``timestamp``, ``payload.{customer, value}``).
- ``invoice_lines``: per customer, resource, model and price version: quantity,
  unit price and amount, plus subtotals; the amount is the exact sum the budgets
  counted (each event costed to the nano).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Iterator, Mapping, Sequence, TextIO

from myriad.errors import InvalidRequest
from myriad.metering._events import Subject, from_micro, from_nanos, money_str
from myriad.metering._store import LedgerStore, UsageQuery, UsageRow

CUSTOMER_DIMENSIONS = ("tenant", "user", "agent")


def usage_report(store: LedgerStore, query: UsageQuery) -> dict[str, Any]:
    """Totals (or a series, with ``query.bucket``) as a JSON-ready dict."""
    rows = store.totals(query)
    latest = store.price_book().latest
    return {
        "tenant": query.tenant,
        "filters": {k: getattr(query, k) for k in ("user", "agent", "resource", "model") if getattr(query, k) is not None},
        "start": query.start.isoformat().replace("+00:00", "Z") if query.start else None,
        "end": query.end.isoformat().replace("+00:00", "Z") if query.end else None,
        "group_by": list(query.group_by),
        "bucket": query.bucket,
        "currency": latest.currency if latest else None,
        "rows": [r.to_json() for r in rows],
        "total_cost": money_str(sum(r.cost_nanos for r in rows)),
    }


def rows_to_csv(rows: Sequence[UsageRow], group_by: Sequence[str], bucket: str | None = None) -> str:
    """Rows of a totals query as CSV, with a header line."""
    cols = list(group_by) + (["bucket"] if bucket else []) + ["quantity", "cost", "lines"]
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        d = r.to_json()
        w.writerow(["" if d.get(c) is None else d.get(c) for c in cols])
    return out.getvalue()


def budget_report(store: LedgerStore, tenant: str, subject: Subject | None = None) -> list[dict[str, Any]]:
    """Spend against every budget of ``tenant`` (or those covering ``subject``)."""
    latest = store.price_book().latest
    out = []
    for st in store.budget_status(tenant, subject):
        d = st.to_json()
        d["currency"] = latest.currency if latest else None
        out.append(d)
    return out


def export_cloudevents(
    store: LedgerStore,
    tenant: str | None,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    after_seq: int = 0,
    batch: int = 1000,
) -> Iterator[dict[str, Any]]:
    """Every event in the window in ledger order, CloudEvents JSON with ``data.cost`` added.

    Each carries a ``sequence`` extension attribute (the ledger seq) so an export can
    resume with ``after_seq``.
    """
    latest = store.price_book().latest
    currency = latest.currency if latest else None
    while True:
        events = store.events(tenant, start=start, end=end, after_seq=after_seq, limit=batch)
        for e in events:
            ce = dict(e.cloudevent)
            data = dict(ce["data"])
            data["cost"] = {
                "amount": money_str(e.cost_nanos),
                "currency": currency,
                "price_version": e.price_version,
                "lines": {r: money_str(c) for r, (_, c) in e.lines.items()},
            }
            ce["data"] = data
            ce["sequence"] = str(e.seq)
            yield ce
        if len(events) < batch:
            return
        after_seq = events[-1].seq


def write_jsonl(items: Iterator[Mapping[str, Any]], fp: TextIO) -> int:
    """Write one JSON object per line; returns how many."""
    n = 0
    for item in items:
        fp.write(json.dumps(item, separators=(",", ":"), sort_keys=True) + "\n")
        n += 1
    return n


def meter_events(
    store: LedgerStore,
    tenant: str,
    *,
    customer: str = "user",
    start: datetime | None = None,
    end: datetime | None = None,
    customer_key: str = "customer",
    event_names: Mapping[str, str] | None = None,
) -> Iterator[dict[str, Any]]:
    """Billing-system meter events: one per (event, resource) with an idempotency ``identifier``.

    ``customer`` picks whose account is billed (``tenant``, ``user`` or ``agent``);
    events without that part (e.g. no user) are billed to the tenant.
    ``customer_key`` renames the payload key (``stripe_customer_id`` for Stripe).
    ``event_names`` maps a resource to the billing meter's event name (default: the
    resource with dots as underscores).
    """
    if customer not in CUSTOMER_DIMENSIONS:
        raise InvalidRequest(f"customer must be one of {', '.join(CUSTOMER_DIMENSIONS)}, got {customer!r}")
    names = dict(event_names or {})
    for e in export_cloudevents(store, tenant, start=start, end=end):
        data = e["data"]
        who = data.get(customer) or data["tenant"]
        for resource, q in data["measurements"].items():
            if Decimal(q) == 0:
                continue
            yield {
                "event_name": names.get(resource, resource.replace(".", "_")),
                "identifier": f"{e['id']}:{resource}",
                "timestamp": e["time"],
                "payload": {customer_key: who, "value": q},
            }


@dataclass(frozen=True)
class InvoiceLine:
    customer: str | None
    resource: str
    model: str | None
    deployment: str | None
    price_version: int | None
    quantity: Decimal
    unit_price: Decimal | None
    per: int | None
    amount_nanos: int

    def to_json(self) -> dict[str, Any]:
        return {
            "customer": self.customer,
            "resource": self.resource,
            "model": self.model,
            "deployment": self.deployment,
            "price_version": self.price_version,
            "quantity": format(self.quantity, "f"),
            "unit_price": None if self.unit_price is None else format(self.unit_price, "f"),
            "per": self.per,
            "amount": money_str(self.amount_nanos),
        }


def invoice_lines(
    store: LedgerStore,
    tenant: str,
    *,
    start: datetime,
    end: datetime,
    customer: str = "user",
    include_free: bool = False,
) -> dict[str, Any]:
    """Invoice lines for ``[start, end)``, grouped by customer; amounts exact, totals rounded to cents."""
    if customer not in CUSTOMER_DIMENSIONS:
        raise InvalidRequest(f"customer must be one of {', '.join(CUSTOMER_DIMENSIONS)}, got {customer!r}")
    book = store.price_book()
    versions = {v.version: v for v in book.versions}
    rows = store.totals(UsageQuery(tenant, start=start, end=end,
                                   group_by=(customer, "resource", "model", "deployment", "price_version")))
    by_customer: dict[str | None, list[InvoiceLine]] = {}
    for r in rows:
        k = r.keys
        if r.cost_nanos == 0 and not include_free:
            continue
        v = versions.get(k["price_version"]) if k["price_version"] else None
        price = v.price_of(k["resource"], k["model"], k["deployment"]) if v else None
        line = InvoiceLine(k[customer], k["resource"], k["model"], k["deployment"], k["price_version"],
                           from_micro(r.quantity_micro), price.unit_price if price else None,
                           price.per if price else None, r.cost_nanos)
        by_customer.setdefault(k[customer], []).append(line)
    currency = book.latest.currency if book.latest else None
    customers = []
    for who in sorted(by_customer, key=lambda c: c or ""):
        lines = by_customer[who]
        exact = sum(line.amount_nanos for line in lines)
        customers.append({
            "customer": who,
            "lines": [line.to_json() for line in lines],
            "subtotal": money_str(exact),
            "total_due": str(from_nanos(exact).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)),
        })
    grand = sum(line.amount_nanos for ls in by_customer.values() for line in ls)
    return {
        "tenant": tenant,
        "period": {"start": start.isoformat().replace("+00:00", "Z"), "end": end.isoformat().replace("+00:00", "Z")},
        "currency": currency,
        "customers": customers,
        "total": money_str(grand),
    }


__all__ = [
    "InvoiceLine",
    "budget_report",
    "export_cloudevents",
    "invoice_lines",
    "meter_events",
    "rows_to_csv",
    "usage_report",
    "write_jsonl",
]
