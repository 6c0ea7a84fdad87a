"""The ``stream`` behaviour: a streamed answer, with the faults real streams have."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from oswitch.testing.behaviour import Behaviour
from oswitch.testing.playback import PlayedBody, play
from oswitch.testing.script import StreamScript, answer_for, pieces
from oswitch.testing.sse import anthropic_events, openai_events


def stream(
    text: str = "The quick brown fox jumps over the lazy dog.",
    *,
    api: str = "openai",
    latency: float = 0.0,
    chunk_latency: float = 0.0,
    words_per_chunk: int = 1,
    cut_after: int | None = None,
    reset_after: int | None = None,
    stall_after: int | None = None,
    malformed_at: int | None = None,
    error_after: int | None = None,
    error_type: str = "overloaded_error",
    no_terminator: bool = False,
    repeat: str = "none",
    tool_call: Mapping[str, str] | None = None,
    split_bytes: int = 7,
    ping_every: int | None = None,
    model: str | None = None,
) -> Behaviour:
    """Stream ``text`` as SSE (OpenAI chunks, or Anthropic events with ``api="anthropic"``).

    Content chunks are counted from 1. ``cut_after=K`` closes the body after K of them
    (no terminator); ``reset_after=K`` breaks the connection; ``stall_after=K`` goes
    silent; ``malformed_at=K`` sends chunk K as broken JSON; ``error_after=K`` sends a
    provider ``error`` event (``error_type``); ``no_terminator`` drops ``[DONE]`` /
    ``message_stop``. Asked to continue a cut answer, it streams the rest of ``text``,
    repeating the last N characters with ``repeat="tail:N"`` or all of it with
    ``repeat="all"``. ``tool_call={"name": ..}`` streams ``text`` as the call's
    arguments. ``ping_every=N`` adds a ping after every N chunks. The bytes are cut
    every ``split_bytes`` bytes, as TCP may deliver them.
    """
    script = StreamScript(
        text=text,
        api=api,
        words_per_chunk=words_per_chunk,
        chunk_latency=chunk_latency,
        cut_after=cut_after,
        reset_after=reset_after,
        stall_after=stall_after,
        malformed_at=malformed_at,
        error_after=error_after,
        error_type=error_type,
        no_terminator=no_terminator,
        repeat=repeat,
        tool_call=tool_call,
        split_bytes=split_bytes,
        ping_every=ping_every,
        model=model,
    )
    build = anthropic_events if api == "anthropic" else openai_events

    async def respond(request: httpx.Request, body: Mapping[str, Any]) -> httpx.Response:
        served = model or str(body.get("model") or "fake-model")
        answer = answer_for(script, body)
        chunks = pieces(answer, script.words_per_chunk) if answer else []
        events, content = build(chunks, model=served, tool_call=tool_call)
        return httpx.Response(  # noqa: ASYNC910 (a Responder: handle checkpoints)
            200,
            headers={"content-type": "text/event-stream"},
            stream=PlayedBody(play(script, events, content)),
        )

    return Behaviour(name="stream", respond=respond, latency=latency)
