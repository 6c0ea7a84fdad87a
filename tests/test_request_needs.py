"""What a request asks of a target, read from the request dict (runtime/router.py)."""

from __future__ import annotations

from typing import Any

import pytest

from oswitch.runtime.router import CHAT_ONLY, RequestNeeds, request_needs

TEXT = {"role": "user", "content": "hi"}
IMAGE_PART = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}


def _request(*messages: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"model": "m", "messages": list(messages or (TEXT,)), **fields}


@pytest.mark.parametrize(
    ("request_body", "capabilities", "require", "avoid"),
    [
        (_request(), {"chat"}, set(), set()),
        (_request(tools=[{"type": "function"}]), {"chat", "tools"}, set(), set()),
        (_request(functions=[{"name": "f"}]), {"chat", "tools"}, set(), set()),
        (_request(tools=[]), {"chat"}, set(), set()),
        (
            _request(TEXT, {"role": "tool", "tool_call_id": "c", "content": "42"}),
            {"chat", "tools"},
            set(),
            set(),
        ),
        (
            _request({"role": "assistant", "tool_calls": [{"id": "c"}]}),
            {"chat", "tools"},
            set(),
            set(),
        ),
        (
            _request({"role": "user", "content": [{"type": "text", "text": "a"}, IMAGE_PART]}),
            {"chat", "vision"},
            set(),
            set(),
        ),
        (
            _request({"role": "user", "content": [{"type": "image", "source": {}}]}),
            {"chat", "vision"},
            set(),
            set(),
        ),
        (
            _request({"role": "user", "content": [{"type": "text", "text": "no image"}]}),
            {"chat"},
            set(),
            set(),
        ),
        (_request(oswitch={"require_tags": "eu"}), {"chat"}, {"eu"}, set()),
        (_request(oswitch={"avoid_tags": ["beta", "slow"]}), {"chat"}, set(), {"beta", "slow"}),
        (_request(oswitch={"require_tags": None}), {"chat"}, set(), set()),
        (_request(oswitch="not an object"), {"chat"}, set(), set()),
        (
            _request(
                {"role": "user", "content": [IMAGE_PART]},
                tools=[{"type": "function"}],
                oswitch={"require_tags": ["eu"], "avoid_tags": "beta"},
            ),
            {"chat", "tools", "vision"},
            {"eu"},
            {"beta"},
        ),
    ],
)
def test_needs_are_read_from_tools_images_and_routing_tags(
    request_body: dict[str, Any], capabilities: set[str], require: set[str], avoid: set[str]
) -> None:
    """Tools (declared, called or answered) need ``tools``, an image part ``vision``,
    and the request's own ``oswitch`` object gives the tags it requires and avoids."""
    assert request_needs(request_body) == RequestNeeds(
        capabilities=frozenset(capabilities),
        require_tags=frozenset(require),
        avoid_tags=frozenset(avoid),
    )


def test_a_plain_chat_request_shares_one_needs_value() -> None:
    """Every plain chat request gets the same needs object, equal to one built anew,
    so the router's pool cache finds it without hashing fresh sets."""
    first = request_needs(_request())
    second = request_needs(_request(TEXT, {"role": "assistant", "content": "hello"}))
    assert first is CHAT_ONLY and second is CHAT_ONLY
    assert RequestNeeds(capabilities=frozenset({"chat"})) == CHAT_ONLY
    assert hash(CHAT_ONLY) == hash(RequestNeeds(capabilities=frozenset({"chat"})))
