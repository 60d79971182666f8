"""The OpenAI Responses API (``/v1/responses``) on top of the gateway.

Public surface::

    Responses            create / stream / get / delete responses through a gateway
    ResponsesRequest     a validated request; ``to_chat()`` is the same call for Chat Completions
    parse_request        validate a body (400s name the parameter)
    ResponseEvents       chat chunks -> typed Responses stream events
    ResponseStore, MemoryResponseStore, SQLiteResponseStore, PostgresResponseStore, StoredResponse
    RESPONSES_MIGRATIONS  the PostgreSQL store's schema history (component ``responses``)
    response_usage, output_items, response_object, sse

Providers that speak only Chat Completions are reached by translation both ways.
"""

from myriad.models.responses._events import ResponseEvents, sse
from myriad.models.responses._output import output_items, output_text, response_object, response_usage
from myriad.models.responses._request import ResponsesRequest, items_to_messages, parse_request
from myriad.models.responses._postgres import MIGRATIONS as RESPONSES_MIGRATIONS
from myriad.models.responses._postgres import PostgresResponseStore, pg_owner
from myriad.models.responses._service import Responses
from myriad.models.responses._sqlite import SQLiteResponseStore
from myriad.models.responses._store import MemoryResponseStore, ResponseStore, StoredResponse

__all__ = [
    "MemoryResponseStore",
    "PostgresResponseStore",
    "RESPONSES_MIGRATIONS",
    "ResponseEvents",
    "ResponseStore",
    "Responses",
    "ResponsesRequest",
    "SQLiteResponseStore",
    "StoredResponse",
    "items_to_messages",
    "output_items",
    "output_text",
    "parse_request",
    "pg_owner",
    "response_object",
    "response_usage",
    "sse",
]
