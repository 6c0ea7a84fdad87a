"""What providers say when they refuse: the structured error codes and the message
phrases the classifier (oswitch.core.classify) looks for, and what an in-stream error
type stands for as an HTTP status.

Structured codes are compared lower-cased; phrases are lower-case substrings of the
message, the documented last resort (docs/error-classes.md): phrase lists rot, so
they only decide what the structured fields leave open. Pure data, no logic.
"""

from __future__ import annotations

import re

# --- structured codes (compared lower-cased) ---------------------------------------

REGION_CODES = frozenset({"unsupported_country_region_territory", "unsupported_country"})
POLICY_CODES = frozenset(
    {"content_filter", "content_policy_violation", "responsibleaipolicyviolation"}
)
CONTEXT_CODES = frozenset(
    {
        "context_length_exceeded",
        "context_window_exceeded",
        "request_too_large",
        "string_above_max_length",
    }
)
AUTH_CODES = frozenset(
    {
        "invalid_api_key",
        "authentication_error",
        "api_key_invalid",
        "unauthenticated",
        "invalid_authentication",
    }
)
QUOTA_CODES = frozenset(
    {
        "insufficient_quota",
        "billing_error",
        "billing_hard_limit_reached",
        "insufficient_credits",
        "credit_balance_exhausted",
    }
)
RATE_CODES = frozenset(
    {
        "rate_limit_exceeded",
        "rate_limit_error",
        "rate_limited",
        "ratelimitexceeded",
        "resource_exhausted",
        "too_many_requests",
    }
)
MODEL_CODES = frozenset(
    {
        "model_not_found",
        "deploymentnotfound",
        "overloaded_error",
        "model_not_available",
        "capacity_exceeded",  # Groq's flex tier at capacity (status 498)
    }
)
# Generic "not found" types only mean a missing model on a 404 (or in a stream).
NOT_FOUND_CODES = frozenset({"not_found_error", "notfounderror", "not_found"})
PERMISSION_CODES = frozenset(
    {"permission_error", "permission_denied", "permissiondenied", "forbidden", "request_forbidden"}
)

# --- phrases: the documented last resort (lower-case substrings) --------------------

REGION_PHRASES = (
    "user location is not supported",
    "country, region, or territory not supported",
    "unsupported_country_region_territory",
)
POLICY_PHRASES = (
    "content management policy",
    "content policy",
    "safety system",
    "usage policy",
    "your input was flagged",
)
CONTEXT_PHRASES = (
    "maximum context length",
    "context length",
    "context window",
    "exceed context limit",  # Anthropic: "input length and `max_tokens` exceed context limit"
    "prompt is too long",
    "input is too long",
    "input token count",
    "exceeds the maximum number of tokens",
    "request too large",
    "request entity too large",
    "payload too large",
)
QUOTA_PHRASES = (
    "exceeded your current quota",
    "check your plan and billing",
    "insufficient_quota",
    "insufficient balance",
    "insufficient credits",
    "credit balance is too low",
    "requires more credits",
    "api usage limits",
)
AUTH_PHRASES = (
    "incorrect api key",
    "invalid api key",
    "api key not valid",
    "api key not found",
    "invalid x-api-key",
    "invalid subscription key",
)
MODEL_PHRASES = (
    "does not exist",
    "not found",
    "is not a valid model",
    "no such model",
    "unknown model",
)
OVERLOAD_PHRASES = ("overloaded", "high demand", "over capacity")
# Inside a 429: the request alone is bigger than the per-minute budget.
TOO_LARGE_FOR_BUDGET = (
    "request too large",
    "reduce your message size",
    "must be reduced in order to run",
)
# No trailing word boundary: "per_minute_per_project" (Vertex) must match.
PER_MINUTE = re.compile(r"per[ _]?minute|per[ _]?min(?![a-z])|\((?:tpm|rpm)\)|per[ _]?second")
PER_DAY = re.compile(r"per[ _]?day|\((?:tpd|rpd)\)")

# Exception class names (anywhere on the MRO) for a request that never left.
CONNECT_FAILURE_NAMES = frozenset(
    {
        "ConnectError",
        "ConnectTimeout",
        "ConnectionRefusedError",
        "gaierror",
        "UnsupportedProtocol",
        "InvalidURL",
    }
)

# What an in-stream error type stands for, as an HTTP status.
STREAM_TYPE_STATUS: dict[str, int] = {
    "overloaded_error": 529,
    "api_error": 500,
    "server_error": 500,
    "internal": 500,
    "unavailable": 503,
    "timeout_error": 504,
    "rate_limit_error": 429,
    "rate_limit_exceeded": 429,
    "resource_exhausted": 429,
    "insufficient_quota": 429,
    "invalid_request_error": 400,
    "invalid_argument": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
}
