"""Each error class, end to end through open_switcher on the virtual clock."""

from __future__ import annotations

import re

import pytest
import trio

from oswitch import AllTargetsFailed, ErrorClass, RequestFailed
from oswitch.runtime.switcher import open_switcher
from oswitch.testing import (
    FakeProvider,
    bad_request,
    connect_error,
    context_too_long,
    error,
    invalid_key,
    malformed,
    model_overloaded,
    quota_exhausted,
    rate_limited,
    reply,
    server_error,
)
from support import chat, config, target

CLASS_CASES = [
    # (behaviour of key-a, class seen, condition of a afterwards)
    (rate_limited(5.0), ErrorClass.RATE_LIMITED, "CoolingDown"),
    (quota_exhausted(), ErrorClass.QUOTA_EXHAUSTED, "QuotaExhausted"),
    (invalid_key(), ErrorClass.AUTH_FAILURE, "ReauthRequired"),
    (
        error(403, {"error": {"type": "permission_error", "message": "no access to model"}}),
        ErrorClass.PERMISSION_FAILURE,
        "PolicyBlocked",
    ),
    (
        error(
            403,
            {
                "error": {
                    "code": "unsupported_country_region_territory",
                    "message": "Country, region, or territory not supported",
                    "type": "request_forbidden",
                }
            },
        ),
        ErrorClass.REGION_RESTRICTION,
        "PolicyBlocked",
    ),
    (model_overloaded(), ErrorClass.MODEL_UNAVAILABLE, "CoolingDown"),
    (server_error(502), ErrorClass.TRANSIENT_SERVER_FAILURE, "Healthy"),
    (connect_error(), ErrorClass.TRANSPORT_FAILURE, "Healthy"),
]


@pytest.mark.parametrize(
    ("behaviour", "expected", "condition"), CLASS_CASES, ids=[c[1].value for c in CLASS_CASES]
)
async def test_target_failure_fails_over_to_sibling(
    autojump_clock: object, behaviour: object, expected: ErrorClass, condition: str
) -> None:
    """A target-side failure on the first key is failed over at once to the healthy sibling."""
    fake = FakeProvider().on("key-a", behaviour).on("key-b", reply("from b"))  # type: ignore[arg-type]
    cfg = config(target("a", operator_priority=1), target("b"))
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        result = await switcher.complete(chat())
        assert trio.current_time() == 0.0
        assert result["choices"][0]["message"]["content"] == "from b"
        assert result["oswitch"]["target_id"] == "b"
        trace = switcher.inspect_request(result["oswitch"]["request_id"])
        assert [(a.target_id, a.error_class) for a in trace.attempts] == [
            ("a", expected),
            ("b", None),
        ]
        views = {v.target_id: v for v in switcher.list_targets()}
        assert views["a"].condition == condition
        assert views["a"].failures_by_class == {expected.value: 1}


@pytest.mark.parametrize(
    ("behaviour", "expected", "status"),
    [
        (bad_request("Invalid 'messages[0].role': 'robot'."), ErrorClass.INVALID_REQUEST, 400),
        (
            error(
                400,
                {
                    "error": {
                        "message": "The response was filtered due to the prompt triggering "
                        "Azure OpenAI's content management policy.",
                        "type": None,
                        "param": "prompt",
                        "code": "content_filter",
                        "status": 400,
                    }
                },
            ),
            ErrorClass.POLICY_FAILURE,
            400,
        ),
    ],
    ids=["InvalidRequest", "PolicyFailure"],
)
async def test_request_fault_returns_to_caller_without_retry(
    autojump_clock: object, behaviour: object, expected: ErrorClass, status: int
) -> None:
    """A fault of the request itself reaches the caller once, with the provider's reason."""
    fake = FakeProvider().on("key-a", behaviour).on("key-b", reply())  # type: ignore[arg-type]
    cfg = config(target("a", operator_priority=1), target("b"))
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        with pytest.raises(RequestFailed) as caught:
            await switcher.complete(chat(), request_id="r1")
    assert caught.value.error_class is expected
    assert caught.value.status == status
    assert caught.value.request_id == "r1"
    assert caught.value.message in str(caught.value)
    assert fake.calls_to("key-a") == 1
    assert fake.calls_to("key-b") == 0


