"""Estimating a chat request's tokens before it is sent, and settling against the
``usage`` the provider reports after.

No tokenizer is shipped or downloaded: the estimate is deliberately rough and errs
high, because it is a reservation against a per-minute budget and the difference is
refunded (or charged) once the real usage arrives. The formula (docs/rate-limits.md):

- prompt = ceil(characters / CHARS_PER_TOKEN) + MESSAGE_OVERHEAD_TOKENS per message
  + REPLY_PRIMING_TOKENS + IMAGE_TOKENS per image part. Characters are those of every
  string the model reads: message text, names, tool-call names and arguments, tool
  definitions and ``response_format`` schemas (their keys and string values).
- completion = ``max_completion_tokens``, else ``max_tokens``, else
  ``default_completion_tokens`` (DEFAULT_COMPLETION_TOKENS), times ``n``.

Pure: no I/O; nothing here raises on a request or usage of the wrong shape (what is
not understood counts as nothing).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from oswitch.core.immutable import immutable

__all__ = [
    "CHARS_PER_TOKEN",
    "DEFAULT_COMPLETION_TOKENS",
    "IMAGE_TOKENS",
    "MESSAGE_OVERHEAD_TOKENS",
    "REPLY_PRIMING_TOKENS",
    "Settlement",
    "TokenEstimate",
    "Usage",
    "cost_of",
    "estimate_request",
    "read_usage",
    "settle",
]

# About four characters of English per token for the GPT and Claude tokenizers; code
# and other scripts run denser, which the settlement corrects.
CHARS_PER_TOKEN = 4
# OpenAI's cookbook counts 3 tokens of framing per message and 3 to prime the reply;
# one more per message covers a name or a tool-call wrapper.
MESSAGE_OVERHEAD_TOKENS = 4
REPLY_PRIMING_TOKENS = 3
# One image, whatever its size: Anthropic's ceiling is about 1,600 tokens (a 1.15
# megapixel image), above OpenAI's high-detail cost of a 1024x1024 image (765).
IMAGE_TOKENS = 1600
# A request that sets no completion limit reserves this many per choice.
DEFAULT_COMPLETION_TOKENS = 1024

_IMAGE_PART_TYPES = frozenset({"image_url", "image", "input_image"})
# Strings walked in tool definitions and schemas; past this the estimate stops growing
# rather than costing more than the request's own validation did.
_MAX_WALK = 100_000


@immutable(kw_only=True)
class TokenEstimate:
    """Tokens a request is expected to use: ``prompt_tokens`` it sends and at most
    ``completion_tokens`` it may receive."""

    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        """Prompt and completion together: what a tokens-per-minute budget reserves."""
        return self.prompt_tokens + self.completion_tokens


@immutable(kw_only=True)
class Usage:
    """What the provider reports a reply used, in one shape for both wire formats.

    ``prompt_tokens`` counts every prompt token, cached or not; ``cached_tokens`` of
    them were read from the provider's prompt cache and ``cache_write_tokens`` written
    to it (Anthropic only). ``counted_tokens`` is what the provider's tokens-per-minute
    limit counts: prompt plus completion for OpenAI-style usage (OpenAI counts cached
    tokens against TPM); for Anthropic, cache reads are left out, as its input-tokens
    limit does not count them.
    """

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    counted_tokens: int

    @property
    def total_tokens(self) -> int:
        """Every prompt and completion token."""
        return self.prompt_tokens + self.completion_tokens


@immutable(kw_only=True)
class Settlement:
    """The reservation made, what was used, and ``difference`` = used − reserved:
    positive to charge the budget more, negative to refund it."""

    reserved: int
    used: int

    @property
    def difference(self) -> int:
        """Tokens to charge (> 0) or refund (< 0)."""
        return self.used - self.reserved


def _count(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def _chars_in(value: object, budget: int = _MAX_WALK) -> int:
    """Characters of every string (and mapping key) under ``value``, walked without
    recursion; stops after ``budget`` containers and strings."""
    chars = 0
    stack = [value]
    steps = 0
    while stack and steps < budget:
        steps += 1
        item = stack.pop()
        if isinstance(item, str):
            chars += len(item)
        elif isinstance(item, Mapping):
            for key, inner in item.items():
                if isinstance(key, str):
                    chars += len(key)
                stack.append(inner)
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return chars


def _content(content: object) -> tuple[int, int]:
    """Characters and images in one message's content (a string or a list of parts)."""
    if isinstance(content, str):
        return len(content), 0
    if not isinstance(content, list):
        return 0, 0
    chars = 0
    images = 0
    for part in content:
        if isinstance(part, str):
            chars += len(part)
        elif isinstance(part, Mapping):
            kind = part.get("type")
            if kind in _IMAGE_PART_TYPES:
                images += 1
            else:
                text = part.get("text")
                if isinstance(text, str):
                    chars += len(text)
    return chars, images


