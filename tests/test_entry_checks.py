"""What the switcher decides at a request's entry, before routing: a model no target
serves, every target keyless, and what ``models()`` lists (virtual clock)."""

from __future__ import annotations

import logging
import os
import re
from typing import Any

import pytest
import trio
import trio.testing

from oswitch import AllTargetsFailed, ErrorClass, RequestFailed, parse_config
from oswitch.config import SwitcherConfig
from oswitch.runtime.entry import new_request_id
from oswitch.runtime.keys import MAX_NAMED, no_api_key_message
from oswitch.runtime.switcher import open_switcher
from oswitch.runtime.target import CREDENTIAL_POLL_S
from oswitch.testing import (
    Behaviour,
    FakeProvider,
    error,
    rate_limited,
    reply,
    server_error,
    stream,
)
from support import chat, config, target

UNKNOWN = "The model `llama-3` does not exist or no target serves it."


def osw_user(**providers_extra: Any) -> SwitcherConfig:
    """o-switcher's getting-started shape: several keys for one provider, each read
    from a variable, all serving gpt-4o (the models list names it)."""
    entry = {"api": "openai", "models": {"gpt-4o": {}}}
    return parse_config(
        {
            "provider": {
                "openai-work": {**entry},
                "openai-personal": {**entry, "apiKey": "{env:PERSONAL_KEY}"},
                **providers_extra,
            },
            "plugin": ["@apolenkov/o-switcher@latest"],
        }
    )


