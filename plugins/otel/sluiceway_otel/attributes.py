"""The attribute and event names the spans carry.

OpenTelemetry's GenAI conventions (``gen_ai.*``, development status; the
current names, such as ``gen_ai.provider.name`` rather than ``gen_ai.system``),
its stable HTTP, server, client and error conventions, and sluiceway's own
(``sluiceway.*``) for what no convention covers. Written out here rather than
imported from ``opentelemetry.semconv._incubating``, whose GenAI constants are
marked as moved to another repository.
"""

from __future__ import annotations

from typing import Final

# GenAI
GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME: Final = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
GEN_AI_REQUEST_STREAM: Final = "gen_ai.request.stream"
GEN_AI_RESPONSE_MODEL: Final = "gen_ai.response.model"
GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: Final = "gen_ai.response.time_to_first_chunk"
GEN_AI_USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: Final = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: Final = "gen_ai.usage.reasoning.output_tokens"
CHAT: Final = "chat"

# HTTP, network, errors (stable)
HTTP_REQUEST_METHOD: Final = "http.request.method"
HTTP_RESPONSE_STATUS_CODE: Final = "http.response.status_code"
HTTP_ROUTE: Final = "http.route"
URL_PATH: Final = "url.path"
CLIENT_ADDRESS: Final = "client.address"
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"
ERROR_TYPE: Final = "error.type"

# sluiceway's own
REQUEST_ID: Final = "sluiceway.request_id"
KEY_ID: Final = "sluiceway.key_id"
PROVIDER: Final = "sluiceway.provider"
DEPLOYMENT: Final = "sluiceway.deployment"
ATTEMPT: Final = "sluiceway.attempt"
ATTEMPT_STATUS: Final = "sluiceway.attempt.status"
ATTEMPT_NEXT: Final = "sluiceway.attempt.next"
ATTEMPT_LATENCY: Final = "sluiceway.attempt.latency"
ATTEMPTS: Final = "sluiceway.attempts"
ERROR_CODE: Final = "sluiceway.error.code"
COST: Final = "sluiceway.cost_usd"
UPSTREAM_DURATION: Final = "sluiceway.upstream_duration"
OVERHEAD: Final = "sluiceway.overhead"
DISCONNECTED: Final = "sluiceway.disconnected"

# Span events
EVENT_AUTH: Final = "sluiceway.auth"
EVENT_LIMIT: Final = "sluiceway.limit"
EVENT_FIRST_TOKEN: Final = "sluiceway.first_token"
EVENT_SESSION_LOGIN: Final = "sluiceway.session_login"

# RequestEnded.usage key -> attribute
USAGE: Final = (
    ("prompt_tokens", GEN_AI_USAGE_INPUT_TOKENS),
    ("completion_tokens", GEN_AI_USAGE_OUTPUT_TOKENS),
    ("cached_tokens", GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS),
    ("reasoning_tokens", GEN_AI_USAGE_REASONING_OUTPUT_TOKENS),
)
