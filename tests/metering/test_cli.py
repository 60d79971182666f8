"""``myriad usage`` verbs, driven through their argparse parser against a real ledger file."""

import argparse
import csv
import io
import json

import pytest

from myriad.errors import InvalidRequest
from myriad.metering import Meter, Subject, Usage, add_usage_arguments, cli_usage
from myriad.settings import Settings


def run(settings, *argv):
    p = argparse.ArgumentParser()
    add_usage_arguments(p)
    out = io.StringIO()
    assert cli_usage(p.parse_args(list(argv)), settings, out) == 0
    return out.getvalue()


@pytest.fixture
def settings(tmp_path):
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"versions": [{"currency": "USD", "prices": [
        {"resource": "model.output_tokens", "unit_price": "0.60", "per": 1000000},
        {"resource": "model.input_tokens", "unit_price": "0.15", "per": 1000000}]}]}))
    s = Settings(data_dir=tmp_path / "data")
    s.metering.price_file = str(prices)
    return s


def test_prices_budgets_reports_and_exports(settings):
    meter = Meter.from_settings(settings)
    meter.record_sync(Subject("acme", "ann"), Usage.tokens_of("gpt", input=1000, output=1000), id="e1")
    meter.close()
    assert len(json.loads(run(settings, "prices"))) == 1
    Meter.from_settings(settings).close()  # loading the same price file again adds nothing
    assert len(json.loads(run(settings, "prices"))) == 1

    b = json.loads(run(settings, "set-budget", "--tenant", "acme", "--period", "day", "--hard", "5", "--id", "b1"))
    assert b["hard"] == "5.000000000"
    (status,) = json.loads(run(settings, "budgets", "--tenant", "acme"))
    assert status["id"] == "b1" and status["spent"] == "0.000000000"  # budgets count spend from their creation

    rep = json.loads(run(settings, "totals", "--tenant", "acme", "--by", "user"))
    assert rep["rows"] == [{"user": "ann", "quantity": "2001", "cost": "0.000750000", "lines": 3}]
    rows = list(csv.DictReader(io.StringIO(run(settings, "series", "--tenant", "acme", "--by", "resource", "--format", "csv",
                                               "--bucket", "hour"))))
    assert {r["resource"] for r in rows} == {"model.requests", "model.input_tokens", "model.output_tokens"}
    (ev,) = [json.loads(x) for x in run(settings, "events", "--tenant", "acme").splitlines()]
    assert ev["id"] == "e1" and ev["data"]["cost"]["amount"] == "0.000750000"
    mes = [json.loads(x) for x in run(settings, "meter-events", "--tenant", "acme", "--customer-key",
                                      "stripe_customer_id").splitlines()]
    assert {m["identifier"] for m in mes} == {"e1:model.requests", "e1:model.input_tokens", "e1:model.output_tokens"}
    inv = json.loads(run(settings, "invoice", "--tenant", "acme", "--since", "1d", "--until", "0m"))
    assert inv["total"] == "0.000750000"
    lim = json.loads(run(settings, "set-limit", "--tenant", "acme", "--kind", "requests_per_minute", "--limit", "60"))
    assert [x["id"] for x in json.loads(run(settings, "limits", "--tenant", "acme"))] == [lim["id"]]
    run(settings, "delete-limit", lim["id"])
    run(settings, "delete-budget", "b1")
    assert json.loads(run(settings, "budgets", "--tenant", "acme")) == []


def test_invoice_needs_a_window(settings):
    with pytest.raises(InvalidRequest, match="--since"):
        run(settings, "invoice", "--tenant", "acme")
