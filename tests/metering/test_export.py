"""Reports and exports: JSON/CSV totals, CloudEvents JSON lines, meter events, invoice lines."""

import csv
import io
import json
from datetime import datetime, timedelta, timezone

import pytest

from myriad.errors import InvalidRequest
from myriad.metering import (
    Budget,
    Scope,
    Subject,
    Usage,
    UsageEvent,
    UsageQuery,
    budget_report,
    export_cloudevents,
    invoice_lines,
    meter_events,
    rows_to_csv,
    usage_report,
    write_jsonl,
)

T = datetime(2026, 3, 15, 12, 30, tzinfo=timezone.utc)


@pytest.fixture
def filled(ledger):
    ledger.append([
        UsageEvent(Subject("acme", "ann"), Usage.tokens_of("gpt", input=1000, output=100), id="e1", time=T),
        UsageEvent(Subject("acme", "ann"), Usage.tokens_of("big", input=2000, output=10), id="e2", time=T + timedelta(hours=1)),
        UsageEvent(Subject("acme", "bob"), Usage.tokens_of("gpt", input=10, output=0), id="e3", time=T),
        UsageEvent(Subject("other", "eve"), Usage.tokens_of("gpt", input=5, output=5), id="x1", time=T),
    ])
    return ledger


def test_usage_report_json_and_csv(filled):
    q = UsageQuery("acme", group_by=("user", "model"))
    rep = usage_report(filled, q)
    assert rep["currency"] == "USD" and rep["group_by"] == ["user", "model"]
    costs = {(r["user"], r["model"]): r["cost"] for r in rep["rows"]}
    assert costs == {("ann", "gpt"): "0.000210000", ("ann", "big"): "0.005100000", ("bob", "gpt"): "0.000001500"}
    assert rep["total_cost"] == "0.005311500"
    parsed = list(csv.DictReader(io.StringIO(rows_to_csv(filled.totals(q), q.group_by))))
    assert {(r["user"], r["model"], r["cost"]) for r in parsed} == {(u, m, c) for (u, m), c in costs.items()}


def test_time_series(filled):
    rep = usage_report(filled, UsageQuery("acme", resource="model.input_tokens", group_by=(), bucket="hour"))
    assert [(r["bucket"], r["quantity"]) for r in rep["rows"]] == [
        ("2026-03-15T12:00:00Z", "1010"), ("2026-03-15T13:00:00Z", "2000")]


def test_cloudevents_jsonl_export_carries_cost_and_resumes(filled):
    buf = io.StringIO()
    assert write_jsonl(export_cloudevents(filled, "acme", batch=2), buf) == 3
    lines = [json.loads(x) for x in buf.getvalue().splitlines()]
    assert [e["id"] for e in lines] == ["e1", "e2", "e3"]
    assert lines[0]["specversion"] == "1.0" and lines[0]["data"]["cost"]["amount"] == "0.000210000"
    assert lines[0]["data"]["cost"]["lines"]["model.output_tokens"] == "0.000060000"
    rest = list(export_cloudevents(filled, "acme", after_seq=int(lines[0]["sequence"])))
    assert [e["id"] for e in rest] == ["e2", "e3"]


def test_meter_events_have_idempotency_identifiers(filled):
    evs = list(meter_events(filled, "acme", customer_key="stripe_customer_id"))
    ids = [e["identifier"] for e in evs]
    assert len(ids) == len(set(ids))
    assert {"event_name": "model_output_tokens", "identifier": "e1:model.output_tokens",
            "timestamp": "2026-03-15T12:30:00Z", "payload": {"stripe_customer_id": "ann", "value": "100"}} in evs
    assert not any(e["payload"]["value"] == "0" for e in evs)  # bob's 0 output tokens are not sent
    assert all(e["payload"]["stripe_customer_id"] != "eve" for e in evs)  # other tenant
    with pytest.raises(InvalidRequest):
        list(meter_events(filled, "acme", customer="planet"))


def test_invoice_lines_sum_to_what_budgets_counted(filled):
    filled.put_budget(Budget(Scope("acme"), "month", hard="10"))
    inv = invoice_lines(filled, "acme", start=datetime(2026, 3, 1, tzinfo=timezone.utc),
                        end=datetime(2026, 4, 1, tzinfo=timezone.utc))
    ann = next(c for c in inv["customers"] if c["customer"] == "ann")
    big_in = next(x for x in ann["lines"] if x["model"] == "big" and x["resource"] == "model.input_tokens")
    assert big_in == {"customer": "ann", "resource": "model.input_tokens", "model": "big", "deployment": None,
                      "price_version": 1, "quantity": "2000", "unit_price": "2.50", "per": 1000000, "amount": "0.005000000"}
    assert ann["subtotal"] == "0.005310000" and ann["total_due"] == "0.01"
    assert inv["total"] == "0.005311500"
    assert not any(x["resource"] == "model.requests" for c in inv["customers"] for x in c["lines"])  # free lines hidden


def test_budget_report(filled, ledger):
    ledger.put_budget(Budget(Scope("acme", user="ann"), "total", hard="1", soft="0.5", id="ann"))
    ledger.append([UsageEvent(Subject("acme", "ann"), Usage.tokens_of("gpt", input=0, output=1000), id="late")])
    (b,) = budget_report(ledger, "acme")
    assert b["id"] == "ann" and b["spent"] == "0.000600000" and b["remaining"] == "0.999400000" and b["currency"] == "USD"
    assert b["resets_at"] is None


def test_public_surface_is_exactly_this():
    import myriad.metering as m

    assert set(m.__all__) == {
        "AppendResult", "Budget", "BudgetStatus", "InvoiceLine", "LedgerStore", "Limit", "Meter", "MeteredProvider",
        "Notice", "Price", "PriceBook", "PriceVersion", "Reservation", "Resources", "STORES", "Scope",
        "StoredEvent", "Subject", "Usage", "UsageEvent", "UsageQuery", "UsageRow", "budget_report", "charging",
        "current_subject", "estimate_chat", "export_cloudevents", "from_nanos", "invoice_lines", "meter_events",
        "metered", "money_str", "open_store", "rows_to_csv", "usage_report", "usage_of_openai", "write_jsonl",
        "cli_usage", "add_usage_arguments", "parse_when", "GatewayMetering", "meter_gateway", "gateway_price_version",
        "SandboxMetering", "egress_hook", "subject_of_owner", "UsageCounter", "TurnMeter", "LEDGER_MIGRATIONS",
    }
    for name in m.__all__:
        assert getattr(m, name) is not None


def test_metering_imports_no_other_room():
    import subprocess
    import sys

    code = (
        "import sys, myriad.metering, myriad.metering._sqlite, myriad.metering._export, myriad.metering._wrap;"
        "bad = [m for m in sys.modules if m.startswith('myriad.') and not m.startswith(('myriad.metering', 'myriad.errors'))];"
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": "src"}).stdout.strip()
    assert out == "[]"
