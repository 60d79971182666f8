"""Token arrays back to text, for embedding requests that send token ids (LangChain's
``OpenAIEmbeddings`` does by default, tokenised with tiktoken for the model).

The tokenizer is the deployment's ``options.tokenizer`` (a tiktoken encoding name,
default ``cl100k_base``: what clients use for OpenAI's embedding models and for any
model name tiktoken does not know). tiktoken is imported here only, on the first
token array; it needs the encoding file (downloaded once, or from
``TIKTOKEN_CACHE_DIR``). Without either, the request gets a 400 that says to send
strings instead.
"""

from __future__ import annotations

import asyncio
from typing import Any, Sequence

from myriad.errors import InvalidRequest

DEFAULT_TOKENIZER = "cl100k_base"
_ADVICE = ("send 'input' as strings instead (LangChain: OpenAIEmbeddings(..., check_embedding_ctx_length=False))")
_encodings: dict[str, Any] = {}
_failures: dict[str, str] = {}


def is_token_input(value: Any) -> bool:
    """``[1, 2, 3]`` or ``[[1, 2], [3]]``: token ids rather than text."""
    if not isinstance(value, list) or not value:
        return False
    if all(_is_id(t) for t in value):
        return True
    return all(isinstance(row, list) and row and all(_is_id(t) for t in row) for row in value)


def _is_id(t: Any) -> bool:
    return isinstance(t, int) and not isinstance(t, bool)


def tokenizer_of(deployments: Sequence[Any], model: str) -> str:
    """The tokenizer a model's token arrays are decoded with."""
    for d in deployments:
        if d.model == model:
            name = (d.options or {}).get("tokenizer")
            if isinstance(name, str) and name:
                return name
    return DEFAULT_TOKENIZER


async def decode_token_arrays(value: list[Any], tokenizer: str) -> list[str]:
    """Each token array as text; a 400 naming ``input`` when it cannot be done."""
    rows = [value] if all(_is_id(t) for t in value) else value
    enc = await _encoding(tokenizer)
    limit = enc.n_vocab
    out = []
    for i, row in enumerate(rows):
        bad = next((t for t in row if not 0 <= t < limit), None)
        if bad is not None:
            raise InvalidRequest(f"input[{i}] has token id {bad}, outside the {tokenizer} vocabulary (0..{limit - 1})",
                                 details={"param": "input"})
        out.append(enc.decode(row))
    return out


async def _encoding(name: str) -> Any:
    enc = _encodings.get(name)
    if enc is not None:
        return enc
    if name in _failures:
        raise InvalidRequest(_failures[name], details={"param": "input"})
    try:
        import tiktoken
    except ImportError:
        _failures[name] = (f"token arrays as 'input' need the tokenizer {name!r}, and tiktoken is not installed "
                           f"on this server (pip install 'myriad[tokenizers]'); {_ADVICE}")
        raise InvalidRequest(_failures[name], details={"param": "input"}) from None
    try:
        # may read (or download) the encoding file: keep it off the event loop
        enc = await asyncio.to_thread(tiktoken.get_encoding, name)
    except Exception as e:  # unknown name, no network and no cache: tiktoken raises many kinds
        _failures[name] = (f"token arrays as 'input' need the tokenizer {name!r}, which this server cannot load "
                           f"({type(e).__name__}); {_ADVICE}")
        raise InvalidRequest(_failures[name], details={"param": "input"}) from None
    _encodings[name] = enc
    return enc


__all__ = ["DEFAULT_TOKENIZER", "is_token_input", "tokenizer_of", "decode_token_arrays"]
