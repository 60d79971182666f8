"""The tenant's MCP server registry (for the gateway's type "mcp" tools), on both backends."""

import pytest

from myriad.errors import InvalidRequest, NotFound

TOKEN = "mcp-token-" + "x" * 20


def test_register_list_headers_delete(identity, keystore):
    reg = identity.mcp_servers
    info = reg.put("acme", "docs", "https://docs.example/mcp", TOKEN)
    assert info.has_token and TOKEN not in repr(info.to_json())
    reg.put("acme", "calc", "https://calc.example/mcp")
    assert [s.label for s in reg.list("acme")] == ["calc", "docs"]
    assert reg.list("other") == []  # tenants see only their own
    assert reg.headers("acme", "docs") == {"authorization": "Bearer " + TOKEN}
    assert reg.headers("acme", "calc") == {}
    rows = [repr(tuple(r)) for r in keystore.db.execute("SELECT * FROM mcp_servers")]
    assert rows and not any(TOKEN in r for r in rows)  # sealed at rest
    reg.put("acme", "docs", "https://docs2.example/mcp")  # re-registering replaces (and drops the token)
    assert reg.get("acme", "docs").url == "https://docs2.example/mcp" and reg.headers("acme", "docs") == {}
    reg.delete("acme", "docs")
    with pytest.raises(NotFound):
        reg.get("acme", "docs")
    with pytest.raises(NotFound):
        reg.delete("acme", "docs")


@pytest.mark.parametrize("label,url", [("bad label", "https://x.example/mcp"), ("ok", "ftp://x.example"),
                                       ("ok", "https://user:pw@x.example/mcp"), ("ok", 3)])
def test_bad_registrations_are_400(identity, keystore, label, url):
    with pytest.raises(InvalidRequest):
        identity.mcp_servers.put("acme", label, url)
