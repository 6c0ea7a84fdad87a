"""Estimating a chat request's tokens and settling against the reported usage."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from oswitch.core.tokens import (
    CHARS_PER_TOKEN,
    DEFAULT_COMPLETION_TOKENS,
    IMAGE_TOKENS,
    MESSAGE_OVERHEAD_TOKENS,
    REPLY_PRIMING_TOKENS,
    Settlement,
    TokenEstimate,
    Usage,
    estimate_request,
    read_usage,
    settle,
)


def test_text_prompt_and_max_tokens() -> None:
    """Prompt = ceil(chars / 4) + 4 per message + 3; completion = max_tokens."""
    request = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "You are terse."},  # 14 chars
            {"role": "user", "content": "Hello there!"},  # 12 chars
        ],
        "max_tokens": 50,
    }
    estimate = estimate_request(request)
    assert estimate == TokenEstimate(
        prompt_tokens=math.ceil(26 / CHARS_PER_TOKEN)
        + 2 * MESSAGE_OVERHEAD_TOKENS
        + REPLY_PRIMING_TOKENS,
        completion_tokens=50,
    )
    assert estimate.prompt_tokens == 18
    assert estimate.total_tokens == 68


def test_max_completion_tokens_wins_and_n_multiplies() -> None:
    """max_completion_tokens is preferred over max_tokens, and n choices reserve n times."""
    request = {"messages": [], "max_completion_tokens": 10, "max_tokens": 99, "n": 3}
    assert estimate_request(request).completion_tokens == 30


def test_no_completion_limit_uses_the_default() -> None:
    """A request without a completion limit reserves the documented default, or the
    caller's own default."""
    request = {"messages": [{"role": "user", "content": "x"}]}
    assert estimate_request(request).completion_tokens == DEFAULT_COMPLETION_TOKENS
    assert estimate_request(request, default_completion_tokens=7).completion_tokens == 7


def test_images_cost_a_flat_amount_and_text_parts_count() -> None:
    """Each image part costs IMAGE_TOKENS whatever its URL's length; text parts count
    by characters."""
    request = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "abcdefgh"},
                    {"type": "image_url", "image_url": {"url": "data:" + "A" * 100_000}},
                    {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
                ],
            }
        ],
        "max_tokens": 1,
    }
    estimate = estimate_request(request)
    assert estimate.prompt_tokens == 2 + MESSAGE_OVERHEAD_TOKENS + REPLY_PRIMING_TOKENS + (
        2 * IMAGE_TOKENS
    )


def test_tools_tool_calls_and_system_count() -> None:
    """Tool definitions, tool-call arguments and a top-level system prompt are read by
    the model, so their characters count."""
    bare = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    with_tools = {
        **bare,
        "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {}}}],
        "system": "Be brief, please, always.",
    }
    more = estimate_request(with_tools).prompt_tokens - estimate_request(bare).prompt_tokens
    assert more > MESSAGE_OVERHEAD_TOKENS
    call = {
        "messages": [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"function": {"name": "f", "arguments": "x" * 400}}],
            }
        ],
        "max_tokens": 1,
    }
    assert estimate_request(call).prompt_tokens >= 100


@given(
    request=st.dictionaries(
        st.sampled_from(["messages", "max_tokens", "max_completion_tokens", "n", "tools"]),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=20),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(st.text(max_size=8), inner, max_size=4)
            ),
            max_leaves=20,
        ),
    )
)
def test_estimate_never_raises_and_is_never_negative(request: dict[str, object]) -> None:
    """Whatever shape a request has, the estimate is a pair of non-negative counts."""
    estimate = estimate_request(request)
    assert estimate.prompt_tokens >= REPLY_PRIMING_TOKENS
    assert estimate.completion_tokens >= 0


def test_openai_usage_with_cached_tokens() -> None:
    """OpenAI usage counts prompt (cached included) and completion against the budget."""
    reply = {
        "usage": {
            "prompt_tokens": 2006,
            "completion_tokens": 300,
            "total_tokens": 2306,
            "prompt_tokens_details": {"cached_tokens": 1920},
        }
    }
    assert read_usage(reply) == Usage(
        prompt_tokens=2006, completion_tokens=300, cached_tokens=1920, counted_tokens=2306
    )


def test_anthropic_usage_with_cache_reads_and_writes() -> None:
    """Anthropic usage adds cache reads and writes to the prompt, and leaves cache reads
    out of what the per-minute limit counts."""
    usage = {
        "input_tokens": 50,
        "cache_read_input_tokens": 1000,
        "cache_creation_input_tokens": 200,
        "output_tokens": 30,
    }
    assert read_usage(usage) == Usage(
        prompt_tokens=1250,
        completion_tokens=30,
        cached_tokens=1000,
        cache_write_tokens=200,
        counted_tokens=280,
    )


def test_no_usage_or_garbage_usage() -> None:
    """A reply without usage gives None; negative, boolean or string counts read as 0."""
    assert read_usage({"choices": []}) is None
    assert read_usage({"usage": None}) is None
    assert read_usage("usage") is None
    odd = read_usage({"usage": {"prompt_tokens": -5, "completion_tokens": True}})
    assert odd == Usage(prompt_tokens=0, completion_tokens=0, counted_tokens=0)


def test_settle_refunds_and_charges() -> None:
    """Settling refunds an over-estimate, charges an under-estimate, and keeps the
    reservation when no usage came back."""
    estimate = TokenEstimate(prompt_tokens=100, completion_tokens=1000)
    refund = settle(estimate, Usage(prompt_tokens=90, completion_tokens=10, counted_tokens=100))
    assert refund == Settlement(reserved=1100, used=100)
    assert refund.difference == -1000
    charge = settle(estimate, Usage(prompt_tokens=900, completion_tokens=900, counted_tokens=1800))
    assert charge.difference == 700
    assert settle(estimate, None).difference == 0
