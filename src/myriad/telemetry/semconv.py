"""Names from the OpenTelemetry semantic conventions that Myriad emits.

GenAI names follow semantic conventions **v1.44.0** (the last core release that
carries the GenAI conventions before they moved to the ``semantic-conventions-genai``
repository; the same names ship in ``opentelemetry-semantic-conventions`` 0.66b2).
We keep our own constants rather than import the incubating package: it is large,
marked unstable, and library code here depends on ``opentelemetry-api`` alone.

Names under ``myriad.*`` are ours (no convention covers them yet).
"""

from __future__ import annotations

SEMCONV_VERSION = "1.44.0"
SCHEMA_URL = f"https://opentelemetry.io/schemas/{SEMCONV_VERSION}"

# -- GenAI attributes ---------------------------------------------------------------
GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_TEMPERATURE = "gen_ai.request.temperature"
GEN_AI_REQUEST_TOP_P = "gen_ai.request.top_p"
GEN_AI_REQUEST_STREAM = "gen_ai.request.stream"
GEN_AI_REQUEST_SEED = "gen_ai.request.seed"
GEN_AI_REQUEST_CHOICE_COUNT = "gen_ai.request.choice.count"
GEN_AI_REQUEST_ENCODING_FORMATS = "gen_ai.request.encoding_formats"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_RESPONSE_ID = "gen_ai.response.id"
GEN_AI_RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK = "gen_ai.response.time_to_first_chunk"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_TOKEN_TYPE = "gen_ai.token.type"
GEN_AI_OUTPUT_TYPE = "gen_ai.output.type"
GEN_AI_AGENT_ID = "gen_ai.agent.id"
GEN_AI_AGENT_NAME = "gen_ai.agent.name"
GEN_AI_CONVERSATION_ID = "gen_ai.conversation.id"
GEN_AI_TOOL_NAME = "gen_ai.tool.name"
GEN_AI_TOOL_CALL_ID = "gen_ai.tool.call.id"
GEN_AI_TOOL_TYPE = "gen_ai.tool.type"
GEN_AI_TOOL_CALL_ARGUMENTS = "gen_ai.tool.call.arguments"
GEN_AI_TOOL_CALL_RESULT = "gen_ai.tool.call.result"
GEN_AI_INPUT_MESSAGES = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES = "gen_ai.output.messages"
GEN_AI_EMBEDDINGS_DIMENSION_COUNT = "gen_ai.embeddings.dimension.count"

# operation names (gen_ai.operation.name values)
OP_CHAT = "chat"
OP_EMBEDDINGS = "embeddings"
OP_INVOKE_AGENT = "invoke_agent"
OP_EXECUTE_TOOL = "execute_tool"

# -- general attributes -------------------------------------------------------------
ERROR_TYPE = "error.type"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
HTTP_REQUEST_METHOD = "http.request.method"
HTTP_RESPONSE_STATUS_CODE = "http.response.status_code"
HTTP_ROUTE = "http.route"
URL_PATH = "url.path"
URL_SCHEME = "url.scheme"
CLIENT_ADDRESS = "client.address"
USER_AGENT_ORIGINAL = "user_agent.original"
NETWORK_PROTOCOL_NAME = "network.protocol.name"

# -- Myriad's own -------------------------------------------------------------------
MYRIAD_TENANT = "myriad.tenant"
MYRIAD_USER = "myriad.user"
MYRIAD_DEPLOYMENT = "myriad.model.deployment"
MYRIAD_ATTEMPTS = "myriad.model.attempts"
MYRIAD_COST_USD = "myriad.cost.usd"
MYRIAD_CACHE_HIT = "myriad.cache.hit"
MYRIAD_API = "myriad.api"
"""Which gateway API a call came through when it is not chat or embeddings (``responses``)."""
MYRIAD_AGENT_WOKE = "myriad.agent.woke"
MYRIAD_SANDBOX_TIER = "myriad.sandbox.tier"
MYRIAD_SANDBOX_ID = "myriad.sandbox.id"

# -- metrics and their bucket boundaries --------------------------------------------
GEN_AI_CLIENT_TOKEN_USAGE = "gen_ai.client.token.usage"
GEN_AI_CLIENT_OPERATION_DURATION = "gen_ai.client.operation.duration"
GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK = "gen_ai.client.operation.time_to_first_chunk"
HTTP_SERVER_REQUEST_DURATION = "http.server.request.duration"

TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
"""``gen_ai.client.token.usage`` explicit bucket boundaries (from the conventions)."""
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
"""``gen_ai.client.operation.duration`` explicit bucket boundaries, in seconds (from the
conventions); used for time to first chunk, turn and tool durations too."""
HTTP_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
"""``http.server.request.duration`` bucket boundaries (HTTP conventions)."""

MYRIAD_TURN_DURATION = "myriad.agent.turn.duration"
MYRIAD_TOOL_DURATION = "myriad.tool.duration"
MYRIAD_AGENTS_RESIDENT = "myriad.agents.resident"
MYRIAD_AGENTS_HIBERNATED = "myriad.agents.hibernated"
MYRIAD_AGENTS_WAKES = "myriad.agents.wakes"
MYRIAD_AGENTS_QUEUE_DEPTH = "myriad.agents.queue_depth"
MYRIAD_AGENTS_CONNECTIONS = "myriad.agents.connections"
MYRIAD_SANDBOXES_LIVE = "myriad.sandboxes.live"
MYRIAD_BUDGET_REFUSALS = "myriad.budget.refusals"

# provider names of gen_ai.provider.name for Myriad's provider registry names
PROVIDER_NAMES = {"openai": "openai", "anthropic": "anthropic", "simulated": "myriad.simulated"}
