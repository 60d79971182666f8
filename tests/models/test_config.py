"""Deployment-file validation: every mistake names its line."""

from __future__ import annotations

import pytest

from myriad.errors import ConfigError
from myriad.models.config import GatewayConfig, Price

GOOD = """
[router]
retries = 1
total_timeout = 10

[[deployment]]
name = "mini"
model = "fast"
provider = "openai"
upstream_model = "gpt-4o-mini"
base_url = "http://127.0.0.1:9/v1"
api_key = "env:OPENAI_API_KEY"
price = { input = 0.15, output = 0.6, cached = 0.075 }
context_window = 128000
rpm = 500
tpm = 200000
capabilities = ["tools", "json"]

[[deployment]]
model = "smart"
provider = "anthropic"
upstream_model = "claude-sonnet-4-5"
api_key = "env:ANTHROPIC_API_KEY"
context_window = 200000

[groups.fast]
strategy = "lowest-latency"
fallbacks = ["smart"]
context_fallback = "smart"
"""


def test_good_file_parses():
    cfg = GatewayConfig.from_toml(GOOD)
    mini, smart = cfg.deployments
    assert mini.price == Price(0.15, 0.6, 0.075)
    assert mini.capabilities == {"tools", "json"} and mini.rpm == 500
    assert smart.name == "smart#2" and smart.upstream_model == "claude-sonnet-4-5"
    assert cfg.groups["fast"].fallbacks == ("smart",)
    assert cfg.router.retries == 1 and cfg.router.total_timeout == 10


def test_price_cost_uses_cached_rate():
    p = Price(1.0, 2.0, 0.5)
    assert p.cost(1_000_000, 1_000_000, cached_tokens=500_000) == pytest.approx(0.5 + 0.25 + 2.0)


@pytest.mark.parametrize("replace,find,line,words", [
    ('api_key = "env:OPENAI_API_KEY"', 'api_key = "sk-live-123"', 12, "never the key itself"),
    ('provider = "anthropic"', 'provider = "antropic"', 21, "unknown provider 'antropic'"),
    ('context_window = 200000', 'context_window = "big"', 24, "context_window must be an integer"),
    ('rpm = 500', 'rpm = -1', 15, "rpm must be positive"),
    ('strategy = "lowest-latency"', 'strategy = "fastest"', 27, "unknown strategy 'fastest'"),
    ('fallbacks = ["smart"]', 'fallbacks = ["genius"]', 28, "fallback 'genius'"),
    ('price = { input = 0.15', 'price = { inptu = 0.15', 13, "price.inptu"),
    ('capabilities = ["tools", "json"]', 'capabilites = ["tools"]', 17, "unknown key 'capabilites'"),
    ('retries = 1', 'retries = "x"', 3, "router.retries must be"),
])
def test_errors_name_the_line(replace, find, line, words):
    text = GOOD.replace(replace, find)
    assert text != GOOD
    with pytest.raises(ConfigError) as e:
        GatewayConfig.from_toml(text, source="models.toml")
    assert f"models.toml, line {line}:" in str(e.value)
    assert words in str(e.value)


def test_missing_required_key_names_the_table_line():
    with pytest.raises(ConfigError) as e:
        GatewayConfig.from_toml('[[deployment]]\nmodel = "x"\n', source="m.toml")
    assert "m.toml, line 1:" in str(e.value) and "'provider'" in str(e.value)


def test_invalid_toml_reports_position():
    with pytest.raises(ConfigError) as e:
        GatewayConfig.from_toml('[[deployment]]\nmodel = \n', source="m.toml")
    assert "line 2" in str(e.value)


def test_unknown_section():
    with pytest.raises(ConfigError) as e:
        GatewayConfig.from_toml('[routers]\nretries = 1\n', source="m.toml")
    assert "line 1" in str(e.value) and "unknown section 'routers'" in str(e.value)


def test_load_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        GatewayConfig.load(tmp_path / "nope.toml")
