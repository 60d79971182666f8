"""Ids in OpenAI's style: a prefix that says what it names, then random hex."""

from __future__ import annotations

import secrets


def new_id(prefix: str) -> str:
    """``resp_…``, ``msg_…``, ``fc_…``: 48 hex digits, as OpenAI's are long."""
    return f"{prefix}_{secrets.token_hex(24)}"


__all__ = ["new_id"]