@pytest.fixture
def no_keys(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("OPENAI_API_KEY", "PERSONAL_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


# ---- a model no target serves ---------------------------------------------------------


async def test_unknown_model_stream_is_refused_at_async_with(autojump_clock: object) -> None:
    """A stream for a model no target serves raises RequestFailed (404) at ``async with``,
    with no upstream call, and is traced as a failed request."""
    fake = FakeProvider().on("key-a", stream())
    async with open_switcher(config(target("a")), transport=fake.transport()) as switcher:
        with pytest.raises(RequestFailed) as caught:
            async with switcher.stream(chat(model="llama-3"), request_id="r-stream"):
                raise AssertionError("never entered")
        trace = switcher.inspect_request("r-stream")
        statistics = switcher.statistics()
    assert (caught.value.error_class, caught.value.status) == (ErrorClass.INVALID_REQUEST, 404)
    assert caught.value.message == UNKNOWN
    assert (trace.outcome, trace.model, trace.stream) == ("RequestFailed", "llama-3", True)
    assert (statistics.requests, statistics.failed) == (1, 1)
    assert fake.calls == []


@pytest.mark.parametrize(
    "fallbacks",
    [{"llama-3": ("gpt-4o",)}, {"*": ("gpt-4o",)}],
    ids=["named-chain", "default-chain"],
)
async def test_a_fallback_chain_to_a_served_model_is_not_unknown(
    autojump_clock: object, fallbacks: dict[str, tuple[str, ...]]
) -> None:
    """A model no target serves whose ``fallbacks`` chain (its own, or ``"*"``) reaches a
    served model is routed down the chain, not refused."""
    fake = FakeProvider().on("key-a", reply("from the fallback"))
    cfg = config(target("a"), fallbacks=fallbacks)
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        answer = await switcher.complete(chat(model="llama-3"))
    assert (answer["model"], answer["choices"][0]["message"]["content"]) == (
        "gpt-4o",
        "from the fallback",
    )


async def test_a_chain_that_reaches_no_served_model_is_unknown(autojump_clock: object) -> None:
    """A ``fallbacks`` chain made only of models nobody serves does not save the request."""
    fake = FakeProvider().on("key-a", reply())
    cfg = config(target("a"), fallbacks={"llama-3": ("mistral",), "*": ("qwen",)})
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        with pytest.raises(RequestFailed) as caught:
            await switcher.complete(chat(model="llama-3"))
    assert caught.value.message == UNKNOWN
    assert fake.calls == []


async def test_a_reload_changes_which_models_a_chain_reaches(autojump_clock: object) -> None:
    """Whether a model is known, and where its chain leads, is decided by the config in
    force: a reload that adds a fallback makes an unknown model served, and one that
    takes it away makes it unknown again, though both were asked before."""
    fake = FakeProvider().on("key-a", reply("served"))
    cfg = config(target("a"))
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        with pytest.raises(RequestFailed):
            await switcher.complete(chat(model="llama-3"))
        await switcher.reload_config(config(target("a"), fallbacks={"llama-3": ("gpt-4o",)}))
        answer = await switcher.complete(chat(model="llama-3"))
        await switcher.reload_config(cfg)
        with pytest.raises(RequestFailed) as caught:
            await switcher.complete(chat(model="llama-3"))
    assert answer["model"] == "gpt-4o"
    assert caught.value.message == UNKNOWN


async def test_a_passthrough_target_serves_any_model(autojump_clock: object) -> None:
    """With a passthrough target (no ``model``), no model name is unknown."""
    fake = FakeProvider().on("key-p", reply())
    cfg = config(target("a"), target("p", model=None))
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        answer = await switcher.complete(chat(model="llama-3"))
    assert answer["oswitch"]["target_id"] == "p"


def upstream_unknown_model(model: str = "gpt-5-typo") -> Behaviour:
    """OpenAI's documented answer to a model that does not exist."""
    return error(
        404,
        {
            "error": {
                "message": f"The model `{model}` does not exist or you do not have access to it.",
                "type": "invalid_request_error",
                "param": None,
                "code": "model_not_found",
            }
        },
    )


async def test_passthrough_targets_that_all_say_unknown_model_give_a_404(
    autojump_clock: object,
) -> None:
    """Passthrough targets take any name; when every one tried answers OpenAI's 404
    model_not_found, the caller gets RequestFailed(InvalidRequest, 404), not a retryable
    AllTargetsFailed (streams too, at ``async with``)."""
    fake = (
        FakeProvider().on("key-p", upstream_unknown_model()).on("key-q", upstream_unknown_model())
    )
    cfg = config(target("p", model=None), target("q", model=None))
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        with pytest.raises(RequestFailed) as caught:
            await switcher.complete(chat(model="gpt-5-typo"), request_id="r-typo")
        trace = switcher.inspect_request("r-typo")
        with pytest.raises(RequestFailed) as streamed:
            async with switcher.stream(chat(model="gpt-5-typo-2", stream=True)):
                raise AssertionError("never entered")
    assert (caught.value.error_class, caught.value.status) == (ErrorClass.INVALID_REQUEST, 404)
    assert caught.value.message == "The model `gpt-5-typo` does not exist or no target serves it."
    assert trace.outcome == "RequestFailed"
    assert [(a.error_class, a.status) for a in trace.attempts] == [
        (ErrorClass.MODEL_UNAVAILABLE, 404),
        (ErrorClass.MODEL_UNAVAILABLE, 404),
    ]
    assert streamed.value.status == 404


async def test_a_404_from_some_targets_only_stays_all_targets_failed(
    autojump_clock: object,
) -> None:
    """When another target failed otherwise (a 5xx), the model may exist: the request
    ends as AllTargetsFailed, as before."""
    fake = FakeProvider().on("key-p", upstream_unknown_model()).on("key-q", server_error())
    cfg = config(target("p", model=None), target("q", model=None), retry_budget=0)
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        with pytest.raises(AllTargetsFailed):
            await switcher.complete(chat(model="gpt-5-typo"))


# ---- no target has its key -----------------------------------------------------------


async def test_every_candidate_keyless_fails_at_once_naming_the_variables(
    autojump_clock: object, no_keys: pytest.MonkeyPatch
) -> None:
    """When every target for the model lacks its key variable, the request fails at once
    (no waiting for max_wait_ms, no upstream call) naming each variable and its target."""
    fake = FakeProvider()
    async with open_switcher(osw_user(), transport=fake.transport()) as switcher:
        with pytest.raises(AllTargetsFailed) as caught:
            await switcher.complete(chat(), request_id="r-keys")
        assert trio.current_time() == 0.0
        trace = switcher.inspect_request("r-keys")
    assert str(caught.value) == (
        "no target for 'gpt-4o' has an API key: "
        "set OPENAI_API_KEY (openai-work), PERSONAL_KEY (openai-personal)"
    )
    assert caught.value.missing_keys == (
        ("openai-work", "OPENAI_API_KEY"),
        ("openai-personal", "PERSONAL_KEY"),
    )
    assert (caught.value.attempts, caught.value.error_class) == (0, None)
    assert not caught.value.deadline_exceeded
    assert (trace.outcome, trace.attempts) == ("AllTargetsFailed", ())
    assert fake.calls == []


async def test_keyless_refusal_covers_the_fallback_chain(
    autojump_clock: object, no_keys: pytest.MonkeyPatch
) -> None:
    """Targets of the fallback models count as candidates: keyless too, they are named;
    one with its key lets the request go down the chain."""
    mapping = {
        "provider": {
            "openai-work": {"api": "openai", "models": {"gpt-4o": {}}},
            "mini": {"api": "openai", "apiKey": "{env:MINI_KEY}", "models": {"gpt-4o-mini": {}}},
        },
        "switcher": {"fallbacks": {"gpt-4o": ["gpt-4o-mini"]}},
    }
    no_keys.delenv("MINI_KEY", raising=False)
    fake = FakeProvider().on("sk-mini", reply("from mini"))
    async with open_switcher(parse_config(mapping), transport=fake.transport()) as switcher:
        with pytest.raises(AllTargetsFailed) as caught:
            await switcher.complete(chat())
    assert str(caught.value) == (
        "no target for 'gpt-4o' has an API key: set OPENAI_API_KEY (openai-work), MINI_KEY (mini)"
    )
    no_keys.setenv("MINI_KEY", "sk-mini")
    async with open_switcher(parse_config(mapping), transport=fake.transport()) as switcher:
        answer = await switcher.complete(chat())
    assert (answer["oswitch"]["target_id"], answer["model"]) == ("mini", "gpt-4o-mini")


async def test_one_target_with_a_key_means_ordinary_routing(
    autojump_clock: object, no_keys: pytest.MonkeyPatch
) -> None:
    """A keyed target that is only cooling down is not a key problem: the request waits
    for it as usual and is served, the keyless sibling never called."""
    no_keys.setenv("PERSONAL_KEY", "sk-personal")
    fake = FakeProvider().on("sk-personal", rate_limited(2.0), reply("after the cooldown"))
    async with open_switcher(osw_user(), transport=fake.transport()) as switcher:
        answer = await switcher.complete(chat())
        waited = trio.current_time()
    assert answer["oswitch"]["target_id"] == "openai-personal"
    assert waited == 2.0
    assert [call.route for call in fake.calls] == ["sk-personal", "sk-personal"]


async def test_a_key_set_later_is_picked_up(
    autojump_clock: object, no_keys: pytest.MonkeyPatch
) -> None:
    """Once the variable is set, the target re-reads it and the next request is served."""
    fake = FakeProvider().on("sk-work", reply("now keyed"))
    async with open_switcher(osw_user(), transport=fake.transport()) as switcher:
        with pytest.raises(AllTargetsFailed):
            await switcher.complete(chat())
        no_keys.setenv("OPENAI_API_KEY", "sk-work")
        await trio.sleep(CREDENTIAL_POLL_S)
        # The poll is due now: the request comes once the watcher has run, whichever
        # of the two tasks woke first.
        await trio.testing.wait_all_tasks_blocked()
        answer = await switcher.complete(chat())
    assert answer["oswitch"]["target_id"] == "openai-work"


async def test_a_disabled_target_does_not_hide_the_missing_keys(
    autojump_clock: object, no_keys: pytest.MonkeyPatch
) -> None:
    """A Disabled target cannot serve either, so it does not stop the keyless refusal."""
    mapping = {
        "targets": [
            {"target_id": "off", "provider_id": "openai", "api_key": "sk-off", "model": "m"},
            {"target_id": "work", "provider_id": "openai", "model": "m"},
        ]
    }
    fake = FakeProvider()
    async with open_switcher(parse_config(mapping), transport=fake.transport()) as switcher:
        await switcher.disable_target("off")
        with pytest.raises(AllTargetsFailed) as caught:
            await switcher.complete(chat(model="m"))
    assert str(caught.value) == "no target for 'm' has an API key: set OPENAI_API_KEY (work)"


def test_the_keyless_message_stays_short_with_many_targets() -> None:
    """Past MAX_NAMED variables (or targets for one variable) the message says how many more."""
    shared = [(f"t{i}", "ONE_KEY") for i in range(8)]
    assert no_api_key_message("m", shared) == (
        "no target for 'm' has an API key: set ONE_KEY (t0, t1, t2, t3, t4, +3 more)"
    )
    many = [(f"t{i}", f"KEY_{i}") for i in range(MAX_NAMED + 2)]
    assert no_api_key_message("m", many) == (
        "no target for 'm' has an API key: set KEY_0 (t0), KEY_1 (t1), KEY_2 (t2), "
        "KEY_3 (t3), KEY_4 (t4), and 2 more"
    )


async def test_key_missing_log_names_the_target_and_the_variable(
    autojump_clock: object, no_keys: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Embedded, with no logging set up, the key_missing warning's own message says which
    target lacks which variable (its fields say the same for formatters)."""
    no_keys.setenv("PERSONAL_KEY", "sk-personal")
    caplog.set_level(logging.WARNING, logger="oswitch.keys")
    async with open_switcher(osw_user(), transport=FakeProvider().transport()):
        pass
    records = [r for r in caplog.records if r.name == "oswitch.keys"]
    assert [r.getMessage() for r in records] == [
        "key_missing: target openai-work has no API key: set OPENAI_API_KEY"
    ]
    assert (records[0].event, records[0].target_id, records[0].note) == (  # type: ignore[attr-defined]
        "key_missing",
        "openai-work",
        "OPENAI_API_KEY",
    )


async def test_a_missing_key_is_logged_once_at_start(
    autojump_clock: object, no_keys: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A target whose key variable is unset gives one key_missing record at start (the
    named one), not a second bare one from the target's own key reader."""
    no_keys.setenv("PERSONAL_KEY", "sk-personal")
    caplog.set_level(logging.WARNING)
    async with open_switcher(osw_user(), transport=FakeProvider().transport()):
        pass
    events = [r for r in caplog.records if "key_missing" in (r.msg, getattr(r, "event", None))]
    assert [r.name for r in events] == ["oswitch.keys"]


# ---- models() --------------------------------------------------------------------------


async def test_models_lists_what_is_served_now(autojump_clock: object) -> None:
    """models() names what targets serve by name (a passthrough target's ``serves``
    included), not a Disabled target's models, and a fallback source only when its
    chain reaches a served model."""
    cfg = config(
        target("a"),
        target("b", model="gpt-4.1"),
        target("c", model="o3", enabled=False),
        target("p", model=None, serves=("llama-3", "qwen-2")),
        fallbacks={"fast": ("gpt-4.1",), "dead": ("o3",), "*": ("gpt-4o",)},
    )
    async with open_switcher(cfg, transport=FakeProvider().transport()) as switcher:
        before = switcher.models()
        await switcher.disable_target("b")
        after = switcher.models()
    assert before == ["fast", "gpt-4.1", "gpt-4o", "llama-3", "qwen-2"]
    assert after == ["gpt-4o", "llama-3", "qwen-2"]


async def test_a_target_serving_any_model_adds_no_name(autojump_clock: object) -> None:
    """A target serving ``"*"`` names nothing itself, but keeps listed the names other
    targets serve even when those targets are Disabled (it serves them too)."""
    cfg = config(target("off", model="o3", enabled=False), target("any", model=None))
    async with open_switcher(cfg, transport=FakeProvider().transport()) as switcher:
        with_any = switcher.models()
        await switcher.disable_target("any")
        without = switcher.models()
    assert (with_any, without) == (["o3"], [])


async def test_models_lists_an_opencode_providers_models(autojump_clock: object) -> None:
    """Targets discovered from an opencode.json (passthrough, no ``model``) list the
    provider's ``models`` with no upstream call."""
    cfg = parse_config(
        {
            "provider": {
                "openai-work": {
                    "api": "openai",
                    "apiKey": "sk-work",
                    "models": {"gpt-4o": {}, "gpt-4.1-mini": {}},
                },
                "openai-backup": {"api": "openai", "apiKey": "sk-backup"},
            }
        }
    )
    fake = FakeProvider()
    async with open_switcher(cfg, transport=fake.transport()) as switcher:
        assert [t.model for t in cfg.targets] == [None, None]
        assert switcher.models() == ["gpt-4.1-mini", "gpt-4o"]
    assert fake.calls == []


def test_fresh_request_ids_are_well_formed_and_unique() -> None:
    """Request ids the switcher makes are ``req_`` and 20 lowercase hex digits, never
    repeat, and follow no visible sequence (no shared prefix, no counter)."""
    ids = [new_request_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"req_[0-9a-f]{20}", rid) for rid in ids)
    assert len({rid[:8] for rid in ids}) > 9_000  # 16 random bits in the first 4 digits


def test_a_forked_child_draws_its_own_request_ids() -> None:
    """A forked process (a pre-forking server's worker) does not repeat its parent's
    ids: its generator is seeded afresh, so its first id is not the parent's next."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report one id and leave at once, whatever happens
        try:
            os.write(write_end, new_request_id().encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        child = pipe.read().decode()
    os.waitpid(pid, 0)
    assert re.fullmatch(r"req_[0-9a-f]{20}", child)
    assert child != new_request_id()
