import pytest

from myriad.errors import InvalidRequest, PermissionDenied
from myriad.identity import Scopes


def test_coverage_by_family():
    s = Scopes.of("agents:counter models:gpt-4o* egress:*.example.com tools budget:5")
    assert s.covers("agents:counter") and not s.covers("agents:assistant") and not s.covers("agents")
    assert s.covers("models:gpt-4o-mini") and not s.covers("models:claude") and not s.covers("models:*")
    assert s.covers("egress:api.example.com") and not s.covers("egress:example.com")
    assert not s.covers("egress:api.example.com.evil.net") and not s.covers("egress:evilexample.com")
    assert s.covers("tools:anything") and s.covers("budget:2.5") and not s.covers("budget:6")
    assert Scopes.of("*").covers("admin") and not s.covers("admin")
    assert s.budget() == 5.0


def test_require_names_the_missing_scope():
    with pytest.raises(PermissionDenied) as e:
        Scopes.of("agents models:a").require("agents:x", "models:b")
    assert e.value.status == 403 and e.value.details["missing_scope"] == "models:b"
    assert "models:b" in e.value.message


def test_narrow_only_narrows():
    parent = Scopes.of("models:gpt-* egress:*.example.com budget:10")
    assert parent.narrow(["models:gpt-4o", "budget:3"]).items == {"models:gpt-4o", "budget:3"}
    assert parent.narrow(None) is parent
    for wider in (["models"], ["models:*"], ["egress:*"], ["budget:11"], ["admin"]):
        with pytest.raises(PermissionDenied):
            parent.narrow(wider)


@pytest.mark.parametrize("bad", ["Agents", "a b:c d!", "x:" + "y" * 300, ":x", "agents:a,b", "egress:h\x00"])
def test_bad_scopes_are_400(bad):
    with pytest.raises(InvalidRequest, match="invalid scope"):
        Scopes.of(bad)
