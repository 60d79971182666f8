"""Credential redaction for anything telemetry records.

Applied to message content (when content capture is opted in), tool arguments and
results, exception messages and HTTP attributes. It errs on the side of hiding: a
false positive costs a few characters of a prompt, a false negative leaks a key.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

REDACTED = "[REDACTED]"

_PATTERNS = [
    # Authorization: Bearer <token> / Basic <b64>
    re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"),
    # key=value / "key": "value" for secret-looking key names
    re.compile(
        r"""(?ix)
        (["']?(?:api[_-]?key|apikey|access[_-]?token|refresh[_-]?token|secret|client[_-]?secret|
              password|passwd|pwd|token|authorization|x-api-key|private[_-]?key)["']?
        \s*[:=]\s*["']?)
        [^\s"',;&}]{4,}
        """
    ),
    # JSON Web Tokens
    re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}"),
    # vendor key shapes: OpenAI/Anthropic (sk-...), GitHub, Slack, AWS access keys, Google API keys,
    # and Myriad's own API keys (myr_...)
    re.compile(r"\b(?:sk|rk|pk)-[A-Za-z0-9_-]{16,}"),
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"),
    re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
    re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    re.compile(r"\bAIza[0-9A-Za-z_-]{30,}"),
    re.compile(r"\bmyr_[A-Za-z0-9_-]{16,}"),
    # PEM private keys
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"),
]

_SECRET_KEYS = re.compile(
    r"(?i)^(authorization|proxy-authorization|cookie|set-cookie|x-api-key|api[_-]?key|apikey|token|"
    r"access[_-]?token|refresh[_-]?token|secret|client[_-]?secret|password|passwd|private[_-]?key)$"
)


def redact_text(text: str) -> str:
    """``text`` with anything that looks like a credential replaced by ``[REDACTED]``."""
    if not text:
        return text
    for i, pattern in enumerate(_PATTERNS):
        if i == 1:
            text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
        elif i == 0:
            text = pattern.sub(lambda m: m.group(1) + " " + REDACTED, text)
        else:
            text = pattern.sub(REDACTED, text)
    return text


def redact_value(value: Any, key: str | None = None) -> Any:
    """Redact a JSON-like value: secret-named keys lose their values, strings are scanned."""
    if key is not None and _SECRET_KEYS.match(key) and value not in (None, ""):
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: redact_value(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value(v) for v in value]
    return value


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Headers with credential-bearing ones replaced (for span attributes)."""
    return {k: (REDACTED if _SECRET_KEYS.match(k) else redact_text(v)) for k, v in headers.items()}


__all__ = ["REDACTED", "redact_text", "redact_value", "redact_headers"]