def _message(message: object) -> tuple[int, int]:
    if type(message) is not dict and not isinstance(message, Mapping):
        return 0, 0
    chars, images = _content(message.get("content"))
    for key in ("name", "tool_call_id"):
        value = message.get(key)
        if isinstance(value, str):
            chars += len(value)
    for key in ("tool_calls", "function_call"):
        if key in message:
            chars += _chars_in(message[key])
    return chars, images


def estimate_request(
    request: Mapping[str, object],
    *,
    default_completion_tokens: int = DEFAULT_COMPLETION_TOKENS,
) -> TokenEstimate:
    """Estimate an OpenAI-shaped chat request's tokens (formula in the module docstring).

    A top-level ``system`` (Anthropic's place for it) is counted like a message. Never
    raises; parts it does not understand count as nothing.
    """
    messages = request.get("messages")
    listed = messages if isinstance(messages, list) else []
    system = request.get("system")
    if system is not None:
        listed = [{"content": system}, *listed]
    chars = 0
    images = 0
    for message in listed:
        more_chars, more_images = _message(message)
        chars += more_chars
        images += more_images
    for key in ("tools", "functions", "response_format"):
        if key in request:
            chars += _chars_in(request[key])
    prompt = (
        math.ceil(chars / CHARS_PER_TOKEN)
        + MESSAGE_OVERHEAD_TOKENS * len(listed)
        + REPLY_PRIMING_TOKENS
        + IMAGE_TOKENS * images
    )
    limit = _count(request.get("max_completion_tokens"))
    if limit is None:
        limit = _count(request.get("max_tokens"))
    if limit is None:
        limit = max(0, default_completion_tokens)
    choices = _count(request.get("n"))
    completion = limit * (choices if choices else 1)
    return TokenEstimate(prompt_tokens=prompt, completion_tokens=completion)


def read_usage(payload: object) -> Usage | None:
    """Read a reply's (or a final stream chunk's) usage: a mapping with ``usage``, or
    the usage mapping itself. Returns None when no known count is there.

    OpenAI shape: ``prompt_tokens``, ``completion_tokens``,
    ``prompt_tokens_details.cached_tokens``. Anthropic shape: ``input_tokens`` (not
    counting cache reads or writes), ``output_tokens``, ``cache_read_input_tokens``,
    ``cache_creation_input_tokens``; prompt_tokens is their sum. A missing count is 0.
    Never raises.
    """
    if type(payload) is not dict and not isinstance(payload, Mapping):
        return None
    usage = payload.get("usage", payload)
    if type(usage) is not dict and not isinstance(usage, Mapping):
        return None
    if "prompt_tokens" in usage or "completion_tokens" in usage:
        prompt = _count(usage.get("prompt_tokens")) or 0
        completion = _count(usage.get("completion_tokens")) or 0
        details = usage.get("prompt_tokens_details")
        cached = 0
        if details is not None and isinstance(details, Mapping):
            cached = min(prompt, _count(details.get("cached_tokens")) or 0)
        return Usage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            cached_tokens=cached,
            counted_tokens=prompt + completion,
        )
    if "input_tokens" in usage or "output_tokens" in usage:
        fresh = _count(usage.get("input_tokens")) or 0
        completion = _count(usage.get("output_tokens")) or 0
        cached = _count(usage.get("cache_read_input_tokens")) or 0
        written = _count(usage.get("cache_creation_input_tokens")) or 0
        return Usage(
            prompt_tokens=fresh + cached + written,
            completion_tokens=completion,
            cached_tokens=cached,
            cache_write_tokens=written,
            counted_tokens=fresh + written + completion,
        )
    return None


def settle(estimate: TokenEstimate, usage: Usage | None) -> Settlement:
    """Compare the reservation for ``estimate`` with what ``usage`` says was counted.

    Without usage (a stream that sent none, an attempt that failed before a reply)
    the reservation stands: ``used`` equals ``reserved`` and nothing moves, since
    the provider may have counted the request and oswitch cannot know how much.
    """
    reserved = estimate.total_tokens
    used = reserved if usage is None else usage.counted_tokens
    return Settlement(reserved=reserved, used=used)


def cost_of(
    usage: Usage, *, per_million_input: float | None, per_million_output: float | None
) -> float | None:
    """What ``usage`` cost at the target's prices (per million tokens; every prompt
    token, cached or not, at the input price: no price table is shipped), or None
    when the target has no price at all. A price left out counts as 0."""
    if per_million_input is None and per_million_output is None:
        return None
    return (
        usage.prompt_tokens * (per_million_input or 0.0)
        + usage.completion_tokens * (per_million_output or 0.0)
    ) / 1_000_000
