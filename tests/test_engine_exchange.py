"""The upstream exchange: what it makes of a request it cannot encode and of a 2xx reply
that cannot be decoded, on the streamed and non-streamed paths alike."""

from __future__ import annotations

import json

import httpx
import pytest
import trio

from oswitch import AllTargetsFailed, RequestFailed
from oswitch.core.error_class import ErrorClass
from oswitch.runtime.switcher import open_switcher
from oswitch.testing import completion
from support import breaker, chat, config, target

# A JSON document nested past what ``json.loads`` can decode without a RecursionError.
DEEPLY_NESTED = b'{"choices": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"


def _counting(sent: list[httpx.Request], response: httpx.Response) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return response

    return httpx.MockTransport(handle)


@pytest.mark.parametrize("stream", [False, True])
async def test_a_request_that_cannot_be_encoded_is_the_callers_fault(
    autojump_clock: object, stream: bool
) -> None:
    """A request the door lets through but whose upstream body cannot be encoded as
    JSON (a NaN) fails as InvalidRequest before anything is sent, and costs the target
    no breaker failure (it was a TransportFailure, counted against the target)."""
    sent: list[httpx.Request] = []
    cfg = config(target("a"), circuit_breaker=breaker(failure_threshold=1))
    transport = _counting(sent, httpx.Response(200, json={}))
    async with open_switcher(cfg, transport=transport) as switcher:
        with pytest.raises(RequestFailed) as caught:
            if stream:
                async with switcher.stream(chat(temperature=float("nan"))):
                    pass
            else:
                await switcher.complete(chat(temperature=float("nan")))
        view = switcher.list_targets()[0]
    assert caught.value.error_class is ErrorClass.INVALID_REQUEST
    assert sent == []
    assert view.breaker_state == "Closed"
    assert view.failures_by_class.get(ErrorClass.TRANSPORT_FAILURE.value, 0) == 0


@pytest.mark.parametrize("stream", [False, True])
async def test_a_deeply_nested_2xx_reply_is_malformed_not_a_transport_fault(
    autojump_clock: object, stream: bool
) -> None:
    """A 2xx whose JSON is nested too deeply to decode is a malformed reply (the
    provider's fault, TransientServerFailure), never a RecursionError taken for a
    TransportFailure."""
    sent: list[httpx.Request] = []
    reply = httpx.Response(200, content=DEEPLY_NESTED, headers={"content-type": "application/json"})
    cfg = config(target("a"), retry_budget=0, failover_budget=0)
    async with open_switcher(cfg, transport=_counting(sent, reply)) as switcher:
        with pytest.raises(AllTargetsFailed) as caught:
            if stream:
                async with switcher.stream(chat()):
                    pass
            else:
                await switcher.complete(chat())
        view = switcher.list_targets()[0]
    assert len(sent) == 1
    assert caught.value.error_class is ErrorClass.TRANSIENT_SERVER_FAILURE
    assert view.failures_by_class == {ErrorClass.TRANSIENT_SERVER_FAILURE.value: 1}


async def test_typod_models_on_a_passthrough_target_do_not_open_its_breaker(
    autojump_clock: object,
) -> None:
    """On a passthrough target an upstream 404 model_not_found cools down that model only:
    five typo'd model names cost the key no breaker failure, and a valid model is served
    at once afterwards (the typos used to open the breaker for every model)."""

    def handle(request: httpx.Request) -> httpx.Response:
        model = json.loads(request.content)["model"]
        if model == "gpt-4o":
            return httpx.Response(200, json=completion("fine", model=model))
        not_found = {"message": "The model does not exist", "code": "model_not_found"}
        return httpx.Response(404, json={"error": not_found})

    cfg = config(target("a", model=None), circuit_breaker=breaker(failure_threshold=5))
    async with open_switcher(cfg, transport=httpx.MockTransport(handle)) as switcher:
        for n in range(5):
            with pytest.raises(RequestFailed):
                await switcher.complete(chat(model=f"gpt-4o-typo{n}"))
        view = switcher.list_targets()[0]
        started = trio.current_time()
        reply = await switcher.complete(chat(model="gpt-4o"))
        waited = trio.current_time() - started
    assert view.breaker_state == "Closed"
    assert sorted(view.model_cooldowns) == [f"gpt-4o-typo{n}" for n in range(5)]
    assert reply["choices"][0]["message"]["content"] == "fine"
    assert waited == 0
