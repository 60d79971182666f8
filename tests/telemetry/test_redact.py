from myriad.telemetry import REDACTED, redact_headers, redact_text, redact_value


def test_known_credential_shapes_are_redacted():
    secrets = [
        "sk-proj-abcdefghijklmnop1234567890",
        "myr_0123456789ab_abcdefghijklmnopqrstuv",
        "AKIAABCDEFGHIJKLMNOP",
        "ghp_abcdefghijklmnopqrstuvwxyz0123",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    ]
    for s in secrets:
        out = redact_text(f"my key is {s} ok")
        assert s not in out and REDACTED in out and out.startswith("my key is") and out.endswith("ok")


def test_bearer_and_key_value_pairs():
    out = redact_text('curl -H "Authorization: Bearer abc.def.ghijklmnop" -d password=hunter22 api_key: "zzzz9999"')
    assert "abc.def.ghijklmnop" not in out and "hunter22" not in out and "zzzz9999" not in out
    assert "password=" in out and out.startswith("curl -H")


def test_plain_text_is_untouched():
    text = "The quick brown fox has 3 tokens and a skill-based plan."
    assert redact_text(text) == text


def test_structures_and_headers():
    v = redact_value({"api_key": "short", "nested": [{"password": "x1"}, "sk-abcdefghijklmnopqrstu"], "n": 3})
    assert v == {"api_key": REDACTED, "nested": [{"password": REDACTED}, REDACTED], "n": 3}
    h = redact_headers({"Authorization": "Bearer x", "Content-Type": "application/json"})
    assert h == {"Authorization": REDACTED, "Content-Type": "application/json"}