async def test_auth_failure_refreshes_key_from_environment_once(
    autojump_clock: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 401 re-reads the key variable; a new key is retried on the same target at once."""
    monkeypatch.setenv("FAKE_KEY_A", "old-key")
    fake = FakeProvider().on("old-key", invalid_key()).on("new-key", reply("fresh"))
    cfg = config(
        target("a", api_key=None, api_key_env="FAKE_KEY_A", operator_priority=1),
        target("b"),
    )
    fake.on("key-b", reply("from b"))
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        monkeypatch.setenv("FAKE_KEY_A", "new-key")
        result = await switcher.complete(chat())
        assert result["oswitch"]["target_id"] == "a"
        assert result["choices"][0]["message"]["content"] == "fresh"
        trace = switcher.inspect_request(result["oswitch"]["request_id"])
        assert [a.decision for a in trace.attempts] == ["retry", "return"]
        assert switcher.list_targets()[0].condition == "Healthy"


async def test_auth_failure_with_unchanged_key_is_reauth_required(
    autojump_clock: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second 401 with the same key marks the target ReauthRequired until a new key appears."""
    monkeypatch.setenv("FAKE_KEY_A", "old-key")
    fake = FakeProvider().on("old-key", invalid_key()).on("new-key", reply("fresh"))
    fake.on("key-b", reply("from b"))
    cfg = config(
        target("a", api_key=None, api_key_env="FAKE_KEY_A", operator_priority=1), target("b")
    )
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        result = await switcher.complete(chat())
        assert result["oswitch"]["target_id"] == "b"
        views = {v.target_id: v for v in switcher.list_targets()}
        assert views["a"].condition == "ReauthRequired"
        assert views["a"].key_source == "env FAKE_KEY_A (set)"
        # The actor notices a rotated key on its own, without an operator.
        monkeypatch.setenv("FAKE_KEY_A", "new-key")
        await trio.sleep(10)
        views = {v.target_id: v for v in switcher.list_targets()}
        assert views["a"].condition == "Healthy"
        result = await switcher.complete(chat())
        assert result["oswitch"]["target_id"] == "a"


async def test_auth_failure_after_the_key_variable_was_unset_waits_for_a_new_key(
    autojump_clock: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 401 after the key's variable was unset makes the target ReauthRequired, and it
    comes back by itself once the variable holds a new key (the credential watch runs)."""
    monkeypatch.setenv("FAKE_KEY_A", "old-key")
    fake = FakeProvider().on("old-key", invalid_key()).on("new-key", reply("fresh"))
    fake.on("key-b", reply("from b"))
    cfg = config(
        target("a", api_key=None, api_key_env="FAKE_KEY_A", operator_priority=1), target("b")
    )
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        monkeypatch.delenv("FAKE_KEY_A")
        result = await switcher.complete(chat())
        assert result["oswitch"]["target_id"] == "b"
        assert switcher.list_targets()[0].condition == "ReauthRequired"
        monkeypatch.setenv("FAKE_KEY_A", "new-key")
        await trio.sleep(10)
        assert switcher.list_targets()[0].condition == "Healthy"
        result = await switcher.complete(chat())
        assert result["oswitch"]["target_id"] == "a"
    assert fake.calls_to("old-key") == 1


async def test_a_reload_onto_an_unset_key_variable_waits_for_a_new_key(
    autojump_clock: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reload pointing a target at an unset key variable makes it ReauthRequired (with a
    target_condition event), and it comes back by itself once the variable holds a key."""
    monkeypatch.delenv("FAKE_KEY_LATER", raising=False)
    fake = FakeProvider().on("later-key", reply("fresh")).on("key-b", reply("from b"))
    first = config(target("a", operator_priority=1), target("b"))
    moved = target("a", api_key=None, api_key_env="FAKE_KEY_LATER", operator_priority=1)
    async with open_switcher(first, transport=fake.transport()) as switcher:
        seen: list[tuple[str, dict[str, object]]] = []
        switcher.events.add_listener(lambda name, fields: seen.append((name, dict(fields))))
        await switcher.reload_config(config(moved, target("b")))
        assert switcher.list_targets()[0].condition == "ReauthRequired"
        assert ("target_condition", "ReauthRequired") in [
            (name, fields.get("condition")) for name, fields in seen
        ]
        monkeypatch.setenv("FAKE_KEY_LATER", "later-key")
        await trio.sleep(10)
        assert switcher.list_targets()[0].condition == "Healthy"
        result = await switcher.complete(chat())
        assert result["oswitch"]["target_id"] == "a"


async def test_missing_key_variable_starts_reauth_required(
    autojump_clock: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A target whose key variable is unset starts ReauthRequired and takes no traffic."""
    monkeypatch.delenv("FAKE_MISSING_KEY", raising=False)
    fake = FakeProvider().on("key-b", reply())
    cfg = config(
        target("a", api_key=None, api_key_env="FAKE_MISSING_KEY", operator_priority=1),
        target("b"),
    )
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        views = {v.target_id: v for v in switcher.list_targets()}
        assert views["a"].condition == "ReauthRequired"
        assert views["a"].key_source == "env FAKE_MISSING_KEY (missing)"
        result = await switcher.complete(chat())
        assert result["oswitch"]["target_id"] == "b"
    assert len(fake.calls) == 1


async def test_context_refusal_walks_fallbacks(autojump_clock: object) -> None:
    """A context-window refusal is never resent to the same model: the fallback model serves."""
    fake = FakeProvider()
    fake.on("key-a", context_too_long()).on("key-a2", context_too_long())
    fake.on("key-big", reply("long answer"))
    cfg = config(
        target("a"),
        target("a2"),
        target("big", model="gpt-4.1", context_window=1_000_000),
        fallbacks={"gpt-4o": ("gpt-4.1",)},
    )
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        result = await switcher.complete(chat())
    assert result["model"] == "gpt-4.1"
    assert result["oswitch"]["target_id"] == "big"
    # Only one of the two gpt-4o keys was tried: a sibling of the same model is no bigger.
    assert fake.calls_to("key-a") + fake.calls_to("key-a2") == 1


async def test_context_refusal_without_fallback_is_request_failed(autojump_clock: object) -> None:
    """With no fallback chain a context refusal reaches the caller as RequestTooLarge."""
    fake = FakeProvider().on("key-a", context_too_long()).on("key-b", context_too_long())
    cfg = config(target("a"), target("b"))
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        with pytest.raises(RequestFailed) as caught:
            await switcher.complete(chat())
    assert caught.value.error_class is ErrorClass.REQUEST_TOO_LARGE
    assert "maximum context length" in caught.value.message
    assert len(fake.calls) == 1


async def test_per_minute_refusal_goes_to_sibling_key(autojump_clock: object) -> None:
    """A request too large for one key's per-minute budget may go to a sibling key."""
    too_big = error(
        429,
        {
            "error": {
                "message": "Request too large for gpt-4o in organization org-x on tokens per "
                "min (TPM): Limit 30000, Requested 45000.",
                "type": "tokens",
                "param": None,
                "code": "rate_limit_exceeded",
            }
        },
    )
    fake = FakeProvider().on("key-a", too_big).on("key-b", reply("b"))
    cfg = config(target("a", operator_priority=1), target("b"))
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        result = await switcher.complete(chat())
        trace = switcher.inspect_request(result["oswitch"]["request_id"])
    assert result["oswitch"]["target_id"] == "b"
    assert trace.attempts[0].error_class is ErrorClass.REQUEST_TOO_LARGE


async def test_only_target_rate_limited_waits_out_short_delay(autojump_clock: object) -> None:
    """With no sibling, a short provider delay is waited out exactly, then the same key serves."""
    fake = FakeProvider().on("key-a", rate_limited(3.0), reply("later"))
    async with open_switcher(config(target("a")), transport=fake.transport()) as switcher:
        result = await switcher.complete(chat())
        assert trio.current_time() == 3.0
    assert result["choices"][0]["message"]["content"] == "later"


async def test_long_delay_beyond_max_wait_fails_at_once(autojump_clock: object) -> None:
    """A delay longer than max_wait_ms ends the request at once with the delay as retry_after."""
    fake = FakeProvider().on("key-a", rate_limited(60.0))
    async with open_switcher(config(target("a")), transport=fake.transport()) as switcher:
        with pytest.raises(AllTargetsFailed) as caught:
            await switcher.complete(chat())
        assert trio.current_time() == 0.0
    assert caught.value.error_class is ErrorClass.RATE_LIMITED
    assert caught.value.retry_after == 60.0
    assert caught.value.attempts == 1


async def test_unknown_model_is_request_failed_404(autojump_clock: object) -> None:
    """A model no target serves ends at once, before any upstream call, as
    RequestFailed(InvalidRequest, status 404) naming the model as OpenAI does."""
    fake = FakeProvider().on("key-a", reply())
    async with open_switcher(config(target("a")), transport=fake.transport()) as switcher:
        with pytest.raises(RequestFailed) as caught:
            await switcher.complete(chat(model="llama-3"))
        assert trio.current_time() == 0.0
        trace = switcher.inspect_request(caught.value.request_id or "")
        assert switcher.list_targets()[0].attempts == 0
    assert caught.value.error_class is ErrorClass.INVALID_REQUEST
    assert caught.value.status == 404
    assert caught.value.message == "The model `llama-3` does not exist or no target serves it."
    assert (trace.outcome, trace.attempts) == ("RequestFailed", ())
    assert fake.calls == []


@pytest.mark.parametrize(
    ("request_body", "problem"),
    [
        (
            {"messages": [{"role": "user", "content": "x"}]},
            "required: a non-empty string @ $.model",
        ),
        (
            {"model": "gpt-4o", "messages": []},
            "required: a non-empty array of messages @ $.messages",
        ),
        (["not", "a", "dict"], "must be a JSON object (got list) @ $"),
    ],
)
async def test_malformed_request_is_invalid_request(
    autojump_clock: object, request_body: object, problem: str
) -> None:
    """A request that is not a chat request is refused before any target is tried."""
    fake = FakeProvider().on("key-a", reply())
    async with open_switcher(config(target("a")), transport=fake.transport()) as switcher:
        with pytest.raises(RequestFailed, match=re.escape(problem)) as caught:
            await switcher.complete(request_body)  # type: ignore[arg-type]
    assert caught.value.error_class is ErrorClass.INVALID_REQUEST
    assert fake.calls == []


async def test_provider_error_text_is_scrubbed_of_keys(autojump_clock: object) -> None:
    """A provider echoing the key in its message never lets the key reach the caller."""
    echo = bad_request("Invalid key sk-live-SECRET123 for this project")
    fake = FakeProvider().on("sk-live-SECRET123", echo)
    cfg = config(target("a", key="sk-live-SECRET123"))
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        with pytest.raises(RequestFailed) as caught:
            await switcher.complete(chat())
        listing = repr(switcher.list_targets())
    assert "SECRET123" not in str(caught.value)
    assert "***" in str(caught.value)
    assert "SECRET123" not in listing


async def test_error_object_inside_a_200_is_classified(autojump_clock: object) -> None:
    """A gateway answering 200 with an error object is classified by it, not taken as a reply."""
    overloaded = error(
        200, {"error": {"code": 429, "message": "Rate limit exceeded: free-models-per-min."}}
    )
    fake = FakeProvider().on("key-a", overloaded).on("key-b", reply("b"))
    cfg = config(target("a", operator_priority=1), target("b"))
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        result = await switcher.complete(chat())
        trace = switcher.inspect_request(result["oswitch"]["request_id"])
    assert result["oswitch"]["target_id"] == "b"
    assert trace.attempts[0].error_class is ErrorClass.RATE_LIMITED
    assert trace.attempts[0].note == "200 error"


async def test_malformed_200_is_a_transient_failure(autojump_clock: object) -> None:
    """A 200 whose body is not a reply counts against the target and fails over."""
    fake = FakeProvider().on("key-a", malformed()).on("key-b", reply("b"))
    cfg = config(target("a", operator_priority=1), target("b"))
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        result = await switcher.complete(chat())
        trace = switcher.inspect_request(result["oswitch"]["request_id"])
    assert result["oswitch"]["target_id"] == "b"
    assert trace.attempts[0].error_class is ErrorClass.TRANSIENT_SERVER_FAILURE
    assert trace.attempts[0].note == "malformed"


async def test_malformed_request_keeps_its_id_and_trace(autojump_clock: object) -> None:
    """A request refused for its shape still carries the caller's id and leaves a trace."""
    fake = FakeProvider().on("key-a", reply())
    async with open_switcher(config(target("a")), transport=fake.transport()) as switcher:
        with pytest.raises(RequestFailed) as caught:
            await switcher.complete({"messages": []}, request_id="r-bad")
        assert caught.value.request_id == "r-bad"
        assert switcher.inspect_request("r-bad").outcome == "RequestFailed"


async def test_fallback_hop_costs_one_failover_not_two(autojump_clock: object) -> None:
    """With failover_budget 1 the fallback model is reached: the hop is the failover."""
    fake = FakeProvider().on("key-a", context_too_long()).on("key-big", reply("big"))
    cfg = config(
        target("a"),
        target("big", model="gpt-4.1"),
        fallbacks={"gpt-4o": ("gpt-4.1",)},
        failover_budget=1,
    )
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        result = await switcher.complete(chat())
    assert result["oswitch"]["target_id"] == "big"


async def test_context_refusal_tries_a_larger_sibling_of_the_same_model(
    autojump_clock: object,
) -> None:
    """A context refusal from a known small window goes to a same-model target with more room."""
    fake = FakeProvider().on("key-small", context_too_long()).on("key-large", reply("large"))
    cfg = config(
        target("small", context_window=8192, operator_priority=1),
        target("large", context_window=128_000),
    )
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        result = await switcher.complete(chat())
    assert result["oswitch"]["target_id"] == "large"


async def test_nothing_eligible_because_rate_limited_says_so(autojump_clock: object) -> None:
    """A request that finds every key cooling off a rate limit fails as RateLimited."""
    fake = FakeProvider().on("key-a", rate_limited(60.0)).on("key-b", rate_limited(60.0))
    async with open_switcher(config(target("a"), target("b")), transport=fake.transport()) as s:
        with pytest.raises(AllTargetsFailed):
            await s.complete(chat())
        with pytest.raises(AllTargetsFailed) as caught:
            await s.complete(chat())
    assert caught.value.attempts == 0
    assert caught.value.error_class is ErrorClass.RATE_LIMITED
    assert caught.value.retry_after == 60.0
    assert "all rate-limited" in str(caught.value)
